"""An environment variable name no shell accepts.

codes: bad-env
expect: Worker 'worker': env name 'HF-TOKEN' is not a valid environment variable name
expect: e.g. 'HF_TOKEN'
"""

from graph import Frontend, Graph, Worker

with Graph("bad-env") as g:
    Frontend() >> Worker(model="m", env={"HF-TOKEN": "x"})  # expect-at: bad-env
