"""No silent hangs: mock engines made to fail, stall or die mid-request; every client gets an
answer or a clear error within its deadline, streams survive a dying worker, and metrics count it."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import signal
import time

import openai
import pytest

from tests.e2e import RunningGraph, http_json, metric_sum, metrics, start_graph

pytestmark = pytest.mark.e2e_mock

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
LLAVA = "llava-hf/llava-1.5-7b-hf"
# Short stage deadline so stalls are detected quickly, yet long enough for a loaded 2-core CI box.
STAGE_S = 5
FAST = ("--set", f"frontend.stage_timeout_s={STAGE_S}")


def faults(g: RunningGraph, service: str, **knobs: object) -> None:
    status, data = http_json("POST", g.service_url(service) + "/mock/faults", knobs)
    assert status == 200, data


def metric(g: RunningGraph, name: str, **labels: str) -> float:
    """A frontend metric summed over the label sets that carry ``labels``."""
    return metric_sum(metrics(g.url.removesuffix("/v1")), name, **labels)


def client(g: RunningGraph, timeout: float = 90) -> openai.OpenAI:
    return openai.OpenAI(base_url=g.url, api_key="x", max_retries=0, timeout=timeout)


def stream_text(c: openai.OpenAI, n: int) -> tuple[str, int]:
    chunks = list(c.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "go on"}],
                                            max_tokens=n, stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    usage = [ch.usage for ch in chunks if ch.usage]
    return text, usage[-1].completion_tokens if usage else -1


@pytest.fixture()
def pd(tmp_path: pathlib.Path) -> RunningGraph:
    g = start_graph("pipelines/pd.py", tmp_path / "work", "--mock", *FAST)
    yield g
    g.stop()


@pytest.fixture()
def agg(tmp_path: pathlib.Path) -> RunningGraph:
    g = start_graph("pipelines/agg.py", tmp_path / "work", "--mock", *FAST,
                    "--set", "worker.mock={itl_ms: 20}")
    yield g
    g.stop()


def test_failing_prefill_falls_back_to_decode(pd: RunningGraph) -> None:
    faults(pd, "prefill-0", fail_rate=1.0)
    c = client(pd)
    for _ in range(3):
        assert c.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}], max_tokens=4).choices
    assert metric(pd, "servegraph_disagg_skipped_total", reason="prefill_failed") == 3


def test_stalled_prefill_times_out_then_falls_back(pd: RunningGraph) -> None:
    faults(pd, "prefill-0", stall_after_tokens=0)
    start = time.monotonic()
    reply = client(pd).chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    took = time.monotonic() - start
    assert reply.choices[0].message.content
    assert took > STAGE_S - 0.5, f"fallback after {took:.1f} s, before the {STAGE_S} s deadline: the stall was not waited for"


def test_stream_survives_a_worker_dying_mid_way(agg: RunningGraph) -> None:
    """Twenty concurrent streams; one worker exits in the middle of one: every stream completes."""
    faults(agg, "worker-0", exit_after_requests=3)
    c = client(agg)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: stream_text(c, 24), range(20)))
    assert all(text for text, _ in results), "a stream came back empty"
    assert [n for _, n in results] == [24] * 20, "a stream lost tokens"
    assert metric(agg, "servegraph_stream_migrations_total") >= 1
    assert metric(agg, "servegraph_stream_errors_total") == 0


def test_stalled_stream_migrates(agg: RunningGraph) -> None:
    faults(agg, "worker-0", stall_after_tokens=5)
    faults(agg, "worker-1", stall_after_tokens=None)
    c = client(agg)
    results = [stream_text(c, 12) for _ in range(2)]  # round-robin: one of them hits worker-0
    assert [n for _, n in results] == [12, 12]
    assert metric(agg, "servegraph_stream_migrations_total") >= 1


def test_failed_stream_is_an_error_not_success(agg: RunningGraph) -> None:
    for w in ("worker-0", "worker-1"):
        faults(agg, w, stall_after_tokens=3)
    start = time.monotonic()
    with pytest.raises(openai.APIError) as err:
        stream_text(client(agg), 16)
    # 1 + migration_limit (3) attempts, each ending at the stage deadline, plus start-up slack.
    assert time.monotonic() - start < 4 * STAGE_S + 30, "the client waited far past the deadlines"
    assert "could not be resumed" in str(err.value)
    assert metric(agg, "servegraph_stream_errors_total") >= 1


def test_migration_limit_zero_ends_a_broken_stream_with_an_error(tmp_path: pathlib.Path) -> None:
    """Frontend(migration_limit=0): no second try; the client still gets an error, never a quiet end."""
    g = start_graph("pipelines/agg.py", tmp_path / "work", "--mock", *FAST,
                    "--set", "frontend.migration_limit=0", "--set", "worker.mock={itl_ms: 20}")
    try:
        for w in ("worker-0", "worker-1"):
            faults(g, w, stall_after_tokens=3)
        with pytest.raises(openai.APIError) as err:
            stream_text(client(g), 16)
        assert "could not be resumed" in str(err.value)
        assert metric(g, "servegraph_stream_migrations_total") == 0
        assert metric(g, "servegraph_stream_errors_total") == 1
    finally:
        g.stop()


def test_client_that_goes_away_frees_the_engine(agg: RunningGraph) -> None:
    """Closing a stream mid-way closes the frontend's stream to the engine: its request stops running."""
    def running() -> float:
        return sum(metric_sum(metrics(agg.service_url(w)), "vllm:num_requests_running") for w in ("worker-0", "worker-1"))

    stream = client(agg).chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "go on"}],
                                                 max_tokens=500, stream=True)  # 500 x 20 ms = 10 s if not stopped
    for _, _chunk in zip(range(3), stream):
        pass
    assert running() == 1
    stream.close()
    deadline = time.monotonic() + 5
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running() == 0, "the engine kept generating for a client that left"


def test_dead_worker_leaves_rotation(agg: RunningGraph) -> None:
    state = json.loads((agg.workdir / "state.json").read_text())
    os.kill(state["services"]["worker-0"]["pid"], signal.SIGKILL)
    time.sleep(0.2)
    c = client(agg)
    errors = 0
    for _ in range(20):
        try:
            c.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "x"}], max_tokens=2)
        except openai.APIError:
            errors += 1
    assert errors == 0, f"{errors} of 20 requests failed while a worker was down"
    unreachable = metric(agg, "servegraph_upstream_requests_total", service="worker-0", status="unreachable")
    assert unreachable <= 2, f"the dead worker was tried {unreachable} times"


def test_failing_encoder_replica_is_skipped(tmp_path: pathlib.Path) -> None:
    from tests.test_e2e_mock import image_url

    g = start_graph("pipelines/e_p_d.py", tmp_path / "work", "--mock")
    try:
        faults(g, "encoder-0", fail_rate=1.0)
        c = client(g)
        for i in range(4):
            content = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": image_url((i, 9, 9))}}]
            assert c.chat.completions.create(model=LLAVA, messages=[{"role": "user", "content": content}], max_tokens=3).choices
        assert metric(g, "servegraph_upstream_requests_total", service="encoder-1", status="200") == 4
    finally:
        g.stop()


def test_short_prompts_skip_prefill(tmp_path: pathlib.Path) -> None:
    """Router(disagg_threshold=64): a prompt under ~64 tokens goes straight to decode; a long one is disaggregated."""
    g = start_graph("tests/pipelines/pd_threshold.py", tmp_path / "work", "--mock")
    try:
        c = client(g)
        c.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "short"}], max_tokens=3)
        assert not [r for r in g.received("prefill-0") if r["path"].endswith("/chat/completions")]
        long_prompt = "a long shared document " * 80
        c.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": long_prompt}], max_tokens=3)
        assert len([r for r in g.received("prefill-0") if r["path"].endswith("/chat/completions")]) == 1
        assert len([r for r in g.received("decode-0") if r["path"].endswith("/chat/completions")]) == 2
        assert metric(g, "servegraph_disagg_skipped_total", reason="short_prompt") == 1
    finally:
        g.stop()


# --- a stage that lost what it handed on (it restarted, or evicted it) -------------------------------


def test_prefill_that_lost_its_kv_falls_back_to_decode(pd: RunningGraph) -> None:
    """The decode cannot load the KV the prefill announced (vLLM answers 500): decode alone serves it."""
    faults(pd, "prefill-0", lose_handoffs=True)
    c = client(pd)
    reply = c.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert reply.choices[0].message.content and reply.usage.completion_tokens == 5
    text, n = stream_text(c, 7)
    assert text and n == 7
    assert metric(pd, "servegraph_disagg_skipped_total", reason="kv_lost") == 2


def _image_chat(c: openai.OpenAI, i: int) -> openai.types.chat.ChatCompletion:
    from tests.test_e2e_mock import image_url

    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": image_url((i, 1, 2))}}]
    return c.chat.completions.create(model=LLAVA, messages=[{"role": "user", "content": content}], max_tokens=3)


def test_encoder_that_lost_its_embeddings_is_run_again(tmp_path: pathlib.Path) -> None:
    """One encoder replica loses every embedding it hands out: the request runs again on the other one.
    When every replica loses them the client gets a server error (5xx), never a 4xx."""
    g = start_graph("pipelines/e_p_d.py", tmp_path / "work", "--mock")
    try:
        faults(g, "encoder-0", lose_handoffs=True)
        c = client(g)
        for i in range(4):
            assert _image_chat(c, i).choices[0].message.content
        assert metric(g, "servegraph_request_retries_total", reason="ec_transfer_params") >= 1
        faults(g, "encoder-1", lose_handoffs=True)
        with pytest.raises(openai.APIStatusError) as err:
            _image_chat(c, 9)
        assert err.value.status_code == 502, err.value
        assert "lost what an earlier one handed it" in str(err.value)
    finally:
        g.stop()


def test_no_request_fails_while_replicas_are_killed_under_load(tmp_path: pathlib.Path) -> None:
    """E/P/D on mock engines, 8 clients (half streamed, half the requests with an image) for 40 s, a
    random engine replica SIGKILLed every 5 s and restarted by the supervisor: every request is served."""
    import asyncio
    import random

    from tests.load import kill_random_engine, run_load

    g = start_graph("pipelines/e_p_d.py", tmp_path / "work", "--mock")
    try:
        tally = asyncio.run(run_load(g.url + "/chat/completions", LLAVA, clients=8, duration_s=40, kill_every_s=5,
                                     kill=kill_random_engine(str(g.workdir / "state.json"), random.Random(3)),
                                     images=True))
    finally:
        g.stop()
    print(tally.report())
    assert len(tally.kills) >= 6 and tally.served > 200, tally.report()
    assert tally.failed == 0, tally.report()
