"""Prefill and decode with different KV-cache dtypes.

codes: pd-kv-cache-dtype-mismatch
expect: KV edge prefill >> decode: KV-cache dtype differs ('fp8' vs 'auto')
expect: set the same kv_cache_dtype= on 'prefill' and 'decode'
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-kv-cache-dtype-mismatch") as g:
    Frontend() >> Prefill(model="m", kv_cache_dtype="fp8") >> Decode(model="m")  # expect-at: pd-kv-cache-dtype-mismatch
