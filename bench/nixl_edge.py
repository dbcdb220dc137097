"""Benchmark the tensor edge against raw NIXL and a memory-copy ceiling.

Two processes: the parent receives (our TensorReceiver + a raw NIXL agent with
its own registered region), a spawned child sends. Times are taken in the
sender, from the call until the data is in the receiver's memory and the
notification has been posted; GB/s is the median over ``--repeat`` runs.

    python bench/nixl_edge.py                              # CPU, default sizes
    python bench/nixl_edge.py --sizes 4M,64M,1G,1024x64K --repeat 5
    python bench/nixl_edge.py --device cuda                # on a GPU host, torch needed

``--order blocked`` runs each path's reps back to back instead of taking turns.

Cases per size: ``ours`` (TensorSender.send), ``ours/prep`` (the same array
through ``TensorSender.prepare``: described once, as raw's handle is made once), ``raw`` (NIXL, one descriptor,
transfer handle prepared once and re-posted), ``ceiling`` (numpy copy in one
process; on cuda a device copy and torch CUDA IPC between processes). A block
case ``NxB`` sends N blocks of B bytes scattered over a pool (every other
block) with ``TensorSender.send_blocks``: ``ours`` gathers them into staging
with one op and sends one descriptor, ``ours/ctg`` sends N consecutive blocks
(coalesced into one descriptor, zero-copy), ``ours/prep`` the same run from
the pool prepared once (``prepare(pool).send_blocks(range(N))``), ``raw/desc`` gives each block its
own descriptor, ``raw`` is one descriptor of the same total. "merge win" is
ours / raw/desc.

After the timed runs each of our paths sends once more with a CRC the
receiver checks; the run fails if any arrives corrupted. The receiver's region
holds six of the biggest case: a sender leases at most half of it, and three
slots in hand keep it from waiting on the receiver's releases. ``--profile``
prints, per case, the medians of our send's phases (describe, lease, build
the notification, post, work done while the bytes move, rest of the wait,
return), raw NIXL with a notification as long as ours and writing 16 slots
in turn (as a stream of ours does), and a cProfile of a stream of sends.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from nodes.transport import EdgeHandle, TensorReceiver, TensorSender, TransportError, TransportTimeout  # noqa: E402
from nodes.transport import sender as sender_module  # noqa: E402
from nodes.transport.nixl_backend import NAP_S, SPIN_S, TransferCalls, quiet_agent  # noqa: E402

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """'64M' -> 67108864."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


def parse_case(text: str) -> tuple[int, int]:
    """'64M' -> (1, 64 MiB); '1024x64K' -> (1024, 64 KiB)."""
    if "X" in text.upper():
        count, block = text.upper().split("X")
        return int(count), parse_size(block)
    return 1, parse_size(text)


# -- memory helpers (numpy on cpu, torch on cuda) ------------------------------


def _alloc(nbytes: int, device: str) -> Any:
    """A filled buffer (content is irrelevant to bandwidth; a memset is cheap)."""
    if device == "cuda":
        import torch

        return torch.full((nbytes,), 7, dtype=torch.uint8, device="cuda")
    return np.full(nbytes, 7, dtype=np.uint8)


def _addr(buf: Any) -> int:
    return buf.data_ptr() if hasattr(buf, "data_ptr") else buf.ctypes.data


def _mem(device: str) -> str:
    return "VRAM" if device == "cuda" else "DRAM"


def _cuda_context() -> None:
    """Create the CUDA context before the NIXL agent, as vLLM does (UCX probes it)."""
    import torch

    torch.empty(1, device="cuda")


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- raw NIXL -------------------------------------------------------------------


def _raw_agent(name: str) -> Any:
    """Raw NIXL with our agent's settings (its progress thread's delay: see PROGRESS_DELAY_US)."""
    from nixl._api import nixl_agent, nixl_agent_config

    return quiet_agent(nixl_agent, name, nixl_agent_config(backends=["UCX"]))


def poll_xfer(check: Callable[[], Any], deadline: float, in_prog: Any = "PROC") -> Any:
    """Poll ``check()`` until it is not ``in_prog`` or ``deadline`` passes: the edge's policy
    (spin ``SPIN_S``, then nap ``NAP_S``), as a pure spin starves UCX's progress threads on few cores."""
    start = time.monotonic()
    state = check()
    while state == in_prog:
        now = time.monotonic()
        if now > deadline:
            break
        if now - start > SPIN_S:
            time.sleep(NAP_S)
        state = check()
    return state


class _RawWrite:
    """One prepared raw NIXL WRITE of ``pairs``, re-posted on each call: through ``nixl._api``'s
    ``transfer``/``check_xfer_state``, or with ``bindings`` through the calls under them, as our
    edge posts (``--profile``)."""

    def __init__(
        self,
        agent: Any,
        remote: str,
        pairs: list[tuple[int, int, int]],
        mem: str,
        notif: bytes = b"raw",
        bindings: bool = False,
    ) -> None:
        local = agent.get_xfer_descs([(s, n, 0) for s, _, n in pairs], mem)
        far = agent.get_xfer_descs([(d, n, 0) for _, d, n in pairs], mem)
        self.notif = notif
        self.handle = agent.initialize_xfer("WRITE", local, far, remote, b"raw")
        self.calls = TransferCalls(agent, use_bindings=bindings)
        self.native = self.calls.handle(self.handle)

    def __call__(self) -> None:
        calls, native = self.calls, self.native
        status = calls.start(native, self.notif)
        if status == calls.in_prog:
            status = poll_xfer(lambda: calls.state(native), time.monotonic() + 120, calls.in_prog)
        if status != calls.done:
            raise RuntimeError(f"raw NIXL write failed: {status}")

    def close(self) -> None:
        self.handle.release()


ROTATE_SLOTS = 16  # as many as a sender of ours leases


class _RawRotation:
    """Raw NIXL writing a different slot each time (``--profile``): what moving between slots costs."""

    def __init__(self, writes: list[_RawWrite]) -> None:
        self.writes, self.turn = writes, 0

    def __call__(self) -> None:
        self.turn = (self.turn + 1) % len(self.writes)
        self.writes[self.turn]()

    def close(self) -> None:
        for write in self.writes:
            write.close()


# -- the two processes ----------------------------------------------------------


def sender_main(args: argparse.Namespace, handle: dict, raw_md: bytes, raw_base: int, out: Any) -> None:
    """Child: run every case, put (case, kind, total bytes, times) on ``out``.

    The paths of one case run interleaved, rep by rep, so drifting load on a
    shared machine hits them alike.
    """
    if args.device == "cuda":
        _cuda_context()
    tx = TensorSender(handle)
    marks = _instrument(tx) if args.profile else None
    raw = _raw_agent(f"bench-raw-tx-{os.getpid()}")
    remote = raw.add_remote_agent(raw_md)
    if args.profile:
        edge = EdgeHandle.from_dict(handle)
        ours_rx, rx_top = raw.add_remote_agent(edge.nixl_metadata()), edge.base + edge.capacity
    mem = _mem(args.device)
    for text in args.sizes:
        count, block = parse_case(text)
        total = count * block
        reps = args.repeat if total < (1 << 30) else min(args.repeat, args.repeat_1g)
        pool = _alloc(total * (2 if count > 1 else 1), args.device)
        tx.register(pool)
        raw_reg = raw.register_memory([(_addr(pool), total * (2 if count > 1 else 1), 0, "")], mem)
        paths: dict[str, Any] = {"raw": _RawWrite(raw, remote, [(_addr(pool), raw_base, total)], mem)}
        if args.profile:  # raw with a notification as long as ours: does its size cost?
            paths["raw/notif"] = _RawWrite(raw, remote, [(_addr(pool), raw_base, total)], mem, b"r" * 200)
            paths["raw/bind"] = _RawWrite(raw, remote, [(_addr(pool), raw_base, total)], mem, bindings=True)
            # raw NIXL into our receiver's region (its top end, which leases never reach): does a
            # receiver that is busy taking our sends slow a write down?
            paths["raw/rx"] = _RawWrite(raw, ours_rx, [(_addr(pool), rx_top - total, total)], mem)
            # the same raw write made by our edge's agent: is it the agent, not our code?
            paths["raw/ours"] = _RawWrite(tx._agent._agent, tx._remote, [(_addr(pool), rx_top - total, total)], mem)
            if total * ROTATE_SLOTS <= args.raw_room:  # raw moving on to the next slot each time, as ours does
                slots = [(_addr(pool), raw_base + i * total, total) for i in range(ROTATE_SLOTS)]
                paths["raw/rot"] = _RawRotation([_RawWrite(raw, remote, [slot], mem) for slot in slots])
        if count == 1:
            paths["ours"] = lambda p=pool: tx.send([p], timeout=120)
            paths["ours/prep"] = tx.prepare(pool).send  # described once, as raw's handle is prepared once
        else:
            blocks = pool.reshape(2 * count, block)
            scattered, contiguous = np.arange(count) * 2, np.arange(count)
            per_block = [(_addr(pool) + 2 * i * block, raw_base + i * block, block) for i in range(count)]
            paths["raw/desc"] = _RawWrite(raw, remote, per_block, mem)
            paths["ours"] = lambda b=blocks, i=scattered: tx.send_blocks(b, i, timeout=120)
            paths["ours/contig"] = lambda b=blocks, i=contiguous: tx.send_blocks(b, i, timeout=120)
            # the pool described once, as raw NIXL prepares its descriptor list; a range: one run
            paths["ours/prep"] = lambda p=tx.prepare(blocks), r=range(count): p.send_blocks(r, timeout=120)
            if args.profile:  # the same run as one prepared array: what send_blocks adds to it
                paths["ours/slice"] = tx.prepare(blocks[:count]).send
        times: dict[str, list[float]] = {kind: [] for kind in paths}
        profiled = ("ours", "ours/prep", "ours/contig", "ours/slice")
        phases: dict[str, list[tuple[float, ...]]] = {kind: [] for kind in profiled}
        leased = dict.fromkeys(phases, 0)  # reps whose send had to lease a slot (none set aside while the last moved)
        made = _PREPARED[0]
        if args.order == "interleaved":
            # The order turns each rep: each path follows every other equally often. A send of ours
            # leaves the receiver busy for a while (taking it, freeing the slot, sending the credit),
            # and in a fixed order whatever runs next always paid for it: up to 5 us at 4 MiB.
            kinds = list(paths)
            turns = [kinds[i:] + kinds[:i] for i in range(len(kinds))]
            schedule = [(rep, kind) for rep in range(reps + 1) for kind in turns[rep % len(kinds)]]
        else:
            schedule = [(rep, kind) for kind in paths for rep in range(reps + 1)]
        for rep, kind in schedule:
            run = paths[kind]
            _sync(args.device)
            if marks is not None:
                marks.clear()
            t0 = time.perf_counter()
            run()
            t1 = time.perf_counter()
            if rep:  # rep 0 warms connections and caches
                times[kind].append(t1 - t0)
                if marks and kind in phases:
                    phases[kind].append(_phases(marks, t0, t1))
                    leased[kind] += "lease" in marks
        if marks is not None:
            names = ("describe", "to lease", "lease", "to write", "to post", "meanwhile", "wait", "to return", "return")
            for kind, stamps in phases.items():
                if stamps:
                    cols = "  ".join(f"{n} {statistics.median(p) * 1e6:.1f}" for n, p in zip(names, zip(*stamps)))
                    print(f"profile {text} {kind} (us, median): {cols}  (leased in {leased[kind]} of {len(stamps)})")
            print(f"profile {text}: {_PREPARED[0] - made} transfer handles made")
            us = {kind: statistics.median(times[kind]) * 1e6 for kind in times if kind.startswith("raw")}
            rot = f", into {ROTATE_SLOTS} slots in turn {us['raw/rot']:.1f}" if "raw/rot" in us else ""
            print(
                f"profile {text} raw {us['raw']:.1f} us, with 200 B notif {us['raw/notif']:.1f}{rot}, "
                f"through the bindings {us['raw/bind']:.1f}, into our receiver's region {us['raw/rx']:.1f}, "
                f"by our edge's agent {us['raw/ours']:.1f}"
            )
            if text == args.sizes[0]:
                _profile_calls(paths["ours"], 300)
            if count > 1:
                for kind in ("ours", "ours/contig"):
                    _profile_calls(paths[kind], 40, kind)
        # one more send of each of our paths with a CRC the receiver checks: the fast path moves the right bytes
        if count == 1:
            tx.send([pool], timeout=120, checksum=True)
        else:
            tx.send_blocks(blocks, scattered, timeout=120, checksum=True)
            tx.send_blocks(blocks, contiguous, timeout=120, checksum=True)
        for kind, ts in times.items():
            out.put((text, kind, total, ts))
        for run in paths.values():
            if isinstance(run, (_RawWrite, _RawRotation)):
                run.close()
        tx.unregister(pool)
        raw.deregister_memory(raw_reg)
        del pool, paths
    tx.close()
    out.put(None)


_PREPARED = [0]  # NIXL transfer requests our sender created (the rest were re-posts)


def _instrument(tx: TensorSender) -> dict[str, float]:
    """Time stamps of one send's phases: slot taken, write called, NIXL post, NIXL done (``--profile``)."""
    marks: dict[str, float] = {}
    slots, core = tx._slots, tx._agent._calls
    lease, start, state = slots.lease, core.start, core.state
    write, post = tx._agent.write, tx._agent.post

    def timed_describe(*a: Any, **k: Any) -> Any:
        got = describe(*a, **k)
        marks["described"] = time.perf_counter()
        return got

    def timed_lease(*a: Any, **k: Any) -> Any:
        marks["lease"] = time.perf_counter()
        got = lease(*a, **k)
        marks["slot"] = time.perf_counter()
        return got

    def timed(call: Any) -> Any:
        def timed_call(*a: Any, **k: Any) -> Any:
            marks["write"] = time.perf_counter()
            got = call(*a, **k)
            marks["written"] = time.perf_counter()
            return got

        return timed_call

    def counted_prepare(*a: Any, **k: Any) -> Any:
        _PREPARED[0] += 1
        return prepare(*a, **k)

    prepare = tx._agent._prepare
    tx._agent._prepare = counted_prepare

    def timed_start(handle: Any, notif: bytes) -> Any:
        marks["post"] = time.perf_counter()
        status = start(handle, notif)
        if status != core.in_prog:
            marks["done"] = time.perf_counter()
        return status

    def timed_state(handle: Any) -> Any:
        status = state(handle)
        if status != core.in_prog:
            marks["done"] = time.perf_counter()
        return status

    def timed_meanwhile() -> None:
        meanwhile()
        marks["meanwhile"] = time.perf_counter()

    meanwhile = tx._while_in_flight
    tx._while_in_flight = timed_meanwhile
    slots.lease, core.start, core.state = timed_lease, timed_start, timed_state
    tx._agent.write, tx._agent.post = timed(write), timed(post)
    describe = sender_module.memory.describe
    sender_module.memory.describe = timed_describe
    return marks


def _profile_calls(send: Any, count: int = 300, kind: str = "ours") -> None:
    """Where a stream of our sends spends its time, by function (``--profile``: the first case, and block cases)."""
    import cProfile
    import io
    import pstats
    import timeit

    us = {
        "tuple(range(8))": timeit.timeit(lambda: tuple(range(8)), number=100000) * 10,
        "time.monotonic()": timeit.timeit(time.monotonic, number=100000) * 10,
        "time.perf_counter()": timeit.timeit(time.perf_counter, number=100000) * 10,
    }
    print("python speed here (us): " + ", ".join(f"{k} {v:.2f}" for k, v in us.items()))
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    for _ in range(count):
        send()
    profile.disable()
    print(f"{count} {kind} sends back to back (profiled): {(time.perf_counter() - t0) / count * 1e6:.1f} us each")
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(14)
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-2600:])


def _phases(marks: dict[str, float], t0: float, t1: float) -> tuple[float, ...]:
    described = marks.get("described", t0)
    lease = marks.get("lease", described)
    slot = marks.get("slot", lease)
    write = marks.get("write", slot)
    post = marks.get("post", write)
    busy = marks.get("meanwhile", post)
    done = max(marks.get("done", busy), busy)  # done already when posted: no wait after the meanwhile work
    written = marks.get("written", done)
    stamps = (t0, described, lease, slot, write, post, busy, done, written, t1)
    return tuple(b - a for a, b in zip(stamps, stamps[1:]))


def _drain(rx: TensorReceiver, stop: threading.Event, checks: dict[str, int]) -> None:
    """Receiver loop: take each transfer and free its slot at once; count CRC checks passed and failed."""
    while not stop.is_set():
        try:
            got = rx.recv(timeout=0.2)
        except TransportTimeout:
            continue
        except TransportError as exc:
            checks["failed"] += 1
            print(f"receiver: {exc}", file=sys.stderr)
            continue
        checks["passed"] += got.meta.get("crc") is not None
        got.release()


def ceiling(nbytes: int, device: str, reps: int) -> dict[str, list[float]]:
    """Copy bandwidth without any transport: one process, and (cuda) CUDA IPC."""
    src, dst = _alloc(nbytes, device), _alloc(nbytes, device)
    times = []
    for i in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        if device == "cuda":
            dst.copy_(src)
        else:
            np.copyto(dst, src)
        _sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    result = {"ceiling": times}
    if device == "cuda":
        result["ceiling/ipc"] = _cuda_ipc_times(dst, nbytes, reps)
    return result


def _ipc_child(dst: Any, nbytes: int, reps: int, out: Any) -> None:
    import torch

    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
    times = []
    for i in range(reps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    out.put(times)


def _cuda_ipc_times(dst: Any, nbytes: int, reps: int) -> list[float]:
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_ipc_child, args=(dst, nbytes, reps, out))
    proc.start()
    times = out.get(timeout=300)
    proc.join()
    return times


def _next_result(out: Any, child: Any) -> Any:
    while True:
        try:
            return out.get(timeout=1.0)
        except Exception:  # queue.Empty: check the sender is still alive
            if not child.is_alive():
                raise SystemExit(f"sender process exited with code {child.exitcode}; see its traceback above")


def main(argv: list[str] | None = None) -> None:
    """Run all cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma list: 4M, 1G, 1024x64K (N blocks); default 4M,64M,1G,1024x64K (no 1G on a CPU box of <= 4 cores)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (plus one warm-up)")
    parser.add_argument("--repeat-1g", type=int, default=2, help="cap on runs for cases of 1 GiB or more")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--order",
        choices=("interleaved", "blocked"),
        default="interleaved",
        help="interleaved: the paths take turns, rep by rep, in an order that turns each rep (drift and "
        "the wake of the path before hit all alike); "
        "blocked: each path's reps back to back",
    )
    parser.add_argument("--profile", action="store_true", help="print where our send's time goes, per case")
    args = parser.parse_args(argv)
    if args.sizes is None:
        small_box = args.device == "cpu" and (os.cpu_count() or 1) <= 4
        args.sizes = "4M,64M,1024x64K" if small_box else "4M,64M,1G,1024x64K"
        if small_box:
            print("small CPU box: 1G left out (pass --sizes 4M,64M,1G,1024x64K to add it)")
    args.sizes = [s for s in args.sizes.split(",") if s]
    if args.device == "cuda":
        os.environ.setdefault("UCX_TLS", "cuda_copy,cuda_ipc,tcp,sm,self")
        _cuda_context()

    totals = [parse_case(s)[0] * parse_case(s)[1] for s in args.sizes]
    biggest = max(totals)
    # a sender leases at most half of the region: room for three slots of the biggest case, so the
    # receiver releasing one while the sender writes the next keeps a free one in hand
    rx = TensorReceiver(6 * biggest + (1 << 20), device="cuda:0" if args.device == "cuda" else "cpu")
    raw = _raw_agent(f"bench-raw-rx-{os.getpid()}")
    # --profile: room for raw NIXL to rotate over ROTATE_SLOTS slots of the cases up to 64 MiB
    args.raw_room = max(biggest, ROTATE_SLOTS * max(n for n in totals if n <= 64 << 20)) if args.profile else biggest
    raw_region = _alloc(args.raw_room, args.device)
    raw.register_memory([(_addr(raw_region), args.raw_room, 0, "")], _mem(args.device))
    stop = threading.Event()
    checks = {"passed": 0, "failed": 0}
    drain = threading.Thread(target=_drain, args=(rx, stop, checks), daemon=True)
    drain.start()

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(
        target=sender_main, args=(args, rx.handle().to_dict(), raw.get_agent_metadata(), _addr(raw_region), out)
    )
    child.start()
    results: dict[str, dict[str, tuple[int, list[float]]]] = {}
    while (item := _next_result(out, child)) is not None:
        case, kind, total, times = item
        results.setdefault(case, {})[kind] = (total, times)
    child.join()
    time.sleep(0.5)  # the last notifications may still be on their way
    stop.set()
    drain.join()
    for case in args.sizes:
        count, block = parse_case(case)
        total = count * block
        for kind, times in ceiling(total, args.device, min(args.repeat, 3)).items():
            results[case][kind] = (total, times)
    print_table(results, args, rx.backend)
    print(f"CRC-checked transfers: {checks['passed']} intact, {checks['failed']} failed")
    rx.close()
    if checks["failed"]:
        raise SystemExit("data arrived corrupted")


def print_table(results: dict, args: argparse.Namespace, backend: str) -> None:
    """One row per case: GB/s of each path and the ratios."""

    def gbps(entry: tuple[int, list[float]] | None) -> float:
        return entry[0] / statistics.median(entry[1]) / 1e9 if entry else float("nan")

    tls = os.environ.get("UCX_TLS", "(default)")
    print(f"\nedge backend={backend} device={args.device} repeat={args.repeat} cpus={os.cpu_count()} UCX_TLS={tls}")
    columns = ("ours", "ours/prep", "ours/ctg", "raw", "raw/desc", "ceiling", "ceil/ipc", "ours/raw", "prep/raw")
    head = f"{'case':>10} " + " ".join(f"{c:>8}" for c in columns) + f" {'ours/ceil':>9} {'merge win':>9}"
    print(head + "   (GB/s, median)")
    for case, r in results.items():
        ours, raw, ceil = gbps(r.get("ours")), gbps(r.get("raw")), gbps(r.get("ceiling"))
        per_desc = gbps(r.get("raw/desc"))
        win = f"{ours / per_desc:8.1f}x" if "raw/desc" in r else f"{'':>9}"
        print(
            f"{case:>10} {ours:8.2f} {gbps(r.get('ours/prep')):8.2f} {gbps(r.get('ours/contig')):8.2f} "
            f"{raw:8.2f} {per_desc:8.2f} {ceil:8.2f} "
            f"{gbps(r.get('ceiling/ipc')):8.2f} {ours / raw:8.2f} {gbps(r.get('ours/prep')) / raw:8.2f} "
            f"{ours / ceil:9.2f} {win}"
        )


if __name__ == "__main__":
    main()
