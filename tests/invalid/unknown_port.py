"""A port name the role does not have; its two nodes get no further structural noise.

codes: unknown-port
expect: Prefill 'prefill' has no output port 'kv_out'
expect: its output ports are: kv: KV
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("unknown-port") as g:
    fe = Frontend()
    p = Prefill(model="m")
    fe >> p
    p["kv_out"] >> Decode(model="m")  # expect-at: unknown-port
