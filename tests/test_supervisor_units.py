"""The supervisor's small parts: placeholders, the port check, the health probe."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from graph.plan import HealthCheck, Plan, Service
from nodes.supervisor import PortInUseError, check_ports
from nodes.supervisor.env import PlaceholderError, child_argv, child_env
from nodes.supervisor.health import probe
from tests.fakes.harness import free_ports


def _service(name: str, ports: dict[str, int], argv: list[str] | None = None, env: dict[str, str] | None = None,
             depends_on: tuple[str, ...] = ()) -> Service:
    return Service(name=name, node=name.rsplit("-", 1)[0], role="worker", argv=argv or ["true"], env=env or {},
                   ports=ports, health=HealthCheck(port=ports["http"]), depends_on=list(depends_on))


def _plan(*services: Service) -> Plan:
    return Plan(graph="g", shape="test", services=list(services), frontend=services[-1].name, url="http://x")


def test_placeholders_in_argv_and_env_are_expanded() -> None:
    decode = _service("decode-0", {"http": 8101},
                      argv=["engine", "--peer", "http://${SG_HOST_PREFILL_0}:8100", "--me=${SG_SELF_HOST}"],
                      env={"SIDE_HOST": "${SG_SELF_HOST}", "PLAIN": "x"})
    plan = _plan(_service("prefill-0", {"http": 8100}), decode)
    env = child_env(plan, decode, "127.0.0.1", base={"PATH": "/bin"})
    assert env["SIDE_HOST"] == "127.0.0.1" and env["PLAIN"] == "x" and env["PATH"] == "/bin"
    assert env["SG_HOST_PREFILL_0"] == "127.0.0.1" and env["PYTHONUNBUFFERED"] == "1"
    assert child_argv(decode, env) == ["engine", "--peer", "http://127.0.0.1:8100", "--me=127.0.0.1"]


def test_unknown_placeholder_names_service_and_variable() -> None:
    svc = _service("decode-0", {"http": 1}, argv=["engine", "${NOPE}"])
    env = child_env(_plan(svc), svc, "127.0.0.1", base={})
    with pytest.raises(PlaceholderError, match=r"service decode-0: \$\{NOPE\}"):
        child_argv(svc, env)


def test_port_check_names_service_port_and_owner() -> None:
    free, taken = free_ports(2)
    plan = _plan(_service("worker-0", {"http": free}), _service("frontend-0", {"http": taken, "metrics": free}))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with pytest.raises(PortInUseError) as info:
            check_ports(plan)
    described = [c.describe() for c in info.value.conflicts]
    assert described == [
        f"frontend-0 needs port {taken} (http): already in use by pid {os.getpid()} ({_comm()})",
        f"frontend-0 needs port {free} (metrics): also claimed by worker-0 in the Plan",
    ]


def test_port_check_passes_on_free_ports() -> None:
    a, b = free_ports(2)
    check_ports(_plan(_service("worker-0", {"http": a}), _service("frontend-0", {"http": b})))


def test_probe_reports_status_or_none() -> None:
    (closed,) = free_ports(1)
    assert asyncio.run(probe("127.0.0.1", closed, "/health")) is None

    async def serve_and_probe() -> int | None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await probe("127.0.0.1", port, "/health")

    assert asyncio.run(serve_and_probe()) == 503


def _comm() -> str:
    with open(f"/proc/{os.getpid()}/comm") as fh:
        return fh.read().strip()
