//! A real Redis for fleet tests: Debian's `redis-server` on a free loopback port, without
//! persistence, so a restart comes back empty. Installs nothing: `scripts/setup.sh` does.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pebble::{free_port, wait_until};

/// A running `redis-server`; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    /// Where it listens.
    pub port: u16,
    /// The `requirepass` password, if any.
    pub password: Option<String>,
    /// With TLS only (`rediss://`): the CA of its certificate.
    pub tls_ca: Option<PathBuf>,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts one on a free port that requires `password`.
    pub fn start_with(password: Option<&str>) -> Self {
        Self::launch(password, false)
    }

    /// Starts one that speaks TLS only, with a certificate for 127.0.0.1 from a CA of its
    /// own ([`RedisServer::tls_ca`]).
    pub fn start_tls() -> Self {
        Self::launch(None, true)
    }

    fn launch(password: Option<&str>, tls: bool) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("certloop-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let tls_ca = tls.then(|| crate::pebble::write_listener_certs(&dir));
        let mut server = Self {
            child: None,
            dir,
            port,
            password: password.map(str::to_owned),
            tls_ca,
        };
        server.restart_empty();
        server
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops it (as a crash would: SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, on the same port, with no data (or starts it if it is stopped).
    pub fn restart_empty(&mut self) {
        self.stop();
        let binary = crate::pebble::binary("redis-server");
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log");
        let mut command = Command::new(binary);
        let port = self.port.to_string();
        match &self.tls_ca {
            None => command.args(["--port", &port]),
            Some(ca) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(self.dir.join("listener.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("listener.key"))
                .arg("--tls-ca-cert-file")
                .arg(ca),
        };
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        self.child = Some(command.spawn().expect("start redis-server"));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_until("redis-server to answer", Duration::from_secs(15), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    /// Runs `redis-cli` against it with `args`; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string(), "--no-auth-warning"]);
        if let Some(ca) = &self.tls_ca {
            command.arg("--tls").arg("--cacert").arg(ca);
        }
        if let Some(password) = &self.password {
            command.args(["-a", password]);
        }
        let out = command.args(args).output().expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
