"""Prefill and decode with different dtypes.

codes: pd-dtype-mismatch
expect: KV edge prefill >> decode: dtype differs ('bfloat16' vs 'float16')
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-dtype-mismatch") as g:
    fe = Frontend()
    p = Prefill(model="m", dtype="bfloat16")
    d = Decode(model="m", dtype="float16")
    fe >> p
    p >> d  # expect-at: pd-dtype-mismatch
