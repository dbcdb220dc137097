"""Load a pipeline file and find the Graph it defines."""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
import uuid

from .errors import GraphError, PipelineLoadError, SourceLocation
from .graph import Graph, collect_graphs


def load_graph(path: str, name: str | None = None) -> Graph:
    """Execute ``path`` and return the Graph it builds.

    Args:
        path: a ``pipelines/*.py`` file.
        name: which graph, when the file defines several.

    Raises:
        PipelineLoadError: the file is missing, raises, or defines no (or several) graphs.
    """
    if not os.path.isfile(path):
        raise PipelineLoadError(f"no pipeline file at '{path}'", detail="give the path of a pipelines/*.py file")
    module_name = f"_servegraph_pipeline_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"'{path}' is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        with collect_graphs() as created:
            spec.loader.exec_module(module)
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


def _user_error(exc: BaseException, path: str) -> PipelineLoadError:
    """Report an exception raised by the pipeline's own code at its line."""
    abspath = os.path.abspath(path)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == abspath]
    last = frames[-1] if frames else None
    where = SourceLocation(path, last.lineno or 0) if last else None
    detail = f"    {last.line}" if last and last.line else ""
    return PipelineLoadError(f"the pipeline raised {type(exc).__name__}: {exc}", where, detail=detail)
