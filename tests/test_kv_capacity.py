"""The kv policy learns each replica's KV cache size and the prompts' characters per token from real
engines (mock engines over HTTP, imitating vLLM and SGLang), and bounds its model of their caches by it."""

from __future__ import annotations

import asyncio

import pytest

from graph.plan import Upstream
from nodes.frontend.kv_capacity import PROBE_TEXT
from nodes.frontend.routing import PrefixAware
from nodes.mock.launch import MockProcess, running
from tests.test_mock_api import post

pytestmark = pytest.mark.e2e_mock


@pytest.fixture(scope="module")
def engines():
    vllm = MockProcess(["--served-model-name", "m", "--kv-blocks", "40", "--block-size", "16"])
    sglang = MockProcess(["--served-model-name", "m", "--imitate", "sglang", "--kv-blocks", "100",
                          "--block-size", "16"])
    with running(vllm, sglang):
        yield vllm, sglang


def test_sizes_and_characters_per_token_come_from_the_engines(engines):
    vllm, sglang = engines
    upstreams = [Upstream(service="vllm-0", url=vllm.url), Upstream(service="sglang-0", url=sglang.url)]
    prompt = " ".join(f"document {i} says the weather is fine" for i in range(40))

    async def route() -> PrefixAware:
        kv = PrefixAware(upstreams)
        assert kv.capacity("vllm-0") > 10_000  # nothing known before the first request
        kv.pick(prompt=prompt)
        await asyncio.wait_for(kv.sizes.wait(), 20)
        return kv

    kv = asyncio.run(route())
    # vLLM's vllm:cache_config_info (num_gpu_blocks x block_size); SGLang's max_total_num_tokens.
    assert kv.sizes.tokens == {"vllm-0": 40 * 16, "sglang-0": 100 * 16}
    status, tokenized = post(vllm.url + "/tokenize", {"prompt": prompt, "add_special_tokens": False})
    assert status == 200
    assert kv.sizes.chars_per_token == pytest.approx(len(prompt) / tokenized["count"])
    assert kv.capacity("vllm-0") == int(640 * kv.sizes.chars_per_token) // 64


def test_before_a_routed_prompt_is_sampled_the_ratio_is_the_probe_texts(engines):
    """A short prompt is not sampled; the English probe text asked with the sizes gives the ratio."""
    vllm, _ = engines

    async def route() -> float:
        kv = PrefixAware([Upstream(service="vllm-0", url=vllm.url)])
        kv.pick(prompt="hi")
        await asyncio.wait_for(kv.sizes.wait(), 20)
        return kv.sizes.chars_per_token

    ratio = asyncio.run(route())
    status, tokenized = post(vllm.url + "/tokenize", {"prompt": PROBE_TEXT, "add_special_tokens": False})
    assert status == 200 and ratio == pytest.approx(len(PROBE_TEXT) / tokenized["count"])
    assert ratio != 4.0  # not the default


def test_an_engine_not_up_yet_is_asked_again():
    late = MockProcess(["--served-model-name", "m", "--kv-blocks", "30", "--block-size", "16"])
    upstreams = [Upstream(service="late-0", url=late.url)]

    async def route() -> dict[str, int]:
        kv = PrefixAware(upstreams)
        kv.pick(prompt="x" * 300)  # the engine is not started yet: nothing answers
        await asyncio.sleep(0.2)
        assert kv.sizes.tokens == {}
        late.spawn()
        try:
            await asyncio.wait_for(kv.sizes.wait(), 20)
        finally:
            late.stop()
        return kv.sizes.tokens

    assert asyncio.run(route()) == {"late-0": 30 * 16}
