"""`graph compile`: a pipeline to a target's files in a folder."""

from __future__ import annotations

from graph.plan import Plan

from ..plan import PlanOptions
from ..targets.output import OutputFolderError, WriteReport, write_output
from .common import Overrides, compiled, console, fail
from .target_options import parse_target_options, target_named


def run(path: str, overrides: Overrides, target_name: str, out: str, opts: list[str], device: str,
        force: bool = False) -> None:
    """Compile ``path`` for a target into ``out``; every problem printed and exit 1 if there are any."""
    target = target_named(target_name)
    if device not in ("gpu", "cpu"):
        fail(f"--device must be gpu or cpu, not '{device}'")
    options = parse_target_options(target, opts)
    result = compiled(path, overrides, target, options, PlanOptions(device=device, single_host=target.single_host))
    report = write_files(result.files, out, force)
    console.print(f"[green]wrote[/] {len(result.files)} files to {out}/ ({target.name}, graph '{result.plan.graph}', "
                  f"{result.plan.shape})")
    for name in sorted(result.files):
        console.print(f"  {name}")
    print_kept(report)
    print_edge_notes(result.plan)


def print_edge_notes(the_plan: Plan) -> None:
    """One line per tensor edge that is not NIXL, so no one takes it for one."""
    for e in the_plan.edges:
        if e.transport == "files" and e.settings is not None:
            shared = "on storage the target shares between hosts" if e.settings.folder_shared else "one host's folder"
            console.print(f"  note: {e.src} → {e.dst} {e.type} move as files through {e.settings.folder} ({shared}), "
                          "not over NIXL; `graph inspect --edges` says why", markup=False)
        elif e.transport == "engine":
            console.print(f"  note: {e.src} → {e.dst} {e.type} move by the engine's own transfer, not over NIXL",
                          markup=False)


def write_files(files: dict[str, str], out: str, force: bool) -> WriteReport:
    """Write a target's files, or explain why the folder is refused (exit 1)."""
    try:
        return write_output(files, out, force=force)
    except OutputFolderError as exc:
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}", 1)


def print_kept(report: WriteReport) -> None:
    """Say what was removed (files of ours no longer produced) and what was left alone."""
    for name in report.removed:
        console.print(f"  removed {name} (written by an earlier compile, no longer produced)")
    if report.kept:
        shown = ", ".join(report.kept[:6]) + (f" and {len(report.kept) - 6} more" if len(report.kept) > 6 else "")
        console.print(f"  left alone (not servegraph's): {shown}")
