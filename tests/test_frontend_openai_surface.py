"""The frontend's OpenAI surface on a real `graph run pipelines/pd.py --mock`: requests checked as
OpenAI checks them (400 naming the field, before any engine sees them), every documented shape
accepted, the OpenAPI 3.1 document, and /docs served from the frontend itself."""

from __future__ import annotations

import base64
import io
import re
import urllib.parse
import urllib.request
import wave
from typing import Any

import jsonschema
import openai
import pytest
from openapi_spec_validator import validate as validate_openapi

from tests.e2e import RunningGraph, http_json, start_graph

pytestmark = pytest.mark.e2e_mock

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CONTEXT = 1024  # the mock engines' max_model_len: the frontend learns it from their /v1/models
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
         "AAAABJRU5ErkJggg==")
HELLO = [{"role": "user", "content": "Hello"}]
OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> RunningGraph:
    knobs = f"{{speedup: 100, max_model_len: {CONTEXT}}}"
    running = start_graph("pipelines/pd.py", tmp_path_factory.mktemp("surface") / "work", "--mock",
                          "--set", f"prefill.mock={knobs}", "--set", f"decode.mock={knobs}")
    yield running
    running.stop()


def client(g: RunningGraph) -> openai.OpenAI:
    return openai.OpenAI(base_url=g.url, api_key="unused", max_retries=0, timeout=60)


def base(g: RunningGraph) -> str:
    return f"http://127.0.0.1:{g.port}"


def wav() -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 160)
    return base64.b64encode(buf.getvalue()).decode()


# (what, chat.completions.create kwargs beyond model, the param OpenAI's error must name)
REFUSED_CHAT: list[tuple[str, dict[str, Any], str]] = [
    ("wizard role", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ("no role", {"messages": [{"content": "hi"}]}, "messages[0].role"),
    ("no messages", {"messages": []}, "messages"),
    ("temperature 3", {"messages": HELLO, "temperature": 3}, "temperature"),
    ("temperature as text", {"messages": HELLO, "temperature": "0.5"}, "temperature"),
    ("top_p 0 (engines refuse it)", {"messages": HELLO, "top_p": 0}, "top_p"),
    ("top_p 1.5", {"messages": HELLO, "top_p": 1.5}, "top_p"),
    ("presence_penalty -2.5", {"messages": HELLO, "presence_penalty": -2.5}, "presence_penalty"),
    ("frequency_penalty 3", {"messages": HELLO, "frequency_penalty": 3}, "frequency_penalty"),
    ("n 2", {"messages": HELLO, "n": 2}, "n"),
    ("max_tokens 0", {"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ("max_completion_tokens 0", {"messages": HELLO, "max_completion_tokens": 0}, "max_completion_tokens"),
    ("max_tokens past the context", {"messages": HELLO, "max_tokens": CONTEXT + 1}, "max_tokens"),
    ("logprobs as text", {"messages": HELLO, "logprobs": "yes"}, "logprobs"),
    ("top_logprobs 21", {"messages": HELLO, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("top_logprobs without logprobs", {"messages": HELLO, "top_logprobs": 3}, "top_logprobs"),
    ("seed 1.5", {"messages": HELLO, "seed": 1.5}, "seed"),
    ("five stop strings", {"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("stop as a number", {"messages": HELLO, "stop": 7}, "stop"),
    ("stream_options without stream", {"messages": HELLO, "stream_options": {"include_usage": True}},
     "stream_options"),
    ("include_usage as text", {"messages": HELLO, "stream": True, "stream_options": {"include_usage": "yes"}},
     "stream_options.include_usage"),
    ("image_url without url",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url",
                                                                                   "image_url": {}}]}]},
     "messages[0].content[1].image_url.url"),
    ("image_url of ftp",
     {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ("an image in a system message",
     {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PIXEL}}]}]},
     "messages[0].content[0].type"),
    ("a refusal in a user message",
     {"messages": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]},
     "messages[0].content[0].type"),
    ("a file part (no engine reads files)",
     {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f-1"}}]}]},
     "messages[0].content[0].type"),
    ("input_audio as ogg",
     {"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                 "input_audio": {"data": wav(), "format": "ogg"}}]}]},
     "messages[0].content[0].input_audio.format"),
    ("tool message without tool_call_id",
     {"messages": [*HELLO, {"role": "tool", "content": "42"}]}, "messages[1].tool_call_id"),
    ("content as a number", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("response_format xml", {"messages": HELLO, "response_format": {"type": "xml"}}, "response_format.type"),
    ("kv_transfer_params from a client",
     {"messages": HELLO, "extra_body": {"kv_transfer_params": {"remote_host": "10.0.0.1"}}}, "kv_transfer_params"),
]


@pytest.mark.parametrize("what,kwargs,param", REFUSED_CHAT, ids=[c[0] for c in REFUSED_CHAT])
def test_chat_refuses_what_openai_refuses(graph: RunningGraph, what: str, kwargs: dict[str, Any], param: str) -> None:
    graph.clear()
    with pytest.raises(openai.BadRequestError) as caught:
        client(graph).chat.completions.create(model=MODEL, **kwargs)
    error = caught.value.body
    assert caught.value.status_code == 400, what
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert param.split("[")[0].split(".")[0] in error["message"], error
    # Refused before any engine spent time on it.
    assert graph.received("prefill-0") == [] and graph.received("decode-0") == []


REFUSED_COMPLETIONS: list[tuple[str, dict[str, Any], str]] = [
    ("a batch of prompts", {"prompt": ["a", "b"]}, "prompt"),
    ("token ids mixed with text", {"prompt": [1, "a"]}, "prompt"),
    ("logprobs 6", {"prompt": "a", "logprobs": 6}, "logprobs"),
    ("echo as text", {"prompt": "a", "echo": "yes"}, "echo"),
    ("temperature -1", {"prompt": "a", "temperature": -1}, "temperature"),
]


@pytest.mark.parametrize("what,kwargs,param", REFUSED_COMPLETIONS, ids=[c[0] for c in REFUSED_COMPLETIONS])
def test_completions_refuse_what_openai_refuses(graph: RunningGraph, what: str, kwargs: dict[str, Any],
                                                param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(graph).completions.create(model=MODEL, **kwargs)
    assert caught.value.status_code == 400 and caught.value.body["param"] == param, caught.value.body


def every_shape() -> list[dict[str, Any]]:
    """One conversation with each role and each content-part type the frontend documents."""
    return [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "system", "content": [{"type": "text", "text": "You are terse."}], "name": "rules"},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "input_audio", "input_audio": {"data": wav(), "format": "wav"}},
            {"type": "video_url", "video_url": {"url": "https://example.com/a.mp4"}},
            {"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}},
            {"type": "image_embeds", "image_embeds": "AAAA"},
            {"type": "audio_embeds", "audio_embeds": {"audio_embeds": "AAAA", "lengths": [1, 2]}},
        ]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "a cat"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot say."}]},
        {"role": "function", "name": "look", "content": None},
        {"role": "user", "content": "Go on."},
    ]


def test_accepts_every_documented_shape_and_passes_extensions_through(graph: RunningGraph) -> None:
    graph.clear()
    answer = client(graph).chat.completions.create(
        model=MODEL, messages=every_shape(), max_completion_tokens=6, temperature=2, top_p=1, presence_penalty=-2,
        frequency_penalty=2, stop=["a1", "b2", "c3", "d4"], seed=-7, logit_bias={"17": -100}, logprobs=True,
        top_logprobs=20, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        user="u", parallel_tool_calls=False, extra_body={"ignore_eos": True, "min_tokens": 2, "top_k": 5},
    )
    assert answer.choices[0].message.content and answer.usage.completion_tokens == 6
    decoded = graph.received("decode-0")[-1]["body"]
    # Engine extensions reach the engine as they were sent.
    assert (decoded["ignore_eos"], decoded["min_tokens"], decoded["top_k"]) == (True, 2, 5)
    assert [m["role"] for m in decoded["messages"]] == [m["role"] for m in every_shape()]


def test_whole_floats_count_as_integers(graph: RunningGraph) -> None:
    """JSON Schema's integer includes 8.0; the engine gets it as 8."""
    graph.clear()
    status, body = http_json("POST", graph.url + "/chat/completions",
                             {"model": MODEL, "messages": HELLO, "max_tokens": 8.0, "n": 1.0})
    assert status == 200, body
    assert body["usage"]["completion_tokens"] == 8
    sent = graph.received("decode-0")[-1]["body"]
    assert type(sent["max_tokens"]) is int and sent["max_tokens"] == 8


def test_streams_with_usage_and_token_id_prompts(graph: RunningGraph) -> None:
    c = client(graph)
    chunks = list(c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 4
    done = c.completions.create(model=MODEL, prompt=[[11, 12, 13]], max_tokens=3)
    assert done.usage.prompt_tokens == 3 and done.usage.completion_tokens == 3


def openapi(g: RunningGraph) -> dict[str, Any]:
    status, doc = http_json("GET", base(g) + "/openapi.json")
    assert status == 200, doc
    return doc


def test_openapi_document_is_valid_3_1_and_describes_the_api(graph: RunningGraph) -> None:
    doc = openapi(graph)
    validate_openapi(doc)  # raises unless it is a valid OpenAPI document (3.1 here)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"}
    schemas = doc["components"]["schemas"]
    for path, name in (("/v1/chat/completions", "ChatCompletion"), ("/v1/completions", "Completion")):
        post = doc["paths"][path]["post"]
        assert set(post["responses"]) >= {"200", "400", "404", "413", "502", "503", "504"}
        assert set(post["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
        assert post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(name)
        for status in ("400", "404", "413", "502", "503", "504"):
            assert post["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
        request = schemas[post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
        assert request["properties"]["model"]["enum"] == [MODEL]
        # The context length the frontend learned from the engines bounds max_tokens.
        assert {b.get("maximum") for b in request["properties"]["max_tokens"]["anyOf"]} == {CONTEXT, None}
        assert request["properties"]["kv_transfer_params"] is False
    roles = schemas["ChatCompletionRequest"]["properties"]["messages"]["items"]["discriminator"]["mapping"]
    assert set(roles) == OPENAI_ROLES
    assert "422" not in str(doc["paths"])  # nothing here answers FastAPI's 422


def test_openapi_document_agrees_with_the_server(graph: RunningGraph) -> None:
    """What the document allows the server takes, what it refuses the server refuses."""
    doc = openapi(graph)
    validator = jsonschema.Draft202012Validator({**doc, "$ref": "#/components/schemas/ChatCompletionRequest"})
    good = {"model": MODEL, "messages": every_shape(), "max_tokens": 4}
    assert not list(validator.iter_errors(good))
    assert http_json("POST", graph.url + "/chat/completions", good)[0] == 200
    for bad in ({**good, "messages": [{"role": "wizard", "content": "x"}]}, {**good, "temperature": 3},
                {**good, "max_tokens": CONTEXT + 1}, {**good, "kv_transfer_params": {}},
                {**good, "stream_options": {"include_usage": True}}):
        assert list(validator.iter_errors(bad)), bad
        assert http_json("POST", graph.url + "/chat/completions", bad)[0] == 400, bad


def test_docs_page_loads_its_assets_from_the_frontend(graph: RunningGraph) -> None:
    page_url = base(graph) + "/docs"
    with urllib.request.urlopen(page_url, timeout=30) as resp:
        assert resp.headers.get_content_type() == "text/html"
        page = resp.read().decode()
    assert not re.search(r"https?://", page), "the page names another host: it would not load air-gapped"
    refs = re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r"url: '([^']+)'", page)
    assert any(r.endswith("swagger-ui-bundle.js") for r in refs) and any(r.endswith(".css") for r in refs), refs
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    for ref in refs:
        url = urllib.parse.urljoin(page_url, ref)
        assert url.startswith(base(graph) + "/"), url
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read()
            kind = next(v for k, v in kinds.items() if ref.endswith(k))
            assert resp.status == 200 and kind in resp.headers["content-type"], (ref, resp.headers["content-type"])
        if ref.endswith("swagger-ui-bundle.js"):
            assert len(body) > 500_000 and b"SwaggerUIBundle" in body  # the real bundle, not a stub


def test_other_paths_and_methods_answer_in_openai_shape(graph: RunningGraph) -> None:
    assert [m.id for m in client(graph).models.list()] == [MODEL]
    request = urllib.request.Request(graph.url + "/chat/completions", method="GET")
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("GET /v1/chat/completions answered 2xx")
    except urllib.error.HTTPError as exc:
        assert exc.code == 405 and exc.headers["allow"] == "POST"
        assert exc.read().startswith(b'{"error":{')
    status, body = http_json("GET", base(graph) + "/v2/nothing")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    with urllib.request.urlopen(urllib.request.Request(base(graph) + "/health", method="HEAD"), timeout=30) as resp:
        assert resp.status == 200 and resp.read() == b""
    assert http_json("GET", base(graph) + "/health") == (200, {"status": "ok"})
    status, text = http_json("GET", base(graph) + "/metrics")
    assert status == 200 and "servegraph_requests_total" in str(text)
