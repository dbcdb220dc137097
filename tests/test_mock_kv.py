"""KV blocks: the shared hash chain, the block pool's LRU, and prefix hits seen through a real mock."""

from __future__ import annotations

import threading
import time

import pytest

from nodes.common.kvhash import block_hashes, common_prefix_blocks
from nodes.mock.blocks import BlockPool
from nodes.mock.launch import MockProcess, running
from tests.test_mock_api import get, post
from tests.test_mock_disagg import metric


def test_hash_chain_names_the_whole_prefix():
    a = list(range(40))
    b = list(range(16)) + [999] + list(range(17, 40))
    ha, hb = block_hashes(a, 16), block_hashes(b, 16)
    assert len(ha) == 2  # the partial third block has no hash
    assert ha[0] == hb[0] and ha[1] != hb[1]
    assert block_hashes(a, 16) == ha and all(0 <= h < 2 ** 63 for h in ha)
    assert common_prefix_blocks(ha, {ha[0]}) == 1 and common_prefix_blocks(ha, {ha[1]}) == 0
    with pytest.raises(ValueError):
        block_hashes(a, 0)


def test_pool_reuses_prefix_and_evicts_least_recent_tail_first():
    pool = BlockPool(capacity=6, block_size=4)
    first = pool.allocate([1, 2, 3], extra=1)
    assert first is not None and first.hit_blocks == 0 and pool.usage == 4 / 6
    second = pool.allocate([1, 2, 9], extra=0)  # shares blocks 1, 2 while first still runs
    assert second is not None and second.hit_blocks == 2
    assert pool.allocate([7, 8, 10], extra=0) is None  # 1 free block left, nothing evictable
    pool.release(first)
    pool.release(second)
    assert pool.usage == 0 and sorted(pool.cached_hashes) == [1, 2, 3, 9]
    third = pool.allocate([5, 6, 7, 8], extra=0)  # needs 4: 2 free + evicts 2 cached
    assert third is not None
    # the most recent release was `second` (1, 2, 9); its tail 9 and first's tail 3 went first
    assert sorted(pool.cached_hashes) == [1, 2, 5, 6, 7, 8]


def test_hits_on_blocks_still_computing_are_hits_that_wait_for_them():
    """vLLM 0.32 caches a request's full blocks when it schedules them (allocate_slots -> cache_blocks):
    a second request on that prefix hits them, but they are read only once the first prefill computed them."""
    pool = BlockPool(capacity=10, block_size=4)
    first = pool.allocate([1, 2, 3], extra=0)
    assert first is not None and first.fresh == first.blocks and first.hits_ready_at(0) == 0.0
    first.computed_at(100.0)  # the first prefill ends at t=100
    second = pool.allocate([1, 2, 9], extra=1)
    assert second is not None and second.hit_blocks == 2 and [b.hash for b in second.fresh] == [9]
    assert second.hits_ready_at(2) == 100.0  # its hits are the first request's blocks, ready at 100
    second.computed_at(150.0)
    assert first.blocks[0].ready_at == 100.0  # a hit does not move the time of blocks it did not compute
    pool.release(first)
    pool.release(second)
    third = pool.allocate([1, 2, 9, 4], extra=0)
    assert third is not None and third.hit_blocks == 3 and third.hits_ready_at(3) == 150.0


@pytest.fixture(scope="module")
def mocks():
    slow = MockProcess(["--served-model-name", "m", "--prefill-tps", "2000", "--itl-ms", "1", "--block-size", "16"])
    small = MockProcess(["--served-model-name", "m", "--kv-blocks", "40", "--block-size", "16", "--speedup", "100"])
    with running(slow, small):
        yield slow, small


def long_prompt(topic: str, words: int = 600) -> dict:
    text = " ".join(f"{topic} word{i}" for i in range(words // 2))
    return {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": text}]}


def timed(url: str, body: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    status, out = post(url + "/v1/chat/completions", body)
    assert status == 200, out
    return time.perf_counter() - start, out


@pytest.mark.e2e_mock
def test_prefix_hit_skips_prefill_time_and_is_counted(mocks):
    slow, _ = mocks
    body = long_prompt("alpha")
    cold, first = timed(slow.url, body)
    warm, second = timed(slow.url, body)
    n = first["usage"]["prompt_tokens"]
    assert n > 600 and cold > n / 2000 * 0.9  # the whole prompt was prefilled at --prefill-tps
    assert warm < cold / 3
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == (n - 1) // 16 * 16
    assert metric(slow.url, "vllm:prefix_cache_hits_total") >= cached
    assert metric(slow.url, "mock_prefix_hit_blocks_total") >= cached // 16


@pytest.mark.e2e_mock
def test_reported_blocks_are_the_shared_hashes_of_the_prompt(mocks):
    _, small = mocks
    body = long_prompt("beta", 200)
    post(small.url + "/v1/chat/completions", body)
    ids = post(small.url + "/tokenize", {"model": "m", "messages": body["messages"]})[1]["tokens"]
    kv = get(small.url + "/mock/kv")[1]
    assert kv["block_size"] == 16 and kv["capacity"] == 40
    assert set(block_hashes(ids, 16)) <= set(kv["blocks"])


@pytest.mark.e2e_mock
def test_lru_eviction_under_capacity(mocks):
    _, small = mocks
    a = long_prompt("gamma", 300)  # ~18 blocks of 40
    post(small.url + "/v1/chat/completions", a)
    assert post(small.url + "/v1/chat/completions", a)[1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    for topic in ("delta", "epsilon", "zeta"):
        post(small.url + "/v1/chat/completions", long_prompt(topic, 300))
    again = post(small.url + "/v1/chat/completions", a)[1]
    assert again["usage"]["prompt_tokens_details"] is None  # evicted by the three others
    status, err = post(small.url + "/v1/chat/completions", long_prompt("eta", 1200))
    assert status == 400 and "--kv-blocks" in err["error"]["message"]


@pytest.mark.e2e_mock
def test_a_prefix_being_computed_is_a_hit_whose_first_token_waits_for_it(mocks):
    """Two requests on one long prefix, the second sent while the first is still in its prefill: the second
    reports the prefix as cached tokens (as vLLM does) but answers only after the first prefill ends."""
    slow, _ = mocks
    text = " ".join(f"omega word{i}" for i in range(300))
    first_body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": text + " first?"}]}
    second_body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": text + " second?"}]}
    waits_before = metric(slow.url, "mock_prefix_waits_total")
    done: dict[str, float] = {}
    replies: dict[str, dict] = {}

    def send(name: str, body: dict) -> None:
        status, out = post(slow.url + "/v1/chat/completions", body)
        assert status == 200, out
        done[name], replies[name] = time.perf_counter(), out

    start = time.perf_counter()
    first = threading.Thread(target=send, args=("first", first_body))
    first.start()
    time.sleep(0.08)  # the first prefill (~600 tokens at --prefill-tps 2000: ~0.3 s) is under way
    sent_second = time.perf_counter()
    send("second", second_body)
    first.join()
    n = replies["first"]["usage"]["prompt_tokens"]
    assert done["first"] - start > n / 2000 * 0.9  # the first computed its whole prompt
    cached = replies["second"]["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= (n - 16) // 16 * 16 - 16  # the shared prefix counted as cached, not computed again
    # ... yet the second answered no earlier than the first: it waited for the blocks to be computed
    # (with the old rule it answered ~10 ms after it was sent, long before the first).
    assert done["second"] >= done["first"] - 0.02
    assert done["second"] - sent_second > 0.15
    assert metric(slow.url, "mock_prefix_waits_total") == waits_before + 1
    # Once computed, the prefix is an ordinary hit: no wait.
    third_body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": text + " third?"}]}
    elapsed, third = timed(slow.url, third_body)
    assert third["usage"]["prompt_tokens_details"]["cached_tokens"] == cached and elapsed < 0.1
    assert metric(slow.url, "mock_prefix_waits_total") == waits_before + 1


@pytest.mark.e2e_mock
def test_cache_size_is_exported_as_vllm_does(mocks):
    """vllm:cache_config_info carries the cache's size in its labels (what the kv router reads)."""
    _, small = mocks
    text = get(small.url + "/metrics")[1]
    line = next(row for row in text.splitlines() if row.startswith("vllm:cache_config_info{"))
    assert 'num_gpu_blocks="40"' in line and 'block_size="16"' in line and line.endswith(" 1.0")
