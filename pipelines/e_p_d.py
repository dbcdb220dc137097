"""E/P/D: encoder, prefill and decode each run apart (embeddings and KV over NIXL)."""

from graph import Decode, Encoder, Frontend, Graph, Prefill, Processor

MODEL = "llava-hf/llava-1.5-7b-hf"

with Graph("llava-e-p-d", "encode, prefill and decode apart") as g:
    fe = Frontend(port=8000)
    enc = Encoder(engine="vllm", model=MODEL, gpus=1, replicas=2)
    pre = Prefill(engine="vllm", model=MODEL, tp=2)
    dec = Decode(engine="vllm", model=MODEL, tp=2, replicas=2)
    fe >> Processor() >> enc >> pre >> dec
