"""The sbatch script's serving loop: a step that ends is restarted in place; a lost node's services
are reported lost; only the frontend's end, the restart limit or cancelling ends the job.

Why a polling loop in the batch script, and not one keeper process per service
or a Python supervisor: the batch script is the one process that outlives every
step and owns every ``srun`` (its children), so it alone can wait for them and
restart them; a single loop is the single writer of status.json; bash and curl
are all it needs on the first node (our Python may exist only inside the
containers of ``-O container_image``); and it needs no ``wait -p`` (bash 5.1),
which the bash 4.4 of EL8 clusters lacks.

Why a lost node's services are not moved to another node: the frontend reaches
each replica at the host its config names (written once, at start), the ports
and GPUs were planned per node, and Slurm gives a running job no replacement
node. So they are reported ``lost`` (the frontend keeps them out of rotation,
as it does any unreachable replica) and the job serves on with the rest;
resubmit to get the capacity back.

How a step's end is read: the job being cancelled (squeue no longer says
RUNNING) ends the script quietly; the frontend's end ends the job; a step whose
node Slurm took out of the job (``--no-kill``; srun then ends with status 0,
measured on Slurm 22.05) is lost; anything else is restarted after the backoff
(``RESTART_BACKOFF_S``, doubling up to ``RESTART_BACKOFF_MAX_S``), at most
``RESTART_LIMIT`` times in a row. A service that served for ``RESTART_RESET_S``
before its step ended starts counting again.
"""

from __future__ import annotations

#: Defines the loop's helpers and runs it; the script's last part, after the frontend is healthy.
KEEP = r"""exit_text() {  # STATUS: how a step ended, in a few words (srun gives 128+N for a task killed by signal N)
  if (($1 > 128)); then
    echo "killed (SIG$(kill -l $(($1 - 128)) 2>/dev/null || echo $(($1 - 128))))"
  else
    echo "exit status $1"
  fi
}

job_running() {  # Slurm still runs this job (false while it is being cancelled; no answer counts as running)
  local state
  state=$(squeue -h -j "$SLURM_JOB_ID" -o %T 2>/dev/null || true)
  [[ -z $state || $state == RUNNING ]]
}

lost_hosts() {  # NAME: those of NAME's hosts that Slurm took out of the job (a lost node)
  local now host out=()
  now=$(squeue -h -j "$SLURM_JOB_ID" -o %N 2>/dev/null || true)
  [[ -n $now ]] || return 0
  now=" $(scontrol show hostnames "$now" 2>/dev/null | tr '\n' ' ') "
  [[ -n ${now// /} ]] || return 0
  for host in $(hosts_of "$1"); do
    [[ $now == *" $host "* ]] || out+=("$host")
  done
  echo "${out[*]-}"
}

step_ended() {  # NAME: NAME's step has ended: restart it, report it lost with its node, or end the job
  local name=$1 code=0 how hosts gone delay host
  wait "${PID_OF[$name]}" || code=$?
  how=$(exit_text "$code")
  LAST_EXIT_OF[$name]=$how
  hosts=$(hosts_of "$name")
  job_running || exit 143
  if [[ $name == "$FRONTEND" ]]; then
    JOB_MESSAGE="the frontend $name ended: $how"
    echo "servegraph: the frontend $name on $hosts ended: $how; stopping the graph" \
      "(see $RUN_DIR/logs/$name.log)" >&2
    exit 1
  fi
  gone=$(lost_hosts "$name")
  if [[ -n $gone ]]; then
    for host in $gone; do
      [[ " ${LOST_NODES[*]-} " == *" $host "* ]] || LOST_NODES+=("$host")
    done
    LAST_EXIT_OF[$name]="host lost"
    set_state "$name" lost
    echo "servegraph: $name lost with node $gone (Slurm took it out of the job); not restarted elsewhere:" \
      "its address, ports and GPUs are that node's; the frontend routes around it" >&2
    return 0
  fi
  if [[ ${STATE_OF[$name]} == healthy ]] && ((SECONDS - HEALTHY_AT_OF[$name] >= RESTART_RESET_S)); then
    STREAK_OF[$name]=0
    DELAY_OF[$name]=$RESTART_BACKOFF_S
  fi
  if ((STREAK_OF[$name] >= RESTART_LIMIT)); then
    JOB_MESSAGE="$name ended: $how, after ${STREAK_OF[$name]} restarts in a row; restart limit reached"
    set_state "$name" failed
    echo "servegraph: $name on $hosts ended: $how, after ${STREAK_OF[$name]} restarts in a row; restart limit" \
      "reached (-O restart_limit=$RESTART_LIMIT); stopping the graph (see $RUN_DIR/logs/$name.log)" >&2
    exit 1
  fi
  delay=${DELAY_OF[$name]}
  STREAK_OF[$name]=$((STREAK_OF[$name] + 1))
  RESTARTS_OF[$name]=$((RESTARTS_OF[$name] + 1))
  NEXT_START_OF[$name]=$((SECONDS + delay))
  DELAY_OF[$name]=$((delay * 2 > RESTART_BACKOFF_MAX_S ? RESTART_BACKOFF_MAX_S : (delay > 0 ? delay * 2 : 1)))
  set_state "$name" restarting
  echo "servegraph: $name on $hosts ended after $((SECONDS - STARTED_AT_OF[$name])) s: $how;" \
    "restart ${RESTARTS_OF[$name]} in $delay s (${STREAK_OF[$name]} of $RESTART_LIMIT in a row)" >&2
}

keep_serving() {  # until the job is cancelled, the frontend ends, or a service runs out of restarts
  local name
  while true; do
    for name in "${SERVICES[@]}"; do
      case ${STATE_OF[$name]} in
        healthy)
          kill -0 "${PID_OF[$name]}" 2>/dev/null || step_ended "$name"
          ;;
        starting)
          if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            step_ended "$name"
          elif curl -fsS -o /dev/null --max-time 2 "${HEALTH_OF[$name]}" 2>/dev/null; then
            now_healthy "$name"
            echo "servegraph: $name healthy again on $(hosts_of "$name")" \
              "(restart ${RESTARTS_OF[$name]}, $((SECONDS - STARTED_AT_OF[$name])) s after it started)"
          elif ((SECONDS - STARTED_AT_OF[$name] > ${STARTUP_S_OF[$name]})); then
            echo "servegraph: $name not healthy ${STARTUP_S_OF[$name]} s after its restart; stopping its step" >&2
            kill -TERM "${PID_OF[$name]}" 2>/dev/null || true
            STOP_AT_OF[$name]=$SECONDS
            set_state "$name" stopping
          fi
          ;;
        stopping)
          if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            step_ended "$name"
          elif ((SECONDS - STOP_AT_OF[$name] > STOP_TIMEOUT_S)); then
            kill -KILL "${PID_OF[$name]}" 2>/dev/null || true
          fi
          ;;
        restarting)
          ((SECONDS < NEXT_START_OF[$name])) || start_step "$name"
          ;;
      esac
    done
    sleep "$HEALTH_INTERVAL_S"
  done
}

JOB_STATE=serving
JOB_MESSAGE=""
write_status
keep_serving
"""
