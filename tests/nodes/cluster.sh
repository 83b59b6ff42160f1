#!/bin/bash
# A two-node cluster on one machine for the `nodes` tests: two network namespaces joined by a
# veth pair on a private subnet, each node's processes in their own UTS namespace with their
# own hostname (node0, node1). Open MPI launches across them with its rsh launcher pointed
# at a generated agent script that enters the node instead of ssh.
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
  echo "two nodes up: ${ns[0]} (node0, ${node_ip[0]}) and ${ns[1]} (node1, ${node_ip[1]}), files in $dir"
}

load() {
  [ -f "$env_file" ] || return 1
  # shellcheck disable=SC1090
  . "$env_file"
  [ -n "${HPCTRAIN_NODES_NS0:-}" ]
}

rate() {
  load || { echo "no cluster in $env_file" >&2; exit 1; }
  local r=${1:?RATE}
  local ns=("$HPCTRAIN_NODES_NS0" "${HPCTRAIN_NODES_NS1:?}") dev=("$HPCTRAIN_NODES_VETH0" "$HPCTRAIN_NODES_VETH1")
  for i in 0 1; do
    tc -n "${ns[$i]}" qdisc del dev "${dev[$i]}" root 2>/dev/null || true
    [ "$r" = off ] || tc -n "${ns[$i]}" qdisc add dev "${dev[$i]}" root tbf rate "$r" burst 256kb latency 100ms
  done
  echo "link rate: $r"
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
