//! What an embedder configures: the certificates, the CA directory, contacts, the challenge,
//! the policy, and what can go wrong at launch.

use std::fmt;
use std::path::PathBuf;

use certloop_core::Policy;
use rustls_pki_types::CertificateDer;

use crate::order::{ChallengeKind, ExternalAccount};
use crate::store::StoreError;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Which ACME directory to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directory {
    /// Let's Encrypt production.
    Production,
    /// Let's Encrypt staging.
    Staging,
    /// Any directory URL (https).
    Url(String),
}

impl Directory {
    /// `production`, `staging`, or an `https://` URL.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "production" => Ok(Self::Production),
            "staging" => Ok(Self::Staging),
            url if url.starts_with("https://") && url.len() > "https://".len() => {
                Ok(Self::Url(url.to_owned()))
            }
            other => Err(format!(
                "ACME directory {other:?} is not \"production\", \"staging\" or an https:// URL"
            )),
        }
    }

    /// The directory URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Production => LETS_ENCRYPT_PRODUCTION,
            Self::Staging => LETS_ENCRYPT_STAGING,
            Self::Url(url) => url,
        }
    }
}

/// What to manage.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// One entry per certificate: its names (the first certificate is the SNI fallback).
    pub certs: Vec<Vec<String>>,
    /// The ACME directory.
    pub directory: Directory,
    /// Account contacts, e.g. `mailto:ops@example.com`.
    pub contacts: Vec<String>,
    /// The cache directory (one per listener).
    pub cache_dir: PathBuf,
    /// TLS-ALPN-01 (default) or HTTP-01.
    pub challenge: ChallengeKind,
    /// Extra roots for the directory's HTTPS (e.g. Pebble's test CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// External Account Binding, if the CA requires it.
    pub eab: Option<ExternalAccount>,
    /// Renewal and retry policy.
    pub policy: Policy,
}

impl AcmeConfig {
    /// Uses this ACME directory (default: Let's Encrypt production).
    pub fn directory(mut self, directory: Directory) -> Self {
        self.directory = directory;
        self
    }

    /// Adds an account contact, e.g. `mailto:ops@example.com`.
    pub fn contact(mut self, contact: impl Into<String>) -> Self {
        self.contacts.push(contact.into());
        self
    }

    /// Uses this challenge type (default: TLS-ALPN-01).
    pub fn challenge(mut self, challenge: ChallengeKind) -> Self {
        self.challenge = challenge;
        self
    }

    /// Also manages a certificate for these names (served by SNI).
    pub fn certificate(mut self, domains: Vec<String>) -> Self {
        self.certs.push(domains);
        self
    }

    /// Trusts every certificate in this PEM file for the directory's HTTPS.
    pub fn extra_roots_pem(mut self, path: &std::path::Path) -> Result<Self, StartError> {
        use rustls_pki_types::pem::PemObject;
        let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
            .map_err(|e| StartError::Config(format!("{}: {e}", path.display())))?
            .collect();
        let certs = certs.map_err(|e| StartError::Config(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(StartError::Config(format!(
                "{}: no certificates in it",
                path.display()
            )));
        }
        self.extra_roots.extend(certs);
        Ok(self)
    }

    /// Uses External Account Binding with this key id and base64url HMAC key.
    pub fn eab(
        mut self,
        kid: impl Into<String>,
        hmac_key_base64url: &str,
    ) -> Result<Self, StartError> {
        use base64::Engine;
        let hmac_key = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(hmac_key_base64url.trim_end_matches('='))
            .map_err(|e| StartError::Config(format!("EAB HMAC key is not base64url: {e}")))?;
        self.eab = Some(ExternalAccount {
            kid: kid.into(),
            hmac_key,
        });
        Ok(self)
    }

    /// Uses this renewal and retry policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Defaults for one certificate covering `domains`.
    pub fn new(domains: Vec<String>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            certs: vec![domains],
            directory: Directory::Production,
            contacts: Vec::new(),
            cache_dir: cache_dir.into(),
            challenge: ChallengeKind::TlsAlpn01,
            extra_roots: Vec::new(),
            eab: None,
            policy: Policy::default(),
        }
    }
}

/// Why certificate management could not start.
#[derive(Clone, Debug)]
pub enum StartError {
    /// The configuration is invalid.
    Config(String),
    /// The cache directory is unusable.
    Store(StoreError),
    /// No valid certificate could be had (the failure table says: do not start).
    NoCertificate {
        /// The certificate's names.
        domains: Vec<String>,
        /// The directory URL.
        directory: String,
        /// The core's account of what happened.
        reason: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid ACME configuration: {e}"),
            Self::Store(e) => write!(f, "{e}"),
            Self::NoCertificate {
                domains,
                directory,
                reason,
            } => {
                write!(f, "{} via {directory}: {reason}", domains.join(", "))
            }
        }
    }
}

impl std::error::Error for StartError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_selection() {
        assert_eq!(
            Directory::parse("production").unwrap().url(),
            LETS_ENCRYPT_PRODUCTION
        );
        assert_eq!(
            Directory::parse("staging").unwrap().url(),
            LETS_ENCRYPT_STAGING
        );
        assert_eq!(
            Directory::parse("https://127.0.0.1:14000/dir")
                .unwrap()
                .url(),
            "https://127.0.0.1:14000/dir"
        );
        let err = Directory::parse("http://insecure.test/dir").unwrap_err();
        assert!(err.contains("https://"), "{err}");
        assert!(Directory::parse("Production").is_err());
    }
}
