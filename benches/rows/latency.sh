# Tail latency at a fixed rate; sourced by side_by_side.sh after the HTTP/1.1 rounds (uses
# nginx's median saturation req/s from them, the plain instances and the helpers). oha
# (crates.io; `cargo install oha`) sends a constant rate over CONNS keep-alive connections
# with --latency-correction: a request is timed from when it was due, not from when a busy
# connection got round to it (no coordinated omission). Rates: 50% and 80% of nginx's
# saturation rate, the same rate to both proxies; interleaved rounds of DURATION seconds;
# p50, p99 and p99.9 per run; ratios Membrane/nginx within a round, median over rounds.
OHA=${OHA:-$(command -v oha || echo /var/tmp/bench-tools/bin/oha)}
[ -x "$OHA" ] || { echo "oha not found: cargo install oha --locked (or set OHA)" >&2; exit 1; }
declare -A LAT
echo
echo "tail latency at a fixed rate (oha -q, $CONNS connections, nginx saturated at ${MED[nginx]} req/s)"
printf '%-9s %5s %5s %10s %10s %10s %10s\n' proxy load round req/s p50_ms p99_ms p99.9_ms
for r in $(seq 1 "$ROUNDS"); do
  for pct in 50 80; do
    rate=$(awk -v m="${MED[nginx]}" -v p="$pct" 'BEGIN{ printf "%d", m * p / 100 }')
    order=(membrane nginx); (( r % 2 == 0 )) && order=(nginx membrane)
    for n in "${order[@]}"; do
      out=$(taskset -c "$LOAD_CORE" timeout $((DURATION + 30)) "$OHA" --no-tui --output-format json \
        -c "$CONNS" -z "${DURATION}s" -q "$rate" --latency-correction "http://127.0.0.1:${PORT[$n]}/")
      line=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); p = r["latencyPercentiles"]
print("%.0f %.3f %.3f %.3f" % (r["summary"]["requestsPerSec"], p["p50"] * 1e3, p["p99"] * 1e3, p["p99.9"] * 1e3))
' "$out")
      read -r got p50 p99 p999 <<<"$line"
      printf '%-9s %4s%% %5s %10s %10s %10s %10s\n' "$n" "$pct" "$r" "$got" "$p50" "$p99" "$p999"
      LAT[$n.$pct.$r]="$p50 $p99 $p999"
    done
  done
done
lat_paired() { # $1 load percent, $2 field (1 p50, 2 p99, 3 p99.9)
  for r in $(seq 1 "$ROUNDS"); do
    awk -v a="${LAT[membrane.$1.$r]}" -v b="${LAT[nginx.$1.$r]}" -v f="$2" \
      'BEGIN{ split(a, x, " "); split(b, y, " "); printf "%s ", x[f] / y[f] }'
  done | median
}
printf '%-5s %12s %12s %12s   (Membrane/nginx)\n' load p50 p99 p99.9
for pct in 50 80; do
  printf '%4s%% %12.3f %12.3f %12.3f\n' "$pct" "$(lat_paired $pct 1)" "$(lat_paired $pct 2)" "$(lat_paired $pct 3)"
  results+=("$(printf 'p99_ratio_vs_nginx_at_%spct %.3f' "$pct" "$(lat_paired $pct 2)")")
  results+=("$(printf 'p999_ratio_vs_nginx_at_%spct %.3f' "$pct" "$(lat_paired $pct 3)")")
done
