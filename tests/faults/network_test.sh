#!/usr/bin/env bash
# The uplink under network faults (label faults; docs/RELIABILITY.md). The agent runs in a
# network namespace of its own, joined to this host by a veth pair with addresses the test
# makes; its gateway runs on the host behind a TCP proxy of the project's own
# (tests/faults/tcp_proxy.py). Pixel hits flow into the agent the whole time, from inside the
# namespace, while each fault lasts a while and then heals:
#  - a full partition (nftables drops everything on the veth, both ways);
#  - random loss of 10 % of the packets both ways (`numgen random mod 100 < 10 drop`);
#  - a one-way partition (requests pass, answers are dropped);
#  - 200 ms of added latency each way (the proxy);
#  - a stalled path (the proxy stops reading both sides; the connections stay open).
# During the partitions the agent's /metrics says the uplink is down and names the last
# error; after each heal the backlog drains (the time is printed); at the end every hit that
# was answered 200 is in the gateway's sink exactly once.
#
#   tests/faults/network_test.sh AGENT_BINARY GATEWAY_BINARY
# Needs root (namespaces, nftables; exit 77 otherwise), iproute2, nftables (installed when
# missing), python3, curl, zstd.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
agent_bin=$(realpath "${1:?usage: network_test.sh AGENT GATEWAY}")
gateway_bin=$(realpath "${2:?usage: network_test.sh AGENT GATEWAY}")
# shellcheck source=tests/deploy/common.sh
source "$src/tests/deploy/common.sh"
[[ $(id -u) -eq 0 ]] || { echo "network_test: needs root (network namespaces); skipped"; exit 77; }
command -v nft >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
command -v ip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null

ns=opnet$$ veth=opn$$a peer=opn$$b
net=10.231.$(($$ % 250))
host_ip=$net.1 agent_ip=$net.2
work=$(mktemp -d /tmp/outpost-network-test.XXXXXX)
agent_pid= gateway_pid= proxy_pid=
cleanup() {
  for p in $agent_pid $gateway_pid $proxy_pid; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$veth" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {  # with the agent's last words
  echo "FAIL: $*" >&2
  tail -15 "$work/agent.log" >&2
  exit 1
}
nsx() { ip netns exec "$ns" "$@"; }

echo "== the namespace: $ns, $agent_ip <-> $host_ip over $veth/$peer"
ip netns add "$ns"
ip link add "$veth" type veth peer name "$peer"
ip link set "$peer" netns "$ns"
ip addr add "$host_ip/30" dev "$veth"
ip link set "$veth" up
nsx ip addr add "$agent_ip/30" dev "$peer"
nsx ip link set "$peer" up
nsx ip link set lo up
nsx nft add table inet faults
nsx nft add chain inet faults out '{ type filter hook output priority 0; }'
nsx nft add chain inet faults in '{ type filter hook input priority 0; }'

"$src/deploy/certs/make-certs" "$work/certs" --devices 1 >/dev/null
gport=$(free_port) ghttp=$(free_port) pport=$(free_port) aport=$(free_port) ahttp=$(free_port)
gateway_toml "127.0.0.1:$gport" "127.0.0.1:$ghttp" "$work/certs" "$work/sink" > "$work/gateway.toml"
cat > "$work/agent.toml" <<TOML
[agent]
id = "device-1"
http_listen = "127.0.0.1:$ahttp"
[buffer]
path = "$work/agent/buffer.db"
[sources.http]
enabled = true
listen = "127.0.0.1:$aport"
$(uplink_toml "$host_ip:$pport" "$work/certs")
connect_timeout = "2s"
ack_timeout = "3s"
ping_interval = "1s"
backoff_initial = "100ms"
TOML
mkdir -p "$work/agent"
echo pass > "$work/proxy-mode"

"$gateway_bin" --config "$work/gateway.toml" > "$work/gateway.log" 2>&1 &
gateway_pid=$!
python3 "$src/tests/faults/tcp_proxy.py" "$host_ip" "$pport" 127.0.0.1 "$gport" "$work/proxy-mode" \
  > "$work/proxy.log" 2>&1 &
proxy_pid=$!
# Not through nsx: $! must be the agent itself (ip netns exec execs it), not a subshell.
ip netns exec "$ns" "$agent_bin" run --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
agent_pid=$!

metrics() { nsx curl -s --max-time 2 "http://127.0.0.1:$ahttp/metrics" || true; }
connected() { metrics | awk '$1 == "outpost_agent_uplink_connected" { print $2 }'; }
last_error() { metrics | grep -o 'last_error="[^"]*"' | head -1; }
stats() { "$agent_bin" buffer stats --path "$work/agent/buffer.db" --json 2>/dev/null || echo '{}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }
for _ in $(seq 1 100); do [[ $(connected) == 1 ]] && break; sleep 0.1; done
check "the agent in the namespace reaches the gateway through the proxy" test "$(connected)" = 1

answered=0
report=()
# phase NAME SECONDS APPLY HEAL [partition]: hits flow, the fault lasts SECONDS, then heals.
phase() {
  local name=$1 seconds=$2 apply=$3 heal=$4 partition=${5:-}
  echo "== $name for $seconds s"
  nsx python3 "$src/tests/faults/pixel_sender.py" 127.0.0.1 "$aport" 200 $((seconds + 4)) "$name" \
    > "$work/sent-$name" &
  local sender=$!
  sleep 2
  eval "$apply"
  local down=0 error=""
  for _ in $(seq 1 $((seconds * 5))); do
    [[ $(connected) == 0 ]] && down=1 && error=$(last_error)
    sleep 0.2
  done
  if [[ -n $partition ]]; then
    check "during it /metrics says the uplink is down" test "$down" = 1
    check "and names the last error: $error" test -n "$error" -a "$error" != 'last_error=""'
  else
    echo "during it: uplink down at some point: $down ${error}"
  fi
  # What was stored up to the heal is the backlog: the time until it is acknowledged is the
  # time to drain (hits keep arriving meanwhile).
  local backlog_end healed drain
  backlog_end=$(( $(stats | field next_seq) - 1 ))
  eval "$heal"
  healed=$(date +%s.%N)
  for _ in $(seq 1 600); do
    [[ $(stats | field acked_seq) -ge $backlog_end ]] && break
    sleep 0.05
  done
  drain=$(python3 -c "import time; print(round(time.time() - $healed, 1))")
  check "the backlog up to seq $backlog_end was acknowledged after the heal" \
    test "$(stats | field acked_seq)" -ge "$backlog_end"
  wait "$sender"
  local sent
  sent=$(cat "$work/sent-$name")
  answered=$((answered + sent))
  for _ in $(seq 1 600); do
    [[ $(stats | field pending_events) == 0 ]] && break
    sleep 0.1
  done
  check "then everything (nothing pending)" test "$(stats | field pending_events)" = 0
  echo "$name: $sent hits answered; the backlog (to seq $backlog_end) drained $drain s after the heal"
  report+=("$name: $sent hits answered; the backlog (to seq $backlog_end) drained $drain s after the heal")
}

phase "full partition" 8 \
  "nsx nft add rule inet faults out oifname $peer drop; nsx nft add rule inet faults in iifname $peer drop" \
  "nsx nft flush chain inet faults out; nsx nft flush chain inet faults in" partition
phase "10 % packet loss" 8 \
  "nsx nft add rule inet faults out oifname $peer numgen random mod 100 '<' 10 drop; nsx nft add rule inet faults in iifname $peer numgen random mod 100 '<' 10 drop" \
  "nsx nft flush chain inet faults out; nsx nft flush chain inet faults in"
phase "one-way partition (answers dropped)" 8 \
  "nsx nft add rule inet faults in iifname $peer drop" \
  "nsx nft flush chain inet faults in" partition
phase "200 ms latency each way" 6 "echo 'delay 200' > $work/proxy-mode" "echo pass > $work/proxy-mode"
phase "stalled path (the proxy stops reading)" 8 "echo stall > $work/proxy-mode" \
  "echo pass > $work/proxy-mode" partition

kill "$agent_pid"; wait "$agent_pid" || true; agent_pid=
total=$(( $(stats | field next_seq) - 1 ))
kill "$gateway_pid"; wait "$gateway_pid" || true; gateway_pid=
read -r distinct dups highest <<< "$(sink_report "$work/sink")"
echo "answered $answered hits; the agent stored $total; the sink holds $distinct distinct seqs (highest $highest), $dups duplicated"
check "every answered hit was stored" test "$total" = "$answered"
check "every stored event is in the sink exactly once" test "$distinct $dups $highest" = "$total 0 $total"
printf '%s\n' "${report[@]}"
echo "network_test: all checks passed"
