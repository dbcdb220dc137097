"""Values the engine itself would reject at start-up, each with the engine's own list and a near miss.

codes: bad-dtype bad-kv-cache-dtype bad-dtype
expect: Worker 'worker': vLLM does not accept dtype='bf16'
expect: did you mean 'bfloat16'? vLLM accepts: auto, half, float16, bfloat16, float, float32
expect: Worker 'sg': SGLang does not accept kv_cache_dtype='fp8-e4m3'
expect: did you mean 'fp8_e4m3'?
expect: Worker 'trt': TensorRT-LLM does not accept dtype='half8'
"""

from graph import Frontend, Graph, Worker

with Graph("bad-engine-values") as g:
    fe = Frontend()
    fe >> Worker(model="m", dtype="bf16")  # expect-at: bad-dtype
    fe >> Worker(name="sg", engine="sglang", model="s", kv_cache_dtype="fp8-e4m3")  # expect-at: bad-kv-cache-dtype
    fe >> Worker(name="trt", engine="trtllm", model="t", dtype="half8")  # expect-at: bad-dtype
