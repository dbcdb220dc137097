"""Prefill and decode on different engines cannot exchange KV.

codes: pd-engine-mismatch
expect: KV edge prefill >> decode: engines differ (vllm vs sglang)
expect: use the same engine on both ends
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-engine-mismatch") as g:
    Frontend() >> Prefill(engine="vllm", model="m") >> Decode(engine="sglang", model="m")  # expect-at: pd-engine-mismatch
