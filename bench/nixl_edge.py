"""Benchmark the tensor edge against raw NIXL and a memory-copy ceiling.

Two processes: the parent receives (our TensorReceiver + a raw NIXL agent with
its own registered region), a spawned child sends. Times are taken in the
sender, from the call until the data is in the receiver's memory and the
notification has been posted; GB/s is the median over ``--repeat`` runs.

    python bench/nixl_edge.py                              # CPU, default sizes
    python bench/nixl_edge.py --sizes 4M,64M,1G,1024x64K --repeat 5
    python bench/nixl_edge.py --device cuda                # on a GPU host, torch needed

Cases per size: ``ours`` (TensorSender.send), ``raw`` (NIXL, one descriptor,
transfer handle prepared once and re-posted), ``ceiling`` (numpy copy in one
process; on cuda a device copy and torch CUDA IPC between processes). A block
case ``NxB`` sends N blocks of B bytes scattered over a pool (every other
block) with ``TensorSender.send_blocks``: ``ours`` gathers them into staging
with one op and sends one descriptor, ``ours/ctg`` sends N consecutive blocks
(coalesced into one descriptor, zero-copy), ``raw/desc`` gives each block its
own descriptor, ``raw`` is one descriptor of the same total. "merge win" is
ours / raw/desc.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from nodes.transport import TensorReceiver, TensorSender, TransportError, TransportTimeout  # noqa: E402
from nodes.transport.nixl_backend import poll_xfer  # noqa: E402

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
    from nixl._api import nixl_agent, nixl_agent_config

    return nixl_agent(name, nixl_agent_config(backends=["UCX"]))


class _RawWrite:
    """One prepared raw NIXL WRITE of ``pairs``, re-posted on each call."""

    def __init__(self, agent: Any, remote: str, pairs: list[tuple[int, int, int]], mem: str) -> None:
        local = agent.get_xfer_descs([(s, n, 0) for s, _, n in pairs], mem)
        far = agent.get_xfer_descs([(d, n, 0) for _, d, n in pairs], mem)
        self.agent = agent
        self.handle = agent.initialize_xfer("WRITE", local, far, remote, b"raw")

    def __call__(self) -> None:
        # Same polling as the edge: a pure spin starves UCX's progress threads on few cores.
        state = self.agent.transfer(self.handle)
        if state == "PROC":
            state = poll_xfer(lambda: self.agent.check_xfer_state(self.handle), time.monotonic() + 120)
        if state != "DONE":
            raise RuntimeError(f"raw NIXL write failed: {state}")

    def close(self) -> None:
        self.handle.release()


# -- the two processes ----------------------------------------------------------


def sender_main(args: argparse.Namespace, handle: dict, raw_md: bytes, raw_base: int, out: Any) -> None:
    """Child: run every case, put (case, kind, total bytes, times) on ``out``.

    The paths of one case run interleaved, rep by rep, so drifting load on a
    shared machine hits them alike.
    """
    if args.device == "cuda":
        _cuda_context()
    tx = TensorSender(handle)
    raw = _raw_agent(f"bench-raw-tx-{os.getpid()}")
    remote = raw.add_remote_agent(raw_md)
    mem = _mem(args.device)
    for text in args.sizes:
        count, block = parse_case(text)
        total = count * block
        reps = args.repeat if total < (1 << 30) else min(args.repeat, args.repeat_1g)
        pool = _alloc(total * (2 if count > 1 else 1), args.device)
        tx.register(pool)
        raw_reg = raw.register_memory([(_addr(pool), total * (2 if count > 1 else 1), 0, "")], mem)
        paths: dict[str, Any] = {"raw": _RawWrite(raw, remote, [(_addr(pool), raw_base, total)], mem)}
        if count == 1:
            paths["ours"] = lambda p=pool: tx.send([p], timeout=120)
        else:
            blocks = pool.reshape(2 * count, block)
            scattered, contiguous = np.arange(count) * 2, np.arange(count)
            per_block = [(_addr(pool) + 2 * i * block, raw_base + i * block, block) for i in range(count)]
            paths["raw/desc"] = _RawWrite(raw, remote, per_block, mem)
            paths["ours"] = lambda b=blocks, i=scattered: tx.send_blocks(b, i, timeout=120)
            paths["ours/contig"] = lambda b=blocks, i=contiguous: tx.send_blocks(b, i, timeout=120)
        times: dict[str, list[float]] = {kind: [] for kind in paths}
        for rep in range(reps + 1):
            for kind, run in paths.items():
                _sync(args.device)
                t0 = time.perf_counter()
                run()
                if rep:  # rep 0 warms connections and caches
                    times[kind].append(time.perf_counter() - t0)
        # one more send of each of our paths with a CRC the receiver checks: the fast path moves the right bytes
        if count == 1:
            tx.send([pool], timeout=120, checksum=True)
        else:
            tx.send_blocks(blocks, scattered, timeout=120, checksum=True)
            tx.send_blocks(blocks, contiguous, timeout=120, checksum=True)
        for kind, ts in times.items():
            out.put((text, kind, total, ts))
        for run in paths.values():
            if isinstance(run, _RawWrite):
                run.close()
        tx.unregister(pool)
        raw.deregister_memory(raw_reg)
        del pool, paths
    tx.close()
    out.put(None)


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

    biggest = max(parse_case(s)[0] * parse_case(s)[1] for s in args.sizes)
    # a sender leases at most half of the region: room for two slots of the biggest case
    rx = TensorReceiver(4 * biggest + (1 << 20), device="cuda:0" if args.device == "cuda" else "cpu")
    raw = _raw_agent(f"bench-raw-rx-{os.getpid()}")
    raw_region = _alloc(biggest, args.device)
    raw.register_memory([(_addr(raw_region), biggest, 0, "")], _mem(args.device))
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
    columns = ("ours", "ours/ctg", "raw", "raw/desc", "ceiling", "ceil/ipc", "ours/raw")
    head = f"{'case':>10} " + " ".join(f"{c:>8}" for c in columns) + f" {'ours/ceil':>9} {'merge win':>9}"
    print(head + "   (GB/s, median)")
    for case, r in results.items():
        ours, raw, ceil = gbps(r.get("ours")), gbps(r.get("raw")), gbps(r.get("ceiling"))
        per_desc = gbps(r.get("raw/desc"))
        win = f"{ours / per_desc:8.1f}x" if "raw/desc" in r else f"{'':>9}"
        print(
            f"{case:>10} {ours:8.2f} {gbps(r.get('ours/contig')):8.2f} {raw:8.2f} {per_desc:8.2f} {ceil:8.2f} "
            f"{gbps(r.get('ceiling/ipc')):8.2f} {ours / raw:8.2f} {ours / ceil:9.2f} {win}"
        )


if __name__ == "__main__":
    main()
