# TLS rows of the side-by-side benchmark; sourced by side_by_side.sh (uses its work dir,
# cores, helpers and the upstream it started). Membrane and nginx terminate TLS with the
# same ECDSA P-256 certificate (made by `membrane cert`), TLS 1.2 and 1.3, session tickets
# and a session cache on, one worker each, and proxy to the same upstream.
#
# - keep-alive req/s over TLS: wrk, interleaved rounds as for plain HTTP.
# - handshakes: `openssl s_time` clients (HS_CLIENTS in parallel, HS_DURATION seconds)
#   connect, handshake and close, full (TLS 1.3) or resumed (TLS 1.2 session resumption:
#   s_time closes before a TLS 1.3 ticket arrives, so 1.3 resumption cannot be driven by
#   it). The clients' side (ECDSA verify, key share) costs more than the server's, so one
#   load core cannot saturate the server: handshakes per second are printed, and the ratio
#   is taken over the server's CPU time per handshake (handshakes per server CPU-second),
#   read from /proc before and after each run.
TLS_M_PORT=18443 TLS_N_PORT=18444 TLS_ADMIN_PORT=18091
HS_DURATION=${HS_DURATION:-8}
HS_CLIENTS=${HS_CLIENTS:-2}
CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$work/pki"
"$MEMBRANE" cert ca --out "$work/pki" >/dev/null
"$MEMBRANE" cert issue --ca "$work/pki" --out "$work/pki" --name bench --dns localhost >/dev/null

cat >"$work/nginx-tls.conf" <<CONF
worker_processes 1; daemon off; master_process on; pid $work/ngt.pid; error_log $work/ngt.err warn; user root;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work/nginx-tmp; proxy_temp_path $work/nginx-tmp;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 256; }
  server { listen 127.0.0.1:$TLS_N_PORT ssl; keepalive_requests 10000000;
    ssl_certificate $work/pki/bench.pem; ssl_certificate_key $work/pki/bench-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat >"$work/membrane-tls.yaml" <<CONF
admin: {address: "127.0.0.1:$TLS_ADMIN_PORT"}
workers: 1
drain_timeout: 1s
listeners:
  - name: tls
    address: 127.0.0.1:$TLS_M_PORT
    protocol: http1
    tls:
      certificates: [{cert: pki/bench.pem, key: pki/bench-key.pem}]
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            forward: {cluster: up}
clusters:
  - {name: up, endpoints: ["127.0.0.1:$UP_PORT"]}
CONF

taskset -c "$PROXY_CORE" "$MEMBRANE" proxy --no-watch --config "$work/membrane-tls.yaml" 2>"$work/membrane-tls.log" &
tls_m_pid=$!; pids+=($tls_m_pid)
taskset -c "$PROXY_CORE" "$NGINX" -c "$work/nginx-tls.conf" &
tls_n_pid=$!; pids+=($tls_n_pid)
for p in $TLS_M_PORT $TLS_N_PORT; do
  for _ in $(seq 1 600); do
    curl -s -o /dev/null --cacert "$work/pki/ca.pem" "https://localhost:$p/" && break
    sleep 0.1
  done
  got=$(curl -s --cacert "$work/pki/ca.pem" "https://localhost:$p/")
  [ "$got" = "$body" ] || { echo "TLS port $p answered '$got'" >&2; exit 1; }
done

cpu_ticks() { # $1 pid: utime+stime of it and its children, in clock ticks
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

handshakes() { # $1 pid, $2 port, then s_time flags → "count rate cpu_us_per_handshake"
  local pid=$1 port=$2; shift 2
  local c0 c1 n=0 i clients=()
  c0=$(cpu_ticks "$pid")
  for i in $(seq 1 "$HS_CLIENTS"); do
    taskset -c "$LOAD_CORE" timeout $((HS_DURATION + 30)) openssl s_time -connect "127.0.0.1:$port" \
      -time "$HS_DURATION" "$@" >"$work/stime.$i" 2>&1 &
    clients+=($!)
  done
  wait "${clients[@]}" 2>/dev/null || true
  c1=$(cpu_ticks "$pid")
  for i in $(seq 1 "$HS_CLIENTS"); do
    n=$((n + $(awk '/real seconds/ {print $1; exit}' "$work/stime.$i")))
  done
  awk -v n="$n" -v d="$HS_DURATION" -v t=$((c1 - c0)) -v hz="$CLK_TCK" \
    'BEGIN{ printf "%d %.0f %.1f\n", n, n/d, (n ? t/hz*1e6/n : 0) }'
}

echo
echo "TLS (ECDSA P-256; keep-alive wrk rounds, then s_time handshakes with $HS_CLIENTS clients x ${HS_DURATION}s)"
printf '%-13s %5s %12s %9s %9s\n' proxy round req/s p50_ms p99_ms
for r in $(seq 1 "$ROUNDS"); do
  for n in membrane-tls nginx-tls; do
    port=$TLS_M_PORT; [ "$n" = nginx-tls ] && port=$TLS_N_PORT
    out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "https://localhost:$port/")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    [ -z "$errs" ] || echo "  $n: $errs" >&2
    printf '%-13s %5s %12.0f %9.3f %9.3f\n' "$n" "$r" "$rps" \
      "$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")" "$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
    TRPS[$n]="${TRPS[$n]:-} $rps"
  done
done

printf '%-13s %-8s %10s %12s %14s\n' proxy kind count per_s server_us/hs
for r in $(seq 1 "$ROUNDS"); do
  for kind in full resumed; do
    flags=(-new -tls1_3); [ "$kind" = resumed ] && flags=(-reuse -tls1_2)
    for n in membrane-tls nginx-tls; do
      pid=$tls_m_pid port=$TLS_M_PORT
      [ "$n" = nginx-tls ] && pid=$tls_n_pid port=$TLS_N_PORT
      read -r count rate us <<<"$(handshakes "$pid" "$port" "${flags[@]}")"
      printf '%-13s %-8s %10d %12.0f %14.1f\n' "$n" "$kind" "$count" "$rate" "$us"
      HS[$n.$kind]="${HS[$n.$kind]:-} $us"
      HSR[$n.$kind]="${HSR[$n.$kind]:-} $rate"
    done
  done
done
