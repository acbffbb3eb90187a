#!/usr/bin/env bash
# Benchmark (not a test): process start to the first verified response with an empty cache,
# against a local Pebble (TLS-ALPN-01, one name), certloop and Caddy (Debian's caddy) in
# alternating rounds; prints each round, the medians and the ratio. See
# tests/src/bin/first_cert_bench.rs.
# Usage: scripts/bench-first-cert.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v caddy >/dev/null; then
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends caddy
    # The package starts a system service on port 80; the benchmark runs its own Caddy.
    "${sudo_cmd[@]}" systemctl stop caddy 2>/dev/null || true
fi
cargo build -q --release -p certloop -p certloop-tests --bin certloop --bin first-cert-bench
CERTLOOP_BIN=target/release/certloop target/release/first-cert-bench "${1:-5}"
