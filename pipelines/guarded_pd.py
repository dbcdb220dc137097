"""Text P/D behind a guard of your own: it refuses prompts that match a pattern and adds a system prompt."""

import re

from graph import Decode, Frontend, Graph, Prefill, Refusal, Request, RequestNode

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class Guard(RequestNode):
    """Refuses prompts matching ``pattern``; puts ``system_prompt`` first in every chat."""

    pattern: str = r"(?i)\bignore (all |any )?(previous|prior) instructions\b"
    refusal: str = "This request asks the model to drop its instructions; it was refused."
    system_prompt: str = "You are a helpful assistant. Answer briefly."

    async def handle(self, request: Request) -> Request:
        if re.search(self.pattern, request.text):
            raise Refusal(self.refusal)
        request.add_system_prompt(self.system_prompt)
        return request


with Graph("llama-guarded-pd", "text P/D behind a request guard") as g:
    prefill = Prefill(engine="vllm", model=MODEL)
    decode = Decode(engine="vllm", model=MODEL)
    Frontend() >> Guard() >> prefill >> decode
