"""A node joined to nothing: only "dangling", no missing-input/unused-output on top.

codes: dangling
expect: Prefill 'spare' has no edges
expect: connect it with >> or remove it
"""

from graph import Frontend, Graph, Prefill, Worker

with Graph("dangling") as g:
    Frontend() >> Worker(model="m")
    Prefill(model="m", name="spare")  # expect-at: dangling
