"""P/D behind a router that sends short prompts straight to decode (test fixture)."""

from graph import Decode, Frontend, Graph, Prefill, Router

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

with Graph("pd-threshold") as g:
    Frontend() >> Router(disagg_threshold=64) >> Prefill(engine="vllm", model=MODEL) >> Decode(engine="vllm", model=MODEL)
