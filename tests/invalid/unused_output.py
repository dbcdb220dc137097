"""A Prefill whose KV goes nowhere (no Decode).

codes: unused-output
expect: Prefill 'prefill': output port 'kv: KV' goes nowhere
expect: without one use Worker
"""

from graph import Frontend, Graph, Prefill

with Graph("unused-output") as g:
    Frontend() >> Prefill(model="m")  # expect-at: unused-output
