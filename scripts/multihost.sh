#!/usr/bin/env bash
# A multi-host test bed on one machine: N "hosts" (network + UTS namespaces on one Linux bridge,
# addresses in 198.18.0.0/15 only) and a Slurm cluster across them, 4 fake GPUs per host.
# For servegraph's e2e_multihost tests and CI.
#
# Usage (as root):
#   scripts/multihost.sh up              create or repair the bed, start Slurm, wait until every node is up
#   scripts/multihost.sh down            stop everything and remove it (safe to run twice)
#   scripts/multihost.sh status          one line per part; exit 0 only when the bed and its Slurm are usable
#   scripts/multihost.sh exec HOST -- CMD...   run CMD inside HOST (its network, UTS and /sys)
#   scripts/multihost.sh env             prints `export SLURM_CONF=...` for this cluster: eval "$(... env)"
#   scripts/multihost.sh hosts           one line per host: NAME ADDRESS
#   scripts/multihost.sh lose HOST       a host dies: its link goes down, all its processes get SIGKILL
# Env (for `up`): MULTIHOST_HOSTS=N hosts (default: as many as the bed has, else 3),
#                 MULTIHOST_CPUS=N CPUs advertised per host (default 4).
#
# Layout. Hosts sg-h1..sg-hN: network namespace /run/netns/sg-hI (`ip netns`), UTS namespace bind-mounted
# on /run/servegraph-multihost/uts/sg-hI (hostname sg-hI), interface eth0 = 198.18.0.(10+I)/24, a veth
# whose other end is on bridge sg-br0 (198.18.0.1/24, in the root namespace); loopback up; no default
# route, so nothing leaves the bridge. /etc/hosts gets one line per host (marked "# servegraph-multihost")
# so the names resolve from every host and the root namespace. `exec` is `ip netns exec` (which also
# mounts a /sys of the host's own network: UCX lists interfaces from /sys/class/net, and the root's /sys
# would show the root's) followed by `nsenter --uts`.
#
# Slurm: its own folder /etc/servegraph-multihost (slurm.conf + gres.conf; select it with SLURM_CONF),
# its own ports (slurmctld 6917, slurmd 6918; the single-node cluster of scripts/slurm-local.sh keeps
# 6817/6818 and /etc/slurm, and both run side by side) and its own munged (socket in
# /run/servegraph-multihost/munge, same key), so stopping one cluster never breaks the other.
# slurmctld runs in the root namespace at 198.18.0.1; one slurmd per host runs inside that host, so
# every batch script and srun step it starts lives on that host. Logs: /var/log/servegraph-multihost.
#
# Facts measured here (Slurm 22.05.8, UCX 1.23.0 in nixl 1.5.1, Debian, 2 cores), which the script
# and the e2e_multihost tests rely on:
# * Several slurmd on one machine need no --enable-multiple-slurmd build when each runs in its own
#   network and UTS namespace: slurmd takes its node name from the UTS hostname and binds its port in
#   its own network. What must differ per node lives in files: slurm.conf uses %n in SlurmdSpoolDir,
#   SlurmdPidFile and SlurmdLogFile; fake GPU device files differ per host
#   (/dev/servegraph-multihost/sg-hI/gpu0..3, char 195:N) and gres.conf names them per NodeName.
#   CUDA_VISIBLE_DEVICES is the device's index on its node (0..3 on every host), as on real hosts.
# * slurmd inside a host exits at once ("No filesystem mounted on /sys/fs/cgroup", "Unable to
#   initialize cgroup plugin"): the host's /sys has no cgroup mounts. cgroup.conf with
#   CgroupPlugin=cgroup/v1 skips the detection (proctrack/linuxproc and task/none use no cgroups).
# * Without SlurmdParameters=config_overrides every node is INVAL/drained ("Low socket*core*thread
#   count, Low CPUs"): each advertises MULTIHOST_CPUS (default 4) of the machine's 2 cores.
# * A lost host (`lose`: link down, every process in it SIGKILLed, slurmd included): with
#   SlurmdTimeout=30 the node shows "*" (not responding) after ~15-20 s and DOWN after 25-45 s.
#   Then a job submitted without --no-kill is killed ("CANCELLED ... DUE TO NODE FAILURE") and
#   requeued (PENDING; --no-requeue stops that). With `sbatch --no-kill` the job keeps RUNNING on
#   the other nodes (its node list shrinks: sg-h[1-2]); its steps on them go on; a step that spans
#   the lost node ends on every node; new steps can start on the remaining nodes only. The batch
#   script runs on the first node, so losing that host ends the job whatever the flags.
# * A slurmd back before SlurmdTimeout (the node never went DOWN) leaves the lost host's steps as
#   ghosts: still listed by `squeue -s`, holding their CPUs/GPUs, their srun waiting forever, and
#   `scancel JOB.STEP` fails ("Kill job error ... No error"). So `up` sets a node DOWN before
#   restarting its slurmd when Slurm lists steps there but the host runs no slurmstepd, as Slurm
#   does for a host that rebooted; ReturnToService=2 then takes it back (idle) at registration.
# * UCX between two hosts of this bed takes shared memory unless told not to (one kernel, one
#   /dev/shm): 12 MiB over NIXL put 3.8 KB on the receiver's eth0. With UCX_TLS=tcp,self they all
#   cross the bridge; UCX then listens on eth0 and lo and rules lo out by itself ("local loopback
#   remote non-loopback"), so UCX_NET_DEVICES is not needed.
set -euo pipefail

readonly HOST_PREFIX=sg-h
readonly BRIDGE=sg-br0
readonly SUBNET=198.18.0
readonly BRIDGE_ADDR=198.18.0.1
readonly HOST_ADDR_OFFSET=10
readonly PREFIX_LEN=24
readonly GPUS_PER_HOST=4
readonly CTLD_PORT=6917
readonly SLURMD_PORT=6918
readonly SLURMD_TIMEOUT_S=30
readonly RUN_DIR=/run/servegraph-multihost
readonly UTS_DIR=$RUN_DIR/uts
readonly MUNGE_DIR=$RUN_DIR/munge
readonly MUNGE_SOCKET=$MUNGE_DIR/munge.socket
readonly MUNGE_PID=$MUNGE_DIR/munged.pid
readonly MUNGE_KEY=/etc/munge/munge.key
readonly HOSTS_FILE=$RUN_DIR/hosts
readonly LOCK_FILE=/run/servegraph-multihost.lock
readonly CONF_DIR=/etc/servegraph-multihost
readonly SLURM_CONF_FILE=$CONF_DIR/slurm.conf
readonly SPOOL_DIR=/var/spool/servegraph-multihost
readonly LOG_DIR=/var/log/servegraph-multihost
readonly DEV_DIR=/dev/servegraph-multihost
readonly ETC_HOSTS=/etc/hosts
readonly HOSTS_MARK="# servegraph-multihost"
readonly UP_TIMEOUT_S=60
readonly UP_STATES="idle mixed allocated completing"

log() { echo "multihost: $*" >&2; }

die() {
    log "ERROR: $*"
    local f
    for f in "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd-*.log "$LOG_DIR"/munged.log; do
        if [[ -s "$f" ]]; then
            echo "----- tail of $f -----" >&2
            tail -n 15 "$f" >&2
        fi
    done
    exit 1
}

require_root() {
    [[ "$(id -u)" -eq 0 ]] || { log "ERROR: must run as root (try: sudo $0 $*)"; exit 1; }
}

# The hosts `up` builds: MULTIHOST_HOSTS of them, else as many as the bed has (a repair keeps its
# size), else 3.
wanted_hosts() {
    local n="${MULTIHOST_HOSTS:-}" i
    if [[ -z "$n" ]]; then
        n=3
        [[ -s "$HOSTS_FILE" ]] && n="$(wc -l <"$HOSTS_FILE")"
    fi
    if [[ ! "$n" =~ ^[1-9][0-9]*$ ]] || ((n > 200)); then
        log "ERROR: MULTIHOST_HOSTS must be an integer from 1 to 200, got '$n'"
        exit 2
    fi
    for ((i = 1; i <= n; i++)); do echo "$HOST_PREFIX$i"; done
}

# The hosts of the running bed (as `up` recorded them), else the wanted ones.
bed_hosts() {
    if [[ -s "$HOSTS_FILE" ]]; then awk '{print $1}' "$HOSTS_FILE"; else wanted_hosts; fi
}

host_addr() { echo "$SUBNET.$((HOST_ADDR_OFFSET + ${1#"$HOST_PREFIX"}))"; }

# Runs a command inside a host: its network namespace (with its own /sys) and its UTS namespace.
in_host() {
    local host="$1"
    shift
    ip netns exec "$host" nsenter --uts="$UTS_DIR/$host" -- "$@"
}

# pid from a pidfile if that process is alive, else nothing.
live_pid() {
    local pidfile="$1" pid
    [[ -r "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# TERM, then KILL after ~5 s, for the given pids (those already gone are skipped).
stop_pids() {
    local pid i alive
    (($#)) || return 0
    kill "$@" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do
        alive=()
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        ((${#alive[@]})) || return 0
        sleep 0.2
    done
    log "pids ${alive[*]} ignored SIGTERM for 5s; sending SIGKILL"
    kill -9 "${alive[@]}" 2>/dev/null || true
}

# -- packages and munge ---------------------------------------------------------------------------

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && [[ -x /usr/sbin/munged ]] && command -v nsenter >/dev/null && command -v ip >/dev/null; then
        return 0
    fi
    log "installing slurm-wlm, munge, iproute2, util-linux (apt)"
    export DEBIAN_FRONTEND=noninteractive
    local pkgs=(slurm-wlm munge iproute2 util-linux)
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -qq
    fi
    if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null \
            || die "apt-get install ${pkgs[*]} failed"
    fi
}

# A munged of our own (same key as scripts/slurm-local.sh's), so either cluster can stop alone.
ensure_munge() {
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating munge key $MUNGE_KEY"
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        chown munge:munge "$MUNGE_KEY"
        chmod 0400 "$MUNGE_KEY"
    fi
    install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
    install -d -m 0755 "$LOG_DIR"
    touch "$LOG_DIR/munged.log"
    chown munge:munge "$LOG_DIR/munged.log"
    live_pid "$MUNGE_PID" >/dev/null && return 0
    runuser -u munge -- /usr/sbin/munged --force --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
        --log-file="$LOG_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" 9>&- \
        || die "munged failed to start"
    munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET" >/dev/null \
        || die "munge round trip on $MUNGE_SOCKET failed"
}

# -- network --------------------------------------------------------------------------------------

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$BRIDGE_ADDR/$PREFIX_LEN" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

# The UTS namespace of a host, bind-mounted on a file so it outlives its processes.
ensure_uts() {
    local host="$1" file="$UTS_DIR/$1"
    install -d -m 0755 "$UTS_DIR"
    if ! findmnt -n "$file" >/dev/null 2>&1; then
        touch "$file"
        unshare --uts="$file" hostname "$host"
    fi
    [[ "$(nsenter --uts="$file" hostname)" == "$host" ]] || nsenter --uts="$file" hostname "$host"
}

ensure_host_net() {
    local host="$1" addr veth="$1-v"
    addr="$(host_addr "$host")"
    [[ -e "/run/netns/$host" ]] || ip netns add "$host"
    if ! ip netns exec "$host" ip link show eth0 >/dev/null 2>&1; then
        ip link del "$veth" 2>/dev/null || true
        ip link add "$veth" type veth peer name "$host-e"
        ip link set "$host-e" netns "$host"
        ip netns exec "$host" ip link set "$host-e" name eth0
    fi
    ip link set "$veth" master "$BRIDGE"
    ip link set "$veth" up
    ip netns exec "$host" ip link set lo up
    ip netns exec "$host" ip addr replace "$addr/$PREFIX_LEN" dev eth0
    ip netns exec "$host" ip link set eth0 up
}

# /etc/hosts: one marked line per host; rewritten in place (it may be a bind mount).
write_etc_hosts() {
    local kept host
    kept="$(grep -vF "$HOSTS_MARK" "$ETC_HOSTS" || true)"
    {
        printf '%s\n' "$kept"
        for host in "$@"; do printf '%s\t%s %s\n' "$(host_addr "$host")" "$host" "$HOSTS_MARK"; done
    } >"$ETC_HOSTS.servegraph-multihost.new"
    cat "$ETC_HOSTS.servegraph-multihost.new" >"$ETC_HOSTS"
    rm -f "$ETC_HOSTS.servegraph-multihost.new"
}

# Char devices (major 195 = nvidia) so slurmd binds them and sets CUDA_VISIBLE_DEVICES.
ensure_fake_gpus() {
    local host="$1" hostnum="${1#"$HOST_PREFIX"}" g dev
    install -d -m 0755 "$DEV_DIR/$host"
    for ((g = 0; g < GPUS_PER_HOST; g++)); do
        dev="$DEV_DIR/$host/gpu$g"
        [[ -c "$dev" || -L "$dev" ]] && continue
        rm -f "$dev"
        if ! mknod -m 0666 "$dev" c 195 $((120 + GPUS_PER_HOST * (hostnum - 1) + g)) 2>/dev/null; then
            ln -s /dev/null "$dev" || die "cannot create fake GPU device $dev"
        fi
    done
}

# Removes one host: its processes, namespaces, veth and devices.
remove_host() {
    local host="$1" pids
    if [[ -e "/run/netns/$host" ]]; then
        mapfile -t pids < <(ip netns pids "$host" 2>/dev/null || true)
        stop_pids "${pids[@]}"
        ip netns del "$host" 2>/dev/null || true
    fi
    ip link del "$host-v" 2>/dev/null || true
    if findmnt -n "$UTS_DIR/$host" >/dev/null 2>&1; then
        umount "$UTS_DIR/$host"
    fi
    rm -f "$UTS_DIR/$host" "$RUN_DIR/slurmd-$host.pid"
    rm -rf "${DEV_DIR:?}/$host" "${SPOOL_DIR:?}/slurmd-$host"
}

# Hosts of ours that exist (netns or UTS file), whatever the bed's size was.
existing_hosts() {
    {
        ls /run/netns 2>/dev/null || true
        ls "$UTS_DIR" 2>/dev/null || true
    } | grep -E "^${HOST_PREFIX}[0-9]+$" | sort -u
}

# -- slurm ----------------------------------------------------------------------------------------

render_slurm_conf() {
    local cpus="$1" first="$2" last="$3" mem_mb real_mem host
    shift 3
    mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
    # every host offers the machine's memory (they share it; jobs sized for slurm-local.sh fit)
    real_mem=$((mem_mb * 95 / 100))
    cat <<EOF
# Generated by servegraph scripts/multihost.sh; edits are overwritten.
ClusterName=sgmultihost
SlurmctldHost=$(hostname -s)(${BRIDGE_ADDR})
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=${MUNGE_SOCKET}
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((real_mem / cpus))
GresTypes=gpu
ReturnToService=2
SlurmdTimeout=${SLURMD_TIMEOUT_S}
SchedulerType=sched/backfill
StateSaveLocation=${SPOOL_DIR}/slurmctld
SlurmdSpoolDir=${SPOOL_DIR}/slurmd-%n
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd-%n.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
KillWait=5
MinJobAge=300
SlurmdParameters=config_overrides
EOF
    for host in "$@"; do
        echo "NodeName=$host NodeAddr=$(host_addr "$host") NodeHostname=$host CPUs=$cpus Boards=1" \
            "SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$real_mem" \
            "Gres=gpu:$GPUS_PER_HOST State=UNKNOWN"
    done
    echo "PartitionName=hosts Nodes=${HOST_PREFIX}[$first-$last] Default=YES OverSubscribe=YES" \
        "MaxTime=7-00:00:00 State=UP"
}

render_gres_conf() {
    local host
    echo "# Generated by servegraph scripts/multihost.sh; edits are overwritten."
    for host in "$@"; do
        echo "NodeName=$host Name=gpu File=$DEV_DIR/$host/gpu[0-$((GPUS_PER_HOST - 1))]"
    done
}

# Inside a host /sys is that network's own sysfs (see `exec`), with nothing on /sys/fs/cgroup:
# slurmd's cgroup autodetection fails there ("No filesystem mounted on /sys/fs/cgroup") and slurmd
# exits. Naming the plugin skips detection; proctrack/linuxproc and task/none never use cgroups.
render_cgroup_conf() {
    echo "# Generated by servegraph scripts/multihost.sh; edits are overwritten."
    echo "CgroupPlugin=cgroup/v1"
}

# Writes $2 to $1 only when different; returns 0 when the file changed.
write_if_changed() {
    local path="$1" content="$2"
    if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$content" ]]; then
        return 1
    fi
    printf '%s\n' "$content" >"$path"
    return 0
}

# Writes slurm.conf and gres.conf; returns 0 when either changed.
write_slurm_configs() {
    local cpus="${MULTIHOST_CPUS:-4}" changed=1 n=$#
    if [[ ! "$cpus" =~ ^[1-9][0-9]*$ ]]; then
        log "ERROR: MULTIHOST_CPUS must be a positive integer, got '$cpus'"
        exit 2
    fi
    install -d -m 0755 "$CONF_DIR" "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR/slurmctld"
    write_if_changed "$SLURM_CONF_FILE" "$(render_slurm_conf "$cpus" 1 "$n" "$@")" && changed=0
    write_if_changed "$CONF_DIR/gres.conf" "$(render_gres_conf "$@")" && changed=0
    write_if_changed "$CONF_DIR/cgroup.conf" "$(render_cgroup_conf)" && changed=0
    return "$changed"
}

# The slurmd of a host if it runs inside that host's network and UTS namespaces (not in ones that
# were since re-made).
host_slurmd_pid() {
    local host="$1" pid
    pid="$(live_pid "$RUN_DIR/slurmd-$host.pid")" || return 1
    [[ "$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)" == "$(stat -L -c %i "/run/netns/$host")" ]] \
        && [[ "$(stat -L -c %i "/proc/$pid/ns/uts" 2>/dev/null)" == "$(stat -L -c %i "$UTS_DIR/$host")" ]] \
        && echo "$pid"
}

start_slurm() {
    local restart="$1" host pid
    shift
    if [[ "$restart" == yes ]] && live_pid "$RUN_DIR/slurmctld.pid" >/dev/null; then
        log "config changed; restarting slurm daemons"
        for host in $(existing_hosts); do
            pid="$(live_pid "$RUN_DIR/slurmd-$host.pid")" && stop_pids "$pid"
        done
        pid="$(live_pid "$RUN_DIR/slurmctld.pid")" && stop_pids "$pid"
    fi
    if ! live_pid "$RUN_DIR/slurmctld.pid" >/dev/null; then
        SLURM_CONF="$SLURM_CONF_FILE" slurmctld -f "$SLURM_CONF_FILE" 9>&- || die "slurmctld failed to start"
    fi
    wait_ctld
    for host in "$@"; do
        install -d -m 0755 "$SPOOL_DIR/slurmd-$host"
        host_slurmd_pid "$host" >/dev/null && continue
        mark_lost "$host"
        # a slurmd outside the host (its namespace was re-made) cannot serve it: replace it
        pid="$(live_pid "$RUN_DIR/slurmd-$host.pid")" && stop_pids "$pid"
        SLURM_CONF="$SLURM_CONF_FILE" in_host "$host" slurmd -f "$SLURM_CONF_FILE" 9>&- \
            || die "slurmd of $host failed to start"
    done
}

wait_ctld() {
    local deadline=$((SECONDS + 20))
    until SLURM_CONF="$SLURM_CONF_FILE" timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; do
        ((SECONDS < deadline)) || die "slurmctld (port $CTLD_PORT) not answering after 20s"
        sleep 0.3
    done
}

# A host whose processes all died while Slurm still counts steps on it (see `lose`): set its node
# DOWN before its slurmd comes back, as Slurm does for a host that rebooted. A slurmd back within
# SlurmdTimeout would otherwise leave those steps as ghosts: listed, holding their CPUs and GPUs,
# their srun waiting forever, and scancel of the step failing ("Kill job error ... No error").
# DOWN ends them: jobs submitted with --no-kill lose the node and go on, others are requeued.
mark_lost() {
    local host="$1" steps
    steps="$(SLURM_CONF="$SLURM_CONF_FILE" timeout 10 squeue -h -s -w "$host" -o %i 2>/dev/null || true)"
    [[ -n "$steps" ]] || return 0
    if ip netns pids "$host" 2>/dev/null | xargs -r ps -o comm= -p 2>/dev/null | grep -q slurmstepd; then
        return 0
    fi
    log "$host lost its processes while Slurm runs steps there ($(tr '\n' ' ' <<<"$steps")); setting it DOWN"
    SLURM_CONF="$SLURM_CONF_FILE" scontrol update nodename="$host" state=down reason="host lost (multihost.sh)"
}

# "NODE STATE" lines from this cluster's slurmctld.
node_states() {
    SLURM_CONF="$SLURM_CONF_FILE" timeout 10 sinfo -h -N -o '%N %T' 2>/dev/null || true
}

# Exact states only: "idle*" (not responding) or "idle~" (powered off) cannot run a step.
is_up_state() { [[ " $UP_STATES " == *" $1 "* ]]; }

wait_nodes_up() {
    local deadline=$((SECONDS + UP_TIMEOUT_S)) node state down resumed=" "
    while ((SECONDS < deadline)); do
        down=()
        while read -r node state; do
            [[ -n "$node" ]] || continue
            is_up_state "$state" && continue
            down+=("$node:$state")
            if [[ "$state" == *down* || "$state" == *drain* || "$state" == *fail* ]] \
                && [[ "$resumed" != *" $node "* ]]; then
                log "node $node is '$state'; resuming it"
                SLURM_CONF="$SLURM_CONF_FILE" scontrol update nodename="$node" state=resume 2>/dev/null || true
                resumed+="$node "
            fi
        done < <(node_states)
        if ((${#down[@]} == 0)) && [[ -n "$(node_states)" ]]; then
            return 0
        fi
        sleep 0.5
    done
    die "nodes not up after ${UP_TIMEOUT_S}s: ${down[*]:-no answer from slurmctld}" \
        "(reasons: $(SLURM_CONF="$SLURM_CONF_FILE" sinfo -h -R -o '%N: %E;' 2>/dev/null | tr '\n' ' '))"
}

# -- commands -------------------------------------------------------------------------------------

cmd_up() {
    require_root up
    install_packages
    local hosts host restart=no
    wanted_hosts >/dev/null
    mapfile -t hosts < <(wanted_hosts)
    # daemons are started with fd 9 closed: one that kept it would hold the lock for its lifetime
    exec 9>"$LOCK_FILE"
    flock -w 120 9 || die "another 'multihost.sh up/down' holds $LOCK_FILE"
    for host in $(existing_hosts); do
        [[ " ${hosts[*]} " == *" $host "* ]] && continue
        log "removing $host (the bed now has ${#hosts[@]} hosts)"
        remove_host "$host"
    done
    ensure_munge
    ensure_bridge
    for host in "${hosts[@]}"; do
        ensure_uts "$host"
        ensure_host_net "$host"
        ensure_fake_gpus "$host"
    done
    write_etc_hosts "${hosts[@]}"
    for host in "${hosts[@]}"; do echo "$host $(host_addr "$host")"; done >"$HOSTS_FILE"
    write_slurm_configs "${hosts[@]}" && restart=yes
    start_slurm "$restart" "${hosts[@]}"
    wait_nodes_up
    cmd_status
}

cmd_down() {
    require_root down
    exec 9>"$LOCK_FILE"
    flock -w 120 9 || die "another 'multihost.sh up/down' holds $LOCK_FILE"
    local host pid
    # slurmctld first, so it does not react to slurmds going away
    pid="$(live_pid "$RUN_DIR/slurmctld.pid")" && stop_pids "$pid"
    for host in $(existing_hosts); do remove_host "$host"; done
    pid="$(live_pid "$MUNGE_PID")" && stop_pids "$pid"
    ip link del "$BRIDGE" 2>/dev/null || true
    if grep -qF "$HOSTS_MARK" "$ETC_HOSTS" 2>/dev/null; then write_etc_hosts; fi
    rm -rf "$RUN_DIR" "$DEV_DIR" "$SPOOL_DIR"
    rm -f "$LOCK_FILE"
    echo "multihost: down (config kept in $CONF_DIR, logs in $LOG_DIR)"
}

cmd_status() {
    local host addr bad=0 states node state name
    if [[ ! -s "$HOSTS_FILE" ]]; then
        echo "multihost: down (no bed; run: $0 up)"
        return 1
    fi
    while read -r host addr; do
        if [[ ! -e "/run/netns/$host" ]] || ! findmnt -n "$UTS_DIR/$host" >/dev/null 2>&1; then
            echo "multihost: $host: namespaces missing (run: $0 up)"
            bad=1
            continue
        fi
        name="$(in_host "$host" hostname 2>/dev/null || true)"
        if [[ "$name" != "$host" ]] || ! ip netns exec "$host" ip -4 -o addr show eth0 2>/dev/null \
            | grep -q " $addr/"; then
            echo "multihost: $host: hostname '$name' or address $addr wrong (run: $0 up)"
            bad=1
        fi
        if ! ip link show "$host-v" 2>/dev/null | grep -q "[<,]UP[,>]"; then
            echo "multihost: $host: link $host-v is down (run: $0 up)"
            bad=1
        fi
        if ! host_slurmd_pid "$host" >/dev/null; then
            echo "multihost: $host: no slurmd running inside it (run: $0 up)"
            bad=1
        fi
        if ! getent hosts "$host" | grep -q "^$addr "; then
            echo "multihost: $host does not resolve to $addr (run: $0 up)"
            bad=1
        fi
    done <"$HOSTS_FILE"
    states="$(node_states)"
    if [[ -z "$states" ]]; then
        echo "multihost: slurmctld (port $CTLD_PORT) not answering (run: $0 up)"
        return 1
    fi
    while read -r node state; do
        if ! is_up_state "$state"; then
            echo "multihost: node $node is '$state' (run: $0 up)"
            bad=1
        fi
    done <<<"$states"
    if ((bad)); then return 1; fi
    echo "multihost: up; $(wc -l <"$HOSTS_FILE") hosts ($(awk '{printf "%s%s=%s", sep, $1, $2; sep=" "}' \
        "$HOSTS_FILE")); slurm $(sinfo --version | awk '{print $2}'): $(tr '\n' ' ' <<<"$states")"
    echo "multihost: use it with: export SLURM_CONF=$SLURM_CONF_FILE"
}

# A dead machine: its link goes down (peers time out, as they would; no connection refused) and
# every process in it is killed with SIGKILL. `up` brings it back.
cmd_lose() {
    local host="${1:-}" pids
    require_root lose
    require_host "$host"
    ip link set "$host-v" down
    mapfile -t pids < <(ip netns pids "$host" 2>/dev/null || true)
    ((${#pids[@]})) && kill -9 "${pids[@]}" 2>/dev/null
    echo "multihost: $host lost: ${#pids[@]} processes killed, its link is down (run: $0 up to bring it back)"
}

require_host() {
    local host="$1"
    if [[ -z "$host" || ! -e "/run/netns/$host" ]] || ! findmnt -n "$UTS_DIR/$host" >/dev/null 2>&1; then
        log "ERROR: no host '$host' in the bed (hosts: $(bed_hosts | tr '\n' ' ')); run: $0 up"
        exit 1
    fi
}

cmd_exec() {
    local host="${1:-}"
    shift || true
    [[ "${1:-}" == -- ]] && shift
    if [[ -z "$host" || $# -eq 0 ]]; then
        echo "usage: $0 exec HOST -- CMD..." >&2
        exit 2
    fi
    require_root exec
    require_host "$host"
    exec ip netns exec "$host" nsenter --uts="$UTS_DIR/$host" -- "$@"
}

cmd_env() {
    echo "export SLURM_CONF=$SLURM_CONF_FILE"
}

cmd_hosts() {
    local host
    if [[ -s "$HOSTS_FILE" ]]; then cat "$HOSTS_FILE"; return 0; fi
    for host in $(wanted_hosts); do echo "$host $(host_addr "$host")"; done
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    exec) shift; cmd_exec "$@" ;;
    lose) shift; cmd_lose "$@" ;;
    env) cmd_env ;;
    hosts) cmd_hosts ;;
    *)
        echo "usage: $0 up|down|status|env|hosts|exec HOST -- CMD...|lose HOST" >&2
        exit 2
        ;;
esac
