"""Run a Plan's services on this host: start in dependency order, keep them alive, stop them cleanly.

Life of a run:

1. every port of the Plan is checked free (:func:`check_ports`) before anything starts;
2. services start wave by wave (``Plan.start_order()``); a wave starts once the
   previous one answers its health check; a service that exits or stays
   unhealthy past its ``startup_timeout_s`` stops everything (exit status 1);
3. while serving, a process that exits is restarted after a backoff that doubles
   up to a ceiling and resets once the service has stayed up for a while; it
   counts as healthy again only when its health check passes;
4. SIGINT/SIGTERM/SIGHUP: the frontend gets SIGTERM first and a short grace
   period for in-flight requests, then the other waves in reverse start order;
   whatever outlives its timeout is SIGKILLed with its whole process group. A
   second signal kills everything at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.text import Text

from graph.plan import Plan, Service

from .display import StartupView
from .env import child_argv, child_env
from .health import probe
from .logs import PALETTE, Echo, LogSink
from .ports import check_ports
from .process import Child
from .report import describe_exit, plural, print_failure, print_multi_host, print_ready
from .state import write_state


@dataclass(frozen=True)
class SupervisorOptions:
    """How the supervisor runs a Plan.

    Args:
        host: address of every service (the local target's host variables) and of health checks.
        drain_timeout_s: after SIGTERM, how long the frontend may take to finish in-flight requests.
        stop_timeout_s: after SIGTERM, how long all other services together may take to exit.
        backoff_initial_s: delay before the first restart of a crashed service.
        backoff_max_s: the delay doubles on each crash up to this.
        backoff_reset_s: a service healthy this long gets ``backoff_initial_s`` again on its next crash.
        health_interval_s: time between health checks while a service starts.
        liveness_interval_s: time between health checks of a running service.
        liveness_failures: failed checks in a row after which a running service is reported unhealthy.
        echo_logs: copy every service's output onto the console (it always goes to logs/).
        log_tail_lines: lines of a failed service's log shown on failure.
    """

    host: str = "127.0.0.1"
    drain_timeout_s: float = 3.0
    stop_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    backoff_reset_s: float = 30.0
    health_interval_s: float = 0.1
    liveness_interval_s: float = 5.0
    liveness_failures: int = 3
    echo_logs: bool = True
    log_tail_lines: int = 20


@dataclass
class _Unit:
    """One service and what the supervisor knows about it."""

    service: Service
    sink: LogSink
    child: Child | None = None
    status: str = "waiting"
    healthy: bool = False
    restarts: int = 0
    last_exit: int | None = None
    first_gate: asyncio.Future[tuple[bool, str]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.service.name


class Supervisor:
    """Runs one Plan whose files (plan.json, config files) are in ``workdir``.

    Args:
        plan: the Plan to run.
        workdir: the folder the services run in; logs/ and state.json are written there.
        options: timings and behaviour.
        console: where progress and prefixed logs go.
    """

    def __init__(self, plan: Plan, workdir: str, options: SupervisorOptions | None = None,
                 console: Console | None = None) -> None:
        self.plan = plan
        self.workdir = os.path.abspath(workdir)
        self.options = options or SupervisorOptions()
        self.console = console or Console(highlight=False)
        self.state_path = os.path.join(self.workdir, "state.json")
        self.waves = plan.start_order()
        self._units: dict[str, _Unit] = {}
        self._phase = "starting"
        self._stop: asyncio.Event | None = None  # events belong to the loop: made in _main
        self._force: asyncio.Event | None = None
        self._view: StartupView | None = None

    @property
    def url(self) -> str:
        """Where clients connect: the frontend's OpenAI base URL."""
        return f"http://{self.options.host}:{self.plan.service(self.plan.frontend).http_port}/v1"

    def run(self) -> int:
        """Supervise until a signal or a failed start.

        Returns:
            0 after a clean stop on a signal, 1 when a service failed to start or needs several hosts
            (then nothing was started).

        Raises:
            PortInUseError: some port of the Plan is taken (nothing was started).
        """
        multi_host = next((s for s in self.plan.services if not s.one_process), None)
        if multi_host is not None:
            print_multi_host(self.console, multi_host)
            return 1
        check_ports(self.plan)
        return asyncio.run(self._main())

    # --- the run ------------------------------------------------------------------

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop, self._force = asyncio.Event(), asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        width = max(len(s.name) for s in self.plan.services)
        echo = Echo(self.console, self.options.echo_logs)
        for i, s in enumerate(s for wave in self.waves for s in wave):
            sink = LogSink(s.name, os.path.join(self.workdir, "logs", f"{s.name}.log"), echo, width,
                           PALETTE[i % len(PALETTE)])
            self._units[s.name] = _Unit(s, sink)
        failure: _Unit | None = None
        try:
            self._write_state()
            with StartupView(self.console, [u.service for u in self._units.values()]) as view:
                self._view, echo.through_rich = view, view.is_live
                failure = await self._start_all()
            self._view, echo.through_rich = None, False
            if failure is None and not self._stop.is_set():
                # Banner first: whoever sees "running" in the state file finds the URL already printed.
                print_ready(self.console, self.plan, self.url, os.path.join(self.workdir, "logs"), self.state_path)
                self._phase = "running"
                self._write_state()
                await self._stop.wait()
        finally:
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        if failure is not None:
            reason = failure.first_gate.result()[1]
            argv = failure.child.argv if failure.child else failure.service.argv
            print_failure(self.console, failure.name, reason, argv, failure.sink.path, self.options.log_tail_lines)
            return 1
        return 0

    def _on_signal(self, sig: int) -> None:
        assert self._stop is not None and self._force is not None
        if self._stop.is_set():
            self._say(f"{signal.Signals(sig).name} again: killing everything now", "bold red")
            self._force.set()
            return
        self._say(f"{signal.Signals(sig).name}: stopping (again to kill at once)", "bold")
        self._stop.set()

    async def _start_all(self) -> _Unit | None:
        """Start wave after wave; the unit that failed, or None (also when a signal interrupted)."""
        assert self._stop is not None
        stop = asyncio.create_task(self._stop.wait())
        try:
            for wave in self.waves:
                units = [self._units[s.name] for s in wave]
                for unit in units:
                    unit.task = asyncio.create_task(self._keep(unit), name=f"keep {unit.name}")
                pending: set[asyncio.Future[Any]] = {u.first_gate for u in units}
                while pending:
                    done, _ = await asyncio.wait(pending | {stop}, return_when=asyncio.FIRST_COMPLETED)
                    if stop in done:
                        return None
                    for fut in done:
                        pending.discard(fut)
                        ok, _reason = fut.result()
                        if not ok:
                            return next(u for u in units if u.first_gate is fut)
            return None
        finally:
            stop.cancel()

    async def _keep(self, unit: _Unit) -> None:
        """Run one service for the whole session: start, gate on health, restart on exit."""
        opts = self.options
        delay = opts.backoff_initial_s
        first = True
        while True:
            ok, reason = await self._launch(unit, first)
            if first:
                first = False
                unit.first_gate.set_result((ok, reason))
                if not ok:
                    return
            elif ok:
                self._say(f"{unit.name} is healthy again (restart {unit.restarts})", "green")
            if ok:
                healthy_since = time.monotonic()
                assert unit.child is not None
                code = unit.last_exit = await self._watch(unit)
                up = time.monotonic() - healthy_since
                unit.child.kill_group()  # whatever it left behind must not hold its ports
                if up >= opts.backoff_reset_s:
                    delay = opts.backoff_initial_s
                what = f"{unit.name} {describe_exit(code)} after {up:.1f} s healthy"
            else:
                what = f"{unit.name} did not become healthy again: {reason}"
            unit.healthy = False
            unit.status = "restarting"
            unit.restarts += 1
            unit.sink.note(f"{what}; restart {unit.restarts} in {delay:.1f} s")
            self._say(f"{what}; restart {unit.restarts} in {delay:.1f} s", "yellow")
            self._write_state()
            await asyncio.sleep(delay)
            delay = min(delay * 2, opts.backoff_max_s)

    async def _watch(self, unit: _Unit) -> int:
        """Check a running service's health now and then until it exits; its exit status.

        A service that stops answering is reported and shown unhealthy in
        state.json, not restarted: a busy engine can miss a health check, and
        killing it would lose every request it holds.
        """
        opts, s, child = self.options, unit.service, unit.child
        assert child is not None and child.exited is not None
        misses = 0
        while True:
            done, _ = await asyncio.wait({child.exited}, timeout=opts.liveness_interval_s)
            if done:
                return child.exited.result()
            status = await probe(opts.host, s.health.port, s.health.path, timeout_s=opts.liveness_interval_s)
            if status == 200:
                if not unit.healthy:
                    self._say(f"{unit.name} answers its health check again", "green")
                    unit.status, unit.healthy = "healthy", True
                    self._write_state()
                misses = 0
                continue
            misses += 1
            if misses == opts.liveness_failures and unit.healthy:
                got = f"HTTP {status}" if status else "no answer"
                self._say(f"{unit.name} is running but failed {misses} health checks in a row ({got}); "
                          f"see {unit.sink.path}", "yellow")
                unit.sink.note(f"unhealthy: {misses} failed health checks ({got})")
                unit.status, unit.healthy = "unhealthy", False
                self._write_state()

    async def _launch(self, unit: _Unit, first: bool) -> tuple[bool, str]:
        """Start the service's process and wait for its health; (healthy, why not)."""
        s = unit.service
        unit.status = "starting"
        self._view_set(unit.name, "starting")
        try:
            env = child_env(self.plan, s, self.options.host)
            child = Child(child_argv(s, env), env, self.workdir, unit.sink.lines)
            unit.sink.note(("starting" if first else "restarting") + ": " + " ".join(child.argv))
            unit.child = child
            await child.start()
        except (OSError, ValueError) as exc:
            return self._gate_failed(unit, f"could not start {s.argv[0]!r}: {exc}")
        self._write_state()
        ok, reason = await self._gate(unit)
        if not ok:
            child.kill_group()
            return self._gate_failed(unit, reason)
        unit.status, unit.healthy = "healthy", True
        unit.sink.note("healthy")
        self._view_set(unit.name, "healthy")
        self._write_state()
        return True, ""

    def _gate_failed(self, unit: _Unit, reason: str) -> tuple[bool, str]:
        unit.status, unit.healthy = "failed", False
        unit.sink.note(f"failed: {reason}")
        self._view_set(unit.name, "failed", reason)
        self._write_state()
        return False, reason

    async def _gate(self, unit: _Unit) -> tuple[bool, str]:
        """Poll the health check until 200, the process exits, or the start-up timeout passes."""
        s, child = unit.service, unit.child
        assert child is not None and child.exited is not None
        url = f"http://{self.options.host}:{s.health.port}{s.health.path}"
        deadline = time.monotonic() + s.health.startup_timeout_s
        status: int | None = None
        while True:
            if child.exited.done():
                unit.last_exit = child.returncode
                return False, f"{describe_exit(child.returncode)} before it became healthy"
            status = await probe(self.options.host, s.health.port, s.health.path)
            if status == 200:
                return True, ""
            if time.monotonic() > deadline:
                got = f"HTTP {status}" if status else "no answer"
                return False, f"not healthy after {s.health.startup_timeout_s:g} s (GET {url}: {got})"
            await asyncio.wait({child.exited}, timeout=self.options.health_interval_s)

    # --- stopping -------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop every process: frontend first with a drain period, then the rest in reverse start order."""
        assert self._force is not None
        self._phase = "stopping"
        tasks = [u.task for u in self._units.values() if u.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._write_state()
        started = [u for u in self._units.values() if u.child is not None]
        running = sum(1 for u in started if u.child.alive())  # type: ignore[union-attr]
        if running:
            self._say(f"stopping {plural(running, 'process', 'processes')}", "bold")
        frontend = [self._units[self.plan.frontend]]
        await self._stop_units(frontend, self.options.drain_timeout_s, "to drain")
        rest_deadline = time.monotonic() + self.options.stop_timeout_s
        for wave in reversed(self.waves):
            units = [self._units[s.name] for s in wave if s.name != self.plan.frontend]
            await self._stop_units(units, max(rest_deadline - time.monotonic(), 0.0), "to stop")
        for u in started:
            u.child.kill_group()  # type: ignore[union-attr]
        await asyncio.gather(*(u.child.finish_output(1.0) for u in started))  # type: ignore[union-attr]
        for u in self._units.values():
            u.sink.close()
        self._phase = "stopped"
        self._write_state()
        self._say(f"all stopped ({plural(len(started), 'service', 'services')} had been started)", "bold")

    async def _stop_units(self, units: list[_Unit], timeout_s: float, purpose: str) -> None:
        """SIGTERM each leader, wait up to ``timeout_s``, then SIGKILL each whole process group."""
        assert self._force is not None
        alive = [u for u in units if u.child is not None and u.child.alive()]
        for u in alive:
            u.child.terminate()  # type: ignore[union-attr]
        exits = {u.child.exited for u in alive}  # type: ignore[union-attr]
        if exits:
            all_exited = asyncio.create_task(asyncio.wait(exits))
            force = asyncio.create_task(self._force.wait())
            try:
                await asyncio.wait({all_exited, force}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                all_exited.cancel()
                force.cancel()
        for u in units:
            child = u.child
            if child is None:
                continue
            if child.alive():
                self._say(f"{u.name} did not exit within {timeout_s:.1f} s {purpose} after SIGTERM: SIGKILL", "red")
                u.sink.note("killed (SIGKILL) after the stop timeout")
            child.kill_group()
        for u in alive:
            try:
                u.last_exit = await asyncio.wait_for(u.child.wait(), 2.0)  # type: ignore[union-attr]
            except asyncio.TimeoutError:
                pass
            u.status, u.healthy = "stopped", False
            u.sink.note(f"stopped ({describe_exit(u.last_exit)})")
        self._write_state()

    # --- output ---------------------------------------------------------------------

    def _view_set(self, name: str, status: str, detail: str = "") -> None:
        if self._view is not None:
            self._view.set(name, status, detail)

    def _say(self, message: str, style: str = "") -> None:
        self.console.print(Text("servegraph: ", style="bold") + Text(message, style=style), highlight=False)

    def _write_state(self) -> None:
        state = {
            "graph": self.plan.graph,
            "phase": self._phase,
            "supervisor_pid": os.getpid(),
            "url": self.url,
            "workdir": self.workdir,
            "services": {
                u.name: {
                    "pid": u.child.pid if u.child and u.child.alive() else None,
                    "status": u.status,
                    "healthy": u.healthy,
                    "restarts": u.restarts,
                    "last_exit": u.last_exit,
                    "ports": dict(u.service.ports),
                    "log": u.sink.path,
                }
                for u in self._units.values()
            },
        }
        write_state(self.state_path, state)

