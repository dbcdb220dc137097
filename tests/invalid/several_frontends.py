"""Two frontends in one graph.

codes: several-frontends
expect: Frontend 'frontend-2' is a second frontend (the first is 'frontend')
"""

from graph import Frontend, Graph, Worker

with Graph("several-frontends") as g:
    w = Worker(model="m")
    Frontend() >> w
    Frontend(port=8001) >> w  # expect-at: several-frontends
