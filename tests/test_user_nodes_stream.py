"""The order of a stream's events around the response nodes' text (nodes/frontend/user_nodes.py).

Run with no response node, so that the text passes as it comes and what is checked is what the rewrite
passes on around it: the role chunk first, the finish and usage after the text, and an engine's error
event wherever it comes, even after the last piece of text.
"""

from __future__ import annotations

import asyncio
import types

import orjson

from nodes.frontend.user_nodes import _StreamRewrite


def _event(delta: dict, finish: str | None = None, **extra: object) -> bytes:
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps({**body, **extra}) + b"\n\n"


def _run(chunks: list[bytes]) -> list[bytes]:
    async def events():
        for chunk in chunks:
            yield chunk

    async def collect() -> list[bytes]:
        req = types.SimpleNamespace(kind="chat", body={})
        return [e async for e in _StreamRewrite(req, events(), [], pool=None).run()]  # type: ignore[arg-type]

    return asyncio.run(collect())


ERROR = b'data: {"error": {"message": "decode-0: stream broken", "code": 502}}\n\n'


def test_an_error_after_the_last_text_reaches_the_client() -> None:
    out = _run([_event({"role": "assistant", "content": ""}), _event({"content": "Hello"}), ERROR,
                b"data: [DONE]\n\n"])
    assert ERROR in out, out
    assert out.index(ERROR) > 1 and out[-1] == b"data: [DONE]\n\n", out


def test_an_error_with_no_text_at_all_reaches_the_client() -> None:
    out = _run([_event({"role": "assistant", "content": ""}), ERROR])
    assert out[0].startswith(b'data: {"object"') and b'"role":"assistant"' in out[0], out
    assert ERROR in out, out


def test_role_first_text_then_finish() -> None:
    out = _run([_event({"role": "assistant", "content": ""}), _event({"content": "Hi"}),
                _event({"content": " there"}, "stop"), b"data: [DONE]\n\n"])
    texts = [orjson.loads(e[6:])["choices"][0].get("delta", {}).get("content") for e in out[:-1]]
    assert b'"role":"assistant"' in out[0] and texts[1:3] == ["Hi", " there"], out
    assert orjson.loads(out[-2][6:])["choices"][0]["finish_reason"] == "stop" and out[-1] == b"data: [DONE]\n\n"
