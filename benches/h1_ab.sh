#!/usr/bin/env bash
# HTTP/1.1 proxy A/B: two Membrane binaries forwarding the same keep-alive HTTP/1.1 request
# (origin-form, one Host) to an nginx upstream answering a 100-byte body, one worker each:
# the side-by-side benchmark's Membrane row, but binary against binary. Prints, per binary,
# instructions per request under callgrind ((Ir(N2) - Ir(N1)) / (N2 - N1), so start-up
# cancels out) and, over interleaved rounds (A B B A ...), req/s and the proxy's CPU time
# per request, with their ratio B/A (median over rounds of the ratio within a round).
#
#   benches/h1_ab.sh /tmp/membrane-before target/release/membrane
#   ROUNDS=7 DURATION=5 benches/h1_ab.sh A B
#   B_CLUSTER=', retries: {}, outlier_detection: {}' benches/h1_ab.sh BIN BIN
#   B_TRACE_RATIO=1.0 benches/h1_ab.sh BIN BIN     # what traces cost, every request sampled
#
# B_CLUSTER adds settings to B's cluster (YAML flow-mapping entries, with a leading comma):
# one binary against itself measures what a setting costs. B_CLUSTER_HC=1 adds an active
# health check of the nginx upstream to B's cluster. B_TRACE_RATIO turns traces on in B with
# that sample ratio, exported to the OTLP sink (`cargo build --release --example otlp-sink`;
# OTLP_SINK names it) on core 1: the sink's instructions are not counted, the gateway's
# exporter thread's are.
#
# The proxy runs on core 0, wrk/h2load and the upstream on core 1. Every load is bounded by
# a duration or a request count. Needs nginx, wrk, h2load, valgrind and curl from Debian.
set -euo pipefail
A=${1:?usage: h1_ab.sh BINARY_A BINARY_B}
B=${2:?usage: h1_ab.sh BINARY_A BINARY_B}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
N1=${N1:-2000}
N2=${N2:-12000}
UP=18971 PORT=18970 ADMIN=127.0.0.1:15970
for tool in nginx wrk h2load valgrind curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "installing nginx-light wrk nghttp2-client valgrind curl from Debian" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      nginx-light wrk nghttp2-client valgrind curl
    break
  }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d /tmp/membrane-h1ab.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

body=$(printf 'x%.0s' $(seq 1 100))
cat >"$work/up.conf" <<CONF
worker_processes 1; daemon off; pid $work/up.pid; error_log $work/up.err warn; user root;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work;
  server { listen 127.0.0.1:$UP; keepalive_requests 10000000;
    location / { return 200 "$body"; } } }
CONF
cat >"$work/cfg.yaml" <<YAML
admin: {address: '$ADMIN'}
workers: 1
drain_timeout: 1s
listeners:
  - name: bench
    address: 127.0.0.1:$PORT
    protocol: http1
    virtual_hosts: [{name: all, domains: ['*'], routes: [{name: all, forward: {cluster: up}}]}]
clusters: [{name: up, endpoints: ['127.0.0.1:$UP']}]
YAML
B_CLUSTER=${B_CLUSTER:-}
if [ "${B_CLUSTER_HC:-0}" = 1 ]; then
  B_CLUSTER="$B_CLUSTER, health_check: {http_path: /, interval: 1s}"
fi
sed "s|endpoints: \['127.0.0.1:$UP'\]}|endpoints: ['127.0.0.1:$UP']$B_CLUSTER}|" "$work/cfg.yaml" >"$work/cfg_b.yaml"
taskset -c 1 "$NGINX" -c "$work/up.conf" & pids+=($!)
if [ -n "${B_TRACE_RATIO:-}" ]; then
  SINK_PORT=18972
  echo "tracing: {otlp_endpoint: 'http://127.0.0.1:$SINK_PORT', sample_ratio: $B_TRACE_RATIO}" >>"$work/cfg_b.yaml"
  OTLP_SINK=${OTLP_SINK:-${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/release/examples/otlp-sink}
  taskset -c 1 "$OTLP_SINK" "127.0.0.1:$SINK_PORT" >"$work/sink.out" & pids+=($!)
fi

wait_ready() {
  for _ in $(seq 600); do
    curl -s -o /dev/null "http://$ADMIN/ready" && curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.1
  done
  echo "the proxy did not become ready" >&2
  return 1
}

instructions() { # $1 binary, $2 config → instructions per request
  local bin=$1 cfg=$2 irs=()
  for n in "$N1" "$N2"; do
    rm -f "$work"/cg.*
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
      "$bin" proxy --no-watch --config "$cfg" >/dev/null 2>&1 &
    local pid=$!
    wait_ready
    taskset -c 1 timeout 300 h2load --h1 -n "$n" -c 16 -m 1 "http://127.0.0.1:$PORT/" >/dev/null 2>&1
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    irs+=("$(awk '/^(summary|totals):/ {print $2; exit}' "$work/cg.out")")
  done
  awk -v a="${irs[0]}" -v b="${irs[1]}" -v n1="$N1" -v n2="$N2" 'BEGIN{ printf "%.0f", (b-a)/(n2-n1) }'
}

IA=$(instructions "$A" "$work/cfg.yaml")
IB=$(instructions "$B" "$work/cfg_b.yaml")
echo "instructions per request: A $IA, B $IB, B/A $(awk -v a="$IA" -v b="$IB" 'BEGIN{ printf "%.4f", b/a }')"

CLK_TCK=$(getconf CLK_TCK)
run() { # $1 binary, $2 config → "rps cpu_us_per_request"
  taskset -c 0 "$1" proxy --no-watch --config "$2" 2>/dev/null &
  local pid=$!
  wait_ready
  local before after out rps total
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$PORT/")
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v r="$rps" -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$total" \
    'BEGIN{ printf "%s %.3f", r, t * 1e6 / hz / n }'
}
ratios_rps=() ratios_cpu=()
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then
    a=$(run "$A" "$work/cfg.yaml"); b=$(run "$B" "$work/cfg_b.yaml")
  else
    b=$(run "$B" "$work/cfg_b.yaml"); a=$(run "$A" "$work/cfg.yaml")
  fi
  read -r ra ca <<<"$a"; read -r rb cb <<<"$b"
  echo "round $r: A $ra req/s ${ca} us/req, B $rb req/s ${cb} us/req"
  ratios_rps+=("$(awk -v a="$ra" -v b="$rb" 'BEGIN{ print b/a }')")
  ratios_cpu+=("$(awk -v a="$ca" -v b="$cb" 'BEGIN{ print b/a }')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
echo "B/A req/s (median of rounds): $(median "${ratios_rps[@]}")"
echo "B/A CPU per request (median of rounds): $(median "${ratios_cpu[@]}")"
