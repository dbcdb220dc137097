"""A replica over more hosts than its ranks can be split over: setting gpus cannot fix it.

codes: gpus-mismatch
expect: Worker 'worker': tp*pp*dp = 1*1*1 = 1 ranks but gpus*nodes = 1*2 = 2
expect: 1 ranks do not split evenly over nodes=2 hosts: make tp*pp*dp equal gpus*nodes (1*2 = 2), or set nodes to a divisor of 1
"""

from graph import Frontend, Graph, Worker

with Graph("gpus-mismatch-nodes") as g:
    Frontend() >> Worker(model="m", nodes=2)  # expect-at: gpus-mismatch
