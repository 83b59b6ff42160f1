#!/bin/bash
# A two-node cluster on one machine for the `nodes` tests: two network namespaces joined by a
# veth pair on a private subnet, each node's processes in their own UTS namespace with their
# own hostname (node0, node1). Open MPI launches across them with its rsh launcher pointed
# at a generated agent script that enters the node instead of ssh; the generated
# $HPCTRAIN_NODES_MPIRUN is mpirun started on node0 with the options the two nodes need.
# Each node runs on its own half of the machine's CPUs.
#
# The emulation's two departures from real nodes, and what they are set to:
# - Both nodes share this machine's cores, and with the network's kernel work. Ranks that
#   busy-poll starve the token bucket's timer, and every limited transfer then waits for a
#   scheduler tick (8 or 24 ms per message whatever its size): ranks yield when idle
#   (mpi_yield_when_idle), as Open MPI does by itself on a node it knows is oversubscribed.
# - One TCP connection (BBR) through the token bucket moved multi-MiB messages at 60-70% of
#   the rate (4 MiB allreduced between the nodes in 59.7 ms at 1 Gbit/s; 35.1 ms, the rate,
#   with 4 connections; bench/nodes_emulation.py): Open MPI stripes each pair's messages
#   over 4 (btl_tcp_links), as HPC sites tune TCP networks.
# - tc's token bucket refills once per timer tick (HZ = 250: 4 ms); a bucket smaller than
#   rate x 4 ms throttles a link that is never over its rate. `rate` sizes it to that.
#
#   cluster.sh up ENV_FILE         create it; ENV_FILE gets what the tests need
#   cluster.sh rate ENV_FILE RATE  limit the link with a tc token bucket (e.g. 100mbit; "off")
#   cluster.sh down ENV_FILE       stop its processes, remove the namespaces and the files
#
# Needs root (ip netns). Without it, `up` writes HPCTRAIN_NODES_SKIP with the reason, and the
# tests report themselves skipped. Only what `up` created is touched by `down`.
set -euo pipefail

cmd=${1:?usage: cluster.sh up|rate|down ENV_FILE [RATE]}
env_file=${2:?usage: cluster.sh up|rate|down ENV_FILE [RATE]}
subnet=10.213.7
node_ip=("$subnet.1" "$subnet.2")

up() {
  rm -f "$env_file"
  if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
    echo "HPCTRAIN_NODES_SKIP='needs root, ip and unshare'" >"$env_file"
    return 0
  fi
  local id=$$ dir
  dir=$(mktemp -d /tmp/hpctrain_nodes_XXXXXX)
  local ns=("hpct${id}n0" "hpct${id}n1") veth=("hv${id}a" "hv${id}b")
  # Written first, so `down` removes whatever `up` got to.
  cat >"$env_file" <<END
HPCTRAIN_NODES_DIR=$dir
HPCTRAIN_NODES_NS0=${ns[0]}
HPCTRAIN_NODES_NS1=${ns[1]}
HPCTRAIN_NODES_VETH0=${veth[0]}
HPCTRAIN_NODES_VETH1=${veth[1]}
HPCTRAIN_NODES_IP0=${node_ip[0]}
HPCTRAIN_NODES_IP1=${node_ip[1]}
HPCTRAIN_NODES_SUBNET=$subnet.0/24
HPCTRAIN_NODES_AGENT=$dir/agent.sh
HPCTRAIN_NODES_HOSTFILE=$dir/hosts
HPCTRAIN_NODES_MPIRUN=$dir/mpirun.sh
END
  if ! ip netns add "${ns[0]}" 2>"$dir/err"; then
    echo "HPCTRAIN_NODES_SKIP='cannot create network namespaces: $(tr -d "'" <"$dir/err")'" >>"$env_file"
    return 0
  fi
  ip netns add "${ns[1]}"
  ip link add "${veth[0]}" type veth peer name "${veth[1]}"
  for i in 0 1; do
    ip link set "${veth[$i]}" netns "${ns[$i]}"
    ip -n "${ns[$i]}" addr add "${node_ip[$i]}/24" dev "${veth[$i]}"
    ip -n "${ns[$i]}" link set "${veth[$i]}" up
    ip -n "${ns[$i]}" link set lo up
  done
  # The agent Open MPI calls instead of ssh: AGENT HOST COMMAND...
  cat >"$dir/agent.sh" <<END
#!/bin/sh
host="\$1"; shift
case "\$host" in
  ${node_ip[0]}|node0) ns=${ns[0]}; name=node0 ;;
  ${node_ip[1]}|node1) ns=${ns[1]}; name=node1 ;;
  *) echo "hpctrain nodes agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" unshare --uts sh -c "hostname \$name; \$*"
END
  chmod +x "$dir/agent.sh"
  printf '%s slots=2\n%s slots=2\n' "${node_ip[0]}" "${node_ip[1]}" >"$dir/hosts"
  # Each node gets its own half of this machine's CPUs (one core each on 2 cores): pin.sh,
  # run by mpirun in front of every rank, narrows the rank to its node's CPUs after Open
  # MPI's own binding (which would put rank 0 of both nodes on core 0).
  local n cpus0 cpus1
  n=$(nproc)
  if [ "$n" -ge 2 ]; then cpus0="0-$((n / 2 - 1))" cpus1="$((n / 2))-$((n - 1))"; else cpus0=0 cpus1=0; fi
  cat >"$dir/pin.sh" <<'END'
#!/bin/sh
case "$(hostname)" in
  node0) exec taskset -c @CPUS0@ "$@" ;;
  node1) exec taskset -c @CPUS1@ "$@" ;;
  *) echo "hpctrain nodes pin: not on a test node ($(hostname))" >&2; exit 1 ;;
esac
END
  # mpirun on node0 over both nodes: mpirun.sh [MPIRUN OPTIONS] PROGRAM [ARGS] (ranks fill
  # node0 first); pin.sh goes in front of PROGRAM.
  cat >"$dir/mpirun.sh" <<'END'
#!/bin/bash
opts=()
need() { [ "$1" -ge "$2" ] || { echo "mpirun.sh: $3 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    --mca) need $# 3 "$1"; opts+=("$1" "$2" "$3"); shift 3 ;;
    -np|-n|--map-by|--bind-to|--rank-by|-x) need $# 2 "$1"; opts+=("$1" "$2"); shift 2 ;;
    --oversubscribe|--report-bindings|--tag-output|--timestamp-output) opts+=("$1"); shift ;;
    -*) echo "mpirun.sh: option $1 is not one it knows (add it, or put -- before the program)" >&2; exit 2 ;;
    *) break ;;
  esac
done
exec ip netns exec @NS0@ unshare --uts sh -c 'hostname node0; exec "$@"' sh \
  mpirun --allow-run-as-root --hostfile @DIR@/hosts --mca plm_rsh_agent @DIR@/agent.sh \
  --mca btl self,vader,tcp --mca btl_tcp_if_include @SUBNET@ --mca oob_tcp_if_include @SUBNET@ \
  --mca mpi_yield_when_idle 1 --mca btl_tcp_links 4 "${opts[@]}" @DIR@/pin.sh "$@"
END
  sed -i -e "s|@CPUS0@|$cpus0|; s|@CPUS1@|$cpus1|; s|@NS0@|${ns[0]}|; s|@DIR@|$dir|g; s|@SUBNET@|$subnet.0/24|g" \
    "$dir/pin.sh" "$dir/mpirun.sh"
  chmod +x "$dir/pin.sh" "$dir/mpirun.sh"
  echo "two nodes up: ${ns[0]} (node0, ${node_ip[0]}) and ${ns[1]} (node1, ${node_ip[1]}), files in $dir"
}

load() {
  [ -f "$env_file" ] || return 1
  # shellcheck disable=SC1090
  . "$env_file"
  [ -n "${HPCTRAIN_NODES_NS0:-}" ]
}

# tc's rate (e.g. 200mbit, 2.5gbit) in bytes per 4 ms timer tick, at least 256 KiB.
burst_bytes() {
  awk -v r="$1" 'BEGIN {
    if (r !~ /^[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)$/) exit 2
    unit = substr(r, length(r) - 3)
    bits = (r + 0) * (unit == "kbit" ? 1e3 : unit == "mbit" ? 1e6 : 1e9)
    b = int(bits / 2000)
    printf "%d\n", (b > 262144 ? b : 262144)
  }' || { echo "cluster.sh: rate $1: give a number and kbit, mbit or gbit (e.g. 2.5gbit)" >&2; exit 2; }
}

rate() {
  load || { echo "no cluster in $env_file" >&2; exit 1; }
  local r=${1:?RATE} burst=0
  [ "$r" = off ] || burst=$(burst_bytes "$r")
  local ns=("$HPCTRAIN_NODES_NS0" "${HPCTRAIN_NODES_NS1:?}") dev=("$HPCTRAIN_NODES_VETH0" "$HPCTRAIN_NODES_VETH1")
  for i in 0 1; do
    tc -n "${ns[$i]}" qdisc del dev "${dev[$i]}" root 2>/dev/null || true
    [ "$r" = off ] || tc -n "${ns[$i]}" qdisc add dev "${dev[$i]}" root tbf rate "$r" burst "$burst" latency 20ms
  done
  echo "link rate: $r (burst $burst bytes)"
}

down() {
  load || return 0
  for ns in "$HPCTRAIN_NODES_NS0" "$HPCTRAIN_NODES_NS1"; do
    if ip netns list | grep -qw "$ns"; then
      for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns"
    fi
  done
  rm -rf "${HPCTRAIN_NODES_DIR:?}"
  rm -f "$env_file"
  echo "two nodes down"
}

case "$cmd" in
  up) up ;;
  rate) rate "${3:?RATE}" ;;
  down) down ;;
  *) echo "usage: cluster.sh up|rate|down ENV_FILE [RATE]" >&2; exit 2 ;;
esac
