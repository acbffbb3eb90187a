//! `idle-connections PORT COUNT PID...`: opens COUNT TLS connections to `bench.local` on
//! 127.0.0.1:PORT, makes one HTTP/1.1 request on each and keeps them open and idle, then prints
//! how much the server processes PID... grew (proportional set size, so the pages an nginx
//! master shares with its workers count once). Not a test: `scripts/bench-connections.sh` runs
//! it against certloop and nginx.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// The proportional set size of `pids` together, in KiB.
fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|pid| {
            let rollup =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            rollup
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Reads one response (head, then a `Content-Length` body).
fn read_response(tls: &mut impl Read) -> Result<(), String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        received.extend_from_slice(&buf[..n]);
        let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if received.len() >= end + 4 + length {
            return Ok(());
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).expect("PORT");
    let count: usize = args.next().and_then(|a| a.parse().ok()).expect("COUNT");
    let pids: Vec<u32> = args.filter_map(|a| a.parse().ok()).collect();
    let root = std::env::var("BENCH_CERT").expect("BENCH_CERT: the server's certificate file");
    let root = std::fs::read_to_string(root).expect("certificate");
    let config: Arc<rustls::ClientConfig> =
        certloop_tests::client_config(&root, b"http/1.1").expect("client TLS");
    let before = pss_kib(&pids);
    let mut open = Vec::with_capacity(count);
    for i in 0..count {
        let name = rustls::pki_types::ServerName::try_from("bench.local").expect("name");
        let mut conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .unwrap_or_else(|e| panic!("handshake {i}: {e}"));
        }
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        read_response(&mut tls).unwrap_or_else(|e| panic!("response {i}: {e}"));
        open.push(tls);
    }
    std::thread::sleep(Duration::from_secs(2)); // let the server settle (not a test)
    let after = pss_kib(&pids);
    let per = after.saturating_sub(before) as f64 / count as f64;
    println!(
        "{count} idle keep-alive TLS connections: {before} KiB before, {after} KiB with them, \
         {per:.1} KiB per connection"
    );
    drop(open);
}
