"""The engine core in-process: admission queue and waiting for KV blocks."""

from __future__ import annotations

import asyncio

from nodes.mock.config import parse_args
from nodes.mock.engine import Engine
from nodes.mock.request import GenRequest
from nodes.mock.tokenizer import SimTokenizer


def _engine(*argv: str) -> Engine:
    return Engine(parse_args(["--speedup", "1000", *argv]), SimTokenizer())


def _req(n_prompt: int, max_tokens: int = 4, first: int = 10) -> GenRequest:
    return GenRequest("completion", {}, list(range(first, first + n_prompt)), [], max_tokens)


def test_requests_beyond_max_num_seqs_wait_in_the_queue():
    async def main() -> None:
        engine = _engine("--max-num-seqs", "1")
        await engine.start()
        first = await engine.prepare(_req(8))
        second = asyncio.create_task(engine.prepare(_req(8, first=50)))
        await asyncio.sleep(0.01)
        assert (engine.metrics.running, engine.metrics.waiting) == (1, 1) and not second.done()
        engine.finish(first, 4)
        prep = await asyncio.wait_for(second, 1)
        assert (engine.metrics.running, engine.metrics.waiting) == (1, 0)
        engine.finish(prep, 4)
        assert engine.metrics.running == 0 and engine.metrics.success["length"] == 2
        await engine.stop()

    asyncio.run(main())


def test_a_request_waits_for_kv_blocks_then_runs():
    async def main() -> None:
        engine = _engine("--kv-blocks", "4", "--block-size", "4")
        await engine.start()
        first = await engine.prepare(_req(8, max_tokens=4))  # 3 blocks of 4
        second = asyncio.create_task(engine.prepare(_req(8, max_tokens=4, first=100)))
        await asyncio.sleep(0.01)
        assert not second.done() and engine.metrics.waiting == 1 and engine.pool.usage == 0.75
        engine.abort(first)  # a client that went away frees its blocks too
        prep = await asyncio.wait_for(second, 1)
        assert engine.metrics.waiting == 0 and engine.pool.usage == 0.75
        assert len(await engine.wait_output(prep)) == 4
        engine.finish(prep, 4)
        assert engine.pool.usage == 0
        await engine.stop()

    asyncio.run(main())


def test_output_is_a_pure_function_of_prompt_and_seed():
    async def main() -> list[list[int]]:
        outs = []
        for seed in ("0", "0", "1"):
            engine = _engine("--seed", seed)
            await engine.start()
            prep = await engine.prepare(_req(20, max_tokens=6))
            outs.append(await engine.wait_output(prep))
            assert engine.token_at(prep, 3) == outs[-1][3]
            engine.finish(prep, 6)
            await engine.stop()
        return outs

    a, b, c = asyncio.run(main())
    assert a == b and a != c


def _steps(*argv: str, max_tokens: int = 40) -> tuple[list[list[int]], list[int]]:
    async def main() -> tuple[list[list[int]], list[int]]:
        engine = Engine(parse_args(list(argv)), SimTokenizer())
        await engine.start()
        prep = await engine.prepare(_req(8, max_tokens=max_tokens))
        steps = [step async for step in engine.tokens(prep)]
        engine.finish(prep, max_tokens)
        await engine.stop()
        return steps, engine.output_ids(prep)

    return asyncio.run(main())


def test_tokens_due_together_come_in_one_step_and_the_first_comes_alone():
    steps, ids = _steps("--speedup", "1000")  # 5 us per token: many are due at once
    assert [t for step in steps for t in step] == ids
    assert steps[0] == ids[:1] and len(steps) < len(ids)


def test_tokens_per_write_caps_a_step():
    steps, ids = _steps("--speedup", "1000", "--tokens-per-write", "1")
    assert steps == [[t] for t in ids]
    steps, ids = _steps("--speedup", "1000", "--tokens-per-write", "7")
    assert [t for step in steps for t in step] == ids and max(map(len, steps)) == 7


def test_paced_tokens_come_one_per_step():
    steps, ids = _steps("--itl-ms", "1", max_tokens=10)  # 1 ms apart: each has its own time
    assert steps == [[t] for t in ids]
