#!/usr/bin/env bash
# Benchmark (not a test): certloop against nginx on loopback, same ECDSA P-256 certificate, same
# upstream, alternating the servers in one run. Prints each measurement and the ratios
# certloop / nginx for:
#   - new full TLS 1.3 handshakes per second (every client makes one request on a fresh
#     connection, no session resumption), and
#   - keep-alive HTTP/1.1 requests per second through the proxy.
# Both servers keep their default session-resumption settings (tickets on); h2load clients
# never resume, so every handshake is a full one.
# Usage: scripts/bench-proxy.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
source scripts/bench-setup.sh
# h2load's thousands of clients all come from 127.0.0.1: lift the per-client cap (nginx has
# none by default) so that both servers see the same load.
bench_setup bench-proxy "[limits]
max_connections_per_ip = 0" "worker_processes auto;
events { worker_connections 4096; }" "ssl http2" 'proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;'
curl -sk --resolve "bench.local:$cl:127.0.0.1" "https://bench.local:$cl/" | head -1 >/dev/null
curl -sk --resolve "bench.local:$ng:127.0.0.1" "https://bench.local:$ng/" | head -1 >/dev/null

# h2load prints "finished in Xs, N req/s, ..."; take the req/s.
rate() { grep -o 'finished in [^,]*, [0-9.]* req/s' | awk '{print $4}'; }
handshakes() { # port: 3000 clients, one request each on a new TLS 1.3 connection
    h2load --h1 -n 3000 -c 3000 -r 150 --rate-period 50ms -t 1 --connect-to "127.0.0.1:$1" \
        --tls13-ciphers TLS_AES_128_GCM_SHA256 "https://bench.local:$1/" 2>&1 | rate
}
keepalive() { # port: 20 keep-alive HTTP/1.1 connections, 40,000 requests
    h2load --h1 -n 40000 -c 20 -t 1 --connect-to "127.0.0.1:$1" "https://bench.local:$1/" 2>&1 | rate
}

declare -A best
for round in $(seq "$rounds"); do
    for server in certloop nginx; do
        port=$cl; [ "$server" = nginx ] && port=$ng
        hs=$(handshakes "$port"); ka=$(keepalive "$port")
        echo "round $round $server: handshakes/s=$hs keepalive req/s=$ka"
        for metric in hs ka; do
            value=${!metric}
            key="$server-$metric"
            if [ -z "${best[$key]:-}" ] || awk "BEGIN{exit !($value > ${best[$key]})}"; then best[$key]=$value; fi
        done
    done
done
echo
echo "best of $rounds rounds:"
printf '  new TLS 1.3 handshakes/s: certloop %s, nginx %s, ratio certloop/nginx %.2f\n' \
    "${best[certloop-hs]}" "${best[nginx-hs]}" "$(awk "BEGIN{print ${best[certloop-hs]}/${best[nginx-hs]}}")"
printf '  keep-alive requests/s:     certloop %s, nginx %s, ratio certloop/nginx %.2f\n' \
    "${best[certloop-ka]}" "${best[nginx-ka]}" "$(awk "BEGIN{print ${best[certloop-ka]}/${best[nginx-ka]}}")"
