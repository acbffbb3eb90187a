//! `tls-handshakes PORT SECONDS full|resumed`: TLS 1.3 handshakes to `bench.local` on
//! 127.0.0.1:PORT for SECONDS from one thread, each on a new connection carrying one HTTP/1.1
//! request, either full (no session kept) or resumed (each connection resumes the session of
//! the one before). The client speaks TLS 1.3 only, so a server that would choose TLS 1.2
//! fails the run instead of being measured on another protocol. Prints
//! `<handshakes/s> <share resumed> <handshakes>`. Not a test:
//! `scripts/bench-proxy.sh` runs it against certloop and nginx, with the server's
//! certificate in `BENCH_CERT`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;

/// One connection: handshake, one request, its whole response. Whether it resumed.
fn one_request(config: &Arc<rustls::ClientConfig>, port: u16) -> Result<bool, String> {
    let name = rustls::pki_types::ServerName::try_from("bench.local").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // The server closes after the response; a missing close_notify is not an error here.
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "unexpected response: {}",
            String::from_utf8_lossy(&response[..response.len().min(80)])
        ));
    }
    Ok(tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).expect("PORT");
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).expect("SECONDS");
    let resumed = match args.next().as_deref() {
        Some("full") => false,
        Some("resumed") => true,
        _ => panic!("full or resumed"),
    };
    let root = std::env::var("BENCH_CERT").expect("BENCH_CERT: the server's certificate file");
    let root = std::fs::read_to_string(root).expect("certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(root.as_bytes()) {
        roots.add(cert.expect("certificate")).expect("a root");
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(certloop_acme::adapter::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if resumed {
        Resumption::in_memory_sessions(16)
    } else {
        Resumption::disabled()
    };
    let config = Arc::new(config);
    // The first connection leaves a ticket for the next.
    one_request(&config, port).expect("first connection");
    let (started, mut done, mut resumptions) = (Instant::now(), 0u64, 0u64);
    while started.elapsed() < Duration::from_secs(seconds) {
        let was_resumed = one_request(&config, port).unwrap_or_else(|e| panic!("connection: {e}"));
        done += 1;
        resumptions += u64::from(was_resumed);
    }
    println!(
        "{:.0} {:.2} {done}",
        done as f64 / started.elapsed().as_secs_f64(),
        resumptions as f64 / done as f64
    );
}
