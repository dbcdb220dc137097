"""Fault knobs (issue 5): from the command line and changed at runtime with POST /mock/faults."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from nodes.mock.launch import MockProcess, running
from tests.test_mock_api import get, post
from tests.test_mock_disagg import metric

pytestmark = pytest.mark.e2e_mock

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 6}


@pytest.fixture(scope="module")
def mocks():
    live = MockProcess(["--served-model-name", "m", "--itl-ms", "20"])
    dying = MockProcess(["--served-model-name", "m", "--itl-ms", "50", "--exit-after-requests", "2"])
    with running(live, dying):
        yield live, dying


@pytest.fixture
def mock(mocks):
    live, _ = mocks
    yield live
    post(live.url + "/mock/faults", {"fail_rate": 0, "stall_after_tokens": None, "health_fail": False})


def test_fail_rate_gives_openai_500_and_can_be_turned_off(mock):
    assert post(mock.url + "/mock/faults", {"fail_rate": 1.0})[1]["fail_rate"] == 1.0
    status, err = post(mock.url + "/v1/chat/completions", CHAT)
    assert status == 500 and "injected" in err["error"]["message"]
    post(mock.url + "/mock/faults", {"fail_rate": 0})
    assert post(mock.url + "/v1/chat/completions", CHAT)[0] == 200
    assert 'mock_faults_injected_total{fault="fail_rate"}' in get(mock.url + "/metrics")[1]


def test_health_fail_toggles(mock):
    post(mock.url + "/mock/faults", {"health_fail": True})
    assert get(mock.url + "/health")[0] == 503
    post(mock.url + "/mock/faults", {"health_fail": False})
    assert get(mock.url + "/health")[0] == 200


@pytest.mark.parametrize("bad", [{"nope": 1}, {"fail_rate": 2}, {"stall_after_tokens": "x"}, [1]])
def test_bad_fault_updates_are_400(mock, bad):
    status, err = post(mock.url + "/mock/faults", bad)
    assert status == 400 and err["error"]["message"]


def test_stall_after_tokens_hangs_the_stream_then_frees_the_slot(mock):
    post(mock.url + "/mock/faults", {"stall_after_tokens": 2})
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=1.0)
    conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    events = []
    with pytest.raises(TimeoutError):
        while True:
            line = resp.fp.readline()
            if line.startswith(b"data: "):
                events.append(line)
    assert len(events) == 3 and b"[DONE]" not in b"".join(events)  # role chunk + 2 tokens, then silence
    assert metric(mock.url, "vllm:num_requests_running") == 1
    conn.close()
    deadline = time.monotonic() + 5
    while metric(mock.url, "vllm:num_requests_running") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(mock.url, "vllm:num_requests_running") == 0


def test_exit_after_requests_kills_the_process_mid_stream(mocks):
    _, dying = mocks
    assert post(dying.url + "/v1/chat/completions", CHAT)[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", dying.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200  # the stream started...
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()  # ...and broke off
    assert dying.proc.wait(5) == 17
