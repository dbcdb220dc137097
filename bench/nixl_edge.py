"""Benchmark the tensor edge against raw NIXL and a memory-copy ceiling.

Two processes: the parent receives (our TensorReceiver + a raw NIXL agent with
its own registered region), a spawned child sends. Times are taken in the
sender, from the call until the data is in the receiver's memory and the
notification has been posted; GB/s is the median over ``--repeat`` runs.

    python bench/nixl_edge.py                              # CPU, default sizes
    python bench/nixl_edge.py --sizes 4M,64M,1G,1024x64K --repeat 5
    python bench/nixl_edge.py --device cuda                # on a GPU host, torch needed

On cuda neither process makes a CUDA context itself: our edge does, before
its NIXL agent (``nodes/transport/cuda_first.py``), and the raw agents start
after it. Had the edge started its agent first, its VRAM would move through
UCX's software path (~0.5 GB/s): the table shows it did not.

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

After the timed runs of a case each of our paths sends once more, through
the same call, with a CRC the receiver checks; the next case starts once the
receiver has checked them (so its CRC work, ~0.3-0.5 s a GiB, does not hold
up the next case's sends: a sender whose leased slots all wait to be
released waits too), and the run fails unless every one arrived intact.
Both processes print the UCX settings their NIXL agents ran with, and the
sender the GPU and library versions. Per case, the most one timed send of
each of our paths spent leasing slots and registering is printed (issue 22:
after the first contact, none may spend more than 1 ms; rep 0 is that
contact). The receiver's region
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
import socket
import statistics
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.nixl_edge_baselines import (  # noqa: E402
    ROTATE_SLOTS,
    RawRotation,
    RawWrite,
    addr,
    alloc,
    ceiling,
    mem_kind,
    raw_agent,
    sync,
)
from bench.nixl_edge_profile import (  # noqa: E402
    PREPARED,
    LeaseMeter,
    instrument,
    lease_report,
    phases_of,
    profile_calls,
    report,
)
from nodes.transport import EdgeHandle, TensorReceiver, TensorSender, TransportError, TransportTimeout  # noqa: E402
from nodes.transport.nixl_backend import PROGRESS_DELAY_US  # noqa: E402

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


# -- the two processes ----------------------------------------------------------


def sender_main(
    args: argparse.Namespace, handle: dict, raw_md: bytes, raw_base: int, checked: Any, out: Any
) -> None:
    """Child: run every case, put ("result", case, kind, total bytes, times) and ("lease", line)
    on ``out``, then ("crc", transfers sent with a CRC).

    The paths of one case run interleaved, rep by rep, so drifting load on a
    shared machine hits them alike. ``checked`` counts the CRC'd transfers the
    receiver has checked.
    """
    if args.sender_host:
        from tests.multihost import enter_host

        enter_host(args.sender_host)
    tx = TensorSender(handle)  # a VRAM receiver: the edge makes the CUDA context, then its agent
    out.put(("ucx", "sender", ucx_settings()))
    out.put(("versions", versions(args.device)))
    crc_sent = 0
    meter = LeaseMeter(tx)
    marks = instrument(tx) if args.profile else None
    raw = raw_agent(f"bench-raw-tx-{os.getpid()}")
    remote = raw.add_remote_agent(raw_md)
    if args.profile:
        edge = EdgeHandle.from_dict(handle)
        ours_rx, rx_top = raw.add_remote_agent(edge.nixl_metadata()), edge.base + edge.capacity
    mem = mem_kind(args.device)
    for text in args.sizes:
        count, block = parse_case(text)
        total = count * block
        reps = args.repeat if total < (1 << 30) else min(args.repeat, args.repeat_1g)
        pool = alloc(total * (2 if count > 1 else 1), args.device)
        tx.register(pool)
        raw_reg = raw.register_memory([(addr(pool), total * (2 if count > 1 else 1), 0, "")], mem)
        paths: dict[str, Any] = {"raw": RawWrite(raw, remote, [(addr(pool), raw_base, total)], mem)}
        if args.profile:  # raw with a notification as long as ours: does its size cost?
            paths["raw/notif"] = RawWrite(raw, remote, [(addr(pool), raw_base, total)], mem, b"r" * 200)
            paths["raw/bind"] = RawWrite(raw, remote, [(addr(pool), raw_base, total)], mem, bindings=True)
            # raw NIXL into our receiver's region (its top end, which leases never reach): does a
            # receiver that is busy taking our sends slow a write down?
            paths["raw/rx"] = RawWrite(raw, ours_rx, [(addr(pool), rx_top - total, total)], mem)
            # the same raw write made by our edge's agent: is it the agent, not our code?
            paths["raw/ours"] = RawWrite(tx._agent._agent, tx._remote, [(addr(pool), rx_top - total, total)], mem)
            if total * ROTATE_SLOTS <= args.raw_room:  # raw moving on to the next slot each time, as ours does
                slots = [(addr(pool), raw_base + i * total, total) for i in range(ROTATE_SLOTS)]
                paths["raw/rot"] = RawRotation([RawWrite(raw, remote, [slot], mem) for slot in slots])
        # our paths take checksum=True for their CRC-checked send after the timed ones
        if count == 1:
            paths["ours"] = lambda p=pool, checksum=False: tx.send([p], timeout=120, checksum=checksum)
            paths["ours/prep"] = tx.prepare(pool).send  # described once, as raw's handle is prepared once
        else:
            blocks = pool.reshape(2 * count, block)
            scattered, contiguous = np.arange(count) * 2, np.arange(count)
            per_block = [(addr(pool) + 2 * i * block, raw_base + i * block, block) for i in range(count)]
            paths["raw/desc"] = RawWrite(raw, remote, per_block, mem)
            paths["ours"] = lambda b=blocks, i=scattered, checksum=False: tx.send_blocks(
                b, i, timeout=120, checksum=checksum
            )
            paths["ours/contig"] = lambda b=blocks, i=contiguous, checksum=False: tx.send_blocks(
                b, i, timeout=120, checksum=checksum
            )
            # the pool described once, as raw NIXL prepares its descriptor list; a range: one run
            paths["ours/prep"] = lambda p=tx.prepare(blocks), r=range(count), checksum=False: p.send_blocks(
                r, timeout=120, checksum=checksum
            )
            if args.profile:  # the same run as one prepared array: what send_blocks adds to it
                paths["ours/slice"] = tx.prepare(blocks[:count]).send
        times: dict[str, list[float]] = {kind: [] for kind in paths}
        profiled = ("ours", "ours/prep", "ours/contig", "ours/slice")
        phases: dict[str, list[tuple[float, ...]]] = {kind: [] for kind in profiled}
        leased = dict.fromkeys(phases, 0)  # reps whose send had to lease a slot (none set aside while the last moved)
        spent: dict[str, list[dict[str, float]]] = {kind: [] for kind in paths if kind.startswith("ours")}
        made = PREPARED[0]
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
            sync(args.device)
            if marks is not None:
                marks.clear()
            meter.take()
            t0 = time.perf_counter()
            run()
            t1 = time.perf_counter()
            if rep:  # rep 0 warms connections and caches
                times[kind].append(t1 - t0)
                if kind in spent:
                    spent[kind].append(meter.take())
                if marks and kind in phases:
                    phases[kind].append(phases_of(marks, t0, t1))
                    leased[kind] += "lease" in marks
        if marks is not None:
            report(text, phases, leased, PREPARED[0] - made, times)
            if text == args.sizes[0]:
                profile_calls(paths["ours"], max(10, min(300, (1 << 30) // total)), array=pool)  # <= ~1 GiB moved
            if count > 1:
                for kind in ("ours", "ours/contig"):
                    profile_calls(paths[kind], 40, kind)
        # one more send of each of our paths with a CRC the receiver checks: each moves the right bytes
        ours = [kind for kind in paths if kind.startswith("ours")]
        for kind in ours:
            paths[kind](checksum=True)
        crc_sent += len(ours)
        _await_checks(checked, crc_sent)
        for kind, ts in times.items():
            out.put(("result", text, kind, total, ts))
        out.put(("lease", lease_report(text, spent)))
        for run in paths.values():
            if isinstance(run, (RawWrite, RawRotation)):
                run.close()
        tx.unregister(pool)
        raw.deregister_memory(raw_reg)
        del pool, paths
    tx.close()
    out.put(("crc", crc_sent))
    out.put(None)


def _await_checks(checked: Any, count: int, timeout: float = 600.0) -> None:
    """Wait until the receiver has checked ``count`` CRC'd transfers (1 GiB: ~0.3-0.5 s of CRC)."""
    deadline = time.monotonic() + timeout
    while checked.value < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the receiver checked {checked.value} of {count} CRC'd transfers in {timeout:.0f} s")
        time.sleep(1e-3)


def versions(device: str) -> str:
    """The GPU (cuda) and the versions of what moves the bytes."""
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    names = ("nixl", "nixl-cu13", "nixl-cu12", "numpy") + (("torch",) if device == "cuda" else ())
    found = [f"{name} {v}" for name in names if (v := version(name))]
    if device == "cuda":
        import torch

        found.insert(0, f"GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    return ", ".join(found)


def ucx_settings() -> str:
    """The UCX settings this process's NIXL agents run with: UCX_* variables and the progress delay."""
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("UCX_"))
    return f"{env or '(no UCX_* set: UCX defaults)'}; NIXL progress thread delay {PROGRESS_DELAY_US} us"


def _drain(rx: TensorReceiver, stop: threading.Event, checks: dict[str, int], checked: Any) -> None:
    """Receiver loop: take each transfer and free its slot at once; count CRC checks passed and
    failed (``checked``, shared with the sender, counts both)."""
    while not stop.is_set():
        try:
            got = rx.recv(timeout=0.2)
        except TransportTimeout:
            continue
        except TransportError as exc:
            checks["failed"] += 1
            print(f"receiver: {exc}", file=sys.stderr)
        else:
            crc = got.meta.get("crc") is not None
            got.release()
            if not crc:
                continue
            checks["passed"] += 1
        with checked.get_lock():
            checked.value += 1


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
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per case (plus one warm-up)")
    parser.add_argument("--repeat-1g", type=int, default=10, help="cap on runs for cases of 1 GiB or more")
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
    parser.add_argument("--sender-host", metavar="HOST",
                        help="run the sender inside HOST of the multi-host bed, the receiver where this command "
                        "runs, itself inside another host: scripts/multihost.sh exec sg-h1 -- python "
                        "bench/nixl_edge.py --sender-host sg-h2. UCX over TCP only (UCX_TLS=tcp,self): the bed's "
                        "hosts share one kernel, and UCX would take shared memory")
    args = parser.parse_args(argv)
    if args.sizes is None:
        small_box = args.device == "cpu" and (os.cpu_count() or 1) <= 4
        args.sizes = "4M,64M,1024x64K" if small_box else "4M,64M,1G,1024x64K"
        if small_box:
            print("small CPU box: 1G left out (pass --sizes 4M,64M,1G,1024x64K to add it)")
    args.sizes = [s for s in args.sizes.split(",") if s]
    if args.device == "cuda":  # no CUDA context made here: the receiver's edge makes it (see above)
        os.environ.setdefault("UCX_TLS", "cuda_copy,cuda_ipc,tcp,sm,self")

    totals = [parse_case(s)[0] * parse_case(s)[1] for s in args.sizes]
    biggest = max(totals)
    # a sender leases at most half of the region: room for three slots of the biggest case, so the
    # receiver releasing one while the sender writes the next keeps a free one in hand
    listen = {}
    if args.sender_host:
        listen = {"host": "0.0.0.0", "advertise_host": socket.gethostname()}
        os.environ.setdefault("UCX_TLS", "tcp,self")
    rx = TensorReceiver(6 * biggest + (1 << 20), device="cuda:0" if args.device == "cuda" else "cpu", **listen)
    raw = raw_agent(f"bench-raw-rx-{os.getpid()}")
    # --profile: room for raw NIXL to rotate over ROTATE_SLOTS slots of the cases up to 64 MiB (if any)
    rotated = max((n for n in totals if n <= 64 << 20), default=0) if args.profile else 0
    args.raw_room = max(biggest, ROTATE_SLOTS * rotated)
    raw_region = alloc(args.raw_room, args.device)
    raw.register_memory([(addr(raw_region), args.raw_room, 0, "")], mem_kind(args.device))
    ctx = mp.get_context("spawn")
    stop = threading.Event()
    checks, checked = {"passed": 0, "failed": 0}, ctx.Value("i", 0)
    drain = threading.Thread(target=_drain, args=(rx, stop, checks, checked), daemon=True)
    drain.start()

    out = ctx.Queue()
    child = ctx.Process(
        target=sender_main,
        args=(args, rx.handle().to_dict(), raw.get_agent_metadata(), addr(raw_region), checked, out),
    )
    child.start()
    results: dict[str, dict[str, tuple[int, list[float]]]] = {}
    settings = {"receiver": ucx_settings()}
    crc_sent, lease_lines, versions_line = 0, [], ""
    while (item := _next_result(out, child)) is not None:
        if item[0] == "result":
            _, case, kind, total, times = item
            results.setdefault(case, {})[kind] = (total, times)
        elif item[0] == "ucx":
            settings[item[1]] = item[2]
        elif item[0] == "lease":
            lease_lines.append(item[1])
        elif item[0] == "versions":
            versions_line = item[1]
        else:
            crc_sent = item[1]
    child.join()
    stop.set()  # the sender waited for every CRC check of its cases: nothing is left on its way
    drain.join()
    for case in args.sizes:
        count, block = parse_case(case)
        total = count * block
        for kind, times in ceiling(total, args.device, min(args.repeat, 3)).items():
            results[case][kind] = (total, times)
    print_table(results, args, rx.backend)
    print(f"ran on: {versions_line}")
    print("\n".join(lease_lines))
    for side, text in settings.items():
        print(f"UCX settings of the {side}'s agents: {text}")
    print(f"CRC-checked transfers: {checks['passed']} of {crc_sent} intact, {checks['failed']} failed")
    rx.close()
    if checks["failed"] or checks["passed"] != crc_sent:
        raise SystemExit("data arrived corrupted, or a CRC-checked transfer never arrived")


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
