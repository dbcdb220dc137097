"""One end of the tensor edge as a program, to run inside a host of the multi-host bed.

    python -m tests.edge_peer receive --capacity BYTES --bind ADDR
        prints {"handle", "backend", "host"}; then for each {"xfer_id"} line read on stdin,
        receives that transfer and prints {"xfer_id", "host", "arrays": [{dtype, shape, sha256}]}
    python -m tests.edge_peer send
        reads {"handle", "cases"} from stdin, prints {"backend", "host"}, then sends each case
        and prints {"ticket"}; a case is {"arrays": [{nbytes, dtype, seed}]} or {"blocks": [ids]}
        (blocks of ``block_pool()``)

Protocol lines start with ``PREFIX`` (NIXL logs to stdout too). The checker rebuilds the
data with ``pattern``/``block_pool`` and compares digests: the peers never judge themselves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
from typing import Any

import numpy as np

PREFIX = "edge_peer "


def pattern(nbytes: int, dtype: str, seed: int) -> np.ndarray:
    """Deterministic test data of ``nbytes`` bytes that every process can rebuild."""
    return np.frombuffer(np.random.default_rng(seed).bytes(nbytes), dtype=dtype)


def block_pool() -> np.ndarray:
    """A KV-like pool: 512 blocks of 32 x 64 float16 (4 KiB each)."""
    return pattern(512 * 4096, "float16", 7).reshape(512, 32, 64)


def digest(array: np.ndarray) -> dict:
    """What the checker compares: dtype, shape and the bytes' SHA-256."""
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "sha256": hashlib.sha256(np.ascontiguousarray(array).view(np.uint8)).hexdigest(),
    }


def emit(message: dict) -> None:
    print(PREFIX + json.dumps(message), flush=True)


def read_message(stream: Any) -> dict | None:
    """The next protocol line's message (other lines are skipped), None at EOF."""
    for line in stream:
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX) :])
    return None


def receive(capacity: int, bind: str) -> None:
    from nodes.transport import TensorReceiver

    host = socket.gethostname()
    with TensorReceiver(capacity, host=bind, advertise_host=host) as rx:
        emit({"handle": rx.handle().to_dict(), "backend": rx.backend, "host": host})
        for line in sys.stdin:
            xfer_id = json.loads(line)["xfer_id"]
            with rx.recv(xfer_id, timeout=60) as got:
                emit({"xfer_id": xfer_id, "host": host, "arrays": [digest(a) for a in got.arrays]})


def send() -> None:
    from nodes.transport import TensorSender

    request = json.loads(sys.stdin.readline())
    with TensorSender(request["handle"]) as tx:
        emit({"backend": tx.backend, "host": socket.gethostname()})
        pool = block_pool()
        tx.register(pool)
        for case in request["cases"]:
            if "blocks" in case:
                ticket = tx.send_blocks(pool, case["blocks"], timeout=60, checksum=True)
            else:
                arrays = [pattern(a["nbytes"], a["dtype"], a["seed"]) for a in case["arrays"]]
                ticket = tx.send(arrays, timeout=60, checksum=True)
            emit({"ticket": ticket.to_dict()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    rx = sub.add_parser("receive")
    rx.add_argument("--capacity", type=int, required=True)
    rx.add_argument("--bind", default="0.0.0.0", help="address the side channel listens on")
    sub.add_parser("send")
    args = parser.parse_args()
    if args.role == "receive":
        receive(args.capacity, args.bind)
    else:
        send()


if __name__ == "__main__":
    main()
