"""OpenAI-shaped error responses."""

from __future__ import annotations

import orjson
from starlette.responses import Response

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 408: "timeout", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 502: "upstream_error", 503: "service_unavailable", 504: "timeout"}


class RequestError(Exception):
    """A request we answer with an error status and OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        """``{"error": {...}}``."""
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code or self.status}}

    def response(self) -> Response:
        """As an HTTP response."""
        return Response(orjson.dumps(self.body()), status_code=self.status, media_type="application/json")

    def sse(self) -> bytes:
        """As one SSE event, for errors after a stream has started."""
        return b"data: " + orjson.dumps(self.body()) + b"\n\n"
