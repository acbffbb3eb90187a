//! A certificate read and checked once, ready to serve: loading from the cache must parse the
//! bundle and build its rustls key anyway (to check that the key matches), so the result is
//! kept, with the bundle it came from, for the install that follows. With ten thousand cached
//! certificates that halves the work before ready, and moves it off the driver's task.

use std::sync::Arc;

use certloop_core::{CertBundle, CertInfo};
use rustls::sign::CertifiedKey;

use crate::cache::decode_cert_file;
use crate::status::ServedCert;
use crate::tls::{certified_key, matching};

/// A bundle's rustls key and status facts.
pub(crate) struct PreparedCert {
    pub(crate) bundle: CertBundle,
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) served: Option<ServedCert>,
}

/// Parses `bytes` once: the core's view of the certificate, and what serving it needs. Fails
/// when the file does not decode or its key does not match its leaf.
pub(crate) fn prepare(bytes: Vec<u8>) -> Result<(CertInfo, PreparedCert), String> {
    let file = decode_cert_file(&bytes).map_err(|e| e.to_string())?;
    let served = file
        .chain
        .first()
        .and_then(|leaf| ServedCert::from_leaf(leaf).ok());
    let info = file.info.clone();
    let key = matching(certified_key(file.chain, file.key)?)?;
    Ok((
        info,
        PreparedCert {
            bundle: CertBundle::new(bytes),
            key,
            served,
        },
    ))
}
