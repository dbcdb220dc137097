"""The start-up progress display: one line per service (waiting, starting, healthy, failed)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from graph.plan import Service

_STYLE = {"waiting": "dim", "starting": "yellow", "healthy": "green", "failed": "bold red", "stopped": "dim"}


@dataclass
class _Row:
    service: Service
    status: str = "waiting"
    detail: str = ""
    started: float | None = None
    ended: float | None = None

    def elapsed(self) -> str:
        if self.started is None:
            return ""
        return f"{(self.ended or time.monotonic()) - self.started:.1f} s"


@dataclass
class StartupView:
    """Shows the start of every service.

    On a terminal it is a live table; elsewhere (CI logs, pipes) it prints one
    line per change, which reads well in a log file.
    """

    console: Console
    services: list[Service]
    rows: dict[str, _Row] = field(init=False)
    _live: Live | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.rows = {s.name: _Row(s) for s in self.services}

    def __enter__(self) -> StartupView:
        if self.console.is_terminal:
            self._live = Live(self, console=self.console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    @property
    def is_live(self) -> bool:
        """True while the live table owns the terminal (other output must go through rich)."""
        return self._live is not None

    def set(self, name: str, status: str, detail: str = "") -> None:
        """Move service ``name`` to ``status`` (starting, healthy, failed, stopped)."""
        row = self.rows[name]
        now = time.monotonic()
        if status == "starting":
            row.started, row.ended = now, None
        elif row.started is not None and row.ended is None:
            row.ended = now
        row.status, row.detail = status, detail
        if self._live is None:
            elapsed = f" in {row.elapsed()}" if status in ("healthy", "failed") else ""
            tail = f": {detail}" if detail else ""
            self.console.print(Text.assemble(
                (f"{status:>8} ", _STYLE.get(status, "")), (name, "bold"), f"{elapsed}{tail}"
            ), highlight=False)

    def __rich__(self) -> RenderableType:
        table = Table.grid(padding=(0, 2))
        for row in self.rows.values():
            s = row.service
            what = s.role + (f" ({s.engine})" if s.engine else "")
            mark: RenderableType = Spinner("dots", style="yellow") if row.status == "starting" else Text(
                {"healthy": "✓", "failed": "✗"}.get(row.status, "·"), style=_STYLE.get(row.status, "")
            )
            table.add_row(
                mark, Text(s.name, style="bold"), Text(what, style="dim"), f":{s.http_port}",
                Text(row.status, style=_STYLE.get(row.status, "")), row.elapsed(), Text(row.detail, style="red"),
            )
        return Group(Text("starting services", style="bold"), table)
