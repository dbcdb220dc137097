"""Each service's output: into logs/<service>.log and, prefixed with its name, onto the console."""

from __future__ import annotations

import os
from collections import deque

from rich.console import Console
from rich.text import Text

#: Starts the lines the supervisor itself writes into a service's log.
NOTE_PREFIX = "[servegraph]"

#: Prefix colours, assigned to services in start order.
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta",
           "bright_green", "bright_yellow", "bright_blue")


class Echo:
    """The console side of all services' output.

    Lines are written straight to the console's file with a pre-rendered
    prefix: printing each through rich costs ~165 µs a line (measured), too
    much for a frontend logging every request. While a live display owns the
    terminal (``through_rich``), lines go through rich so they land above it.
    """

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.through_rich = False

    def prefix(self, label: str, color: str) -> tuple[Text, str]:
        """The prefix as rich text and as the escape codes this console would print for it."""
        text = Text(f"{label} | ", style=color)
        with self.console.capture() as cap:
            self.console.print(text, end="")
        return text, cap.get()

    def write(self, prefix: tuple[Text, str], lines: list[str]) -> None:
        """Print ``lines``, each after ``prefix``."""
        if not self.enabled:
            return
        if self.through_rich:
            for line in lines:
                self.console.print(prefix[0] + Text(line), soft_wrap=True, highlight=False, markup=False)
            return
        try:
            self.console.file.write("".join(f"{prefix[1]}{line}\n" for line in lines))
            self.console.file.flush()
        except OSError:  # the console went away (closed pipe, hung-up terminal): keep the log files
            self.enabled = False


class LogSink:
    """Where one service's lines go. Opened once; restarts append to the same file."""

    def __init__(self, service: str, path: str, echo: Echo, width: int, color: str) -> None:
        self.service = service
        self.path = path
        self._echo = echo
        self._prefix = echo.prefix(f"{service:<{width}}", color)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", errors="replace")

    def lines(self, lines: list[str]) -> None:
        """Lines the process wrote (without their newlines)."""
        self._file.write("".join(f"{line}\n" for line in lines))
        self._file.flush()
        self._echo.write(self._prefix, lines)

    def note(self, text: str) -> None:
        """A line from the supervisor about this service, so the log file tells the whole story."""
        self._file.write(f"{NOTE_PREFIX} {text}\n")
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


def tail(path: str, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file ([] if it does not exist)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []
