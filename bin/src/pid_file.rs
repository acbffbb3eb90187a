//! `state_dir/certloop.pid`: written once certloop runs, removed when it exits, read by
//! `certloop reload` to find the process to signal.

use std::path::{Path, PathBuf};

const NAME: &str = "certloop.pid";

/// The pid file of this process; removed on drop.
pub(crate) struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's id (atomically: a temporary file renamed over it). A failure is
    /// logged, not fatal: only `certloop reload` needs the file.
    pub(crate) fn write(state_dir: &Path) -> Option<Self> {
        let path = state_dir.join(NAME);
        let temp = state_dir.join(format!(".{NAME}.{}", std::process::id()));
        let written = std::fs::create_dir_all(state_dir)
            .and_then(|()| std::fs::write(&temp, format!("{}\n", std::process::id())))
            .and_then(|()| std::fs::rename(&temp, &path));
        match written {
            Ok(()) => Some(Self(path)),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                tracing::warn!(
                    "cannot write {}: {e}; `certloop reload` will not find this process (send SIGHUP instead)",
                    path.display()
                );
                None
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a newer process may have replaced it.
        if read(self.0.parent().unwrap_or(Path::new("."))) == Ok(std::process::id()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The process id in `state_dir`'s pid file, or why there is none.
pub(crate) fn read(state_dir: &Path) -> Result<u32, String> {
    let path = state_dir.join(NAME);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no running certloop found: cannot read {}: {e}",
            path.display()
        )
    })?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: not a process id: {:?}", path.display(), text.trim()))
}

/// Sends SIGHUP to the certloop process whose id is in `state_dir`'s pid file, after
/// checking that the process is a certloop (a stale file may name a reused id).
pub(crate) fn signal_reload(state_dir: &Path) -> Result<u32, String> {
    let pid = read(state_dir)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|_| {
        format!(
            "no process {pid} (a stale pid file in {})",
            state_dir.display()
        )
    })?;
    if !String::from_utf8_lossy(&cmdline).contains("certloop") {
        return Err(format!(
            "process {pid} is not certloop (a stale pid file in {})",
            state_dir.display()
        ));
    }
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("{pid} is not a process id"))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .map_err(|e| format!("cannot signal process {pid}: {e}"))?;
    Ok(pid)
}
