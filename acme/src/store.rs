//! The cache directory on disk: rustls-acme compatible names and contents, but written
//! atomically (temp file, fsync, rename, fsync of the directory), mode 0600 in a 0700
//! directory, corrupt files moved aside rather than deleted, and one process per directory
//! (an advisory lock).
//!
//! Blocking `std::fs` calls: adapters run them on their blocking pool.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use certloop_core::{CachedCert, CertBundle, Certificate, RetryState};

use crate::cache::{
    account_file_name, cert_file_name, decode_cert_file, decode_retry_state, encode_retry_state,
};
use crate::tls::certified_key_from_bundle;

const LOCK_FILE: &str = ".certloop.lock";

/// Why the cache directory cannot be used.
#[derive(Clone, Debug)]
pub struct StoreError {
    /// The path concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub problem: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cache directory {}: {}",
            self.path.display(),
            self.problem
        )
    }
}

impl std::error::Error for StoreError {}

/// An open, locked cache directory.
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    /// Held for the life of the store: the advisory lock.
    _lock: File,
}

/// What the cache holds for an account.
#[derive(Default)]
pub struct CachedAccount {
    /// instant-acme's serialised credentials (certloop's sidecar).
    pub credentials_json: Option<Vec<u8>>,
    /// rustls-acme's account file: the PKCS#8 DER key.
    pub pkcs8_der: Option<Vec<u8>>,
}

impl DirStore {
    /// Creates (mode 0700) and locks `dir`, and checks that it is writable. A second process
    /// pointed at the same directory gets a clear error instead of corrupting it.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let err = |path: &Path, problem: String| StoreError {
            path: path.to_owned(),
            problem,
        };
        fs::create_dir_all(&dir).map_err(|e| err(&dir, format!("cannot create it: {e}")))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| err(&dir, format!("cannot set mode 0700: {e}")))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| err(&dir, format!("not writable: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(err(
                    &dir,
                    "already in use by another certloop process (lock file .certloop.lock); give each \
                     listener its own cache directory"
                        .into(),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(err(&dir, format!("cannot lock: {e}"))),
        }
        let store = Self { dir, _lock: lock };
        store
            .write_atomic(".certloop.probe", b"writable\n")
            .map_err(|e| err(&store.dir, format!("not writable: {e}")))?;
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificate file's path for these domains and directory URL.
    pub fn cert_path(&self, domains: &[String], directory_url: &str) -> PathBuf {
        self.dir.join(cert_file_name(domains, directory_url))
    }

    /// Loads the cached certificate and retry state. A file that cannot be used is moved aside
    /// (never deleted), and the returned reason names both paths.
    pub fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> (CachedCert, Option<RetryState>) {
        let name = cert_file_name(domains, directory_url);
        let cert = match fs::read(self.dir.join(&name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => CachedCert::Missing,
            Err(e) => CachedCert::Unreadable {
                reason: self.set_aside(&name, &e.to_string()),
            },
            Ok(bytes) => match decode_cert_file(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|file| certified_key_from_bundle(&bytes).map(|_| file.info))
            {
                Ok(info) => CachedCert::Found(Certificate {
                    info,
                    bundle: CertBundle::new(bytes),
                }),
                Err(problem) => CachedCert::Unreadable {
                    reason: self.set_aside(&name, &problem),
                },
            },
        };
        let retry_name = format!("{name}.retry");
        let retry = match fs::read_to_string(self.dir.join(&retry_name)) {
            Err(_) => None,
            Ok(text) => match decode_retry_state(&text) {
                Ok(state) => Some(state),
                Err(e) => {
                    let reason = self.set_aside(&retry_name, &e.to_string());
                    tracing::warn!("retry state unusable: {reason}");
                    None
                }
            },
        };
        (cert, retry)
    }

    /// Writes a certificate file (key PEM, newline, chain PEM) atomically.
    pub fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        bytes: &[u8],
    ) -> Result<(), String> {
        let name = cert_file_name(domains, directory_url);
        self.write_atomic(&name, bytes)
            .map_err(|e| format!("{}: {e}", self.dir.join(name).display()))
    }

    /// Writes the retry-state sidecar atomically.
    pub fn store_retry(
        &self,
        domains: &[String],
        directory_url: &str,
        state: &RetryState,
    ) -> Result<(), String> {
        let name = format!("{}.retry", cert_file_name(domains, directory_url));
        self.write_atomic(&name, encode_retry_state(state).as_bytes())
            .map_err(|e| format!("{}: {e}", self.dir.join(name).display()))
    }

    /// Loads what is cached for an account: certloop's credentials sidecar and rustls-acme's
    /// key file.
    pub fn load_account(&self, contacts: &[String], directory_url: &str) -> CachedAccount {
        let name = account_file_name(contacts, directory_url);
        CachedAccount {
            credentials_json: fs::read(self.dir.join(format!("{name}.credentials.json"))).ok(),
            pkcs8_der: fs::read(self.dir.join(&name)).ok(),
        }
    }

    /// Stores an account: the credentials sidecar and the rustls-acme key file.
    pub fn store_account(
        &self,
        contacts: &[String],
        directory_url: &str,
        credentials_json: &[u8],
        pkcs8_der: &[u8],
    ) -> Result<(), String> {
        let name = account_file_name(contacts, directory_url);
        let write = |file: &str, bytes: &[u8]| {
            self.write_atomic(file, bytes)
                .map_err(|e| format!("{}: {e}", self.dir.join(file).display()))
        };
        write(&format!("{name}.credentials.json"), credentials_json)?;
        write(&name, pkcs8_der)
    }

    /// Moves an unusable file aside as `<name>.corrupt-<unix seconds>` and says so.
    fn set_aside(&self, name: &str, problem: &str) -> String {
        let from = self.dir.join(name);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let to = self.dir.join(format!("{name}.corrupt-{secs}"));
        match fs::rename(&from, &to) {
            Ok(()) => format!(
                "{}: {problem}; moved aside to {}",
                from.display(),
                to.display()
            ),
            Err(e) => format!(
                "{}: {problem}; could not move it aside: {e}",
                from.display()
            ),
        }
    }

    /// Temp file in the same directory (0600), write, fsync, rename over, fsync the directory.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, self.dir.join(name))?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("certloop-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_cached_key_that_does_not_match_its_certificate_is_set_aside() {
        let dir = temp_dir("mismatch");
        let store = DirStore::open(&dir).unwrap();
        let domains = vec!["a.example".to_owned()];
        let url = "https://ca.test/dir";
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(domains.clone())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let matching = crate::cache::encode_cert_file(&key.serialize_pem(), &cert.pem());
        store.store_cert(&domains, url, &matching).unwrap();
        assert!(matches!(
            store.load_cert(&domains, url).0,
            CachedCert::Found(_)
        ));
        let other_key = rcgen::KeyPair::generate().unwrap();
        let mismatched = crate::cache::encode_cert_file(&other_key.serialize_pem(), &cert.pem());
        store.store_cert(&domains, url, &mismatched).unwrap();
        let path = store.cert_path(&domains, url);
        let (cert, _) = store.load_cert(&domains, url);
        let CachedCert::Unreadable { reason } = cert else {
            panic!("a mismatched pair was loaded: {cert:?}")
        };
        assert!(
            reason.contains("does not match") && reason.contains(&path.display().to_string()),
            "{reason}"
        );
        assert!(!reason.contains("PRIVATE KEY"), "{reason}");
        assert!(!path.exists(), "set aside");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modes_lock_and_corrupt_files_set_aside() {
        let dir = temp_dir("modes");
        let store = DirStore::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let domains = vec!["a.example".to_owned()];
        store
            .store_cert(&domains, "https://ca.test/dir", b"not pem")
            .unwrap();
        let path = store.cert_path(&domains, "https://ca.test/dir");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let second = DirStore::open(&dir).unwrap_err();
        assert!(second.to_string().contains("already in use"), "{second}");

        let (cert, retry) = store.load_cert(&domains, "https://ca.test/dir");
        let CachedCert::Unreadable { reason } = cert else {
            panic!("{cert:?}")
        };
        assert!(
            reason.contains("moved aside") && reason.contains(&path.display().to_string()),
            "{reason}"
        );
        assert!(!path.exists(), "the corrupt file is no longer in place");
        let aside: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "kept, not deleted");
        assert!(retry.is_none());
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_directory_is_reported_with_its_path() {
        let err = DirStore::open("/proc/certloop-cannot-exist").unwrap_err();
        assert!(
            err.to_string().contains("/proc/certloop-cannot-exist"),
            "{err}"
        );
    }
}
