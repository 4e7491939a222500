#!/usr/bin/env bash
# HTTP/2 downstream A/B: two Membrane binaries serving the same HTTP/2 (prior knowledge)
# listener with a 100-byte direct response, one worker each, measured with h2load (16
# connections x 10 streams). Prints, per binary, instructions per request under callgrind
# ((Ir(N2) - Ir(N1)) / (N2 - N1), so start-up cancels out) and, over interleaved rounds
# (A B A B ...), req/s and the proxy's CPU time per request. For before/after comparisons of
# the HTTP/2 server path (hyper) and what Membrane wraps around it.
#
#   benches/h2_ab.sh /tmp/membrane-before target/release/membrane
#   ROUNDS=7 REQUESTS=300000 benches/h2_ab.sh A B
#
# The proxy runs on core 0, h2load on core 1. Every load is bounded by a request count and
# a timeout. Needs h2load (nghttp2-client), valgrind and curl from Debian.
set -euo pipefail
A=${1:?usage: h2_ab.sh BINARY_A BINARY_B}
B=${2:?usage: h2_ab.sh BINARY_A BINARY_B}
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-300000}
ADMIN=127.0.0.1:15990
PORT=18990
for tool in h2load valgrind curl; do
  command -v "$tool" >/dev/null || {
    echo "installing nghttp2-client valgrind curl from Debian" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client valgrind curl
    break
  }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
body=$(printf '%0100d' 0)
cat >"$work/cfg.yaml" <<YAML
admin: {address: '$ADMIN'}
workers: 1
listeners:
  - name: two
    address: 127.0.0.1:$PORT
    protocol: http2
    virtual_hosts: [{name: v, domains: ['*'], routes: [{name: r, direct_response: {status: 200, body: "$body"}}]}]
YAML

wait_ready() {
  for _ in $(seq 300); do
    curl -s -o /dev/null "http://$ADMIN/ready" && return 0
    sleep 0.1
  done
  echo "the proxy did not become ready" >&2
  return 1
}

# Instructions of one run of `n` requests under callgrind.
instructions() {
  local bin=$1 n=$2
  rm -f "$work"/cg.*
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
    "$bin" proxy --config "$work/cfg.yaml" >/dev/null 2>&1 &
  local pid=$!
  wait_ready
  taskset -c 1 timeout 300 h2load -n "$n" -c 16 -m 10 "http://127.0.0.1:$PORT/" >/dev/null 2>&1
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  grep -h "^summary\|^totals" "$work"/cg.* | awk '{ s += $2 } END { print s }'
}

echo "instructions per request (callgrind, (22000 - 2000) requests)"
for bin in "$A" "$B"; do
  lo=$(instructions "$bin" 2000)
  hi=$(instructions "$bin" 22000)
  printf '%-40s %8d\n' "$bin" $(((hi - lo) / 20000))
done

tck=$(getconf CLK_TCK)
echo
echo "round  binary                                      req/s  cpu_us/req"
for round in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    taskset -c 0 "$bin" proxy --config "$work/cfg.yaml" >/dev/null 2>&1 &
    pid=$!
    wait_ready
    t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    out=$(taskset -c 1 timeout 120 h2load -n "$REQUESTS" -c 16 -m 10 "http://127.0.0.1:$PORT/" 2>&1)
    t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
    cpu=$(awk -v a="$t0" -v b="$t1" -v t="$tck" -v n="$REQUESTS" 'BEGIN { printf "%.2f", (b - a) * 1e6 / t / n }')
    printf '%-6s %-40s %9s  %s\n' "$round" "$bin" "$rps" "$cpu"
  done
done
