//! An in-memory disk under the real `DirStore`, with the faults a real one has: writes that
//! fail (ENOSPC) or tear (a prefix lands, then the error), reads that fail (EIO), and crashes.
//! A crash keeps what was made durable: file contents are durable once fsynced (the store
//! fsyncs every file it creates), and names (creations, renames, removals) once the directory
//! is fsynced; of the name changes since the last directory fsync, a seeded prefix survives.
//! A crash can also be armed to happen at the next operation: every operation from then on
//! fails without effect, which puts a crash between any two steps of a write.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use certloop_acme::testing::{CacheFs, DirState, LockError, LockGuard};
use certloop_core::SplitMix64;

/// Fault rates, in parts per thousand of operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskFaults {
    /// A write fails with ENOSPC before anything lands.
    pub write_fails: u64,
    /// A write lands part of its bytes, then fails.
    pub write_tears: u64,
    /// A read fails with EIO.
    pub read_fails: u64,
    /// A rename fails (EIO).
    pub rename_fails: u64,
}

#[derive(Clone, Debug)]
enum NameChange {
    Create(String, Vec<u8>),
    Rename(String, String),
    Remove(String),
}

struct Disk {
    /// What a reader sees now.
    files: BTreeMap<String, Vec<u8>>,
    /// The names as of the last directory fsync.
    durable: BTreeMap<String, Vec<u8>>,
    /// Name changes since then, in order.
    pending: Vec<NameChange>,
    faults: DiskFaults,
    rng: SplitMix64,
    locked: bool,
    /// Set once an armed crash happened: every operation fails until [`MemFs::crash`].
    dead: bool,
    /// Operations until the armed crash.
    crash_in: Option<u64>,
    /// Read faults injected since the last crash.
    read_faults: u64,
    /// Write faults injected (failed or torn writes, failed renames), in total.
    write_faults: u64,
}

/// The simulated disk; cloning shares it.
#[derive(Clone)]
pub struct MemFs {
    dir: PathBuf,
    disk: Arc<Mutex<Disk>>,
}

fn io_error(raw: i32) -> io::Error {
    io::Error::from_raw_os_error(raw)
}

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

impl MemFs {
    /// An empty disk holding only `dir`.
    pub fn new(dir: impl Into<PathBuf>, faults: DiskFaults, seed: u64) -> Self {
        Self {
            dir: dir.into(),
            disk: Arc::new(Mutex::new(Disk {
                files: BTreeMap::new(),
                durable: BTreeMap::new(),
                pending: Vec::new(),
                faults,
                rng: SplitMix64::new(seed),
                locked: false,
                dead: false,
                crash_in: None,
                read_faults: 0,
                write_faults: 0,
            })),
        }
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn name(&self, path: &Path) -> io::Result<String> {
        match path.strip_prefix(&self.dir) {
            Ok(rest) => Ok(rest.to_string_lossy().into_owned()),
            Err(_) => Err(io_error(2)),
        }
    }

    /// Sets the fault rates (zero heals the disk).
    pub fn set_faults(&self, faults: DiskFaults) {
        self.disk().faults = faults;
    }

    /// Arms a crash at the `after`-th operation from now.
    pub fn arm_crash(&self, after: u64) {
        self.disk().crash_in = Some(after);
    }

    /// Disarms a crash that has not happened yet.
    pub fn disarm(&self) {
        self.disk().crash_in = None;
    }

    /// Whether an armed crash has happened (the process must be torn down).
    pub fn is_dead(&self) -> bool {
        self.disk().dead
    }

    /// The process crashed: keeps the durable names plus a seeded prefix of the changes since,
    /// releases the lock, and brings the disk back.
    pub fn crash(&self) {
        let mut disk = self.disk();
        let changes = disk.pending.len() as u64;
        let kept = disk.rng.up_to(changes) as usize;
        let mut files = disk.durable.clone();
        for change in disk.pending.iter().take(kept) {
            apply(&mut files, change);
        }
        disk.durable = files.clone();
        disk.files = files;
        disk.pending.clear();
        disk.locked = false;
        disk.dead = false;
        disk.crash_in = None;
        disk.read_faults = 0;
    }

    /// The files a reader sees now, by name.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.disk().files.clone()
    }

    /// Read faults injected since the last crash.
    pub fn read_faults(&self) -> u64 {
        self.disk().read_faults
    }

    /// Write faults injected in total.
    pub fn write_faults(&self) -> u64 {
        self.disk().write_faults
    }

    /// Counts one operation against an armed crash; `Err` once the process is dead.
    fn operate(disk: &mut Disk) -> io::Result<()> {
        if let Some(left) = disk.crash_in.as_mut() {
            if *left == 0 {
                disk.crash_in = None;
                disk.dead = true;
            } else {
                *left -= 1;
            }
        }
        if disk.dead {
            return Err(io::Error::other("the process has crashed"));
        }
        Ok(())
    }

    fn change(disk: &mut Disk, change: NameChange) {
        apply(&mut disk.files, &change);
        disk.pending.push(change);
    }
}

fn apply(files: &mut BTreeMap<String, Vec<u8>>, change: &NameChange) {
    match change {
        NameChange::Create(name, bytes) => {
            files.insert(name.clone(), bytes.clone());
        }
        NameChange::Rename(from, to) => {
            if let Some(bytes) = files.remove(from) {
                files.insert(to.clone(), bytes);
            }
        }
        NameChange::Remove(name) => {
            files.remove(name);
        }
    }
}

struct MemLock(Arc<Mutex<Disk>>);

impl Drop for MemLock {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).locked = false;
    }
}

impl CacheFs for MemFs {
    fn ensure_dir(&self, dir: &Path) -> io::Result<DirState> {
        let mut disk = self.disk();
        Self::operate(&mut disk)?;
        if dir == self.dir {
            Ok(DirState::Existing { mode: 0o700 })
        } else {
            Err(io_error(13))
        }
    }

    fn lock(&self, lock_file: &Path) -> Result<LockGuard, LockError> {
        let mut disk = self.disk();
        Self::operate(&mut disk).map_err(LockError::Io)?;
        let name = self.name(lock_file).map_err(LockError::Io)?;
        if disk.locked {
            return Err(LockError::Busy);
        }
        if !disk.files.contains_key(&name) {
            Self::change(&mut disk, NameChange::Create(name, Vec::new()));
        }
        disk.locked = true;
        Ok(Box::new(MemLock(self.disk.clone())))
    }

    fn list(&self, _dir: &Path) -> io::Result<Vec<String>> {
        let mut disk = self.disk();
        Self::operate(&mut disk)?;
        Ok(disk.files.keys().cloned().collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut disk = self.disk();
        Self::operate(&mut disk)?;
        let name = self.name(path)?;
        let Some(bytes) = disk.files.get(&name).cloned() else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let rate = disk.faults.read_fails;
        if disk.rng.chance(rate, 1000) {
            disk.read_faults += 1;
            return Err(io_error(EIO));
        }
        Ok(bytes)
    }

    fn create_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        Self::operate(&mut disk)?;
        let name = self.name(path)?;
        if disk.files.contains_key(&name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let DiskFaults {
            write_fails,
            write_tears,
            ..
        } = disk.faults;
        if disk.rng.chance(write_fails, 1000) {
            disk.write_faults += 1;
            return Err(io_error(ENOSPC));
        }
        if disk.rng.chance(write_tears, 1000) {
            disk.write_faults += 1;
            let cut = disk.rng.up_to(bytes.len() as u64) as usize;
            Self::change(&mut disk, NameChange::Create(name, bytes[..cut].to_vec()));
            return Err(io_error(ENOSPC));
        }
        Self::change(&mut disk, NameChange::Create(name, bytes.to_vec()));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        Self::operate(&mut disk)?;
        let (from, to) = (self.name(from)?, self.name(to)?);
        if !disk.files.contains_key(&from) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let rate = disk.faults.rename_fails;
        if disk.rng.chance(rate, 1000) {
            disk.write_faults += 1;
            return Err(io_error(EIO));
        }
        Self::change(&mut disk, NameChange::Rename(from, to));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        Self::operate(&mut disk)?;
        let name = self.name(path)?;
        if !disk.files.contains_key(&name) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Self::change(&mut disk, NameChange::Remove(name));
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        Self::operate(&mut disk)?;
        disk.durable = disk.files.clone();
        disk.pending.clear();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let disk = self.disk();
        self.name(path)
            .is_ok_and(|name| disk.files.contains_key(&name))
    }

    fn pause_before_retry(&self) {}
}
