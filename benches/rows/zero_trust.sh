# The zero-trust row; sourced by side_by_side.sh after the TLS rows (uses their PKI, the
# nginx TLS instance, the token and key set of the policy row, and the helpers). Membrane
# on the full path a cell gateway runs on every request: TLS with a required client
# certificate (a SPIFFE ID from the same CA), a JWT checked (ES256, cached after the first
# use), a 50-rule authorization policy whose allowing rule matches the peer's trust domain,
# a scope claim and a path glob, and a rate limit keyed by the peer (a budget the load never
# reaches, so every request pays for the check). Against nginx terminating TLS only (no
# client certificate, no token check). Load: oha (keep-alive, CONNS connections, DURATION
# seconds; it presents the client certificate to Membrane; both proxies get the same
# Authorization header), interleaved rounds; CPU time per request of each proxy from /proc.
ZT_PORT=18449 ZT_ADMIN_PORT=18097
OHA=${OHA:-$(command -v oha || echo /var/tmp/bench-tools/bin/oha)}
"$MEMBRANE" cert issue --ca "$work/pki" --out "$work/pki" --name client \
  --spiffe spiffe://bench.local/client >/dev/null
{
  cat <<CONF
admin: {address: "127.0.0.1:$ZT_ADMIN_PORT"}
workers: 1
drain_timeout: 1s
jwt_providers:
  - {name: dev, issuer: "https://membrane.dev", audiences: [bench], jwks: {file: jwks.json}}
listeners:
  - name: zt
    address: 127.0.0.1:$ZT_PORT
    protocol: http1
    tls:
      certificates: [{cert: pki/bench.pem, key: pki/bench-key.pem}]
      client_auth: require
      trust_bundle: pki/ca.pem
      trust_domains: [bench.local]
    authorization:
      default: deny
      rules:
CONF
  for i in $(seq 1 49); do
    echo "        - {name: other-$i, action: allow, paths: [{prefix: /svc$i/}], claims: [{claim: scope, contains: svc$i}]}"
  done
  cat <<CONF
        - {name: readers, action: allow, peers: [{trust_domain: bench.local}], paths: [{glob: "/**"}], claims: [{claim: scope, contains: orders.read}]}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            jwt: {provider: dev}
            rate_limit: {requests: 1000000000, per: 1s, key: peer}
            forward: {cluster: up}
clusters:
  - {name: up, endpoints: ["127.0.0.1:$UP_PORT"]}
CONF
} >"$work/membrane-zt.yaml"
taskset -c "$PROXY_CORE" "$MEMBRANE" proxy --no-watch --config "$work/membrane-zt.yaml" 2>"$work/membrane-zt.log" &
zt_pid=$!; pids+=($zt_pid)
zt_curl=(curl -s --cacert "$work/pki/ca.pem" --cert "$work/pki/client.pem" --key "$work/pki/client-key.pem")
for _ in $(seq 1 600); do "${zt_curl[@]}" -o /dev/null "https://localhost:$ZT_PORT/" && break; sleep 0.1; done
[ "$("${zt_curl[@]}" -o /dev/null -w '%{http_code}' "https://localhost:$ZT_PORT/")" = 401 ] ||
  { echo "the zero-trust instance did not ask for a token" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/pki/ca.pem" -H "Authorization: Bearer $TOKEN" "https://localhost:$ZT_PORT/")" != 200 ] ||
  { echo "the zero-trust instance answered a client without a certificate" >&2; exit 1; }
got=$("${zt_curl[@]}" -H "Authorization: Bearer $TOKEN" "https://localhost:$ZT_PORT/")
[ "$got" = "$body" ] || { echo "the zero-trust instance answered '$got'" >&2; exit 1; }

declare -A ZT
zt_run() { # $1 pid, $2 url, then oha flags → "req/s cpu_us_per_req"
  local pid=$1 url=$2 c0 c1 out; shift 2
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CORE" timeout $((DURATION + 30)) "$OHA" --no-tui --output-format json \
    -c "$CONNS" -z "${DURATION}s" --cacert "$work/pki/ca.pem" -H "Authorization: Bearer $TOKEN" "$@" "$url")
  c1=$(cpu_ticks "$pid")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); codes = r["statusCodeDistribution"]; n = sum(codes.values())
ok = codes.get("200", 0)
if ok != n: print("  %d of %d answers not 200: %s" % (n - ok, n, codes), file=sys.stderr)
print("%.0f %.3f" % (r["summary"]["requestsPerSec"], int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / max(n, 1)))
' "$out" $((c1 - c0)) "$CLK_TCK"
}
echo
echo "zero-trust path (Membrane: mTLS + JWT + 50 rules + rate limit; nginx: TLS only; oha, $CONNS connections)"
printf '%-13s %5s %12s %12s\n' proxy round req/s cpu_us/req
for r in $(seq 1 "$ROUNDS"); do
  order=(membrane-zt nginx-tls); (( r % 2 == 0 )) && order=(nginx-tls membrane-zt)
  for n in "${order[@]}"; do
    if [ "$n" = membrane-zt ]; then
      out=$(zt_run "$zt_pid" "https://localhost:$ZT_PORT/" --cert "$work/pki/client.pem" --key "$work/pki/client-key.pem")
    else
      out=$(zt_run "$tls_n_pid" "https://localhost:$TLS_N_PORT/")
    fi
    read -r rps cpu <<<"$out"
    printf '%-13s %5s %12s %12s\n' "$n" "$r" "$rps" "$cpu"
    ZT[$n.$r]="$rps $cpu"
  done
done
zt_paired() { # $1 field (1 req/s, 2 cpu)
  for r in $(seq 1 "$ROUNDS"); do
    awk -v a="${ZT[membrane-zt.$r]}" -v b="${ZT[nginx-tls.$r]}" -v f="$1" \
      'BEGIN{ split(a, x, " "); split(b, y, " "); printf "%s ", x[f] / y[f] }'
  done | median
}
results+=("$(printf 'zero_trust_cpu_ratio_vs_nginx_tls %.3f' "$(zt_paired 2)")")
results+=("$(printf 'zero_trust_rps_ratio_vs_nginx_tls %.3f' "$(zt_paired 1)")")
