#!/usr/bin/env bash
# The main job: certloop gets a real certificate from a local Pebble and serves through it.
#   scripts/demo.sh        start everything, fetch a page through the proxy, leave it running
#   scripts/demo.sh stop   stop what the demo started
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo=$root/target/demo
pids=$demo/pids

stop() {
    if [ -f "$pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$pids"
        rm -f "$pids"
        echo "demo: stopped"
    fi
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi
stop

scripts/setup.sh
echo "demo: building certloop and the demo upstream"
cargo build -q -p certloop -p certloop-tests --bin certloop --bin demo-upstream

for port in 14000 15000 5001 5002 8053 8055 8080; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo: port $port is in use; stop whatever listens there (or run: scripts/demo.sh stop)" >&2
        exit 1
    fi
done

rm -rf "$demo" && mkdir -p "$demo/pebble"
cd "$demo/pebble"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout ca.key -out directory-ca.pem -subj /CN=certloop-demo-pebble-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout listener.key \
    -out listener.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > listener.ext
openssl x509 -req -in listener.csr -CA directory-ca.pem -CAkey ca.key -CAcreateserial \
    -out listener.pem -days 30 -extfile listener.ext 2>/dev/null
cat > pebble.json <<JSON
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "$demo/pebble/listener.pem", "privateKey": "$demo/pebble/listener.key",
  "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
cd "$root"

pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 127.0.0.1:8053 \
    -http01 "" -https01 "" -tlsalpn01 "" -management 127.0.0.1:8055 > "$demo/challtestsrv.log" 2>&1 &
echo $! >> "$pids"
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config "$demo/pebble/pebble.json" \
    -dnsserver 127.0.0.1:8053 > "$demo/pebble.log" 2>&1 &
echo $! >> "$pids"
target/debug/demo-upstream 127.0.0.1:8080 > "$demo/upstream.log" 2>&1 &
echo $! >> "$pids"

wait_for() { # what, seconds, command...
    local what=$1 seconds=$2; shift 2
    for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "demo: timed out waiting for $what" >&2; return 1
}
wait_for "Pebble" 15 curl -sk https://127.0.0.1:14000/dir
wait_for "the upstream" 15 curl -s http://127.0.0.1:8080/

echo "demo: starting certloop --config examples/local-pebble.toml"
target/debug/certloop --config examples/local-pebble.toml > "$demo/certloop.log" 2>&1 &
echo $! >> "$pids"
if ! wait_for "certloop to get its certificate" 60 grep -q '"*ready' "$demo/certloop.log"; then
    cat "$demo/certloop.log" >&2; exit 1
fi
curl -sS --cacert "$demo/pebble/directory-ca.pem" https://127.0.0.1:15000/roots/0 > "$demo/pebble-root.pem"

echo
echo "demo: certloop's log:"
sed 's/^/    /' "$demo/certloop.log"
echo
echo "demo: GET https://demo.certloop.test:5001/hello, verifying the chain against Pebble's root:"
curl -sS --cacert "$demo/pebble-root.pem" --resolve demo.certloop.test:5001:127.0.0.1 \
    https://demo.certloop.test:5001/hello | sed 's/^/    /'
echo "demo: the served certificate:"
openssl s_client -connect 127.0.0.1:5001 -servername demo.certloop.test </dev/null 2>/dev/null \
    | openssl x509 -noout -subject -issuer -ext subjectAltName -dates | sed 's/^/    /'
echo "demo: plain HTTP on port 5002 redirects:"
curl -sS -o /dev/null -w '    %{http_code} -> %{redirect_url}\n' -H 'Host: demo.certloop.test' http://127.0.0.1:5002/a?b=c
echo
echo "demo: running: Pebble (127.0.0.1:14000), upstream (127.0.0.1:8080), certloop (127.0.0.1:5001)."
echo "demo: logs in target/demo/. Stop everything with: scripts/demo.sh stop"
