"""A request node (Text in, Text out) put after the decode, where the answer flows.

codes: port-type-mismatch
expect: Decode 'decode' >> Shorten 'shorten': no output of 'decode' (answer: Answer) fits an input of 'shorten' (requests: Text)
"""

from graph import Decode, Frontend, Graph, Prefill, Request, RequestNode


class Shorten(RequestNode):
    async def handle(self, request: Request) -> Request:
        return request


with Graph("user-port-mismatch") as g:
    Frontend() >> Prefill(model="m") >> Decode(model="m") >> Shorten()  # expect-at: port-type-mismatch
