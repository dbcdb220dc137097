"""vLLM's P/D handshake through a proxy (docs/engines.md): prefill with max_tokens=1 and
``do_remote_decode``, then decode with the prefill's ``kv_transfer_params`` copied verbatim.

A vLLM decode instance can also compute a prompt itself, so three cases skip the
prefill hop: a prompt too short to be worth disaggregating (the route's
``disagg_threshold``), a prefill stage with no replica answering, and a decode
that cannot load the KV the prefill announced (the prefill died or restarted in
between; vLLM 0.32's default ``kv_load_failure_policy`` "fail" answers 500):
the request falls back to decode-only instead of failing.
"""

from __future__ import annotations

import logging
from typing import Any

from ..metrics import FALLBACKS
from ..requests import ClientRequest
from ..routing import BLOCK_CHARS, PrefixAware, block_hashes
from ..upstream import UpstreamError, rejected_handoff
from .base import Outcome, Protocol, StageRuntime, without_stream

log = logging.getLogger("servegraph.frontend")

#: What a proxy sends to vLLM's prefill to ask it to keep the KV for a remote decode.
PREFILL_PARAMS = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
#: Rough characters per token, to size a prompt without a tokenizer.
CHARS_PER_TOKEN = 4


class VllmProtocol(Protocol):
    """vLLM and the mock imitating it."""

    name = "vllm"
    decode_can_prefill = True

    async def disaggregated(
        self, req: ClientRequest, prefill: StageRuntime, decode: StageRuntime, extra: dict[str, Any]
    ) -> Outcome:
        body = {**req.body, **extra}
        if _uncached_tokens(req, decode) < int(decode.config.options.get("disagg_threshold", 0)):
            FALLBACKS.labels(decode.name, "short_prompt").inc()
            return await self.final(decode, req, body)
        prefill_body = without_stream(body, req.kind, max_tokens=1)
        prefill_body["kv_transfer_params"] = dict(PREFILL_PARAMS)
        try:
            reply = await self.call(prefill, req, req.path, prefill_body)
        except UpstreamError as exc:
            if exc.status is not None and exc.status < 500:
                raise
            log.warning("prefill failed (%s); decode computes the prompt itself", exc)
            FALLBACKS.labels(decode.name, "prefill_failed").inc()
            return await self.final(decode, req, body)
        params = reply.json().get("kv_transfer_params")
        if params is None:
            return await self.final(decode, req, body)
        try:
            outcome = await self.final(decode, req, {**body, "kv_transfer_params": params})
        except UpstreamError as exc:
            if not exc.server_side:
                raise
            return await self._kv_lost(req, decode, body, str(exc))
        failed = outcome.reply
        if failed is not None and (failed.status >= 500 or failed.status >= 400 and rejected_handoff(failed.body)):
            return await self._kv_lost(req, decode, body, f"HTTP {failed.status}")
        return outcome

    async def _kv_lost(self, req: ClientRequest, decode: StageRuntime, body: dict[str, Any], why: str) -> Outcome:
        """The decode could not load the prefill's KV (the prefill died or restarted): decode alone."""
        log.warning("decode could not load the prefill's KV (%s); decode computes the prompt itself", why)
        FALLBACKS.labels(decode.name, "kv_lost").inc()
        return await self.final(decode, req, body)


def _uncached_tokens(req: ClientRequest, decode: StageRuntime) -> int:
    """Prompt tokens the decode side would have to compute, estimated from text."""
    text = req.prompt_text
    cached_chars = 0
    picker = decode.picker
    if isinstance(picker, PrefixAware):
        hashes = block_hashes(text, picker.block_chars)
        cached_chars = max((picker.overlap(u.service, hashes) for u in picker.upstreams), default=0) * BLOCK_CHARS
    return max(len(text) - cached_chars, 0) // CHARS_PER_TOKEN
