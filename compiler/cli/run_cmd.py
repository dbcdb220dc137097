"""`graph run`: validate, plan, write the local target's files into a workdir, supervise."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from graph import GraphError, validate_spec
from graph.overrides import apply_overrides
from nodes.supervisor import PortInUseError, Supervisor
from nodes.supervisor.ports import bind_error
from nodes.supervisor.state import read_state

from ..ir import Plan
from ..plan import PlanOptions, plan
from ..targets import local
from ..targets.output import write_output
from .common import Overrides, console, err_console, fail, load_spec, print_errors


def run(path: str, overrides: Overrides, device: str, port: int | None, base_port: int, workdir: str | None) -> None:
    """Serve the pipeline on this machine until Ctrl-C; exits with the supervisor's status."""
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    if not 1024 <= base_port <= 65000:
        fail(f"--base-port {base_port} is out of range; choose one in 1024..65000, e.g. --base-port 9100")
    the_plan = prepare(path, overrides, device, port, base_port)
    folder, temporary = _workdir(workdir, the_plan.graph)
    try:
        write_output(local.render(the_plan), folder)
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


def prepare(path: str, overrides: Overrides, device: str, port: int | None, base_port: int) -> Plan:
    """The Plan `graph run` supervises: overrides and ``--port`` applied, validated, our nodes run by this Python.

    ``--port`` becomes the frontend node's port in the spec (before planning),
    so the compiler keeps the other services' ports clear of it.
    """
    spec, recorded = load_spec(path, overrides)
    frontends = spec.by_role("frontend")
    if port is not None and frontends:
        try:
            spec = apply_overrides(spec, sets=[f"{frontends[0].name}.port={port}"])
        except GraphError as exc:
            fail(f"--port {port}: {exc.format()}", 1)
    errors = validate_spec(spec, None, recorded)
    if errors:
        print_errors(path, errors)
        raise SystemExit(1)
    return plan(spec, PlanOptions(device=device, base_port=base_port, python=sys.executable, single_host=True))


def _workdir(workdir: str | None, graph: str) -> tuple[str, bool]:
    """(folder, is_temporary). A given folder is replaced, so it must be new, empty or a previous run's."""
    if workdir is None:
        return tempfile.mkdtemp(prefix=f"servegraph-{graph}-"), True
    folder = os.path.abspath(workdir)
    if os.path.exists(folder):
        if not os.path.isdir(folder):
            fail(f"--workdir {workdir} is a file; name a folder (it will hold configs and logs/)")
        if os.listdir(folder) and not os.path.exists(os.path.join(folder, "plan.json")):
            fail(f"--workdir {workdir} is not empty and holds no plan.json: `graph run` replaces its workdir, "
                 "so name a new or empty folder (or one a previous `graph run` used)")
        if os.path.commonpath([folder, os.getcwd()]) == folder:
            fail(f"--workdir {workdir} is the current folder or above it; name a subfolder such as run/")
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
