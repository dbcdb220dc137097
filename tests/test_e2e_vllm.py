"""Real vLLM (CPU build) and real NIXL through `graph run`: disaggregated graphs give the aggregated tokens.

Text: pipelines/agg.py is the reference for pipelines/pd.py (KV pulled over NIXL).
Multimodal: pipelines/epd.py is the reference for e_pd.py, ep_d.py and e_p_d.py.
Greedy decoding with ``ignore_eos`` and a fixed ``max_tokens`` makes every output a
function of the prompt, so the token ids must match exactly. One graph runs at a
time (2 cores); each is started once and reused by the tests that follow it.

Needs vllm, nixl and torchvision in the running interpreter
(``bash scripts/setup-vllm.sh .venv``); otherwise every test here skips.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import RunningGraph, metric_sum, metrics
from tests.vllm_fixtures import (
    MM_MODEL, TEXT_MODEL, chat_with_image, complete, engine_sets, image_messages, make_image,
    missing_vllm, start_vllm_graph, tiny_models, token_ids,
)

_MISSING = missing_vllm()
pytestmark = [
    pytest.mark.e2e_vllm,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(_MISSING is not None, reason=f"real vLLM tier: {_MISSING}"),
]

MAX_TOKENS = 24
_WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
          "boxing matches near old river banks under grey autumn skies").split()


def _prompt(words: int, seed: int) -> str:
    return " ".join(_WORDS[(seed * 7 + i * (seed + 3)) % len(_WORDS)] for i in range(words))


#: Eight prompts from a few tokens to several 128-token KV blocks.
PROMPTS = [_prompt(n, i) for i, n in enumerate((1, 5, 12, 30, 60, 150, 300, 700))]
IMAGE_SEEDS = (1, 2, 3)
QUESTION = "What is in this picture?"

#: pipeline, --set values (one replica, one rank per engine node).
GRAPHS: dict[str, tuple[str, list[str]]] = {
    "agg": ("pipelines/agg.py", engine_sets("worker")),
    "pd": ("pipelines/pd.py", engine_sets("prefill", "decode")),
    "epd": ("pipelines/epd.py", engine_sets("worker")),
    "e_pd": ("pipelines/e_pd.py", engine_sets("encoder", "prefill-decode")),
    "ep_d": ("pipelines/ep_d.py", engine_sets("encode-prefill", "decode")),
    "e_p_d": ("pipelines/e_p_d.py", engine_sets("encoder", "prefill", "decode")),
}


class OneGraphAtATime:
    """Starts the graph a test asks for, stopping the one running before (2 cores fit one)."""

    def __init__(self, models: pathlib.Path, root: pathlib.Path) -> None:
        self.models, self.root = models, root
        self.name: str | None = None
        self.running: RunningGraph | None = None

    def get(self, name: str) -> RunningGraph:
        if self.name != name:
            self.stop()
            pipeline, sets = GRAPHS[name]
            model = self.models / ("llama" if name in ("agg", "pd") else "llava")
            self.running = start_vllm_graph(pipeline, model, self.root / name, *sets)
            self.name = name
            _clear_encoder_cache(self.running)
        assert self.running is not None and self.running.proc.poll() is None, f"graph {name} died"
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            code = self.running.stop(timeout=60)
            self.running, self.name = None, None
            assert code == 0, f"graph run exited with {code}"


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneGraphAtATime]:
    keeper = OneGraphAtATime(tiny_models(), tmp_path_factory.mktemp("vllm-graphs"))
    try:
        yield keeper
    finally:
        keeper.stop()


def _encoder_cache_dir(g: RunningGraph) -> pathlib.Path | None:
    for s in g.plan["services"]:
        for arg in s["argv"]:
            if "shared_storage_path" in arg:
                import json

                return pathlib.Path(json.loads(arg)["ec_connector_extra_config"]["shared_storage_path"])
    return None


def _clear_encoder_cache(g: RunningGraph) -> None:
    """Files left by an earlier run (maybe of other tiny weights) would be loaded as if encoded now."""
    folder = _encoder_cache_dir(g)
    if folder is not None and folder.exists():
        for child in folder.iterdir():
            shutil.rmtree(child, ignore_errors=True)


# --- text: P/D over NIXL against the aggregated server ------------------------------


def _text_tokens(g: RunningGraph, prompts: list[str]) -> list[list[int]]:
    base = f"http://127.0.0.1:{g.port}"
    return [token_ids(complete(base, TEXT_MODEL, p, MAX_TOKENS)) for p in prompts]


@pytest.fixture(scope="module")
def text_reference(graphs: OneGraphAtATime) -> dict[str, Any]:
    g = graphs.get("agg")
    base = f"http://127.0.0.1:{g.port}"
    answers = [complete(base, TEXT_MODEL, p, MAX_TOKENS) for p in PROMPTS]
    lengths = [len(a["choices"][0]["prompt_token_ids"]) for a in answers]
    return {"tokens": [token_ids(a) for a in answers], "lengths": lengths}


def test_prompts_span_several_kv_blocks(text_reference: dict[str, Any]) -> None:
    lengths = text_reference["lengths"]
    assert len(set(lengths)) == len(PROMPTS), lengths
    assert any(128 < n < 256 for n in lengths) and max(lengths) > 3 * 128, lengths


def test_pd_gives_the_aggregated_tokens_with_kv_over_nixl(graphs: OneGraphAtATime,
                                                          text_reference: dict[str, Any]) -> None:
    g = graphs.get("pd")
    decode = g.service_url("decode-0")
    before = metrics(decode)
    got = _text_tokens(g, PROMPTS)
    after = metrics(decode)
    for prompt, want, have in zip(PROMPTS, text_reference["tokens"], got):
        assert have == want, f"P/D differs from aggregated for a {len(prompt)}-char prompt"
    transfers = metric_sum(after, "vllm:nixl_xfer_time_seconds_count") - \
        metric_sum(before, "vllm:nixl_xfer_time_seconds_count")
    moved = metric_sum(after, "vllm:nixl_bytes_transferred_sum") - metric_sum(before, "vllm:nixl_bytes_transferred_sum")
    assert transfers >= len(PROMPTS), f"decode pulled KV {transfers} times for {len(PROMPTS)} requests"
    assert moved > 0
    assert metric_sum(after, "vllm:nixl_num_failed_transfers_total") == 0


def test_pd_openai_client_stream_and_not(graphs: OneGraphAtATime, text_reference: dict[str, Any]) -> None:
    openai = pytest.importorskip("openai")
    g = graphs.get("pd")
    client = openai.OpenAI(base_url=g.url, api_key="none", timeout=300)
    extra = {"ignore_eos": True, "return_token_ids": True}
    prompt, want = PROMPTS[5], text_reference["tokens"][5]
    whole = client.completions.create(model=TEXT_MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                      extra_body=extra)
    assert whole.choices[0].model_extra["token_ids"] == want
    streamed_ids: list[int] = []
    text = ""
    for chunk in client.completions.create(model=TEXT_MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                           stream=True, extra_body=extra):
        if chunk.choices:
            text += chunk.choices[0].text
            streamed_ids += chunk.choices[0].model_extra.get("token_ids") or []
    assert streamed_ids == want
    assert text == whole.choices[0].text
    chat = client.chat.completions.create(model=TEXT_MODEL, messages=[{"role": "user", "content": PROMPTS[3]}],
                                          max_tokens=8, temperature=0, stream=True, extra_body=extra)
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices)


# --- multimodal: E/PD, EP/D, E/P/D against EPD ---------------------------------------


def _image_tokens(g: RunningGraph, seeds: tuple[int, ...]) -> dict[int, list[int]]:
    base = f"http://127.0.0.1:{g.port}"
    return {s: token_ids(chat_with_image(base, MM_MODEL, make_image(s), QUESTION, MAX_TOKENS)) for s in seeds}


@pytest.fixture(scope="module")
def mm_reference(graphs: OneGraphAtATime) -> dict[int, list[int]]:
    return _image_tokens(graphs.get("epd"), IMAGE_SEEDS)


def test_images_change_the_output(mm_reference: dict[int, list[int]]) -> None:
    outputs = {tuple(v) for v in mm_reference.values()}
    assert len(outputs) == len(IMAGE_SEEDS), mm_reference


def _check_disaggregated(graphs: OneGraphAtATime, name: str, reference: dict[int, list[int]]) -> None:
    g = graphs.get(name)
    assert _image_tokens(g, IMAGE_SEEDS) == reference
    folder = _encoder_cache_dir(g)
    if name != "ep_d":
        assert folder is not None
        files = list(folder.glob("*/encoder_cache.safetensors"))
        assert len(files) == len(IMAGE_SEEDS), f"encoder wrote {files} for {len(IMAGE_SEEDS)} images"


def test_e_p_d_gives_the_aggregated_tokens(graphs: OneGraphAtATime, mm_reference: dict[int, list[int]]) -> None:
    _check_disaggregated(graphs, "e_p_d", mm_reference)


def test_e_p_d_prefill_uses_the_encoders_output(graphs: OneGraphAtATime, mm_reference: dict[int, list[int]]) -> None:
    """Swap an image's encoder cache for another image's: the answer follows the swapped embeddings."""
    g = graphs.get("e_p_d")
    folder = _encoder_cache_dir(g)
    assert folder is not None
    encoder = g.service_url("encoder-0")
    hashes = {}
    for seed in (IMAGE_SEEDS[0], 9):
        status, answer = _post_encoder(encoder, make_image(seed))
        assert status == 200, answer
        (hashes[seed],) = answer["ec_transfer_params"]
    victim = folder / hashes[9] / "encoder_cache.safetensors"
    try:
        shutil.copyfile(folder / hashes[IMAGE_SEEDS[0]] / "encoder_cache.safetensors", victim)
        swapped = token_ids(chat_with_image(f"http://127.0.0.1:{g.port}", MM_MODEL, make_image(9), QUESTION,
                                            MAX_TOKENS))
    finally:
        shutil.rmtree(victim.parent, ignore_errors=True)
    assert swapped == mm_reference[IMAGE_SEEDS[0]], "prefill ignored the encoder cache (ran its own vision tower)"


def _post_encoder(url: str, png: bytes) -> tuple[int, Any]:
    from tests.e2e import http_json

    parts = [p for p in image_messages(png, "")[0]["content"] if p["type"] == "image_url"]
    return http_json("POST", url + "/v1/chat/completions",
                     {"model": MM_MODEL, "messages": [{"role": "user", "content": parts}], "max_tokens": 1},
                     timeout=300)


def test_e_p_d_openai_client_stream_and_not(graphs: OneGraphAtATime, mm_reference: dict[int, list[int]]) -> None:
    openai = pytest.importorskip("openai")
    g = graphs.get("e_p_d")
    client = openai.OpenAI(base_url=g.url, api_key="none", timeout=300)
    seed = IMAGE_SEEDS[1]
    messages = image_messages(make_image(seed), QUESTION)
    extra = {"ignore_eos": True, "return_token_ids": True}
    whole = client.chat.completions.create(model=MM_MODEL, messages=messages, max_tokens=MAX_TOKENS,
                                           temperature=0, extra_body=extra)
    assert whole.choices[0].model_extra["token_ids"] == mm_reference[seed]
    text, ids = "", []
    for chunk in client.chat.completions.create(model=MM_MODEL, messages=messages, max_tokens=MAX_TOKENS,
                                                temperature=0, stream=True, extra_body=extra):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            ids += chunk.choices[0].model_extra.get("token_ids") or []
    assert ids == mm_reference[seed]
    assert text == whole.choices[0].message.content


@pytest.mark.parametrize("name", ["e_pd", "ep_d"])
def test_other_multimodal_splits_give_the_aggregated_tokens(graphs: OneGraphAtATime, name: str,
                                                            mm_reference: dict[int, list[int]]) -> None:
    _check_disaggregated(graphs, name, mm_reference)
