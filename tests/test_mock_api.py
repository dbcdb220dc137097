"""The mock engine's OpenAI API over real HTTP: a subprocess, the real ``openai`` client, urllib."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from nodes.mock.launch import MockProcess, running

pytestmark = pytest.mark.e2e_mock


def post(url: str, body: object, method: str = "POST") -> tuple[int, object]:
    """(status, parsed JSON or text) of one request."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def get(url: str) -> tuple[int, object]:
    """GET as (status, JSON or text)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


@pytest.fixture(scope="module")
def mocks():
    """A vLLM-style worker plus an SGLang and a TRT-LLM decode, started together."""
    procs = {
        "vllm": MockProcess(["--imitate", "vllm", "--model", "org/tiny", "--served-model-name", "tiny",
                             "--speedup", "100"]),
        "sglang": MockProcess(["--imitate", "sglang", "--role", "decode", "--served-model-name", "m"]),
        "trtllm": MockProcess(["--imitate", "trtllm", "--role", "decode", "--served-model-name", "m"]),
    }
    with running(*procs.values()):
        yield procs


@pytest.fixture(scope="module")
def mock(mocks):
    return mocks["vllm"]


@pytest.fixture(scope="module")
def client(mock):
    return openai.OpenAI(base_url=mock.url + "/v1", api_key="none", max_retries=0)


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colors."}]


def test_models_lists_the_served_name(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_chat_returns_usage_and_visible_words(client):
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=7)
    text = r.choices[0].message.content
    assert r.usage.completion_tokens == 7
    assert r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    assert len(text.split()) == 7 and all(w.isalpha() for w in text.split())
    assert r.choices[0].finish_reason == "length"


def test_chat_is_deterministic_and_prompt_dependent(client):
    a = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12).choices[0].message.content
    b = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12).choices[0].message.content
    c = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Other words."}],
                                       max_tokens=12).choices[0].message.content
    assert a == b
    assert a != c


def test_stream_matches_non_stream_and_reports_usage(client):
    full = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=9)
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=9, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 9
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_max_completion_tokens_is_honoured(client):
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=3)
    assert r.usage.completion_tokens == 3


def test_completions_stream_and_not(client):
    r = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=5)
    assert r.usage.completion_tokens == 5 and len(r.choices[0].text.split()) == 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="The quick brown fox", max_tokens=5, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_return_token_ids_in_vllm_form(mock, client):
    status, body = post(mock.url + "/v1/chat/completions",
                        {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "return_token_ids": True})
    assert status == 200
    choice = body["choices"][0]
    assert len(choice["token_ids"]) == 4
    assert len(body["prompt_token_ids"]) == body["usage"]["prompt_tokens"]
    _, text = post(mock.url + "/detokenize", {"tokens": choice["token_ids"]})
    assert text["prompt"] == choice["message"]["content"]
    _, tok = post(mock.url + "/tokenize", {"model": "tiny", "messages": MESSAGES})
    assert tok["tokens"] == body["prompt_token_ids"]
    status, comp = post(mock.url + "/v1/completions", {"model": "tiny", "prompt": body["prompt_token_ids"],
                                                       "max_tokens": 4, "return_token_ids": True})
    assert comp["choices"][0]["prompt_token_ids"] == body["prompt_token_ids"]
    assert comp["choices"][0]["token_ids"] == choice["token_ids"]  # same prompt ids -> same output


@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope", "messages": MESSAGES}, 404, "model"),
    ({"model": "tiny"}, 400, "messages"),
    ({"model": "tiny", "messages": "hi"}, 400, "messages"),
    ({"model": "tiny", "messages": [{"content": "no role"}]}, 400, "messages[0].role"),
    ({"model": "tiny", "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": MESSAGES, "max_tokens": "8"}, 400, "max_tokens"),
    ({"model": "tiny", "messages": MESSAGES, "stream": "yes"}, 400, "stream"),
    ({"model": "tiny", "messages": MESSAGES, "max_tokens": 10 ** 6}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url",
                                                                   "image_url": {"url": "data:image/png;base64,!!"}}]}]},
     400, "messages[0].content[0].image_url.url"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}, 400,
     "messages[0].content[0].type"),
])
def test_bad_chat_requests_get_openai_errors(mock, body, status, param):
    got, err = post(mock.url + "/v1/chat/completions", body)
    assert got == status
    assert set(err["error"]) >= {"message", "type", "param", "code"}
    assert err["error"]["param"] == param
    assert err["error"]["message"]


def test_non_json_and_unknown_routes(mock):
    assert post(mock.url + "/v1/chat/completions", b"{not json")[0] == 400
    assert post(mock.url + "/v1/completions", {"model": "tiny", "prompt": 5})[0] == 400
    assert get(mock.url + "/v1/nothing")[0] == 404
    assert get(mock.url + "/v1/chat/completions")[0] == 405


def test_openai_client_raises_not_found_for_unknown_model(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=MESSAGES)


def test_recorded_requests_and_clearing(mock):
    post(mock.url + "/mock/requests", {}, method="DELETE")
    post(mock.url + "/v1/completions", {"model": "tiny", "prompt": "record me", "max_tokens": 1})
    _, got = get(mock.url + "/mock/requests")
    assert [(r["path"], r["body"]["prompt"]) for r in got] == [("/v1/completions", "record me")]
    assert got[0]["time"] > 0
    post(mock.url + "/mock/requests", {}, method="DELETE")
    assert get(mock.url + "/mock/requests")[1] == []


def test_vllm_metric_names(mock, client):
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    _, text = get(mock.url + "/metrics")
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:prefix_cache_queries_total",
                 "vllm:prefix_cache_hits_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_count", "vllm:request_success_total",
                 'mock_requests_total{kind="aggregate",role="worker"}'):
        assert name in text, name
    assert 'model_name="tiny"' in text


@pytest.mark.parametrize("imitate, names", [
    ("sglang", ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
                "sglang:prompt_tokens_total", "sglang:generation_tokens_total", "sglang:cache_hit_rate",
                "sglang:cached_tokens_total", "sglang:num_requests_total{model_name=\"m\"} 1.0")),
    ("trtllm", ("trtllm_num_requests_running", "trtllm_kv_cache_utilization", "trtllm_prompt_tokens_total",
                "trtllm_kv_cache_hit_rate", "trtllm_request_success_total")),
])
def test_other_imitations_metric_names_and_probes(mocks, imitate, names):
    m = mocks[imitate]
    post(m.url + "/v1/completions", {"model": "m", "prompt": "hello", "max_tokens": 2})
    text = get(m.url + ("/metrics" if imitate == "sglang" else "/prometheus/metrics"))[1]
    for name in names:
        assert name in text, name
    if imitate == "sglang":
        for path in ("/server_info", "/get_server_info", "/model_info", "/get_model_info"):
            status, info = get(m.url + path)
            assert status == 200 and info["model_path"] == "mock-model"
        assert get(m.url + "/server_info")[1]["disaggregation_mode"] == "decode"
        assert get(m.url + "/health_generate")[0] == 200
        status, gen = post(m.url + "/generate", {"text": "hello", "sampling_params": {"max_new_tokens": 3}})
        assert status == 200 and len(gen["output_ids"]) == 3
        assert gen["meta_info"]["completion_tokens"] == 3
