#!/usr/bin/env bash
# deploy/compose.yaml brought up for real with podman-compose, as docs/install.md ("Compose")
# tells an operator to (label deploy):
#  - deploy/compose/prepare, then every image built locally (gateway, agent, Kafka,
#    mosquitto) on the debootstrap'd Debian base; nothing is pulled;
#  - `podman-compose up`: the gateway turns ready once Kafka answers; each service runs as
#    its own unprivileged user;
#  - pixel hits (curl), sensor readings (mosquitto_pub, QoS 1) and a good and a bad JSON
#    order through the published ports; kcat reads them from Kafka, read_committed: every
#    accepted event exactly once (by its agent_id and seq headers), the bad one in
#    outpost.bad with its reason, and the agent's acknowledged count, backlog and drops add
#    up with what Kafka holds;
#  - `podman-compose down -v` removes the containers and volumes.
#
#   tests/deploy/compose_test.sh
# Needs root, podman, runc, podman-compose, Java 17 and Maven (installed when missing).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
cd "$src"
[[ $(id -u) -eq 0 ]] || { echo "compose_test: needs root; skipped"; exit 77; }
need=()
for tool in podman runc podman-compose kcat mosquitto_pub curl; do command -v $tool >/dev/null || need+=("$tool"); done
[[ -x /usr/lib/cni/dnsname ]] || need+=(dnsname)
if [[ ${#need[@]} -gt 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc podman-compose kcat \
    mosquitto-clients curl golang-github-containernetworking-plugin-dnsname >/dev/null
fi
# shellcheck source=tests/deploy/common.sh
source "$src/tests/deploy/common.sh"

work=$(mktemp -d /tmp/outpost-compose-test.XXXXXX)
project=outposttest$$
compose() { podman-compose -p "$project" -f deploy/compose.yaml "$@"; }
cleanup() {
  compose down -v >/dev/null 2>&1 || true
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

use_runc "$work"
export OUTPOST_CERTS=$work/certs OUTPOST_BIND=127.0.0.1
export OUTPOST_GATEWAY_PORT OUTPOST_GATEWAY_HTTP_PORT OUTPOST_PIXEL_PORT OUTPOST_AGENT_HTTP_PORT \
  OUTPOST_MQTT_PORT OUTPOST_KAFKA_PORT
OUTPOST_GATEWAY_PORT=$(free_port) OUTPOST_GATEWAY_HTTP_PORT=$(free_port) OUTPOST_PIXEL_PORT=$(free_port)
OUTPOST_AGENT_HTTP_PORT=$(free_port) OUTPOST_MQTT_PORT=$(free_port) OUTPOST_KAFKA_PORT=$(free_port)

echo "== deploy/compose/prepare"
deploy/compose/prepare > "$work/prepare.log" 2>&1 || { tail -20 "$work/prepare.log" >&2; fail "prepare"; }

echo "== podman-compose build (every image from the project's Dockerfiles)"
compose build > "$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; fail "podman-compose build"; }
for image in gateway agent kafka mosquitto; do
  check "the $image image was built here" podman image exists "localhost/outpost-$image"
done

echo "== podman-compose up"
t0=$(date +%s)
compose up -d > "$work/up.log" 2>&1 || { tail -40 "$work/up.log" >&2; fail "podman-compose up"; }
http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }
logs() { for s in kafka gateway mosquitto agent; do echo "--- $s"; podman logs --tail 15 "${project}_${s}_1" 2>&1; done >&2; }
wait_ready() {  # URL WHAT
  for _ in $(seq 1 240); do
    [[ $(http_status "$1") == 200 ]] && return 0
    sleep 1
  done
  logs
  fail "$2 never answered 200 on $1"
}
wait_ready "http://127.0.0.1:$OUTPOST_GATEWAY_HTTP_PORT/readyz" "the gateway"
wait_ready "http://127.0.0.1:$OUTPOST_AGENT_HTTP_PORT/readyz" "the agent"
echo "ok: the gateway (its Kafka sink connected) and the agent are ready after $(( $(date +%s) - t0 )) s"
check "the gateway runs as uid 10001" test "$(podman exec "${project}_gateway_1" id -u)" = 10001
check "the agent runs as uid 10001" test "$(podman exec "${project}_agent_1" id -u)" = 10001
check "Kafka runs as uid 10002" test "$(podman exec "${project}_kafka_1" id -u)" = 10002
check "mosquitto runs unprivileged" test "$(podman exec "${project}_mosquitto_1" id -u)" != 0

echo "== events through the published ports"
pixels=300 readings=200
for i in $(seq 1 "$pixels"); do
  code=$(http_status "http://127.0.0.1:$OUTPOST_PIXEL_PORT/p.gif?site=shop&page=/item/$i")
  [[ $code == 200 ]] || fail "pixel hit $i answered $code"
done
echo "ok: $pixels pixel hits answered 200"
# The agent's MQTT session may still be starting; QoS 1 to a persistent session keeps them.
seq 1 "$readings" | mosquitto_pub -h 127.0.0.1 -p "$OUTPOST_MQTT_PORT" -q 1 -l -t sensors/pump-1/temperature ||
  fail "mosquitto_pub"
echo "ok: $readings readings published with QoS 1"
post() {
  curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data "$1" \
    "http://127.0.0.1:$OUTPOST_PIXEL_PORT/v1/events"
}
good='{"schema":"order.v1","order_id":"o-1","amount_cents":1250,"currency":"EUR","customer_email":"a@example.com"}'
bad='{"schema":"order.v1","order_id":"o-2","amount_cents":"twelve","currency":"EUR"}'
check "a good order is accepted (202)" test "$(post "$good")" = 202
check "a bad order is accepted by the agent too (202; the gateway routes it)" test "$(post "$bad")" = 202
sent=$((pixels + readings + 2))

echo "== Kafka, read_committed, with kcat"
consume() {  # TOPIC: one line per record: its headers
  kcat -b "127.0.0.1:$OUTPOST_KAFKA_PORT" -C -t "$1" -o beginning -e -q -f '%h\n' \
    -X isolation.level=read_committed 2>/dev/null || true
}
seqs() { grep -o 'seq=[0-9]*' | cut -d= -f2; }
total=0
for _ in $(seq 1 120); do
  total=0
  for t in outpost.pixel outpost.sensor outpost.events outpost.bad; do
    total=$((total + $(consume "$t" | grep -c 'agent_id=device-1' || true)))
  done
  [[ $total -ge $sent ]] && break
  sleep 1
done
for t in outpost.pixel outpost.sensor outpost.events outpost.bad; do consume "$t" > "$work/$t"; done
echo "Kafka holds $total records from device-1; $sent events were accepted"
check "$pixels pixel hits in outpost.pixel" test "$(grep -c . "$work/outpost.pixel")" = "$pixels"
check "$readings readings in outpost.sensor" test "$(grep -c . "$work/outpost.sensor")" = "$readings"
check "the good order in outpost.events" test "$(grep -c 'schema=order.v1' "$work/outpost.events")" = 1
check "the bad order in outpost.bad, with its reason" grep -q 'reason=wrong_type' "$work/outpost.bad"
kcat -b "127.0.0.1:$OUTPOST_KAFKA_PORT" -C -t outpost.events -o beginning -e -q -f '%s' \
  -X isolation.level=read_committed > "$work/order-values" 2>/dev/null || true
check "the good order's e-mail is not in Kafka in clear (HASH)" \
  bash -c "grep -q o-1 '$work/order-values' && ! grep -q a@example.com '$work/order-values'"
cat "$work"/outpost.* | seqs | sort -n > "$work/seqs"
check "every seq 1..$sent exactly once across the topics" \
  test "$(uniq "$work/seqs" | wc -l) $(wc -l < "$work/seqs") $(tail -1 "$work/seqs")" = "$sent $sent $sent"

metrics=$(curl -s "http://127.0.0.1:$OUTPOST_AGENT_HTTP_PORT/metrics")
value() { awk -v s="$1" '$1 == s { print $2 }' <<< "$metrics"; }
drops=$(grep '^outpost_agent_dropped_events_total' <<< "$metrics" | awk '{ s += $2 } END { print s + 0 }')
echo "agent: acknowledged $(value outpost_agent_uplink_events_acked_total), backlog $(value outpost_agent_backlog_events), dropped $drops"
check "the agent's acknowledged count is what Kafka holds" test "$(value outpost_agent_uplink_events_acked_total)" = "$sent"
check "nothing pending and nothing dropped at the agent" test "$(value outpost_agent_backlog_events) $drops" = "0 0"

echo "== podman-compose down -v"
compose down -v > "$work/down.log" 2>&1 || { tail -20 "$work/down.log" >&2; fail "podman-compose down"; }
check "no container of the project is left" test -z "$(podman ps -a -q --filter "label=io.podman.compose.project=$project")"
check "its volumes are gone" test -z "$(podman volume ls -q --filter "label=io.podman.compose.project=$project")"
echo "compose_test: all checks passed"
