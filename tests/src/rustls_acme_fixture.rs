//! Writes a certificate cache exactly as rustls-acme's `DirCache` does, independently of
//! certloop's own codec: `cached_cert_` + base64url-no-pad(SHA-256(d1 ‖ 0 ‖ … ‖ dn ‖ 0 ‖
//! directory URL)), content = PKCS#8 key PEM, newline, chain PEM; written with plain
//! `fs::write`, as rustls-acme does.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use certloop_acme::testing::CachedCertFile;
use rustls::pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The bytes rustls-acme stores for a key and chain.
pub fn cert_file(decoded: &CachedCertFile) -> Vec<u8> {
    let PrivateKeyDer::Pkcs8(key) = &decoded.key else {
        panic!("rustls-acme stores PKCS#8 keys")
    };
    let mut out = pem("PRIVATE KEY", key.secret_pkcs8_der());
    out.push('\n');
    for cert in &decoded.chain {
        out.push_str(&pem("CERTIFICATE", cert));
    }
    out.into_bytes()
}

/// Writes `content` under rustls-acme's certificate file name in `dir`.
pub fn write(dir: &Path, domains: &[&str], directory_url: &str, content: &[u8]) {
    let mut hasher = Sha256::new();
    for domain in domains {
        hasher.update(domain.as_bytes());
        hasher.update([0]);
    }
    hasher.update(directory_url.as_bytes());
    let name = format!("cached_cert_{}", URL_SAFE_NO_PAD.encode(hasher.finalize()));
    std::fs::create_dir_all(dir).expect("cache dir");
    std::fs::write(dir.join(name), content).expect("write fixture");
}
