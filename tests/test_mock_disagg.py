"""P/D and E/P handshakes between real mock processes, for each imitated engine (docs/engines.md, "Disaggregation protocols")."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import random
import time

import pytest

from nodes.mock.launch import MockProcess, running
from tests.e2e import metric_sum, metrics
from tests.test_mock_api import post

pytestmark = pytest.mark.e2e_mock

MODEL = ["--served-model-name", "m", "--speedup", "100"]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Tell me about the river and the bridge."}],
        "max_tokens": 6}
VLLM_PREFILL = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                "remote_block_ids": None, "remote_host": None, "remote_port": None}


def metric(url: str, name: str) -> float:
    """The value of an (unlabelled) counter of a mock."""
    values = metrics(url)
    assert any(k == name or k.startswith(name + "{") for k in values), f"{name} not exported"
    return metric_sum(values, name)


@pytest.fixture(scope="module")
def mocks():
    """Every engine this module talks to, started together (their start-ups overlap)."""
    spec = {
        "vllm_prefill": (["--role", "prefill", "--imitate", "vllm"], True),
        "vllm_decode": (["--role", "decode", "--imitate", "vllm"], False),
        "worker": (["--role", "worker", "--imitate", "vllm"], False),
        "sglang_prefill": (["--role", "prefill", "--imitate", "sglang", "--ttft-ms", "300"], True),
        "sglang_decode": (["--role", "decode", "--imitate", "sglang", "--bootstrap-timeout-s", "1"], False),
        "trtllm_ctx": (["--role", "prefill", "--imitate", "trtllm"], True),
        "trtllm_gen": (["--role", "decode", "--imitate", "trtllm"], False),
        "encoder": (["--role", "encoder", "--imitate", "vllm"], True),
    }
    procs = {name: MockProcess([*args, *MODEL], bootstrap=boot) for name, (args, boot) in spec.items()}
    with running(*procs.values()):
        yield procs


@pytest.fixture(scope="module")
def vllm_pd(mocks):
    return mocks["vllm_prefill"], mocks["vllm_decode"], mocks["worker"]


def reference(mocks, body: dict) -> str:
    """What an aggregated engine answers (every imitation emits the same tokens)."""
    return post(mocks["worker"].url + "/v1/chat/completions", body)[1]["choices"][0]["message"]["content"]


def test_vllm_pd_matches_aggregated(vllm_pd):
    prefill, decode, worker = vllm_pd
    status, p = post(prefill.url + "/v1/chat/completions",
                     {**CHAT, "max_tokens": 1, "stream": False, "kv_transfer_params": VLLM_PREFILL})
    assert status == 200
    params = p["kv_transfer_params"]
    assert params["do_remote_prefill"] is True and params["do_remote_decode"] is False
    assert params["remote_port"] == prefill.bootstrap_port and params["remote_host"] == "127.0.0.1"
    assert len(params["remote_block_ids"]) >= 1 and params["remote_engine_id"].startswith("mock-")
    assert p["usage"]["completion_tokens"] == 1
    before = metric(decode.url, "mock_kv_transfers_received_total")
    status, d = post(decode.url + "/v1/chat/completions", {**CHAT, "kv_transfer_params": params})
    assert status == 200, d
    assert metric(decode.url, "mock_kv_transfers_received_total") == before + 1
    _, agg = post(worker.url + "/v1/chat/completions", CHAT)
    assert d["choices"][0]["message"]["content"] == agg["choices"][0]["message"]["content"]
    # the KV was handed over once: replaying the same handle is refused, as a failed KV load (vLLM: 500)
    status, again = post(decode.url + "/v1/chat/completions", {**CHAT, "kv_transfer_params": params})
    assert status == 500 and "already pulled" in again["error"]["message"]
    assert again["error"]["code"] == "kv_load_failed" and again["error"]["param"] == "kv_transfer_params"


def test_vllm_decode_streams_after_handshake(vllm_pd):
    prefill, decode, _ = vllm_pd
    _, p = post(prefill.url + "/v1/chat/completions",
                {**CHAT, "max_tokens": 1, "kv_transfer_params": VLLM_PREFILL})
    req = urllib_stream(decode.url + "/v1/chat/completions", {**CHAT, "stream": True,
                                                               "kv_transfer_params": p["kv_transfer_params"]})
    assert req[-1] == "[DONE]" and len(req) == 6 + 3  # role chunk, 6 tokens, finish chunk, [DONE]


def urllib_stream(url: str, body: dict) -> list[str]:
    """The SSE data payloads of one streamed response."""
    import urllib.request

    r = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(r, timeout=60) as resp:
        return [line[6:].decode().strip() for line in resp if line.startswith(b"data: ")]


@pytest.mark.parametrize("tamper, message, want", [
    (lambda p: {**p, "remote_engine_id": "mock-forged"}, "forged", 500),
    (lambda p: {**p, "remote_request_id": "999-xxxxxx"}, "no KV waiting", 500),
    (lambda p: {**p, "remote_block_ids": [4000, 4001]}, "do not match", 500),
    (lambda p: {k: v for k, v in p.items() if k != "remote_host"}, "remote_host", 400),
])
def test_vllm_decode_rejects_forged_params(vllm_pd, tamper, message, want):
    """A handle the prefill refuses is a failed KV load (500, as vLLM); a malformed one is a bad request."""
    prefill, decode, _ = vllm_pd
    _, p = post(prefill.url + "/v1/chat/completions", {**CHAT, "max_tokens": 1, "kv_transfer_params": VLLM_PREFILL})
    status, err = post(decode.url + "/v1/chat/completions",
                       {**CHAT, "kv_transfer_params": tamper(p["kv_transfer_params"])})
    assert status == want, err
    assert message in err["error"]["message"]
    assert err["error"]["param"].startswith("kv_transfer_params")


def test_vllm_decode_rejects_params_of_another_prompt(vllm_pd):
    prefill, decode, _ = vllm_pd
    _, p = post(prefill.url + "/v1/chat/completions", {**CHAT, "max_tokens": 1, "kv_transfer_params": VLLM_PREFILL})
    other = {**CHAT, "messages": [{"role": "user", "content": "A different question entirely."}]}
    status, err = post(decode.url + "/v1/chat/completions", {**other, "kv_transfer_params": p["kv_transfer_params"]})
    assert status == 400 and "different prompt" in err["error"]["message"]


def test_vllm_decode_without_params_computes_itself(vllm_pd):
    _, decode, worker = vllm_pd
    status, d = post(decode.url + "/v1/chat/completions", CHAT)
    assert status == 200
    assert d["choices"][0]["message"]["content"] == post(worker.url + "/v1/chat/completions", CHAT)[1][
        "choices"][0]["message"]["content"]


def test_roles_refuse_the_wrong_half(vllm_pd):
    prefill, decode, _ = vllm_pd
    status, err = post(decode.url + "/v1/chat/completions", {**CHAT, "kv_transfer_params": VLLM_PREFILL})
    assert status == 400 and "decode" in err["error"]["message"]


def test_sglang_bootstrap_room_between_two_mocks(mocks):
    p, d = mocks["sglang_prefill"], mocks["sglang_decode"]
    room = random.getrandbits(63)
    body = {**CHAT, "bootstrap_host": "127.0.0.1", "bootstrap_port": p.bootstrap_port, "bootstrap_room": room}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # decode first: it must wait for the room, not fail
        dec = pool.submit(post, d.url + "/v1/chat/completions", body)
        time.sleep(0.2)
        pre = pool.submit(post, p.url + "/v1/chat/completions", {**body, "stream": False})
        (ds, dbody), (ps, _) = dec.result(), pre.result()
    assert ps == 200 and ds == 200, dbody
    assert dbody["usage"]["completion_tokens"] == 6
    assert dbody["choices"][0]["message"]["content"] == reference(mocks, CHAT)
    assert metric(d.url, "mock_kv_transfers_received_total") == 1
    # a room nobody prefills: the decode gives up after its deadline with a clear error
    start = time.monotonic()
    status, err = post(d.url + "/v1/chat/completions", {**body, "bootstrap_room": room + 1})
    assert status == 504 and "never filled" in err["error"]["message"]
    assert time.monotonic() - start > 0.9, "gave up before its 1 s deadline"
    # the same prefill body twice with one room: rooms are single-use
    post(p.url + "/v1/chat/completions", {**body, "bootstrap_room": room + 2})
    status, err = post(p.url + "/v1/chat/completions", {**body, "bootstrap_room": room + 2})
    assert status == 400 and "single-use" in err["error"]["message"]


def test_trtllm_context_then_generation(mocks):
    ctx, gen = mocks["trtllm_ctx"], mocks["trtllm_gen"]
    status, c = post(ctx.url + "/v1/chat/completions",
                     {**CHAT, "disaggregated_params": {"request_type": "context_only"}})
    assert status == 200
    params = c["choices"][0]["disaggregated_params"]
    assert params["request_type"] == "context_only" and len(params["first_gen_tokens"]) == 1
    assert isinstance(params["ctx_request_id"], int) and params["encoded_opaque_state"]
    assert c["usage"]["completion_tokens"] == 1
    status, g = post(gen.url + "/v1/chat/completions",
                     {**CHAT, "disaggregated_params": {**params, "request_type": "generation_only"}})
    assert status == 200, g
    assert g["choices"][0]["message"]["content"] == reference(mocks, CHAT)
    assert g["usage"]["completion_tokens"] == 6
    status, err = post(gen.url + "/v1/chat/completions", {**CHAT, "disaggregated_params": {
        **params, "request_type": "generation_only", "encoded_opaque_state": base64.b64encode(b"{}").decode()}})
    assert status == 400 and err["error"]["param"] == "disaggregated_params"


LONG = {**CHAT, "messages": [{"role": "user", "content": " ".join(["the river runs under the old stone bridge"] * 40)}]}


def _vllm_handoff(mocks) -> tuple[str, dict]:
    _, p = post(mocks["vllm_prefill"].url + "/v1/chat/completions",
                {**LONG, "max_tokens": 1, "kv_transfer_params": VLLM_PREFILL})
    return "vllm_decode", {**LONG, "kv_transfer_params": p["kv_transfer_params"]}


def _trtllm_handoff(mocks) -> tuple[str, dict]:
    _, c = post(mocks["trtllm_ctx"].url + "/v1/chat/completions",
                {**LONG, "disaggregated_params": {"request_type": "context_only"}})
    params = c["choices"][0]["disaggregated_params"]
    return "trtllm_gen", {**LONG, "disaggregated_params": {**params, "request_type": "generation_only"}}


def _sglang_handoff(mocks) -> tuple[str, dict]:
    body = {**LONG, "bootstrap_host": "127.0.0.1", "bootstrap_port": mocks["sglang_prefill"].bootstrap_port,
            "bootstrap_room": random.getrandbits(63)}
    return "sglang_decode", body


@pytest.mark.parametrize("handoff", [_vllm_handoff, _trtllm_handoff, _sglang_handoff], ids=["vllm", "trtllm", "sglang"])
def test_kv_bytes_of_every_prompt_block_cross_the_tensor_edge(mocks, handoff):
    """The decode's pull (or room wait) carries its receiver; the prefill sends each full prompt
    block's simulated KV (2048 B, --kv-block-bytes) from its pool, and the decode checks them."""
    decode_name, body = handoff(mocks)
    url = mocks[decode_name].url
    blocks, nbytes = metric(url, "mock_kv_blocks_received_total"), metric(url, "mock_kv_bytes_received_total")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        decoding = pool.submit(post, url + "/v1/chat/completions", body)
        if decode_name == "sglang_decode":  # the decode waits in the room until the prefill fills it
            time.sleep(0.2)
            assert post(mocks["sglang_prefill"].url + "/v1/chat/completions", body)[0] == 200
        status, d = decoding.result()
    assert status == 200, d
    got_blocks = metric(url, "mock_kv_blocks_received_total") - blocks
    assert got_blocks >= 10
    assert metric(url, "mock_kv_bytes_received_total") - nbytes == got_blocks * 2048


def png(color: tuple[int, int, int]) -> str:
    """A tiny PNG as a data URL (pillow)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_chat(url: str) -> dict:
    return {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


def test_encoder_handle_feeds_prefill_and_images_change_text(mocks):
    enc, pd = mocks["encoder"], mocks["worker"]
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    media_only = {"model": "m", "max_tokens": 1, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": red}}]}]}
    status, e = post(enc.url + "/v1/chat/completions", media_only)
    assert status == 200
    handle = e["ec_transfer_params"]
    assert len(handle["mm_hashes"]) == 1 and handle["shape"][0] == 16
    status, out = post(pd.url + "/v1/chat/completions", {**image_chat(red), "ec_transfer_params": handle})
    assert status == 200, out
    assert metric(pd.url, "mock_ec_transfers_received_total") == 1
    # the handle was for the red image: using it with the blue one is refused
    _, e2 = post(enc.url + "/v1/chat/completions", media_only)
    status, err = post(pd.url + "/v1/chat/completions", {**image_chat(blue), "ec_transfer_params": e2[
        "ec_transfer_params"]})
    assert status == 400 and "other media" in err["error"]["message"]
    blue_text = post(pd.url + "/v1/chat/completions", image_chat(blue))[1]["choices"][0]["message"]["content"]
    red_text = post(pd.url + "/v1/chat/completions", image_chat(red))[1]["choices"][0]["message"]["content"]
    assert red_text == out["choices"][0]["message"]["content"]
    assert red_text != blue_text
    # audio and video parts are accepted too
    audio = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"RIFF....").decode(), "format": "wav"}},
        {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}]}]}
    assert post(pd.url + "/v1/chat/completions", audio)[0] == 200
