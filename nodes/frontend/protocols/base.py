"""What every protocol shares: the stage calls with their deadlines, and the answer of the last one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graph.plan import Upstream

from ..encoder_cache import EncoderCacheTimeout, wait_for_files
from ..requests import ClientRequest, media_parts
from ..stage import StageRuntime
from ..upstream import Reply, Streamed, UpstreamError, UpstreamPool


@dataclass
class Outcome:
    """The final stage's answer: complete, or an open stream."""

    reply: Reply | None = None
    stream: Streamed | None = None
    service: str = ""
    body: dict[str, Any] | None = None
    stage: StageRuntime | None = None
    #: The request as the final stage got it (after the processor and the request nodes).
    request: ClientRequest | None = None


class Protocol:
    """A plain OpenAI-compatible server (aggregated serving only); subclasses add their engine's stage handshakes."""

    name = "openai"
    #: A decode replica of this engine can serve a whole request without a prefill.
    decode_can_prefill = False

    def __init__(self, pool: UpstreamPool, timeout_s: float, stage_timeout_s: float) -> None:
        self.pool = pool
        #: Deadline for a whole answer from the final stage.
        self.timeout_s = timeout_s
        #: Deadline for an intermediate stage's answer (encoder, prefill) and for a stream to start.
        self.stage_timeout_s = stage_timeout_s

    # --- what subclasses implement -------------------------------------------------

    async def encode(self, req: ClientRequest, stage: StageRuntime) -> dict[str, Any]:
        """Run the encoder stage; returns fields to add to the next stage's request."""
        body = {
            "model": req.model,
            "messages": [{"role": "user", "content": media_parts(req.body)}],
            "max_tokens": 1,
            "stream": False,
        }
        reply = await self.call(stage, req, "/v1/chat/completions", body)
        params = reply.json().get("ec_transfer_params")
        folder = stage.config.options.get("encoder_cache_dir")
        if folder and isinstance(params, dict):
            try:
                await wait_for_files(folder, list(params), self.stage_timeout_s)
            except EncoderCacheTimeout as exc:
                raise UpstreamError(stage.name, str(exc), 504) from None
        return {"ec_transfer_params": params} if params is not None else {}

    async def disaggregated(
        self, req: ClientRequest, prefill: StageRuntime, decode: StageRuntime, extra: dict[str, Any]
    ) -> Outcome:
        raise NotImplementedError

    async def aggregated(self, req: ClientRequest, stage: StageRuntime, extra: dict[str, Any]) -> Outcome:
        """One engine does the rest of the work."""
        return await self.final(stage, req, {**req.body, **extra})

    # --- shared mechanics --------------------------------------------------------------

    async def call(self, stage: StageRuntime, req: ClientRequest, path: str, body: dict[str, Any],
                   upstream: Upstream | None = None) -> Reply:
        """POST to a replica of an intermediate ``stage`` (encoder, prefill) within the stage deadline.

        Raises:
            UpstreamError: no replica answered, or the answer is an error status.
        """
        reply = await stage.post(self.pool, path, body, self.stage_timeout_s, req.prompt_text, upstream)
        if reply.status != 200:
            raise UpstreamError(stage.name, f"HTTP {reply.status}", reply.status, reply.body)
        return reply

    async def final(self, stage: StageRuntime, req: ClientRequest, body: dict[str, Any],
                    upstream: Upstream | None = None) -> Outcome:
        """The last call of a request: streamed if the client asked for a stream."""
        if req.stream:
            async def open_stream(u: Upstream) -> Streamed:
                stage.picker.started(u)
                try:
                    streamed = await self.pool.stream(u.service, u.url + req.path, body, self.stage_timeout_s)
                except BaseException:
                    stage.picker.finished(u)
                    raise
                streamed.on_close(lambda: stage.picker.finished(u))
                return streamed

            streamed = await stage.with_failover(open_stream, req.prompt_text, upstream)
            return Outcome(stream=streamed, service=streamed.service, body=body, stage=stage)
        # Any status comes back as the reply (a 4xx is the client's to see); 5xx still fail over.
        reply = await stage.post(self.pool, req.path, body, self.timeout_s, req.prompt_text, upstream)
        return Outcome(reply=reply, service=stage.name, body=body, stage=stage)


def without_stream(body: dict[str, Any], kind: str, max_tokens: int | None) -> dict[str, Any]:
    """A copy of ``body`` answered in one piece, optionally with ``max_tokens`` forced."""
    out = {k: v for k, v in body.items() if k != "stream_options"}
    out["stream"] = False
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
        if kind == "chat" and "max_completion_tokens" in out:
            out["max_completion_tokens"] = max_tokens
    return out
