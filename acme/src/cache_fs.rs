//! The file operations the cache directory is made of, behind a trait so that the simulator
//! can put a disk with injected faults (failed and torn writes, read errors, a crash between
//! write and rename) under the real [`crate::store::DirStore`]. [`StdFs`] is the one real disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// What [`CacheFs::ensure_dir`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirState {
    /// The directory did not exist and was created with mode 0700.
    Created,
    /// The directory existed, with this mode (it is left as it is).
    Existing {
        /// Permission bits.
        mode: u32,
    },
}

/// Why the directory's lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Busy,
    /// The lock file cannot be opened or locked.
    Io(io::Error),
}

/// Held for as long as the directory is locked.
pub type LockGuard = Box<dyn Send + Sync>;

/// The operations the store makes. Blocking: adapters run them on their blocking pool.
pub trait CacheFs: Send + Sync + 'static {
    /// Creates `dir` with mode 0700 if it is missing. An error if it exists and is not a
    /// directory.
    fn ensure_dir(&self, dir: &Path) -> io::Result<DirState>;

    /// Takes the exclusive advisory lock of `lock_file`, creating it (0600) if it is missing.
    /// Without write access, an existing lock file is locked through a read-only open.
    fn lock(&self, lock_file: &Path) -> Result<LockGuard, LockError>;

    /// The names in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Creates `path`, which must not exist, with mode 0600, writes `bytes` and fsyncs it.
    fn create_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;

    /// Renames `from` over `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Fsyncs the directory, making the renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;

    /// Waits before a failed read is tried again.
    fn pause_before_retry(&self);
}

/// The real disk, through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

/// How long a failed read waits before it is tried again (EMFILE, EIO may pass).
const READ_RETRY_PAUSE: Duration = Duration::from_millis(50);

impl CacheFs for StdFs {
    fn ensure_dir(&self, dir: &Path) -> io::Result<DirState> {
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(DirState::Existing {
                mode: meta.permissions().mode() & 0o777,
            }),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            )),
            Err(_) => {
                fs::create_dir_all(dir)?;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
                Ok(DirState::Created)
            }
        }
    }

    fn lock(&self, lock_file: &Path) -> Result<LockGuard, LockError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(lock_file)
            .or_else(|e| match e.kind() {
                // A read-only directory: an existing lock file still locks.
                io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                    File::open(lock_file).map_err(|_| e)
                }
                _ => Err(e),
            })
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(fs::TryLockError::WouldBlock) => Err(LockError::Busy),
            Err(fs::TryLockError::Error(e)) => Err(LockError::Io(e)),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn pause_before_retry(&self) {
        std::thread::sleep(READ_RETRY_PAUSE);
    }
}
