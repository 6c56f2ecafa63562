#!/usr/bin/env bash
# The gateway container, built and run with podman as a user would (label deploy):
#  - deploy/gateway.Dockerfile builds (--pull=never, on debian:bookworm / bookworm-slim base
#    images made here with debootstrap, since nothing can be pulled);
#  - the image runs as uid 10001, holds no compiler, and reports its size;
#  - an agent on this machine sends events over mutual TLS into the published port and they
#    land in the file sink on a mounted volume; the HEALTHCHECK passes;
#  - `podman stop` mid-stream: exit 0 within the grace period, and every event the agent
#    saw acknowledged is in the sink; after a restart, every event exactly once.
#
#   tests/deploy/container_test.sh AGENT_BINARY
# Needs root, podman and runc (installed when missing).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
agent_bin=$(realpath "${1:?usage: container_test.sh AGENT_BINARY}")
cd "$src"
[[ $(id -u) -eq 0 ]] || { echo "container_test: needs root; skipped"; exit 77; }
for tool in podman runc; do
  command -v $tool >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
done

work=$(mktemp -d /tmp/outpost-container-test.XXXXXX)
name=outpost-gateway-test-$$
agent_pid=
cleanup() {
  [[ -n $agent_pid ]] && { kill -9 "$agent_pid" && wait "$agent_pid"; } 2>/dev/null || true
  podman rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/deploy/common.sh
source "$src/tests/deploy/common.sh"

use_runc "$work"

echo "== the base images (debootstrap, podman import)"
scripts/base-images

echo "== podman build"
image=localhost/outpost-gateway:test
podman build --pull=never --format docker -f deploy/gateway.Dockerfile -t "$image" . > "$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log" >&2; fail "podman build"; }
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image size: $size bytes"
check "the image runs as 10001:10001" test "$(podman image inspect --format '{{.Config.User}}' "$image")" = 10001:10001
check "the image holds no compiler (only runtime libraries)" \
  test "$(podman run --rm --entrypoint sh "$image" -c 'command -v g++ cc cmake || echo none')" = none

echo "== run it: certificates and the sink on mounted volumes"
deploy/certs/make-certs "$work/certs" --devices 1 >/dev/null
chmod 0644 "$work"/certs/*.key  # the container's user reads them (a test CA)
mkdir -p "$work/state"
chown 10001:10001 "$work/state"
port=$(free_port)
http_port=$(free_port)
start_gateway() {
  podman run -d --name "$name" -p "127.0.0.1:$port:7443" -p "127.0.0.1:$http_port:9090" \
    -v "$work/certs:/etc/outpost/certs:ro" -v "$work/state:/var/lib/outpost-gateway" \
    --health-interval=disable "$image" --set gateway.http_listen=0.0.0.0:9090 --set gateway.shutdown_grace=15s \
    --set sink.file.rotate_age=1s >/dev/null
}
start_gateway
healthy=false
for _ in $(seq 1 30); do
  if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=true; break; fi
  sleep 1
done
$healthy || { podman logs "$name" >&2; fail "the HEALTHCHECK never passed"; }
echo "ok: the HEALTHCHECK (/healthz) passes"
check "the gateway in the container runs as uid 10001" test "$(podman exec "$name" id -u)" = 10001
check "the image ships the default contracts" podman exec "$name" test -s /usr/share/outpost-gateway/contracts/outpost-v1.desc
check "/readyz through the published port says ready" \
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$http_port; printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3; grep -q '200 OK' <&3"

total=30000
cat > "$work/agent.toml" <<TOML
[agent]
id = "device-1"
http_listen = ""
[buffer]
path = "$work/agent/buffer.db"
[generator]
enabled = true
events = $total
rate = 6000
$(uplink_toml "127.0.0.1:$port" "$work/certs")
TOML
mkdir -p "$work/agent"
"$agent_bin" run --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
agent_pid=$!
stats() { "$agent_bin" buffer stats --path "$work/agent/buffer.db" --json 2>/dev/null || echo '{}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }
for _ in $(seq 1 60); do
  [[ $(stats | field acked_seq) -ge 5000 ]] && break
  sleep 0.5
done
[[ $(stats | field acked_seq) -ge 5000 ]] || { tail "$work/agent.log" >&2; podman logs "$name" >&2; fail "no events acknowledged"; }
echo "ok: events flow from the agent on the host into the container"

echo "== podman stop mid-stream"
t0=$(date +%s.%N)
podman stop -t 30 "$name" >/dev/null
t1=$(date +%s.%N)
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
check "the gateway exited 0 on SIGTERM (took $(python3 -c "print(round($t1-$t0,1))") s)" test "$code" = 0
check "it stopped within the grace period" python3 -c "import sys; sys.exit(0 if $t1-$t0 < 15 else 1)"
podman logs "$name" > "$work/gateway.log" 2>&1
acked=$(stats | field acked_seq)
read -r distinct dups highest <<< "$(sink_report "$work/state/events")"
echo "after the stop: the agent has $acked acknowledged; the sink holds $distinct distinct seqs (highest $highest), $dups duplicated"
check "every acknowledged event is in the sink (seqs 1..$highest, no gap)" test "$distinct" = "$highest" -a "$highest" -ge "$acked"
check "no duplicates" test "$dups" = 0

echo "== rotate the device certificate, start again: the rest arrives"
kill "$agent_pid"
wait "$agent_pid" || true
# The generator made next_seq - 1 events; the agent comes back without it.
total=$(( $(stats | field next_seq) - 1 ))
echo "the agent generated $total events"
serial() { openssl x509 -noout -serial -in "$work/certs/device-1.crt"; }
old_serial=$(serial)
rm "$work/certs/device-1.crt" "$work/certs/device-1.key"
deploy/certs/make-certs "$work/certs" --devices 1 >/dev/null
chmod 0644 "$work"/certs/*.key
check "the device has a new certificate" test "$(serial)" != "$old_serial"
"$agent_bin" run --config "$work/agent.toml" --set generator.enabled=false >> "$work/agent.log" 2>&1 &
agent_pid=$!
podman rm "$name" >/dev/null
start_gateway
for _ in $(seq 1 120); do
  [[ $(stats | field acked_seq) -ge $total && $(stats | field pending_events) == 0 ]] && break
  sleep 1
done
podman stop -t 30 "$name" >/dev/null
read -r distinct dups highest <<< "$(sink_report "$work/state/events")"
echo "in the end: $distinct distinct seqs of $total, $dups duplicated"
check "every event exactly once in the sink on the mounted volume" test "$distinct" = "$total" -a "$dups" = 0 -a "$highest" = "$total"
echo "container_test: all checks passed; image size $size bytes"
