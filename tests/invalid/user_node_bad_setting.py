"""A node of your own given a setting of the wrong type, and one it does not have.

codes: bad-field bad-field
expect: Limit 'limit' field 'max_chars' = 'many': Input should be a valid integer
expect: Limit 'limit' has no field 'max_char'
expect: did you mean 'max_chars'?
"""

from graph import Frontend, Graph, Request, RequestNode, Worker


class Limit(RequestNode):
    max_chars: int = 4000

    async def handle(self, request: Request) -> Request:
        return request


with Graph("user-bad-setting") as g:
    Frontend() >> Limit(max_chars="many", max_char=3) >> Worker(model="m")  # expect-at: bad-field
