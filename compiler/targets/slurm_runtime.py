"""Fixed bash pieces of the sbatch script: the step wrapper and the start/health/teardown helpers.

They are constants (no graph in them) so that every generated script shares
them verbatim; :mod:`compiler.targets.slurm_script` adds the graph's part.
"""

from __future__ import annotations

#: Heredoc terminator; no generated file may contain it as a line.
EOF_MARK = "SG_EOF"

#: Name of the wrapper every step runs, written into the run folder.
STEP_WRAPPER = "sg-step.sh"

#: Job-level GPU requests sbatch exports; srun reads them back as its own request,
#: so a step asking for 1 GPU would inherit the job's whole count unless unset.
INHERITED_GPU_ENV = ("SLURM_GPUS", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK", "SLURM_TRES_PER_TASK")

#: Runs one service inside its srun step.
STEP_WRAPPER_TEXT = r"""#!/usr/bin/env bash
# One service inside its srun step: sets SG_SELF_HOST (this node) and SG_NODE_RANK
# (this host's rank within a multi-host replica), expands ${VAR} in the service's
# env and argv, logs the GPUs Slurm bound to it, then becomes the service.
# Usage: sg-step.sh NAME [KEY=VALUE ...] -- ARGV...
set -euo pipefail
name=$1
shift
export SG_SELF_HOST="${SLURMD_NODENAME:-$(hostname -s)}"
export SG_NODE_RANK="${SLURM_PROCID:-0}"

expand() {  # TEXT: every ${VAR} replaced by VAR's value; an unset VAR is an error
  local rest=$1 out="" var
  while [[ $rest =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
    var=${BASH_REMATCH[1]}
    if [[ -z ${!var+set} ]]; then
      echo "sg-step: $name: \${$var} is not set; the sbatch script exports SG_HOST_* for every service" >&2
      return 1
    fi
    out+=${rest%%"${BASH_REMATCH[0]}"*}${!var}
    rest=${rest#*"${BASH_REMATCH[0]}"}
  done
  printf '%s' "$out$rest"
}

while (($#)) && [[ $1 != -- ]]; do
  value=$(expand "${1#*=}") || exit 1
  export "${1%%=*}=$value"
  shift
done
shift
args=()
for arg in "$@"; do
  value=$(expand "$arg") || exit 1
  args+=("$value")
done
echo "sg-step: $name host=$SG_SELF_HOST rank=$SG_NODE_RANK CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}"
exec "${args[@]}"
"""

#: Start bookkeeping, health waits and teardown; @INTERVAL@ and @STOP_TIMEOUT@ are filled in.
HELPERS = r"""declare -A PID_OF=()
STARTED=()
started() {  # NAME: the srun just sent to the background runs service NAME
  PID_OF[$1]=$!
  STARTED+=("$1")
}

wait_healthy() {  # NAME URL TIMEOUT_S: until URL answers 2xx; fail if the step dies or time runs out
  local deadline=$((SECONDS + $3))
  until curl -fsS -o /dev/null --max-time 5 "$2" 2>/dev/null; do
    if ! kill -0 "${PID_OF[$1]}" 2>/dev/null; then
      echo "servegraph: $1 exited before it became healthy; last lines of $RUN_DIR/logs/$1.log:" >&2
      tail -n 30 "logs/$1.log" >&2 || true
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "servegraph: $1 not healthy at $2 after $3 s; see $RUN_DIR/logs/$1.log" >&2
      exit 1
    fi
    sleep @INTERVAL@
  done
  echo "servegraph: $1 healthy"
}

stop_steps() {  # on any exit: SIGTERM every step (srun forwards it), newest first, then SIGKILL
  local code=$? i
  trap - EXIT TERM INT
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PID_OF[${STARTED[i]}]}" 2>/dev/null || true
  done
  local deadline=$((SECONDS + @STOP_TIMEOUT@))
  while ((SECONDS < deadline)) && [[ -n "$(jobs -pr)" ]]; do sleep 0.5; done
  if [[ -n "$(jobs -pr)" ]]; then
    echo "servegraph: steps ignored SIGTERM for @STOP_TIMEOUT@ s; killing them" >&2
    kill -KILL $(jobs -pr) 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  echo "servegraph: all steps stopped (exit $code)"
  exit "$code"
}
trap stop_steps EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
"""

#: After the frontend is healthy: serve until a step ends or the job is cancelled.
SERVE = r"""# Serve until the job is cancelled (scancel, time limit) or a step ends.
wait -n || true
for name in "${STARTED[@]}"; do
  if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
    echo "servegraph: $name exited; stopping the graph (see $RUN_DIR/logs/$name.log)" >&2
  fi
done
exit 1
"""
