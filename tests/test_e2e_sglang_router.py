"""The real sglang-router (PyPI ``sglang-router``, Rust) in P/D mode in front of our mock engines.

Proves the mock speaks SGLang's P/D protocol as the real router uses it: the router
accepts the mocks as workers, sends the same body with one ``bootstrap_room`` to
prefill and decode, and relays decode's answer to the real ``openai`` client.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import free_port_block, http_json

pytestmark = pytest.mark.e2e_mock

_READY_TIMEOUT_S = 30.0
_MODEL = "tiny-sglang"


def _skip_without_router() -> None:
    for module in ("sglang_router", "openai"):
        if importlib.util.find_spec(module) is None:
            reason = f"{module} is not installed (pip install sglang-router==0.3.2 openai)"
            print("SKIP:", reason)
            pytest.skip(reason)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``url`` answers 200, or fail with the process's log tail."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            status, _ = http_json("GET", url, timeout=2.0)
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {_READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _wait_workers(router: str, proc: subprocess.Popen[bytes], log: Path) -> list[dict[str, Any]]:
    """Until the router lists one prefill and one decode worker (its /health is 200 before that)."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the router exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        status, listing = http_json("GET", f"{router}/workers")
        if status == 200 and sorted(w["worker_type"] for w in listing["workers"]) == ["decode", "prefill"]:
            return listing["workers"]
        time.sleep(0.2)
    pytest.fail(f"the router did not accept both mocks in {_READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _metric(base: str, name: str) -> float:
    status, text = http_json("GET", f"{base}/metrics")
    assert status == 200, f"{base}/metrics -> {status}"
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{base}/metrics has no {name}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def pd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Mock prefill + mock decode (SGLang mode) behind the real router; torn down at the end."""
    _skip_without_router()
    logs = tmp_path_factory.mktemp("sglang-router")
    base = free_port_block(4)
    prefill_port, bootstrap_port, decode_port, router_port = base, base + 1, base + 2, base + 3
    mock = [sys.executable, "-m", "nodes.mock", "--imitate", "sglang", "--model", _MODEL,
            "--host", "127.0.0.1", "--advertise-host", "127.0.0.1"]
    commands = {
        "prefill": mock + ["--role", "prefill", "--port", str(prefill_port),
                           "--bootstrap-port", str(bootstrap_port)],
        "decode": mock + ["--role", "decode", "--port", str(decode_port)],
        "router": [sys.executable, "-m", "sglang_router.launch_router", "--pd-disaggregation",
                   "--prefill", f"http://127.0.0.1:{prefill_port}", str(bootstrap_port),
                   "--decode", f"http://127.0.0.1:{decode_port}",
                   "--host", "127.0.0.1", "--port", str(router_port)],
    }
    urls = {"prefill": f"http://127.0.0.1:{prefill_port}", "decode": f"http://127.0.0.1:{decode_port}",
            "router": f"http://127.0.0.1:{router_port}"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        # All three start at once: the router retries its workers' /health until they are up.
        for name, argv in commands.items():
            with (logs / f"{name}.log").open("wb") as out:
                procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        for name in commands:
            _wait_ready(f"{urls[name]}/health", procs[name], logs / f"{name}.log")
        workers = _wait_workers(urls["router"], procs["router"], logs / "router.log")
        yield {**urls, "bootstrap_port": bootstrap_port, "workers": workers}
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _client(pd: dict[str, Any]):
    import openai

    return openai.OpenAI(base_url=f"{pd['router']}/v1", api_key="unused", timeout=30.0, max_retries=0)


def _last_request(url: str) -> dict[str, Any]:
    status, recorded = http_json("GET", f"{url}/mock/requests")
    assert status == 200 and recorded, f"{url} recorded no request: {recorded}"
    return recorded[-1]


def _check_one_pd_exchange(pd: dict[str, Any], before: dict[str, float]) -> None:
    """Both mocks got the router's body with one room, and the KV went prefill -> decode."""
    pre, dec = _last_request(pd["prefill"]), _last_request(pd["decode"])
    assert pre["path"] == dec["path"] == "/v1/chat/completions"
    room = dec["body"]["bootstrap_room"]
    assert isinstance(room, int) and 0 <= room < 2**63
    assert pre["body"]["bootstrap_room"] == room, (pre["body"], dec["body"])
    for body in (pre["body"], dec["body"]):
        assert body["bootstrap_host"] == "127.0.0.1"
        assert body["bootstrap_port"] == pd["bootstrap_port"]
    assert _metric(pd["prefill"], "mock_kv_transfers_sent_total") == before["sent"] + 1
    assert _metric(pd["decode"], "mock_kv_transfers_received_total") == before["received"] + 1


def _counters(pd: dict[str, Any]) -> dict[str, float]:
    return {"sent": _metric(pd["prefill"], "mock_kv_transfers_sent_total"),
            "received": _metric(pd["decode"], "mock_kv_transfers_received_total")}


def test_router_reads_the_mocks_server_info(pd: dict[str, Any]) -> None:
    by_type = {w["worker_type"]: w for w in pd["workers"]}
    assert by_type["prefill"]["url"] == pd["prefill"] and by_type["decode"]["url"] == pd["decode"]
    assert by_type["prefill"]["bootstrap_port"] == pd["bootstrap_port"]
    for kind, worker in by_type.items():
        assert worker["is_healthy"] and worker["model_id"] == _MODEL
        assert worker["metadata"]["disaggregation_mode"] == kind
        assert worker["metadata"]["served_model_name"] == _MODEL


_MESSAGES = [{"role": "user", "content": "Say something about disaggregated serving."}]


def test_router_serves_chat_unstreamed(pd: dict[str, Any]) -> None:
    before = _counters(pd)
    answer = _client(pd).chat.completions.create(model=_MODEL, messages=_MESSAGES, max_tokens=12)
    assert answer.choices[0].message.content.strip()
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 12
    _check_one_pd_exchange(pd, before)


def test_router_serves_chat_streamed_with_the_same_text(pd: dict[str, Any]) -> None:
    client = _client(pd)
    plain = client.chat.completions.create(model=_MODEL, messages=_MESSAGES, max_tokens=12)
    before = _counters(pd)
    chunks = list(client.chat.completions.create(model=_MODEL, messages=_MESSAGES, max_tokens=12,
                                                 stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2, "the answer did not arrive as a stream"
    assert streamed == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    _check_one_pd_exchange(pd, before)
    assert _last_request(pd["decode"])["body"]["stream"] is True
