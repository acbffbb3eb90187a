#!/usr/bin/env bash
# Benchmark (not a test): one listener with COUNT cached certificates (one name each) against
# the same listener with one, side by side: time to ready, resident memory per certificate,
# and full TLS 1.3 handshakes per second for random names (medians of ROUNDS alternating
# rounds of 5 s). Goals: ready in under 1 s with 10,000, handshakes at least 0.95x.
# Usage: scripts/bench-many-certs.sh [COUNT] [ROUNDS]   (defaults 10000 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p certloop -p certloop-tests --bin certloop --bin many-certs-bench
target/release/many-certs-bench "${1:-10000}" "${2:-3}"
