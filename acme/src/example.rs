//! What both runtimes' examples share: their flags, and answering one request with a short
//! text page over an established connection.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::http01::{read_request_head, write_response};
use crate::{AcmeConfig, ChallengeKind, Directory};

/// `--domain NAME` (repeatable), `--directory URL|production|staging`, `--directory-ca PEM`,
/// `--cache-dir DIR`, `--bind ADDR`, `--challenge tls-alpn-01|http-01`, `--http01-bind ADDR`.
#[derive(Debug)]
pub struct ExampleArgs {
    /// Where the HTTPS server listens.
    pub bind: String,
    /// Where the port-80 HTTP-01 responder listens, if HTTP-01 is used.
    pub http01_bind: Option<String>,
    /// The ACME configuration the flags describe.
    pub config: AcmeConfig,
}

impl ExampleArgs {
    /// Parses the process arguments.
    pub fn from_env() -> Result<Self, String> {
        Self::parse(std::env::args().skip(1))
    }

    /// Parses `args`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let (mut domains, mut directory, mut ca, mut cache_dir) = (Vec::new(), None, None, None);
        let (mut bind, mut http01_bind, mut challenge) =
            ("0.0.0.0:443".to_owned(), None, ChallengeKind::TlsAlpn01);
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--domain" => domains.push(value()?),
                "--directory" => directory = Some(Directory::parse(&value()?)?),
                "--directory-ca" => ca = Some(PathBuf::from(value()?)),
                "--cache-dir" => cache_dir = Some(PathBuf::from(value()?)),
                "--bind" => bind = value()?,
                "--http01-bind" => http01_bind = Some(value()?),
                "--challenge" => {
                    challenge = match value()?.as_str() {
                        "tls-alpn-01" => ChallengeKind::TlsAlpn01,
                        "http-01" => ChallengeKind::Http01,
                        other => {
                            return Err(format!(
                                "--challenge {other:?}: use tls-alpn-01 or http-01"
                            ));
                        }
                    }
                }
                other => return Err(format!("unknown flag {other:?}")),
            }
        }
        if domains.is_empty() {
            return Err("at least one --domain is required".into());
        }
        if challenge == ChallengeKind::Http01 && http01_bind.is_none() {
            http01_bind = Some("0.0.0.0:80".into());
        }
        let cache_dir = cache_dir.ok_or("--cache-dir is required")?;
        let mut config = AcmeConfig::new(domains, cache_dir)
            .directory(directory.unwrap_or(Directory::Production))
            .challenge(challenge);
        if let Some(ca) = ca {
            config = config.extra_roots_pem(ca);
        }
        config.check().map_err(|e| e.to_string())?;
        Ok(Self {
            bind,
            http01_bind,
            config,
        })
    }
}

/// The page the examples serve.
pub const PAGE: &str = "hello from certloop\n";

/// Prints `EXAMPLE: MESSAGE` and exits with `code` (1: cannot run, 2: bad flags).
pub fn fail(code: i32, message: impl std::fmt::Display) -> ! {
    let program = std::env::args().next().unwrap_or_default();
    let name = program.rsplit('/').next().unwrap_or("example");
    eprintln!("{name}: {message}");
    std::process::exit(code)
}

/// The same settings without `h2` in ALPN: the examples speak HTTP/1.1 only.
pub fn http1_only(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols.retain(|p| p.as_slice() != b"h2");
    Arc::new(config)
}

/// Answers one request on an established connection (TLS done, e.g. from an
/// `AcmeListener`) with `body` as a text page.
pub async fn serve_hello<S>(mut tls: S, body: &str)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    if read_request_head(&mut tls).await.is_some() {
        let _ = write_response(&mut tls, "200 OK", &[], body).await;
    }
}
