"""Routing policies and stream-continuation logic of the frontend (unit level)."""

from __future__ import annotations

import orjson

from graph.plan import StageConfig, Upstream
from nodes.frontend.relay import continuation, generated_so_far
from nodes.frontend.requests import ClientRequest, prompt_text
from nodes.frontend.kv_capacity import CacheSizes, vllm_cache_tokens
from nodes.frontend.routing import MAX_BLOCKS, LeastLoaded, PrefixAware, RoundRobin, block_hashes, make_picker


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


def sized(upstreams: list[Upstream], chars: int) -> CacheSizes:
    """Cache sizes as the engines would state them: ``chars`` prompt characters per replica."""
    sizes = CacheSizes(upstreams)
    sizes.tokens = {u.service: chars // 4 for u in upstreams}
    sizes.record_sample(400, 100)  # 4 characters a token
    return sizes


def doc(name: str) -> str:
    """A prompt of exactly 10 blocks of 16 characters."""
    return (name * 160)[:160]


def test_kv_places_a_new_prefix_where_it_fits() -> None:
    """Each replica holds 2.5 such prompts; w-1 is busy. The old policy put every new prefix on the idle
    w-0 (fewest in flight), the third one pushing out the first; now the third goes to w-1."""
    def run(sizes: CacheSizes | None) -> list[str]:
        upstreams = ups(2)
        kv = PrefixAware(upstreams, block_chars=16, sizes=sizes)
        kv.started(upstreams[1])
        placed = []
        for name in ("a", "a", "b", "b", "c", "a"):  # a and b are asked twice: live prefixes
            placed.append(kv.pick(prompt=doc(name)).service)
        return placed

    upstreams = ups(2)
    assert run(sized(upstreams, 25 * 16)) == ["w-0", "w-0", "w-0", "w-0", "w-1", "w-0"]
    assert run(None) == ["w-0"] * 6  # sizes unknown: the old behaviour


def test_kv_forgets_what_the_replica_cannot_hold() -> None:
    """Like the engine's LRU cache, the model drops the least recently used blocks, a prompt's tail first."""
    upstreams = ups(1)
    kv = PrefixAware(upstreams, block_chars=16, sizes=sized(upstreams, 25 * 16))
    assert kv.capacity("w-0") == 25
    for name in ("a", "b", "c"):
        kv.pick(prompt=doc(name))
    hashes = {name: block_hashes(doc(name), 16) for name in "abc"}
    assert kv.overlap("w-0", hashes["a"]) == 5  # a's last 5 blocks pushed out by c, its head kept
    assert kv.overlap("w-0", hashes["b"]) == 10 and kv.overlap("w-0", hashes["c"]) == 10


def test_kv_pushes_out_what_is_no_longer_used_rather_than_what_is() -> None:
    """Both replicas are full. w-0 holds a and c, which one cache as large as both replicas would have
    dropped since (five other documents were asked after them); w-1 holds documents just asked. A new
    document goes to w-0, though it is the busier one."""
    upstreams = ups(2)
    kv = PrefixAware(upstreams, block_chars=16, sizes=sized(upstreams, 25 * 16))
    for name in ("a", "c"):
        assert kv.pick(frozenset({"w-1"}), prompt=doc(name)).service == "w-0"
    for name in ("d", "e", "f", "g", "h"):
        assert kv.pick(frozenset({"w-0"}), prompt=doc(name)).service == "w-1"
    kv.started(upstreams[0])
    new = block_hashes(doc("n"), 16)
    assert kv.pushed_out("w-0", new, 0) == 0 and kv.pushed_out("w-1", new, 0) == 10
    assert kv.pick(prompt=doc("n")).service == "w-0"


def test_kv_without_stated_sizes_keeps_the_old_bound() -> None:
    sizes = CacheSizes(ups(2))
    assert sizes.chars("w-0") is None and sizes.chars_per_token == 4.0
    assert PrefixAware(ups(2), sizes=sizes).capacity("w-0") == MAX_BLOCKS
    sizes.record_sample(350, 100)
    sizes.tokens["w-0"] = 1000
    assert sizes.chars("w-0") == 3500 and sizes.chars("w-1") is None


def test_vllm_cache_size_from_its_metrics() -> None:
    text = (
        '# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n'
        'vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_gpu_blocks="260"} 1.0\n'
        'vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="1",num_gpu_blocks="250"} 1.0\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 0.0\n'
    )
    assert vllm_cache_tokens(text) == 250 * 16  # data parallel: a request meets one engine's cache
    assert vllm_cache_tokens('vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0') is None
    assert vllm_cache_tokens("vllm:num_requests_running 0.0") is None


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
