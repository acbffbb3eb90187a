# Shared set-up of the proxy benchmarks (sourced, not run): tools, a release build, an ECDSA
# P-256 certificate, the demo upstream, certloop with a manual listener and nginx in front of
# the same upstream, all on free loopback ports, stopped when the script exits.
#
#   bench_setup NAME CERTLOOP_EXTRA NGINX_EVENTS NGINX_LISTEN NGINX_LOCATION_EXTRA [NGINX_HTTP_EXTRA]
# sets $dir (target/NAME), $up, $cl (certloop's port) and $ng (nginx's port). CERTLOOP_EXTRA
# goes at the top of certloop's configuration (e.g. a [limits] table). CERTLOOP_BIN, when set,
# is the certloop binary to measure instead of this tree's release build (to compare two
# builds, one after the other, against the same nginx).

bench_setup() {
    local name=$1 certloop_extra=$2 nginx_events=$3 nginx_listen=$4 nginx_location_extra=$5
    local nginx_http_extra=${6:-}
    if ! command -v nginx >/dev/null || ! command -v h2load >/dev/null || ! command -v python3 >/dev/null; then
        local sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get update -q
        "${sudo_cmd[@]}" apt-get install -y -q nginx-light nghttp2-client python3 curl
    fi
    cargo build -q --release -p certloop -p certloop-tests --bin certloop --bin demo-upstream
    dir=$PWD/target/$name
    rm -rf "$dir" && mkdir -p "$dir/nginx"
    pids=()
    trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
    up=$(bench_free_port); cl=$(bench_free_port); ng=$(bench_free_port)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.local \
        -addext subjectAltName=DNS:bench.local -addext basicConstraints=critical,CA:FALSE -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
    target/release/demo-upstream "127.0.0.1:$up" 2>/dev/null & pids+=($!)
    cat > "$dir/certloop.toml" <<TOML
$certloop_extra
[[listeners]]
name = "bench"
bind = "127.0.0.1:$cl"
upstream = "http://127.0.0.1:$up"
tls_mode = "manual"
tls_cert = "$dir/cert.pem"
tls_key = "$dir/key.pem"
TOML
    CERTLOOP_LOG=warn "${CERTLOOP_BIN:-target/release/certloop}" --config "$dir/certloop.toml" 2>"$dir/certloop.log" & pids+=($!)
    cat > "$dir/nginx/nginx.conf" <<NGINX
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log crit;
$nginx_events
http {
    access_log off;
    $nginx_http_extra
    # As certloop: no cap on requests per connection, 256 idle upstream connections kept.
    # (nginx's default of 1,000 requests per client connection closes h2load's HTTP/2
    # connections half way through a 40,000-request run, and h2load does not reconnect.)
    keepalive_requests 1000000;
    upstream app { server 127.0.0.1:$up; keepalive 128; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$ng $nginx_listen;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        # nginx before 1.23.4 (Debian 12 has 1.22) leaves TLS 1.3 off unless asked: without
        # this line every handshake measured against it would be TLS 1.2.
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            $nginx_location_extra
        }
    }
}
NGINX
    nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
    local port
    for port in $up $cl $ng; do
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    done
}

bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
