"""Load a pipeline file and find the Graph it defines."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import threading
import traceback
import uuid
from typing import Iterator

from .errors import GraphError, PipelineLoadError, SourceLocation
from .graph import Graph, collect_graphs


#: Seconds a pipeline file may take to build its graph (``SERVEGRAPH_LOAD_TIMEOUT_S`` changes it).
DEFAULT_LOAD_TIMEOUT_S = 30.0


class _LoadTimeout(BaseException):
    """Raised inside the pipeline's code when it runs past its time limit (a BaseException, so that
    a bare ``except Exception`` in the pipeline cannot swallow it)."""


def load_timeout_s() -> float:
    """The time limit for loading a pipeline: ``$SERVEGRAPH_LOAD_TIMEOUT_S`` or the default (0: none)."""
    raw = os.environ.get("SERVEGRAPH_LOAD_TIMEOUT_S", "")
    try:
        return float(raw) if raw.strip() else DEFAULT_LOAD_TIMEOUT_S
    except ValueError:
        raise PipelineLoadError(f"SERVEGRAPH_LOAD_TIMEOUT_S={raw!r} is not a number of seconds",
                                detail="    hint: e.g. SERVEGRAPH_LOAD_TIMEOUT_S=60, or 0 for no limit") from None


def load_graph(path: str, name: str | None = None, timeout_s: float | None = None) -> Graph:
    """Execute ``path`` and return the Graph it builds.

    Args:
        path: a ``pipelines/*.py`` file.
        name: which graph, when the file defines several.
        timeout_s: how long the file may run (None: :func:`load_timeout_s`; 0: no limit). The
            limit holds in the main thread only, where a signal can interrupt the pipeline's code.

    Raises:
        PipelineLoadError: the file is missing, raises, runs past the time limit, or defines no
            (or several) graphs.
    """
    if not os.path.isfile(path):
        raise PipelineLoadError(f"no pipeline file at '{path}'", detail="give the path of a pipelines/*.py file")
    limit = load_timeout_s() if timeout_s is None else timeout_s
    module_name = f"_servegraph_pipeline_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"'{path}' is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        with collect_graphs() as created, _time_limit(limit):
            spec.loader.exec_module(module)
    except _LoadTimeout as exc:
        raise _timeout_error(exc, path) from None
    except GraphError as exc:
        raise PipelineLoadError(exc.message, exc.where, detail=f"    hint: {exc.hint}" if exc.hint else "") from None
    except SyntaxError as exc:
        where = SourceLocation(path if exc.filename and os.path.abspath(exc.filename) == os.path.abspath(path)
                               else (exc.filename or path), exc.lineno or 0)
        raise PipelineLoadError(f"SyntaxError: {exc.msg}", where, detail=(exc.text or "").rstrip()) from None
    except BaseException as exc:  # noqa: BLE001 - any error in user code is reported, not crashed on
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _user_error(exc, path) from None
    finally:
        sys.modules.pop(module_name, None)
    graphs = list(dict.fromkeys([v for v in vars(module).values() if isinstance(v, Graph)] + created))
    if name is not None:
        chosen = [g for g in graphs if g.name == name]
        if not chosen:
            names = ", ".join(g.name for g in graphs) or "none"
            raise PipelineLoadError(f"'{path}' defines no graph named '{name}' (it has: {names})")
        return chosen[0]
    if not graphs:
        raise PipelineLoadError(
            f"'{path}' defines no Graph", detail="    hint: build one at module level: `with Graph('name') as g: ...`"
        )
    if len(graphs) > 1:
        names = ", ".join(g.name for g in graphs)
        raise PipelineLoadError(f"'{path}' defines several graphs ({names})", detail="    hint: pick one with --graph NAME")
    return graphs[0]


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block with :class:`_LoadTimeout` after ``seconds`` (main thread only)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise _LoadTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timeout_error(exc: _LoadTimeout, path: str) -> PipelineLoadError:
    """Name the file, the line it was running, and how to allow more time."""
    seconds = exc.args[0]
    located = _user_error(exc, path)
    return PipelineLoadError(
        f"'{path}' did not finish building its graph within {seconds:g} s (stopped here)",
        located.where,
        detail=(located.detail + "\n" if located.detail else "")
        + "    hint: does it loop, or wait for something at import? A pipeline file only declares the graph; "
        "if it really needs longer, set SERVEGRAPH_LOAD_TIMEOUT_S (seconds, 0 for no limit)",
    )


def _user_error(exc: BaseException, path: str) -> PipelineLoadError:
    """Report an exception raised by the pipeline's own code at its line."""
    abspath = os.path.abspath(path)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == abspath]
    last = frames[-1] if frames else None
    where = SourceLocation(path, last.lineno or 0) if last else None
    detail = f"    {last.line}" if last and last.line else ""
    return PipelineLoadError(f"the pipeline raised {type(exc).__name__}: {exc}", where, detail=detail)
