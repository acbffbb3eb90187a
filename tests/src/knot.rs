//! A real authoritative DNS server for DNS-01 tests: Debian's `knot` (`knotd`), started on a
//! free loopback port as the only server of a test zone, accepting RFC 2136 updates signed
//! with a TSIG key made here. Pebble's `-dnsserver` points at it, so Pebble validates DNS-01
//! against what certloop published. Installs nothing: `scripts/setup.sh` does. A missing
//! binary fails the test, saying so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::pebble::{free_port, wait_until};

/// A running `knotd`; killed on drop.
pub struct Knot {
    child: Child,
    dir: PathBuf,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    /// The zone it serves.
    pub zone: String,
    /// The TSIG key's name.
    pub key_name: String,
    /// A file holding the key's secret (base64).
    pub key_file: PathBuf,
}

impl Knot {
    /// Serves `zone` (SOA, one NS `ns1` at 127.0.0.1, plus `extra` zone-file lines) on a free
    /// port, and waits until it answers over TCP.
    pub fn start(zone: &str, extra: &str) -> Self {
        let knotd = crate::pebble::binary("knotd");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("certloop-knot-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("db")).expect("knot dir");
        let secret: String = {
            use base64::Engine;
            let bytes: Vec<u8> = (0..32).map(|_| rand_byte()).collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        let key_file = dir.join("tsig.key");
        std::fs::write(&key_file, format!("{secret}\n")).expect("key file");
        let config = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {dir}\n    pidfile: {dir}/knot.pid\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n    storage: {dir}/db\n\
             key:\n  - id: certloop-test\n    algorithm: hmac-sha256\n    secret: {secret}\n\
             acl:\n  - id: update\n    key: certloop-test\n    action: update\n\
             zone:\n  - domain: {zone}\n    storage: {dir}\n    file: zone\n    acl: update\n\
             \x20   zonefile-sync: -1\n    journal-content: none\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("knot.conf"), config).expect("knot.conf");
        let zone_file = format!(
            "$ORIGIN {zone}.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\n\
             ns1 A 127.0.0.1\n{extra}\n"
        );
        std::fs::write(dir.join("zone"), zone_file).expect("zone file");
        let log = std::fs::File::create(dir.join("knot.log")).expect("knot log");
        let child = Command::new(knotd)
            .arg("-c")
            .arg(dir.join("knot.conf"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start knotd");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let knot = Self {
            child,
            dir,
            addr,
            zone: zone.to_owned(),
            key_name: "certloop-test".to_owned(),
            key_file,
        };
        wait_until("knotd to answer", Duration::from_secs(15), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && knot.log().contains("server started")
        });
        knot
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("knot.log")).unwrap_or_default()
    }

    /// The TXT strings `kdig` gets for `name` over TCP (empty when there is none).
    pub fn txt(&self, name: &str) -> Vec<String> {
        let out = Command::new("kdig")
            .arg(format!("@{}", self.addr.ip()))
            .args([
                "-p",
                &self.addr.port().to_string(),
                "+tcp",
                "+short",
                "TXT",
                name,
            ])
            .output()
            .expect("run kdig (Debian's knot-dnsutils, installed by scripts/setup.sh)");
        assert!(out.status.success(), "kdig: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_matches('"').to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A byte from the kernel's random source (test keys only).
fn rand_byte() -> u8 {
    use std::io::Read;
    let mut byte = [0u8; 1];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut byte))
        .expect("/dev/urandom");
    byte[0]
}
