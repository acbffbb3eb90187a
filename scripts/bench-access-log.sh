#!/usr/bin/env bash
# Benchmark (not a test): what the access log costs. Two certloop processes with the same
# manual certificate and upstream, one without [access_log] and one writing JSON lines to a
# file, measured alternately in one run: keep-alive HTTP/1.1 requests per second (20
# connections, 40,000 requests), the proxy's CPU time per request in that run (user + system,
# from /proc, the writer thread included), and new TLS 1.3 handshakes per second. Prints each
# round, the medians, and the ratios with/without. Throughput on this 2-core machine varies by
# 20 % between runs of the same binary, so the CPU time per request is the steadier figure.
# Usage: scripts/bench-access-log.sh [ROUNDS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
source scripts/bench-setup.sh
bench_setup bench-access-log "[limits]
max_connections_per_ip = 0" "events { worker_connections 4096; }" "ssl" ""
logged=$(bench_free_port)
sed -e "s/127.0.0.1:$cl/127.0.0.1:$logged/" \
    -e "1i [access_log]\npath = \"$dir/access.log\"\nformat = \"json\"" \
    "$dir/certloop.toml" > "$dir/certloop-logged.toml"
plain_pid=${pids[1]}
CERTLOOP_LOG=warn target/release/certloop --config "$dir/certloop-logged.toml" 2>"$dir/certloop-logged.log" & pids+=($!)
logged_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$logged") 2>/dev/null && break; sleep 0.05; done

rate() { grep -o 'finished in [^,]*, [0-9.]* req/s' | awk '{print $4}'; }
keepalive() {
    h2load --h1 -n 40000 -c 20 -t 1 --connect-to "127.0.0.1:$1" "https://bench.local:$1/" 2>&1 | rate
}
handshakes() {
    h2load --h1 -n 3000 -c 3000 -r 150 --rate-period 50ms -t 1 --connect-to "127.0.0.1:$1" \
        --tls13-ciphers TLS_AES_128_GCM_SHA256 "https://bench.local:$1/" 2>&1 | rate
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
tick_us=$((1000000 / $(getconf CLK_TCK)))
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
declare -A runs
for round in $(seq "$rounds"); do
    for variant in without with; do
        port=$cl pid=$plain_pid; [ "$variant" = with ] && port=$logged pid=$logged_pid
        before=$(cpu_ticks "$pid"); ka=$(keepalive "$port"); after=$(cpu_ticks "$pid")
        cpu=$(awk "BEGIN{printf \"%.1f\", ($after - $before) * $tick_us / 40000}")
        hs=$(handshakes "$port")
        echo "round $round $variant access log: keepalive req/s=$ka cpu/request=${cpu}us handshakes/s=$hs"
        runs[$variant-ka]+="$ka "; runs[$variant-cpu]+="$cpu "; runs[$variant-hs]+="$hs "
    done
done
declare -A mid
for key in "${!runs[@]}"; do mid[$key]=$(tr ' ' '\n' <<<"${runs[$key]}" | grep . | median); done
lines=$(wc -l < "$dir/access.log")
echo
echo "medians of $rounds rounds ($lines lines logged):"
printf '  keep-alive requests/s:    without %s, with %s, ratio with/without %.3f\n' \
    "${mid[without-ka]}" "${mid[with-ka]}" "$(awk "BEGIN{print ${mid[with-ka]}/${mid[without-ka]}}")"
printf '  CPU per request (us):     without %s, with %s, ratio with/without %.3f\n' \
    "${mid[without-cpu]}" "${mid[with-cpu]}" "$(awk "BEGIN{print ${mid[with-cpu]}/${mid[without-cpu]}}")"
printf '  new TLS 1.3 handshakes/s: without %s, with %s, ratio with/without %.3f\n' \
    "${mid[without-hs]}" "${mid[with-hs]}" "$(awk "BEGIN{print ${mid[with-hs]}/${mid[without-hs]}}")"
