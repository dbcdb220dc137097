"""A node created outside `with Graph(...)`.

codes: load-error
expect: Worker created outside a graph
expect: create nodes inside `with Graph('name') as g:`
"""

from graph import Worker

worker = Worker(model="m")  # expect-at: load-error
