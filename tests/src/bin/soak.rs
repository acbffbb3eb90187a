//! `certloop-soak`: the proxy under constant traffic while its certificates renew every few
//! seconds. Not a test: run it with `scripts/soak.sh [MINUTES]` (default 30), which builds the
//! release binary first.
//!
//! A local Pebble issues 60-second certificates; `certloop` renews each one when a third of its
//! lifetime is left, about every 40 s. A client makes a fresh, verified TLS connection and one
//! request every 50 ms the whole time. Reported: failed requests (the goal is 0), orders per
//! renewal (the goal is 1.0), and the proxy's resident memory and open files at the start and
//! the end (the goal is flat).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certloop_tests::pebble::{Pebble, PebbleOptions, wait_until};

const NAME: &str = "soak.certloop.test";

fn main() {
    let minutes: u64 = std::env::args()
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(30);
    let binary = PathBuf::from(
        std::env::var("CERTLOOP_BIN").unwrap_or_else(|_| "target/release/certloop".into()),
    );
    let pebble = Pebble::start_with(&PebbleOptions {
        validity_secs: Some(60),
        ..Default::default()
    });
    let upstream = certloop_tests::serve_in_background(certloop_tests::upstream::serve);
    let config = pebble.scratch("soak.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[[listeners]]\nname = \"soak\"\nbind = \"127.0.0.1:{}\"\n\
             upstream = \"http://127.0.0.1:{upstream}\"\ntls_mode = \"acme\"\n\
             acme_domains = [\"{NAME}\"]\nacme_directory = \"{}\"\nacme_directory_ca = \"{}\"\n",
            pebble.scratch("state").display(),
            pebble.tls_port,
            pebble.directory_url,
            pebble.directory_ca.display()
        ),
    )
    .expect("config");
    let log = pebble.scratch("certloop.log");
    let mut certloop = Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .env("CERTLOOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; build it first", binary.display()));
    let pid = certloop.id();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("certloop to be ready", Duration::from_secs(60), || {
        read_log().contains(" ready")
    });
    let root = pebble.issuing_root_pem();
    // Every request is a full handshake that verifies the served certificate: a resumed
    // session would skip that, and hide an expired certificate.
    let mut client =
        (*certloop_tests::client_config(&root, b"http/1.1").expect("client TLS")).clone();
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    let orders_at_start = pebble.log().matches("POST /order-plz").count();
    let (rss_start, fds_start) = (rss_kib(pid), open_files(pid));
    println!(
        "soak: {minutes} min, 60 s certificates, a verified request every 50 ms; start: RSS {rss_start} KiB, {fds_start} open files"
    );
    let (mut ok, mut failed, mut first_failures) = (0u64, 0u64, Vec::new());
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut next_report = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        match request(pebble.tls_port, &client) {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if first_failures.len() < 5 {
                    first_failures.push(e);
                }
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            println!(
                "  {ok} ok, {failed} failed, RSS {} KiB, {} open files",
                rss_kib(pid),
                open_files(pid)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (rss_end, fds_end) = (rss_kib(pid), open_files(pid));
    let orders = pebble.log().matches("POST /order-plz").count() - orders_at_start;
    let renewals = read_log()
        .matches("renewed certificate installed")
        .count()
        .max(1);
    let _ = certloop.kill();
    let _ = certloop.wait();
    // Pebble's scratch directory goes with it: keep the proxy's log for a look afterwards.
    let kept = std::env::temp_dir().join("certloop-soak.log");
    let _ = std::fs::copy(&log, &kept);
    println!("the proxy's log: {}", kept.display());
    println!("requests: {ok} ok, {failed} failed {first_failures:?}");
    println!(
        "orders: {orders} for {renewals} renewals ({:.2} per renewal)",
        orders as f64 / renewals as f64
    );
    println!("RSS: {rss_start} KiB at start, {rss_end} KiB at the end");
    println!("open files: {fds_start} at start, {fds_end} at the end");
}

/// One request on a fresh connection, verified against Pebble's root.
fn request(port: u16, client: &Arc<rustls::ClientConfig>) -> Result<(), String> {
    let server = rustls::pki_types::ServerName::try_from(NAME).expect("name");
    let mut conn =
        rustls::ClientConnection::new(client.clone(), server).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(
        format!("GET /soak HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    if text.starts_with("HTTP/1.1 200") && text.contains("upstream saw GET /soak") {
        Ok(())
    } else {
        Err(text.lines().next().unwrap_or("no answer").to_owned())
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}
