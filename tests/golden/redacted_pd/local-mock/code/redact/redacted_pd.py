"""Text P/D whose answers pass a redactor of your own, stream or not: it holds a little text back so a
match split across pieces is still caught, and can stop an answer altogether."""

import re
from typing import AsyncIterator

from graph import Decode, Frontend, Graph, Prefill, Request, ResponseNode

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class Redact(ResponseNode):
    """Replaces what matches ``pattern`` with ``mask``; stops the answer at a match of ``stop`` (if set)."""

    pattern: str = r"[\w.+-]+@[\w-]+\.[\w.]+|\b\d{3}[-. ]\d{3}[-. ]\d{4}\b"  # e-mail addresses, phone numbers
    mask: str = "[redacted]"
    stop: str | None = None
    hold: int = 64  # characters held back: a match may be at most this long

    async def transform(self, request: Request, text: AsyncIterator[str]) -> AsyncIterator[str]:
        find, stop = re.compile(self.pattern), re.compile(self.stop) if self.stop else None
        buffer = ""
        async for piece in text:
            buffer = find.sub(self.mask, buffer + piece)
            if stop is not None and (hit := stop.search(buffer)):
                yield buffer[:hit.start()]
                return  # cut: the client's answer ends here (finish reason content_filter)
            cut = _safe_end(buffer, self.hold)
            if cut:
                yield buffer[:cut]
                buffer = buffer[cut:]
        yield find.sub(self.mask, buffer)


def _safe_end(text: str, hold: int) -> int:
    """How much of ``text`` can go now: all but the last ``hold`` characters, ending at a space."""
    if len(text) <= hold:
        return 0
    end = text.rfind(" ", 0, len(text) - hold)
    return end + 1 if end >= 0 else 0


with Graph("llama-redacted-pd", "text P/D with a streaming redactor") as g:
    prefill = Prefill(engine="vllm", model=MODEL)
    decode = Decode(engine="vllm", model=MODEL)
    Frontend() >> prefill >> decode >> Redact()
