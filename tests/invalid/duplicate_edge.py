"""The same edge declared twice.

codes: duplicate-edge
expect: edge prefill['kv'] >> decode['kv'] is declared more than once
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("duplicate-edge") as g:
    fe = Frontend()
    p = Prefill(model="m")
    d = Decode(model="m")
    fe >> p >> d
    p >> d  # expect-at: duplicate-edge
