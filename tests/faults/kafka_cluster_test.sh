#!/usr/bin/env bash
# Exactly once into a replicated Kafka cluster while its brokers die (label faults; docs/
# RELIABILITY.md, docs/gateway.md "A replicated cluster"). Three KRaft brokers on loopback
# (tests/kafka/broker cluster-start: every topic replicated 3 times, min.insync.replicas=2),
# two gateways writing to it with transactions, two agents generating events, one per gateway.
# While the events flow:
#  1. the leader of outpost.pixel's partition 0 is SIGKILLed;
#  2. a second broker is SIGKILLed: one of three is left, below min.insync.replicas, so writes
#     must stall (the agents' acknowledged counts stop), not lose;
#  3. both come back; then a broker is SIGKILLed again with transactions open, and comes back.
# Afterwards kcat, read_committed, finds every (agent_id, seq) of both agents exactly once.
#
#   tests/faults/kafka_cluster_test.sh AGENT_BINARY GATEWAY_BINARY
# Needs Java 17 and the Kafka jars (tests/kafka/broker fetch), kcat.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
agent_bin=$(realpath "${1:?usage: kafka_cluster_test.sh AGENT GATEWAY}")
gateway_bin=$(realpath "${2:?usage: kafka_cluster_test.sh AGENT GATEWAY}")
# shellcheck source=tests/deploy/common.sh
source "$src/tests/deploy/common.sh"
broker=$src/tests/kafka/broker
work=$(mktemp -d /tmp/outpost-kafka-cluster-test.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for n in 1 2 3; do "$broker" kill "$work/kafka/n$n" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${KEEP:-} ]] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$work"/*.log; do echo "--- $f" >&2; tail -8 "$f" >&2; done
  exit 1
}

# Six ports in a row, all free: three brokers and their controllers.
base=$(python3 -c '
import random, socket
for _ in range(200):
    b = random.randrange(20000, 60000, 2)
    try:
        socks = []
        for p in range(b, b + 6):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(b); break
    except OSError:
        pass
')
bootstrap=127.0.0.1:$base,127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4))
echo "== three brokers on $bootstrap"
"$broker" cluster-start "$work/kafka" "$base"
leader() {  # the node that leads outpost.pixel's partition 0
  kcat -b "$bootstrap" -L -t outpost.pixel 2>/dev/null | sed -n 's/.*partition 0, leader \([0-9]*\),.*/\1/p' | head -1
}

"$src/deploy/certs/make-certs" "$work/certs" --devices 2 >/dev/null
events=16000 rate=400
gports=() ghttps=()
for g in a b; do
  gport=$(free_port) ghttp=$(free_port)
  gports+=("$gport") ghttps+=("$ghttp")
  cat > "$work/gateway-$g.toml" <<TOML
[gateway]
id = "gateway-$g"
listen = "127.0.0.1:$gport"
http_listen = "127.0.0.1:$ghttp"
[tls]
ca_file = "$work/certs/ca.crt"
cert_file = "$work/certs/gateway.crt"
key_file = "$work/certs/gateway.key"
[sink]
type = "kafka"
[sink.kafka]
brokers = "$bootstrap"
create_topics = true
partitions = 2
replication = 3
transaction_timeout = "10s"
TOML
  "$gateway_bin" --config "$work/gateway-$g.toml" > "$work/gateway-$g.log" 2>&1 &
  pids+=($!)
done
for h in "${ghttps[@]}"; do
  for _ in $(seq 1 120); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$h/readyz") == 200 ]] && break
    sleep 0.5
  done
done
check "both gateways are ready (their Kafka sinks connected)" \
  test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ghttps[1]}/readyz")" = 200
for d in 1 2; do
  mkdir -p "$work/agent-$d"
  # device-1 sends to gateway a, device-2 to gateway b. With FAILOVER=1 each also lists the
  # other gateway, and fails over to it when its own does not answer: that shape loses
  # exactly-once today (docs/RELIABILITY.md, "Found and not fixed"), so it is not in the test
  # command; run it by hand to reproduce.
  own=${gports[$((d - 1))]} other=${gports[$((2 - d))]}
  endpoints="127.0.0.1:$own"
  [[ -n ${FAILOVER:-} ]] && endpoints+=",127.0.0.1:$other"
  cat > "$work/agent-$d.toml" <<TOML
[agent]
id = "device-$d"
http_listen = ""
[buffer]
path = "$work/agent-$d/buffer.db"
[generator]
enabled = true
events = $events
rate = $rate
[uplink]
endpoints = "$endpoints"
server_name = "localhost"
ca_file = "$work/certs/ca.crt"
cert_file = "$work/certs/device-$d.crt"
key_file = "$work/certs/device-$d.key"
backoff_max = "1s"
ack_timeout = "20s"
TOML
  "$agent_bin" run --config "$work/agent-$d.toml" > "$work/agent-$d.log" 2>&1 &
  pids+=($!)
done
stats() { "$agent_bin" buffer stats --path "$work/agent-$1/buffer.db" --json 2>/dev/null || echo '{}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }
acked() { echo $(( $(stats 1 | field acked_seq) + $(stats 2 | field acked_seq) )); }

sleep 6
first=$(leader)
[[ -n $first ]] || fail "no leader for outpost.pixel"
echo "== 1. SIGKILL the leader of outpost.pixel/0: node $first"
"$broker" kill "$work/kafka/n$first"
sleep 8
second=$(( first % 3 + 1 ))
echo "== 2. SIGKILL a second broker, node $second: one of three left, below min.insync.replicas"
"$broker" kill "$work/kafka/n$second"
sleep 4  # what was in flight settles
before=$(acked)
sleep 8
after=$(acked)
echo "acknowledged by the gateways in 8 s with one broker: $((after - before)) (before: $before)"
check "writes stall while only one broker is up (at most a batch's worth acknowledged)" \
  test $((after - before)) -le 1000
echo "== 3. both come back"
"$broker" restart "$work/kafka/n$first"
"$broker" restart "$work/kafka/n$second"
sleep 8
third=$(( second % 3 + 1 ))
echo "== 4. SIGKILL node $third with transactions open, then it comes back"
"$broker" kill "$work/kafka/n$third"
sleep 5
"$broker" restart "$work/kafka/n$third"

echo "== drain"
for _ in $(seq 1 240); do
  done_all=1
  for d in 1 2; do
    s=$(stats "$d")
    [[ $(field next_seq <<< "$s") -gt $events && $(field pending_events <<< "$s") == 0 ]] || done_all=0
  done
  [[ $done_all == 1 ]] && break
  sleep 1
done
for d in 1 2; do
  check "device-$d generated $events events and has none pending" \
    test "$(stats "$d" | field next_seq) $(stats "$d" | field pending_events)" = "$((events + 1)) 0"
done

echo "== kcat, read_committed"
for t in outpost.pixel outpost.sensor outpost.events outpost.bad; do
  kcat -b "$bootstrap" -C -t "$t" -o beginning -e -q -f '%h\n' -X isolation.level=read_committed \
    2>/dev/null || true
done > "$work/headers"
for d in 1 2; do
  grep "agent_id=device-$d\(,\|$\)" "$work/headers" | grep -o 'seq=[0-9]*' | cut -d= -f2 | sort -n > "$work/seqs-$d"
  n=$(wc -l < "$work/seqs-$d") distinct=$(uniq "$work/seqs-$d" | wc -l) top=$(tail -1 "$work/seqs-$d")
  echo "device-$d: $n records, $distinct distinct seqs, highest $top"
  check "device-$d: every seq 1..$events exactly once" test "$n $distinct $top" = "$events $events $events"
done
echo "kafka_cluster_test: all checks passed"
