#!/usr/bin/env bash
# Benchmark (not a test): certloop against nginx on loopback, same ECDSA P-256 certificate, same
# upstream, alternating the servers in one run. Prints each measurement and the ratios
# certloop / nginx for:
#   - new full TLS 1.3 handshakes per second (every client makes one request on a fresh
#     connection, no session resumption), and
#   - keep-alive HTTP/1.1 requests per second through the proxy.
# Both servers keep their default session-resumption settings (tickets on); h2load clients
# never resume, so every handshake is a full one.
# Usage: scripts/bench-proxy.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
if ! command -v nginx >/dev/null || ! command -v h2load >/dev/null || ! command -v python3 >/dev/null; then
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    "${sudo_cmd[@]}" apt-get install -y -q nginx-light nghttp2-client python3
fi
cargo build -q --release -p certloop -p certloop-tests --bin certloop --bin demo-upstream
dir=$PWD/target/bench-proxy
rm -rf "$dir" && mkdir -p "$dir/nginx"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port); cl=$(free_port); ng=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.local \
    -addext subjectAltName=DNS:bench.local -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null

target/release/demo-upstream "127.0.0.1:$up" 2>/dev/null & pids+=($!)

cat > "$dir/certloop.toml" <<TOML
[[listeners]]
name = "bench"
bind = "127.0.0.1:$cl"
upstream = "http://127.0.0.1:$up"
tls_mode = "manual"
tls_cert = "$dir/cert.pem"
tls_key = "$dir/key.pem"
TOML
CERTLOOP_LOG=warn target/release/certloop --config "$dir/certloop.toml" 2>"$dir/certloop.log" & pids+=($!)

cat > "$dir/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream app { server 127.0.0.1:$up; keepalive 64; }
    server {
        listen 127.0.0.1:$ng ssl http2;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }
    }
}
NGINX
nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)

for port in $up $cl $ng; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
done
curl -sk --resolve "bench.local:$cl:127.0.0.1" "https://bench.local:$cl/" | head -1 >/dev/null
curl -sk --resolve "bench.local:$ng:127.0.0.1" "https://bench.local:$ng/" | head -1 >/dev/null

# h2load prints "finished in Xs, N req/s, ..."; take the req/s.
rate() { grep -o 'finished in [^,]*, [0-9.]* req/s' | awk '{print $4}'; }
handshakes() { # port: 3000 clients, one request each on a new TLS 1.3 connection
    h2load --h1 -n 3000 -c 3000 -r 150 --rate-period 50ms -t 1 --connect-to "127.0.0.1:$1" \
        --tls13-ciphers TLS_AES_128_GCM_SHA256 "https://bench.local:$1/" 2>&1 | rate
}
keepalive() { # port: 20 keep-alive HTTP/1.1 connections, 40,000 requests
    h2load --h1 -n 40000 -c 20 -t 1 --connect-to "127.0.0.1:$1" "https://bench.local:$1/" 2>&1 | rate
}

declare -A best
for round in $(seq "$rounds"); do
    for server in certloop nginx; do
        port=$cl; [ "$server" = nginx ] && port=$ng
        hs=$(handshakes "$port"); ka=$(keepalive "$port")
        echo "round $round $server: handshakes/s=$hs keepalive req/s=$ka"
        for metric in hs ka; do
            value=${!metric}
            key="$server-$metric"
            if [ -z "${best[$key]:-}" ] || awk "BEGIN{exit !($value > ${best[$key]})}"; then best[$key]=$value; fi
        done
    done
done
echo
echo "best of $rounds rounds:"
printf '  new TLS 1.3 handshakes/s: certloop %s, nginx %s, ratio certloop/nginx %.2f\n' \
    "${best[certloop-hs]}" "${best[nginx-hs]}" "$(awk "BEGIN{print ${best[certloop-hs]}/${best[nginx-hs]}}")"
printf '  keep-alive requests/s:     certloop %s, nginx %s, ratio certloop/nginx %.2f\n' \
    "${best[certloop-ka]}" "${best[nginx-ka]}" "$(awk "BEGIN{print ${best[certloop-ka]}/${best[nginx-ka]}}")"
