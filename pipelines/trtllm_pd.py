"""Text P/D on TensorRT-LLM: context_only then generation_only requests, KV over NIXL."""

from graph import Decode, Frontend, Graph, Prefill

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

with Graph("llama-trtllm-pd", "text P/D on TensorRT-LLM") as g:
    fe = Frontend(port=8000)
    fe >> Prefill(engine="trtllm", model=MODEL, max_model_len=8192) >> Decode(
        engine="trtllm", model=MODEL, max_model_len=8192
    )
