"""TensorRT-LLM's P/D (docs/engines.md): a ``context_only`` request to the context server, then the
returned ``disaggregated_params`` as ``generation_only`` to the generation server."""

from __future__ import annotations

from typing import Any

from ..requests import ClientRequest
from .base import Outcome, Protocol, StageRuntime, without_stream


class TrtllmProtocol(Protocol):
    """TensorRT-LLM and the mock imitating it."""

    name = "trtllm"

    async def disaggregated(
        self, req: ClientRequest, prefill: StageRuntime, decode: StageRuntime, extra: dict[str, Any]
    ) -> Outcome:
        body = {**req.body, **extra}
        context_body = without_stream(body, req.kind, max_tokens=None)
        context_body["disaggregated_params"] = {"request_type": "context_only"}
        reply = await self.call(prefill, req, req.path, context_body)
        data = reply.json()
        choices = data.get("choices") or [{}]
        params = choices[0].get("disaggregated_params") or data.get("disaggregated_params") or {}
        generation_body = {**body, "disaggregated_params": {**params, "request_type": "generation_only"}}
        return await self.final(decode, req, generation_body)
