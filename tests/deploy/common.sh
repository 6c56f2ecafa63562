# Sourced by the deploy tests: one line per check, the first failure ends the test.
fail() { echo "FAIL: $*" >&2; exit 1; }
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else fail "$what"; fi; }
# A loopback port that nothing listens on right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# podman on these machines: runc (crun fails here) and no default ulimits (DESIGN.md).
# Writes DIR/containers.conf and exports CONTAINERS_CONF.
use_runc() {
  cat > "$1/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$1/containers.conf
}
# A gateway's configuration with a file sink: gateway_toml LISTEN HTTP_LISTEN CERTS SINK_DIR
gateway_toml() {
  cat <<TOML
[gateway]
listen = "$1"
http_listen = "$2"
[tls]
ca_file = "$3/ca.crt"
cert_file = "$3/gateway.crt"
key_file = "$3/gateway.key"
[sink.file]
dir = "$4"
rotate_age = "1s"
TOML
}
# An agent's [uplink] to a make-certs gateway as device-1: uplink_toml ENDPOINT CERTS
uplink_toml() {
  cat <<TOML
[uplink]
endpoints = "$1"
server_name = "localhost"
ca_file = "$2/ca.crt"
cert_file = "$2/device-1.crt"
key_file = "$2/device-1.key"
backoff_max = "1s"
TOML
}
# Distinct seqs, duplicate lines and the highest seq in a file sink's NDJSON files: sink_report DIR
sink_report() {
  find "$1" -name '*.zst' -print0 2>/dev/null | xargs -0 -r zstdcat 2>/dev/null |
    grep -o '"seq":"[0-9]*"' | tr -d '"' | cut -d: -f2 | sort -n |
    awk 'BEGIN{d=0;n=0;m=0} {if($1==p)d++; else n++; p=$1; if($1>m)m=$1} END{print n, d, m}'
}
