#!/usr/bin/env bash
# Benchmark (not a test): certloop against nginx on loopback, same ECDSA P-256 certificate, same
# upstream, alternating the servers round by round in one run. For each figure it prints the
# rate and the servers' CPU time per unit (utime + stime from /proc, nginx's master and
# workers together), the medians over ROUNDS, and the ratios certloop / nginx:
#   - full TLS 1.3 handshakes/s: tls-handshakes, one client thread making one request on each
#     new connection, keeping no session;
#   - resumed TLS 1.3 handshakes/s: the same client, each connection resuming the session of
#     the one before (the share resumed is printed);
#   - full TLS 1.3 handshakes/s from h2load, 3,000 clients making one request each (h2load
#     never resumes). h2load spends about 0.7 ms of CPU on each of its own handshakes, most of
#     a core at these rates: this row measures the client as much as the servers;
#   - keep-alive requests/s through the proxy: HTTP/1.1 and HTTP/2 (10 streams per
#     connection), at 20 and at 200 connections, 40,000 requests each.
# Both servers keep their default session-resumption settings and log nothing per request,
# and nginx sends the upstream the same forwarding headers as certloop (Host as the client
# sent it, X-Forwarded-For/-Proto/-Host, X-Real-IP, Forwarded): the demo upstream echoes them,
# so its answers are the same length from both.
# Both speak TLS 1.3 (nginx 1.22 needs `ssl_protocols` for it): tls-handshakes offers nothing
# else, and the run stops if h2load reports another protocol.
# Usage: scripts/bench-proxy.sh [ROUNDS]   (default 3; FIGURES="h1-20 h2-20" runs only those)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
source scripts/bench-setup.sh
# h2load's thousands of clients all come from 127.0.0.1: lift the per-client cap (nginx has
# none by default) so that both servers see the same load.
bench_setup bench-proxy "[limits]
max_connections_per_ip = 0" "worker_processes auto;
events { worker_connections 4096; }" "ssl http2" 'proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Forwarded "for=$remote_addr;host=\"$http_host\";proto=https";'
cargo build -q --release -p certloop-tests --bin tls-handshakes
export BENCH_CERT=$dir/cert.pem
# What the upstream saw through each (it echoes the forwarding headers), ports aside: the
# same, or the servers would not be doing the same work.
seen() { curl -sk --resolve "bench.local:$1:127.0.0.1" "https://bench.local:$1/" | sed "s/$1/PORT/g"; }
if [ "$(seen "$cl")" != "$(seen "$ng")" ]; then
    echo "the upstream saw different requests through certloop and nginx:" >&2
    diff <(seen "$cl") <(seen "$ng") >&2
    exit 1
fi
certloop_pids=${pids[1]}
nginx_pids="${pids[2]} $(pgrep -P "${pids[2]}" | tr '\n' ' ')"
hz=$(getconf CLK_TCK)

# The CPU time of processes $@ so far, in clock ticks.
ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        read -r -a fields <"/proc/$pid/stat"
        total=$((total + fields[13] + fields[14]))
    done
    echo "$total"
}
# h2load prints "TLS Protocol: ...", "finished in Xs, N req/s, ..." and "requests: N total,
# ..., S succeeded, F failed, ..."; take the req/s, after checking the protocol and that every
# request succeeded (h2load counts failed requests in its rate, and the CPU time is divided by them too).
h2rate() {
    local out
    out=$(cat)
    if ! grep -q 'TLS Protocol: TLSv1.3' <<<"$out"; then
        echo "h2load did not negotiate TLS 1.3:" >&2
        grep -E 'TLS Protocol|error|fail' <<<"$out" >&2
        exit 1
    fi
    if ! grep -qE '^requests: ([0-9]+) total, .* \1 succeeded, 0 failed' <<<"$out"; then
        echo "h2load: not every request succeeded:" >&2
        grep -E '^requests:' <<<"$out" >&2
        exit 1
    fi
    grep -o 'finished in [^,]*, [0-9.]* req/s' <<<"$out" | awk '{print $4}'
}

# run FIGURE PORT: prints "<rate> <units>" for one figure against the server on PORT.
run() {
    local figure=$1 port=$2 target="https://bench.local:$2/" line
    case $figure in
    full)
        line=$(target/release/tls-handshakes "$port" 5 full)
        awk '{print $1, $3}' <<<"$line" ;;
    full-h2load) echo "$(h2load --h1 -n 3000 -c 3000 -r 150 --rate-period 50ms -t 1 --connect-to "127.0.0.1:$port" \
        --tls13-ciphers TLS_AES_128_GCM_SHA256 "$target" 2>&1 | h2rate) 3000" ;;
    resumed)
        line=$(target/release/tls-handshakes "$port" 5 resumed)
        awk -v f="$dir/resumed-share" '{print $2 >> f; print $1, $3}' <<<"$line" ;;
    h1-20) echo "$(h2load --h1 -n 40000 -c 20 -t 1 --connect-to "127.0.0.1:$port" "$target" 2>&1 | h2rate) 40000" ;;
    h1-200) echo "$(h2load --h1 -n 40000 -c 200 -t 1 --connect-to "127.0.0.1:$port" "$target" 2>&1 | h2rate) 40000" ;;
    h2-20) echo "$(h2load -n 40000 -c 20 -m 10 -t 1 --connect-to "127.0.0.1:$port" "$target" 2>&1 | h2rate) 40000" ;;
    h2-200) echo "$(h2load -n 40000 -c 200 -m 10 -t 1 --connect-to "127.0.0.1:$port" "$target" 2>&1 | h2rate) 40000" ;;
    esac
}

figures=${FIGURES:-"full resumed full-h2load h1-20 h1-200 h2-20 h2-200"}
results=$dir/results
: >"$results"
for round in $(seq "$rounds"); do
    for server in certloop nginx; do
        port=$cl server_pids=$certloop_pids
        [ "$server" = nginx ] && port=$ng server_pids=$nginx_pids
        for figure in $figures; do
            # shellcheck disable=SC2086
            before=$(ticks $server_pids)
            read -r rate units <<<"$(run "$figure" "$port")"
            [ -n "$rate" ] || { echo "no $figure figure from $server" >&2; exit 1; }
            # shellcheck disable=SC2086
            after=$(ticks $server_pids)
            cpu=$(awk "BEGIN{printf \"%.1f\", ($after - $before) * 1e6 / $hz / $units}")
            echo "round $round $server $figure: $rate/s, $cpu µs server CPU each"
            echo "$server $figure $rate $cpu" >>"$results"
        done
    done
done

echo
echo "medians of $rounds rounds (CPU: server CPU time per handshake or request):"
python3 - "$results" "$dir/resumed-share" <<'PY'
import os, statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
shares = [float(x) for x in open(sys.argv[2])] if os.path.exists(sys.argv[2]) else []
names = {"full": "full TLS 1.3 handshakes", "resumed": "resumed TLS 1.3 handshakes",
         "full-h2load": "full TLS 1.3 handshakes, h2load 3,000 clients",
         "h1-20": "keep-alive HTTP/1.1, 20 conns", "h1-200": "keep-alive HTTP/1.1, 200 conns",
         "h2-20": "keep-alive HTTP/2, 20 conns", "h2-200": "keep-alive HTTP/2, 200 conns"}
med = lambda server, figure, i: statistics.median(float(r[i]) for r in rows if r[0] == server and r[1] == figure)
print("| figure | nginx /s | nginx CPU µs | certloop /s | certloop CPU µs | rate certloop/nginx | CPU certloop/nginx |")
print("|---|---|---|---|---|---|---|")
for figure, name in names.items():
    if not any(r[1] == figure for r in rows):
        continue
    nr, nc, cr, cc = med("nginx", figure, 2), med("nginx", figure, 3), med("certloop", figure, 2), med("certloop", figure, 3)
    print(f"| {name} | {nr:,.0f} | {nc:.1f} | {cr:,.0f} | {cc:.1f} | {cr / nr:.2f}× | {cc / nc:.2f} |")
if shares:
    print(f"share of resumed handshakes that resumed: {min(shares):.2f} at least")
PY
