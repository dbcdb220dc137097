"""Command-line overrides: --mock, --model, --set on engine fields and role options."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from graph import GraphError, load_graph, resolve
from compiler.resolve import with_engines
from graph.overrides import apply_overrides

ROOT = pathlib.Path(__file__).resolve().parent.parent


def spec(name: str):
    return resolve(load_graph(str(ROOT / "pipelines" / name)))


def test_mock_and_model_keep_protocol_and_served_name() -> None:
    s = with_engines(apply_overrides(spec("sglang_pd.py"), model="/models/tiny"), mock=True)
    pre = s.node("prefill")
    assert (pre.engine, pre.imitate, pre.model, pre.model_name) == ("mock", "sglang", "/models/tiny", "Qwen/Qwen2.5-7B-Instruct")


def test_set_engine_field_and_role_option() -> None:
    s = apply_overrides(spec("kv_routed.py"), sets=["worker.replicas=2", "router.policy=round_robin",
                                                   "worker.mock={speedup: 10}"])
    assert s.node("worker").replicas == 2
    assert s.node("router").options["policy"] == "round_robin"
    assert s.node("worker").mock == {"speedup": 10}


@pytest.mark.parametrize("item, text", [
    ("worker.replicas=0", "greater than or equal to 1"),
    ("router.policy=fastest", "round_robin"),
    ("frontend.stage_timeout_s=-1", "greater than 0"),
    ("nobody.replicas=2", "no node 'nobody'"),
    ("worker.colour=red", "no settable field 'colour'"),
    ("worker-replicas", "NODE.FIELD=VALUE"),
])
def test_bad_set_is_a_graph_error(item: str, text: str) -> None:
    with pytest.raises(GraphError) as err:
        apply_overrides(spec("kv_routed.py"), sets=[item])
    assert text in str(err.value)


def test_bad_set_on_the_command_line_is_not_a_traceback() -> None:
    out = subprocess.run([sys.executable, "-m", "compiler.cli", "validate", "pipelines/kv_routed.py", "--set",
                          "router.policy=fastest"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "router.policy" in out.stderr
