#!/usr/bin/env bash
# Checks a Membrane TLS listener against Mozilla's "intermediate" server profile with sslyze
# (from PyPI, in its own venv). Exits non-zero when the listener does not comply.
#
# The listener's certificate comes from `membrane cert` (ECDSA P-256, 90 days); sslyze is
# given the dev root with --certinfo_ca_file, since no public store trusts it. Everything
# else (versions, suites, curves, key size, lifespan, signature) is checked as for a public
# site.
#
#   tests/conformance/tls.sh [path/to/membrane]
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${1:-${CARGO_TARGET_DIR:-target}/debug/membrane}
venv=${SSLYZE_VENV:-/var/tmp/membrane-sslyze-venv}
sslyze_version=6.3.1

if [[ ! -x "$bin" ]]; then
  cargo build --quiet --bin membrane
fi
if ! "$venv/bin/pip" show sslyze 2>/dev/null | grep -qx "Version: $sslyze_version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "sslyze==$sslyze_version"
fi

work=$(mktemp -d)
pid=
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" cert ca --out "$work" >/dev/null
"$bin" cert issue --ca "$work" --out "$work" --name edge --dns localhost \
  --spiffe spiffe://conformance.test/cell/edge >/dev/null

# A free port on loopback for the listener, another for the admin.
ports=$(python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
read -r port admin <<<"$ports"

cat >"$work/membrane.yaml" <<YAML
admin: {address: "127.0.0.1:$admin"}
listeners:
  - name: edge
    address: "127.0.0.1:$port"
    tls:
      certificates: [{cert: edge.pem, key: edge-key.pem}]
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: hello
            direct_response: {status: 200, body: "conformance\n"}
YAML

"$bin" proxy --config "$work/membrane.yaml" --no-watch 2>"$work/proxy.log" &
pid=$!
for _ in $(seq 1 50); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

set +e
timeout 300 "$venv/bin/sslyze" --mozilla_config=intermediate --certinfo_ca_file "$work/ca.pem" \
  "localhost:$port" >"$work/sslyze.txt" 2>&1
rc=$?
set -e
sed -n '/COMPLIANCE AGAINST/,$p' "$work/sslyze.txt"
if [[ $rc -ne 0 ]]; then
  echo "TLS conformance: FAILED (sslyze exit $rc); full report:" >&2
  cat "$work/sslyze.txt" >&2
  exit 1
fi
echo "TLS conformance: Mozilla intermediate profile: compliant"
