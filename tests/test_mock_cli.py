"""The mock's command line and the compiler's mock adapter agree."""

from __future__ import annotations

import pathlib

import pytest

from compiler.engines.base import EngineInput
from compiler.engines.mock import MOCK_KNOBS, MockAdapter
from compiler.errors import CompileFailed
from nodes.mock.config import build_parser, parse_args


def _spec(**mock: object) -> EngineInput:
    return EngineInput(node="decode", service="decode-0", role="decode", model="org/m", served_model_name="m",
                       imitate="sglang", mock=dict(mock), port=8101, extra_ports={}, block_size=32)


def test_every_adapter_knob_is_a_cli_flag():
    flags = {opt for action in build_parser()._actions for opt in action.option_strings}
    assert {"--" + k.replace("_", "-") for k in MOCK_KNOBS} <= flags


def test_adapter_argv_parses_into_the_config():
    spec = _spec(prefill_tps=5000, itl_ms=2, speedup=10, kv_blocks=64, fail_rate=0.5, health_fail=True,
                 stall_after_tokens=3, tokenizer="/models/tiny")
    argv = MockAdapter().command(spec).argv
    assert argv[:3] == ["python", "-m", "nodes.mock"]
    cfg = parse_args(argv[3:])
    assert (cfg.role, cfg.imitate, cfg.model, cfg.model_name, cfg.port) == ("decode", "sglang", "org/m", "m", 8101)
    assert (cfg.prefill_tps, cfg.itl_ms, cfg.speedup, cfg.kv_blocks, cfg.block_size) == (5000, 2, 10, 64, 32)
    assert (cfg.fail_rate, cfg.health_fail, cfg.stall_after_tokens, cfg.tokenizer) == (0.5, True, 3, "/models/tiny")


def test_unknown_knob_is_refused_with_the_list():
    with pytest.raises(CompileFailed, match="unknown mock knob.*itl_sm(.|\n)*known: "):
        MockAdapter().command(_spec(itl_sm=3))


@pytest.mark.parametrize("argv, message", [
    (["--role", "router"], "invalid choice"),
    (["--kv-blocks", "0"], "--kv-blocks must be >= 1"),
    (["--fail-rate", "2"], "--fail-rate must be within"),
    (["--speedup", "0"], "--speedup must be > 0"),
])
def test_bad_flags_exit_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


PIPELINES = sorted((pathlib.Path(__file__).resolve().parent.parent / "pipelines").glob("*.py"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_example_pipeline_compiles_to_mock_argv_the_mock_accepts(path):
    from compiler.plan import plan
    from compiler.load import load_spec

    compiled = plan(load_spec(str(path), mock=True)[0])
    mocks = [s for s in compiled.services if s.argv[1:3] == ["-m", "nodes.mock"]]
    assert mocks
    for service in mocks:
        cfg = parse_args(service.argv[3:])
        assert cfg.role == service.role and cfg.port == service.http_port
        assert cfg.bootstrap_port == service.ports.get("bootstrap")
