"""A router and its worker that no path from the frontend reaches: one message for the part.

codes: unreachable
expect: Router 'router' cannot be reached from frontend 'frontend' (nor can w2, fed from it)
"""

from graph import Frontend, Graph, Router, Worker

with Graph("unreachable") as g:
    Frontend() >> Worker(model="m")
    Router() >> Worker(model="m", name="w2")  # expect-at: unreachable
