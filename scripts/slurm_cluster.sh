#!/usr/bin/env bash
# Install and start a one-node SLURM cluster on this machine (Debian, root, no systemd).
#
#   scripts/slurm_cluster.sh          install if needed, (re)start, wait until the node is idle
#   scripts/slurm_cluster.sh stop     stop the daemons this script started
#
# Idempotent: rerunning it keeps a healthy cluster and repairs a broken one. On failure it prints
# "slurm_cluster: <reason>" on stderr and exits non-zero; tests/test_slurm.py skips with that
# reason. The cluster is for tests and demos: no accounting, no cgroups, one partition "debug".
set -euo pipefail

STATE=/var/lib/scatterlab-slurm      # spool, logs and pid files of this cluster
CONF=/etc/slurm/slurm.conf
MARK="# written by scatterlab scripts/slurm_cluster.sh"

die() { echo "slurm_cluster: $*" >&2; exit 1; }
log() { echo "slurm_cluster: $*"; }

stop_daemons() {
    # Only the daemons started from our pid files, never by name.
    for d in slurmd slurmctld munged; do
        local pidf="$STATE/$d.pid"
        if [[ -s $pidf ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
            kill "$(cat "$pidf")" 2>/dev/null || true
        fi
        rm -f "$pidf"
    done
    sleep 1
}

if [[ ${1:-} == stop ]]; then stop_daemons; log "stopped"; exit 0; fi

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"
command -v apt-get >/dev/null || die "apt-get not found: only Debian/Ubuntu are supported"

# --- install ------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/tmp/slurm_cluster_apt.log 2>&1 \
        || die "apt-get update failed (no network?), see /tmp/slurm_cluster_apt.log"
    apt-get install -y -qq slurmctld slurmd slurm-client munge >>/tmp/slurm_cluster_apt.log 2>&1 \
        || die "apt-get install slurmctld slurmd slurm-client munge failed, see /tmp/slurm_cluster_apt.log"
fi

# --- slurm.conf: this host's name, CPUs and memory ----------------------------------------------
host=$(hostname -s)
# slurmd -C reports what slurmd will detect; use its numbers so the node is not drained as
# "Low RealMemory" or "Low CPUs". Keep 5% memory headroom.
read -r cpus sockets cores threads mem < <(slurmd -C | awk '
    /^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { print v["CPUs"], v["SocketsPerBoard"] * v["Boards"], v["CoresPerSocket"],
                v["ThreadsPerCore"], v["RealMemory"] }')
[[ -n ${mem:-} && $cpus -gt 0 ]] || die "slurmd -C could not detect CPUs/memory"
mem=$((mem * 95 / 100))

mkdir -p "$STATE"/{ctld,d,log} /etc/slurm /run/munge
chown -R slurm:slurm "$STATE"/ctld
new_conf=$(cat <<EOF
$MARK
ClusterName=scatterlab
SlurmctldHost=$host
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups or systemd in containers/VMs: track processes by parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
# Schedule single CPUs and memory, so a 2-job sweep runs its jobs side by side.
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Jobs that ask for no memory get 2 GB per CPU (not the whole node), so they can share it.
DefMemPerCPU=2048
# Requeue: submitit's preemption/timeout handler calls "scontrol requeue".
JobRequeue=1
# Short grace between SIGTERM and SIGKILL so tests do not wait; requeued jobs restart at once.
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
NodeName=$host CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite it"
fi
conf_changed=0
if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$CONF"
    conf_changed=1
fi

# --- daemons ------------------------------------------------------------------------------------
alive() { [[ -s $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

if [[ $conf_changed -eq 1 ]] || ! alive munged || ! alive slurmctld || ! alive slurmd; then
    stop_daemons
    [[ -s /etc/munge/munge.key ]] || /usr/sbin/mungekey --create >/dev/null 2>&1 \
        || die "could not create /etc/munge/munge.key"
    chown munge:munge /etc/munge/munge.key /run/munge && chmod 400 /etc/munge/munge.key
    # munged writes its own pid file in /run/munge; copy it to ours once it is up.
    runuser -u munge -- /usr/sbin/munged --force >"$STATE/log/munged.out" 2>&1 \
        || die "munged failed to start: $(tail -n 3 "$STATE/log/munged.out")"
    for _ in $(seq 20); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.2; done
    cp /run/munge/munged.pid "$STATE/munged.pid" 2>/dev/null || true
    munge -n | unmunge >/dev/null 2>&1 || die "munge does not work (munge -n | unmunge failed)"
    # -c: ignore saved state from an older config (stale jobs of a previous run).
    slurmctld -c >"$STATE/log/slurmctld.out" 2>&1 \
        || die "slurmctld failed: $(tail -n 3 "$STATE/log/slurmctld.log" 2>/dev/null)"
    slurmd >"$STATE/log/slurmd.out" 2>&1 \
        || die "slurmd failed: $(tail -n 3 "$STATE/log/slurmd.log" 2>/dev/null)"
fi

# --- wait for the node ----------------------------------------------------------------------------
for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1 || true)
    case $state in
        idle|mixed|allocated|completing) break ;;
        drain*|down*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
case ${state:-} in
    idle|mixed|allocated|completing) ;;
    *) die "node $host is '${state:-unknown}' after 60 s; see $STATE/log/slurmd.log and slurmctld.log" ;;
esac
log "ready: node $host ($cpus CPUs, ${mem} MB), partition debug, state $state"
