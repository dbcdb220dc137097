"""Routing policies and stream-continuation logic of the frontend (unit level)."""

from __future__ import annotations

import orjson

from graph.plan import StageConfig, Upstream
from nodes.frontend.relay import continuation, generated_so_far
from nodes.frontend.requests import ClientRequest, prompt_text
from nodes.frontend.routing import LeastLoaded, PrefixAware, RoundRobin, block_hashes, make_picker


def ups(n: int) -> list[Upstream]:
    return [Upstream(service=f"w-{i}", url=f"http://h{i}:1") for i in range(n)]


def test_round_robin_cycles_and_skips_failed() -> None:
    rr = RoundRobin(ups(3))
    assert [rr.pick().service for _ in range(6)] == ["w-0", "w-1", "w-2"] * 2
    rr.failed(rr.upstreams[1])
    assert "w-1" not in {rr.pick().service for _ in range(6)}
    rr.recovered(rr.upstreams[1])
    assert "w-1" in {rr.pick().service for _ in range(6)}


def test_all_down_still_answers_something() -> None:
    rr = RoundRobin(ups(2))
    for u in rr.upstreams:
        rr.failed(u)
    assert rr.pick().service in {"w-0", "w-1"}


def test_least_loaded_prefers_idle() -> None:
    ll = LeastLoaded(ups(3))
    ll.started(ll.upstreams[0])
    ll.started(ll.upstreams[0])
    ll.started(ll.upstreams[1])
    assert ll.pick().service == "w-2"
    ll.finished(ll.upstreams[0])
    ll.finished(ll.upstreams[0])
    assert ll.pick().service in {"w-0", "w-2"}


def test_prefix_aware_sends_shared_prefix_to_same_replica() -> None:
    kv = PrefixAware(ups(4), block_chars=16)
    shared = "system prompt shared by all requests " * 4
    first = kv.pick(prompt=shared + "question one").service
    for q in ("question two", "another question", "third one here"):
        assert kv.pick(prompt=shared + q).service == first
    # An unrelated prompt goes to the least loaded / next replica, not necessarily the same.
    kv.started(kv.upstreams[int(first[-1])])
    assert kv.pick(prompt="completely different text " * 3).service != first


def test_block_hashes_chain() -> None:
    a = block_hashes("x" * 64 + "y" * 64, 64)
    b = block_hashes("x" * 64 + "z" * 64, 64)
    assert len(a) == 2 and a[0] == b[0] and a[1] != b[1]
    assert block_hashes("short", 64) == []


def test_make_picker_by_policy() -> None:
    for policy, cls in (("round_robin", RoundRobin), ("least_loaded", LeastLoaded), ("kv", PrefixAware)):
        stage = StageConfig(stage="aggregate", node="w", role="worker", protocol="vllm", upstreams=ups(2), policy=policy)
        assert isinstance(make_picker(stage), cls)


def _sse(kind: str, pieces: list[str]) -> list[bytes]:
    out = []
    for p in pieces:
        choice = {"index": 0, "delta": {"content": p}} if kind == "chat" else {"index": 0, "text": p}
        out.append(b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n")
    return out


def test_chat_continuation_appends_partial_answer() -> None:
    req = ClientRequest("chat", "/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "stream": True,
        "kv_transfer_params": {"x": 1},
    })
    sent = _sse("chat", ["Hel", "lo", " wor"])
    assert generated_so_far("chat", sent) == ("Hello wor", 3)
    nxt = continuation(req, sent)
    assert nxt.body["messages"][-1] == {"role": "assistant", "content": "Hello wor"}
    assert nxt.body["continue_final_message"] is True and nxt.body["max_tokens"] == 7
    assert "kv_transfer_params" not in nxt.body


def test_completion_continuation_extends_prompt() -> None:
    req = ClientRequest("completions", "/v1/completions", {"model": "m", "prompt": "Once", "max_tokens": 4, "stream": True})
    nxt = continuation(req, _sse("completions", [" upon", " a"]))
    assert nxt.body["prompt"] == "Once upon a" and nxt.body["max_tokens"] == 2


def test_prompt_text_of_chat_parts() -> None:
    body = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [
        {"type": "text", "text": "T"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}]}
    assert prompt_text(body) == "S\nT"
