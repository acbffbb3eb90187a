#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine (idempotent).
set -euo pipefail
need=()
for pair in pebble:pebble pebble-challtestsrv:pebble curl:curl openssl:openssl faketime:faketime cc:gcc \
    prlimit:util-linux mount:mount getconf:libc-bin chromium:chromium kdig:knot-dnsutils redis-server:redis-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
# The DNS-01 tests' authoritative server (in /usr/sbin, which may not be on PATH).
[ -x /usr/sbin/knotd ] || command -v knotd >/dev/null 2>&1 || need+=(knot)
# The tests signal the proxy with the kill program (not the shell builtin).
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need+=(procps)
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing; install the Rust toolchain (rustup) first" >&2
    exit 1
fi
if ((${#need[@]})); then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    echo "setup: installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" ca-certificates
fi
