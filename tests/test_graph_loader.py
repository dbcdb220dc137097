"""Loading pipeline files: user errors are reported at their line, never as our crash."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from graph import Graph, PipelineLoadError, load_graph


def _write(tmp_path: pathlib.Path, body: str, name: str = "p.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip())
    return str(path)


def test_exception_in_user_code_names_its_line(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, """
        from graph import Frontend, Graph, Worker

        def replicas():
            return {}["missing"]

        with Graph("g") as g:
            Frontend() >> Worker(model="m", replicas=replicas())
    """)
    with pytest.raises(PipelineLoadError) as info:
        load_graph(path)
    err = info.value
    assert "the pipeline raised KeyError: 'missing'" in err.message
    assert err.where is not None and err.where.line == 4  # the innermost line of the pipeline's own code
    assert 'return {}["missing"]' in err.detail


def test_import_error_in_pipeline(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "from graph import Nope\n")
    with pytest.raises(PipelineLoadError, match="ImportError") as info:
        load_graph(path)
    assert info.value.where is not None and info.value.where.line == 1


def test_syntax_error(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "with Graph('g') as g\n")
    with pytest.raises(PipelineLoadError, match="SyntaxError") as info:
        load_graph(path)
    assert info.value.where is not None and info.value.where.line == 1


def test_missing_file_and_no_graph(tmp_path: pathlib.Path) -> None:
    with pytest.raises(PipelineLoadError, match="no pipeline file"):
        load_graph(str(tmp_path / "absent.py"))
    with pytest.raises(PipelineLoadError, match="defines no Graph"):
        load_graph(_write(tmp_path, "X = 1\n"))


def test_several_graphs_and_choosing_one(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, """
        from graph import Frontend, Graph, Worker
        with Graph("a") as a:
            Frontend() >> Worker(model="m")
        with Graph("b") as b:
            Frontend() >> Worker(model="n")
    """)
    with pytest.raises(PipelineLoadError, match=r"several graphs \(a, b\)"):
        load_graph(path)
    assert load_graph(path, "b").name == "b"
    with pytest.raises(PipelineLoadError, match="no graph named 'c'"):
        load_graph(path, "c")


def test_nodes_remember_where_they_were_declared(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, """
        from graph import Decode, Frontend, Graph, Prefill
        with Graph("g") as g:
            fe = Frontend()
            p = Prefill(model="m")
            d = Decode(model="m")
            fe >> p >> d
    """)
    g = load_graph(path)
    assert isinstance(g, Graph)
    assert [(n.where.file, n.where.line) for n in g.nodes] == [(path, 3), (path, 4), (path, 5)]
    assert [e.where.line for e in g.edges] == [6, 6]


def test_a_pipeline_that_never_finishes_is_stopped_at_its_line(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, """
        from graph import Frontend, Graph, Worker

        with Graph("g") as g:
            Frontend() >> Worker(model="m")
        n = 0
        while True:
            n += 1
    """)
    with pytest.raises(PipelineLoadError) as info:
        load_graph(path, timeout_s=0.5)
    err = info.value
    assert "did not finish building its graph within 0.5 s" in err.message
    assert err.where is not None and err.where.line in (6, 7)
    assert "SERVEGRAPH_LOAD_TIMEOUT_S" in err.detail


def test_a_pipeline_that_swallows_exceptions_is_still_stopped(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, """
        import time
        while True:
            try:
                time.sleep(10)
            except Exception:
                pass
    """)
    with pytest.raises(PipelineLoadError, match="did not finish"):
        load_graph(path, timeout_s=0.3)


def test_load_time_limit_from_the_environment(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "import time\ntime.sleep(5)\n")
    monkeypatch.setenv("SERVEGRAPH_LOAD_TIMEOUT_S", "0.2")
    with pytest.raises(PipelineLoadError, match="within 0.2 s"):
        load_graph(path)
    monkeypatch.setenv("SERVEGRAPH_LOAD_TIMEOUT_S", "soon")
    with pytest.raises(PipelineLoadError, match="is not a number of seconds"):
        load_graph(path)
