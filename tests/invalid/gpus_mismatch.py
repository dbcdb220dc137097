"""GPUs per replica that do not match tp*pp*dp.

codes: gpus-mismatch
expect: Worker 'worker': tp*pp*dp = 4*1*1 = 4 ranks but gpus*nodes = 2*1 = 2
expect: set gpus=4
"""

from graph import Frontend, Graph, Worker

with Graph("gpus-mismatch") as g:
    Frontend() >> Worker(model="m", tp=4, gpus=2)  # expect-at: gpus-mismatch
