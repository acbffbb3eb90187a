//! `many-certs-bench`: one certloop listener holding many cached ACME certificates (one name
//! each) against the same listener holding one, run side by side: the time from process
//! start to ready, resident memory, and the rate of full TLS 1.3 handshakes for random names
//! (rounds alternating between the two). Not a test: run it with
//! `scripts/bench-many-certs.sh [COUNT] [ROUNDS]`, which builds the release binary.
//!
//! The certificates are written in the cache format (signed by a CA of the bench's own, valid
//! for 90 days) for a directory that refuses connections: nothing is ordered, and the CA's
//! renewal information cannot be fetched, as during an outage.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certloop_acme::testing::{cert_file_name, encode_cert_file};
use certloop_tests::pebble::free_port;

/// A CA, and the certificates it signs for `site{i}.bench.test`.
struct Issuer(rcgen::CertifiedIssuer<'static, rcgen::KeyPair>);

impl Issuer {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "many-certs-bench CA");
        Self(rcgen::CertifiedIssuer::self_signed(params, key).expect("CA"))
    }

    /// The cache file of the certificate for `name`: key, then leaf and CA.
    fn cache_file(&self, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(90);
        let leaf = params.signed_by(&key, &self.0).expect("leaf");
        let chain = format!("{}{}", leaf.pem(), self.0.pem());
        encode_cert_file(&key.serialize_pem(), &chain)
    }
}

fn name(i: usize) -> String {
    format!("site{i}.bench.test")
}

/// A running certloop with `count` certificates, and what its start measured.
struct Server {
    count: usize,
    port: u16,
    child: Child,
    ready_after: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `count` cached certificates and a configuration listing them, then starts certloop
/// and waits until it says it is ready.
fn start(scratch: &Path, issuer: &Issuer, count: usize) -> Server {
    let dir = scratch.join(format!("n{count}"));
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let directory = format!("https://127.0.0.1:{}/dir", free_port());
    let mut config = format!(
        "state_dir = \"{}\"\n[limits]\nmax_connections_per_ip = 0\n",
        dir.display()
    );
    let port = free_port();
    config.push_str(&format!(
        "[[listeners]]\nname = \"bench\"\nbind = \"127.0.0.1:{port}\"\n\
         upstream = \"http://127.0.0.1:{}\"\ntls_mode = \"acme\"\nacme_directory = \"{directory}\"\n\
         acme_cache_dir = \"{}\"\n",
        free_port(),
        cache.display()
    ));
    for i in 0..count {
        let names = vec![name(i)];
        let file = cache.join(cert_file_name(&names, &directory));
        std::fs::write(&file, issuer.cache_file(&names[0])).expect("cache file");
        config.push_str(&format!(
            "[[listeners.certificates]]\ndomains = [\"{}\"]\n",
            names[0]
        ));
    }
    let path = dir.join("certloop.toml");
    std::fs::write(&path, config).expect("config");
    let binary = std::env::var("CERTLOOP_BIN").unwrap_or_else(|_| "target/release/certloop".into());
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&path)
        .env("CERTLOOP_LOG", "warn,certloop=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start certloop (build it first: scripts/bench-many-certs.sh)");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.ends_with(" ready") || line.starts_with("certloop: ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("certloop ready within 2 minutes");
    let ready_after = started.elapsed();
    assert!(line.ends_with(" ready"), "certloop did not start: {line}");
    Server {
        count,
        port,
        child,
        ready_after,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12) // utime, stime
}

/// Waits until the process uses less than 5 % of a core (its start-up work done), 60 s at most.
fn settle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let before = cpu_ticks(pid);
        std::thread::sleep(Duration::from_millis(1000));
        if cpu_ticks(pid) - before <= 5 {
            return;
        }
    }
}

/// Full TLS 1.3 handshakes (no resumption) for `duration`, each for a random one of the
/// server's names; returns handshakes per second.
fn handshakes(server: &Server, roots: &Arc<rustls::RootCertStore>, duration: Duration) -> f64 {
    let mut config =
        rustls::ClientConfig::builder_with_provider(certloop_acme::adapter::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ server.count as u64;
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < duration {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = usize::try_from(seed >> 33).unwrap_or(0) % server.count;
        let server_name = rustls::pki_types::ServerName::try_from(name(i)).expect("name");
        let mut conn = rustls::ClientConnection::new(config.clone(), server_name).expect("client");
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .unwrap_or_else(|e| panic!("handshake for {}: {e}", name(i)));
        }
        done += 1;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let scratch = std::env::current_dir()
        .expect("current directory")
        .join(format!("target/many-certs-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let issuer = Issuer::new();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(issuer.0.der().clone()).expect("root");
    let roots = Arc::new(roots);

    let one = start(&scratch, &issuer, 1);
    println!(
        "1 certificate: ready after {:.3} s",
        one.ready_after.as_secs_f64()
    );
    let generated = Instant::now();
    let many = start(&scratch, &issuer, count);
    println!(
        "{count} certificates: ready after {:.3} s (writing them took {:.1} s before)",
        many.ready_after.as_secs_f64(),
        (generated.elapsed() - many.ready_after).as_secs_f64()
    );
    settle(one.child.id());
    settle(many.child.id());
    let (rss_one, rss_many) = (rss_kib(one.child.id()), rss_kib(many.child.id()));
    println!(
        "resident memory: {rss_one} KiB with 1, {rss_many} KiB with {count}: {:.1} KiB per certificate",
        (rss_many.saturating_sub(rss_one)) as f64 / (count - 1).max(1) as f64
    );
    let (mut rates_one, mut rates_many) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let a = handshakes(&one, &roots, Duration::from_secs(5));
        let b = handshakes(&many, &roots, Duration::from_secs(5));
        println!("round {round}: full handshakes/s with 1: {a:.0}, with {count}: {b:.0}");
        rates_one.push(a);
        rates_many.push(b);
    }
    let (a, b) = (median(rates_one), median(rates_many));
    println!(
        "median full TLS 1.3 handshakes/s: {a:.0} with 1 certificate, {b:.0} with {count}: ratio {:.3}",
        b / a
    );
    drop((one, many));
    if std::env::var_os("MANY_CERTS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
}
