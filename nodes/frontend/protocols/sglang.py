"""SGLang's P/D: the same request goes to prefill and decode at once, joined by a bootstrap room
(docs/engines.md; as the real sglang-router does). The client gets the decode's answer."""

from __future__ import annotations

import asyncio
import random
from typing import Any
from urllib.parse import urlsplit

from ..requests import ClientRequest
from ..upstream import Unavailable, UpstreamError
from .base import Outcome, Protocol, StageRuntime


class SglangProtocol(Protocol):
    """SGLang and the mock imitating it."""

    name = "sglang"

    async def encode(self, req: ClientRequest, stage: StageRuntime) -> dict[str, Any]:
        # SGLang's language model calls its encoders itself (--language-only --encoder-urls).
        return {}

    async def disaggregated(
        self, req: ClientRequest, prefill: StageRuntime, decode: StageRuntime, extra: dict[str, Any]
    ) -> Outcome:
        wait = prefill.picker.retry_in()
        if wait is not None:  # no fallback here: the decode would wait for a prefill that is not coming
            raise Unavailable(prefill.name, prefill.picker.down(), wait)
        target = prefill.picker.pick(prompt=req.prompt_text)
        body = {
            **req.body,
            **extra,
            "bootstrap_host": urlsplit(target.url).hostname,
            "bootstrap_port": target.bootstrap_port,
            "bootstrap_room": random.getrandbits(63),
        }
        prefill_task = asyncio.create_task(self.call(prefill, req, req.path, {**body, "stream": False}, upstream=target))
        try:
            outcome = await self.final(decode, req, body)
        except BaseException:
            prefill_task.cancel()
            raise
        if outcome.reply is not None:
            await _prefill_result(prefill_task)
        else:
            # Streams start at once; a failed prefill shows up as the decode stalling,
            # and is reported by the stream's own error handling.
            prefill_task.add_done_callback(_drop_result)
        return outcome


async def _prefill_result(task: "asyncio.Task[Any]") -> None:
    await task


def _drop_result(task: "asyncio.Task[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, UpstreamError):
            raise exc  # pragma: no cover - a bug, not an engine failure
