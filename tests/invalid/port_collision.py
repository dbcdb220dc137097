"""Two nodes on one fixed port, and a fixed port on a replicated engine.

codes: port-collision port-collision
expect: Worker 'worker' and 'frontend' both use port 8000
expect: Worker 'worker' has replicas=2 but one fixed port 8000
"""

from graph import Frontend, Graph, Worker

with Graph("port-collision") as g:
    Frontend(port=8000) >> Worker(model="m", port=8000, replicas=2)  # expect-at: port-collision
