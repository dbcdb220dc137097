"""Text P/D on SGLang: the frontend sends each request to prefill and decode with one bootstrap room."""

from graph import Decode, Frontend, Graph, Prefill

MODEL = "Qwen/Qwen2.5-7B-Instruct"

with Graph("qwen-sglang-pd", "text P/D on SGLang over NIXL") as g:
    fe = Frontend(port=8000)
    fe >> Prefill(engine="sglang", model=MODEL) >> Decode(engine="sglang", model=MODEL, replicas=2)
