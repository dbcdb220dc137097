"""`graph run`: validate, plan, write the local target's files into a workdir, supervise."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from nodes.supervisor import PortInUseError, Supervisor
from nodes.supervisor.ports import bind_error
from nodes.supervisor.state import read_state

from graph.plan import Plan
from ..plan import PlanOptions
from ..targets import local
from ..targets.output import is_servegraph_folder
from .common import Overrides, checked_plan, console, err_console, fail
from .compile_cmd import write_files


def run(path: str, overrides: Overrides, device: str, port: int | None, base_port: int, workdir: str | None,
        host: str | None = None) -> None:
    """Serve the pipeline on this machine until Ctrl-C; exits with the supervisor's status."""
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    the_plan = prepare(path, overrides, device, port, base_port, host)
    folder, temporary = _workdir(workdir, the_plan.graph)
    try:
        write_files(local.render(the_plan), folder, force=False)
        console.print(f"[bold]graph run[/] {path}: graph '{the_plan.graph}' ({the_plan.shape}), "
                      f"{len(the_plan.services)} processes, files in {folder}", highlight=False, soft_wrap=True)
        code = Supervisor(the_plan, folder).run()
    except PortInUseError as exc:
        _explain_ports(exc, the_plan, base_port)
        code = 1
    except KeyboardInterrupt:  # before the supervisor took over the signals: nothing runs yet
        code = 130
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    raise SystemExit(code)


def prepare(path: str, overrides: Overrides, device: str, port: int | None, base_port: int,
            host: str | None = None) -> Plan:
    """The Plan `graph run` supervises: overrides and ``--port`` applied, validated, our nodes run by this Python.

    ``--port`` becomes the frontend node's port in the spec (before planning),
    so the compiler keeps the other services' ports clear of it. Every service
    listens on loopback; the frontend on ``host`` (or the graph's Frontend host).
    """
    overrides = Overrides(**{**overrides.__dict__, "port": port if port is not None else overrides.port})
    return checked_plan(path, overrides, PlanOptions(
        device=device, base_port=base_port, python=sys.executable, single_host=True, frontend_host=host))


def _workdir(workdir: str | None, graph: str) -> tuple[str, bool]:
    """(folder, is_temporary). A given folder must be new, empty or one servegraph wrote (a previous run's)."""
    if workdir is None:
        return tempfile.mkdtemp(prefix=f"servegraph-{graph}-"), True
    folder = os.path.abspath(workdir)
    if os.path.exists(folder):
        if not os.path.isdir(folder):
            fail(f"--workdir {workdir} is a file; name a folder (it will hold configs and logs/)")
        if os.listdir(folder) and not is_servegraph_folder(folder):
            fail(f"--workdir {workdir} is not empty and servegraph did not write it: name a new or empty folder "
                 "(or one a previous `graph run` used); `graph run` never writes over files it did not write")
        owner = _running_supervisor(folder)
        if owner:
            fail(f"--workdir {workdir} is in use by a running `graph run` (pid {owner}); stop it first "
                 f"(Ctrl-C there, or kill -INT {owner}) or name another folder")
    return folder, False


def _running_supervisor(folder: str) -> int | None:
    """The pid of a live supervisor that state.json in ``folder`` names, if any."""
    try:
        state = read_state(os.path.join(folder, "state.json"))
        pid = int(state["supervisor_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state.get("phase") == "stopped":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _explain_ports(exc: PortInUseError, the_plan: Plan, base_port: int) -> None:
    """Which service wants which taken port, and the flag that moves it."""
    err_console.print("[bold red]error:[/] ports needed by the graph are taken (is another `graph run` still running?)")
    hints: list[str] = []
    for c in exc.conflicts:
        err_console.print(f"  {c.describe()}", soft_wrap=True, highlight=False)
        if c.service == the_plan.frontend and c.kind == "http":
            hints.append(f"--port {_free_from(c.port + 1, 1)} moves the frontend")
        elif c.service == the_plan.frontend:
            hints.append(f"stop what uses port {c.port}, or change the frontend's ports in the pipeline")
        else:
            count = sum(len(s.ports) for s in the_plan.services if s.name != the_plan.frontend)
            hints.append(f"--base-port {_free_from(base_port + 100, count)} moves the other services' ports "
                         f"(now from {base_port})")
    for hint in dict.fromkeys(hints):
        err_console.print(f"  [green]fix:[/] {hint}", soft_wrap=True, highlight=False)


def _free_from(start: int, count: int) -> int:
    """The first port >= start with ``count`` free ports in a row (start itself if none is found)."""
    port = start
    while port + count < 65535:
        if all(bind_error(p) is None for p in range(port, port + count)):
            return port
        port += count
    return start
