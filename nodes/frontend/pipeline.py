"""Execute one request along its route: processor, encoder, then prefill+decode or one worker."""

from __future__ import annotations

from typing import Any

import orjson

from compiler.ir import RouteConfig, StageConfig

from ..common.openai_errors import RequestError
from .protocols import PROTOCOLS, Outcome, Protocol
from .requests import ClientRequest
from .stage import StageRuntime
from .upstream import UpstreamError, UpstreamPool


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
        self._protocols: dict[str, Protocol] = {}

    def protocol(self, stage: StageRuntime) -> Protocol:
        name = stage.config.protocol
        if name not in self._protocols:
            self._protocols[name] = PROTOCOLS[name](self.pool, self.timeout_s, self.stage_timeout_s)
        return self._protocols[name]

    async def execute(self, req: ClientRequest) -> Outcome:
        """Run every stage the request needs; the last one's answer comes back."""
        has_media = req.has_media()
        if has_media and self.processor is not None:
            req = ClientRequest(req.kind, req.path, await self._process(req.body))
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
