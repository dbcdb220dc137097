"""More GPUs than the target has (checked with --gpus / --gpus-per-host).

args: --gpus 4 --gpus-per-host 2
codes: gpu-budget gpu-budget
expect: graph 'gpu-budget' needs 8 GPUs (worker 8); the target has 4
expect: Worker 'worker' needs 4 GPUs on one host; hosts have 2
expect: spread it over hosts: nodes=2, gpus=2
"""

from graph import Frontend, Graph, Worker

with Graph("gpu-budget") as g:
    Frontend() >> Worker(model="m", tp=4, replicas=2)  # expect-at: gpu-budget
