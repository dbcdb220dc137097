"""An edge from a node of one graph to a node of another: refused at the >> line, naming both graphs.

codes: cross-graph-edge unused-output
args: --graph second
expect: Prefill 'prefill' >> Decode 'decode': 'prefill' belongs to graph 'first' and 'decode' to graph 'second'; an edge cannot join two graphs
expect: create both nodes inside the same `with Graph(...)` block
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("first") as first:
    prefill = Prefill(engine="mock", model="m")
    Frontend() >> prefill >> Decode(engine="mock", model="m")

with Graph("second") as second:
    Frontend() >> Prefill(name="p2", engine="mock", model="m")  # expect-at: unused-output
    prefill >> Decode(engine="mock", model="m")  # expect-at: cross-graph-edge
