//! The cache directory on disk: rustls-acme compatible names and contents, but written
//! atomically (temp file, fsync, rename, fsync of the directory), mode 0600 in a 0700
//! directory, corrupt files moved aside rather than deleted, and one process per directory
//! (an advisory lock).
//!
//! Blocking file operations (through [`CacheFs`]): adapters run them on their blocking pool.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use certloop_core::{CachedCert, Certificate, RetryState};

use crate::cache::{account_file_name, cert_file_name, decode_retry_state, encode_retry_state};
use crate::cache_fs::{CacheFs, DirState, LockError, LockGuard, StdFs};
use crate::prepared::{PreparedCert, prepare};

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
pub struct DirStore {
    dir: PathBuf,
    fs: Arc<dyn CacheFs>,
    /// Held for the life of the store: the advisory lock.
    _lock: LockGuard,
    /// Makes every temp file name unique within the process.
    temp_counter: AtomicU64,
    /// The next [`WriteOrder`] to hand out.
    next_order: AtomicU64,
    /// Per file, the order of the newest write that landed. Held while writing, so writes of
    /// one file never interleave and an older one never lands over a newer one.
    landed: Mutex<HashMap<String, u64>>,
    /// The files in the directory when it was opened (`None` if it could not be listed): a
    /// certificate loaded at launch whose files are not listed is known to be missing without
    /// an `open` (ten thousand certificates would otherwise cost twenty thousand).
    listed_at_open: Option<HashSet<String>>,
}

/// The place of a write in the order writes were decided, taken when the write is decided
/// (before it is handed to a blocking thread, where writes may run in any order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteOrder(u64);

/// Whether a name is one of our temp files (`.<name>.tmp-<pid>-<n>`), which a crash can leave.
fn is_temp_file(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// What the cache holds for an account.
#[derive(Default)]
pub struct CachedAccount {
    /// instant-acme's serialised credentials (certloop's sidecar).
    pub credentials_json: Option<Vec<u8>>,
    /// rustls-acme's account file: the PKCS#8 DER key.
    pub pkcs8_der: Option<Vec<u8>>,
}

impl fmt::Debug for DirStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl DirStore {
    /// Creates (mode 0700) and locks `dir` on the real disk. A second process pointed at the
    /// same directory gets a clear error instead of corrupting it. A directory that cannot be
    /// written is used read-only, with a warning: what is cached there is served, and every
    /// write that fails is reported and retried.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(dir, Arc::new(StdFs))
    }

    /// [`Self::open`] on the disk `fs` (the simulator's, with injected faults).
    pub fn open_with(dir: impl Into<PathBuf>, fs: Arc<dyn CacheFs>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let err = |path: &Path, problem: String| StoreError {
            path: path.to_owned(),
            problem,
        };
        match fs.ensure_dir(&dir) {
            // An existing directory keeps the mode its owner gave it.
            Ok(DirState::Existing { mode }) if mode & 0o077 != 0 => tracing::warn!(
                "cache directory {} has mode {mode:o}: other users may be able to list it; \
                 chmod 700 it (key files inside are 0600 regardless)",
                dir.display()
            ),
            Ok(_) => {}
            Err(e) => return Err(err(&dir, format!("cannot create it: {e}"))),
        }
        let lock = match fs.lock(&dir.join(LOCK_FILE)) {
            Ok(lock) => lock,
            Err(LockError::Busy) => {
                return Err(err(
                    &dir,
                    "already in use by another certloop process (lock file .certloop.lock); give each \
                     listener its own cache directory"
                        .into(),
                ));
            }
            Err(LockError::Io(e)) => {
                return Err(err(&dir, format!("cannot create or lock {LOCK_FILE}: {e}")));
            }
        };
        let mut store = Self {
            dir,
            fs,
            _lock: lock,
            temp_counter: AtomicU64::new(0),
            next_order: AtomicU64::new(0),
            landed: Mutex::new(HashMap::new()),
            listed_at_open: None,
        };
        store.listed_at_open = store.remove_crash_leftovers();
        let probe = store.next_write();
        if let Err(e) = store.write_atomic(".certloop.probe", b"writable\n", probe) {
            tracing::warn!(
                "cache directory {} is not writable ({e}): certificates cached there are served, \
                 but a new one cannot be kept and a restart will order it again",
                store.dir.display()
            );
        }
        Ok(store)
    }

    /// Temp files a crash left between write and rename hold key material: remove them. The
    /// lock is held, so no other process is writing here. Returns the other files' names.
    fn remove_crash_leftovers(&self) -> Option<HashSet<String>> {
        let names = self.fs.list(&self.dir).ok()?;
        let (leftovers, kept): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|n| is_temp_file(n));
        for name in leftovers {
            let path = self.dir.join(&name);
            match self.fs.remove(&path) {
                Ok(()) => tracing::info!("removed {} left by an interrupted write", path.display()),
                Err(e) => tracing::warn!(
                    "cannot remove {} left by an interrupted write: {e}",
                    path.display()
                ),
            }
        }
        let _ = self.fs.sync_dir(&self.dir);
        Some(kept.into_iter().collect())
    }

    /// `true` when `name` was not in the directory at open and this process has not written
    /// it since.
    fn absent_since_open(&self, name: &str) -> bool {
        self.listed_at_open
            .as_ref()
            .is_some_and(|listed| !listed.contains(name))
            && !(self.landed.lock().unwrap_or_else(|e| e.into_inner())).contains_key(name)
    }

    /// Reads `name` at launch: not found at once when the listing taken at open says so.
    fn read_at_launch(&self, name: &str) -> io::Result<Vec<u8>> {
        if self.absent_since_open(name) {
            return Err(io::ErrorKind::NotFound.into());
        }
        self.read_retrying(&self.dir.join(name))
    }

    /// The order of a write decided now: pass it to the write when it runs.
    pub fn next_write(&self) -> WriteOrder {
        WriteOrder(self.next_order.fetch_add(1, Ordering::Relaxed))
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
        let (cert, retry, _) = self.load(domains, directory_url, false);
        (cert, retry)
    }

    fn load(
        &self,
        domains: &[String],
        directory_url: &str,
        at_launch: bool,
    ) -> (CachedCert, Option<RetryState>, Option<PreparedCert>) {
        let read = |name: &str| {
            if at_launch {
                self.read_at_launch(name)
            } else {
                self.read_retrying(&self.dir.join(name))
            }
        };
        let name = cert_file_name(domains, directory_url);
        let mut prepared = None;
        let cert = match read(&name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => CachedCert::Missing,
            // The file may be fine (EMFILE, EIO, EACCES): leave it where it is.
            Err(e) => CachedCert::Unreadable {
                reason: format!(
                    "{}: cannot be read: {e}; left in place",
                    self.dir.join(&name).display()
                ),
            },
            Ok(bytes) => match prepare(bytes) {
                Ok((info, ready)) => {
                    let bundle = ready.bundle.clone();
                    prepared = Some(ready);
                    CachedCert::Found(Certificate { info, bundle })
                }
                Err(problem) => CachedCert::Unreadable {
                    reason: self.set_aside(&name, &problem),
                },
            },
        };
        let retry_name = format!("{name}.retry");
        let retry = match read(&retry_name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(
                    "{}: cannot be read: {e}; left in place, and the CA's backoff it records is \
                     not honoured this time",
                    self.dir.join(&retry_name).display()
                );
                None
            }
            Ok(bytes) => match decode_retry_state(&String::from_utf8_lossy(&bytes)) {
                Ok(state) => Some(state),
                Err(e) => {
                    let reason = self.set_aside(&retry_name, &e.to_string());
                    tracing::warn!("retry state unusable: {reason}");
                    None
                }
            },
        };
        (cert, retry, prepared)
    }

    /// [`DirStore::load_cert`], with the found certificate ready to serve, for a certificate
    /// ordered from one or more CAs, each caching under its own directory URL
    /// (`directory_urls`, in order of preference): the newest certificate found, with the index
    /// of the CA whose file held it, and the retry state, which the preferred CA's file keeps.
    /// Meant for launch: files missing when the directory was opened are not looked for again.
    pub(crate) fn load_prepared_cert_from(
        &self,
        domains: &[String],
        directory_urls: &[String],
    ) -> (CachedCert, Option<RetryState>, Option<PreparedCert>, usize) {
        let (mut cert, retry, mut prepared) = self.load(domains, &directory_urls[0], true);
        let mut issuer = 0;
        for (i, url) in directory_urls.iter().enumerate().skip(1) {
            let (other, _, other_prepared) = self.load(domains, url, true);
            let newer = match (&other, &cert) {
                (CachedCert::Found(o), CachedCert::Found(c)) => o.info.not_after > c.info.not_after,
                (CachedCert::Found(_), _) => true,
                _ => false,
            };
            if newer {
                (cert, prepared, issuer) = (other, other_prepared, i);
            }
        }
        (cert, retry, prepared, issuer)
    }

    /// Writes a certificate file (key PEM, newline, chain PEM) atomically, unless a write
    /// decided after `order` already landed.
    pub fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        bytes: &[u8],
        order: WriteOrder,
    ) -> Result<(), String> {
        let name = cert_file_name(domains, directory_url);
        self.write_atomic(&name, bytes, order)
            .map_err(|e| format!("{}: {e}", self.dir.join(name).display()))
    }

    /// Writes the retry-state sidecar atomically, unless a write decided after `order`
    /// already landed.
    pub fn store_retry(
        &self,
        domains: &[String],
        directory_url: &str,
        state: &RetryState,
        order: WriteOrder,
    ) -> Result<(), String> {
        let name = format!("{}.retry", cert_file_name(domains, directory_url));
        self.write_atomic(&name, encode_retry_state(state).as_bytes(), order)
            .map_err(|e| format!("{}: {e}", self.dir.join(name).display()))
    }

    /// Records an order that was finalized but whose certificate is not collected yet: its URL
    /// and the private key of its CSR (0600, like the certificate file). The next attempt
    /// polls this order instead of placing a new one.
    pub fn store_pending_order(
        &self,
        domains: &[String],
        directory_url: &str,
        order_url: &str,
        key_pem: &str,
    ) -> Result<(), String> {
        let name = format!("{}.pending-order", cert_file_name(domains, directory_url));
        let json = serde_json::json!({ "order_url": order_url, "key_pem": key_pem });
        let order = self.next_write();
        self.write_atomic(&name, json.to_string().as_bytes(), order)
            .map_err(|e| format!("{}: {e}", self.dir.join(name).display()))
    }

    /// The pending order recorded by [`Self::store_pending_order`]: `(order URL, key PEM)`. A
    /// record that does not decode is set aside; one that cannot be read is an error (placing
    /// a new order instead could get a duplicate certificate).
    pub fn load_pending_order(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<(String, String)>, String> {
        let name = format!("{}.pending-order", cert_file_name(domains, directory_url));
        let bytes = match self.read_retrying(&self.dir.join(&name)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "{}: cannot be read: {e}; left in place",
                    self.dir.join(&name).display()
                ));
            }
        };
        let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                Some((
                    v.get("order_url")?.as_str()?.to_owned(),
                    v.get("key_pem")?.as_str()?.to_owned(),
                ))
            });
        if parsed.is_none() {
            let reason = self.set_aside(&name, "not a pending-order record");
            tracing::warn!("{reason}");
        }
        Ok(parsed)
    }

    /// Removes the pending-order records that no certificate in `configured` (for
    /// `directory_url`) will ever read: its names or its CA changed since the record was made.
    /// Each holds the private key of an order this configuration never collects, so it does not
    /// stay behind; if the old configuration comes back, it orders anew.
    pub fn remove_orphaned_pending_orders(
        &self,
        configured: &[Vec<String>],
        directory_urls: &[String],
    ) {
        let names = match self.fs.list(&self.dir) {
            Ok(names) => names,
            Err(e) => {
                let dir = self.dir.display();
                return tracing::warn!("cannot list {dir} for stale pending-order records: {e}");
            }
        };
        let wanted: HashSet<String> = (configured.iter())
            .flat_map(|domains| {
                (directory_urls.iter())
                    .map(|url| format!("{}.pending-order", cert_file_name(domains, url)))
            })
            .collect();
        let orphans =
            (names.into_iter()).filter(|n| n.ends_with(".pending-order") && !wanted.contains(n));
        let mut removed = false;
        for name in orphans {
            let path = self.dir.join(&name);
            match self.fs.remove(&path) {
                Ok(()) => {
                    removed = true;
                    tracing::info!(
                        "removed {}: no configured certificate of this CA collects that order",
                        path.display()
                    );
                }
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
        if removed {
            let _ = self.fs.sync_dir(&self.dir);
        }
    }

    /// Forgets the pending order (its certificate was collected, or the order is gone).
    pub fn clear_pending_order(&self, domains: &[String], directory_url: &str) {
        let name = format!("{}.pending-order", cert_file_name(domains, directory_url));
        let mut landed = self.landed.lock().unwrap_or_else(|e| e.into_inner());
        match self.fs.remove(&self.dir.join(&name)) {
            Ok(()) => {
                landed.remove(&name);
                let _ = self.fs.sync_dir(&self.dir);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", self.dir.join(name).display()),
        }
    }

    /// Loads what is cached for an account: certloop's credentials sidecar and rustls-acme's
    /// key file.
    /// A file that exists but cannot be read is an error, never "no account": registering a
    /// new account would replace the key of the one that exists (and use up a one-time EAB
    /// key).
    pub fn load_account(
        &self,
        contacts: &[String],
        directory_url: &str,
    ) -> Result<CachedAccount, String> {
        let name = account_file_name(contacts, directory_url);
        let read = |file: &str| match self.read_retrying(&self.dir.join(file)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "{}: cannot be read: {e}; left in place",
                self.dir.join(file).display()
            )),
        };
        Ok(CachedAccount {
            credentials_json: read(&format!("{name}.credentials.json"))?,
            pkcs8_der: read(&name)?,
        })
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
        let order = self.next_write();
        let write = |file: &str, bytes: &[u8]| {
            self.write_atomic(file, bytes, order)
                .map_err(|e| format!("{}: {e}", self.dir.join(file).display()))
        };
        write(&format!("{name}.credentials.json"), credentials_json)?;
        write(&name, pkcs8_der)
    }

    /// Copies the account's current files aside (`<name>.previous` and
    /// `<name>.previous.credentials.json`, 0600) before its key is rolled over.
    pub(crate) fn keep_previous_account(
        &self,
        contacts: &[String],
        directory_url: &str,
    ) -> Result<(), String> {
        let name = account_file_name(contacts, directory_url);
        let current = self.load_account(contacts, directory_url)?;
        let order = self.next_write();
        for (suffix, bytes) in [
            ("", current.pkcs8_der),
            (".credentials.json", current.credentials_json),
        ] {
            let Some(bytes) = bytes else { continue };
            let file = format!("{name}.previous{suffix}");
            self.write_atomic(&file, &bytes, order)
                .map_err(|e| format!("{}: {e}", self.dir.join(&file).display()))?;
        }
        Ok(())
    }

    /// Removes the copy [`DirStore::keep_previous_account`] made, once the new key is
    /// confirmed.
    pub(crate) fn drop_previous_account(&self, contacts: &[String], directory_url: &str) {
        let name = account_file_name(contacts, directory_url);
        for suffix in ["", ".credentials.json"] {
            let path = self.dir.join(format!("{name}.previous{suffix}"));
            if let Err(e) = self.fs.remove(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
        let _ = self.fs.sync_dir(&self.dir);
    }

    /// Moves an unusable file aside as `<name>.corrupt-<unix seconds>` (plus `-<n>` when that
    /// name is taken) and says so.
    fn set_aside(&self, name: &str, problem: &str) -> String {
        self.move_aside(name, "corrupt", problem)
    }

    /// Moves a revoked certificate's file aside as `<name>.revoked-<unix seconds>`, so that no
    /// later start serves it; the running process serves it until its replacement is
    /// installed (which is then written under the usual name).
    pub(crate) fn set_aside_revoked(&self, domains: &[String], directory_url: &str) -> String {
        let name = cert_file_name(domains, directory_url);
        self.move_aside(&name, "revoked", "revoked at the CA")
    }

    /// Renames `name` to `<name>.<label>-<unix seconds>` and says so.
    fn move_aside(&self, name: &str, label: &str, problem: &str) -> String {
        let from = self.dir.join(name);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Never over an earlier set-aside file (two in one second would share a name).
        let to = (0..)
            .map(|n| match n {
                0 => self.dir.join(format!("{name}.{label}-{secs}")),
                n => self.dir.join(format!("{name}.{label}-{secs}-{n}")),
            })
            .find(|candidate| !self.fs.exists(candidate))
            .expect("an unused name");
        match (self.fs.rename(&from, &to)).and_then(|()| self.fs.sync_dir(&self.dir)) {
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

    /// Temp file in the same directory (0600, a unique name), write, fsync, rename over, fsync
    /// the directory. Writes of one file are serialised; one decided before a write that
    /// already landed is skipped, so the newest decision always wins.
    fn write_atomic(&self, name: &str, bytes: &[u8], order: WriteOrder) -> io::Result<()> {
        let mut landed = self.landed.lock().unwrap_or_else(|e| e.into_inner());
        if landed.get(name).is_some_and(|newest| *newest > order.0) {
            return Ok(());
        }
        let unique = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{name}.tmp-{}-{unique}", std::process::id()));
        let result = (self.fs.create_synced(&tmp, bytes))
            .and_then(|()| self.fs.rename(&tmp, &self.dir.join(name)))
            .and_then(|()| self.fs.sync_dir(&self.dir));
        match result {
            Ok(()) => {
                landed.insert(name.to_owned(), order.0);
            }
            Err(_) => {
                let _ = self.fs.remove(&tmp);
            }
        }
        result
    }

    /// Reads a file, trying again twice after a short pause when the error may pass (anything
    /// but "not found").
    fn read_retrying(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            match self.fs.read(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound && attempt < 2 => {
                    attempt += 1;
                    self.fs.pause_before_retry();
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("certloop-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn pending_orders_of_certificates_no_longer_configured_are_removed() {
        let dir = temp_dir("orphans");
        let store = DirStore::open(&dir).unwrap();
        let (url, other_ca) = ("https://ca.test/dir", "https://other.test/dir");
        let kept = vec!["kept.example".to_owned()];
        let renamed = vec!["old-name.example".to_owned()];
        for (domains, ca) in [(&kept, url), (&renamed, url), (&kept, other_ca)] {
            store
                .store_pending_order(domains, ca, "https://ca.test/order/1", "KEY")
                .unwrap();
        }
        store.remove_orphaned_pending_orders(std::slice::from_ref(&kept), &[url.to_owned()]);
        let pending: Vec<String> = (fs::read_dir(&dir).unwrap())
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".pending-order"))
            .collect();
        assert_eq!(
            pending,
            [format!("{}.pending-order", cert_file_name(&kept, url))]
        );
        assert!(store.load_pending_order(&kept, url).unwrap().is_some());
        fs::remove_dir_all(&dir).unwrap();
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
        store
            .store_cert(&domains, url, &matching, store.next_write())
            .unwrap();
        assert!(matches!(
            store.load_cert(&domains, url).0,
            CachedCert::Found(_)
        ));
        let other_key = rcgen::KeyPair::generate().unwrap();
        let mismatched = crate::cache::encode_cert_file(&other_key.serialize_pem(), &cert.pem());
        store
            .store_cert(&domains, url, &mismatched, store.next_write())
            .unwrap();
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
    fn writes_land_in_the_order_they_were_decided_and_leftovers_are_removed_at_open() {
        let dir = temp_dir("order");
        let store = DirStore::open(&dir).unwrap();
        let domains = vec!["a.example".to_owned()];
        let url = "https://ca.test/dir";
        let (older, newer) = (store.next_write(), store.next_write());
        store.store_cert(&domains, url, b"newer", newer).unwrap();
        store.store_cert(&domains, url, b"older", older).unwrap();
        let path = store.cert_path(&domains, url);
        assert_eq!(
            fs::read(&path).unwrap(),
            b"newer",
            "an older write landed last"
        );
        // Concurrent writes of one file use distinct temp files and all succeed.
        let store = Arc::new(store);
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (store, domains) = (store.clone(), domains.clone());
                std::thread::spawn(move || {
                    let order = store.next_write();
                    store.store_cert(&domains, url, format!("w{i}").as_bytes(), order)
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
        drop(store);
        // A crash between write and rename leaves a temp file: the next open removes it.
        fs::write(dir.join(".cached_cert_x.tmp-123-4"), b"key material").unwrap();
        let store = DirStore::open(&dir).unwrap();
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_temp_file(n))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_account_file_that_cannot_be_read_is_an_error_not_a_missing_account() {
        let dir = temp_dir("account-read");
        let store = DirStore::open(&dir).unwrap();
        let contacts = vec!["mailto:a@example.com".to_owned()];
        let url = "https://ca.test/dir";
        let empty = store.load_account(&contacts, url).unwrap();
        assert!(empty.credentials_json.is_none() && empty.pkcs8_der.is_none());
        // A directory where the key file should be: EISDIR, like EACCES or EIO would be.
        fs::create_dir(dir.join(account_file_name(&contacts, url))).unwrap();
        // (No `Debug` on `CachedAccount`: it holds the account key.)
        let Err(error) = store.load_account(&contacts, url) else {
            panic!("an unreadable account file was taken for a missing one");
        };
        assert!(
            error.contains("cannot be read") && error.contains("left in place"),
            "{error}"
        );
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_existing_directory_keeps_its_mode_and_a_read_error_sets_nothing_aside() {
        let dir = temp_dir("keeps-mode");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        let store = DirStore::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o750
        );
        // A cached "file" that cannot be read (here a directory: EISDIR) stays where it is.
        let domains = vec!["a.example".to_owned()];
        let url = "https://ca.test/dir";
        let path = store.cert_path(&domains, url);
        fs::create_dir(&path).unwrap();
        let (cert, _) = store.load_cert(&domains, url);
        let CachedCert::Unreadable { reason } = cert else {
            panic!("{cert:?}")
        };
        assert!(reason.contains("left in place"), "{reason}");
        assert!(path.exists(), "not moved aside");
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
            .store_cert(
                &domains,
                "https://ca.test/dir",
                b"not pem",
                store.next_write(),
            )
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
        // A second bad file within the same second is kept too, next to the first.
        store
            .store_cert(
                &domains,
                "https://ca.test/dir",
                b"not pem either",
                store.next_write(),
            )
            .unwrap();
        let _ = store.load_cert(&domains, "https://ca.test/dir");
        let aside = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".corrupt-"))
            .count();
        assert_eq!(aside, 2, "the first set-aside file was overwritten");
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
