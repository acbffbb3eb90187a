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
# Every target that has tests (libraries, test files, and binaries and examples unless their
# manifest says `test = false`; the rest are still built). Clippy checks all targets.
cargo test --workspace
cargo test --workspace --doc
