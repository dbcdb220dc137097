"""Unit tests of the tensor edge's pure parts: packing, coalescing, slots, handles."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.transport import EdgeHandle, TransportError
from nodes.transport.layout import (
    ALIGN,
    block_runs,
    coalesce,
    consecutive_start,
    decode_layout,
    encode_layout,
    pack,
    plan_segments,
)
from nodes.transport.slots import SLOT_ALIGN, SlotAllocator


def test_pack_aligns_each_array_start() -> None:
    offsets, total = pack([10, 64, 1])
    assert offsets == [0, ALIGN, 2 * ALIGN]
    assert total == 2 * ALIGN + 1


def test_layout_run_length_round_trip() -> None:
    specs = [("float16", (64, 512), 65536)] * 1024 + [("int8", (3,), 3)]
    layout = encode_layout(specs)
    assert len(layout) == 2  # 1024 equal blocks travel as one entry
    assert decode_layout(layout) == specs


def test_coalesce_merges_only_when_both_sides_are_contiguous() -> None:
    # three blocks back to back in the source, landing back to back
    runs = coalesce([1000, 1064, 1128], [64, 64, 64], [0, 64, 128])
    assert [(r.src, r.n, r.members) for r in runs] == [(1000, 192, (0, 1, 2))]
    # a gap in the source splits the run
    runs = coalesce([1000, 2000], [64, 64], [0, 64])
    assert len(runs) == 2


def test_plan_stages_small_scattered_runs_into_one_segment() -> None:
    srcs = [10_000 * i for i in range(8)]  # scattered
    runs = coalesce(srcs, [64] * 8, [64 * i for i in range(8)])
    segments = plan_segments(runs, lambda a, n: True, stage_below=1024)
    assert len(segments) == 1 and not segments[0].direct
    assert segments[0].members == list(range(8)) and segments[0].n == 512


def test_plan_sends_big_registered_runs_direct_and_asks_before() -> None:
    asked: list[tuple[int, int]] = []

    def registered(addr: int, n: int) -> bool:
        asked.append((addr, n))
        return True

    runs = coalesce([0, 1 << 30], [4 << 20, 100], [0, 4 << 20])
    segments = plan_segments(runs, registered, stage_below=1 << 20)
    assert [s.direct for s in segments] == [True, False]
    assert asked == [(0, 4 << 20)]  # the small run never needs registering


def test_slot_allocator_reuses_and_merges_freed_space() -> None:
    slots = SlotAllocator(4 * SLOT_ALIGN)
    a, b = slots.alloc(SLOT_ALIGN), slots.alloc(2 * SLOT_ALIGN)
    assert (a, b) == (0, SLOT_ALIGN)
    assert slots.alloc(2 * SLOT_ALIGN) is None  # only one page left
    slots.free(a)
    slots.free(b)
    assert slots.alloc(4 * SLOT_ALIGN) == 0  # neighbours merged back into one hole


def test_handle_round_trips_through_json_and_base64() -> None:
    handle = EdgeHandle(backend="tcp", host="10.0.0.7", port=5601, node="n/1", capacity=1 << 20)
    assert EdgeHandle.from_dict(handle.to_dict()) == handle
    assert EdgeHandle.from_b64(handle.to_b64()) == handle


def test_handle_of_another_version_or_unknown_memory_is_rejected_with_a_fix() -> None:
    good = EdgeHandle(backend="tcp", host="h", port=1, node="n", capacity=1).to_dict()
    with pytest.raises(TransportError, match="upgrade both"):
        EdgeHandle.from_dict(good | {"version": 99})
    with pytest.raises(TransportError, match="mem is 'HBM'"):
        EdgeHandle.from_dict(good | {"mem": "HBM"})
    with pytest.raises(TransportError, match="base64"):
        EdgeHandle.from_b64("not base64 !!")


@pytest.mark.parametrize(
    ("ids", "first"),
    [
        ([5, 6, 7], 5),
        ([0], 0),
        (list(range(70_000, 71_024)), 70_000),  # past the kept counting array: it grows
        ([], None),
        ([3, 5], None),
        ([2, 1, 0, 3], None),  # right ends, wrong order
        ([0, 2, 1, 3], None),
        ([-1, 0, 1], None),
        ([7, 7, 7], None),
        ([1, 2, 3, 5], None),  # right first, a gap before the end
        ([80_000, 80_001, 80_003], None),  # past the kept array, wrong last: no growth
        ([99_998, 99_999], 99_998),
        ([99_999, 100_000], None),  # leaves the pool
    ],
)
def test_consecutive_start_finds_one_run_only(ids: list[int], first: int | None) -> None:
    assert consecutive_start(np.array(ids, dtype=np.int64), 100_000) == first


def test_block_runs_finds_consecutive_ids() -> None:
    starts, lengths = block_runs(np.array([4, 5, 6, 9, 2, 3]))
    assert starts.tolist() == [4, 9, 2] and lengths.tolist() == [3, 1, 2]
