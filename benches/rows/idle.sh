# Memory per idle connection; sourced by side_by_side.sh (uses its work dir, helpers, the PKI
# tls_rows.sh made and the upstream). For each kind (HTTP/1.1 keep-alive, HTTP/1.1 over TLS,
# HTTP/2 with prior knowledge) and each proxy, a fresh instance (so no allocator cache from
# an earlier run hides the cost) is warmed with 64 connections of that kind, its RSS read
# (VmRSS; nginx: its one worker), then IDLE_CONNS more connections are opened, each sends
# one request that is proxied upstream, reads the answer and stays open and idle
# (`benches/tools/idle_conns.rs`); the RSS is read again while they are held.
# Bytes per connection = (RSS held - RSS warm) / IDLE_CONNS.
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_M_PORT=18180 IDLE_MT_PORT=18181 IDLE_M2_PORT=18182 IDLE_ADMIN_PORT=18096
IDLE_N_PORT=18183 IDLE_NT_PORT=18184 IDLE_N2_PORT=18185
IDLE_TOOL=${CARGO_TARGET_DIR:-$root/target}/release/examples/idle-conns
# 10,000 connections need as many descriptors in the proxy and in the client: the soft
# limit is raised to the hard one (20,000 on the development machine).
ulimit -n "$(ulimit -Hn)"

cat >"$work/membrane-idle.yaml" <<CONF
admin: {address: "127.0.0.1:$IDLE_ADMIN_PORT"}
workers: 1
drain_timeout: 1s
CONF
echo "listeners:" >>"$work/membrane-idle.yaml"
for l in "h1 $IDLE_M_PORT http1 no" "tls $IDLE_MT_PORT http1 yes" "h2 $IDLE_M2_PORT http2 no"; do
  set -- $l
  cat >>"$work/membrane-idle.yaml" <<CONF
  - name: $1
    address: 127.0.0.1:$2
    protocol: $3
    limits: {header_read_timeout: 120s}
CONF
  [ "$4" = yes ] && echo "    tls: {certificates: [{cert: pki/bench.pem, key: pki/bench-key.pem}]}" >>"$work/membrane-idle.yaml"
  cat >>"$work/membrane-idle.yaml" <<CONF
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            forward: {cluster: up}
CONF
done
echo "clusters: [{name: up, endpoints: [\"127.0.0.1:$UP_PORT\"]}]" >>"$work/membrane-idle.yaml"
cat >"$work/nginx-idle.conf" <<CONF
worker_processes 1; worker_rlimit_nofile 20000; daemon off; master_process on; pid $work/ngi.pid; error_log $work/ngi.err warn; user root;
events { worker_connections 19000; }
http { access_log off; client_body_temp_path $work/nginx-tmp; proxy_temp_path $work/nginx-tmp;
  keepalive_timeout 120s; 
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 256; }
  server { listen 127.0.0.1:$IDLE_N_PORT; listen 127.0.0.1:$IDLE_NT_PORT ssl; listen 127.0.0.1:$IDLE_N2_PORT http2;
    ssl_certificate $work/pki/bench.pem; ssl_certificate_key $work/pki/bench-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF

rss_bytes() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$1/status"; }
idle_source=2
idle_hold() { # $1 kind, $2 port, $3 count → prints nothing; leaves the client running in $idle_pid
  idle_source=$((idle_source + 1))
  taskset -c "$LOAD_CORE" "$IDLE_TOOL" --addr "127.0.0.1:$2" --kind "$1" --count "$3" --hold 60 \
    --source "127.0.$idle_source.0" --ca "$work/pki/ca.pem" --name localhost >"$work/idle.out" 2>"$work/idle.err" &
  idle_pid=$!
  for _ in $(seq 1 1200); do
    grep -q '^open' "$work/idle.out" && return 0
    kill -0 "$idle_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "idle-conns ($1 on $2) did not open its connections: $(cat "$work/idle.err")" >&2
  return 1
}
idle_measure() { # $1 proxy, $2 kind, $3 port → bytes per idle connection
  local pid proc warm held
  if [ "$1" = membrane ]; then
    taskset -c "$PROXY_CORE" "$MEMBRANE" proxy --no-watch --config "$work/membrane-idle.yaml" 2>"$work/membrane-idle.log" &
    pid=$!; proc=$pid
  else
    taskset -c "$PROXY_CORE" "$NGINX" -c "$work/nginx-idle.conf" & pid=$!
    sleep 0.3; proc=$(pgrep -P "$pid" | head -1)
  fi
  local h1port=$IDLE_M_PORT
  [ "$1" = nginx ] && h1port=$IDLE_N_PORT
  for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$h1port/" && break; sleep 0.1; done
  [ "$1" = nginx ] && proc=$(pgrep -P "$pid" | head -1)
  # Warm-up: 64 connections of the kind, held while the rest are measured.
  idle_hold "$2" "$3" 64
  local warm_pid=$idle_pid
  sleep 0.5
  warm=$(rss_bytes "$proc")
  idle_hold "$2" "$3" "$IDLE_CONNS"
  sleep 1
  held=$(rss_bytes "$proc")
  kill "$idle_pid" "$warm_pid" 2>/dev/null; wait "$idle_pid" "$warm_pid" 2>/dev/null || true
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  awk -v a="$warm" -v b="$held" -v n="$IDLE_CONNS" 'BEGIN{ printf "%.0f", (b - a) / n }'
}

echo
echo "memory per idle connection ($IDLE_CONNS connections, one request each, then idle; RSS)"
printf '%-6s %16s %16s %10s\n' kind membrane_bytes nginx_bytes ratio
for kind in h1 tls h2; do
  case $kind in h1) mp=$IDLE_M_PORT np=$IDLE_N_PORT ;; tls) mp=$IDLE_MT_PORT np=$IDLE_NT_PORT ;; h2) mp=$IDLE_M2_PORT np=$IDLE_N2_PORT ;; esac
  m=$(idle_measure membrane $kind $mp)
  n=$(idle_measure nginx $kind $np)
  printf '%-6s %16s %16s %10.3f\n' "$kind" "$m" "$n" "$(awk -v m="$m" -v n="$n" 'BEGIN{ print (n > 0 ? m / n : 0) }')"
  results+=("idle_conn_bytes_$kind $m" "idle_conn_bytes_${kind}_nginx $n")
done
