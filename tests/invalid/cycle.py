"""Two routers feeding each other: one message for the loop.

codes: cycle
expect: cycle: router >> router-2 >> router
expect: remove one edge of the cycle
"""

from graph import Frontend, Graph, Router, Worker

with Graph("cycle") as g:
    r1 = Router()  # expect-at: cycle
    r2 = Router()
    Frontend() >> r1 >> r2 >> r1
    r2 >> Worker(model="m")
