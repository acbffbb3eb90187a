#!/usr/bin/env bash
# Benchmark (not a test): memory per idle keep-alive TLS connection, certloop against nginx in
# the same run (same ECDSA P-256 certificate, same upstream). COUNT connections each make one
# HTTP/1.1 request and stay open; the servers' proportional set size (nginx: master and
# workers) is read before and with them. Prints KiB per connection and the ratio.
# Usage: scripts/bench-connections.sh [COUNT]   (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-10000}
ulimit -n "$(ulimit -Hn)" # COUNT connections need COUNT descriptors in the client and the server
source scripts/bench-setup.sh
bench_setup bench-connections "[limits]
max_connections = 20000
max_connections_per_ip = 0
idle_timeout = \"10m\"" "worker_processes auto;
worker_rlimit_nofile 20000;
events { worker_connections 15000; }" "ssl" "" "keepalive_timeout 600s;"
cargo build -q --release -p certloop-tests --bin idle-connections
certloop_pid=${pids[1]}
nginx_master=${pids[2]}
sleep 1
nginx_pids="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"
export BENCH_CERT=$dir/cert.pem
echo "certloop:"
cl_line=$(target/release/idle-connections "$cl" "$count" "$certloop_pid"); echo "  $cl_line"
echo "nginx ($(wc -w <<<"$nginx_pids") processes):"
ng_line=$(target/release/idle-connections "$ng" "$count" $nginx_pids); echo "  $ng_line"
per() { sed -E 's/.* ([0-9.]+) KiB per connection/\1/'; }
cl_per=$(per <<<"$cl_line"); ng_per=$(per <<<"$ng_line")
printf 'memory per idle keep-alive TLS connection: certloop %s KiB, nginx %s KiB, ratio certloop/nginx %.2f\n' \
    "$cl_per" "$ng_per" "$(awk "BEGIN{print $cl_per/$ng_per}")"
