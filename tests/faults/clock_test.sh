#!/usr/bin/env bash
# The agent under a wrong or jumping clock, with libfaketime (Debian `faketime`), against a
# real gateway over mutual TLS (label faults; docs/RELIABILITY.md, docs/buffer.md "Clock"):
#  1. a jump of a year while the agent runs, its gateway down, with buffer.kinds.json.max_age
#     = 1h: no event expires because of the jump (max_age counts on the monotonic clock), the
#     log names the jump, and appends go on;
#  2. the agent at 1970 (a dead RTC battery): the gateway's certificate is "not yet valid
#     according to the local clock", said in the log and on /metrics; events keep being
#     buffered;
#  3. the agent started ten years ahead: "expired according to the local clock", the same
#     way. A clock that moved forward while the agent was stopped cannot be told from the
#     time the device was off (docs/buffer.md, "Clock"), so the pending events with a
#     max_age expire at that start: counted as `expired`, never silently;
#  4. the clock right again: every event of 1-3 reaches the gateway's sink exactly once, or
#     was counted as expired in 3, and the two add up to every seq;
#  5. the agent a day ahead (certificates still valid by it): events flow as usual.
#
#   tests/faults/clock_test.sh AGENT_BINARY GATEWAY_BINARY
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
agent_bin=$(realpath "${1:?usage: clock_test.sh AGENT GATEWAY}")
gateway_bin=$(realpath "${2:?usage: clock_test.sh AGENT GATEWAY}")
# shellcheck source=tests/deploy/common.sh
source "$src/tests/deploy/common.sh"
lib=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -1 || true)
if [[ -z $lib ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "clock_test: needs libfaketime (apt-get install faketime); skipped"; exit 77; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
  lib=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 | head -1)
fi

work=$(mktemp -d /tmp/outpost-clock-test.XXXXXX)
agent_pid= gateway_pid=
cleanup() {
  for p in $agent_pid $gateway_pid; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$src/deploy/certs/make-certs" "$work/certs" --devices 1 >/dev/null
gport=$(free_port) ghttp=$(free_port) aport=$(free_port) ahttp=$(free_port)

gateway_toml "127.0.0.1:$gport" "127.0.0.1:$ghttp" "$work/certs" "$work/sink" > "$work/gateway.toml"
cat > "$work/agent.toml" <<TOML
[agent]
id = "device-1"
http_listen = "127.0.0.1:$ahttp"
[buffer]
path = "$work/agent/buffer.db"
expire_interval = "100ms"
[buffer.kinds.json]
max_age = "1h"
[sources.http]
enabled = true
listen = "127.0.0.1:$aport"
$(uplink_toml "127.0.0.1:$gport" "$work/certs")
TOML
mkdir -p "$work/agent"

# The agent's clock is what $work/faketime says, read again at every call; its monotonic
# clock is left alone, as a real clock jump leaves it.
start_agent() {
  echo "$1" > "$work/faketime"
  FAKETIME_TIMESTAMP_FILE=$work/faketime FAKETIME_NO_CACHE=1 DONT_FAKE_MONOTONIC=1 LD_PRELOAD=$lib \
    "$agent_bin" run --config "$work/agent.toml" >> "$work/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$ahttp/healthz" && return 0
    sleep 0.1
  done
  cat "$work/agent.log" >&2
  fail "the agent did not start under faketime ($1)"
}
stop_agent() { kill "$agent_pid"; wait "$agent_pid" || true; agent_pid=; }
stats() { "$agent_bin" buffer stats --path "$work/agent/buffer.db" --json; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }
expired() {
  stats | python3 -c "import json,sys; print(sum(d['count'] for d in json.load(sys.stdin)['dropped'] if d['reason']=='expired'))"
}
post_events() {  # N: POSTs N events, each must be answered 202
  for i in $(seq 1 "$1"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
      --data "{\"schema\":\"clock.test\",\"i\":$i}" "http://127.0.0.1:$aport/v1/events")
    [[ $code == 202 ]] || fail "POST $i answered $code"
  done
}
pending_is() {  # N: the buffer holds N pending events (202s are answered before the commit)
  for _ in $(seq 1 50); do
    [[ $(stats | field pending_events) == "$1" ]] && return 0
    sleep 0.1
  done
  return 1
}
expired_is() {  # N: N events counted as expired
  for _ in $(seq 1 50); do
    [[ $(expired) == "$1" ]] && return 0
    sleep 0.1
  done
  return 1
}
wait_for_log() {  # TEXT WHAT
  for _ in $(seq 1 150); do
    grep -q "$1" "$work/agent.log" && return 0
    sleep 0.2
  done
  tail -20 "$work/agent.log" >&2
  fail "$2"
}

echo "== 1. a jump of a year while the agent runs (gateway down, max_age = 1h)"
start_agent "+0"
post_events 100
check "100 events pending" pending_is 100
echo "+365d" > "$work/faketime"
wait_for_log "ahead of the buffer's age clock" "the jump was not logged"
echo "ok: the log names the jump"
sleep 2  # twenty expiry ticks
check "no event expired because of the jump (still 100 pending, 0 expired)" \
  test "$(stats | field pending_events) $(expired)" = "100 0"
post_events 20
check "appends go on after the jump (120 pending)" pending_is 120
stop_agent

"$gateway_bin" --config "$work/gateway.toml" > "$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 100); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ghttp/readyz") == 200 ]] && break
  sleep 0.1
done

for case in "@1970-01-02 00:00:00|not yet valid according to the local clock|2. the agent at 1970" \
            "+3650d|expired according to the local clock|3. the agent ten years ahead"; do
  IFS='|' read -r when text title <<< "$case"
  echo "== $title"
  before=$(stats | field pending_events)
  start_agent "$when"
  wait_for_log "$text" "the TLS failure does not say \"$text\""
  echo "ok: the log says the gateway's certificate is $text"
  metrics=$(curl -s "http://127.0.0.1:$ahttp/metrics")
  check "/metrics names it in the uplink's last error" grep -q "last_error=\"[^\"]*$text" <<< "$metrics"
  check "the uplink is not connected" grep -q '^outpost_agent_uplink_connected 0' <<< "$metrics"
  if [[ $when == +* ]]; then
    # A start ten years on: the pending events are older than max_age by this clock.
    check "the $before pending events expired at this start, counted as expired" expired_is "$before"
    check "none is pending" pending_is 0
    before=0
  fi
  post_events 10
  check "events keep being buffered ($((before + 10)) pending)" pending_is $((before + 10))
  stop_agent
done

echo "== 4. the clock right again: everything arrives"
start_agent "+0"
total=$(( $(stats | field next_seq) - 1 ))
for _ in $(seq 1 100); do
  [[ $(stats | field pending_events) == 0 ]] && break
  sleep 0.2
done
check "the buffer drained ($total events)" test "$(stats | field pending_events)" = 0
stop_agent

echo "== 5. the agent a day ahead"
start_agent "+1d"
post_events 10
for _ in $(seq 1 100); do
  [[ $(stats | field pending_events) == 0 && $(stats | field next_seq) -gt $((total + 10)) ]] && break
  sleep 0.2
done
check "its events reach the gateway (nothing pending)" test "$(stats | field pending_events)" = 0
total=$((total + 10))
stop_agent
kill "$gateway_pid"; wait "$gateway_pid" || true; gateway_pid=
read -r distinct dups highest <<< "$(sink_report "$work/sink")"
lost=$(expired)
echo "the sink holds $distinct distinct seqs (highest $highest), $dups duplicated; $lost counted as expired"
check "every event in the sink exactly once or counted as expired: $distinct + $lost = $total" \
  test "$((distinct + lost)) $dups $highest" = "$total 0 $total"
echo "clock_test: all checks passed"
