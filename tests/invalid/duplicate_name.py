"""Two nodes with one name: one message (no phantom duplicate edge or cycle).

codes: duplicate-name
expect: 2 nodes are named 'w'
expect: give each node a unique name=
"""

from graph import Frontend, Graph, Worker

with Graph("duplicate-name") as g:
    Frontend() >> [Worker(model="m", name="w"), Worker(model="m", name="w")]  # expect-at: duplicate-name
