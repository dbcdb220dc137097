"""Leasing and registering stay off a send's way once two peers have met (issue 22), and a prepared
group of arrays goes as one transfer. One process, NIXL loopback in DRAM."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from nodes.transport import TensorReceiver, TensorSender, TransportError
from nodes.transport.nixl_backend import NixlUnavailable, close_process_agent, process_agent
from tests.test_transport_edge import DEADLINE_S, assert_same_bytes, close_and_expect_leases_back, pattern


@pytest.fixture(scope="module", autouse=True)
def nixl_agent() -> Iterator[None]:
    try:
        process_agent()
    except NixlUnavailable as exc:
        pytest.skip(f"NIXL not usable here ({exc}); install nixl-cu12==1.5.1 and nixl==1.5.1")
    yield
    close_process_agent()


def requests_made(tx: TensorSender, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the NIXL WRITE requests the sender makes: ``on the way`` before a send posts its
    bytes, ``in flight`` while another send's bytes move."""
    agent, counts, posting = tx._agent, {"on the way": 0, "in flight": 0}, [False]
    prepare, post = agent._prepare, agent.post

    def counted(*a: Any, **k: Any) -> Any:
        counts["in flight" if posting[0] else "on the way"] += 1
        return prepare(*a, **k)

    def posted(*a: Any, **k: Any) -> Any:
        posting[0] = True
        try:
            return post(*a, **k)
        finally:
            posting[0] = False

    monkeypatch.setattr(agent, "_prepare", counted)
    monkeypatch.setattr(agent, "post", posted)
    return counts


def test_a_prepared_array_makes_a_write_into_every_leased_slot_at_its_first_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its first send makes them all (the first contact); then 40 sends, none received before the
    next, walk through every slot and make none."""
    with TensorReceiver(64 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        buffer = np.empty(1 << 20, np.uint8)
        tx.register(buffer)
        prepared = tx.prepare(buffer)
        counts = requests_made(tx, monkeypatch)
        for seed in range(41):
            buffer[:] = pattern(buffer.nbytes, "uint8", seed)
            ticket = prepared.send(timeout=DEADLINE_S)
            if seed == 0:
                assert counts == {"on the way": tx._slots.lease_count, "in flight": 0} and counts["on the way"] == 16
            with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                assert_same_bytes(got.arrays[0], buffer)
        assert counts == {"on the way": 16, "in flight": 0}
        close_and_expect_leases_back(tx, receiver)


def test_an_array_sent_again_gets_its_next_write_made_while_the_bytes_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """``send([a])`` of one array, ten times, none released in between (a new slot each time):
    the first two sends make their own write; from the third on it was made while the one before
    moved its bytes (the last send made one for an eleventh). Every version lands intact in its own slot."""
    with TensorReceiver(64 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        buffer = np.empty(1 << 20, np.uint8)
        tx.register(buffer)
        counts = requests_made(tx, monkeypatch)
        sent = []
        for seed in range(10):
            buffer[:] = pattern(buffer.nbytes, "uint8", seed)
            sent.append((tx.send([buffer], timeout=DEADLINE_S), seed))
        assert counts == {"on the way": 2, "in flight": 9}
        for ticket, seed in sent:
            with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                assert_same_bytes(got.arrays[0], pattern(buffer.nbytes, "uint8", seed))
        close_and_expect_leases_back(tx, receiver)


def test_a_new_size_gets_as_many_slots_while_the_consumer_holds_the_old_ones() -> None:
    """Slots given back that still hold a transfer do not count against the lease cap: moving
    from 512 KiB to 1 MiB sends while two 512 KiB transfers are held still leases three 1 MiB slots
    (half of the region), and the held transfers stay intact."""
    with TensorReceiver(6 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        small, big = pattern(512 << 10, "uint8", 1).copy(), pattern(1 << 20, "uint8", 2).copy()
        tx.register(small)
        tx.register(big)
        held = [receiver.recv(tx.send([small], timeout=DEADLINE_S).xfer_id, timeout=DEADLINE_S) for _ in range(2)]
        assert tx._slots.lease_count == 6
        for _ in range(3):  # three in flight at once: none may wait for the held ones
            tx.send([big], timeout=DEADLINE_S)
        assert tx._slots.lease_count == 3
        for got in held:
            assert_same_bytes(got.arrays[0], small)
            got.release()
        for _ in range(3):
            with receiver.recv(timeout=DEADLINE_S) as got:
                assert_same_bytes(got.arrays[0], big)
        close_and_expect_leases_back(tx, receiver)


def test_a_prepared_group_goes_as_one_transfer_each_time() -> None:
    """``prepare([a, b, c]).send()``: one ticket for three arrays, each as it is at the send, with or
    without a CRC; a group with an array too small to go in place still arrives (the general path);
    ``send_blocks`` of a group is refused."""
    with TensorReceiver(64 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        group = [np.empty(1 << 20, np.uint8), np.empty((256, 512), np.float32), np.empty(3 << 18, np.int16)]
        for array in group:
            tx.register(array)
        prepared = tx.prepare(group)
        for seed in range(6):
            for i, array in enumerate(group):
                array[...] = pattern(array.nbytes, array.dtype.name, 10 * seed + i).reshape(array.shape)
            ticket = prepared.send(timeout=DEADLINE_S, checksum=seed == 3)
            assert ticket.count == 3
            with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                assert len(got.arrays) == 3 and got.meta["lease"]
                for arrived, sent in zip(got.arrays, group):
                    assert_same_bytes(arrived, sent)
        assert len(tx._fast.routes) == 1
        mixed = [group[0], np.arange(100, dtype=np.int64)]  # 800 bytes: staged, not in place
        with receiver.recv(tx.prepare(mixed).send(timeout=DEADLINE_S).xfer_id, timeout=DEADLINE_S) as got:
            for arrived, sent in zip(got.arrays, mixed):
                assert_same_bytes(arrived, sent)
        with pytest.raises(TransportError, match="one prepared pool"):
            prepared.send_blocks(range(2))
        with pytest.raises(TransportError, match="empty group"):
            tx.prepare([])
        close_and_expect_leases_back(tx, receiver)
