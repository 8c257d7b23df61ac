//! `sluice savepoint list|inspect|dispose`: the savepoint archive, read from disk (or S3).

use std::fmt::Write as _;
use std::path::Path;

use sluice_core::checkpoint::savepoint::{dispose_savepoint, list_savepoints, load_savepoint};
use sluice_core::checkpoint::CheckpointMetadata;
use sluice_core::state::KeyGroupRange;

use crate::error::HarnessError;
use crate::settings::{open_savepoint, open_store};

/// `2026-11-25T18:30:00.123Z` for ms since the epoch.
pub fn format_epoch_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

fn damaged(path: &Path, source: sluice_core::error::CheckpointError) -> HarnessError {
    HarnessError::Savepoint {
        path: path.display().to_string(),
        source,
    }
}

fn bad(path: &Path, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::BadOption(format!("{}: {e}", path.display()))
}

/// A description of one savepoint: the job, the checkpoint it came from, when, and every
/// operator's state with its key groups, sizes and checksums.
pub fn describe(path: &str, m: &CheckpointMetadata) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "savepoint {path}");
    let _ = writeln!(s, "  job: {}", m.job_name);
    let _ = writeln!(s, "  from checkpoint: {}", m.checkpoint_id);
    let _ = writeln!(s, "  created at: {}", format_epoch_ms(m.completed_at_ms));
    let _ = writeln!(s, "  max parallelism (key groups): {}", m.max_parallelism);
    let _ = writeln!(s, "  state size: {} bytes", m.state_size());
    for op in &m.operators {
        let bytes: u64 = op.files.iter().map(|f| f.size).sum();
        let _ = writeln!(
            s,
            "  operator {} ({}): parallelism {}, {} files, {bytes} bytes",
            op.key,
            op.name,
            op.parallelism,
            op.files.len()
        );
        for f in &op.files {
            let kg = if f.subtask < op.parallelism && op.parallelism <= m.max_parallelism {
                let r = KeyGroupRange::for_subtask(m.max_parallelism, op.parallelism, f.subtask);
                format!("key groups {}..={}", r.start, r.end)
            } else {
                "key groups ?".to_string()
            };
            let _ = writeln!(
                s,
                "    subtask {}: {kg}, {} ({} bytes, crc32 {:08x})",
                f.subtask, f.path, f.size, f.crc32
            );
        }
    }
    s
}

/// `sluice savepoint inspect PATH`.
pub async fn inspect(path: &Path) -> Result<String, HarnessError> {
    let store = open_savepoint(path)?;
    let sp = load_savepoint(store.as_ref()).await.map_err(|e| damaged(path, e))?;
    Ok(describe(&path.display().to_string(), &sp.metadata))
}

/// `sluice savepoint list DIR`: one line per savepoint in `dir`.
pub async fn list(dir: &Path) -> Result<String, HarnessError> {
    if !dir.to_string_lossy().starts_with("s3://") && !dir.is_dir() {
        return Err(HarnessError::NoSavepoint(format!(
            "{}: no such directory",
            dir.display()
        )));
    }
    let store = open_store(&dir.to_string_lossy()).map_err(|e| bad(dir, e))?;
    let mut s = String::new();
    for name in list_savepoints(store.as_ref()).await.map_err(|e| bad(dir, e))? {
        let path = dir.join(&name);
        match open_savepoint(&path) {
            Ok(st) => match load_savepoint(st.as_ref()).await {
                Ok(sp) => {
                    let m = &sp.metadata;
                    let _ = writeln!(
                        s,
                        "{} job {} checkpoint {} created {} {} bytes",
                        path.display(),
                        m.job_name,
                        m.checkpoint_id,
                        format_epoch_ms(m.completed_at_ms),
                        m.state_size()
                    );
                }
                Err(e) => {
                    let _ = writeln!(s, "{} DAMAGED: {e}", path.display());
                }
            },
            Err(e) => {
                let _ = writeln!(s, "{} DAMAGED: {e}", path.display());
            }
        }
    }
    Ok(s)
}

/// What `sluice savepoint dispose` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposed {
    /// Files of the savepoint deleted (its state files and `_metadata`).
    pub files: usize,
    /// Entries left in the directory that were not part of the savepoint (they are kept, and
    /// so is the directory).
    pub left: Vec<String>,
}

/// `sluice savepoint dispose PATH`: deletes the files the savepoint's `_metadata` names and
/// the `_metadata` (refusing what is not a savepoint), then the directory if nothing else is
/// in it. Files that are not part of the savepoint are left, and named.
pub async fn dispose(path: &Path) -> Result<Disposed, HarnessError> {
    let store = open_savepoint(path)?;
    let files = dispose_savepoint(store.as_ref()).await.map_err(|e| damaged(path, e))?;
    if path.to_string_lossy().starts_with("s3://") {
        return Ok(Disposed {
            files,
            left: Vec::new(),
        });
    }
    let mut left: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| bad(path, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    if left.is_empty() {
        std::fs::remove_dir(path).map_err(|e| bad(path, e))?;
    }
    Ok(Disposed { files, left })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_milliseconds_as_utc() {
        assert_eq!(format_epoch_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_epoch_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_epoch_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
