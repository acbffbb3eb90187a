#!/usr/bin/env bash
# The main job (for now): the lifecycle simulator. One seed, every step printed, then a
# thousand simulated years checked against every invariant.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -q --release -p certloop-tests --bin certloop-sim
./target/release/certloop-sim --seed 7 --days 60 --verbose
./target/release/certloop-sim --first 0 --count 1000
