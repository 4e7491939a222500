# Connection churn rows; sourced by side_by_side.sh after the TLS rows (uses the plain and
# TLS instances of Membrane and nginx still running, and its helpers). One request per
# connection:
# - plain: wrk with `Connection: close` (each proxy closes after its answer, wrk opens a
#   new connection), req/s and the proxy's CPU time per connection, interleaved rounds;
# - TLS, full handshakes: the same over HTTPS (wrk does not resume sessions: each
#   connection is a full TLS 1.3 handshake). The clients' side of a handshake costs more
#   than the server's, so the load core bounds req/s here: the ratio that tells is CPU
#   time per connection;
# - TLS, resumed: `openssl s_time -www / -reuse` (TLS 1.2 session resumption, a GET per
#   connection), CPU time per connection.
declare -A CH
echo
echo "connection churn (one request per connection)"
printf '%-13s %-9s %5s %12s %14s\n' proxy kind round conn/s server_us/conn
for r in $(seq 1 "$ROUNDS"); do
  for kind in plain tls-full tls-resumed; do
    order=(membrane nginx); (( r % 2 == 0 )) && order=(nginx membrane)
    for n in "${order[@]}"; do
      case "$n.$kind" in
        membrane.plain) pid=${PID[membrane]} port=$MEMBRANE_PORT ;;
        nginx.plain) pid=${PID[nginx]} port=$NGINX_PORT ;;
        membrane.*) pid=$tls_m_pid port=$TLS_M_PORT ;;
        nginx.*) pid=$tls_n_pid port=$TLS_N_PORT ;;
      esac
      c0=$(cpu_ticks "$pid")
      if [ "$kind" = tls-resumed ]; then
        read -r count rate _ <<<"$(handshakes "$pid" "$port" -www / -reuse -tls1_2)"
        c1=$(cpu_ticks "$pid")
        reqs=$count
      else
        url=http://127.0.0.1:$port/; [ "$kind" = tls-full ] && url=https://localhost:$port/
        out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Connection: close" "$url")
        c1=$(cpu_ticks "$pid")
        rate=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
        [ -z "$errs" ] || echo "  $n $kind: $errs" >&2
      fi
      us=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{ printf "%.1f", (n ? t * 1e6 / hz / n : 0) }')
      printf '%-13s %-9s %5s %12.0f %14s\n' "$n" "$kind" "$r" "$rate" "$us"
      CH[$n.$kind.$r]="$rate $us"
    done
  done
done
churn_paired() { # $1 kind, $2 field (1 rate, 2 cpu)
  for r in $(seq 1 "$ROUNDS"); do
    awk -v a="${CH[membrane.$1.$r]}" -v b="${CH[nginx.$1.$r]}" -v f="$2" \
      'BEGIN{ split(a, x, " "); split(b, y, " "); printf "%s ", (y[f] > 0 ? x[f] / y[f] : 0) }'
  done | median
}
printf '%-12s %14s %14s\n' kind rate_vs_nginx cpu_vs_nginx
for kind in plain tls-full tls-resumed; do
  printf '%-12s %14.3f %14.3f\n' "$kind" "$(churn_paired "$kind" 1)" "$(churn_paired "$kind" 2)"
done
results+=("$(printf 'churn_rps_ratio_vs_nginx %.3f' "$(churn_paired plain 1)")")
results+=("$(printf 'churn_cpu_ratio_vs_nginx %.3f' "$(churn_paired plain 2)")")
results+=("$(printf 'churn_tls_full_cpu_ratio_vs_nginx %.3f' "$(churn_paired tls-full 2)")")
results+=("$(printf 'churn_tls_resumed_cpu_ratio_vs_nginx %.3f' "$(churn_paired tls-resumed 2)")")
