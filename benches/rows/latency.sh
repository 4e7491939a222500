# Tail latency at a fixed rate; sourced by side_by_side.sh after the HTTP/1.1 rounds (uses
# nginx's median saturation req/s from them, the plain instances and the helpers). The
# generator is `benches/tools/fixed_rate.rs` (wrk2's model: a constant schedule over CONNS
# keep-alive connections, each request timed from when it could have been sent, so a slow
# answer counts against the requests queued behind it; its header says why not oha -q).
# Rates: 50% and 80% of nginx's saturation rate, the same rate to both proxies;
# interleaved rounds of DURATION seconds; p50, p99 and p99.9 per run; ratios
# Membrane/nginx within a round, median over rounds.
FIXED_RATE=${CARGO_TARGET_DIR:-$root/target}/release/examples/fixed-rate
declare -A LAT
echo
echo "tail latency at a fixed rate ($CONNS connections; nginx saturated at ${MED[nginx]} req/s under wrk)"
printf '%-9s %5s %5s %10s %10s %10s %10s %7s %7s\n' proxy load round req/s p50_ms p99_ms p99.9_ms errors late
for r in $(seq 1 "$ROUNDS"); do
  for pct in 50 80; do
    rate=$(awk -v m="${MED[nginx]}" -v p="$pct" 'BEGIN{ printf "%d", m * p / 100 }')
    order=(membrane nginx); (( r % 2 == 0 )) && order=(nginx membrane)
    for n in "${order[@]}"; do
      read -r got p50 p99 p999 errs late <<<"$(taskset -c "$LOAD_CORE" timeout $((DURATION + 30)) \
        "$FIXED_RATE" --addr "127.0.0.1:${PORT[$n]}" --rate "$rate" --conns "$CONNS" --duration "$DURATION")"
      printf '%-9s %4s%% %5s %10s %10s %10s %10s %7s %7s\n' "$n" "$pct" "$r" "$got" "$p50" "$p99" "$p999" "$errs" "$late"
      LAT[$n.$pct.$r]="$p50 $p99 $p999"
    done
  done
done
lat_paired() { # $1 load percent, $2 field (1 p50, 2 p99, 3 p99.9)
  for r in $(seq 1 "$ROUNDS"); do
    awk -v a="${LAT[membrane.$1.$r]}" -v b="${LAT[nginx.$1.$r]}" -v f="$2" \
      'BEGIN{ split(a, x, " "); split(b, y, " "); printf "%s ", (y[f] > 0 ? x[f] / y[f] : 0) }'
  done | median
}
printf '%-5s %12s %12s %12s   (Membrane/nginx)\n' load p50 p99 p99.9
for pct in 50 80; do
  printf '%4s%% %12.3f %12.3f %12.3f\n' "$pct" "$(lat_paired $pct 1)" "$(lat_paired $pct 2)" "$(lat_paired $pct 3)"
  results+=("$(printf 'p99_ratio_vs_nginx_at_%spct %.3f' "$pct" "$(lat_paired $pct 2)")")
  results+=("$(printf 'p999_ratio_vs_nginx_at_%spct %.3f' "$pct" "$(lat_paired $pct 3)")")
done
