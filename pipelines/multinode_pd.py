"""Multi-node P/D: each decode replica spans two 8-GPU hosts (tp=16 across nodes)."""

from graph import Decode, Frontend, Graph, Prefill

MODEL = "meta-llama/Llama-3.1-405B-Instruct-FP8"

with Graph("llama-405b-multinode-pd", "tp across hosts for decode") as g:
    fe = Frontend(port=8000)
    prefill = Prefill(engine="vllm", model=MODEL, tp=8, replicas=2)
    decode = Decode(engine="vllm", model=MODEL, tp=16, nodes=2, gpus=8)
    fe >> prefill >> decode
