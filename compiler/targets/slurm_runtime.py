"""Fixed bash pieces of the sbatch script: the step wrapper, the services' bookkeeping and status
file, start-up and teardown.

They are constants (no graph in them) so that every generated script shares
them verbatim; :mod:`compiler.targets.slurm_script` adds the graph's part (the
service tables ``SERVICES``, ``FRONTEND``, ``ROLE_OF``, ``NODES_OF``,
``HEALTH_OF``, ``STARTUP_S_OF``, the settings and ``start_step``) and
:mod:`compiler.targets.slurm_keep` the loop that keeps the graph serving.
"""

from __future__ import annotations

#: Heredoc terminator; no generated file may contain it as a line.
EOF_MARK = "SG_EOF"

#: Name of the wrapper every step runs, written into the run folder.
STEP_WRAPPER = "sg-step.sh"

#: The file in the run folder that mirrors the job's state for ``graph status``.
STATUS_FILE = "status.json"

#: Job-level GPU requests sbatch exports; srun reads them back as its own request,
#: so a step asking for 1 GPU would inherit the job's whole count unless unset.
INHERITED_GPU_ENV = ("SLURM_GPUS", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK", "SLURM_TRES_PER_TASK")

#: Runs one service inside its srun step.
STEP_WRAPPER_TEXT = r"""#!/usr/bin/env bash
# One service inside its srun step: sets SG_SELF_HOST (this node) and SG_NODE_RANK
# (this host's rank within a multi-host replica), expands ${VAR} in the service's
# env and argv, logs its host, pid and the GPUs Slurm bound to it, then becomes
# the service (so the pid logged is the service's).
# Usage: sg-step.sh NAME [KEY=VALUE ...] [--followers FOLLOWER_ARGV...] -- ARGV...
# Rank 0 runs ARGV; the other ranks of a multi-host replica run FOLLOWER_ARGV when
# it is given (an engine whose other hosts run another command), else ARGV too.
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

followers=()
while (($#)) && [[ $1 != -- ]]; do
  if [[ $1 == --followers ]]; then
    shift
    while (($#)) && [[ $1 != -- ]]; do followers+=("$1"); shift; done
    break
  fi
  value=$(expand "${1#*=}") || exit 1
  export "${1%%=*}=$value"
  shift
done
shift
if ((SG_NODE_RANK != 0 && ${#followers[@]})); then
  set -- "${followers[@]}"
fi
args=()
for arg in "$@"; do
  value=$(expand "$arg") || exit 1
  args+=("$value")
done
echo "sg-step: $name host=$SG_SELF_HOST rank=$SG_NODE_RANK pid=$$ CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}"
exec "${args[@]}"
"""

#: Each service's state, and status.json, which mirrors it (replaced in one rename on every change).
STATE = r"""# ---- what each service is doing; status.json mirrors it for `graph status`
# states: waiting starting healthy restarting stopping lost failed stopped
declare -A PID_OF=() STATE_OF=() SINCE_OF=() STARTED_AT_OF=() HEALTHY_AT_OF=() STOP_AT_OF=() \
  RESTARTS_OF=() STREAK_OF=() DELAY_OF=() NEXT_START_OF=() LAST_EXIT_OF=() PROCS_OF=()
for name in "${SERVICES[@]}"; do
  PID_OF[$name]=""; STATE_OF[$name]=waiting; SINCE_OF[$name]=0; STARTED_AT_OF[$name]=0; HEALTHY_AT_OF[$name]=0
  STOP_AT_OF[$name]=0; RESTARTS_OF[$name]=0; STREAK_OF[$name]=0; DELAY_OF[$name]=$RESTART_BACKOFF_S
  NEXT_START_OF[$name]=0; LAST_EXIT_OF[$name]=""; PROCS_OF[$name]=""
done
STARTED=()
LOST_NODES=()
JOB_STATE=starting
JOB_MESSAGE="starting the services"
BATCH_HOST=$(hostname -s)

json_str() {  # TEXT: TEXT as a JSON string (our texts have no control characters)
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}

json_list() {  # WORD...: the words as a JSON list of strings
  local sep="" word
  printf '['
  for word in "$@"; do
    printf '%s%s' "$sep" "$(json_str "$word")"
    sep=", "
  done
  printf ']'
}

hosts_of() {  # NAME: the host names of NAME's allocation node(s)
  local i out=()
  for i in ${NODES_OF[$1]}; do out+=("${SG_NODES[i]}"); done
  echo "${out[*]}"
}

write_status() {  # status.json in the run folder, replaced in one rename: readers never see half of it
  local name now sep=""
  printf -v now '%(%s)T' -1
  {
    printf '{"version": 1, "job": "%s", "graph": %s, "state": "%s", "message": %s, "updated": %s,\n' \
      "$SLURM_JOB_ID" "$(json_str "$SG_GRAPH")" "$JOB_STATE" "$(json_str "$JOB_MESSAGE")" "$now"
    printf ' "url": "%s/v1", "batch_host": "%s", "run_dir": %s, "nodes": %s, "lost_nodes": %s,\n' \
      "$SG_URL" "$BATCH_HOST" "$(json_str "$RUN_DIR")" "$(json_list "${SG_NODES[@]}")" \
      "$(json_list ${LOST_NODES[@]+"${LOST_NODES[@]}"})"
    printf ' "restart_limit": %s, "services": {\n' "$RESTART_LIMIT"
    for name in "${SERVICES[@]}"; do
      printf '%s  "%s": {"role": "%s", "hosts": %s, "health": %s, "state": "%s", "since": %s, "restarts": %s, ' \
        "$sep" "$name" "${ROLE_OF[$name]}" "$(json_list $(hosts_of "$name"))" "$(json_str "${HEALTH_OF[$name]}")" \
        "${STATE_OF[$name]}" "${SINCE_OF[$name]}" "${RESTARTS_OF[$name]}"
      printf '"last_exit": %s, "srun_pid": %s, "processes": %s}' "$(json_str "${LAST_EXIT_OF[$name]}")" \
        "${PID_OF[$name]:-null}" "$(json_list ${PROCS_OF[$name]})"
      sep=$',\n'
    done
    printf '\n}}\n'
  } > .status.json.tmp && mv -f .status.json.tmp status.json
}

set_state() {  # NAME STATE
  STATE_OF[$1]=$2
  printf -v "SINCE_OF[$1]" '%(%s)T' -1
  write_status
}

started() {  # NAME: the srun just sent to the background runs service NAME
  PID_OF[$1]=$!
  STARTED_AT_OF[$1]=$SECONDS
  PROCS_OF[$1]=""
  [[ " ${STARTED[*]-} " == *" $1 "* ]] || STARTED+=("$1")
  set_state "$1" starting
}

processes_of() {  # NAME: "host:pid" of each process sg-step.sh became for NAME (its log's last lines)
  local hosts
  hosts=$(wc -w <<<"${NODES_OF[$1]}")
  { grep -aoE "sg-step: $1 host=[^ ]+ rank=[0-9]+ pid=[0-9]+" "logs/$1.log" 2>/dev/null || true; } |
    tail -n "$hosts" | sed -E 's/.* host=([^ ]+) rank=[0-9]+ pid=([0-9]+)$/\1:\2/' | tr '\n' ' '
}

now_healthy() {  # NAME: NAME answers its health check
  HEALTHY_AT_OF[$1]=$SECONDS
  PROCS_OF[$1]=$(processes_of "$1")
  set_state "$1" healthy
}
"""

#: Start-up (health waits) and teardown.
HELPERS = r"""wait_healthy() {  # NAME: until NAME answers its health check; the job ends if its step ends or time runs out
  local name=$1 deadline=$((SECONDS + ${STARTUP_S_OF[$1]}))
  until curl -fsS -o /dev/null --max-time 5 "${HEALTH_OF[$name]}" 2>/dev/null; do
    if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
      JOB_MESSAGE="$name exited before it became healthy"
      echo "servegraph: $name exited before it became healthy; last lines of $RUN_DIR/logs/$name.log:" >&2
      tail -n 30 "logs/$name.log" >&2 || true
      exit 1
    fi
    if ((SECONDS > deadline)); then
      JOB_MESSAGE="$name not healthy after ${STARTUP_S_OF[$name]} s"
      echo "servegraph: $name not healthy at ${HEALTH_OF[$name]} after ${STARTUP_S_OF[$name]} s;" \
        "see $RUN_DIR/logs/$name.log" >&2
      exit 1
    fi
    sleep "$HEALTH_INTERVAL_S"
  done
  now_healthy "$name"
  echo "servegraph: $name healthy"
}

stop_steps() {  # on any exit: SIGTERM every step (srun forwards it), newest first, then SIGKILL
  local code=$? i name
  trap - EXIT TERM INT
  case $code in
    143) JOB_MESSAGE="cancelled (scancel, graph cancel or the time limit)" ;;
    130) JOB_MESSAGE="interrupted" ;;
  esac
  JOB_STATE=stopping
  write_status
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PID_OF[${STARTED[i]}]}" 2>/dev/null || true
  done
  local deadline=$((SECONDS + STOP_TIMEOUT_S))
  while ((SECONDS < deadline)) && [[ -n "$(jobs -pr)" ]]; do sleep 0.5; done
  if [[ -n "$(jobs -pr)" ]]; then
    echo "servegraph: steps ignored SIGTERM for $STOP_TIMEOUT_S s; killing them" >&2
    kill -KILL $(jobs -pr) 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  for name in "${SERVICES[@]}"; do
    case ${STATE_OF[$name]} in lost | failed) ;; *) STATE_OF[$name]=stopped ;; esac
  done
  JOB_STATE=ended
  write_status
  echo "servegraph: all steps stopped (exit $code)"
  exit "$code"
}
trap stop_steps EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
"""
