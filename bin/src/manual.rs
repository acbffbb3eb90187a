//! `tls_mode = "manual"`: a certificate and key from files, reloaded on SIGHUP and when the
//! files change; an invalid new pair is refused and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate/key pair could not be loaded.
#[derive(Debug)]
pub(crate) struct LoadError {
    /// The problem is with the key file (otherwise the certificate file).
    pub(crate) about_key: bool,
    /// What is wrong, naming the file. Never contains key material.
    pub(crate) message: String,
}

/// Loads a PEM chain (leaf first) and a PEM private key, and checks that they belong together.
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, LoadError> {
    let cert_err = |m: String| LoadError {
        about_key: false,
        message: format!("{}: {m}", cert.display()),
    };
    let key_err = |m: String| LoadError {
        about_key: true,
        message: format!("{}: {m}", key.display()),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate in it".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| key_err(format!("no usable private key ({e})")))?;
    let certified = certloop_acme::adapter::certified_key(chain, private_key).map_err(key_err)?;
    certified.keys_match().map_err(|e| {
        key_err(format!(
            "does not match the certificate in {} ({e})",
            cert.display()
        ))
    })?;
    Ok(certified)
}

/// Serves the current pair; swapped atomically on reload.
#[derive(Debug)]
pub(crate) struct ManualResolver {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
    listener: String,
}

impl ManualResolver {
    /// Serves `loaded` for `listener`, reloading from `cert` and `key`.
    pub(crate) fn new(
        listener: &str,
        cert: PathBuf,
        key: PathBuf,
        loaded: Arc<CertifiedKey>,
    ) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(loaded),
            cert,
            key,
            listener: listener.to_owned(),
        })
    }

    /// Reloads the files; keeps the old pair (and logs an error) if the new one is invalid.
    pub(crate) fn reload(&self) {
        match load_certified_key(&self.cert, &self.key) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
                tracing::info!(listener = %self.listener, "reloaded certificate from {}", self.cert.display());
            }
            Err(e) => tracing::error!(
                listener = %self.listener,
                "new certificate refused, still serving the previous one: {}",
                e.message
            ),
        }
    }

    /// The leaf certificate served now.
    pub(crate) fn leaf(&self) -> CertificateDer<'static> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (current.cert.first().cloned()).unwrap_or_else(|| Vec::new().into())
    }

    /// Reloads whenever either file's modification time changes (checked every 2 s).
    pub(crate) async fn watch_files(self: Arc<Self>) {
        let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut last: (Option<SystemTime>, Option<SystemTime>) =
            (stamp(&self.cert), stamp(&self.key));
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = (stamp(&self.cert), stamp(&self.key));
            if now != last {
                last = now;
                self.reload();
            }
        }
    }
}

impl ResolvesServerCert for ManualResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}
