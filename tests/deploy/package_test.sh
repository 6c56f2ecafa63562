#!/usr/bin/env bash
# The agent's packages, installed as a user would (label deploy):
#  1. the amd64 .deb with the real dpkg in a debootstrapped Debian 12 root (chroot): the
#     user, the state directory, the conffile; an upgrade to a newer version keeps the
#     buffer and an edited configuration; remove and purge keep the buffer;
#     the gateway's .deb installs its user, state directory, conffile and unit;
#  2. the tarball's install.sh into a root, twice (the second keeps the configuration), and
#     its refusal of another architecture;
#  3. the arm64 and armhf .debs extracted into Debian roots of their architecture
#     (debootstrap, the libraries each package depends on), each agent run from there under
#     qemu-user against a gateway on this machine: every event arrives;
#  4. the systemd units' exposure (systemd-analyze security --offline).
#
#   tests/deploy/package_test.sh GATEWAY_BINARY
# Needs root (chroot, debootstrap) and Debian's mirror for the first debootstrap (cached).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
gateway_bin=$(realpath "${1:?usage: package_test.sh GATEWAY_BINARY}")
cd "$src"
[[ $(id -u) -eq 0 ]] || { echo "package_test: needs root (chroot); skipped"; exit 77; }

work=$(mktemp -d /tmp/outpost-package-test.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/deploy/common.sh
source "$src/tests/deploy/common.sh"
# The packages a .deb depends on, without versions or alternatives; a virtual package
# (libspdlog1.10-fmt9) as the package that provides it, since debootstrap takes only real ones.
depends() {
  local p
  for p in $(dpkg-deb -f "$1" Depends | tr ',' '\n' | sed 's/[(|].*//; s/ //g'); do
    local policy
    policy=$(apt-cache policy "$p")
    if [[ -z $policy || $policy == *"Candidate: (none)"* ]]; then
      apt-cache showpkg "$p" | sed -n '/^Reverse Provides:/,$p' | sed -n 2p | cut -d' ' -f1
    else
      echo "$p"
    fi
  done
}

version=$(sed -n 's/^project(outpost VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
newer=$version.1
# From the builds the tests use anyway: this one (the gateway's), and arm64 as `make test`
# makes it.
build=$(dirname "$(dirname "$gateway_bin")")
cross/build arm64 >/dev/null
cross/build armhf >/dev/null
deploy/package amd64 --version "$newer" --build-dir "$build" >/dev/null
deploy/package amd64 --build-dir "$build" >/dev/null
deploy/package arm64 --build-dir build/arm64 >/dev/null
deploy/package armhf --build-dir build/armhf >/dev/null
pkgs=$src/build/packages
deb=$pkgs/outpost-agent_${version}_amd64.deb
deb_newer=$pkgs/outpost-agent_${newer}_amd64.deb
tarball=$pkgs/outpost-agent-$version-linux-amd64.tar.gz
tarball_arm64=$pkgs/outpost-agent-$version-linux-arm64.tar.gz

echo "== 1. amd64 .deb: install, upgrade, remove, purge (dpkg in a chroot)"
root=$work/amd64
deb_gateway=$pkgs/outpost-gateway_${version}_amd64.deb
mapfile -t deps < <( (depends "$deb"; depends "$deb_gateway") | sort -u)
scripts/debian-root amd64 "$root" "${deps[@]}"
cp "$deb" "$deb_newer" "$deb_gateway" "$root/tmp/"
in_root() { chroot "$root" "$@"; }
in_root dpkg -i "/tmp/$(basename "$deb")"
check "the package is installed" test "$(in_root dpkg-query -W -f='${Status} ${Version}' outpost-agent)" = "install ok installed $version"
check "the system user outpost exists" in_root getent passwd outpost
check "/var/lib/outpost belongs to outpost, mode 750" test "$(in_root stat -c '%U %a' /var/lib/outpost)" = "outpost 750"
check "/etc/outpost/agent.toml is a conffile" grep -q /etc/outpost/agent.toml "$root/var/lib/dpkg/info/outpost-agent.conffiles"
check "the unit is installed" test -f "$root/lib/systemd/system/outpost-agent.service"
check "the agent runs" in_root /usr/bin/outpost-agent --version

# The agent, as the service runs it (user outpost, the packaged configuration), buffers events.
in_root setpriv --reuid=outpost --regid=outpost --clear-groups /usr/bin/outpost-agent run \
  --config /etc/outpost/agent.toml --set generator.enabled=true --set generator.events=500 \
  --set generator.rate=100000 --set generator.stop_when_done=true --set agent.http_listen= \
  --agent-id device-1
pending() {
  # No --path: the command reads buffer.path from the packaged /etc/outpost/agent.toml.
  in_root /usr/bin/outpost-agent buffer stats --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_events"])'
}
check "500 events wait in /var/lib/outpost/buffer.db" test "$(pending)" = 500
echo "# edited by the operator" >> "$root/etc/outpost/agent.toml"

in_root dpkg -i "/tmp/$(basename "$deb_newer")"
check "upgraded to $newer" test "$(in_root dpkg-query -W -f='${Version}' outpost-agent)" = "$newer"
check "the upgrade kept the edited configuration" grep -q "edited by the operator" "$root/etc/outpost/agent.toml"
check "the upgrade kept the buffer (500 events)" test "$(pending)" = 500

in_root dpkg -r outpost-agent
check "remove: the binary is gone" test ! -e "$root/usr/bin/outpost-agent"
check "remove: the configuration stays" grep -q "edited by the operator" "$root/etc/outpost/agent.toml"
check "remove: the buffer stays" test -s "$root/var/lib/outpost/buffer.db"
in_root dpkg -P outpost-agent 2>&1 | tee "$work/purge.log"
check "purge: the configuration is gone" test ! -e "$root/etc/outpost/agent.toml"
check "purge: the buffer stays, and purge says so" test -s "$root/var/lib/outpost/buffer.db" -a -n "$(grep 'was kept' "$work/purge.log")"

echo "== 1b. the gateway's .deb"
in_root dpkg -i "/tmp/$(basename "$deb_gateway")"
check "the system user outpost-gateway exists" in_root getent passwd outpost-gateway
check "/var/lib/outpost-gateway belongs to outpost-gateway, mode 750" test "$(in_root stat -c '%U %a' /var/lib/outpost-gateway)" = "outpost-gateway 750"
check "/etc/outpost/gateway.toml is a conffile" grep -q /etc/outpost/gateway.toml "$root/var/lib/dpkg/info/outpost-gateway.conffiles"
check "the gateway's unit is installed" test -f "$root/lib/systemd/system/outpost-gateway.service"
rc=0
in_root /usr/bin/outpost-gateway --config /etc/outpost/gateway.toml > "$work/gw-nocerts.log" 2>&1 || rc=$?
check "without certificates the packaged gateway exits 2, naming the file" test "$rc" = 2 -a -n "$(grep /etc/outpost/certs/ca.crt "$work/gw-nocerts.log")"
desc=/usr/share/outpost-gateway/contracts/outpost-v1.desc
check "the default contracts ship with the gateway" test -s "$root$desc"
check "the shipped contracts pass the evolution check" in_root /usr/bin/outpost-gateway contracts check --old "$desc" --new "$desc"
in_root dpkg -P outpost-gateway

echo "== 2. the tarball's install.sh"
tar -C "$work" -xzf "$tarball"
rm -rf "$root/var/lib/outpost"
"$work/outpost-agent-$version-linux-amd64/install.sh" --root "$root"
check "install.sh: binary, unit, configuration" test -x "$root/usr/bin/outpost-agent" -a -f "$root/lib/systemd/system/outpost-agent.service" -a -f "$root/etc/outpost/agent.toml"
check "install.sh: /var/lib/outpost belongs to outpost" test "$(in_root stat -c '%U %a' /var/lib/outpost)" = "outpost 750"
check "install.sh: the installed agent runs" in_root /usr/bin/outpost-agent --version
echo "# edited again" >> "$root/etc/outpost/agent.toml"
"$work/outpost-agent-$version-linux-amd64/install.sh" --root "$root"
check "install.sh again: the configuration is kept, the new default beside it" grep -q "edited again" "$root/etc/outpost/agent.toml"
check "install.sh again: agent.toml.new" test -f "$root/etc/outpost/agent.toml.new"
tar -C "$work" -xzf "$tarball_arm64"
if "$work/outpost-agent-$version-linux-arm64/install.sh" > "$work/wrong-arch.log" 2>&1; then
  fail "install.sh of the arm64 tarball succeeded on $(uname -m)"
fi
check "install.sh refuses another architecture, saying why" grep -q "this tarball is for arm64" "$work/wrong-arch.log"

echo "== 3. the ARM .debs in ARM Debian roots, run under qemu-user against a gateway here"
certs=$work/certs
deploy/certs/make-certs "$certs" --devices 2 >/dev/null
port=$(free_port)
http_port=$(free_port)
cat > "$work/gateway.toml" <<TOML
[gateway]
listen = "127.0.0.1:$port"
http_listen = "127.0.0.1:$http_port"
[tls]
ca_file = "$certs/ca.crt"
cert_file = "$certs/gateway.crt"
key_file = "$certs/gateway.key"
[sink.file]
dir = "$work/sink"
rotate_age = "1s"
TOML
"$gateway_bin" --config "$work/gateway.toml" > "$work/gateway.log" 2>&1 &
pids+=($!)
sink_seqs() {  # distinct seqs of one device in the sink
  find "$work/sink" -name '*.zst' -print0 2>/dev/null | xargs -0 -r zstdcat 2>/dev/null |
    grep "\"agent_id\":\"$1\"" | grep -o '"seq":"[0-9]*"' | sort -u | wc -l
}
# arch, qemu, ELF e_machine, device
for spec in "arm64 qemu-aarch64 00b7 device-1" "armhf qemu-arm 0028 device-2"; do
  read -r arch qemu machine device <<< "$spec"
  deb_arch=$pkgs/outpost-agent_${version}_$arch.deb
  root_arch=$work/root-$arch
  mapfile -t deps_arch < <(depends "$deb_arch")
  scripts/debian-root "$arch" "$root_arch" "${deps_arch[@]}"
  dpkg-deb -x "$deb_arch" "$root_arch"
  check "the $arch package holds an $arch binary" \
    test "$(od -An -tx2 -j18 -N2 "$root_arch/usr/bin/outpost-agent" | tr -d ' ')" = "$machine"
  mkdir -p "$work/state-$arch"
  cat > "$work/agent-$arch.toml" <<TOML
[agent]
id = "$device"
http_listen = ""
[buffer]
path = "$work/state-$arch/buffer.db"
[generator]
enabled = true
events = 3000
rate = 3000
[uplink]
endpoints = "127.0.0.1:$port"
server_name = "localhost"
ca_file = "$certs/ca.crt"
cert_file = "$certs/$device.crt"
key_file = "$certs/$device.key"
TOML
  # Only the root's loader and libraries: what the package's Depends brought.
  "$qemu" -L "$root_arch" "$root_arch/usr/bin/outpost-agent" run --config "$work/agent-$arch.toml" \
    > "$work/agent-$arch.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 120); do
    [[ $(sink_seqs "$device") -ge 3000 ]] && break
    sleep 1
  done
  got=$(sink_seqs "$device")
  [[ $got -eq 3000 ]] || { tail -20 "$work/agent-$arch.log" "$work/gateway.log" >&2; fail "3000 events from the $arch agent, $got arrived"; }
  echo "ok: the $arch agent ($qemu, $arch Debian root) delivered 3000 of 3000 events over mutual TLS"
done

echo "== 4. the systemd units"
for unit in outpost-agent outpost-gateway; do
  exposure=$(systemd-analyze security --offline=yes "$src/deploy/systemd/$unit.service" 2>&1 |
    sed -n "s/.*Overall exposure level for $unit.service: \([0-9.]*\).*/\1/p")
  check "$unit.service exposure $exposure is at most 2.0 (systemd's 'OK' band ends at 3.9)" \
    python3 -c "import sys; sys.exit(0 if float('$exposure') <= 2.0 else 1)"
done
echo "package_test: all checks passed"
