"""A platform key that is no target.

codes: unknown-platform
expect: Worker 'worker': platform['k8'] is not a target
expect: use one of ['k8s', 'local', 'slurm']
"""

from graph import Frontend, Graph, Worker

with Graph("unknown-platform") as g:
    Frontend() >> Worker(model="m", platform={"k8": {"node_selector": {"gpu": "h100"}}})  # expect-at: unknown-platform
