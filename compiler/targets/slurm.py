"""Slurm: one sbatch script per graph — one allocation, one srun step per service.

``graph compile x.py -t slurm -o out/`` writes ``out/<job name>.sbatch``; ``graph
submit x.py`` compiles, submits and follows it (compiler/cli/slurm_cmd.py).

Why one allocation and not a heterogeneous job
----------------------------------------------
* One queue wait and one job id: the graph starts whole or not at all, and
  ``scancel <id>`` stops every service. A hetjob's components are scheduled
  together too, but many sites disable or restrict hetjobs (and backfill treats
  them poorly), while a plain multi-node job runs everywhere.
* Placement stays in the compiled output, readable: the compiler packs
  services onto allocation nodes (slurm_placement.py) and each step names its
  node(s) with ``--nodelist``; with a hetjob Slurm would choose and the script
  could not say up front which services share a node.
* Steps in one allocation get disjoint GPUs when each asks for its own
  (``srun --exact --gpus-per-node=N``; verified on a real Slurm: two concurrent
  steps see different CUDA_VISIBLE_DEVICES) once the job-level GPU variables
  sbatch exports are unset; so a hetjob buys no isolation.
Steps without GPUs (frontend, processor, mock engines) run with ``--overlap
--gres=none --mem=0``, measured on Slurm 22.05: without --gres=none a step sees
all the job's GPUs; --overlap there shares cores but not memory, so without
--mem=0 each such step still reserves a core's worth of memory and a graph of
7 light services would not start in a 2-core job.
The cost: the allocation is uniform (every node gets the largest per-node GPU
and core count any node needs); ``-O exclusive=true`` takes whole nodes.

Run time
--------
The script maps allocation node i to the i-th name of ``SLURM_JOB_NODELIST``,
exports ``SG_HOST_<SERVICE>`` for every service, prints which host runs which
service, writes our processes' config files (heredocs; they expand
``${SG_HOST_*}`` themselves) and the step wrapper ``sg-step.sh`` (sets
``SG_SELF_HOST``/``SG_NODE_RANK``, expands placeholders in argv/env, logs its
pid and CUDA_VISIBLE_DEVICES, execs the service), starts the Plan's waves
(engines first), waits for each wave's health with curl and the Plan's startup
timeouts (a service that fails to start ends the job), starts the frontend
last and prints ``servegraph: ready at URL``. It keeps ``status.json`` in the
run folder current on every change (``graph status`` reads it).

Then it keeps the graph serving (slurm_keep.py): a step that ends is restarted
in place with a backoff, at most ``-O restart_limit`` times in a row, each
restart logged in the batch log; the frontend routes around the replica
meanwhile. The job is submitted with ``--no-kill``: a lost node takes only its
own services, reported lost. The frontend's end, a service out of restarts,
scancel or the time limit end the job; a trap then stops every step (SIGTERM
through srun, then SIGKILL). The frontend runs on node 0 with the batch script
(services without GPUs are placed there): losing node 0 ends the job, as
Slurm would anyway; losing any other node leaves the frontend serving.
"""

from __future__ import annotations

from graph.plan import Plan

from .base import GpuBudget, PlanChoices, check_files_edges
from .slurm_placement import place
from .slurm_script import ScriptInput, script
from .slurm_settings import Options, step_settings

__all__ = ["Options", "SlurmTarget", "place", "render", "script_name", "step_settings"]


class SlurmTarget:
    """One sbatch script: one allocation, one srun step per service."""

    name = "slurm"
    summary = "one sbatch script per graph: one allocation, one srun step per service (graph submit runs it)"
    single_host = False
    Options = Options

    def render(self, plan: Plan, options: Options | None = None) -> dict[str, str]:
        return render(plan, options)

    def gpu_budget(self, options: Options) -> GpuBudget:
        """The per-host limit is always ``gpus_per_node``; the total only when the cluster size
        (``max_nodes``, else ``nodes``) is given."""
        size = options.max_nodes or options.nodes
        return GpuBudget(total=size * options.gpus_per_node if size else None, per_host=options.gpus_per_node)

    def plan_choices(self, options: Options) -> PlanChoices:
        """``-O network`` and ``-O shared_cache_dir``."""
        return PlanChoices(network=options.network, shared_dir=options.shared_cache_dir)


def script_name(plan: Plan, options: Options | None = None) -> str:
    """The file name of the sbatch script for ``plan``."""
    options = options or Options()
    return f"{options.job_name or plan.graph}.sbatch"


def render(plan: Plan, options: Options | None = None) -> dict[str, str]:
    """``{"<job name>.sbatch": text}``.

    Raises:
        ValueError: bad ``platform["slurm"]`` settings or ``-O mock_gpus``, a service
            larger than a node, more nodes needed than ``nodes``/``max_nodes`` allow.
    """
    options = options or Options()
    steps = step_settings(plan, options)
    placement = place(plan, steps, options.gpus_per_node, options.nodes, options.max_nodes)
    if not options.shared_cache_dir:
        check_files_edges(plan, {name: tuple(f"node {i}" for i in idx) for name, idx in placement.hosts.items()},
                          "-O shared_cache_dir=PATH: a folder every node mounts (a shared filesystem); or let "
                          "encoder and consumer fit on one node (-O gpus_per_node)")
    text = script(ScriptInput(plan=plan, options=options, placement=placement, steps=steps))
    return {script_name(plan, options): text}
