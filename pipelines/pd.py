"""Text prefill/decode disaggregation on vLLM: KV moves from prefill to decode over NIXL."""

from graph import Decode, Frontend, Graph, Prefill

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

with Graph("llama-pd", "text P/D on vLLM") as g:
    fe = Frontend(port=8000)
    prefill = Prefill(engine="vllm", model=MODEL)
    decode = Decode(engine="vllm", model=MODEL, tp=2)
    fe >> prefill >> decode
