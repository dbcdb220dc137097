"""A mock replica over several hosts: leader/worker wiring as a real engine's multi-node mode has it.

A cluster target starts one process per host of the replica and tells each its
rank and the leader's address (``SG_NODE_RANK``, ``SG_LEADER_HOST``: the slurm
step wrapper and the k8s LeaderWorkerSet set them), as vLLM gets
``--node-rank``/``--master-addr``. Rank 0 is the leader: it serves HTTP and
listens on ``--dist-port``; every other rank joins it there, says who it is,
and serves nothing. The leader's /health answers 503 until every rank has
joined (and again if one leaves), so a target that waits for health waits for
the whole replica. Without ``SG_LEADER_HOST`` (``graph run``: one host) the one
process stands for every rank.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("nodes.mock")

RANK_VAR = "SG_NODE_RANK"
LEADER_VAR = "SG_LEADER_HOST"
#: How long a worker keeps trying to reach its leader (the leader may start later on its host).
JOIN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Ranks:
    """This process's place in its replica."""

    nnodes: int
    rank: int
    leader_host: str
    dist_port: int

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def ranks_from_env(nnodes: int, dist_port: int | None, env: dict[str, str] | None = None) -> Ranks | None:
    """This process's ranks, or None when it stands for the whole replica (one node, or no leader given).

    Raises:
        SystemExit: several nodes and a leader, but no dist port or a bad rank.
    """
    env = dict(os.environ) if env is None else env
    if nnodes <= 1 or not env.get(LEADER_VAR):
        return None
    if dist_port is None:
        raise SystemExit("nodes.mock: --nnodes > 1 needs --dist-port (the port rank 0 listens on for the others)")
    try:
        rank = int(env.get(RANK_VAR, "0"))
    except ValueError:
        raise SystemExit(f"nodes.mock: ${RANK_VAR}={env.get(RANK_VAR)!r} is not a rank") from None
    if not 0 <= rank < nnodes:
        raise SystemExit(f"nodes.mock: rank {rank} is outside 0..{nnodes - 1} (--nnodes {nnodes})")
    return Ranks(nnodes=nnodes, rank=rank, leader_host=env[LEADER_VAR], dist_port=dist_port)


class LeaderGate:
    """The leader's side: accepts the other ranks on the dist port and says whether all are there."""

    def __init__(self, ranks: Ranks, bind_host: str) -> None:
        self.ranks = ranks
        self._joined: dict[int, str] = {}
        self._lock = threading.Lock()
        self._server = socket.create_server((bind_host, ranks.dist_port), reuse_port=False)
        threading.Thread(target=self._accept, name="mock-dist", daemon=True).start()

    @property
    def ready(self) -> bool:
        """Every other rank has joined and is still connected."""
        with self._lock:
            return len(self._joined) == self.ranks.nnodes - 1

    def state(self) -> dict[str, Any]:
        """What /health and /mock/nodes report: the leader and the ranks that joined, with their hosts."""
        with self._lock:
            joined = [{"rank": r, "host": h} for r, h in sorted(self._joined.items())]
        return {"nnodes": self.ranks.nnodes, "leader": {"rank": 0, "host": socket.gethostname()}, "joined": joined}

    def _accept(self) -> None:
        while True:
            conn, peer = self._server.accept()
            threading.Thread(target=self._member, args=(conn, peer), daemon=True).start()

    def _member(self, conn: socket.socket, peer: Any) -> None:
        with conn:
            try:
                hello = json.loads(conn.makefile("r").readline())
                rank, host = int(hello["rank"]), str(hello["host"])
            except (ValueError, KeyError, TypeError, OSError):
                log.warning("dist port: %s sent no valid hello; dropped", peer)
                return
            with self._lock:
                self._joined[rank] = host
            log.warning("rank %d joined from %s (%s)", rank, host, peer[0])
            conn.sendall(b"welcome\n")
            while conn.recv(1):  # held until the worker goes away
                pass
            with self._lock:
                self._joined.pop(rank, None)
            log.warning("rank %d on %s left", rank, host)


def run_worker(ranks: Ranks, name: str) -> None:
    """A rank other than 0: join the leader, then stay until it goes away (exit 1 then).

    Raises:
        SystemExit: always; 1 when the leader could not be reached or went away.
    """
    print(f"nodes.mock {name}: rank {ranks.rank} of {ranks.nnodes}, joining {ranks.leader_host}:{ranks.dist_port}",
          file=sys.stderr, flush=True)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        try:
            conn = socket.create_connection((ranks.leader_host, ranks.dist_port), timeout=5)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"nodes.mock {name}: leader {ranks.leader_host}:{ranks.dist_port} not reachable "
                                 f"for {JOIN_TIMEOUT_S:.0f}s ({exc})") from None
            time.sleep(0.5)
    with conn:
        conn.settimeout(None)
        conn.sendall((json.dumps({"rank": ranks.rank, "host": socket.gethostname()}) + "\n").encode())
        reply = conn.makefile("r").readline().strip()
        print(f"nodes.mock {name}: rank {ranks.rank} joined ({reply or 'no reply'})", file=sys.stderr, flush=True)
        while conn.recv(1):
            pass
    raise SystemExit(f"nodes.mock {name}: leader {ranks.leader_host} went away; rank {ranks.rank} stops")
