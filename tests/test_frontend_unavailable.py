"""The frontend when replicas are down (unit level): a replica that failed sits out and is then
probed by one request; a stage with every replica down fails at once with a 503 and Retry-After;
upstream sockets notice a dead host (keepalive, TCP_USER_TIMEOUT). The same end to end, on a real
Slurm, is in tests/test_e2e_slurm_healing.py."""

from __future__ import annotations

import asyncio
import socket

import pytest

from graph.plan import StageConfig, Upstream
from nodes.frontend import routing
from nodes.frontend.routing import ALONE_PROBE_S, DOWN_FOR_S, RoundRobin
from nodes.frontend.stage import StageRuntime
from nodes.frontend.upstream import DEAD_PEER_S, Unavailable, UpstreamError, _detect_dead_peer


class Clock:
    """routing's view of time, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(routing, "time", type("T", (), {"monotonic": staticmethod(c)}))
    return c


def ups(n: int) -> list[Upstream]:
    return [Upstream(service=f"d-{i}", url=f"http://h{i}:1") for i in range(n)]


def test_a_failed_replica_sits_out_then_one_request_probes_it(clock: Clock) -> None:
    rr = RoundRobin(ups(2))
    rr.failed(rr.upstreams[1])
    assert {rr.pick().service for _ in range(10)} == {"d-0"} and rr.retry_in() is None
    clock.now += DOWN_FOR_S
    picks = [rr.pick().service for _ in range(10)]
    assert picks.count("d-1") == 1, f"one probe per period, not every request: {picks}"
    rr.recovered(rr.upstreams[1])
    assert {rr.pick().service for _ in range(4)} == {"d-0", "d-1"}


def test_a_stage_with_every_replica_down_says_when_to_retry_and_probes_every_second(clock: Clock) -> None:
    rr = RoundRobin(ups(1))
    assert rr.retry_in() is None
    rr.failed(rr.upstreams[0])
    assert rr.retry_in() == pytest.approx(ALONE_PROBE_S)
    clock.now += ALONE_PROBE_S / 2
    assert rr.retry_in() == pytest.approx(ALONE_PROBE_S / 2)
    clock.now += ALONE_PROBE_S / 2
    assert rr.retry_in() is None, "the probe is due"
    assert rr.pick().service == "d-0"
    assert rr.retry_in() == pytest.approx(ALONE_PROBE_S), "one probe at a time; the others still fail fast"
    rr.recovered(rr.upstreams[0])
    assert rr.retry_in() is None
    assert rr.down() == []


def test_all_down_callers_that_must_pick_still_get_a_replica(clock: Clock) -> None:
    rr = RoundRobin(ups(2))
    for u in rr.upstreams:
        rr.failed(u)
    assert rr.retry_in() is not None
    assert rr.pick().service in {"d-0", "d-1"}


def _stage(n: int) -> StageRuntime:
    return StageRuntime(StageConfig(stage="decode", node="decode", role="decode", protocol="vllm", upstreams=ups(n)))


def test_with_every_replica_down_the_stage_fails_at_once_with_503_and_retry_after() -> None:
    stage = _stage(1)
    calls: list[str] = []

    async def refused(u: Upstream) -> None:
        calls.append(u.service)
        raise UpstreamError(u.service, "unreachable (ConnectionRefused)")

    with pytest.raises(UpstreamError, match="unreachable"):
        asyncio.run(stage.with_failover(refused))
    with pytest.raises(Unavailable) as down:
        asyncio.run(stage.with_failover(refused))
    assert calls == ["d-0"], "a replica known down is not called again before its probe"
    err = down.value
    assert err.status == 503 and err.server_side and err.service == "decode"
    assert err.headers == [(b"retry-after", b"1")]
    assert "no replica can take a request now (d-0 could not be reached and is tried again shortly); retry in 1 s" \
        in str(err)


def test_a_replica_down_fails_over_to_the_other_without_calling_it() -> None:
    stage = _stage(2)
    stage.picker.failed(stage.picker.upstreams[0])
    calls: list[str] = []

    async def answer(u: Upstream) -> str:
        calls.append(u.service)
        return "ok"

    assert [asyncio.run(stage.with_failover(answer)) for _ in range(3)] == ["ok"] * 3
    assert calls == ["d-1"] * 3


def test_upstream_sockets_notice_a_dead_peer() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        _detect_dead_peer(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == DEAD_PEER_S * 1000
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2
    finally:
        sock.close()
