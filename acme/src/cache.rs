//! The on-disk cache format, compatible with rustls-acme's `DirCache`, as pure functions.
//!
//! - Certificate file `cached_cert_<h>` where `h` is base64url (no padding) of
//!   SHA-256(d1 ‖ 0 ‖ … ‖ dn ‖ 0 ‖ directory URL), domains in configured order. Content: the
//!   PKCS#8 private key PEM, a newline, then the CA's chain PEM, leaf first.
//! - Account file `cached_account_<h>`, the same hash over the contacts. Content: the raw
//!   PKCS#8 DER of the account key.
//! - certloop's own state lives in sidecar files that rustls-acme never reads:
//!   `<cert file>.retry` (the core's retry state) and `<account file>.url` (the account URL).

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certloop_core::{CertInfo, FailureKind, OrderError, RetryState, UnixTime};
use rustls_pki_types::pem::SectionKind;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use sha2::{Digest, Sha256};

/// The certificate file name for these domains and directory.
pub fn cert_file_name(domains: &[String], directory_url: &str) -> String {
    format!("cached_cert_{}", hash_name(domains, directory_url))
}

/// The account file name for these contacts and directory.
pub fn account_file_name(contacts: &[String], directory_url: &str) -> String {
    format!("cached_account_{}", hash_name(contacts, directory_url))
}

fn hash_name(items: &[String], directory_url: &str) -> String {
    let mut hasher = Sha256::new();
    for item in items {
        hasher.update(item.as_bytes());
        hasher.update([0]);
    }
    hasher.update(directory_url.as_bytes());
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// Why cached bytes could not be used. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// Not PEM, or a PEM section that does not decode.
    NotPem(String),
    /// The first PEM block is not a private key.
    KeyFirst,
    /// No certificate follows the key.
    NoCertificate,
    /// The leaf certificate does not parse as X.509.
    BadCertificate(String),
    /// A retry-state sidecar line is malformed.
    BadRetryState {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPem(e) => write!(f, "not a PEM file: {e}"),
            Self::KeyFirst => f.write_str("the first PEM block is not a private key"),
            Self::NoCertificate => f.write_str("no certificate follows the private key"),
            Self::BadCertificate(e) => write!(f, "the leaf certificate does not parse: {e}"),
            Self::BadRetryState { line, problem } => write!(f, "line {line}: {problem}"),
        }
    }
}

impl std::error::Error for CacheError {}

/// A decoded certificate file: key, chain and what the core needs to know.
pub struct CachedCertFile {
    /// The private key (PKCS#8 as rustls-acme writes it; PKCS#1 and SEC1 are accepted too).
    pub key: PrivateKeyDer<'static>,
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Validity and names of the leaf.
    pub info: CertInfo,
}

impl fmt::Debug for CachedCertFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCertFile")
            .field("key", &"[redacted]")
            .field("chain_len", &self.chain.len())
            .field("info", &self.info)
            .finish()
    }
}

/// Joins a key PEM and a chain PEM the way rustls-acme does.
pub fn encode_cert_file(key_pem: &str, chain_pem: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key_pem.len() + chain_pem.len() + 1);
    out.extend_from_slice(key_pem.as_bytes());
    if !key_pem.ends_with('\n') {
        out.push(b'\n');
    }
    out.extend_from_slice(chain_pem.as_bytes());
    out
}

/// Decodes a certificate file: the first PEM block must be a private key, and at least one
/// certificate must follow. Never panics, whatever the bytes.
pub fn decode_cert_file(bytes: &[u8]) -> Result<CachedCertFile, CacheError> {
    let mut reader = bytes;
    let mut key = None;
    let mut chain = Vec::new();
    loop {
        let section = rustls_pki_types::pem::from_buf(&mut reader)
            .map_err(|e| CacheError::NotPem(e.to_string()))?;
        let Some((kind, der)) = section else { break };
        if key.is_none() {
            key = Some(match kind {
                SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
                SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
                SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
                _ => return Err(CacheError::KeyFirst),
            });
        } else if kind == SectionKind::Certificate {
            chain.push(CertificateDer::from(der));
        }
    }
    let key = key.ok_or_else(|| CacheError::NotPem("no PEM blocks".into()))?;
    let leaf = chain.first().ok_or(CacheError::NoCertificate)?;
    let info = cert_info(leaf)?;
    Ok(CachedCertFile { key, chain, info })
}

/// Validity and DNS names of a DER certificate.
pub(crate) fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, CacheError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CacheError::BadCertificate(e.to_string()))?;
    let validity = cert.validity();
    let to_unix = |t: i64, what: &str| {
        u64::try_from(t)
            .map(UnixTime::from_secs)
            .map_err(|_| CacheError::BadCertificate(format!("{what} is before 1970")))
    };
    let not_before = to_unix(validity.not_before.timestamp(), "notBefore")?;
    let not_after = to_unix(validity.not_after.timestamp(), "notAfter")?;
    Ok(CertInfo {
        not_before,
        not_after,
        names: san_names(&cert).into(),
    })
}

/// The DNS names and IP addresses (canonical form) of a certificate's subjectAltName
/// extension.
pub(crate) fn san_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    names
}

/// Serialises the core's retry state as `key=value` lines.
pub fn encode_retry_state(state: &RetryState) -> String {
    let mut out = format!("failures={}\n", state.failures);
    if let Some(at) = state.next_attempt_at {
        out.push_str(&format!("next_attempt_at_ms={}\n", at.as_millis()));
    }
    if let Some(error) = &state.last_error {
        let kind = match error.kind {
            FailureKind::Unreachable => "unreachable".to_owned(),
            FailureKind::ServerError => "server_error".to_owned(),
            FailureKind::RateLimited { retry_after: None } => "rate_limited".to_owned(),
            FailureKind::RateLimited {
                retry_after: Some(d),
            } => {
                format!("rate_limited:{}", d.as_millis())
            }
            FailureKind::Rejected => "rejected".to_owned(),
            FailureKind::InvalidCertificate => "invalid_certificate".to_owned(),
        };
        out.push_str(&format!("last_error_kind={kind}\n"));
        let detail: String = error
            .detail
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        out.push_str(&format!("last_error_detail={detail}\n"));
    }
    out
}

/// Parses [`encode_retry_state`]'s output. Unknown keys are ignored (forward compatibility).
pub fn decode_retry_state(text: &str) -> Result<RetryState, CacheError> {
    let mut state = RetryState::default();
    let mut kind = None;
    let mut detail = String::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |problem: String| CacheError::BadRetryState {
            line: i + 1,
            problem,
        };
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| bad("expected key=value".into()))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{key}: {v:?} is not a number")))
        };
        match key {
            "failures" => {
                state.failures =
                    u32::try_from(number(value)?).map_err(|_| bad("failures: too large".into()))?;
            }
            "next_attempt_at_ms" => {
                state.next_attempt_at = Some(UnixTime::from_millis(number(value)?))
            }
            "last_error_kind" => {
                kind = Some(match value.split_once(':') {
                    Some(("rate_limited", ms)) => FailureKind::RateLimited {
                        retry_after: Some(Duration::from_millis(number(ms)?)),
                    },
                    _ => match value {
                        "unreachable" => FailureKind::Unreachable,
                        "server_error" => FailureKind::ServerError,
                        "rate_limited" => FailureKind::RateLimited { retry_after: None },
                        "rejected" => FailureKind::Rejected,
                        "invalid_certificate" => FailureKind::InvalidCertificate,
                        other => return Err(bad(format!("unknown error kind {other:?}"))),
                    },
                });
            }
            "last_error_detail" => value.clone_into(&mut detail),
            _ => {}
        }
    }
    state.last_error = kind.map(|kind| OrderError { kind, detail });
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_rustls_acme() {
        // SHA-256("example.com\0https://acme.test/dir"), base64url without padding.
        let name = cert_file_name(&["example.com".into()], "https://acme.test/dir");
        let mut h = Sha256::new();
        h.update(b"example.com\0https://acme.test/dir");
        assert_eq!(
            name,
            format!("cached_cert_{}", URL_SAFE_NO_PAD.encode(h.finalize()))
        );
        assert!(!name.contains('=') && !name.contains('/') && !name.contains('+'));
        // Order matters, as in rustls-acme.
        let ab = cert_file_name(&["a.test".into(), "b.test".into()], "u");
        let ba = cert_file_name(&["b.test".into(), "a.test".into()], "u");
        assert_ne!(ab, ba);
        assert!(account_file_name(&["mailto:a@b.test".into()], "u").starts_with("cached_account_"));
    }

    #[test]
    fn rejects_garbage_with_reasons() {
        assert!(matches!(decode_cert_file(b""), Err(CacheError::NotPem(_))));
        assert!(matches!(
            decode_cert_file(b"hello"),
            Err(CacheError::NotPem(_))
        ));
        let cert_only = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            decode_cert_file(cert_only).unwrap_err(),
            CacheError::KeyFirst
        );
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            decode_cert_file(key_only).unwrap_err(),
            CacheError::NoCertificate
        );
        let bad_leaf = [&key_only[..], &cert_only[..]].concat();
        assert!(matches!(
            decode_cert_file(&bad_leaf),
            Err(CacheError::BadCertificate(_))
        ));
    }

    #[test]
    fn retry_state_round_trips() {
        let state = RetryState {
            failures: 3,
            next_attempt_at: Some(UnixTime::from_millis(1_800_000_000_123)),
            last_error: Some(OrderError {
                kind: FailureKind::RateLimited {
                    retry_after: Some(Duration::from_secs(90)),
                },
                detail: "urn:ietf:params:acme:error:rateLimited:\ntoo many".into(),
            }),
        };
        let decoded = decode_retry_state(&encode_retry_state(&state)).unwrap();
        assert_eq!(decoded.failures, 3);
        assert_eq!(decoded.next_attempt_at, state.next_attempt_at);
        let error = decoded.last_error.unwrap();
        assert_eq!(error.kind, state.last_error.unwrap().kind);
        assert_eq!(
            error.detail,
            "urn:ietf:params:acme:error:rateLimited: too many"
        );
        assert_eq!(decode_retry_state("").unwrap(), RetryState::default());
        let err = decode_retry_state("failures=3\nnext_attempt_at_ms=soon\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: next_attempt_at_ms: \"soon\" is not a number"
        );
    }
}
