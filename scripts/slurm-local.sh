#!/usr/bin/env bash
# A single-node Slurm on 127.0.0.1 for tests and local trials: `start DIR` installs slurm-wlm and munge when
# missing (root only), writes a munge key and a slurm.conf under DIR, starts munged, slurmctld and slurmd, and
# waits until `sinfo` shows the node idle; `stop DIR` stops them. Everything (config, key, state, spool, logs,
# sockets, pid files) lives under DIR, so nothing under /etc is touched and several DIRs do not collide as
# long as their ports differ (SLURM_LOCAL_PORT, default 6817; slurmd uses the next port).
#
# Clients find the cluster through SLURM_CONF: after `start`, run `export SLURM_CONF=DIR/slurm.conf` (the
# script prints the line). No cgroup plugins (proctrack/linuxproc, task/none) so it runs in containers
# without a writable cgroup tree; no accounting storage, so `sacct` does not work here.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1
dir=$2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
port=${SLURM_LOCAL_PORT:-6817}
conf="$dir/slurm.conf"

die() { echo "slurm-local: $*" >&2; exit 1; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    # As scripts/setup.sh: root installs directly, anyone else through passwordless sudo.
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        sudo -n true 2>/dev/null || die "slurm-wlm/munge are not installed and this is neither root nor allowed passwordless sudo: run \`sudo apt-get install -y slurm-wlm munge\` first"
        sudo="sudo -n"
    fi
    echo "slurm-local: installing slurm-wlm and munge" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge >"$dir/apt.log" 2>&1 \
        || { $sudo apt-get update >>"$dir/apt.log" 2>&1 \
            && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge >>"$dir/apt.log" 2>&1; } \
        || die "apt-get install slurm-wlm munge failed; see $dir/apt.log"
}

write_config() {
    local host cpus mem_mb user
    host=$(hostname -s)
    cpus=$(nproc --all)
    # 90% of physical memory: a RealMemory above what slurmd measures puts the node in state INVAL.
    mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
    user=$(id -un)
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
    chmod 700 "$dir/munge"
    if [[ ! -f "$dir/munge/munge.key" ]]; then
        # mungekey writes a random key; dd is the fallback for older munge packages.
        mungekey --create --keyfile="$dir/munge/munge.key" 2>/dev/null \
            || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
    fi
    chmod 400 "$dir/munge/munge.key"
    cat >"$conf" <<EOF
# Written by scripts/slurm-local.sh: one node on 127.0.0.1, state under $dir.
ClusterName=contracam-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
DependencyParameters=kill_invalid_depend
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    install_packages
    write_config
    if ! pid_alive "$dir/munge/munged.pid"; then
        # --force: munged refuses to run as root or with a key outside /etc/munge otherwise.
        munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
            --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
            --seed-file="$dir/munge/munged.seed" \
            || die "munged did not start; see $dir/log/munged.log"
    fi
    export SLURM_CONF="$conf"
    if ! pid_alive "$dir/slurmctld.pid"; then
        # -i: ignore state files from an earlier start; the cluster is throwaway.
        slurmctld -f "$conf" -i || die "slurmctld did not start; see $dir/log/slurmctld.log"
    fi
    if ! pid_alive "$dir/slurmd.pid"; then
        slurmd -f "$conf" || die "slurmd did not start; see $dir/log/slurmd.log"
    fi
    local state=""
    for _ in $(seq 1 60); do
        state=$(sinfo -h -o '%T' 2>/dev/null || true)
        if [[ $state == idle* ]]; then
            echo "slurm-local: node idle; export SLURM_CONF=$conf" >&2
            echo "export SLURM_CONF=$conf"
            return
        fi
        sleep 1
    done
    die "the node is not idle after 60 s (sinfo: '${state}'); see $dir/log/slurmctld.log and $dir/log/slurmd.log"
}

stop_pid() {
    local f=$1 name=$2
    if pid_alive "$f"; then
        local pid
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && { echo "slurm-local: $name ($pid) still up; killing" >&2; kill -9 "$pid" || true; }
    fi
    rm -f "$f"
}

stop() {
    stop_pid "$dir/slurmd.pid" slurmd
    stop_pid "$dir/slurmctld.pid" slurmctld
    stop_pid "$dir/munge/munged.pid" munged
    echo "slurm-local: stopped" >&2
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
