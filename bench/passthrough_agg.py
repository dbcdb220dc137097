"""The aggregated example with a pass-through node of your own in the request path (for the benches)."""

from graph import Frontend, Graph, Request, RequestNode, Worker

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class PassThrough(RequestNode):
    """Hands the request on unchanged: what a node of your own costs by itself."""

    async def handle(self, request: Request) -> Request:
        return request


with Graph("llama-agg-passthrough", "aggregated, with a pass-through node before the model") as g:
    Frontend(port=8000) >> PassThrough() >> Worker(engine="vllm", model=MODEL, replicas=2)
