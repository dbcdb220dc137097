"""A request node whose code raises on a trigger word, and a response node that raises mid-stream."""

from typing import AsyncIterator

from graph import Frontend, Graph, Request, RequestNode, ResponseNode, Worker


class Flaky(RequestNode):
    trigger: str = "explode"

    async def handle(self, request: Request) -> Request:
        if self.trigger in request.text:
            raise ValueError(f"cannot handle '{self.trigger}'")
        return request


class Brittle(ResponseNode):
    trigger: str = "break"

    async def transform(self, request: Request, text: AsyncIterator[str]) -> AsyncIterator[str]:
        async for piece in text:
            if self.trigger in request.text:
                raise RuntimeError("the answer broke the node")
            yield piece


with Graph("failing-node") as g:
    Frontend() >> Flaky() >> Worker(engine="mock", model="m") >> Brittle()
