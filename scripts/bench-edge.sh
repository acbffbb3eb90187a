#!/usr/bin/env bash
# Benchmark (not a test): a legitimate client while hostile connections are held against the
# listener, for certloop (default [limits]) and nginx (its built-in defaults: one worker,
# worker_connections 512), on loopback, same ECDSA P-256 certificate and upstream.
#
# For each server: h2load (20 keep-alive HTTP/1.1 clients from 127.0.0.1, 10 s) without an
# attack, then with scripts/edge_attack.py holding ATTACK connections from 64 other loopback
# addresses (idle TCP, half handshakes, half heads, 1 byte/s bodies, re-opened when closed),
# run at the lowest CPU priority.
# Reports the legitimate request rate, its p99 latency, the ratio against the same server's
# unattacked run, and how many of 20 fresh connections (curl, 5 s each) got an answer.
# nginx is also measured at smaller attacks to show where it stops serving.
#
# Usage: scripts/bench-edge.sh [ATTACK] [NGINX_LEVELS]   (defaults: 10000 and "256 512 1024")
set -euo pipefail
cd "$(dirname "$0")/.."
attack=${1:-10000}
nginx_levels=${2:-"256 512 1024"}
# Both sides of 10,000 connections in one process each: as many descriptors as allowed.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((attack + 1000)) ]; then
    echo "bench-edge: ulimit -n is $(ulimit -n); $attack connections need about $((attack + 1000))" >&2
    exit 1
fi
# nginx with nothing tuned: the events block is empty, so worker_connections is 512.
source scripts/bench-setup.sh
bench_setup bench-edge "" "events { }" ssl ""

# One measurement: rate, p99 (ms) and fresh successes of the legitimate client on PORT.
legit() {
    local port=$1 log=$dir/latency.$RANDOM
    local out
    out=$(timeout 60 h2load --h1 -c 20 -D 10 -N 5s -t 1 --log-file "$log" \
        --connect-to "127.0.0.1:$port" "https://bench.local:$port/" 2>&1 || true)
    local rate
    rate=$(grep -o 'finished in [^,]*, [0-9.]* req/s' <<<"$out" | awk '{print $4}')
    local p99
    p99=$(python3 - "$log" <<'PY'
import sys
try:
    rows = [line.split("\t") for line in open(sys.argv[1])]
except OSError:
    rows = []
us = sorted(int(r[2]) for r in rows if len(r) > 2 and r[1] == "200")
print(f"{us[min(len(us) - 1, int(len(us) * 0.99))] / 1000:.1f}" if us else "none")
PY
)
    local fresh=0
    for _ in $(seq 20); do
        curl -sk --max-time 5 -o /dev/null --resolve "bench.local:$port:127.0.0.1" \
            "https://bench.local:$port/" && fresh=$((fresh + 1))
    done
    echo "${rate:-0} $p99 $fresh"
}

# The same with ATTACK hostile connections held during it.
under_attack() {
    local port=$1 size=$2
    # At the lowest priority: the attacker shares the two cores with the server and h2load, and
    # what is measured is what holding the connections costs the server, not the attacker's CPU.
    nice -n 19 python3 scripts/edge_attack.py 127.0.0.1 "$port" "$size" 45 >"$dir/attack.out" 2>&1 &
    local attacker=$!
    # Ramp-up: 200 connections per 50 ms, then let the TLS kinds finish their handshakes.
    sleep $(( size / 4000 + 5 ))
    legit "$port"
    wait "$attacker" || true
    sed 's/^/    /' "$dir/attack.out" >&2
}

report() { # label base attacked
    read -r b_rate b_p99 b_fresh <<<"$2"
    read -r a_rate a_p99 a_fresh <<<"$3"
    printf '%-34s %9.0f req/s (%.2fx unattacked), p99 %s ms (unattacked %s ms), fresh connections served %s/20\n' \
        "$1" "$a_rate" "$(awk "BEGIN{print ($b_rate > 0) ? $a_rate/$b_rate : 0}")" "$a_p99" "$b_p99" "$a_fresh"
}

echo "certloop, unattacked..." >&2
cl_base=$(legit "$cl")
echo "certloop, $attack hostile connections..." >&2
cl_attacked=$(under_attack "$cl" "$attack")
echo "nginx, unattacked..." >&2
ng_base=$(legit "$ng")
declare -A ng_attacked
for level in $nginx_levels $attack; do
    echo "nginx, $level hostile connections..." >&2
    ng_attacked[$level]=$(under_attack "$ng" "$level")
done
echo
read -r r p f <<<"$cl_base"; echo "certloop unattacked:                $r req/s, p99 $p ms, fresh $f/20"
read -r r p f <<<"$ng_base"; echo "nginx unattacked:                   $r req/s, p99 $p ms, fresh $f/20"
report "certloop, $attack hostile:" "$cl_base" "$cl_attacked"
for level in $nginx_levels $attack; do
    report "nginx (defaults), $level hostile:" "$ng_base" "${ng_attacked[$level]}"
done
