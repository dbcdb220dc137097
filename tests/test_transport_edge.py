"""The tensor edge between two real processes, over NIXL and both fallbacks.

The receiver lives in the test process; senders (or receivers, for the
dead-receiver case) are spawned children that are really SIGKILLed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from nodes.transport import (  # noqa: I001
    TensorReceiver,
    TensorSender,
    TransportError,
    TransportTimeout,
    recv_embeddings,
    send_embeddings,
)
from nodes.transport import fast_path, nixl_backend, nixl_calls, slot_client

# (bytes, dtype): every dtype at 1 KiB and 4 MiB, one 64 MiB transfer
CASES = [(size, dtype) for size in (1 << 10, 4 << 20) for dtype in ("float16", "float32", "int8")] + [
    (64 << 20, "int8")
]
DEADLINE_S = 3.0
SLACK_S = 2.0  # scheduling noise on a loaded 2-core CI box
CTX = mp.get_context("spawn")


def pattern(nbytes: int, dtype: str, seed: int) -> np.ndarray:
    """Deterministic test data of ``nbytes`` bytes that both processes can rebuild."""
    return np.frombuffer(np.random.default_rng(seed).bytes(nbytes), dtype=dtype)


def block_pool() -> np.ndarray:
    """A KV-like pool: 512 blocks of 32 x 64 float16 (4 KiB each)."""
    return pattern(512 * 4096, "float16", 7).reshape(512, 32, 64)


# scattered small blocks (staged, one descriptor), one long run (zero-copy), a mix
BLOCK_IDS = [list(range(0, 512, 2)), list(range(100, 400)), [5, 6, 7, 300, 9, 511]]


def close_and_expect_leases_back(tx: TensorSender, receiver: TensorReceiver) -> None:
    """Close the sender; the receiver must free every slot it leased within the deadline."""
    tx.close()
    deadline = time.monotonic() + DEADLINE_S
    while receiver.pending():
        assert time.monotonic() < deadline, "leases not given back after close()"
        time.sleep(0.01)


def assert_same_bytes(got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, shape and bit pattern (NaNs in random floats compare too)."""
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


# -- children ---------------------------------------------------------------------


def child_send_all(handle: dict, backend: str, out: Any) -> None:
    """Send every size x dtype, a mixed multi-array transfer, and one embeddings hop."""
    with TensorSender(handle, backend=backend) as tx:
        out.put(("backend", tx.backend))
        for seed, (size, dtype) in enumerate(CASES):
            ticket = tx.send([pattern(size, dtype, seed)], timeout=30, checksum=True)
            out.put(("single", size, dtype, seed, ticket.to_dict()))
        mixed = [pattern(1000, "float32", 1), pattern(77, "int8", 2), pattern(4 << 20, "float16", 3)]
        out.put(("mixed", tx.send(mixed, timeout=30, checksum=True).to_dict()))
        pool = block_pool()
        tx.register(pool)
        for ids in BLOCK_IDS:
            out.put(("blocks", tx.send_blocks(pool, ids, timeout=30, checksum=True).to_dict()))
    # the frontend relays the handle as JSON: do exactly that
    relayed = json.loads(json.dumps(handle))
    out.put(("embeddings", json.loads(json.dumps(send_embeddings(relayed, pattern(1 << 20, "float32", 9))))))


RESENDS = 40  # more than a sender leases (16): slots come back as credits and are written again


def child_resend_registered(handle: dict, backend: str, out: Any) -> None:
    """Rewrite one registered buffer in place and send it again and again (NIXL re-posts one prepared write)."""
    with TensorSender(handle, backend=backend) as tx:
        data = np.empty((1 << 20) // 4, np.float32)
        tx.register(data)
        for seed in range(RESENDS):
            data[:] = pattern(data.nbytes, "float32", seed)
            out.put((seed, tx.send([data], timeout=30, checksum=True).to_dict()))


def child_reserve_then_hang(handle: dict, backend: str, out: Any) -> None:
    """Reserve a slot and go silent: the receiver must not wait forever."""
    tx = TensorSender(handle, backend=backend)
    res = tx.reserve(1 << 20, deadline=time.monotonic() + 10)
    out.put(res.xfer_id)
    time.sleep(600)


def child_send_forever(handle: dict, backend: str, out: Any) -> None:
    """Stream 16 MiB transfers until killed."""
    tx = TensorSender(handle, backend=backend)
    data = pattern(16 << 20, "int8", 0)
    tx.register(data)
    out.put("sending")
    while True:
        tx.send([data], timeout=30)


def child_receive_then_hang(backend: str, out: Any) -> None:
    """A receiver that publishes its handle and is then killed by the test."""
    rx = TensorReceiver(8 << 20, backend=backend)
    out.put(rx.handle().to_dict())
    time.sleep(600)


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start children; SIGKILL any still alive at the end."""
    procs: list[Any] = []

    def start(target: Any, *args: Any) -> tuple[Any, Any]:
        out = CTX.Queue()
        proc = CTX.Process(target=target, args=(*args, out), daemon=True)
        proc.start()
        procs.append(proc)
        return proc, out

    yield start
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)


@pytest.fixture(scope="module")
def nixl_agent() -> Iterator[None]:
    """Start NIXL once for this module and drop it afterwards."""
    from nodes.transport.nixl_backend import NixlUnavailable, close_process_agent, process_agent

    try:
        process_agent()
    except NixlUnavailable as exc:
        pytest.skip(f"NIXL not usable here ({exc}); install nixl-cu12==1.5.1 and nixl==1.5.1")
    yield
    close_process_agent()


IDLE_AGENTS = {
    "ours": "from nodes.transport.nixl_backend import process_agent\nprocess_agent()\n",
    # as vLLM's NIXL connector makes its agent, in a process started as the real-vLLM tests start engines
    "engine's under scripts/engine_site": (
        "from nixl._api import nixl_agent, nixl_agent_config\n"
        "agent = nixl_agent('engine', nixl_agent_config(num_threads=4, capture_telemetry=True))\n"
    ),
}


@pytest.mark.parametrize("kind", list(IDLE_AGENTS))
def test_an_idle_nixl_agent_does_not_spin_a_core(nixl_agent: None, kind: str) -> None:
    """nixl._api starts every agent's progress thread spinning (a whole core per process, even idle);
    ours sleeps in the UCX worker's event wait until traffic comes (~2% of a core measured), and so
    do the engines' agents in the real-vLLM tests (scripts/engine_site/sitecustomize.py)."""
    code = IDLE_AGENTS[kind] + (
        "import time\n"
        "cpu, wall = time.process_time(), time.monotonic()\n"
        "time.sleep(1.0)\n"
        "print((time.process_time() - cpu) / (time.monotonic() - wall))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    if kind != "ours":  # ours needs no help
        env["PYTHONPATH"] = os.path.join(root, "scripts", "engine_site")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    share = float(done.stdout.split()[-1])
    assert share < 0.5, f"an idle NIXL agent ({kind}) used {share:.0%} of a core"


@pytest.fixture(params=["nixl", "shm", "tcp"])
def backend(request: Any) -> str:
    """Each edge test runs over NIXL and over both fallbacks (forced by name)."""
    if request.param == "nixl":
        request.getfixturevalue("nixl_agent")
    return request.param


@pytest.fixture
def rx(backend: str) -> Iterator[TensorReceiver]:
    with TensorReceiver(80 << 20, backend=backend, peer_grace_s=0.5) as receiver:
        assert receiver.backend == backend
        yield receiver


# -- tests --------------------------------------------------------------------------


def test_bytes_arrive_intact_for_every_size_and_dtype(rx: TensorReceiver, backend: str, spawn: Any) -> None:
    proc, out = spawn(child_send_all, rx.handle().to_dict(), backend)
    assert out.get(timeout=120) == ("backend", backend)
    for _ in CASES:
        _, size, dtype, seed, ticket = out.get(timeout=60)
        # the notification names the transfer; its arrays are exactly what was sent
        with rx.recv(ticket["xfer_id"], timeout=30) as got:
            assert got.xfer_id == ticket["xfer_id"] and got.meta["id"] == ticket["xfer_id"]
            (array,) = got.arrays
            assert_same_bytes(array, pattern(size, dtype, seed))
    _, ticket = out.get(timeout=60)
    with rx.recv(ticket["xfer_id"], timeout=30) as got:
        expected = [pattern(1000, "float32", 1), pattern(77, "int8", 2), pattern(4 << 20, "float16", 3)]
        assert len(got.arrays) == len(expected)
        for array, want in zip(got.arrays, expected):
            assert_same_bytes(array, want)
    pool = block_pool()
    for ids in BLOCK_IDS:
        _, ticket = out.get(timeout=60)
        with rx.recv(ticket["xfer_id"], timeout=30) as got:
            assert_same_bytes(got.arrays[0], pool[ids])
    _, ticket = out.get(timeout=60)
    assert_same_bytes(recv_embeddings(rx, ticket, timeout=30), pattern(1 << 20, "float32", 9))
    proc.join(30)
    assert proc.exitcode == 0


def test_a_buffer_sent_again_and_again_arrives_intact_each_time(
    rx: TensorReceiver, backend: str, spawn: Any
) -> None:
    proc, out = spawn(child_resend_registered, rx.handle().to_dict(), backend)
    for _ in range(RESENDS):
        seed, ticket = out.get(timeout=60)
        with rx.recv(ticket["xfer_id"], timeout=30) as got:
            assert_same_bytes(got.arrays[0], pattern(1 << 20, "float32", seed))
            # over NIXL each send WRITEs into a slot leased ahead: no reservation round trip
            assert bool(got.meta.get("lease")) == (backend == "nixl")
    proc.join(30)
    assert proc.exitcode == 0


def test_silent_then_killed_sender_fails_the_receiver_within_its_deadline(
    rx: TensorReceiver, backend: str, spawn: Any
) -> None:
    proc, out = spawn(child_reserve_then_hang, rx.handle().to_dict(), backend)
    xfer_id = out.get(timeout=120)
    t0 = time.monotonic()
    with pytest.raises(TransportTimeout, match="is the sender alive"):
        rx.recv(xfer_id, timeout=1.0)  # alive but silent
    assert time.monotonic() - t0 < 1.0 + SLACK_S
    os.kill(proc.pid, signal.SIGKILL)  # dies before ever notifying
    t0 = time.monotonic()
    with pytest.raises(TransportError):
        rx.recv(xfer_id, timeout=DEADLINE_S)
    assert time.monotonic() - t0 < DEADLINE_S + SLACK_S


def test_sender_killed_mid_stream_fails_the_receiver_within_its_deadline(
    rx: TensorReceiver, backend: str, spawn: Any
) -> None:
    proc, out = spawn(child_send_forever, rx.handle().to_dict(), backend)
    assert out.get(timeout=120) == "sending"
    deadline = time.monotonic() + 20
    while rx.pending() == 0:  # a slot is reserved: a transfer is in flight
        assert time.monotonic() < deadline, "sender never started a transfer"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    completed = 0
    with pytest.raises(TransportError) as info:
        while True:  # transfers finished before the kill still arrive; then the failure
            rx.recv(timeout=DEADLINE_S).release()
            completed += 1
    assert time.monotonic() - t0 < DEADLINE_S + SLACK_S
    # Transfers already written may still land: at most the slots a sender holds ahead
    # (4 reserved, or here 2 leased: a sender leases at most half of this 80 MiB region).
    assert completed <= 4, f"{completed} transfers after the kill: {info.value}"
    assert rx.pending() == 0  # the dead sender's slot was given back


def test_dead_receiver_fails_the_sender_within_its_deadline(backend: str, spawn: Any) -> None:
    proc, out = spawn(child_receive_then_hang, backend)
    handle = out.get(timeout=120)
    tx = TensorSender(handle, backend=backend)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)
    t0 = time.monotonic()
    with pytest.raises(TransportError):
        tx.send([np.zeros(1 << 20, np.uint8)], timeout=DEADLINE_S)
    assert time.monotonic() - t0 < DEADLINE_S + SLACK_S
    tx.close()


def test_oversized_transfer_is_refused_with_the_fix(rx: TensorReceiver, backend: str) -> None:
    with TensorSender(rx.handle(), backend=backend) as tx:
        with pytest.raises(TransportError, match="capacity_bytes"):
            tx.send([np.zeros(rx.capacity + 1, np.uint8)], timeout=DEADLINE_S)


def test_without_nixl_auto_falls_back_and_says_so_once() -> None:
    code = """
import logging, sys
sys.modules["nixl"] = None  # as if not installed: import raises ImportError
logging.basicConfig(level=logging.WARNING, format="%(message)s")
import numpy as np
from nodes.transport import TensorReceiver, TensorSender
with TensorReceiver(1 << 20) as a, TensorReceiver(1 << 20) as b:
    with TensorSender(a.handle()) as tx:
        tx.send([np.arange(10)])
    print("backends", a.backend, b.backend, tx.backend)
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "SERVEGRAPH_TRANSPORT"}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "backends shm shm shm" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("NIXL not available (")]
    assert len(lines) == 1 and lines[0].endswith("; using shared memory + TCP"), done.stderr


def test_leased_slots_are_reused_and_given_back_on_close(nixl_agent: None) -> None:
    """In one process (NIXL loopback): a stream of sends lives on a few leased slots, returned by close()."""
    with TensorReceiver(64 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        data = np.empty(1 << 20, np.uint8)
        tx.register(data)
        writes = []
        for seed in range(40):  # more sends than leased slots: credits bring them back
            data[:] = pattern(data.nbytes, "uint8", seed)
            ticket = tx.send([data], timeout=DEADLINE_S)
            with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                assert got.meta["lease"]
                writes.append(got.meta["seq"])  # how many times the sender has written this slot
                assert_same_bytes(got.arrays[0], data)
        assert max(writes) > 1, "no leased slot was written twice: credits did not come back"
        assert receiver.pending() > 0  # the sender still holds its leases, ready to write
        close_and_expect_leases_back(tx, receiver)  # the goodbye frees them (no transfer is in flight)


def test_a_stream_of_prepared_sends_lands_each_version_in_its_own_slot(nixl_agent: None) -> None:
    """Back-to-back sends of one buffer, none received in between: each send posts the slot and
    notification made while the previous one's bytes moved, so each version must sit in its own
    slot under its own ticket; a send with a checksum or its own id in the stream takes the long way."""
    with TensorReceiver(64 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        buffer = np.empty(1 << 20, np.uint8)
        tx.register(buffer)
        prepared = tx.prepare(buffer)
        for round_ in range(3):
            sent = []
            for i in range(10):
                seed = 100 * round_ + i
                buffer[:] = pattern(buffer.nbytes, "uint8", seed)
                if i == 4:
                    ticket = prepared.send(timeout=DEADLINE_S, checksum=True)
                elif i == 7:
                    ticket = prepared.send(timeout=DEADLINE_S, xfer_id=f"own-{round_}")
                else:
                    ticket = prepared.send(timeout=DEADLINE_S)
                sent.append((ticket, seed))
            assert len({t.xfer_id for t, _ in sent}) == len(sent)
            for ticket, seed in reversed(sent):  # out of order: slots are freed in any order
                with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                    assert_same_bytes(got.arrays[0], pattern(buffer.nbytes, "uint8", seed))
        close_and_expect_leases_back(tx, receiver)


@pytest.mark.parametrize("policy", ["DRAM", "VRAM"])
def test_a_stream_longer_than_the_leases_waits_for_credits_and_keeps_every_version(
    nixl_agent: None, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More sends than leased slots while a consumer releases them: the sender reads credits on
    every send (DRAM's policy) or only when few slots are left (VRAM's, run here in DRAM), or waits
    for one, and no slot is written while still held."""
    monkeypatch.setitem(slot_client.CREDIT_LOW_WATER, "DRAM", slot_client.CREDIT_LOW_WATER[policy])
    sends = 60
    with TensorReceiver(8 << 20, backend="nixl") as receiver:  # 4 MiB to lease: 4 slots of 1 MiB
        tx = TensorSender(receiver.handle(), backend="nixl")
        buffer = np.empty(1 << 20, np.uint8)
        tx.register(buffer)
        prepared = tx.prepare(buffer)
        tickets: queue.Queue = queue.Queue()
        mismatches: list[int] = []

        def consume() -> None:
            for _ in range(sends):
                ticket, seed = tickets.get(timeout=DEADLINE_S)
                with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                    if not np.array_equal(got.arrays[0], pattern(buffer.nbytes, "uint8", seed)):
                        mismatches.append(seed)

        consumer = threading.Thread(target=consume)
        consumer.start()
        for seed in range(sends):
            buffer[:] = pattern(buffer.nbytes, "uint8", seed)
            tickets.put((prepared.send(timeout=DEADLINE_S), seed))
        consumer.join(timeout=2 * DEADLINE_S)
        assert not consumer.is_alive()
        assert mismatches == []
        assert len(tx._slots.leased_offsets()) == 4
        tx.close()


def test_a_prepared_buffer_and_changing_sizes_keep_slots_and_bytes_right(nixl_agent: None) -> None:
    """``prepare`` sends the buffer as it is at each call; switching sizes re-leases and frees everything on close."""
    with TensorReceiver(64 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        small, big = np.empty(1 << 20, np.uint8), np.empty(8 << 20, np.uint8)
        tx.register(small)
        tx.register(big)
        prepared = tx.prepare(small)
        unregistered = tx.prepare(pattern(256 << 10, "float32", 3))  # goes the general way, same API
        for seed in range(12):
            source = big if seed % 4 == 3 else small  # every 4th send needs bigger slots
            source[:] = pattern(source.nbytes, "uint8", seed)
            ticket = prepared.send(timeout=DEADLINE_S) if source is small else tx.send([big], timeout=DEADLINE_S)
            with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                assert_same_bytes(got.arrays[0], source)
        ticket = unregistered.send(timeout=DEADLINE_S, checksum=True)
        with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
            assert_same_bytes(got.arrays[0], pattern(256 << 10, "float32", 3))
        close_and_expect_leases_back(tx, receiver)  # a slot set aside for a send that never came is given back too


def test_a_run_of_consecutive_blocks_is_sent_in_place_and_bad_runs_are_refused(nixl_agent: None) -> None:
    """``send_blocks`` of consecutive ids writes that run of the registered pool from where it is, as a
    prepared send of one array (its own route, no staging), again and again; scattered ids still take
    the general way; a run that leaves the pool is refused by name."""
    with TensorReceiver(64 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        pool = block_pool().copy()
        tx.register(pool)
        big_endian = np.arange(200, 264, dtype=">i8")  # not native: converted, then one run
        cases = [range(100, 400)] * 3 + [[3, 4, 5, 6, 7], range(0, 512, 2), big_endian]
        for i, ids in enumerate(cases):
            pool.view(np.uint16)[list(ids)] += 1  # new bytes each time
            ticket = tx.send_blocks(pool, ids, timeout=DEADLINE_S, checksum=i == 1)
            with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                assert_same_bytes(got.arrays[0], pool[list(ids)])
        runs = {(info.addr, info.shape) for info in tx._fast.routes}
        block = pool.nbytes // len(pool)
        assert (pool.ctypes.data + 100 * block, (300, 32, 64)) in runs
        assert (pool.ctypes.data + 200 * block, (64, 32, 64)) in runs
        assert len(runs) == 2, "a run under stage_below (20 KiB) or scattered ids got a route"
        for bad in (range(510, 513), range(-1, 3), []):
            with pytest.raises(TransportError, match=r"within \[0, 512\)"):
                tx.send_blocks(pool, bad, timeout=DEADLINE_S)
        close_and_expect_leases_back(tx, receiver)


def test_a_stream_stays_armed_while_other_sends_come_between(
    nixl_agent: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of blocks of a prepared pool sent again and again, with a scattered send (the general
    path) between each: the slot set aside for the run's next send is left to it, so after the first only the
    scattered sends lease a slot, and every transfer arrives intact."""
    with TensorReceiver(64 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        pool = block_pool().copy()
        tx.register(pool)
        leases: list[int] = []
        lease = tx._slots.lease
        monkeypatch.setattr(tx._slots, "lease", lambda nbytes, *a, **k: leases.append(nbytes) or lease(nbytes, *a, **k))
        prepared = tx.prepare(pool)  # the run goes through the prepared pool, the rest through send_blocks
        run, scattered = range(100, 200), np.arange(0, 400)[:200:2]  # a strided view: converted
        for seed in range(6):
            for ids in (run, scattered):
                pool.view(np.uint16)[list(ids)] += seed + 1
                if ids is run:  # the range's facts are worked out once; a CRC'd send takes the long way
                    ticket = prepared.send_blocks(ids, timeout=DEADLINE_S, checksum=seed == 3)
                else:
                    ticket = tx.send_blocks(pool, ids, timeout=DEADLINE_S)
                with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                    assert_same_bytes(got.arrays[0], pool[list(ids)])
        assert len(leases) == 1 + 1 + 6, f"the run's armed sends leased too: {len(leases)} leases"
        assert list(prepared._runs) == [run]
        close_and_expect_leases_back(tx, receiver)


def test_sends_work_through_nixls_public_calls_too(nixl_agent: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where nixl keeps its bindings elsewhere, posts and polls go through ``nixl._api``'s methods."""
    agent = nixl_backend.process_agent()
    public = nixl_calls.TransferCalls(agent._agent, use_bindings=False)
    assert not public.native and public.done == "DONE"
    moved = nixl_calls.TransferCalls(agent._agent)  # a handle without the binding's where nixl 1.5 keeps it
    assert moved.native and moved.handle(marker := object()) is marker and not moved.native
    assert moved.start == agent._agent.transfer
    monkeypatch.setattr(agent, "_calls", public)
    with TensorReceiver(16 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        data = np.empty(1 << 20, np.uint8)
        tx.register(data)
        for seed in range(5):
            data[:] = pattern(data.nbytes, "uint8", seed)
            ticket = tx.send([data], timeout=DEADLINE_S)
            with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                assert_same_bytes(got.arrays[0], data)
        close_and_expect_leases_back(tx, receiver)


def test_many_different_runs_keep_a_bounded_route_cache(nixl_agent: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new run of a pool gets a route with its own prepared writes; past ``MAX_ROUTES`` the
    oldest is dropped (its writes released), one at a time, and every run still arrives intact."""
    monkeypatch.setattr(fast_path, "MAX_ROUTES", 4)
    with TensorReceiver(16 << 20, backend="nixl") as receiver:
        tx = TensorSender(receiver.handle(), backend="nixl")
        pool = block_pool().copy()
        tx.register(pool)
        for start in range(0, 400, 40):  # ten different runs of 16 blocks (64 KiB each)
            ids = range(start, start + 16)
            ticket = tx.send_blocks(pool, ids, timeout=DEADLINE_S)
            with receiver.recv(ticket.xfer_id, timeout=DEADLINE_S) as got:
                assert_same_bytes(got.arrays[0], pool[start : start + 16])
            assert len(tx._fast.routes) <= 4
        block = pool.nbytes // len(pool)
        kept = sorted((info.addr - pool.ctypes.data) // block for info in tx._fast.routes)
        assert kept == [240, 280, 320, 360], kept  # the four newest
        close_and_expect_leases_back(tx, receiver)
