"""Execute one request along its route: processor, encoder, then prefill+decode or one worker."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from graph.plan import RouteConfig, StageConfig

from ..common.openai_errors import RequestError
from .metrics import RETRIES
from .protocols import PROTOCOLS, Outcome, Protocol
from .requests import ClientRequest
from .stage import StageRuntime
from .upstream import Reply, UpstreamError, UpstreamPool, rejected_handoff
from .user_nodes import UserNodes

log = logging.getLogger("servegraph.frontend")


class Route:
    """A served model's path through the graph, with its routing state."""

    def __init__(self, config: RouteConfig, pool: UpstreamPool, timeout_s: float, stage_timeout_s: float,
                 migration_limit: int) -> None:
        self.config = config
        self.pool = pool
        self.timeout_s = timeout_s
        self.stage_timeout_s = min(stage_timeout_s, timeout_s)
        self.stages = {s.stage: StageRuntime(s) for s in config.stages}
        self.processor = StageRuntime(StageConfig(
            stage="process", node="processor", role="processor", protocol="processor", upstreams=config.processor,
        )) if config.processor else None
        #: A stream silent for longer than this has stalled.
        self.idle_timeout_s = self.stage_timeout_s
        #: How many times one stream may move to another replica.
        self.migration_limit = migration_limit
        #: The nodes of your own on this route.
        self.nodes = UserNodes(config.request_nodes, config.response_nodes, pool)
        self._protocols: dict[str, Protocol] = {}

    def protocol(self, stage: StageRuntime) -> Protocol:
        name = stage.config.protocol
        if name not in self._protocols:
            self._protocols[name] = PROTOCOLS[name](self.pool, self.timeout_s, self.stage_timeout_s)
        return self._protocols[name]

    async def execute(self, req: ClientRequest) -> Outcome:
        """Run every stage the request needs; the last one's answer comes back.

        A stage that fails on the server's side (a replica died, or a prefill or encoder lost the
        KV or embeddings a later stage asks it for, e.g. because it restarted) runs the request
        once more from the encoder on, on live replicas, within the request's deadline. What still
        fails is reported as a server error (5xx), never as the client's (4xx).
        """
        deadline = time.monotonic() + self.timeout_s
        req = await self.nodes.requested(req, self.nodes.before)
        if req.has_media() and self.processor is not None:
            req = ClientRequest(req.kind, req.path, await self._process(req.body))
        req = await self.nodes.requested(req, self.nodes.after)
        has_media = req.has_media()
        outcome = await self._serve_again_once(req, has_media, deadline)
        outcome.request = req
        if outcome.reply is not None:
            outcome.reply = await self.nodes.answered(req, outcome.reply)
        return outcome

    async def _serve_again_once(self, req: ClientRequest, has_media: bool, deadline: float) -> Outcome:
        """Serve the request; once more after a failure on the server's side (see :meth:`execute`)."""
        retried = False
        while True:
            last = retried or time.monotonic() >= deadline
            try:
                outcome = await self._serve(req, has_media)
            except UpstreamError as exc:
                if not exc.server_side:
                    raise
                if last:
                    raise _as_server_error(exc) from None
                self._retrying(exc.service, exc.status, exc.body)
                retried = True
                continue
            reply = outcome.reply
            if reply is None or reply.status < 500 and not (reply.status >= 400 and rejected_handoff(reply.body)):
                return outcome
            if last:
                outcome.reply = _as_server_reply(outcome.service, reply)
                return outcome
            self._retrying(outcome.service, reply.status, reply.body)
            retried = True

    async def _serve(self, req: ClientRequest, has_media: bool) -> Outcome:
        extra: dict[str, Any] = {}
        encode = self.stages.get("encode")
        if encode is not None and has_media:
            extra = await self.protocol(encode).encode(req, encode)
        prefill, decode = self.stages.get("prefill"), self.stages.get("decode")
        if prefill is not None and decode is not None:
            return await self.protocol(decode).disaggregated(req, prefill, decode, extra)
        aggregate = self.stages.get("aggregate")
        if aggregate is None:
            raise RequestError(503, f"model '{self.config.model}' has no serving stage in this graph")
        return await self.protocol(aggregate).aggregated(req, aggregate, extra)

    def _retrying(self, service: str, status: int | None, body: bytes) -> None:
        reason = rejected_handoff(body) or (f"http_{status}" if status else "unreachable")
        RETRIES.labels(self.config.model, service, reason).inc()
        log.warning("%s failed on the server's side (%s); running the request again", service, reason)

    async def resume(self, req: ClientRequest) -> Outcome:
        """Continue a broken stream: the final stage alone computes prompt + text so far."""
        final = self.stages.get("decode") or self.stages.get("aggregate")
        assert final is not None
        protocol = self.protocol(final)
        if final.config.stage == "decode" and not protocol.decode_can_prefill:
            return await protocol.disaggregated(req, self.stages["prefill"], final, {})
        return await protocol.final(final, req, dict(req.body))

    async def _process(self, body: dict[str, Any]) -> dict[str, Any]:
        """The processor fetches and checks the media; its 4xx reach the client as they are."""
        assert self.processor is not None
        reply = await self.processor.post(self.pool, "/v1/process", body, self.stage_timeout_s)
        if reply.status != 200:
            raise UpstreamError(self.processor.name, f"HTTP {reply.status}", reply.status, reply.body)
        return orjson.loads(reply.body)


def _as_server_error(exc: UpstreamError) -> UpstreamError:
    """A rejected hand-off is the graph's failure: a 502 that says so, whatever status the engine chose."""
    if rejected_handoff(exc.body):
        return UpstreamError(exc.service, f"{_message(exc.body)} (a stage lost what an earlier one handed it)", 502)
    return exc


def _as_server_reply(service: str, reply: Reply) -> Reply:
    if not rejected_handoff(reply.body):
        return reply
    error = RequestError(502, f"{service}: {_message(reply.body)} (a stage lost what an earlier one handed it)")
    return Reply(502, orjson.dumps(error.body()))


def _message(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:300].decode(errors="replace")
