"""The Plan: what each engine adapter emits per role, ports, wiring and the local target's goldens."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from graph.plan import Plan, Service
from compiler.plan import PlanOptions, plan
from compiler.targets import local
from compiler.engines.base import without_flags
from compiler.targets.base import TargetError
from graph import Decode, Encoder, Frontend, Graph, Prefill, PrefillDecode, Processor, Worker, resolve
from compiler.load import load_spec
from compiler.resolve import with_engines
from tests.goldens import assert_golden

ROOT = pathlib.Path(__file__).resolve().parent.parent
PIPELINES = sorted((ROOT / "pipelines").glob("*.py"))
OPTIONS = PlanOptions(python="python", cpu_cores=2, single_host=True)


def _plan(path: pathlib.Path, mock: bool = False, **options: object) -> Plan:
    spec = load_spec(str(path), mock=mock)[0]
    return plan(spec, PlanOptions(**{**OPTIONS.__dict__, **options}))


@pytest.mark.parametrize("mock", [False, True], ids=["engine", "mock"])
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_local_target_matches_golden(request: pytest.FixtureRequest, path: pathlib.Path, mock: bool) -> None:
    the_plan = _plan(path, mock)
    if not all(s.one_process for s in the_plan.services):  # a real replica over hosts: refused, no golden
        with pytest.raises(TargetError, match="replica over"):
            local.LocalTarget().render(the_plan)
        assert not (ROOT / "tests" / "golden" / path.stem / "local").exists(), "a golden of output never written"
        return
    files = local.LocalTarget().render(the_plan)
    assert_golden(request, f"{path.stem}/local{'-mock' if mock else ''}", files)


def test_launch_sh_expands_host_placeholders_in_env_values(tmp_path: pathlib.Path) -> None:
    """A service's env value like ``${SG_SELF_HOST}`` must reach the process as the host, not as
    that text: bash, not this test, decides what the launch line sets."""
    script = local.render(_plan(ROOT / "pipelines" / "pd.py"))["launch.sh"]
    line = next(ln for ln in script.splitlines() if "VLLM_NIXL_SIDE_CHANNEL_HOST=" in ln and "vllm" in ln)
    env_part = line.split(" python ", 1)[0]  # the assignments before the command
    probe = tmp_path / "probe.sh"
    probe.write_text(f"SG_SELF_HOST=10.9.8.7\n{env_part} env\n")
    out = subprocess.run(["bash", str(probe)], capture_output=True, text=True, check=True).stdout
    assert "VLLM_NIXL_SIDE_CHANNEL_HOST=10.9.8.7" in out.splitlines(), line


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_plan_is_deterministic_and_ports_unique(path: pathlib.Path) -> None:
    first, second = _plan(path), _plan(path)
    assert first.model_dump_json() == second.model_dump_json()
    ports = [p for s in first.services for p in s.ports.values()]
    assert len(ports) == len(set(ports)), f"port reused in {path.stem}: {sorted(ports)}"


def _graph_pd(engine: str) -> Plan:
    with Graph("t") as g:
        Frontend() >> Prefill(engine=engine, model="m") >> Decode(engine=engine, model="m", tp=2)
    return plan(resolve(g), OPTIONS)


def test_vllm_pd_roles_and_side_channels() -> None:
    p = _graph_pd("vllm")
    pre, dec = p.service("prefill-0"), p.service("decode-0")
    assert '"kv_role":"kv_producer"' in " ".join(pre.argv)
    assert '"kv_role":"kv_consumer"' in " ".join(dec.argv)
    assert pre.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] != dec.env["VLLM_NIXL_SIDE_CHANNEL_PORT"]
    assert pre.env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "${SG_SELF_HOST}"
    assert dec.argv[dec.argv.index("--tensor-parallel-size") + 1] == "2" and dec.gpus == 2
    route = p.service("frontend-0").config["routes"][0]
    assert [s["stage"] for s in route["stages"]] == ["prefill", "decode"]
    assert route["stages"][0]["upstreams"][0]["url"] == f"http://${{SG_HOST_PREFILL_0}}:{pre.http_port}"
    # The frontend starts only after every engine is healthy.
    assert set(p.service("frontend-0").depends_on) == {"prefill-0", "decode-0"}


def test_sglang_prefill_gets_bootstrap_port() -> None:
    p = _graph_pd("sglang")
    pre = p.service("prefill-0")
    argv = pre.argv
    assert argv[argv.index("--disaggregation-mode") + 1] == "prefill"
    assert int(argv[argv.index("--disaggregation-bootstrap-port") + 1]) == pre.ports["bootstrap"]
    # sglang 0.5.23's parser has no --disaggregation-decode-tp (tests/test_engine_flags.py).
    assert "--disaggregation-decode-tp" not in argv
    stage = p.service("frontend-0").config["routes"][0]["stages"][0]
    assert stage["upstreams"][0]["bootstrap_port"] == pre.ports["bootstrap"]


def test_trtllm_context_server_yaml() -> None:
    p = _graph_pd("trtllm")
    pre, dec = p.service("prefill-0"), p.service("decode-0")
    assert pre.config["cache_transceiver_config"]["backend"] == "NIXL"
    assert pre.config["disable_overlap_scheduler"] is True
    assert "disable_overlap_scheduler" not in dec.config
    assert pre.argv[pre.argv.index("--extra_llm_api_options") + 1] == pre.config_file


def test_cpu_engines_get_disjoint_cores() -> None:
    with Graph("t") as g:
        Frontend() >> Prefill(model="m") >> Decode(model="m")
    p = plan(resolve(g), PlanOptions(device="cpu", cpu_cores=2, single_host=True))
    binds = [p.service(n).env["VLLM_CPU_OMP_THREADS_BIND"] for n in ("prefill-0", "decode-0")]
    assert binds == ["0", "1"]
    assert '"kv_buffer_device":"cpu"' in " ".join(p.service("prefill-0").argv)
    assert p.service("prefill-0").env["UCX_TLS"] == "tcp,sm,self"


def test_e_p_d_wiring() -> None:
    with Graph("t") as g:
        Frontend() >> Processor() >> Encoder(model="m") >> Prefill(model="m") >> Decode(model="m")
    p = plan(resolve(g), OPTIONS)
    enc, pre = " ".join(p.service("encoder-0").argv), " ".join(p.service("prefill-0").argv)
    assert "--mm-encoder-only" in enc and '"ec_role":"ec_producer"' in enc
    assert '"ec_role":"ec_consumer"' in pre and '"kv_role":"kv_producer"' in pre
    route = p.service("frontend-0").config["routes"][0]
    assert [s["stage"] for s in route["stages"]] == ["encode", "prefill", "decode"]
    assert route["processor"][0]["service"] == "processor-0"
    kinds = {(e.src, e.dst): e.transport for e in p.edges}
    # vLLM's encoder hands embeddings over as files (ECExampleConnector); its KV goes over NIXL
    assert kinds[("encoder", "prefill")] == "files" and kinds[("prefill", "decode")] == "nixl"
    assert kinds[("processor", "encoder")] == "http"
    files = next(e.settings for e in p.edges if e.transport == "files")
    assert files.folder == "/tmp/servegraph-ec/t" and files.direction is None and files.env == {}
    assert f'"shared_storage_path":"{files.folder}"' in enc


def test_e_pd_consumer_is_aggregate_stage() -> None:
    with Graph("t") as g:
        Frontend() >> Processor() >> Encoder(model="m") >> PrefillDecode(model="m")
    p = plan(resolve(g), OPTIONS)
    route = p.service("frontend-0").config["routes"][0]
    assert [s["stage"] for s in route["stages"]] == ["encode", "aggregate"]
    assert '"ec_role":"ec_consumer"' in " ".join(p.service("prefill-decode-0").argv)


def test_mock_override_keeps_protocol_and_drops_gpus() -> None:
    with Graph("t") as g:
        Frontend() >> Worker(engine="sglang", model="m", tp=4)
    spec = with_engines(resolve(g), mock=True)
    p = plan(spec, OPTIONS)
    w = p.service("worker-0")
    assert w.argv[:3] == ["python", "-m", "nodes.mock"]
    assert w.argv[w.argv.index("--imitate") + 1] == "sglang"
    assert w.gpus == 0 and w.protocol == "sglang"


def test_plan_json_roundtrip() -> None:
    p = _plan(ROOT / "pipelines" / "e_p_d.py")
    again = Plan.model_validate(json.loads(p.model_dump_json()))
    assert again == p


def test_sglang_language_model_is_told_its_encoders() -> None:
    with Graph("t") as g:
        Frontend() >> Processor() >> Encoder(engine="sglang", model="m", replicas=2) >> Prefill(engine="sglang", model="m") >> Decode(engine="sglang", model="m")
    p = plan(resolve(g), OPTIONS)
    argv = p.service("prefill-0").argv
    assert "--language-only" in argv
    urls = argv[argv.index("--encoder-urls") + 1:argv.index("--encoder-urls") + 3]
    assert urls == [f"http://${{SG_HOST_ENCODER_{i}}}:{p.service(f'encoder-{i}').http_port}" for i in range(2)]
    assert "--encoder-only" in p.service("encoder-0").argv


def test_a_vllm_replica_over_hosts_carries_its_followers_command() -> None:
    """The Plan says what the other hosts run, with the interpreter our nodes use, and survives JSON."""
    p = _plan(ROOT / "pipelines" / "multinode_pd.py", python="/opt/py/bin/python")
    decode, prefill = p.service("decode-0"), p.service("prefill-0")
    assert decode.hosts == 2 and decode.argv[:3] == ["/opt/py/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert decode.follower_argv is not None
    assert decode.follower_argv[:5] == ["/opt/py/bin/python", "-m", "vllm.entrypoints.cli.main", "serve",
                                        decode.model]
    assert decode.follower_argv[-1] == "--headless"
    # the leader's flags, less the model flag (positional) and the HTTP address (it serves none)
    assert decode.follower_argv[5:-1] == without_flags(decode.argv[3:], ("--model", "--host", "--port"))
    assert decode.env["VLLM_HOST_IP"] == "${SG_SELF_HOST}"
    assert prefill.follower_argv is None and "VLLM_HOST_IP" not in prefill.env
    assert Plan.model_validate(json.loads(p.model_dump_json())) == p
    # the mock's one process stands for every rank: one command for all hosts
    mock = _plan(ROOT / "pipelines" / "multinode_pd.py", mock=True).service("decode-0")
    assert mock.hosts == 2 and mock.follower_argv is None


def test_a_follower_command_needs_several_hosts() -> None:
    s = _plan(ROOT / "pipelines" / "pd.py").service("decode-0").model_dump()
    with pytest.raises(ValueError, match="service decode-0: follower_argv is for a replica over several hosts"):
        Service.model_validate({**s, "follower_argv": ["x"]})


def test_the_local_target_and_graph_run_refuse_a_real_replica_over_hosts(tmp_path: pathlib.Path) -> None:
    """One process per service on one host cannot be a replica over two hosts: compile says so with the
    node and the ways out, and `graph run` starts nothing. The mock's one process may stand for both."""
    with pytest.raises(TargetError, match=r"node 'decode': decode-0 is one vllm replica over 2 hosts") as err:
        local.LocalTarget().render(_plan(ROOT / "pipelines" / "multinode_pd.py"))
    assert err.value.node == "decode" and "--set decode.nodes=1" in err.value.hint and "--mock" in err.value.hint
    assert "launch.sh" in local.LocalTarget().render(_plan(ROOT / "pipelines" / "multinode_pd.py", mock=True))
    run = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "run", str(ROOT / "pipelines" / "multinode_pd.py"), "--device", "cpu",
         "--set", "prefill.tp=1", "--set", "prefill.gpus=1", "--set", "decode.tp=2", "--set", "decode.gpus=1",
         "--workdir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "decode-0 is one vllm replica over 2 hosts (node 'decode', nodes=2)" in run.stdout
    assert "--set decode.nodes=1" in run.stdout
    assert not (tmp_path / "run" / "logs").exists(), "nothing may start"
