#!/usr/bin/env bash
# Benchmark (not a test): fleet mode against a real redis-server and Pebble. NODES instances
# (default 5) on 127.0.0.2 and up share CERTS certificates (default 1000): orders per renewal
# against one instance alone (no Redis) measured in the same run, Redis commands per renewal, and
# the time from the first instance serving a renewal to the last. See
# tests/src/bin/redis_fleet_bench.rs and docs/fleet.md.
# Usage: scripts/bench-fleet.sh [CERTS] [NODES]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -q --release -p certloop-tests --bin redis-fleet-bench
target/release/redis-fleet-bench "${1:-1000}" "${2:-5}"
