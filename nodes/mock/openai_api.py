"""OpenAI request parsing and response bodies (vLLM 0.32's shapes, which SGLang and TRT-LLM share).

Non-standard fields follow vLLM: ``return_token_ids`` adds ``prompt_token_ids``
(top level for chat, per choice for completions) and ``token_ids`` per
choice; ``kv_transfer_params``/``ec_transfer_params`` are top level; TRT-LLM's
``disaggregated_params`` sit on the choice.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..common.openai_errors import RequestError
from .engine import Engine
from .request import GenRequest, Prepared
from .media import flatten_messages
from .tokenizer import encode_with_media


def parse_chat(engine: Engine, body: dict[str, Any]) -> GenRequest:
    """A /v1/chat/completions body -> GenRequest.

    Raises:
        RequestError: 400/404/413 naming the field.
    """
    check_model(engine, body)
    cfg, tok = engine.cfg, engine.tok
    messages, media = flatten_messages(body.get("messages"), cfg.max_media_bytes)
    span = max(tok.vocab_size - tok.media_base, 1)  # type: ignore[attr-defined]
    media_ids = [m.token_ids(cfg.mm_tokens, tok.media_base, span) for m in media]  # type: ignore[attr-defined]
    try:
        text = tok.render_chat(messages)
    except Exception as exc:  # a template's raise_exception() or a jinja error: the messages don't fit it
        raise RequestError(400, f"the chat template rejected these messages: {exc}", "messages") from None
    ids = encode_with_media(tok, text, media_ids)
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    return GenRequest("chat", body, ids, media, _max_tokens(engine, max_tokens, "max_tokens"),
                      _checked_stream(body), _flag(body, "ignore_eos"))


def parse_completion(engine: Engine, body: dict[str, Any]) -> GenRequest:
    """A /v1/completions body -> GenRequest (prompt: a string, token ids, or a list of one of those)."""
    check_model(engine, body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    ids = _prompt_ids(engine, prompt, "prompt")
    return GenRequest("completion", body, ids, [], _max_tokens(engine, body.get("max_tokens"), "max_tokens"),
                      _checked_stream(body), _flag(body, "ignore_eos"))


def parse_generate(engine: Engine, body: dict[str, Any]) -> GenRequest:
    """An SGLang /generate body (``text`` or ``input_ids``, ``sampling_params``)."""
    source = body.get("input_ids") if body.get("input_ids") is not None else body.get("text")
    ids = _prompt_ids(engine, source, "text")
    params = body.get("sampling_params") or {}
    if not isinstance(params, dict):
        raise RequestError(400, "sampling_params must be an object", "sampling_params")
    return GenRequest("generate", body, ids, [], _max_tokens(engine, params.get("max_new_tokens"),
                                                             "sampling_params.max_new_tokens"),
                      _checked_stream(body), bool(params.get("ignore_eos")))


def check_model(engine: Engine, body: dict[str, Any]) -> None:
    """404 for a model this engine does not serve (vLLM's wording); a missing model is fine."""
    model = body.get("model")
    if model is None:
        return
    if not isinstance(model, str):
        raise RequestError(400, "'model' must be a string", "model")
    if model not in (engine.cfg.model_name, engine.cfg.model):
        raise RequestError(404, f"The model `{model}` does not exist.", "model", code="model_not_found")


def _prompt_ids(engine: Engine, prompt: Any, field: str) -> list[int]:
    if isinstance(prompt, str):
        return engine.tok.encode(prompt)
    if isinstance(prompt, list) and prompt and all(type(t) is int and 0 <= t < engine.tok.vocab_size for t in prompt):
        return prompt
    raise RequestError(400, f"'{field}' must be a string or a non-empty list of token ids below "
                       f"{engine.tok.vocab_size} (batches are not supported by the mock)", field)


def _max_tokens(engine: Engine, value: Any, field: str) -> int:
    if value is None:
        return engine.cfg.default_max_tokens
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(400, f"{field} must be an integer >= 1, got {value!r}", field)
    return value


def _checked_stream(body: dict[str, Any]) -> bool:
    """``stream``, after checking the sampling fields the mock looks at (n, temperature)."""
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be true or false", "stream")
    n = body.get("n")
    if n not in (None, 1):
        raise RequestError(400, "the mock engine supports n=1 only", "n")
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or temperature < 0):
        raise RequestError(400, "temperature must be a number >= 0", "temperature")
    return stream


def _flag(body: dict[str, Any], key: str) -> bool:
    return bool(body.get(key))


def include_usage(body: dict[str, Any]) -> bool:
    """stream_options.include_usage."""
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def usage(prep: Prepared, completion: int) -> dict[str, Any]:
    """OpenAI usage, with cached prompt tokens in prompt_tokens_details."""
    n = len(prep.req.prompt_ids)
    return {"prompt_tokens": n, "total_tokens": n + completion, "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": prep.cached_tokens} if prep.cached_tokens else None}


def full_response(engine: Engine, prep: Prepared, rid: str, ids: list[int], reason: str) -> bytes:
    """The non-streamed body for chat, completions or /generate."""
    req = prep.req
    text = engine.tok.decode(ids)
    want_ids = bool(req.body.get("return_token_ids"))
    if req.kind == "generate":
        return orjson.dumps({"text": text, "output_ids": ids, "meta_info": _meta(prep, rid, len(ids), reason)})
    if req.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": None, "finish_reason": reason, "stop_reason": None}
        out: dict[str, Any] = {"id": "chatcmpl-" + rid, "object": "chat.completion"}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason, "stop_reason": None}
        if want_ids:
            choice["prompt_token_ids"] = req.prompt_ids
        out = {"id": "cmpl-" + rid, "object": "text_completion"}
    if want_ids:
        choice["token_ids"] = ids
    choice.update(prep.choice_extra)
    out.update(created=int(time.time()), model=engine.cfg.model_name, choices=[choice], usage=usage(prep, len(ids)))
    if want_ids and req.kind == "chat":
        out["prompt_token_ids"] = req.prompt_ids
    out.update(prep.extra)
    return orjson.dumps(out)


def _meta(prep: Prepared, rid: str, completion: int, reason: str) -> dict[str, Any]:
    finish = {"type": reason, "length": completion} if reason == "length" else {"type": reason}
    return {"id": rid, "finish_reason": finish, "prompt_tokens": len(prep.req.prompt_ids),
            "completion_tokens": completion, "cached_tokens": prep.cached_tokens}


class StreamFormatter:
    """SSE events of one streamed response, with the per-token chunk pre-split around its text."""

    def __init__(self, engine: Engine, prep: Prepared, rid: str) -> None:
        self.prep = prep
        self.kind = prep.req.kind
        self.want_ids = bool(prep.req.body.get("return_token_ids"))
        self.usage = include_usage(prep.req.body)
        created = int(time.time())
        model = orjson.dumps(engine.cfg.model_name)
        if self.kind == "chat":
            self._head = b'{"id":"chatcmpl-%s","object":"chat.completion.chunk","created":%d,"model":%s,' % (
                rid.encode(), created, model)
            self._pre = b'data: ' + self._head + b'"choices":[{"index":0,"delta":{"content":'
            self._post = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        elif self.kind == "completion":
            self._head = b'{"id":"cmpl-%s","object":"text_completion","created":%d,"model":%s,' % (
                rid.encode(), created, model)
            self._pre = b'data: ' + self._head + b'"choices":[{"index":0,"text":'
            self._post = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
        self._rid = rid
        self._text: list[str] = []
        self._ids: list[int] = []

    def start(self) -> bytes:
        """The first event (chat: the assistant role; vLLM also sends prompt ids here)."""
        if self.kind != "chat":
            return b""
        extra = b""
        if self.want_ids:
            extra = b',"prompt_token_ids":' + orjson.dumps(self.prep.req.prompt_ids)
        return (b'data: ' + self._head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                b'"logprobs":null,"finish_reason":null}]' + extra + b'}\n\n')

    def token(self, token_id: int, text: str, index: int) -> bytes:
        """One token's event."""
        if self.kind == "generate":
            self._text.append(text)
            self._ids.append(token_id)
            return b"data: " + orjson.dumps({"text": "".join(self._text), "output_ids": self._ids,
                                             "meta_info": _meta(self.prep, self._rid, len(self._ids), "")}) + b"\n\n"
        if self.want_ids:
            post = self._post[:-5] + b',"token_ids":[%d]' % token_id + self._post[-5:]
            if self.kind == "completion" and index == 0:
                post = post[:-5] + b',"prompt_token_ids":' + orjson.dumps(self.prep.req.prompt_ids) + post[-5:]
            return self._pre + orjson.dumps(text) + post
        return self._pre + orjson.dumps(text) + self._post

    def end(self, completion: int, reason: str) -> bytes:
        """The finish_reason event, the usage event if asked, and [DONE]."""
        if self.kind == "generate":
            final = {"text": "".join(self._text), "output_ids": self._ids,
                     "meta_info": _meta(self.prep, self._rid, completion, reason)}
            return b"data: " + orjson.dumps(final) + b"\n\ndata: [DONE]\n\n"
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason,
                                      "stop_reason": None}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason, "stop_reason": None}
        choice.update(self.prep.choice_extra)
        out = self._head + b'"choices":' + orjson.dumps([choice])
        extra = dict(self.prep.extra)
        if extra:
            out += b"," + orjson.dumps(extra)[1:-1]
        chunks = [b"data: " + out + b"}\n\n"]
        if self.usage:
            chunks.append(b"data: " + self._head + b'"choices":[],"usage":' +
                          orjson.dumps(usage(self.prep, completion)) + b"}\n\n")
        chunks.append(b"data: [DONE]\n\n")
        return b"".join(chunks)
