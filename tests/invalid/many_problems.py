"""Several mistakes in one file: all reported in one run, each at its own line.

codes: bad-field no-model dangling pd-model-mismatch
expect: 4 problems
"""

from graph import Decode, Frontend, Graph, Prefill, Worker

with Graph("many-problems") as g:
    fe = Frontend()
    p = Prefill(model="org/a", tp=-1)  # expect-at: bad-field
    d = Decode(model="org/b")
    fe >> p
    p >> d  # expect-at: pd-model-mismatch
    Worker(name="spare")  # expect-at: dangling
