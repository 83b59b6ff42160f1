#!/usr/bin/env bash
# A throwaway single-node Slurm cluster for the `slurm` tests: munged, slurmctld and slurmd
# from Debian's slurm-wlm and munge, all state in one temporary folder, on free ports.
#
#   tests/slurm/cluster.sh up ENV_FILE     start it; ENV_FILE receives SLURM_CONF=... to source
#   tests/slurm/cluster.sh down ENV_FILE   stop every daemon and remove the folder
#
# Runs as root (slurmd starts job steps as the submitting user). The node is this machine under
# its own hostname with its real CPU count and memory (`slurmd -C`); ProctrackType=linuxproc and
# TaskPlugin=task/none need no cgroups, so it works in containers and VMs.
set -euo pipefail

die() {
  echo "slurm cluster: $*" >&2
  exit 1
}

find_free_ports() {
  python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2
  shift 2
  local t=0
  until "$@" >/dev/null 2>&1; do
    sleep 0.5
    t=$((t + 1))
    if [ "$t" -ge $((limit * 2)) ]; then return 1; fi
  done
  echo "slurm cluster: $what" >&2
}

up() {
  local env_file=$1
  [ "$(id -u)" -eq 0 ] || die "needs root (SlurmUser=root; CI runs as root)"
  for tool in munged mungekey slurmctld slurmd sbatch srun scontrol sinfo; do
    command -v "$tool" >/dev/null || die "$tool not found: install Debian's slurm-wlm and munge (scripts/setup.sh does)"
  done
  if [ -f "$env_file" ]; then down "$env_file" || true; fi
  local dir
  dir=$(mktemp -d /tmp/hpctrain-slurm.XXXXXX)
  chmod 700 "$dir"
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
  chmod 700 "$dir/munge"

  # munge: a fresh key and a private socket, so the host's own munge (if any) is untouched.
  mungekey -c -k "$dir/munge/munge.key" >/dev/null
  munged --force --socket="$dir/munge/munge.socket.2" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" ||
    die "munged did not start (see $dir/log/munged.log)"

  local host node_line ctld_port slurmd_port
  # The node is this machine under its short host name, reached on loopback whether or not
  # the name resolves.
  host=$(hostname -s)
  # `slurmd -C` prints this node's real CPUs, sockets and memory; keep 5% of memory back.
  node_line=$(slurmd -C | head -1)
  node_line=$(echo "$node_line" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^RealMemory=/) { split($i, a, "="); $i = "RealMemory=" int(a[2] * 0.95) } print}')
  read -r ctld_port slurmd_port < <(find_free_ports)

  cat >"$dir/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh: a single-node test cluster.
ClusterName=hpctrain-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket.2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=600
MaxArraySize=1001
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$dir/slurm.conf
  {
    echo "SLURM_CONF=$dir/slurm.conf"
    echo "HPCTRAIN_SLURM_DIR=$dir"
  } >"$env_file"

  slurmctld -f "$SLURM_CONF" || die "slurmctld did not start (see $dir/log/slurmctld.log)"
  wait_for 30 "slurmctld up on port $ctld_port" scontrol ping ||
    die "slurmctld does not answer: $(tail -5 "$dir/log/slurmctld.log")"
  slurmd -f "$SLURM_CONF" || die "slurmd did not start (see $dir/log/slurmd.log)"
  wait_for 60 "node $host idle" bash -c "sinfo -h -n '$host' -o %t | grep -q idle" ||
    die "node $host did not become idle: $(sinfo -N 2>&1 | tail -2); $(tail -5 "$dir/log/slurmd.log")"
  sinfo >&2
}

kill_pidfile() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 40); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  kill -9 "$pid" 2>/dev/null || true
}

down() {
  local env_file=$1
  [ -f "$env_file" ] || return 0
  local dir
  dir=$(sed -n 's/^HPCTRAIN_SLURM_DIR=//p' "$env_file")
  rm -f "$env_file"
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  # Jobs still running are cancelled first, so no rank outlives the cluster.
  SLURM_CONF=$dir/slurm.conf scancel --quiet --user="$(id -un)" 2>/dev/null || true
  kill_pidfile "$dir/slurmd.pid"
  kill_pidfile "$dir/slurmctld.pid"
  kill_pidfile "$dir/munge/munged.pid"
  case "$dir" in
    /tmp/hpctrain-slurm.*) rm -rf "$dir" ;;
  esac
  echo "slurm cluster: stopped and removed $dir" >&2
}

case "${1:-}" in
  up) up "${2:?env file}" ;;
  down) down "${2:?env file}" ;;
  *) die "usage: $0 up|down ENV_FILE" ;;
esac
