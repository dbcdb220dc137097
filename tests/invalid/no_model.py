"""An engine node without a model.

codes: no-model
expect: Worker 'worker' has no model
expect: set model='org/name' or a local path
"""

from graph import Frontend, Graph, Worker

with Graph("no-model") as g:
    Frontend() >> Worker(engine="vllm")  # expect-at: no-model
