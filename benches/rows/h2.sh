# HTTP/2 rows of the side-by-side benchmark; sourced by side_by_side.sh (uses its work dir,
# cores, helpers, the PKI tls_rows.sh made and the upstream it started). Membrane, nginx and
# HAProxy, one worker each, serve HTTP/2 to h2load and forward over HTTP/1.1 to the same
# upstream: h2c with prior knowledge, and TLS with ALPN h2 (the ECDSA P-256 certificate of
# the TLS rows). Four shapes, each in interleaved rounds of DURATION seconds:
#   h2c, 64 connections x 1 stream;   h2c, 4 connections x 100 streams;
#   TLS, 64 connections x 1 stream;   TLS, 4 connections x 100 streams.
# Each ratio is the median over rounds of Membrane/nginx within the round (as for HTTP/1.1);
# `RESULT h2_rps_ratio_vs_nginx` is the lowest of the four, so it meets a target only if
# every shape does. Instructions per request: callgrind, h2c, 16 connections x 10 streams.
H2C_M_PORT=18086 H2C_N_PORT=18087 H2C_H_PORT=18088
H2T_M_PORT=18446 H2T_N_PORT=18447 H2T_H_PORT=18448 H2_ADMIN_PORT=18093 H2T_ADMIN_PORT=18095
H2_CONNS=${H2_CONNS:-64}
H2_MUX_CONNS=${H2_MUX_CONNS:-4}

membrane_h2_conf() { # $1 admin port, $2 port, $3 tls yaml or ""
  cat <<CONF
admin: {address: "127.0.0.1:$1"}
workers: 1
drain_timeout: 1s
listeners:
  - name: h2
    address: 127.0.0.1:$2
    protocol: http2
$3
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            forward: {cluster: up}
clusters:
  - {name: up, endpoints: ["127.0.0.1:$UP_PORT"]}
CONF
}
membrane_h2_conf $H2_ADMIN_PORT $H2C_M_PORT "" >"$work/membrane-h2c.yaml"
membrane_h2_conf $H2T_ADMIN_PORT $H2T_M_PORT "    tls: {certificates: [{cert: pki/bench.pem, key: pki/bench-key.pem}]}" >"$work/membrane-h2tls.yaml"
nginx_h2_conf() { # $1 master_process, $2 pid name
  cat <<CONF
worker_processes 1; daemon off; master_process $1; pid $work/$2.pid; error_log $work/ngh2.err warn; user root;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work/nginx-tmp; proxy_temp_path $work/nginx-tmp;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 256; }
  server { listen 127.0.0.1:$H2C_N_PORT http2; listen 127.0.0.1:$H2T_N_PORT ssl http2;
    keepalive_requests 10000000;
    ssl_certificate $work/pki/bench.pem; ssl_certificate_key $work/pki/bench-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
}
nginx_h2_conf on ngh2 >"$work/nginx-h2.conf"
nginx_h2_conf off ngh2s >"$work/nginx-h2-single.conf"
cat "$work/pki/bench.pem" "$work/pki/bench-key.pem" >"$work/pki/bench-combined.pem"
cat >"$work/haproxy-h2.cfg" <<CONF
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
  bind 127.0.0.1:$H2C_H_PORT proto h2
  bind 127.0.0.1:$H2T_H_PORT ssl crt $work/pki/bench-combined.pem alpn h2
  default_backend b
backend b
  server s1 127.0.0.1:$UP_PORT
CONF

taskset -c "$PROXY_CORE" "$MEMBRANE" proxy --no-watch --config "$work/membrane-h2c.yaml" 2>"$work/membrane-h2c.log" &
h2c_m_pid=$!; pids+=($h2c_m_pid)
taskset -c "$PROXY_CORE" "$MEMBRANE" proxy --no-watch --config "$work/membrane-h2tls.yaml" 2>"$work/membrane-h2tls.log" &
h2t_m_pid=$!; pids+=($h2t_m_pid)
taskset -c "$PROXY_CORE" "$NGINX" -c "$work/nginx-h2.conf" & h2_n_pid=$!; pids+=($h2_n_pid)
taskset -c "$PROXY_CORE" "$HAPROXY" -f "$work/haproxy-h2.cfg" -db 2>"$work/haproxy-h2.log" &
h2_h_pid=$!; pids+=($h2_h_pid)
for p in $H2C_M_PORT $H2C_N_PORT $H2C_H_PORT; do
  for _ in $(seq 1 600); do
    curl -s -o /dev/null --http2-prior-knowledge "http://127.0.0.1:$p/" && break
    sleep 0.1
  done
  got=$(curl -s --http2-prior-knowledge "http://127.0.0.1:$p/")
  [ "$got" = "$body" ] || { echo "h2c port $p answered '$got'" >&2; exit 1; }
done
for p in $H2T_M_PORT $H2T_N_PORT $H2T_H_PORT; do
  got=$(curl -s --http2 --cacert "$work/pki/ca.pem" "https://localhost:$p/")
  [ "$got" = "$body" ] || { echo "h2 TLS port $p answered '$got'" >&2; exit 1; }
done
sleep 0.3
h2_ngx_worker=$(pgrep -P "$h2_n_pid" | head -1)

declare -A H2R
h2_run() { # $1 pid, $2 url, $3 connections, $4 streams → "req/s cpu_us_per_req"
  local c0 c1 out rps done_n
  c0=$(cpu_ticks "$1")
  out=$(taskset -c "$LOAD_CORE" timeout $((DURATION + 30)) h2load -D "$DURATION" -c "$3" -m "$4" "$2" 2>&1)
  c1=$(cpu_ticks "$1")
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  done_n=$(awk '/^requests:/ {print $8}' <<<"$out")
  grep -q " 0 failed, 0 errored" <<<"$out" || echo "  h2load: $(grep '^requests:' <<<"$out")" >&2
  awk -v r="$rps" -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$done_n" \
    'BEGIN{ printf "%s %.3f\n", r, (n ? t * 1e6 / hz / n : 0) }'
}

echo
echo "HTTP/2 (h2load, $DURATION s runs; c = connections, m = streams per connection)"
printf '%-9s %-8s %5s %12s %12s\n' proxy shape round req/s cpu_us/req
h2_shapes=("h2c-m1" "h2c-m100" "tls-m1" "tls-m100")
for r in $(seq 1 "$ROUNDS"); do
  for shape in "${h2_shapes[@]}"; do
    order=(membrane nginx haproxy)
    (( r % 2 == 0 )) && order=(haproxy nginx membrane)
    for n in "${order[@]}"; do
      case "$shape" in
        h2c-*) scheme=http; case $n in membrane) port=$H2C_M_PORT pid=$h2c_m_pid ;; nginx) port=$H2C_N_PORT pid=$h2_ngx_worker ;; *) port=$H2C_H_PORT pid=$h2_h_pid ;; esac ;;
        *) scheme=https; case $n in membrane) port=$H2T_M_PORT pid=$h2t_m_pid ;; nginx) port=$H2T_N_PORT pid=$h2_ngx_worker ;; *) port=$H2T_H_PORT pid=$h2_h_pid ;; esac ;;
      esac
      conns=$H2_CONNS streams=1
      [ "${shape##*-}" = m100 ] && conns=$H2_MUX_CONNS streams=100
      read -r rps cpu <<<"$(h2_run "$pid" "$scheme://127.0.0.1:$port/" "$conns" "$streams")"
      printf '%-9s %-8s %5s %12.0f %12.2f\n' "$n" "$shape" "$r" "$rps" "$cpu"
      H2R[$n.$shape.$r]="$rps $cpu"
    done
  done
done
h2_paired() { # $1 shape, $2 field (1 req/s, 2 cpu), $3 peer
  for r in $(seq 1 "$ROUNDS"); do
    awk -v a="${H2R[membrane.$1.$r]}" -v b="${H2R[$3.$1.$r]}" -v f="$2" \
      'BEGIN{ split(a, x, " "); split(b, y, " "); printf "%s ", x[f] / y[f] }'
  done | median
}
printf '%-10s %14s %14s %16s\n' shape rps_vs_nginx cpu_vs_nginx rps_vs_haproxy
h2_min=
for shape in "${h2_shapes[@]}"; do
  ratio=$(h2_paired "$shape" 1 nginx)
  printf '%-10s %14.3f %14.3f %16.3f\n' "$shape" "$ratio" "$(h2_paired "$shape" 2 nginx)" "$(h2_paired "$shape" 1 haproxy)"
  results+=("$(printf 'h2_rps_ratio_vs_nginx_%s %.3f' "${shape//-/_}" "$ratio")")
  h2_min=$(awk -v a="${h2_min:-$ratio}" -v b="$ratio" 'BEGIN{ print (b < a ? b : a) }')
done
results+=("$(printf 'h2_rps_ratio_vs_nginx %.3f' "$h2_min")")
kill "$h2c_m_pid" "$h2t_m_pid" "$h2_n_pid" "$h2_h_pid" 2>/dev/null || true
sleep 0.5

if [ "${SKIP_CALLGRIND:-0}" != 1 ]; then
  echo "HTTP/2 instructions per request (callgrind, h2c, 16 connections x 10 streams)"
  H2LOAD_FLAGS="-m 10" WAIT_CURL_FLAGS="--http2-prior-knowledge"
  IH2M=$(instr_per_request membrane-h2 $H2C_M_PORT "" "$MEMBRANE" proxy --no-watch --config "$work/membrane-h2c.yaml")
  IH2N=$(instr_per_request nginx-h2 $H2C_N_PORT "" "$NGINX" -c "$work/nginx-h2-single.conf")
  H2LOAD_FLAGS="--h1 -m 1" WAIT_CURL_FLAGS=
  printf '%-15s %10s\n' membrane-h2 "$IH2M" nginx-h2 "$IH2N"
  results+=("$(awk -v m="$IH2M" -v n="$IH2N" 'BEGIN{ printf "h2_instr_ratio_vs_nginx %.3f", m/n }')")
fi
