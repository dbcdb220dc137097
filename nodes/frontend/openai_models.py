"""The request bodies the frontend accepts, as strict pydantic models: the one source of both
its request checks (:mod:`.requests`) and its OpenAPI document (:mod:`.docs`).

What is checked follows OpenAI's API reference (roles, content-part types per role, the
required fields of each part, numeric ranges, types), narrowed where the engines behind
us refuse more (``top_p`` of 0, ``n`` other than 1, ``file`` parts, URLs the processor
cannot fetch) so that a body this schema allows is one the engines take. Media parts are
the ones vLLM's chat API reads and our processor handles.

Fields not named here pass through to the engine untouched (``additionalProperties``):
engine extensions such as ``ignore_eos``, ``min_tokens``, ``top_k`` or
``repetition_penalty`` differ between vLLM, SGLang and TensorRT-LLM, and each engine
checks its own (vLLM lets unknown fields through with a warning, as we do). The fields
the frontend itself sets to drive the engines' disaggregation handshakes are refused
(:data:`INTERNAL_FIELDS`): a client steering where an engine pulls KV from is not a
feature.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, ClassVar, Literal, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

#: The largest integer a double holds exactly: JSON tools (and JavaScript clients) compare numbers as
#: doubles, so a bound beyond it is one they cannot tell from its neighbours.
SAFE_INT = 2**53 - 1
#: Set by the frontend for the engines' handshakes (ENGINES.md); a client may not send them.
INTERNAL_FIELDS = ("kv_transfer_params", "ec_transfer_params", "disaggregated_params",
                   "bootstrap_host", "bootstrap_port", "bootstrap_room")

_B64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
Base64 = Annotated[str, Field(pattern=f"^{_B64}$", min_length=4, description="standard base64, padded")]
# Spelled with explicit ranges, not \S: regex dialects disagree on what whitespace is (U+0085 is
# whitespace to pydantic's Rust regex, not to the ECMA-262 regex JSON Schema tools use).
MediaUrl = Annotated[str, Field(
    pattern=rf"^(?:https?://[^\x00-\x20\x7f]+|data:[^,]*;base64,{_B64})$",
    description="an http(s) URL, or a data URL with base64 bytes (data:<mime>;base64,<data>)",
)]
Tokens = Annotated[int, Field(ge=1, le=SAFE_INT)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
StopString = Annotated[str, Field(min_length=1)]
_TOKEN_ID = r"^[0-9]{1,9}$"
#: Token id (as a string) -> bias. Spelled out: pydantic documents key patterns as patternProperties,
#: which would let any other key through.
LogitBias = Annotated[
    dict[Annotated[str, Field(pattern=_TOKEN_ID)], Annotated[float, Field(ge=-100, le=100)]],
    WithJsonSchema({"type": "object", "propertyNames": {"pattern": _TOKEN_ID},
                    "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}}),
]


class _Strict(BaseModel):
    """JSON types as they are (no "1" for 1, no 0 for false); unknown keys kept for the engine."""

    model_config = ConfigDict(strict=True, extra="allow")


# --- content parts ----------------------------------------------------------------------

class TextPart(_Strict):
    type: Literal["text"]
    text: str


class RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


class ImageUrl(_Strict):
    url: MediaUrl
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


class MediaRef(_Strict):
    url: MediaUrl


class VideoUrlPart(_Strict):
    """vLLM's extension: a video by URL."""

    type: Literal["video_url"]
    video_url: MediaRef


class AudioUrlPart(_Strict):
    """vLLM's extension: audio by URL."""

    type: Literal["audio_url"]
    audio_url: MediaRef


class InputAudio(_Strict):
    data: Base64
    format: Literal["wav", "mp3"]


class InputAudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


_Number = Annotated[float, Field(ge=-SAFE_INT, le=SAFE_INT)]
_Metadata = Annotated[list[_Number], Field(max_length=4096, description="numeric metadata, e.g. image_grid_thw")]
_EmbedsExtra = dict[str, Union[Base64, _Metadata]]


class ImageEmbeds(_Strict):
    """The tensor under 'image_embeds', beside further named tensors or metadata arrays."""

    image_embeds: Base64
    __pydantic_extra__: _EmbedsExtra  # type: ignore[assignment]


class AudioEmbeds(_Strict):
    """The tensor under 'audio_embeds', beside further named tensors or metadata arrays."""

    audio_embeds: Base64
    __pydantic_extra__: _EmbedsExtra  # type: ignore[assignment]


class VideoEmbeds(_Strict):
    """The tensor under 'video_embeds', beside further named tensors or metadata arrays."""

    video_embeds: Base64
    __pydantic_extra__: _EmbedsExtra  # type: ignore[assignment]


class ImageEmbedsPart(_Strict):
    """vLLM's extension: precomputed image embeddings, a base64 .npy tensor."""

    type: Literal["image_embeds"]
    image_embeds: Base64 | ImageEmbeds


class AudioEmbedsPart(_Strict):
    """vLLM's extension: precomputed audio embeddings, a base64 .npy tensor."""

    type: Literal["audio_embeds"]
    audio_embeds: Base64 | AudioEmbeds


class VideoEmbedsPart(_Strict):
    """vLLM's extension: precomputed video embeddings, a base64 .npy tensor."""

    type: Literal["video_embeds"]
    video_embeds: Base64 | VideoEmbeds


_TextParts = Annotated[list[TextPart], Field(min_length=1)]
UserPart = Annotated[
    Union[TextPart, ImageUrlPart, InputAudioPart, VideoUrlPart, AudioUrlPart,
          ImageEmbedsPart, AudioEmbedsPart, VideoEmbedsPart],
    Field(discriminator="type"),
]
AssistantPart = Annotated[Union[TextPart, RefusalPart], Field(discriminator="type")]


# --- messages ---------------------------------------------------------------------------

class SystemMessage(_Strict):
    role: Literal["system"]
    content: str | _TextParts
    name: str | None = None


class DeveloperMessage(_Strict):
    role: Literal["developer"]
    content: str | _TextParts
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"]
    content: str | Annotated[list[UserPart], Field(min_length=1)]
    name: str | None = None


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AudioRef(_Strict):
    id: str


class AssistantMessage(_Strict):
    """An earlier answer. ``content`` may be left out (vLLM takes that; OpenAI asks for it unless
    ``tool_calls`` or ``function_call`` is given)."""

    role: Literal["assistant"]
    content: str | Annotated[list[AssistantPart], Field(min_length=1)] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    audio: AudioRef | None = None


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: str | _TextParts
    tool_call_id: str


class FunctionMessage(_Strict):
    """Deprecated by OpenAI in favour of ``tool`` messages; still accepted there and here."""

    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    Union[SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage, FunctionMessage],
    Field(discriminator="role"),
]
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


# --- request bodies ---------------------------------------------------------------------

class StreamOptions(_Strict):
    include_usage: bool | None = None


class JsonSchemaFormat(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


class Rule(NamedTuple):
    """A check between two fields, with the JSON Schema that says the same."""

    param: str
    message: str
    broken: Callable[[dict[str, Any]], bool]
    schema: dict[str, Any]


def _needs_true(field: str, when: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema: if ``when`` holds, ``field`` must be present and true."""
    return {"if": when, "then": {"required": [field], "properties": {field: {"const": True}}}}


STREAM_OPTIONS_RULE = Rule(
    "stream_options", "'stream_options' is only allowed when 'stream' is true",
    lambda b: b.get("stream_options") is not None and b.get("stream") is not True,
    _needs_true("stream", {"required": ["stream_options"], "properties": {"stream_options": {"type": "object"}}}),
)
TOP_LOGPROBS_RULE = Rule(
    "top_logprobs", "'top_logprobs' above 0 needs 'logprobs': true",
    lambda b: isinstance(b.get("top_logprobs"), int) and b["top_logprobs"] > 0 and b.get("logprobs") is not True,
    _needs_true("logprobs", {"required": ["top_logprobs"],
                             "properties": {"top_logprobs": {"type": "integer", "minimum": 1}}}),
)


def _document(rules: tuple[Rule, ...]) -> Callable[[dict[str, Any]], None]:
    """What a request body's JSON Schema adds to pydantic's: the internal fields forbidden, the rules
    between fields, and any other field allowed."""
    def extra(schema: dict[str, Any]) -> None:
        schema.setdefault("properties", {}).update({name: False for name in INTERNAL_FIELDS})
        schema["allOf"] = [rule.schema for rule in rules]
        schema["additionalProperties"] = True
    return extra


class _Request(_Strict):
    model: str = Field(min_length=1, description="a served model (GET /v1/models)")
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: Tokens | None = Field(default=None, description="at most the model's context length")
    n: Annotated[int, Field(ge=1, le=1)] | None = Field(default=None, description="only 1 is supported")
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Annotated[int, Field(ge=-SAFE_INT, le=SAFE_INT)] | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    logit_bias: LogitBias | None = None
    user: str | None = None


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions. Other fields reach the engine as they are."""

    RULES: ClassVar[tuple[Rule, ...]] = (STREAM_OPTIONS_RULE, TOP_LOGPROBS_RULE)
    model_config = ConfigDict(json_schema_extra=_document(RULES))

    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Tokens | None = Field(default=None, description="at most the model's context length")
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: Annotated[Union[TextFormat, JsonObjectFormat, JsonSchemaResponseFormat],
                               Field(discriminator="type")] | None = None
    parallel_tool_calls: bool | None = None


TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1)]


class CompletionRequest(_Request):
    """POST /v1/completions: one prompt (a string, or token ids) per request. Other fields reach the
    engine as they are."""

    RULES: ClassVar[tuple[Rule, ...]] = (STREAM_OPTIONS_RULE,)
    model_config = ConfigDict(json_schema_extra=_document(RULES))

    prompt: Union[str, Annotated[list[str], Field(min_length=1, max_length=1)], TokenIds,
                  Annotated[list[TokenIds], Field(min_length=1, max_length=1)]] = Field(
        description="a string or token ids; a list holds exactly one prompt (no batches)")
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool | None = None
