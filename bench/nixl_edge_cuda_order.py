"""The tensor edge never takes UCX's software path for VRAM: CUDA comes before its NIXL agent (issue 22).

One GPU, four processes: this one receives (a TensorReceiver of 1 GiB of
VRAM; the edge makes the CUDA context, then its agent), and three senders,
each a fresh interpreter:

* edge first (torch imported, no CUDA used yet): ``TensorSender(handle)``
  first (the edge makes the CUDA context, then starts its agent), then a
  256 MiB tensor is registered and sent, ``prepare(buf).send()``, median of
  ``--repeat``;
* agent first: the process's agent is started before torch is imported (no
  CUDA in the process), the receiver's metadata is loaded, then the 256 MiB
  tensor is made: registering it with the edge must be refused, and raw NIXL
  through that same agent (which does not ask) writes it into the receiver's
  region, median of 3. Twice: the receiver loaded by the edge
  (``TensorSender(handle)``: it makes CUDA ready first, the receiver being
  VRAM), and by raw NIXL before CUDA (the software path the refusal keeps a
  caller from).

    python bench/nixl_edge_cuda_order.py      # a GPU host with torch and nixl

Exits non-zero unless the edge's sends are fast (> 50 GB/s, also raw NIXL to a receiver the edge
loaded) and the agent that started without CUDA refuses VRAM.
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

from nodes.transport import TensorReceiver, TensorSender, TransportError, TransportTimeout  # noqa: E402

NBYTES = 256 << 20
CAPACITY = 1 << 30  # leases take at most half: the top NBYTES are raw NIXL's to write


def edge_first(handle: dict, repeat: int, out: Any) -> None:
    """Sender: torch imported, no CUDA yet; the edge starts CUDA, then its agent."""
    import torch

    tx = TensorSender(handle)
    buf = torch.full((NBYTES,), 7, dtype=torch.uint8, device="cuda")
    tx.register(buf)
    prepared, times = tx.prepare(buf), []
    for rep in range(repeat + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        prepared.send(timeout=120)
        if rep:  # rep 0: first contact
            times.append(time.perf_counter() - t0)
    out.put(("edge first", tx._agent.cuda, NBYTES / statistics.median(times) / 1e9, len(times)))
    tx.close()


def agent_first(handle: dict, edge_loads: bool, out: Any) -> None:
    """Sender: the edge's agent started before torch (so before CUDA), the receiver loaded by the
    edge (``edge_loads``) or by raw NIXL, then VRAM."""
    from bench.nixl_edge_baselines import RawWrite
    from nodes.transport import EdgeHandle
    from nodes.transport.nixl_backend import process_agent

    agent, edge, tx = process_agent(), EdgeHandle.from_dict(handle), None
    if edge_loads:
        tx = TensorSender(handle)
        remote = tx._remote
    else:
        remote = agent._agent.add_remote_agent(edge.nixl_metadata())
    import torch

    buf = torch.full((NBYTES,), 7, dtype=torch.uint8, device="cuda")
    try:
        agent.deregister(agent.register(buf.data_ptr(), NBYTES, "VRAM", 0))
        refused = ""
    except TransportError as exc:
        refused = str(exc)
    # the same agent, asked by raw NIXL (which does not check), writes into the region's top
    reg = agent._agent.register_memory([(buf.data_ptr(), NBYTES, 0, "")], "VRAM")
    top = edge.base + edge.capacity - NBYTES
    write, times = RawWrite(agent._agent, remote, [(buf.data_ptr(), top, NBYTES)], "VRAM"), []
    for rep in range(4):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        write()
        if rep:
            times.append(time.perf_counter() - t0)
    write.close()
    agent._agent.deregister_memory(reg)
    out.put(("agent first", agent.cuda, refused, NBYTES / statistics.median(times) / 1e9, edge_loads))
    if tx is not None:
        tx.close()


def _drain(rx: TensorReceiver, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            rx.recv(timeout=0.2).release()
        except TransportTimeout:
            continue


def main(argv: list[str] | None = None) -> None:
    """Run both senders against one receiver and print what each saw."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed sends of the first sender (plus one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("UCX_TLS", "cuda_copy,cuda_ipc,tcp,sm,self")
    rx = TensorReceiver(CAPACITY, device="cuda:0")
    stop = threading.Event()
    drain = threading.Thread(target=_drain, args=(rx, stop), daemon=True)
    drain.start()
    ctx, ok = mp.get_context("spawn"), True
    for target, extra in ((edge_first, (args.repeat,)), (agent_first, (True,)), (agent_first, (False,))):
        out = ctx.Queue()
        child = ctx.Process(target=target, args=(rx.handle().to_dict(), *extra, out))
        child.start()
        got = out.get(timeout=300)
        child.join(60)
        if got[0] == "edge first":
            _, cuda, gbps, n = got
            print(f"edge first: agent started with CUDA up: {cuda}; 256 MiB VRAM->VRAM, prepare(buf).send(): "
                  f"{gbps:.1f} GB/s (median of {n})")
            ok &= cuda and gbps > 50
        else:
            _, cuda, refused, gbps, edge_loads = got
            how = "by the edge (CUDA made first)" if edge_loads else "by raw NIXL before CUDA"
            print(f"agent first, receiver loaded {how}: agent started with CUDA up: {cuda}; registering "
                  f"256 MiB of VRAM with the edge: {'refused: ' + refused if refused else 'ACCEPTED'}")
            print(f"agent first, receiver loaded {how}: raw NIXL through that agent (no check), "
                  f"256 MiB VRAM->VRAM: {gbps:.2f} GB/s (median of 3)")
            ok &= not cuda and bool(refused) and (gbps > 50 or not edge_loads)
    stop.set()
    drain.join()
    print(f"UCX_TLS={os.environ['UCX_TLS']}")
    rx.close()
    if not ok:
        raise SystemExit("CUDA-first order not held: see above")


if __name__ == "__main__":
    main()
