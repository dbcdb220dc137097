"""The slurm target: goldens for every example, placement, options, the step wrapper and compile-time errors.

No Slurm needed: the script is checked as text, with ``bash -n``, and its step
wrapper is run for real. tests/test_e2e_slurm.py submits scripts to a real Slurm.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from graph.plan import Plan
from compiler.plan import PlanOptions, plan
from compiler.targets import slurm
from compiler.targets.slurm_runtime import STEP_WRAPPER_TEXT
from compiler.load import load_spec
from tests.goldens import assert_golden

ROOT = pathlib.Path(__file__).resolve().parent.parent
PIPELINES = sorted((ROOT / "pipelines").glob("*.py"))


def _plan(stem: str, mock: bool = False, sets: list[str] | None = None) -> Plan:
    spec = load_spec(str(ROOT / "pipelines" / f"{stem}.py"), mock=mock, sets=sets or [])[0]
    return plan(spec, PlanOptions(python="python"))


def _script(p: Plan, **options: object) -> str:
    files = slurm.render(p, slurm.Options(**options))  # type: ignore[arg-type]
    assert list(files) == [slurm.script_name(p, slurm.Options(**options))]  # type: ignore[arg-type]
    return next(iter(files.values()))


def _steps(text: str) -> dict[str, str]:
    """service name -> its whole srun command (continuation lines joined)."""
    joined = re.sub(r" \\\n\s+", " ", text)
    return {m.group(1): m.group(0).strip() for m in re.finditer(r"^\s*srun --job-name=(\S+) .*$", joined, re.M)}


def _sbatch(text: str) -> list[str]:
    return re.findall(r"^#SBATCH (\S+)$", text, re.M)


@pytest.mark.parametrize("mock", [False, True], ids=["engine", "mock"])
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_slurm_target_matches_golden(request: pytest.FixtureRequest, path: pathlib.Path, mock: bool) -> None:
    p = _plan(path.stem, mock)
    files = slurm.render(p)
    assert files == slurm.render(p), "output is not deterministic"
    assert_golden(request, f"{path.stem}/slurm{'-mock' if mock else ''}", files)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_script_is_valid_bash_and_starts_each_service_once(path: pathlib.Path) -> None:
    p = _plan(path.stem)
    text = _script(p)
    check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    steps = _steps(text)
    assert sorted(steps) == sorted(s.name for s in p.services)
    # The frontend starts after every other service has been waited for.
    fe_start = text.index(f"\nstart_step {p.frontend}\n")
    for s in p.services:
        if s.name != p.frontend:
            assert text.index(f"\nwait_healthy {s.name}\n") < fe_start, s.name
    for s in p.services:
        assert f'export SG_HOST_{s.name.upper().replace("-", "_")}="${{SG_NODES[' in text


def test_pd_steps_get_their_own_gpus_and_frontend_none() -> None:
    p = _plan("pd")
    text = _script(p)
    steps = _steps(text)
    assert "--exact --gpus-per-node=1 " in steps["prefill-0"]
    assert "--exact --gpus-per-node=2 " in steps["decode-0"]
    assert "--overlap --gres=none --mem=0 " in steps["frontend-0"]
    assert "--gpus" not in steps["frontend-0"]
    # one node; job-level request covers the largest per-node need; cores = 4/GPU for real engines
    assert _sbatch(text)[:5] == ["--job-name=llama-pd", "--nodes=1", "--ntasks-per-node=1",
                                 "--cpus-per-task=12", "--gpus-per-node=3"]
    assert "unset SLURM_GPUS SLURM_GPUS_PER_NODE SLURM_GPUS_PER_TASK SLURM_TRES_PER_TASK" in text
    # the side-channel port and self-address reach vLLM through the wrapper, unexpanded here
    side = p.service("prefill-0").ports["nixl_side_channel"]
    assert f"'VLLM_NIXL_SIDE_CHANNEL_HOST=${{SG_SELF_HOST}}' VLLM_NIXL_SIDE_CHANNEL_PORT={side} " in steps["prefill-0"]


def test_mock_graph_requests_no_gpus_unless_asked() -> None:
    p = _plan("pd", mock=True)
    text = _script(p)
    assert not any(f.startswith("--gpus") for f in _sbatch(text))
    assert all("--overlap --gres=none" in step for step in _steps(text).values())
    asked = _script(p, mock_gpus={"prefill": 1, "decode": 2})
    assert "--gpus-per-node=3" in _sbatch(asked)
    steps = _steps(asked)
    assert "--exact --gpus-per-node=1 " in steps["prefill-0"] and "--cpus-per-task=1 " in steps["prefill-0"]
    assert "--exact --gpus-per-node=2 " in steps["decode-0"]
    assert "--cpus-per-task=2" in _sbatch(asked), "mock engines get one core each"


def test_mock_gpus_must_name_a_mock_node() -> None:
    with pytest.raises(ValueError, match="'prefill', which is not a mock engine node.*compile with --mock"):
        slurm.render(_plan("pd"), slurm.Options(mock_gpus={"prefill": 1}))
    with pytest.raises(ValueError, match="'nope', which is not a mock engine node.*decode, prefill"):
        slurm.render(_plan("pd", mock=True), slurm.Options(mock_gpus={"nope": 1}))


def test_multinode_replica_spans_its_own_nodes_with_leader_and_rank() -> None:
    p = _plan("multinode_pd")
    text = _script(p)
    assert "--nodes=4" in _sbatch(text) and "--gpus-per-node=8" in _sbatch(text)
    steps = _steps(text)
    decode = steps["decode-0"]
    assert '--nodes=2 --ntasks=2 --ntasks-per-node=1 --nodelist="${SG_NODES[0]},${SG_NODES[1]}"' in decode
    assert "'SG_LEADER_HOST=${SG_HOST_DECODE_0}'" in decode
    assert "--node-rank '${SG_NODE_RANK}' --master-addr '${SG_LEADER_HOST}'" in decode
    assert '--nodelist="${SG_NODES[2]}"' in steps["prefill-0"]
    assert '--nodelist="${SG_NODES[3]}"' in steps["prefill-1"]
    assert '--nodelist="${SG_NODES[0]}"' in steps["frontend-0"]


def test_a_multinode_step_gives_the_wrapper_both_commands_and_single_host_steps_one() -> None:
    p = _plan("multinode_pd")
    decode = p.service("decode-0")
    assert decode.follower_argv is not None
    steps = _steps(_script(p))
    leader, followers = " ".join(map(shlex.quote, decode.argv)), " ".join(map(shlex.quote, decode.follower_argv))
    assert f"'SG_LEADER_HOST=${{SG_HOST_DECODE_0}}' --followers {followers} -- {leader} &" in steps["decode-0"]
    for name in ("prefill-0", "frontend-0"):
        assert "--followers" not in steps[name] and steps[name].endswith(
            " -- " + " ".join(map(shlex.quote, p.service(name).argv)) + " &")
    # the mock's ranks run one command: it gets none for its followers
    assert "--followers" not in _steps(_script(_plan("multinode_pd", mock=True)))["decode-0"]


def test_a_bare_double_dash_in_a_follower_command_is_refused() -> None:
    p = _plan("multinode_pd", sets=['decode.engine_args=["--", "x"]'])
    with pytest.raises(ValueError, match=r"service decode-0: its follower command has a bare '--' argument"):
        slurm.render(p)


def test_gpu_packing_first_fit_largest_first() -> None:
    p = _plan("e_p_d")  # encoders 1+1, prefill 2, decode 2+2
    placement = slurm.place(p, slurm.step_settings(p, slurm.Options()), gpus_per_node=4)
    assert placement.nodes == 2
    assert placement.gpus_used == (4, 4)
    assert placement.hosts["prefill-0"] == (0,) and placement.hosts["decode-0"] == (0,)
    assert placement.hosts["decode-1"] == (1,) and placement.hosts["encoder-0"] == (1,)
    assert placement.hosts["processor-0"] == (0,) and placement.hosts["frontend-0"] == (0,)
    # encoders and prefill land on different nodes: vLLM's encoder cache needs a folder both see
    text = _script(p, gpus_per_node=4, shared_cache_dir="/shared/ec")
    assert "#   node 1: encoder-0 (1 GPU, 4 cores), encoder-1 (1 GPU, 4 cores), decode-1 (2 GPUs, 8 cores)" in text


def test_placement_that_does_not_fit_max_nodes_is_refused_with_the_placement() -> None:
    p = _plan("pd", mock=True)
    with pytest.raises(ValueError, match=r"needs 2 nodes of 4 GPUs \(node 0: prefill-0, frontend-0 \(3 GPUs\); "
                                         r"node 1: decode-0 \(3 GPUs\)\) but -O max_nodes=1"):
        slurm.render(p, slurm.Options(gpus_per_node=4, max_nodes=1, mock_gpus={"prefill": 3, "decode": 3}))
    with pytest.raises(ValueError, match="'decode-0' needs 9 GPUs on each host but nodes have 8"):
        slurm.render(p, slurm.Options(mock_gpus={"decode": 9}))


def test_budget_is_checked_before_compiling_when_the_cluster_size_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    from compiler.cli.common import Overrides
    from compiler.cli.slurm_cmd import compiled_for_slurm
    from compiler.targets import GpuBudget

    target = slurm.SlurmTarget()
    assert target.gpu_budget(slurm.Options()) == GpuBudget(total=None, per_host=8)
    assert target.gpu_budget(slurm.Options(gpus_per_node=4, max_nodes=2)) == GpuBudget(total=8, per_host=4)
    with pytest.raises(SystemExit) as refused:
        compiled_for_slurm(str(ROOT / "pipelines/e_p_d.py"), Overrides(), ["gpus_per_node=4", "max_nodes=1"], "gpu")
    err = capsys.readouterr().err
    assert refused.value.code == 1
    assert "needs 8 GPUs" in err and "the target has 4" in err, err
    with pytest.raises(SystemExit):
        compiled_for_slurm(str(ROOT / "pipelines/multinode_pd.py"), Overrides(), ["gpus_per_node=4"], "gpu")
    assert "needs 8 GPUs on one host; hosts have 4" in capsys.readouterr().err


def test_compile_through_the_cli_refuses_a_graph_bigger_than_the_cluster(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", str(ROOT / "pipelines/e_p_d.py"), "-t", "slurm",
         "-o", str(out), "-O", "gpus_per_node=4", "-O", "max_nodes=1"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, "COLUMNS": "300"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    # graph's budget check (when the CLI passes gpu_budget()) or the placement's own check
    assert ("needs 8 GPUs" in result.stderr and "the target has 4" in result.stderr) or (
        "needs 2 nodes of 4 GPUs" in result.stderr and "-O max_nodes=1" in result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists(), "a refused compile wrote files"


def test_compile_through_the_cli_writes_the_options(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    ok = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", str(ROOT / "pipelines/e_p_d.py"), "-t", "slurm",
         "-o", str(out), "-O", "gpus_per_node=4", "-O", "max_nodes=2", "-O", "partition=gpu",
         "-O", "account=proj1", "-O", "time=1-00:00:00", "-O", "shared_cache_dir=/shared/ec"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    text = (out / "llava-e-p-d.sbatch").read_text()
    assert {"--partition=gpu", "--account=proj1", "--time=1-00:00:00", "--nodes=2"} <= set(_sbatch(text))
    assert '"shared_storage_path":"/shared/ec/llava-e-p-d"' in text
    assert os.access(out / "llava-e-p-d.sbatch", os.X_OK)


def test_containers_from_options_and_platform() -> None:
    p = _plan("pd", sets=['decode.platform={"slurm": {"container_image": "nvcr.io/me/vllm:dev", "cpus": 6, '
                          '"srun_args": ["--cpu-bind=none"]}}'])
    text = _script(p, container_engine_images={"vllm": "vllm/vllm-openai:v0.32"}, container_image="sg:1",
                   container_mounts="/models:/models:ro")
    steps = _steps(text)
    assert "--container-image=vllm/vllm-openai:v0.32 " in steps["prefill-0"]
    assert '--container-mounts="$RUN_DIR:$RUN_DIR",/models:/models:ro --container-workdir="$RUN_DIR"' in steps["prefill-0"]
    assert "--container-image=nvcr.io/me/vllm:dev " in steps["decode-0"], "the node's own image wins"
    assert "--cpus-per-task=6 " in steps["decode-0"] and "--cpu-bind=none" in steps["decode-0"]
    assert "--container-image=sg:1 " in steps["frontend-0"]
    assert "--container" not in _steps(_script(p))["prefill-0"], "no container unless an image is named"


def test_unknown_platform_key_is_rejected_with_node_and_key() -> None:
    p = _plan("pd", sets=['prefill.platform={"slurm": {"image": "x"}}'])
    with pytest.raises(ValueError, match=r"node 'prefill': platform\['slurm'\] key 'image' is unknown \(known: "):
        slurm.render(p)


@pytest.mark.parametrize("bad, message", [
    ({"time": "4 hours"}, "not Slurm's format"),
    ({"gpus_per_node": 0}, "gpus_per_node must be a whole number"),
    ({"nodes": 3, "max_nodes": 2}, "nodes=3 is more than max_nodes=2"),
    ({"sbatch_args": ["constraint=h100"]}, "list of --options"),
    ({"mem_per_cpu": "lots"}, "not a Slurm size"),
    ({"restart_limit": -1}, "restart_limit must be a whole number >= 0"),
    ({"restart_backoff_s": 0.5}, "restart_backoff_s must be a whole number >= 0"),
])
def test_bad_options_are_refused(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        slurm.Options(**bad)  # type: ignore[arg-type]


def test_setup_run_dir_and_extra_sbatch_args_land_in_the_script() -> None:
    text = _script(_plan("agg", mock=True), setup="module load cuda\nsource /opt/venv/bin/activate",
                   run_dir="/scratch/$USER/sg-$SLURM_JOB_ID", sbatch_args=["--constraint=h100"], exclusive=True,
                   job_name="svc", mem_per_cpu="4G")
    assert "module load cuda\nsource /opt/venv/bin/activate\n" in text
    assert 'RUN_DIR="${SG_RUN_DIR:-/scratch/$USER/sg-$SLURM_JOB_ID}"' in text
    assert {"--constraint=h100", "--exclusive", "--job-name=svc", "--mem-per-cpu=4G"} <= set(_sbatch(text))


def test_a_lost_node_does_not_end_the_job_and_the_restart_policy_is_in_the_script() -> None:
    text = _script(_plan("pd", mock=True), restart_limit=2, restart_backoff_s=4)
    assert "--no-kill" in _sbatch(text)
    for line in ("RESTART_LIMIT=2", "RESTART_BACKOFF_S=4", "RESTART_BACKOFF_MAX_S=30", "RESTART_RESET_S=60",
                 "FRONTEND=frontend-0", "SERVICES=(prefill-0 decode-0 frontend-0)"):
        assert f"\n{line}\n" in text, line
    assert "# 4 s (doubling up to 30 s), at most 2 times in a row (-O restart_limit);" in text
    assert "Services are not restarted (-O restart_limit=0)" in _script(_plan("pd", mock=True), restart_limit=0)
    # restarts append to the service's log instead of replacing the log of the crash
    assert all("--open-mode=append" in step for step in _steps(text).values())


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_the_frontend_runs_on_node_0_with_the_batch_script(path: pathlib.Path) -> None:
    """Losing node 0 ends the job whatever we do (the batch script runs there): the frontend must be
    there too, so that losing any other node leaves it serving."""
    p = _plan(path.stem)
    placement = slurm.place(p, slurm.step_settings(p, slurm.Options()), gpus_per_node=8)
    assert placement.hosts[p.frontend] == (0,)
    text = _script(p)
    assert f'export SG_HOST_{p.frontend.upper().replace("-", "_")}="${{SG_NODES[0]}}"' in text
    assert re.search(rf"^echo \"servegraph: host \$\{{SG_NODES\[0\]\}} \(node 0\) runs .*{p.frontend}", text, re.M)


def _wrapper(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "sg-step.sh"
    path.write_text(STEP_WRAPPER_TEXT)
    path.chmod(0o755)
    return path


def test_step_wrapper_expands_placeholders_in_env_and_argv(tmp_path: pathlib.Path) -> None:
    env = {"PATH": os.environ["PATH"], "SG_HOST_DECODE_0": "node7", "SLURMD_NODENAME": "node3",
           "SLURM_PROCID": "1", "CUDA_VISIBLE_DEVICES": "4,5"}
    code = "import os, sys; print(sys.argv[1:]); print(os.environ['SIDE'], os.environ['PLAIN'])"
    result = subprocess.run(
        [str(_wrapper(tmp_path)), "decode-0", "SIDE=${SG_SELF_HOST}:x", "PLAIN=a b", "--", sys.executable, "-c", code,
         "--master-addr", "${SG_HOST_DECODE_0}", "--node-rank", "${SG_NODE_RANK}", "$HOME ${", "u=${SG_HOST_DECODE_0}${SG_NODE_RANK}"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"sg-step: decode-0 host=node3 rank=1 pid=\d+ CUDA_VISIBLE_DEVICES=4,5", lines[0]), lines[0]
    assert lines[1] == str(["--master-addr", "node7", "--node-rank", "1", "$HOME ${", "u=node71"])
    assert lines[2] == "node3:x a b"


@pytest.mark.parametrize("rank, runs", [("0", "leader"), ("1", "follower"), ("2", "follower")])
def test_step_wrapper_runs_the_follower_command_on_ranks_after_the_first(
        tmp_path: pathlib.Path, rank: str, runs: str) -> None:
    env = {"PATH": os.environ["PATH"], "SLURMD_NODENAME": f"node{rank}", "SLURM_PROCID": rank,
           "SG_HOST_DECODE_0": "node0"}
    code = "import os, sys; print(sys.argv[1:], os.environ['ADDR'])"
    result = subprocess.run(
        [str(_wrapper(tmp_path)), "decode-0", "ADDR=${SG_SELF_HOST}",
         "--followers", sys.executable, "-c", code, "follower", "--node-rank", "${SG_NODE_RANK}", "--headless",
         "--", sys.executable, "-c", code, "leader", "--node-rank", "${SG_NODE_RANK}", "--port", "8104"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"sg-step: decode-0 host=node{rank} rank={rank} pid=\d+ CUDA_VISIBLE_DEVICES=", lines[0])
    want = (["leader", "--node-rank", rank, "--port", "8104"] if runs == "leader"
            else ["follower", "--node-rank", rank, "--headless"])
    assert lines[1] == f"{want} node{rank}"


def test_step_wrapper_refuses_an_unset_placeholder(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [str(_wrapper(tmp_path)), "prefill-0", "--", "echo", "http://${SG_HOST_NOPE}:1"],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=30,
    )
    assert result.returncode == 1
    assert "prefill-0: ${SG_HOST_NOPE} is not set" in result.stderr
    assert "http://" not in result.stdout, "the service must not start with a missing address"


def test_sbatch_refusal_is_explained_with_the_request_and_a_fix(tmp_path: pathlib.Path) -> None:
    from compiler.cli.slurm_cmd import explain_sbatch_error

    script = tmp_path / "g.sbatch"
    script.write_text(_script(_plan("pd")))
    msg = explain_sbatch_error("sbatch: error: Batch job submission failed: Requested node configuration is not "
                               "available\n", str(script))
    assert msg.startswith("Slurm refused the job: Batch job submission failed: Requested node configuration")
    assert "the job asks for: --nodes=1 --cpus-per-task=12 --gpus-per-node=3 --time=04:00:00" in msg
    assert "-O gpus_per_node=N -O max_nodes=M" in msg
    assert "-O partition=NAME" in explain_sbatch_error("sbatch: error: invalid partition specified: big", str(script))
    assert "-O account=NAME" in explain_sbatch_error("sbatch: error: Invalid account or account/partition combination "
                                                     "specified", str(script))
