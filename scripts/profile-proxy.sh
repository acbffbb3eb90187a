#!/usr/bin/env bash
# Profile (not a test): where certloop's CPU goes while it proxies keep-alive requests, with
# Debian's linux-perf. Same set-up as scripts/bench-proxy.sh (certloop and nginx in front of
# the demo upstream); h2load drives certloop alone while `perf record` samples it, then the
# hottest functions (self time) and the share of each library are printed. The full report
# stays in target/profile-proxy/perf.data (`perf report -i ...`).
# PERF_CALL_GRAPH="--call-graph dwarf" gives callers where frame pointers are missing.
# Usage: scripts/profile-proxy.sh [h1|h2|resumed] [CONNECTIONS]   (default h1 20; `resumed`:
# tls-handshakes' resumed TLS 1.3 connections, one request each, instead of h2load)
set -euo pipefail
cd "$(dirname "$0")/.."
protocol=${1:-h1} connections=${2:-20}
command -v perf >/dev/null || { sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo); "${sudo_cmd[@]}" apt-get install -y -q linux-perf; }
# The release build with line tables (Cargo.toml's `profiling` profile), so that inlined
# frames have names.
cargo build -q --profile profiling -p certloop
export CERTLOOP_BIN=$PWD/target/profiling/certloop
source scripts/bench-setup.sh
bench_setup profile-proxy "[limits]
max_connections_per_ip = 0" "events { worker_connections 4096; }" "ssl http2" ""
certloop_pid=${pids[1]}
flags=(--h1); [ "$protocol" = h2 ] && flags=(-m 10)
target="https://bench.local:$cl/"
if [ "$protocol" = resumed ]; then
    cargo build -q --release -p certloop-tests --bin tls-handshakes
    export BENCH_CERT=$dir/cert.pem
    target/release/tls-handshakes "$cl" 1 resumed >/dev/null # warm-up
    perf record -F 2999 ${PERF_CALL_GRAPH:--g} -p "$certloop_pid" -o "$dir/perf.data" -- sleep 6 2>/dev/null &
    perf_pid=$!
    echo "rate, share resumed: $(target/release/tls-handshakes "$cl" 5 resumed)"
else
    h2load "${flags[@]}" -n 5000 -c "$connections" -t 1 --connect-to "127.0.0.1:$cl" "$target" >/dev/null 2>&1 # warm-up
    perf record -F 2999 ${PERF_CALL_GRAPH:--g} -p "$certloop_pid" -o "$dir/perf.data" -- sleep 6 2>/dev/null &
    perf_pid=$!
    h2load "${flags[@]}" -n 1000000 -D 5 -c "$connections" -t 1 --connect-to "127.0.0.1:$cl" "$target" 2>&1 | grep 'finished in'
fi
wait "$perf_pid" || true
echo "hottest functions (self time):"
perf report -i "$dir/perf.data" --no-children --sort symbol --percent-limit 0.8 --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
echo "by library:"
perf report -i "$dir/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
