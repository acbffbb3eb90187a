//! A real ACME server for integration tests: Debian's `pebble` and `pebble-challtestsrv`,
//! started on free loopback ports with a TLS certificate generated here for Pebble's own
//! listener. Installs nothing: `scripts/setup.sh` does. Missing binaries fail the test with
//! a message saying so; nothing is skipped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to change from Pebble's defaults.
#[derive(Clone, Debug, Default)]
pub struct PebbleOptions {
    /// `certificateValidityPeriod` in seconds (Pebble's default is five years).
    pub validity_secs: Option<u64>,
    /// Require External Account Binding with this key id and base64url HMAC key.
    pub eab: Option<(String, String)>,
    /// Validate on these TLS-ALPN-01 and HTTP-01 ports (another Pebble's) instead of fresh
    /// ones: two CAs validating the same server.
    pub validation_ports: Option<(u16, u16)>,
    /// Resolve names (and DNS-01 records) with this DNS server instead of
    /// `pebble-challtestsrv`.
    pub dns_server: Option<SocketAddr>,
}

/// A running Pebble and its challenge DNS server; both are killed on drop.
pub struct Pebble {
    dir: PathBuf,
    pebble: Option<Child>,
    challtest: Child,
    /// The ACME directory URL.
    pub directory_url: String,
    /// PEM file of the CA that signed Pebble's own HTTPS certificate (the directory's HTTPS).
    pub directory_ca: PathBuf,
    /// Where Pebble connects to validate TLS-ALPN-01: the server under test listens here.
    pub tls_port: u16,
    /// Where Pebble connects to validate HTTP-01.
    pub http_port: u16,
    mgmt_port: u16,
    dns_mgmt_port: u16,
}

/// A port nobody listens on right now, below Linux's ephemeral range (32768-60999): a port
/// from that range can be taken as the source port of any outgoing connection between this
/// call and the bind that follows it, which the edge tests make by the hundred.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    // Test binaries run side by side: start each process at its own place in the range.
    let start = std::process::id().wrapping_mul(7919) % COUNT;
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + offset) % COUNT).expect("in range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT)
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `future`'s output, or `None` after `within` (an async-io timer: works on any runtime).
pub async fn within<T>(within: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        async_io::Timer::after(within).await;
        None
    })
    .await
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The path of `name` on `PATH`; a test fails naming the package when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("{name} not found on PATH (or /usr/sbin): run scripts/setup.sh"))
}

impl Pebble {
    /// Starts Pebble with default options.
    pub fn start() -> Self {
        Self::start_with(&PebbleOptions::default())
    }

    /// Starts Pebble and waits until its directory and management ports accept connections.
    pub fn start_with(options: &PebbleOptions) -> Self {
        let (pebble_bin, challtest_bin) = (binary("pebble"), binary("pebble-challtestsrv"));
        let dir = std::env::temp_dir().join(format!(
            "certloop-pebble-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let directory_ca = write_listener_certs(&dir);
        let [
            acme_port,
            mgmt_port,
            dns_port,
            dns_mgmt_port,
            tls_port,
            http_port,
        ] = [(); 6].map(|_| free_port());
        let (tls_port, http_port) = options.validation_ports.unwrap_or((tls_port, http_port));
        let challtest = Command::new(challtest_bin)
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt_port}")])
            .stdout(log_file(&dir, "challtestsrv.log"))
            .stderr(log_file(&dir, "challtestsrv.log"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": dir.join("listener.pem"),
            "privateKey": dir.join("listener.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(secs) = options.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        if let Some((kid, key)) = &options.eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid.as_str(): key });
        }
        std::fs::write(dir.join("pebble.json"), config.to_string()).expect("write pebble.json");
        let mut pebble = Self {
            pebble: None,
            challtest,
            directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
            directory_ca,
            tls_port,
            http_port,
            mgmt_port,
            dns_mgmt_port,
            dir,
        };
        let pebble_process = Command::new(pebble_bin)
            .arg("-config")
            .arg(pebble.dir.join("pebble.json"))
            .args([
                "-dnsserver",
                &(options.dns_server).map_or(format!("127.0.0.1:{dns_port}"), |a| a.to_string()),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log_file(&pebble.dir, "pebble.log"))
            .stderr(log_file(&pebble.dir, "pebble.log"))
            .spawn()
            .expect("start pebble");
        pebble.pebble = Some(pebble_process);
        wait_until("Pebble to listen", Duration::from_secs(15), || {
            listening(acme_port) && listening(mgmt_port)
        });
        wait_until(
            "pebble-challtestsrv to listen",
            Duration::from_secs(15),
            || listening(dns_mgmt_port),
        );
        pebble
    }

    /// The root that signs issued chains (regenerated by every Pebble start), as PEM.
    pub fn issuing_root_pem(&self) -> String {
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&self.directory_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .output()
            .expect("run curl (installed by scripts/setup.sh)");
        assert!(
            out.status.success(),
            "fetching Pebble's root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("PEM is text")
    }

    /// Makes Pebble's DNS resolve `host` to `ip` (IPv4) alone, so its validations for `host`
    /// connect there.
    pub fn resolve(&self, host: &str, ip: &str) {
        let host = format!("{host}.");
        // add-a adds to the host's addresses: the previous ones are cleared first.
        for (path, body) in [
            ("clear-a", serde_json::json!({"host": host})),
            (
                "add-a",
                serde_json::json!({"host": host, "addresses": [ip]}),
            ),
        ] {
            let out = Command::new("curl")
                .args(["-sS", "--fail", "-X", "POST", "-d", &body.to_string()])
                .arg(format!("http://127.0.0.1:{}/{path}", self.dns_mgmt_port))
                .output()
                .expect("run curl");
            assert!(out.status.success(), "challtestsrv {path} {host}: {out:?}");
        }
    }

    /// Stops the ACME server (the challenge DNS server keeps running): the CA is down.
    pub fn stop_ca(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pebble's log so far (requests, orders), for assertions and failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// TLS settings with Pebble's own listener certificate (`localhost`, `127.0.0.1`), for
    /// servers placed in front of Pebble that clients reach with `directory_ca`.
    pub fn listener_server_config(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls::pki_types::CertificateDer::pem_file_iter(self.scratch("listener.pem"))
                .expect("listener cert")
                .collect::<Result<_, _>>()
                .expect("listener cert");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(self.scratch("listener.key"))
            .expect("listener key");
        rustls::ServerConfig::builder_with_provider(certloop_acme::adapter::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("TLS config")
    }

    /// A scratch directory that goes away with this Pebble.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop_ca();
        let _ = self.challtest.kill();
        let _ = self.challtest.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file");
    Stdio::from(file)
}

/// A CA and a leaf (localhost, 127.0.0.1) for a loopback TLS listener (Pebble's HTTPS, a TLS
/// Redis): `listener.pem` and `listener.key` in `dir`; returns the CA's path.
pub(crate) fn write_listener_certs(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "certloop test CA for loopback listeners",
    );
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf");
    std::fs::write(dir.join("listener.pem"), leaf.pem()).expect("write");
    std::fs::write(dir.join("listener.key"), leaf_key.serialize_pem()).expect("write");
    let ca_path = dir.join("directory-ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write");
    ca_path
}
