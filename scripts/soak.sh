#!/usr/bin/env bash
# Soak (not a test): the proxy under constant traffic while 60-second certificates renew, for
# MINUTES (default 30). Reports failed requests, orders per renewal, and the proxy's resident
# memory and open files at start and end. See tests/src/bin/soak.rs.
# Usage: scripts/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -q --release -p certloop -p certloop-tests --bin certloop --bin certloop-soak
CERTLOOP_BIN=target/release/certloop target/release/certloop-soak "${1:-30}"
