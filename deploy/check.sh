#!/usr/bin/env bash
# Checks deploy/ offline: the Kubernetes manifests against the API's schemas
# (kubernetes-validate from PyPI, in a venv of its own), the kustomizations, the
# PrometheusRule against deploy/prometheus, the flags given to `membrane`
# (deploy/kubernetes/check.py), and the systemd units with `systemd-analyze verify`.
#
#   deploy/check.sh [path/to/membrane]
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-${CARGO_TARGET_DIR:-target}/debug/membrane}
venv=${K8S_VENV:-/var/tmp/membrane-k8s-venv}
kv_version=1.31.0

if [[ ! -x "$bin" ]]; then
  cargo build --quiet --bin membrane
fi
if ! "$venv/bin/pip" show kubernetes-validate 2>/dev/null | grep -qx "Version: $kv_version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$kv_version" pyyaml
fi
"$venv/bin/python" deploy/kubernetes/check.py "$bin"

# The units as systemd reads them, with ExecStart pointing at the binary just built (verify
# needs it to exist) and the template given an instance.
units=$(mktemp -d)
trap 'rm -rf "$units"' EXIT
for f in deploy/systemd/*.service; do
  name=$(basename "$f")
  name=${name/@.service/@orders.service}
  sed "s|/usr/local/bin/membrane|$(realpath "$bin")|g" "$f" >"$units/$name"
done
systemd-analyze verify "$units"/*.service
echo "deploy/: systemd units verified"
