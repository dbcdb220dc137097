"""The kv policy through `graph run` (frontend and mock workers over real HTTP): it learns what each
worker's KV cache holds and places a new prefix where it fits, instead of on the least loaded worker
that would have to evict a prefix still in use."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from nodes.mock.tokenizer import SimTokenizer
from tests.e2e import RunningGraph, http_json, start_graph

pytestmark = pytest.mark.e2e_mock

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
#: KV blocks of 16 tokens in each document (the mock's simulated tokenizer: one token a word).
DOC_BLOCKS = 24
#: Each worker holds two and a half documents.
KV_BLOCKS = DOC_BLOCKS * 5 // 2


def document(name: str) -> str:
    return " ".join(f"{name}{i}" for i in range(DOC_BLOCKS * 16))


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> RunningGraph:
    assert len(SimTokenizer().encode(document("a"))) == DOC_BLOCKS * 16
    running = start_graph("pipelines/kv_routed.py", tmp_path_factory.mktemp("kv") / "work", "--mock",
                          "--set", "worker.replicas=2", "--set", "worker.block_size=16",
                          "--set", f"worker.mock={{kv_blocks: {KV_BLOCKS}, itl_ms: 20}}")
    yield running
    running.stop()


def ask(g: RunningGraph, system: str, question: str, max_tokens: int = 1) -> dict:
    status, out = http_json("POST", g.url + "/chat/completions", {
        "model": MODEL, "max_tokens": max_tokens, "ignore_eos": True,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]})
    assert status == 200, out
    return out


def worker_of(g: RunningGraph, text: str) -> list[str]:
    """The workers that were sent a request whose system message is ``text``."""
    return [s["name"] for s in g.plan["services"] if s["role"] == "worker"
            and any(r["path"] == "/v1/chat/completions" and r["body"]["messages"][0]["content"] == text
                    for r in g.received(s["name"]))]


def test_a_new_prefix_goes_where_it_fits_not_where_it_would_evict_a_live_one(graph: RunningGraph) -> None:
    # A long request (3 s, 15 of the 60 KV blocks) keeps one worker busy. The old policy put every new
    # prefix on the other (fewest in flight), so the third document pushed the first out of its cache.
    busy_text = "keep this worker busy " * 20
    body = json.dumps({"model": MODEL, "max_tokens": 150, "ignore_eos": True, "stream": True,
                       "messages": [{"role": "system", "content": busy_text}, {"role": "user", "content": "go"}]})
    streamed = threading.Event()

    def busy() -> None:
        req = urllib.request.Request(graph.url + "/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
        streamed.set()

    thread = threading.Thread(target=busy)
    thread.start()
    time.sleep(0.5)  # the frontend learned the workers' cache sizes meanwhile
    try:
        [busy_worker] = worker_of(graph, busy_text)
        docs = {name: document(name) for name in ("a", "b", "c")}
        for name, question in (("a", "one"), ("a", "two"), ("b", "one"), ("b", "two"), ("c", "one")):
            ask(graph, docs[name], question)
        assert not streamed.is_set(), "the busy request ended too soon for this test to mean anything"
        [idle_worker] = worker_of(graph, docs["a"])
        assert idle_worker != busy_worker and worker_of(graph, docs["b"]) == [idle_worker]
        assert worker_of(graph, docs["c"]) == [busy_worker]  # a and b fill the idle worker's cache
        again = ask(graph, docs["a"], "three")
        usage = again["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] >= DOC_BLOCKS * 16  # a still cached
        assert worker_of(graph, docs["a"]) == [idle_worker]
    finally:
        thread.join()
