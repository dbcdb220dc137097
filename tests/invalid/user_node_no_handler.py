"""A node of your own that defines no handle(): it would do nothing.

codes: no-handler
expect: Censor defines no handle(): the node would do nothing
expect: define `async def handle(self, ...)` in class Censor
"""

from graph import Frontend, Graph, RequestNode, Worker


class Censor(RequestNode):
    words: list[str] = []


with Graph("no-handler") as g:
    Frontend() >> Censor() >> Worker(model="m")  # expect-at: no-handler
