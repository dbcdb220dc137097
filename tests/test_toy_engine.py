"""An engine is one module: a toy engine registered from a test compiles to every target, is
checked by its own rules, runs on the mock with --mock, and shows in `graph doctor`, with no edit
anywhere else in servegraph."""

from __future__ import annotations

import json
import pathlib
import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from compiler.cli import app
from compiler.engines import _LOADED, _REGISTRY, register
from compiler.targets.output import MARKER
from tests.engines.toy import ToyAdapter


@pytest.fixture(autouse=True)
def toy_engine():
    register("toy", ToyAdapter)
    yield
    _REGISTRY.pop("toy", None)
    _LOADED.pop("toy", None)


def _pipeline(tmp_path: pathlib.Path, worker: str = 'engine="toy", model="/models/tiny", gpus=1') -> str:
    path = tmp_path / "toy_graph.py"
    path.write_text(textwrap.dedent(f"""
        from graph import Frontend, Graph, Worker

        with Graph("toy-graph") as g:
            Frontend() >> Worker({worker})
    """))
    return str(path)


def _compile(tmp_path: pathlib.Path, target: str, *args: str) -> dict[str, str]:
    out = tmp_path / target
    result = CliRunner().invoke(app, ["compile", _pipeline(tmp_path), "-t", target, "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file() and p.name != MARKER}


def test_toy_engine_compiles_to_local(tmp_path: pathlib.Path) -> None:
    files = _compile(tmp_path, "local")
    worker = next(s for s in json.loads(files["plan.json"])["services"] if s["role"] == "worker")
    assert worker["argv"] == ["toy-server", "--model", "/models/tiny", "--host", "127.0.0.1", "--port", worker[
        "argv"][-1]]
    assert worker["engine"] == "toy" and worker["protocol"] == "openai" and worker["gpus"] == 1
    assert worker["health"]["path"] == "/healthz" and worker["env"] == {"TOY_THREADS": "4"}
    assert "toy-server --model /models/tiny" in files["launch.sh"]
    frontend = json.loads(files["frontend-0.json"])
    assert frontend["routes"][0]["stages"][0]["protocol"] == "openai"


def test_toy_engine_compiles_to_k8s_with_its_image(tmp_path: pathlib.Path) -> None:
    files = _compile(tmp_path, "k8s")
    docs = [d for text in files.values() for d in yaml.safe_load_all(text) if d]
    worker = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("worker-0"))
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.org/toy-server:1.0"
    assert "toy-server" in json.dumps(container)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_toy_engine_compiles_to_slurm_with_its_cores(tmp_path: pathlib.Path) -> None:
    files = _compile(tmp_path, "slurm")
    script = next(iter(files.values()))
    step = script[script.index("srun --job-name=worker-0"):]
    step = step[:step.index("&\n")]
    assert "--cpus-per-task=4 " in step, step  # the target's cpus_per_gpu (4) x 1 GPU, like any real engine
    assert "--gpus-per-node=1" in step and "toy-server" in script


def test_toy_engine_values_are_checked_by_its_own_rules(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(app, ["validate", _pipeline(tmp_path, 'engine="toy", model="m", dtype="f32"')])
    assert result.exit_code == 1
    assert "Toy does not accept dtype='f32'" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["validate", _pipeline(tmp_path, 'engine="toi", model="m"')])
    assert result.exit_code == 1 and "did you mean 'toy'?" in " ".join(result.output.split())


def test_toy_engine_cannot_be_split(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "split.py"
    path.write_text(textwrap.dedent("""
        from graph import Decode, Frontend, Graph, Prefill

        with Graph("toy-pd") as g:
            Frontend() >> Prefill(engine="toy", model="m") >> Decode(engine="toy", model="m")
    """))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "Toy cannot be a prefill" in " ".join(result.output.split())


def test_toy_engine_runs_on_the_mock(tmp_path: pathlib.Path) -> None:
    files = _compile(tmp_path, "local", "--mock")
    worker = next(s for s in json.loads(files["plan.json"])["services"] if s["role"] == "worker")
    assert worker["argv"][1:5] == ["-m", "nodes.mock", "--role", "worker"]
    assert worker["argv"][worker["argv"].index("--imitate") + 1] == "openai"
    assert worker["simulated"] is True and worker["gpus"] == 0


def test_toy_engine_shows_in_doctor() -> None:
    result = CliRunner().invoke(app, ["doctor", "--json"])
    toy = next(f for f in json.loads(result.stdout) if f["name"] == "Toy")
    assert toy["ok"] is False and toy["fix"] == "build toy-server from its repository"
