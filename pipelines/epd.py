"""EPD: aggregated multimodal; one vLLM engine encodes the image, prefills and decodes."""

from graph import Frontend, Graph, Processor, Worker

MODEL = "llava-hf/llava-1.5-7b-hf"

with Graph("llava-epd", "aggregated multimodal vLLM") as g:
    Frontend(port=8000) >> Processor() >> Worker(engine="vllm", model=MODEL)
