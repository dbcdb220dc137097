"""E/PD: a separate vision encoder feeds one engine that prefills and decodes."""

from graph import Encoder, Frontend, Graph, PrefillDecode, Processor

MODEL = "llava-hf/llava-1.5-7b-hf"

with Graph("llava-e-pd", "encoder apart, prefill+decode together") as g:
    fe = Frontend(port=8000)
    encoder = Encoder(engine="vllm", model=MODEL)
    fe >> Processor() >> encoder >> PrefillDecode(engine="vllm", model=MODEL)
