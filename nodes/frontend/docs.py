"""The frontend's described surface on FastAPI: the OpenAPI 3.1 document (/openapi.json),
Swagger UI (/docs), and the admin routes (/v1/models, /health, /metrics).

The two generate routes are answered by :class:`~nodes.frontend.app.FrontendApp`'s raw
ASGI path (measured much faster than a FastAPI route); every other request is handed
here. The generate routes are declared on a router of their own, never mounted, only so
that the document describes them from the same pydantic models that check requests.

Swagger UI's assets come from the ``swagger-ui-bundle-v2`` package and are served by
this app, so /docs works on a cluster with no internet.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import orjson
import swagger_ui_bundle
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from ..common.openai_errors import RequestError
from . import metrics
from .limits import ContextLengths
from .openai_models import ChatCompletionRequest, CompletionRequest
from .openai_replies import ChatCompletion, ChatCompletionChunk, Completion, ErrorResponse, Health, ModelList

ASSETS = "/docs/assets"
_JSON = "application/json"
_ERRORS = {
    400: "The request is malformed; `error.param` names the field (OpenAI's wording and shape).",
    404: "The model is not served here (`code: model_not_found`).",
    413: "The body, or a media part in it, is larger than allowed.",
    502: "No engine replica answered, or one failed.",
    503: "The engines of this model are not ready yet.",
    504: "An engine did not answer in time.",
}


def _generate_responses(answer: type, chunk: type) -> dict[int | str, dict[str, Any]]:
    sse = {"description": "With `stream: true`: server-sent events, each `data: <chunk JSON>`, ending with "
                          "`data: [DONE]`. An error after the stream began arrives as one `data: {\"error\": ...}`.",
           "content": {"text/event-stream": {"schema": _sse_event(chunk.__name__)}}}
    out: dict[int | str, dict[str, Any]] = {200: {"model": answer, **sse}}
    out.update({status: {"model": ErrorResponse, "description": what} for status, what in _ERRORS.items()})
    out["4XX"] = {"model": ErrorResponse, "description": "Another client error, as the engine answered it."}
    return out


def _sse_event(chunk: str) -> dict[str, Any]:
    """One server-sent event of a stream (Open API 3.1 has ``schema`` describe each event)."""
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{chunk}"},
                         {"$ref": "#/components/schemas/ErrorResponse"}]}
    return {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
        {"const": "[DONE]"},
        {"type": "string", "contentMediaType": _JSON, "contentSchema": payload},
    ]}}}


_described = APIRouter()


@_described.post("/v1/chat/completions", response_model=ChatCompletion, operation_id="createChatCompletion",
                 responses=_generate_responses(ChatCompletion, ChatCompletionChunk), summary="Chat completion",
                 tags=["OpenAI"])
def _chat(body: ChatCompletionRequest) -> None:
    """OpenAI's chat completions, along this graph's route for the model (processor, encoder,
    prefill, decode). Fields not listed here reach the engine as they are (engine extensions such
    as `ignore_eos`, `min_tokens`, `top_k`)."""


@_described.post("/v1/completions", response_model=Completion, operation_id="createCompletion",
                 responses=_generate_responses(Completion, Completion), summary="Completion", tags=["OpenAI"])
def _completions(body: CompletionRequest) -> None:
    """OpenAI's (legacy) completions: one prompt per request. Fields not listed here reach the engine
    as they are."""


def admin_app(models: Sequence[str], created: int, lengths: ContextLengths) -> FastAPI:
    """The FastAPI app serving everything but the generate routes."""
    app = FastAPI(title="servegraph frontend", openapi_url=None, docs_url=None, redoc_url=None,
                  separate_input_output_schemas=False)
    served = sorted(models)
    listing = orjson.dumps({"object": "list", "data": [
        {"id": m, "object": "model", "created": created, "owned_by": "servegraph"} for m in served]})
    documents: dict[tuple, bytes] = {}

    @app.get("/v1/models", response_model=ModelList, summary="Served models", operation_id="listModels",
             tags=["OpenAI"])
    async def list_models() -> Response:
        return Response(listing, media_type=_JSON)

    @app.get("/health", response_model=Health, summary="Liveness of the frontend", operation_id="health",
             tags=["operations"])
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics", operation_id="metrics",
             tags=["operations"],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), headers={"content-type": CONTENT_TYPE_LATEST})

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        if not lengths.settled:
            await lengths.learn()
        key = tuple(sorted(lengths.known.items()))
        if key not in documents:
            documents[key] = orjson.dumps(document(app, served, lengths.known))
        return Response(documents[key], media_type=_JSON)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # Relative URLs: the page keeps working behind a proxy that serves the API under a prefix.
        return get_swagger_ui_html(openapi_url="openapi.json", title="servegraph frontend",
                                   swagger_js_url=f"{ASSETS[1:]}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS[1:]}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS[1:]}/favicon-32x32.png")

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="swagger-ui")

    @app.exception_handler(HTTPException)
    async def openai_shaped(request: Request, exc: HTTPException) -> Response:
        path = request.url.path
        message = {404: f"no route {path}", 405: f"{request.method} {path} is not supported"}.get(
            exc.status_code, str(exc.detail))
        error = RequestError(exc.status_code, message)
        return Response(orjson.dumps(error.body()), status_code=exc.status_code, headers=exc.headers,
                        media_type=_JSON)

    return app


def document(app: FastAPI, models: Sequence[str], lengths: dict[str, int]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin routes and the described generate routes, with the
    served models and their known context lengths filled in."""
    doc = get_openapi(
        title="servegraph frontend", version="1", openapi_version="3.1.0", routes=[*app.routes, *_described.routes],
        separate_input_output_schemas=False,
        description="OpenAI-compatible API of one servegraph graph. Errors use OpenAI's shape: "
                    "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.",
    )
    schemas = doc["components"]["schemas"]
    # Nothing here answers 422 (FastAPI's default for a route with a body): checks answer 400.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for item in doc["paths"].values():
        for operation in item.values():
            operation["responses"].pop("422", None)
    _, extra = models_json_schema([(ChatCompletionChunk, "validation")],
                                  ref_template="#/components/schemas/{model}")
    for name, schema in extra.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        _fill_in(schemas[name], models, lengths)
    if models:  # what Swagger UI's "Try it out" starts from (and schemathesis tries first)
        for path, example in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello!"}]}),
                              ("/v1/completions", {"prompt": "The capital of France is"})):
            body = doc["paths"][path]["post"]["requestBody"]["content"][_JSON]
            body["example"] = {"model": models[0], **example, "max_tokens": 16}
    return doc


def _fill_in(request: dict[str, Any], models: Sequence[str], lengths: dict[str, int]) -> None:
    """The served models as the only values of ``model``; each known context length as the bound of
    the token counts (one bound when all models share it, else one per model)."""
    props = request["properties"]
    props["model"] = {**props["model"], "enum": list(models)}
    counts = [f for f in ("max_tokens", "max_completion_tokens") if f in props]
    known = {m: lengths[m] for m in models if m in lengths}
    if known and len(known) == len(models) and len(set(known.values())) == 1:
        bound = next(iter(known.values()))
        for name in counts:
            props[name] = _bounded(props[name], bound)
        return
    for model, bound in known.items():
        request.setdefault("allOf", []).append({
            "if": {"required": ["model"], "properties": {"model": {"const": model}}},
            "then": {"properties": {name: {"maximum": bound} for name in counts}},
        })


def _bounded(schema: dict[str, Any], bound: int) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for branch in out.get("anyOf", [out]):
        if branch.get("type") == "integer":
            branch["maximum"] = bound
    return out
