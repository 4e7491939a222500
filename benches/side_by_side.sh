#!/usr/bin/env bash
# Side-by-side HTTP/1.1 reverse-proxy benchmark: Membrane, nginx and HAProxy, one worker each,
# in front of the same upstream (an nginx answering a 100-byte body) on loopback.
#
#   benches/side_by_side.sh              # 7 interleaved rounds of 5 s, then callgrind
#   ROUNDS=11 DURATION=5 benches/side_by_side.sh
#   SKIP_CALLGRIND=1 benches/side_by_side.sh
#   SKIP_TLS=1 benches/side_by_side.sh      # without the TLS rows (benches/tls_rows.sh)
#   KEEP_WORK=1 benches/side_by_side.sh   # keep configs and callgrind files for callgrind_annotate
#
# Pinning: each proxy runs on core 0; wrk and the upstream share core 1. Runs are interleaved
# (M N H ... then ... H N M, alternating) so drift hits every proxy alike, and each ratio is
# the median over rounds of the ratio within a round: this machine's speed swings by up to
# half from one run to the next, and pairing neighbours cancels most of it. Each run also
# reads the proxy's CPU time (utime + stime from /proc) to give CPU time per request.
# Instructions per request come from callgrind: two runs with N1 and N2 requests, and
# (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up and shutdown cancel out.
# Every load is bounded: wrk by DURATION, h2load by a request count.
set -euo pipefail

ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
N1=${N1:-2000}
N2=${N2:-12000}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
OTLP_PORT=18094
UP_PORT=18081 MEMBRANE_PORT=18080 NGINX_PORT=18082 HAPROXY_PORT=18083 NGINX_FWD_PORT=18084 ADMIN_PORT=18090
POLICY_PORT=18085 POLICY_ADMIN_PORT=18092

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/membrane-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need haproxy || ! need wrk || ! need h2load || ! need valgrind; then
  echo "installing nginx, haproxy, wrk, h2load, valgrind from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    nginx-light haproxy wrk nghttp2-client valgrind >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

echo "building membrane (release)" >&2
(cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example otlp-sink --example idle-conns --example fixed-rate)
MEMBRANE=${CARGO_TARGET_DIR:-$root/target}/release/membrane
OTLP_SINK=${CARGO_TARGET_DIR:-$root/target}/release/examples/otlp-sink

body=$(printf 'x%.0s' $(seq 1 100))
mkdir -p "$work/www" && head -c 1048576 /dev/zero | tr '\0' 'x' >"$work/www/big"
mkdir -p "$work/nginx-tmp"
cat >"$work/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $work/up.pid; error_log $work/up.err warn; user root;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work/nginx-tmp;
  server { listen 127.0.0.1:$UP_PORT; keepalive_requests 10000000;
    location = /big { root $work/www; }
    # /upload reads the whole body (it is proxied to /sink once buffered), then answers.
    location = /upload { client_max_body_size 2m; client_body_buffer_size 2m;
      proxy_pass http://127.0.0.1:$UP_PORT/sink; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location = /sink { client_max_body_size 2m; client_body_buffer_size 2m; return 200 "ok"; }
    location / { return 200 "$body"; } } }
CONF
nginx_proxy_conf() { # $1 = master_process on|off, $2 = port, $3 = pid name, $4 = extra directives
cat <<CONF
worker_processes 1; daemon off; master_process $1; pid $work/$3.pid; error_log $work/ng.err warn; user root;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work/nginx-tmp; proxy_temp_path $work/nginx-tmp;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 256; }
  server { listen 127.0.0.1:$2; keepalive_requests 10000000; client_max_body_size 2m;
    location ~ ^/(big|upload)\$ { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_max_temp_file_size 0; proxy_request_buffering off; }
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; $4 } } }
CONF
}
# "nginx-fwd" does the forwarding work Membrane does on every request: X-Forwarded-For,
# X-Forwarded-Proto, a request id, Via. Plain "nginx" forwards the request as it came.
FWD='proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Request-ID $request_id; proxy_set_header Via "1.1 nginx";'
nginx_proxy_conf on $NGINX_PORT ng "" >"$work/nginx.conf"
nginx_proxy_conf off $NGINX_PORT ng "" >"$work/nginx-single.conf"
nginx_proxy_conf on $NGINX_FWD_PORT ngf "$FWD" >"$work/nginx-fwd.conf"
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend b
backend b
  server s1 127.0.0.1:$UP_PORT
CONF
cat >"$work/membrane.yaml" <<CONF
admin: {address: "127.0.0.1:$ADMIN_PORT"}
workers: 1
drain_timeout: 1s
listeners:
  - name: bench
    address: 127.0.0.1:$MEMBRANE_PORT
    protocol: http1
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            forward: {cluster: up}
clusters:
  - {name: up, endpoints: ["127.0.0.1:$UP_PORT"]}
CONF
# The same proxy with traces: every request sampled (a server and a client span exported
# to a local OTLP sink), and traces configured with nothing sampled (the context is still
# read and sent upstream).
for ratio in 1.0 0.0; do
  { cat "$work/membrane.yaml"
    echo "tracing: {otlp_endpoint: 'http://127.0.0.1:$OTLP_PORT', sample_ratio: $ratio}"
  } >"$work/membrane-traced-$ratio.yaml"
done

# "membrane-policy": the same proxy with a JWT checked and an authorization policy decided on
# every request (a token from `membrane token`, 50 rules, the allowing one matching on a
# scope claim and a path glob).
TOKEN=$("$MEMBRANE" token --jwks-out "$work/jwks.json" --audience bench --scope "orders.read")
{
  cat <<CONF
admin: {address: "127.0.0.1:$POLICY_ADMIN_PORT"}
workers: 1
drain_timeout: 1s
jwt_providers:
  - {name: dev, issuer: "https://membrane.dev", audiences: [bench], jwks: {file: jwks.json}}
listeners:
  - name: bench
    address: 127.0.0.1:$POLICY_PORT
    protocol: http1
    authorization:
      default: deny
      rules:
CONF
  for i in $(seq 1 49); do
    echo "        - {name: other-$i, action: allow, paths: [{prefix: /svc$i/}], claims: [{claim: scope, contains: svc$i}]}"
  done
  cat <<CONF
        - {name: readers, action: allow, paths: [{glob: "/**"}], claims: [{claim: scope, contains: orders.read}]}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            jwt: {provider: dev}
            forward: {cluster: up}
clusters:
  - {name: up, endpoints: ["127.0.0.1:$UP_PORT"]}
CONF
} >"$work/membrane-policy.yaml"

wait_port() { # $1 port; polls until it answers, 60 s at most (curl flags in WAIT_CURL_FLAGS)
  for _ in $(seq 1 600); do
    if curl -s -o /dev/null ${WAIT_CURL_FLAGS:-} "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.1
  done
  echo "port $1 never answered" >&2; return 1
}

taskset -c "$LOAD_CORE" "$NGINX" -c "$work/upstream.conf" & pids+=($!)
wait_port $UP_PORT
taskset -c "$PROXY_CORE" "$MEMBRANE" proxy --no-watch --config "$work/membrane.yaml" 2>"$work/membrane.log" & pids+=($!)
taskset -c "$PROXY_CORE" "$NGINX" -c "$work/nginx.conf" & pids+=($!)
taskset -c "$PROXY_CORE" "$HAPROXY" -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" & pids+=($!)
taskset -c "$PROXY_CORE" "$NGINX" -c "$work/nginx-fwd.conf" & pids+=($!)
taskset -c "$PROXY_CORE" "$MEMBRANE" proxy --no-watch --config "$work/membrane-policy.yaml" 2>"$work/membrane-policy.log" & pids+=($!)
for p in $MEMBRANE_PORT $NGINX_PORT $HAPROXY_PORT $NGINX_FWD_PORT $POLICY_PORT; do wait_port $p; done
# The process doing each proxy's work, for its CPU time: nginx's worker is the master's child.
declare -A PID=([membrane]=${pids[1]} [nginx]=$(pgrep -P "${pids[2]}" | head -1)
  [haproxy]=${pids[3]} [nginx-fwd]=$(pgrep -P "${pids[4]}" | head -1) [membrane-policy]=${pids[5]})
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$POLICY_PORT/")" = 401 ] ||
  { echo "the policy instance did not ask for a token" >&2; exit 1; }
for p in $MEMBRANE_PORT $NGINX_PORT $HAPROXY_PORT $NGINX_FWD_PORT $POLICY_PORT; do
  got=$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$p/")
  [ "$got" = "$body" ] || { echo "port $p answered '$got', not the 100-byte body" >&2; exit 1; }
done

to_ms() { # wrk latency like 1.23ms / 456.00us / 1.02s → ms
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 }
    else if (v ~ /ms$/) { sub(/ms$/,"",v); print v+0 }
    else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } else print v }'
}
declare -A RPS P50 P99 CPU ROUND
names=(membrane nginx haproxy nginx-fwd membrane-policy)
declare -A PORT=([membrane]=$MEMBRANE_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [nginx-fwd]=$NGINX_FWD_PORT [membrane-policy]=$POLICY_PORT)
printf '%-15s %5s %12s %9s %9s %12s\n' proxy round req/s p50_ms p99_ms cpu_us/req
for r in $(seq 1 "$ROUNDS"); do
  order=("${names[@]}")
  if (( r % 2 == 0 )); then order=(); for ((i=${#names[@]}-1; i>=0; i--)); do order+=("${names[$i]}"); done; fi
  for n in "${order[@]}"; do
    # Only the policy row sends a token: the others are measured on the plain request.
    auth=(); [ "$n" = membrane-policy ] && auth=(-H "Authorization: Bearer $TOKEN")
    before=$(cpu_ticks "${PID[$n]}")
    out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${auth[@]}" \
      "http://127.0.0.1:${PORT[$n]}/")
    after=$(cpu_ticks "${PID[$n]}")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$total" 'BEGIN{ printf "%.3f", t * 1e6 / hz / n }')
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    [ -z "$errs" ] || echo "  $n: $errs" >&2
    printf '%-15s %5s %12.0f %9.3f %9.3f %12.2f\n' "$n" "$r" "$rps" "$p50" "$p99" "$cpu"
    RPS[$n]="${RPS[$n]:-} $rps"; P50[$n]="${P50[$n]:-} $p50"; P99[$n]="${P99[$n]:-} $p99"
    CPU[$n]="${CPU[$n]:-} $cpu"; ROUND[$n.$r]="$rps $cpu"
  done
done
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
# Median over rounds of a ratio taken within each round: $1/$2 of field $3 (1 req/s, 2 CPU).
paired() {
  for r in $(seq 1 "$ROUNDS"); do
    awk -v a="${ROUND[$1.$r]}" -v b="${ROUND[$2.$r]}" -v f="$3" \
      'BEGIN{ split(a, x, " "); split(b, y, " "); printf "%s ", x[f] / y[f] }'
  done | median
}
echo
printf '%-15s %12s %9s %9s %12s   (medians over %s rounds)\n' proxy req/s p50_ms p99_ms cpu_us/req "$ROUNDS"
declare -A MED
for n in "${names[@]}"; do
  MED[$n]=$(median <<<"${RPS[$n]}")
  printf '%-15s %12.0f %9.3f %9.3f %12.2f\n' "$n" "${MED[$n]}" "$(median <<<"${P50[$n]}")" \
    "$(median <<<"${P99[$n]}")" "$(median <<<"${CPU[$n]}")"
done
echo
echo "ratios within rounds (median over rounds; the medians above divided: $(awk -v m="${MED[membrane]}" -v n="${MED[nginx]}" 'BEGIN{ printf "%.3f", m/n }') req/s)"
printf '%-28s %8s %8s\n' pair req/s cpu/req
for pair in "membrane nginx" "membrane haproxy" "membrane nginx-fwd" "membrane-policy membrane"; do
  set -- $pair
  printf '%-28s %8.3f %8.3f\n' "$1/$2" "$(paired "$1" "$2" 1)" "$(paired "$1" "$2" 2)"
done
H2LOAD_FLAGS="--h1 -m 1"
instr_per_request() { # $1 name, $2 port, $3 extra header or "", then the command
  local name=$1 port=$2 header=$3; shift 3
  local hdr=(); [ -n "$header" ] && hdr=(-H "$header")
  local irs=()
  for n in "$N1" "$N2"; do
    local out="$work/cg.$name.$n"
    taskset -c "$PROXY_CORE" valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>"$work/vg.$name.log" &
    local vpid=$!
    wait_port "$port" >/dev/null
    # shellcheck disable=SC2086 # H2LOAD_FLAGS is a list of flags
    taskset -c "$LOAD_CORE" h2load $H2LOAD_FLAGS -n "$n" -c 16 "${hdr[@]}" \
      "http://127.0.0.1:$port/" >"$work/h2load.$name.$n" 2>&1
    grep -q "succeeded, 0 errored" "$work/h2load.$name.$n" || true
    kill -TERM "$vpid"; wait "$vpid" 2>/dev/null || true
    irs+=("$(awk '/^(summary|totals):/ {print $2; exit}' "$out")")
  done
  awk -v a="${irs[0]}" -v b="${irs[1]}" -v n1="$N1" -v n2="$N2" 'BEGIN{ printf "%.0f", (b-a)/(n2-n1) }'
}

# Rows that print their RESULT lines at the end add them here.
results=()
declare -A HS HSR TRPS
if [ "${SKIP_TLS:-0}" != 1 ]; then
  # shellcheck source=benches/tls_rows.sh
  . "$root/benches/tls_rows.sh"
  # shellcheck source=benches/rows/churn.sh
  [ "${SKIP_CHURN:-0}" = 1 ] || . "$root/benches/rows/churn.sh"
  # shellcheck source=benches/rows/zero_trust.sh
  [ "${SKIP_ZERO_TRUST:-0}" = 1 ] || . "$root/benches/rows/zero_trust.sh"
fi
# shellcheck source=benches/rows/bodies.sh
[ "${SKIP_BODIES:-0}" = 1 ] || . "$root/benches/rows/bodies.sh"
# shellcheck source=benches/rows/latency.sh
[ "${SKIP_LATENCY:-0}" = 1 ] || . "$root/benches/rows/latency.sh"
# Stop the load-test instances; the upstream (the first) stays.
for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
sleep 0.5
if [ "${SKIP_TLS:-0}" != 1 ]; then
  # shellcheck source=benches/rows/h2.sh
  [ "${SKIP_H2:-0}" = 1 ] || . "$root/benches/rows/h2.sh"
  # shellcheck source=benches/rows/idle.sh
  [ "${SKIP_IDLE:-0}" = 1 ] || . "$root/benches/rows/idle.sh"
fi


if [ "${SKIP_CALLGRIND:-0}" != 1 ]; then
  echo
  echo "instructions per request (callgrind, ($N2 - $N1) requests)"
  IM=$(instr_per_request membrane $MEMBRANE_PORT "" "$MEMBRANE" proxy --no-watch --config "$work/membrane.yaml")
  IN=$(instr_per_request nginx $NGINX_PORT "" "$NGINX" -c "$work/nginx-single.conf")
  # The policy ratio compares like with like: both requests carry the token.
  BEARER="Authorization: Bearer $TOKEN"
  IMH=$(instr_per_request membrane-token $MEMBRANE_PORT "$BEARER" "$MEMBRANE" proxy --no-watch --config "$work/membrane.yaml")
  IP=$(instr_per_request membrane-policy $POLICY_PORT "$BEARER" "$MEMBRANE" proxy --no-watch --config "$work/membrane-policy.yaml")
  printf '%-15s %10s\n' membrane "$IM" nginx "$IN" membrane+token "$IMH" membrane-policy "$IP"
  # Tracing: the sink takes the spans (its own instructions are not counted; the gateway's
  # exporter thread, which batches, encodes and sends them, is).
  taskset -c "$LOAD_CORE" "$OTLP_SINK" "127.0.0.1:$OTLP_PORT" >"$work/otlp-sink.out" & sink=$!
  pids+=("$sink")
  IT1=$(instr_per_request membrane-traced $MEMBRANE_PORT "" "$MEMBRANE" proxy --no-watch --config "$work/membrane-traced-1.0.yaml")
  IT0=$(instr_per_request membrane-unsampled $MEMBRANE_PORT "" "$MEMBRANE" proxy --no-watch --config "$work/membrane-traced-0.0.yaml")
  kill -TERM "$sink"; wait "$sink" 2>/dev/null || true
  printf '%-15s %10s\n' traced-100% "$IT1" traced-0% "$IT0"
  echo "OTLP sink received $(awk '{print $2}' "$work/otlp-sink.out") spans"
fi

echo
printf 'RESULT http1_rps_ratio_vs_nginx %.3f\n' "$(paired membrane nginx 1)"
printf 'RESULT http1_rps_ratio_vs_nginx_same_headers %.3f\n' "$(paired membrane nginx-fwd 1)"
printf 'RESULT http1_cpu_ratio_vs_nginx %.3f\n' "$(paired membrane nginx 2)"
if [ "${SKIP_CALLGRIND:-0}" != 1 ]; then
  awk -v m="$IM" -v n="$IN" 'BEGIN{ printf "RESULT http1_instr_ratio_vs_nginx %.3f\n", m/n }'
  awk -v p="$IP" -v m="$IMH" 'BEGIN{ printf "RESULT policy_instr_ratio_vs_plain %.3f\n", p/m }'
  awk -v t="$IT1" -v m="$IM" 'BEGIN{ printf "RESULT tracing_sampled_instr_ratio_vs_off %.3f\n", t/m }'
  awk -v t="$IT0" -v m="$IM" 'BEGIN{ printf "RESULT tracing_unsampled_instr_ratio_vs_off %.3f\n", t/m }'
fi
printf 'RESULT policy_rps_ratio_vs_plain %.3f\n' "$(paired membrane-policy membrane 1)"
if [ "${SKIP_TLS:-0}" != 1 ]; then
  # Handshakes: per server CPU-second (the inverse of CPU time per handshake), medians.
  awk -v m="$(median <<<"${HS[membrane-tls.full]}")" -v n="$(median <<<"${HS[nginx-tls.full]}")" \
    'BEGIN{ printf "RESULT tls_handshake_ratio_vs_nginx %.3f\n", n/m }'
  awk -v m="$(median <<<"${HS[membrane-tls.resumed]}")" -v n="$(median <<<"${HS[nginx-tls.resumed]}")" \
    'BEGIN{ printf "RESULT tls_resumed_handshake_ratio_vs_nginx %.3f\n", n/m }'
  awk -v m="$(median <<<"${HSR[membrane-tls.full]}")" -v n="$(median <<<"${HSR[nginx-tls.full]}")" \
    'BEGIN{ printf "RESULT tls_handshake_rate_ratio_vs_nginx %.3f\n", m/n }'
  awk -v m="$(median <<<"${TRPS[membrane-tls]}")" -v n="$(median <<<"${TRPS[nginx-tls]}")" \
    'BEGIN{ printf "RESULT tls_rps_ratio_vs_nginx %.3f\n", m/n }'
fi
for line in "${results[@]}"; do echo "RESULT $line"; done
