//! Confining the files a request may name: job inputs and outputs, savepoint targets and the
//! savepoints jobs start from must lie under configured base directories (or object-store
//! prefixes). A daemon reads and writes as its own user; without this, anyone allowed to
//! submit could read any file it can read and write anywhere it can write.

use std::path::{Component, Path, PathBuf};

/// A location a request named that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {location} is not allowed: {why}")]
pub struct PathRefused {
    /// What the location was for ("--output", "the savepoint target").
    pub what: String,
    /// The location as given.
    pub location: String,
    /// Why (outside the allowed paths, relative, `..`).
    pub why: String,
}

/// Where requests may name files. The default allows anything (a daemon on loopback for one
/// user); with base locations set, a location must be under one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// Local base directories, resolved (symbolic links followed) when the policy was made.
    dirs: Vec<PathBuf>,
    /// Object-store prefixes (`s3://bucket/prefix/`, with a trailing slash).
    urls: Vec<String>,
}

impl PathPolicy {
    /// Allows locations under `bases` (absolute directories, or `s3://bucket/prefix`); an
    /// empty list allows anything. A base directory that does not exist is an error: a typo
    /// would otherwise refuse everything, or, created later as a link, allow anything.
    pub fn new(bases: &[String]) -> Result<Self, crate::error::InvalidSetting> {
        let mut policy = PathPolicy::default();
        for b in bases {
            if b.contains("://") {
                policy.urls.push(format!("{}/", b.trim_end_matches('/')));
                continue;
            }
            let dir = std::fs::canonicalize(b).map_err(|e| {
                crate::error::InvalidSetting(format!(
                    "security.allowed-paths: {b}: {e} (it must be an existing directory)"
                ))
            })?;
            policy.dirs.push(dir);
        }
        Ok(policy)
    }

    /// Whether anything is allowed.
    pub fn is_open(&self) -> bool {
        self.dirs.is_empty() && self.urls.is_empty()
    }

    /// The base locations, as they are checked against.
    pub fn bases(&self) -> Vec<String> {
        let dirs = self.dirs.iter().map(|d| d.display().to_string());
        dirs.chain(self.urls.iter().cloned()).collect()
    }

    /// Checks `location`, given as `what`.
    pub fn check(&self, what: &str, location: &str) -> Result<(), PathRefused> {
        if self.is_open() {
            return Ok(());
        }
        let refuse = |why: String| PathRefused {
            what: what.to_string(),
            location: location.to_string(),
            why,
        };
        if location.contains("://") {
            let l = format!("{}/", location.trim_end_matches('/'));
            return match self.urls.iter().any(|u| l.starts_with(u.as_str())) && !l.contains("/../") {
                true => Ok(()),
                false => Err(refuse(format!(
                    "it is outside the allowed paths ({})",
                    self.bases().join(", ")
                ))),
            };
        }
        let path = Path::new(location);
        if !path.is_absolute() {
            return Err(refuse("a path must be absolute where paths are confined".into()));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(refuse("a path may not contain '..' where paths are confined".into()));
        }
        let Some(resolved) = resolve(path) else {
            return Err(refuse(
                "it goes through a symbolic link whose target does not exist".into(),
            ));
        };
        if self.dirs.iter().any(|d| resolved.starts_with(d)) {
            Ok(())
        } else {
            Err(refuse(format!(
                "it is outside the allowed paths ({})",
                self.bases().join(", ")
            )))
        }
    }
}

/// `path` with symbolic links resolved as far as it exists (the rest appended as given), so
/// a link inside an allowed directory that points out of it does not let a request out.
/// `None` for a path through a link whose target does not exist: where it would lead once
/// something is created there cannot be known now.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            return Some(rest.iter().rev().fold(real, |p, c: &std::ffi::OsString| p.join(c)));
        }
        if std::fs::symlink_metadata(&existing).is_ok() {
            // It exists but does not resolve: a dangling link (or a loop of them).
            return None;
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return Some(path.to_path_buf()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_locations_under_the_bases_pass() {
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), base.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("later"), base.path().join("dangling")).unwrap();
        let b = base.path().display().to_string();
        let p = PathPolicy::new(&[b.clone(), "s3://bucket/sluice".into()]).unwrap();
        assert!(p.check("--output", &format!("{b}/out/new.txt")).is_ok());
        assert!(p.check("target", "s3://bucket/sluice/sp-1").is_ok());
        for bad in [
            "/etc/passwd".to_string(),
            format!("{b}/../x"),
            format!("{b}/escape/file"),
            format!("{b}/dangling"),
            format!("{b}/dangling/x"),
            "relative/file".into(),
            "s3://bucket/sluicex/a".into(),
            "s3://other/sluice/a".into(),
        ] {
            let e = p.check("--input", &bad).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("--input {bad} is not allowed")),
                "{e}"
            );
        }
        assert!(PathPolicy::default().check("--input", "/etc/passwd").is_ok());
        assert!(PathPolicy::new(&["/no/such/dir".into()]).is_err());
    }
}
