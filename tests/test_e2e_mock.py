"""`graph run --mock` end to end: real processes, real HTTP, the real openai client, every shape."""

from __future__ import annotations

import base64
import io
import os
import pathlib
import signal
import time

import openai
import pytest
from PIL import Image

from tests.e2e import RunningGraph, alive, http_json, metric_sum, metrics, process_tree, start_graph

pytestmark = pytest.mark.e2e_mock

TEXT = {
    "agg": "meta-llama/Llama-3.1-8B-Instruct",
    "pd": "meta-llama/Llama-3.1-8B-Instruct",
    "sglang_pd": "Qwen/Qwen2.5-7B-Instruct",
    "trtllm_pd": "meta-llama/Llama-3.1-8B-Instruct",
}
MULTIMODAL = {
    "epd": "llava-hf/llava-1.5-7b-hf",
    "e_pd": "llava-hf/llava-1.5-7b-hf",
    "ep_d": "llava-hf/llava-1.5-7b-hf",
    "e_p_d": "llava-hf/llava-1.5-7b-hf",
}
ALL = {**TEXT, **MULTIMODAL}


def image_url(color: tuple[int, int, int], size: int = 32) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module", params=sorted(ALL))
def graph(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunningGraph:
    name = request.param
    running = start_graph(f"pipelines/{name}.py", tmp_path_factory.mktemp(name) / "work", "--mock")
    running.name = name  # type: ignore[attr-defined]
    yield running
    running.stop()


def client(g: RunningGraph) -> openai.OpenAI:
    return openai.OpenAI(base_url=g.url, api_key="unused", max_retries=0, timeout=90)


def user_content(g: RunningGraph, text: str, color: tuple[int, int, int] = (200, 30, 30)) -> object:
    if g.name in MULTIMODAL:  # type: ignore[attr-defined]
        return [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": image_url(color)}}]
    return text


def test_chat_and_completion_through_every_node(graph: RunningGraph) -> None:
    model = ALL[graph.name]  # type: ignore[attr-defined]
    graph.clear()
    c = client(graph)
    chat = c.chat.completions.create(model=model, messages=[{"role": "user", "content": user_content(graph, "hello there")}], max_tokens=8)
    assert chat.choices[0].message.content
    assert chat.usage.completion_tokens == 8
    done = c.completions.create(model=model, prompt="The capital of France is", max_tokens=5)
    assert done.choices[0].text and done.usage.completion_tokens == 5
    # Every engine node (one of its replicas) saw the chat request: it really flowed through each node.
    by_node: dict[str, list[str]] = {}
    for s in graph.plan["services"]:
        if s.get("engine"):
            by_node.setdefault(s["node"], []).append(s["name"])
    for node, replicas in by_node.items():
        got = [r for name in replicas for r in graph.received(name)]
        assert any(r.get("path", "").endswith("/chat/completions") for r in got), f"node {node} got no chat request"


def test_streaming_chat_and_completion(graph: RunningGraph) -> None:
    model = ALL[graph.name]  # type: ignore[attr-defined]
    c = client(graph)
    pieces = [
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": user_content(graph, "stream please")}],
            max_tokens=12, stream=True,
        )
        if ch.choices
    ]
    assert len([p for p in pieces if p]) >= 2, pieces
    text = "".join(ch.choices[0].text for ch in c.completions.create(model=model, prompt="one two", max_tokens=6, stream=True) if ch.choices)
    assert text


def test_streamed_text_equals_unstreamed(graph: RunningGraph) -> None:
    model = ALL[graph.name]  # type: ignore[attr-defined]
    c = client(graph)
    messages = [{"role": "user", "content": user_content(graph, "same answer both ways")}]
    whole = c.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0).choices[0].message.content
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0, stream=True)
        if ch.choices
    )
    assert streamed == whole


def test_bad_requests_get_4xx_with_a_message(graph: RunningGraph) -> None:
    model = ALL[graph.name]  # type: ignore[attr-defined]
    cases = [
        ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        ({"model": model}, 400, "messages"),
        ({"model": model, "messages": "hi"}, 400, "messages"),
        ({"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, 400, "max_tokens"),
        ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
    ]
    for body, status, text in cases:
        got, data = http_json("POST", graph.url + "/chat/completions", body)
        assert got == status, (body, got, data)
        assert text in data["error"]["message"], data
    got, data = http_json("POST", graph.url + "/completions", {"model": model, "prompt": 5})
    assert got == 400 and "prompt" in data["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client(graph).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_models_health_metrics(graph: RunningGraph) -> None:
    status, data = http_json("GET", graph.url + "/models")
    assert status == 200 and [m["id"] for m in data["data"]] == [ALL[graph.name]]  # type: ignore[attr-defined]
    base = graph.url.removesuffix("/v1")
    assert http_json("GET", base + "/health")[0] == 200
    model = ALL[graph.name]  # type: ignore[attr-defined]
    before = metrics(base)
    c = client(graph)
    c.chat.completions.create(model=model, messages=[{"role": "user", "content": "count me"}], max_tokens=3)
    list(c.completions.create(model=model, prompt="count me too", max_tokens=3, stream=True))
    after = metrics(base)

    def grew(name: str, **labels: str) -> float:
        return metric_sum(after, name, model=model, **labels) - metric_sum(before, name, model=model, **labels)

    assert grew("servegraph_requests_total", kind="chat", status="200") == 1
    assert grew("servegraph_requests_total", kind="completions", status="200") == 1
    # a stream is timed to its last event, apart from plain requests
    assert grew("servegraph_request_seconds_count", kind="stream") == 1
    assert grew("servegraph_request_seconds_count", kind="chat") == 1


# --- shape-specific handshakes ---------------------------------------------------------


@pytest.fixture(scope="module")
def pd(tmp_path_factory: pytest.TempPathFactory) -> RunningGraph:
    running = start_graph("pipelines/pd.py", tmp_path_factory.mktemp("pd-handshake") / "work", "--mock")
    yield running
    running.stop()


def test_vllm_pd_handshake(pd: RunningGraph) -> None:
    pd.clear()
    client_ = openai.OpenAI(base_url=pd.url, api_key="x", max_retries=0)
    client_.chat.completions.create(model=TEXT["pd"], messages=[{"role": "user", "content": "handshake"}], max_tokens=4)
    [pre] = [r for r in pd.received("prefill-0") if r.get("path", "").endswith("/chat/completions")]
    [dec] = [r for r in pd.received("decode-0") if r.get("path", "").endswith("/chat/completions")]
    pre_body, dec_body = pre["body"], dec["body"]
    assert pre_body["max_tokens"] == 1 and pre_body["stream"] is False
    assert pre_body["kv_transfer_params"]["do_remote_decode"] is True
    params = dec_body["kv_transfer_params"]
    assert params["do_remote_prefill"] is True and params["remote_block_ids"]
    assert dec_body["max_tokens"] == 4


def test_sglang_pair_shares_the_bootstrap_room(tmp_path: pathlib.Path) -> None:
    g = start_graph("pipelines/sglang_pd.py", tmp_path / "work", "--mock")
    try:
        c = openai.OpenAI(base_url=g.url, api_key="x", max_retries=0)
        for _ in range(2):
            c.chat.completions.create(model=TEXT["sglang_pd"], messages=[{"role": "user", "content": "room"}], max_tokens=3)
        pre = [r["body"] for r in g.received("prefill-0") if r.get("path", "").endswith("/chat/completions")]
        dec = [r["body"] for s in ("decode-0", "decode-1") for r in g.received(s) if r.get("path", "").endswith("/chat/completions")]
        assert len(pre) == 2 and len(dec) == 2
        assert {p["bootstrap_room"] for p in pre} == {d["bootstrap_room"] for d in dec}
        assert all(p["bootstrap_port"] == g.service("prefill-0")["ports"]["bootstrap"] for p in pre)
        # The two decode replicas were used in turn.
        assert all(g.received(s) for s in ("decode-0", "decode-1"))
    finally:
        g.stop()


def test_different_images_give_different_answers(tmp_path: pathlib.Path) -> None:
    g = start_graph("pipelines/e_p_d.py", tmp_path / "work", "--mock")
    try:
        c = openai.OpenAI(base_url=g.url, api_key="x", max_retries=0)
        answers = set()
        for color in ((255, 0, 0), (0, 0, 255)):
            content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": image_url(color)}}]
            answers.add(c.chat.completions.create(model=MULTIMODAL["e_p_d"], messages=[{"role": "user", "content": content}], max_tokens=8).choices[0].message.content)
        assert len(answers) == 2
        enc = [r for s in ("encoder-0", "encoder-1") for r in g.received(s)]
        assert len(enc) == 2, "each image went through an encoder"
    finally:
        g.stop()


def test_truncated_png_is_a_400(tmp_path: pathlib.Path) -> None:
    g = start_graph("pipelines/epd.py", tmp_path / "work", "--mock")
    try:
        good = image_url((1, 2, 3), size=64)
        header, payload = good.split(",", 1)
        raw = base64.b64decode(payload)
        truncated = header + "," + base64.b64encode(raw[: len(raw) // 2]).decode()
        content = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": truncated}}]
        status, data = http_json("POST", g.url + "/chat/completions", {"model": MULTIMODAL["epd"], "messages": [{"role": "user", "content": content}]})
        assert status == 400, data
        assert "image" in data["error"]["message"]
        assert not g.received("worker-0"), "a bad image must not reach the engine"
    finally:
        g.stop()


def test_killed_worker_is_restarted(tmp_path: pathlib.Path) -> None:
    g = start_graph("pipelines/pd.py", tmp_path / "work", "--mock")
    try:
        state = (g.workdir / "state.json")
        import json

        pid = json.loads(state.read_text())["services"]["decode-0"]["pid"]
        os.kill(pid, signal.SIGKILL)
        c = openai.OpenAI(base_url=g.url, api_key="x", max_retries=0, timeout=10)
        deadline = time.monotonic() + 60
        ok = False
        while time.monotonic() < deadline and not ok:
            try:
                ok = bool(c.chat.completions.create(model=TEXT["pd"], messages=[{"role": "user", "content": "again"}], max_tokens=2).choices)
            except openai.APIError:
                time.sleep(0.3)
        assert ok, "requests did not succeed again after the decode worker was killed"
        new_pid = json.loads(state.read_text())["services"]["decode-0"]["pid"]
        assert new_pid != pid
    finally:
        g.stop()


def test_ctrl_c_leaves_no_process(tmp_path: pathlib.Path) -> None:
    g = start_graph("pipelines/e_p_d.py", tmp_path / "work", "--mock")
    tree = process_tree(g.proc.pid)
    assert len(tree) >= 8, f"expected graph run + 7 services, found {sorted(tree)}"
    start = time.monotonic()
    g.proc.send_signal(signal.SIGINT)
    assert g.proc.wait(timeout=10) == 0
    while alive(tree) and time.monotonic() - start < 10:
        time.sleep(0.1)
    assert not alive(tree), f"processes survived Ctrl-C: {sorted(alive(tree))}"


@pytest.mark.parametrize("graph", ["pd", "sglang_pd", "trtllm_pd", "ep_d", "e_p_d"], indirect=True)  # a decode gets KV
def test_kv_bytes_move_from_prefill_to_decode(graph: RunningGraph) -> None:
    """P/D: the decode's KV pull carries its receiver, and the prefill's KV blocks arrive over
    nodes.transport (the decode checks them against the prompt's block hashes)."""
    decodes = [s["name"] for s in graph.plan["services"] if s["role"] == "decode"]
    assert decodes

    def received_bytes() -> float:
        return sum(metric_sum(metrics(graph.service_url(name)), "mock_kv_bytes_received_total") for name in decodes)

    before = received_bytes()
    text = " ".join(["the river runs under the old stone bridge"] * 20)  # several full KV blocks
    reply = client(graph).chat.completions.create(model=ALL[graph.name], max_tokens=4,  # type: ignore[attr-defined]
                                                  messages=[{"role": "user", "content": user_content(graph, text)}])
    assert reply.choices[0].message.content
    assert received_bytes() > before, "no KV bytes arrived over the tensor edge"


@pytest.mark.parametrize("graph", ["e_p_d", "e_pd"], indirect=True)  # the graphs with a separate encoder
def test_embeddings_move_over_the_tensor_edge(graph: RunningGraph) -> None:
    """E/P/D and E/PD: the encoder's embedding bytes reach the next engine over nodes.transport;
    the receiving mock checks them against the image (a mismatch would be a 4xx, failing the request)."""
    consumers = [s["name"] for s in graph.plan["services"] if s["role"] in ("prefill", "prefill_decode")]

    def received_bytes() -> float:
        return sum(metric_sum(metrics(graph.service_url(name)), "mock_ec_bytes_received_total") for name in consumers)

    before = received_bytes()
    content = [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": image_url((9, 99, 199))}}]
    reply = client(graph).chat.completions.create(model=ALL[graph.name], messages=[{"role": "user", "content": content}],  # type: ignore[attr-defined]
                                                  max_tokens=4)
    assert reply.choices[0].message.content
    assert received_bytes() > before, "no embedding bytes arrived over the tensor edge"


def _listening(ports: set[int]) -> dict[int, str]:
    """Which address each of ``ports`` listens on, from the kernel's socket table (IPv4)."""
    found: dict[int, str] = {}
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) in ports:  # 0A: LISTEN
            found[int(port, 16)] = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return found


def test_everything_listens_on_loopback_by_default(graph: RunningGraph) -> None:
    """`graph run` exposes nothing beyond this host: the frontend and every engine's ports are 127.0.0.1."""
    ports = {p for s in graph.plan["services"] for p in s["ports"].values()}
    listening = _listening(ports)
    assert listening.keys() == ports, f"not listening: {sorted(ports - listening.keys())}"
    assert set(listening.values()) == {"127.0.0.1"}, listening


def test_host_option_exposes_the_frontend_alone(tmp_path: pathlib.Path) -> None:
    g = start_graph("pipelines/pd.py", tmp_path / "work", "--mock", "--host", "0.0.0.0")
    try:
        listening = _listening({p for s in g.plan["services"] for p in s["ports"].values()})
        frontend = next(s for s in g.plan["services"] if s["role"] == "frontend")
        assert listening.pop(frontend["ports"]["http"]) == "0.0.0.0"
        assert listening and set(listening.values()) == {"127.0.0.1"}, listening
    finally:
        g.stop()
