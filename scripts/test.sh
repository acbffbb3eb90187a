#!/usr/bin/env bash
# Runs every test: unit, scenario snapshots, 10,000 simulated years, fuzz corpora, and the
# integration tests against a local Pebble (started by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export INSTA_UPDATE=no
# The core must not depend on an async runtime or IO crate.
if [ -n "$(cargo tree -p certloop-core -i tokio 2>/dev/null)" ] \
    || cargo tree -p certloop-core -e normal,build --prefix none | grep -E '^(tokio|async-|smol|mio|futures)'; then
    echo "test: certloop-core depends on an async runtime or IO crate" >&2
    exit 1
fi
# Every target that has tests (libraries with their doc tests, test files, and binaries and
# examples unless their manifest says `test = false`; the rest are still built). Clippy checks
# all targets.
cargo test --workspace --no-run
# The simulations' long runs are CPU-bound; the other tests mostly wait on processes (Pebble,
# certloop, Redis). The two simulation binaries run alongside them, from the same build, at
# the lowest CPU priority: they use the idle CPU without slowing the rest. The other run skips
# (filters out) only their long tests; a failure of either run fails this script.
mapfile -t simulations < <(cargo test -q --workspace --no-run --message-format=json |
    python3 -c 'import json, sys; [print(m["executable"]) for m in map(json.loads, sys.stdin)
        if m.get("executable") and m["target"]["name"] in ("driver_simulation", "simulation")]')
[ "${#simulations[@]}" -eq 2 ] || { echo "test: expected the two simulation binaries" >&2; exit 1; }
simulation_log=$(mktemp)
(cd tests && for binary in "${simulations[@]}"; do nice -n 19 "$binary" || exit 1; done) \
    >"$simulation_log" 2>&1 &
simulation_pid=$!
# Nothing is left running if the other tests fail first.
trap 'pkill -P "$simulation_pid" 2>/dev/null || true; kill "$simulation_pid" 2>/dev/null || true' EXIT
cargo test --workspace -- \
    --skip two_thousand_seeds_of_the_driver_hold_every_invariant \
    --skip ten_thousand_simulated_years_hold_every_invariant \
    --skip six_day_certificates_survive_two_day_outages_without_lapsing
simulations_passed=0
wait "$simulation_pid" || simulations_passed=$?
cat "$simulation_log"
rm -f "$simulation_log"
if [ "$simulations_passed" -ne 0 ]; then
    echo "test: the simulations failed" >&2
    exit 1
fi
