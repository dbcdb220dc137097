"""A node name Kubernetes would reject.

codes: bad-name
expect: node name 'Worker_A' is not a DNS-1123 label
expect: e.g. name='worker-a'
"""

from graph import Frontend, Graph, Worker

with Graph("bad-name") as g:
    Frontend() >> Worker(model="m", name="Worker_A")  # expect-at: bad-name
