"""Every example pipeline validates (as written and with --mock) and inspects cleanly."""

from __future__ import annotations

import json
import pathlib

import pytest
from typer.testing import CliRunner

from compiler.cli import app
from graph import load_graph, resolve

ROOT = pathlib.Path(__file__).resolve().parent.parent
PIPELINES = sorted((ROOT / "pipelines").glob("*.py"))


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_there_are_examples() -> None:
    assert len(PIPELINES) >= 8


@pytest.mark.parametrize("mock", [False, True], ids=["as-written", "mock"])
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_validates(path: pathlib.Path, mock: bool) -> None:
    rel = str(path.relative_to(ROOT))
    result = CliRunner().invoke(app, ["validate", rel, "--json", *(["--mock"] if mock else [])])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {"pipeline": rel, "graph": resolve(load_graph(rel)).name, "valid": True, "errors": []}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_inspect_json_is_the_resolved_spec(path: pathlib.Path) -> None:
    rel = str(path.relative_to(ROOT))
    result = CliRunner().invoke(app, ["inspect", rel, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == resolve(load_graph(rel)).model_dump(mode="json")


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_inspect_edges_and_plan(path: pathlib.Path) -> None:
    rel = str(path.relative_to(ROOT))
    result = CliRunner().invoke(app, ["inspect", rel, "--edges", "--plan", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    spec = resolve(load_graph(rel))
    # a tensor edge of the graph ("nixl") is lowered to how its engines move bytes: NIXL, files or their own
    lowered = {"http": {"http"}, "nixl": {"nixl", "files", "engine"}}
    assert [(e["src"], e["dst"]) for e in data["edges"]] == [(e.src, e.dst) for e in spec.edges]
    assert all(e["transport"] in lowered[s.transport] for e, s in zip(data["edges"], spec.edges))
    for e in data["edges"]:
        assert (e["settings"] is not None) == (e["transport"] != "http")
        if e["settings"]:
            assert e["settings"]["buffer_device"] == "cpu" and e["settings"]["reasons"]
            assert ("UCX_TLS" in e["settings"]["env"]) == (e["transport"] == "nixl")
    assert {s["node"] for s in data["plan"]["services"]} == {n.name for n in spec.nodes if n.role != "router"}
