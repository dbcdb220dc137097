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
exports ``SG_HOST_<SERVICE>`` for every service, writes our processes' config
files (heredocs; they expand ``${SG_HOST_*}`` themselves) and the step wrapper
``sg-step.sh`` (sets ``SG_SELF_HOST``/``SG_NODE_RANK``, expands placeholders in
argv/env, logs CUDA_VISIBLE_DEVICES, execs the service), starts the Plan's
waves (engines first), waits for each wave's health with curl and the Plan's
startup timeouts, starts the frontend last, prints ``servegraph: ready at URL``
and serves until cancelled or until a step ends. A trap stops every step on
any exit (SIGTERM through srun, then SIGKILL).
"""

from __future__ import annotations

from graph.plan import Plan

from .base import GpuBudget
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
    text = script(ScriptInput(plan=plan, options=options, placement=placement, steps=steps))
    return {script_name(plan, options): text}
