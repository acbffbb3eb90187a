//! What the binary's integration tests share: running `certloop`, an upstream, curl, and
//! certificates for manual listeners.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own part of this

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use certloop_tests::pebble::wait_until;

/// An upstream on a free port, served by a background tokio runtime for the whole test binary.
pub fn upstream() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| certloop_tests::serve_in_background(certloop_tests::upstream::serve))
}

/// A running `certloop`, killed when dropped.
pub struct Certloop {
    pub child: Child,
    pub log: PathBuf,
}

impl Certloop {
    pub fn start(config: &Path, extra_args: &[&str], wrapper: Option<&[&str]>) -> Self {
        let log = config.with_extension("log");
        let file = std::fs::File::create(&log).expect("log file");
        let binary = env!("CARGO_BIN_EXE_certloop");
        let mut command = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .arg("--config")
            .arg(config)
            .args(extra_args)
            .env("CERTLOOP_LOG", "info");
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start certloop");
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_ready(&mut self) {
        wait_until("certloop to be ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "certloop exited with {status} before ready:\n{}",
                    self.log()
                );
            }
            self.log().contains(" ready")
        });
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name}");
    }

    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let mut code = None;
        wait_until("certloop to exit", within, || {
            code = self
                .child
                .try_wait()
                .expect("wait")
                .map(|s| s.code().unwrap_or(-1));
            code.is_some()
        });
        code.expect("exited")
    }
}

impl Drop for Certloop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `certloop ARGS --config CONFIG`, run to its end: its exit code, and stdout then stderr.
pub fn certloop_command(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_certloop"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run certloop");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A CA and a leaf for `name`, as PEM files; returns the CA PEM.
pub fn manual_pair(dir: &Path, tag: &str, name: &str) -> (PathBuf, PathBuf, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("certloop test CA {tag}"));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("leaf");
    let (cert_path, key_path) = (
        dir.join(format!("{tag}.pem")),
        dir.join(format!("{tag}.key")),
    );
    std::fs::write(&cert_path, leaf.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (cert_path, key_path, ca.pem())
}

/// A scratch directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "certloop-{tag}-{}-{}",
            std::process::id(),
            certloop_tests::pebble::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TLS connection to `127.0.0.1:port` for `name`, trusting `root_pem`, offering `alpn`.
pub fn tls_connect(
    port: u16,
    name: &str,
    root_pem: &str,
    alpn: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    try_tls_connect(port, name, root_pem, alpn).expect("TLS connection")
}

/// [`tls_connect`], with a refused connection or a failed handshake as an error.
pub fn try_tls_connect(
    port: u16,
    name: &str,
    root_pem: &str,
    alpn: &[u8],
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    let config = certloop_tests::client_config(root_pem, alpn).expect("client TLS");
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
    let mut conn = rustls::ClientConnection::new(config, server).expect("client");
    let mut tcp =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Whether the peer has closed `tcp` (EOF or reset); bytes that arrive first are skipped.
pub fn peer_closed(tcp: &std::net::TcpStream) -> bool {
    use std::io::Read;
    tcp.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    let closed = loop {
        match (&*tcp).read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    tcp.set_nonblocking(false).expect("blocking");
    closed
}

/// `env LD_PRELOAD=libfaketime FAKETIME=offset`, to put in front of a command: `env` execs,
/// so the child's PID is the program's own and killing it leaves nothing behind (the
/// `faketime` command forks and would outlive a kill).
pub fn faketime_wrapper(offset: &str) -> Vec<String> {
    vec![
        "env".to_owned(),
        format!("LD_PRELOAD={}", libfaketime().display()),
        format!("FAKETIME={offset}"),
    ]
}

/// Like [`faketime_wrapper`], with the offset read from `file` on every clock call, so that a
/// test can move the wall clock of a running process by rewriting the file (e.g. `+4y`, `+0`).
/// The monotonic clock is left alone, as with an NTP step: timers do not fire early.
pub fn faketime_file_wrapper(file: &Path) -> Vec<String> {
    vec![
        "env".to_owned(),
        format!("LD_PRELOAD={}", libfaketime().display()),
        format!("FAKETIME_TIMESTAMP_FILE={}", file.display()),
        "FAKETIME_NO_CACHE=1".to_owned(),
        "DONT_FAKE_MONOTONIC=1".to_owned(),
    ]
}

fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.is_file())
        .expect("libfaketime.so.1 (Debian package faketime): run scripts/setup.sh")
}

/// A TLS connection to `127.0.0.1:port` for `name` upgraded through the proxy to the test
/// upstream's echo (`GET /ws` with `Upgrade: websocket`); panics unless the answer is a 101.
pub fn open_tunnel(
    port: u16,
    name: &str,
    root_pem: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use std::io::{Read, Write};
    let mut tls = tls_connect(port, name, root_pem, b"http/1.1");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {name}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).expect("upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls
}
