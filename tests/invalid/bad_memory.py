"""A memory size Kubernetes cannot parse.

codes: bad-memory
expect: Worker 'worker': resources.memory = '64GB' is not a quantity
expect: e.g. '64Gi'
"""

from graph import Frontend, Graph, Resources, Worker

with Graph("bad-memory") as g:
    Frontend() >> Worker(model="m", resources=Resources(memory="64GB"))  # expect-at: bad-memory
