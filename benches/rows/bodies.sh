# Large-body rows; sourced by side_by_side.sh (uses the plain Membrane and nginx instances
# and the upstream, which serves /big, a 1 MiB file, and takes /upload, answering 200 once
# it has read the whole body). wrk with BODY_CONNS connections: GET /big (download) and POST /upload
# with a 1 MiB body (upload), interleaved rounds. Throughput is MiB/s of body through the
# proxy; CPU is the proxy's CPU time per MiB. Both proxies stream: nginx with its default
# in-memory response buffers but no temporary files (`proxy_max_temp_file_size 0`) and
# `proxy_request_buffering off` for uploads (its default would spool the body to disk
# first); Membrane streams both ways by design.
BODY_CONNS=${BODY_CONNS:-8}
cat >"$work/upload.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
declare -A BD
echo
echo "large bodies (1 MiB, $BODY_CONNS connections)"
printf '%-9s %-9s %5s %10s %12s\n' proxy way round MiB/s cpu_ms/MiB
for r in $(seq 1 "$ROUNDS"); do
  for way in download upload; do
    order=(membrane nginx); (( r % 2 == 0 )) && order=(nginx membrane)
    for n in "${order[@]}"; do
      pid=${PID[$n]} port=${PORT[$n]}
      args=("http://127.0.0.1:$port/big")
      [ "$way" = upload ] && args=(-s "$work/upload.lua" "http://127.0.0.1:$port/upload")
      c0=$(cpu_ticks "$pid")
      out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$BODY_CONNS" -d"${DURATION}s" "${args[@]}")
      c1=$(cpu_ticks "$pid")
      rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
      [ -z "$errs" ] || echo "  $n $way: $errs" >&2
      ms=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{ printf "%.3f", (n ? t * 1e3 / hz / n : 0) }')
      printf '%-9s %-9s %5s %10.0f %12s\n' "$n" "$way" "$r" "$rps" "$ms"
      BD[$n.$way.$r]="$rps $ms"
    done
  done
done
body_paired() { # $1 way, $2 field (1 MiB/s, 2 cpu per MiB)
  for r in $(seq 1 "$ROUNDS"); do
    awk -v a="${BD[membrane.$1.$r]}" -v b="${BD[nginx.$1.$r]}" -v f="$2" \
      'BEGIN{ split(a, x, " "); split(b, y, " "); printf "%s ", (y[f] > 0 ? x[f] / y[f] : 0) }'
  done | median
}
for way in download upload; do
  results+=("$(printf 'body_%s_throughput_ratio_vs_nginx %.3f' "$way" "$(body_paired $way 1)")")
  results+=("$(printf 'body_%s_cpu_per_byte_ratio_vs_nginx %.3f' "$way" "$(body_paired $way 2)")")
done
