//! What `certloop check` verifies on this machine beyond the file itself: that every
//! directory and file certloop will write can be written. Parsing already read the files it
//! names (certificates, keys, CA roots); this finds the rest of what would stop a start,
//! without the network and without writing anything.

use std::path::Path;

use rustix::fs::Access;

use crate::config::{Config, TlsMode};

/// Every problem found, each naming the setting and the path.
pub(crate) fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for listener in &config.listeners {
        if let TlsMode::Acme(acme) = &listener.tls
            && let Err(e) = creatable_dir(acme.cache_dir())
        {
            problems.push(format!(
                "listener {}: cache directory {}: {e}",
                listener.name,
                acme.cache_dir().display()
            ));
        }
    }
    if let Some(path) = config.access_log.as_ref().and_then(|a| a.path.as_deref())
        && let Err(e) = writable_file(path)
    {
        problems.push(format!("access_log.path {}: {e}", path.display()));
    }
    problems
}

/// A directory that exists and can be written, or can be created.
fn creatable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().ok_or("no existing parent")?;
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    writable(existing)
}

/// A file that exists and can be written, or whose directory exists and can be written.
fn writable_file(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("is a directory".to_owned());
    }
    if path.exists() {
        return writable(path);
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!("{} is not a directory", parent.display()));
    }
    writable(parent)
}

fn writable(path: &Path) -> Result<(), String> {
    rustix::fs::access(path, Access::WRITE_OK)
        .map_err(|e| format!("{} cannot be written: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_places_are_named() {
        let dir = std::env::temp_dir().join(format!("certloop-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain-file");
        std::fs::write(&file, "x").unwrap();
        assert!(creatable_dir(&dir.join("new/deeper")).is_ok());
        let under_file = creatable_dir(&file.join("cache")).unwrap_err();
        assert!(
            under_file.contains("plain-file is not a directory"),
            "{under_file}"
        );
        assert!(writable_file(&dir.join("access.log")).is_ok());
        assert!(writable_file(&dir).unwrap_err().contains("is a directory"));
        let missing = writable_file(&dir.join("missing/access.log")).unwrap_err();
        assert!(missing.contains("missing is not a directory"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_configuration_with_an_impossible_cache_directory_fails_the_check() {
        let text = "[access_log]\npath = \"/nonexistent-certloop/access.log\"\n\
                    [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8443\"\n\
                    upstream = \"http://127.0.0.1:8080\"\ntls_mode = \"acme\"\n\
                    acme_domains = [\"example.com\"]\nacme_cache_dir = \"/dev/null/cache\"\n";
        let config = crate::config::parse(Path::new("/etc/certloop.toml"), text).unwrap();
        let problems = problems(&config);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "listener web: cache directory /dev/null/cache: /dev/null is not a directory"
            ),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("access_log.path /nonexistent-certloop/access.log"),
            "{problems:?}"
        );
    }
}
