"""No entry point; the router's input is fed by nobody.

codes: no-frontend missing-input
expect: graph 'no-frontend' has no Frontend
expect: Router 'router': input port 'requests: Text|Tokens|Media' is not connected
"""

from graph import Graph, Router, Worker

with Graph("no-frontend") as g:
    Router() >> Worker(model="m")  # expect-at: missing-input
