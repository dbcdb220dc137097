"""The bodies the frontend answers with, for its OpenAPI document (:mod:`.docs`).

The engines write the answers and the frontend relays their bytes, so these models
describe what vLLM, SGLang and TensorRT-LLM (and the mock) have in common and let the
rest through: the fields OpenAI's clients read are required and typed, engine
additions (``stop_reason``, ``prompt_token_ids``, ...) are allowed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class PromptTokensDetails(_Open):
    cached_tokens: int | None = None


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class AssistantReply(_Open):
    role: Literal["assistant"]
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(_Open):
    index: int
    message: AssistantReply
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = Field(description="stop, length, tool_calls, ... (the engine's word)")


class ChatCompletion(_Open):
    """A whole chat answer."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class Delta(_Open):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(_Open):
    index: int
    delta: Delta
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Open):
    """One event of a streamed chat answer; with ``stream_options.include_usage`` the last one before
    ``[DONE]`` has no choices and carries ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(_Open):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class Completion(_Open):
    """A whole completion, or (streamed) one event of it."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(_Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    """The served models."""

    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]


class ErrorObject(_Open):
    message: str
    type: str
    param: str | None = Field(default=None, description="the request field at fault, e.g. messages[0].role")
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape."""

    error: ErrorObject
