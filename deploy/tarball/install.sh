#!/bin/sh
# Installs outpost-agent from this tarball, for devices without dpkg (as root):
#
#   ./install.sh [--root DIR]
#
# - the binary to /usr/bin/outpost-agent;
# - the default configuration to /etc/outpost/agent.toml, unless one is there: an existing
#   one is kept and the new default lands beside it as agent.toml.new;
# - the systemd unit to /lib/systemd/system, enabled and (re)started when systemd runs;
# - the `outpost` system user, /var/lib/outpost (the buffer) and /etc/outpost/certs.
# Running it again upgrades in place: the buffer and the configuration stay.
# --root DIR installs into another root file system (an image being built): no
# architecture check, no systemctl.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=
while [ $# -gt 0 ]; do
  case $1 in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (it creates a system user and writes /usr, /etc, /var)" >&2
  exit 1
fi
arch=$(cat "$here/ARCH")
if [ -z "$root" ]; then
  case "$arch:$(uname -m)" in
    amd64:x86_64|arm64:aarch64|armhf:armv7l|armhf:armv6l|armhf:armv8l) ;;
    *) echo "install.sh: this tarball is for $arch; this machine is $(uname -m)" >&2; exit 1 ;;
  esac
fi

install -D -m 0755 "$here/usr/bin/outpost-agent" "$root/usr/bin/outpost-agent"
install -D -m 0644 "$here/lib/systemd/system/outpost-agent.service" \
  "$root/lib/systemd/system/outpost-agent.service"
install -d -m 0755 "$root/usr/share/doc/outpost-agent"
cp -R "$here/usr/share/doc/outpost-agent/." "$root/usr/share/doc/outpost-agent/"
if [ -e "$root/etc/outpost/agent.toml" ]; then
  install -m 0644 "$here/etc/outpost/agent.toml" "$root/etc/outpost/agent.toml.new"
  echo "install.sh: kept /etc/outpost/agent.toml; the new default is agent.toml.new"
else
  install -D -m 0644 "$here/etc/outpost/agent.toml" "$root/etc/outpost/agent.toml"
fi

rootopt=
[ -n "$root" ] && rootopt="--root $root"
if ! grep -q '^outpost:' "$root/etc/group" 2>/dev/null; then
  # shellcheck disable=SC2086
  groupadd $rootopt --system outpost
fi
if ! grep -q '^outpost:' "$root/etc/passwd" 2>/dev/null; then
  # shellcheck disable=SC2086
  useradd $rootopt --system --gid outpost --home-dir /var/lib/outpost --no-create-home \
    --shell /usr/sbin/nologin --comment outpost-agent outpost
fi
uid=$(grep '^outpost:' "$root/etc/passwd" | cut -d: -f3)
gid=$(grep '^outpost:' "$root/etc/group" | cut -d: -f3)
install -d -o "$uid" -g "$gid" -m 0750 "$root/var/lib/outpost"
install -d -o 0 -g "$gid" -m 0750 "$root/etc/outpost/certs"

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable outpost-agent.service >/dev/null
  systemctl restart outpost-agent.service
  echo "install.sh: outpost-agent is running (systemctl status outpost-agent)"
else
  echo "install.sh: installed; start it with: outpost-agent run --config /etc/outpost/agent.toml"
fi
