#!/usr/bin/env bash
# deploy/k8s/ validated against the Kubernetes API's own schemas with kubernetes-validate
# (PyPI; it carries the JSON schemas of each Kubernetes release, so no cluster and no
# download at run time), strictly: an unknown or misplaced field fails, as `kubectl apply
# --validate=strict` would. Against the oldest and the newest release it knows of those we
# support (docs/install.md). A deliberately broken copy must fail, so the check can fail.
# manifests_test.py checks what the schemas cannot: probes, ports and users consistent with
# the image.
#
#   tests/deploy/k8s_schema_test.sh
# The tool is installed once into a virtualenv under ~/.cache/outpost (python3-venv).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/deploy/common.sh
source "$src/tests/deploy/common.sh"
version=1.37.0
venv=${XDG_CACHE_HOME:-$HOME/.cache}/outpost/kubernetes-validate-$version
if [[ ! -x $venv/bin/kubernetes-validate ]]; then
  /usr/bin/python3 -m venv "$venv.tmp" 2>/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv.tmp"
    /usr/bin/python3 -m venv "$venv.tmp"
  }
  "$venv.tmp/bin/pip" install -q "kubernetes-validate==$version"
  rm -rf "$venv"
  mv "$venv.tmp" "$venv"
  # A moved virtualenv keeps its scripts' first lines; run the module instead.
fi
validate() { "$venv/bin/python" -m kubernetes_validate "$@"; }
refused() { ! validate --strict --quiet -k 1.37 "$1" >/dev/null 2>&1; }
manifests=()
for f in "$src"/deploy/k8s/*.yaml; do [[ $(basename "$f") == kustomization.yaml ]] || manifests+=("$f"); done
for k in 1.29 1.37; do
  check "deploy/k8s is valid for Kubernetes $k (strict)" validate --strict --quiet -k "$k" "${manifests[@]}"
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed 's/containerPort:/containerPortt:/' "$src/deploy/k8s/deployment.yaml" > "$work/misspelt.yaml"
sed 's/^\( *\)runAsNonRoot: true/\1runAsNonRoot: "yes"/' "$src/deploy/k8s/deployment.yaml" > "$work/wrong-type.yaml"
for f in misspelt wrong-type; do
  cmp -s "$work/$f.yaml" "$src/deploy/k8s/deployment.yaml" && fail "the $f copy is not broken"
  check "a $f field in the Deployment is refused" refused "$work/$f.yaml"
done
echo "k8s_schema_test: all checks passed"
