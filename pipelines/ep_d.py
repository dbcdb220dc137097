"""EP/D: one engine encodes and prefills, another decodes; KV over NIXL."""

from graph import Decode, EncodePrefill, Frontend, Graph, Processor

MODEL = "llava-hf/llava-1.5-7b-hf"

with Graph("llava-ep-d", "encode+prefill together, decode apart") as g:
    fe = Frontend(port=8000)
    fe >> Processor() >> EncodePrefill(engine="vllm", model=MODEL) >> Decode(engine="vllm", model=MODEL)
