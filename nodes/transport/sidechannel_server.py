"""The receiver's side channel: accepts senders, answers their requests, pushes their credits.

Requests (one JSON frame each, see ``sidechannel``; answered in order)::

    alloc  {id, n, spare, activate}  reserve a slot (``spare``: ahead of need); ``activate``: a slot
                                     reserved ahead is being written now (no id: only that)
    lease  {n, count, agent}         lease slots
    unlease / bye  {leases}          give leases back, ``[offset, writes]`` each (bye: then hang up)
    free   {id}                      give back a slot reserved ahead
    notify {id, meta}                the transfer is in its slot (shared memory)
    data   {id, meta} + its bytes    the transfer itself (TCP)

Between replies the receiver pushes ``{"credit": offset}``: a leased slot is
free again. A connection that closes is how the receiver learns that its
sender is gone.
"""

from __future__ import annotations

import socket
import threading
from typing import Protocol

from .errors import TransportError
from .sidechannel import recv_exact, recv_frame, send_frame
from .transfers import Transfers, Xfer


class Owner(Protocol):
    """What the server needs of its receiver."""

    mem: str

    def region_bytes(self, off: int, n: int) -> memoryview:
        """``n`` bytes of the region at ``off`` (DRAM only), for a TCP sender's data."""

    def peer_gone(self, cid: int, reason: str, graceful: bool) -> None:
        """Connection ``cid`` closed (``graceful``: after saying goodbye)."""


class SideChannelServer:
    """A TCP server with a thread per sender connection.

    Args:
        owner: the receiver.
        transfers: the receiver's book (its ``cond`` also guards the connections).
        host: interface to bind.
        port: port (0 picks a free one).
        name: thread name prefix.
    """

    def __init__(self, owner: Owner, transfers: Transfers, host: str, port: int, name: str) -> None:
        self._owner, self._transfers, self._name = owner, transfers, name
        self._srv = socket.create_server((host, port))
        self.port: int = self._srv.getsockname()[1]
        self._conns: dict[int, socket.socket] = {}
        self._conn_locks: dict[int, threading.Lock] = {}
        self._graceful: set[int] = set()
        self._closed = False
        threading.Thread(target=self._accept_loop, name=name, daemon=True).start()

    def push_credit(self, cid: int, off: int) -> None:
        """Tell the sender its leased slot is free again (it reads credits when it runs out)."""
        conn, lock = self._conns.get(cid), self._conn_locks.get(cid)
        if conn is None or lock is None:
            return  # the sender is gone: peer_gone frees its idle leases
        try:
            with lock:
                send_frame(conn, {"credit": off})
        except OSError:
            pass  # the connection is dying; peer_gone cleans up

    def _accept_loop(self) -> None:
        cid = 0
        while not self._closed:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            cid += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn_locks[cid] = threading.Lock()
            self._conns[cid] = conn
            threading.Thread(target=self._serve, args=(conn, cid), name=f"{self._name}-{cid}", daemon=True).start()

    def _serve(self, conn: socket.socket, cid: int) -> None:
        reason = "connection closed"
        try:
            lock = self._conn_locks[cid]
            while True:
                header = recv_frame(conn)
                reply = self._handle(conn, cid, header)
                with lock:
                    send_frame(conn, reply)
        except (OSError, ValueError, TransportError) as exc:
            reason = str(exc) or type(exc).__name__
        finally:
            with self._transfers.cond:
                self._conns.pop(cid, None)
                self._conn_locks.pop(cid, None)
            conn.close()
            graceful = cid in self._graceful
            self._owner.peer_gone(cid, reason, graceful)
            self._graceful.discard(cid)

    def _handle(self, conn: socket.socket, cid: int, header: dict) -> dict:
        """One request: its reply."""
        transfers = self._transfers
        op, xid = header.get("op"), str(header.get("id", ""))
        if op == "alloc":
            transfers.activate(header.get("activate"), cid)
            if not xid:  # activation only
                return {"ok": True}
            return transfers.reserve(xid, int(header["n"]), cid, spare=bool(header.get("spare")))
        if op == "lease":
            return transfers.lease(cid, int(header["n"]), int(header.get("count", 1)), str(header.get("agent", "")))
        if op in ("unlease", "bye"):
            if op == "bye":
                self._graceful.add(cid)
            transfers.give_back(cid, header.get("leases") or (), free_now=op == "unlease")
            return {"ok": True}
        if op == "free":
            transfers.free_spare(xid, cid)
            return {"ok": True}
        if op in ("data", "notify"):
            meta = header["meta"]
            x = transfers.expecting(xid, cid, meta)
            if not isinstance(x, Xfer):
                return {"ok": False, "msg": x}
            if op == "data":
                if self._owner.mem != "DRAM":
                    return {"ok": False, "msg": "this receiver's region is in VRAM; send over NIXL"}
                recv_exact(conn, self._owner.region_bytes(x.off, int(meta["n"])))
            with transfers.cond:
                transfers.complete(meta)
            return {"ok": True}
        return {"ok": False, "msg": f"unknown side-channel op {op!r}"}

    def close(self) -> None:
        """Stop accepting and cut every connection (their threads then see their senders gone)."""
        self._closed = True
        self._srv.close()
        for conn in list(self._conns.values()):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
