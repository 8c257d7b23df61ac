//! The `_metadata` of a completed checkpoint: which state files make it up.
//!
//! Encoded like a state file: magic `SLCMETA1`, format version (u16), body length (u64),
//! bincode body, crc32 of everything before it. Paths are relative to the checkpoint's
//! directory, so a checkpoint (or savepoint) directory can be moved as a whole; the shared
//! files of tiered state (version 2) are relative to the store's root, under the job's
//! `shared/` directory, and are named by every checkpoint that needs them. Version 1 (no
//! shared files) is still read.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sluice_state::MAX_MAX_PARALLELISM;

use crate::error::CheckpointError;

/// The version of the metadata format written by this build.
pub const METADATA_FORMAT_VERSION: u16 = 2;
const MAGIC: &[u8; 8] = b"SLCMETA1";

/// A completed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The job it belongs to.
    pub job_name: String,
    /// The checkpoint's id (increasing within a job).
    pub checkpoint_id: u64,
    /// When it was triggered, ms since the epoch.
    pub triggered_at_ms: i64,
    /// When it completed, ms since the epoch.
    pub completed_at_ms: i64,
    /// Key groups of the job.
    pub max_parallelism: u32,
    /// State per operator, in graph order.
    pub operators: Vec<OperatorStateMeta>,
}

/// The state of one operator in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateMeta {
    /// The operator's key: its uid, or a name derived from its position for operators
    /// without one.
    pub key: String,
    /// The operator's name (for people).
    pub name: String,
    /// Its parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// One file per subtask that had state.
    pub files: Vec<StateFileMeta>,
}

/// One state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFileMeta {
    /// The subtask that wrote it.
    pub subtask: u32,
    /// Path relative to the checkpoint directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// crc32 of the whole file.
    pub crc32: u32,
    /// The shared files (tiered state's runs) the state file names, relative to the store's
    /// root: a checkpoint needs them as much as its own files.
    pub shared: Vec<SharedFile>,
}

/// A file shared between checkpoints: one run of tiered state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SharedFile {
    /// Its path from the store's root (`<job>/shared/...`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Version 1 of the metadata, without shared files.
#[derive(Deserialize)]
struct MetadataV1 {
    job_name: String,
    checkpoint_id: u64,
    triggered_at_ms: i64,
    completed_at_ms: i64,
    max_parallelism: u32,
    operators: Vec<OperatorV1>,
}

#[derive(Deserialize)]
struct OperatorV1 {
    key: String,
    name: String,
    parallelism: u32,
    files: Vec<FileV1>,
}

#[derive(Deserialize)]
struct FileV1 {
    subtask: u32,
    path: String,
    size: u64,
    crc32: u32,
}

impl From<MetadataV1> for CheckpointMetadata {
    fn from(m: MetadataV1) -> Self {
        CheckpointMetadata {
            job_name: m.job_name,
            checkpoint_id: m.checkpoint_id,
            triggered_at_ms: m.triggered_at_ms,
            completed_at_ms: m.completed_at_ms,
            max_parallelism: m.max_parallelism,
            operators: m
                .operators
                .into_iter()
                .map(|o| OperatorStateMeta {
                    key: o.key,
                    name: o.name,
                    parallelism: o.parallelism,
                    files: o
                        .files
                        .into_iter()
                        .map(|f| StateFileMeta {
                            subtask: f.subtask,
                            path: f.path,
                            size: f.size,
                            crc32: f.crc32,
                            shared: Vec::new(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl CheckpointMetadata {
    /// Total bytes of state: its own files and every shared file it names (once each).
    pub fn state_size(&self) -> u64 {
        let own: u64 = self.operators.iter().flat_map(|o| &o.files).map(|f| f.size).sum();
        own + self.shared_files().iter().map(|f| f.size).sum::<u64>()
    }

    /// Bytes this checkpoint added: its own files and the shared files that `previous` (the
    /// shared files of the checkpoint before it) did not name. With the heap backend this is
    /// [`Self::state_size`]; with the tiered backend, the runs written since.
    pub fn incremental_size(&self, previous: &BTreeSet<SharedFile>) -> u64 {
        let own: u64 = self.operators.iter().flat_map(|o| &o.files).map(|f| f.size).sum();
        let known: BTreeSet<&str> = previous.iter().map(|f| f.path.as_str()).collect();
        let new: u64 = self
            .shared_files()
            .iter()
            .filter(|f| !known.contains(f.path.as_str()))
            .map(|f| f.size)
            .sum();
        own + new
    }

    /// The shared files it names, each once.
    pub fn shared_files(&self) -> BTreeSet<SharedFile> {
        self.operators
            .iter()
            .flat_map(|o| &o.files)
            .flat_map(|f| f.shared.iter().cloned())
            .collect()
    }

    /// Encodes with header and checksum.
    pub fn encode(&self) -> Vec<u8> {
        let body = bincode::serialize(self).expect("metadata is plain data and always encodes");
        let mut out = Vec::with_capacity(body.len() + 22);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&METADATA_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks; errors name `path` and the problem.
    pub fn decode(path: &str, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let bad = |what: String| CheckpointError::Corrupt(format!("checkpoint metadata '{path}': {what}"));
        if bytes.len() < 22 {
            return Err(bad(format!(
                "truncated: {} bytes is shorter than the header",
                bytes.len()
            )));
        }
        if &bytes[..8] != MAGIC {
            return Err(bad("not a Sluice checkpoint metadata file (bad magic)".into()));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if !(1..=METADATA_FORMAT_VERSION).contains(&version) {
            return Err(bad(format!(
                "format version {version} is not supported (this build reads version {METADATA_FORMAT_VERSION})"
            )));
        }
        let len = u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes")) as usize;
        if 18usize.checked_add(len).and_then(|n| n.checked_add(4)) != Some(bytes.len()) {
            return Err(bad(format!(
                "truncated: header says {len} body bytes, file has {} bytes",
                bytes.len()
            )));
        }
        let crc_at = bytes.len() - 4;
        if crc32fast::hash(&bytes[..crc_at]) != u32::from_le_bytes(bytes[crc_at..].try_into().expect("4 bytes")) {
            return Err(bad("checksum mismatch: the file is corrupt".into()));
        }
        let body = &bytes[18..crc_at];
        let meta: Self = match version {
            1 => bincode::deserialize::<MetadataV1>(body).map(Self::from),
            _ => bincode::deserialize(body),
        }
        .map_err(|e| bad(format!("undecodable: {e}")))?;
        meta.check().map_err(bad)?;
        Ok(meta)
    }

    /// Checks what a restore relies on but the checksum cannot vouch for (a bug or a hostile
    /// writer seals wrong metadata as easily as right): a usable number of key groups, one
    /// entry per operator, one file per subtask within its parallelism, and file paths that
    /// stay inside the checkpoint's directory and name distinct files. Without this a file
    /// named twice would restore its state twice, and a subtask beyond the parallelism would
    /// silently restore nothing.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_MAX_PARALLELISM).contains(&self.max_parallelism) {
            return Err(format!(
                "max parallelism {} is outside 1..={MAX_MAX_PARALLELISM}",
                self.max_parallelism
            ));
        }
        let mut keys = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for op in &self.operators {
            if op.key.is_empty() || !keys.insert(op.key.as_str()) {
                return Err(format!("operator key '{}' is empty or appears twice", op.key));
            }
            if !(1..=self.max_parallelism).contains(&op.parallelism) {
                return Err(format!(
                    "operator '{}' has parallelism {}, outside 1..={}",
                    op.key, op.parallelism, self.max_parallelism
                ));
            }
            let mut subtasks = BTreeSet::new();
            for f in &op.files {
                if f.subtask >= op.parallelism || !subtasks.insert(f.subtask) {
                    return Err(format!(
                        "operator '{}' lists subtask {} twice or beyond its parallelism {}",
                        op.key, f.subtask, op.parallelism
                    ));
                }
                if !is_plain_relative(&f.path) || !paths.insert(f.path.as_str()) {
                    return Err(format!(
                        "state file '{}' is named twice or is not a plain relative path",
                        f.path
                    ));
                }
                // Shared files are deleted when no checkpoint names them any more: only files
                // of a job's shared directory may be named.
                if let Some(bad) = f.shared.iter().find(|s| !is_shared_path(&s.path)) {
                    return Err(format!(
                        "state file '{}' names shared file '{}', which is not in a job's shared directory",
                        f.path, bad.path
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `path` is a plain relative path with `shared` as its second segment
/// (`<job>/shared/...`).
pub(crate) fn is_shared_path(path: &str) -> bool {
    is_plain_relative(path) && path.split('/').nth(1) == Some("shared") && path.split('/').count() > 2
}

/// Whether `path` stays inside the directory it is relative to: not absolute, no `..`, `.` or
/// empty segments, no NUL or backslash (which some stores and filesystems treat specially).
pub(crate) fn is_plain_relative(path: &str) -> bool {
    !path.is_empty() && !path.contains(['\\', '\0']) && path.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 1 metadata (written before shared files existed) still reads, naming none.
    #[test]
    fn version_1_metadata_is_still_read() {
        /// An operator of version 1: key, name, parallelism, files.
        type OperatorV1 = (String, String, u32, Vec<(u32, String, u64, u32)>);
        #[derive(Serialize)]
        struct V1 {
            job_name: String,
            checkpoint_id: u64,
            triggered_at_ms: i64,
            completed_at_ms: i64,
            max_parallelism: u32,
            operators: Vec<OperatorV1>,
        }
        let body = bincode::serialize(&V1 {
            job_name: "j".into(),
            checkpoint_id: 3,
            triggered_at_ms: 1,
            completed_at_ms: 2,
            max_parallelism: 16,
            operators: vec![("k".into(), "K".into(), 1, vec![(0, "k/0.state".into(), 5, 9)])],
        })
        .unwrap();
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&(body.len() as u64).to_le_bytes());
        b.extend_from_slice(&body);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let m = CheckpointMetadata::decode("v1", &b).unwrap();
        assert_eq!(m.operators[0].files[0].path, "k/0.state");
        assert!(m.shared_files().is_empty());
    }

    /// Two subtasks naming runs, one of them (`a`) named twice: full size counts each file
    /// once; incremental size leaves out what the previous checkpoint named.
    #[test]
    fn incremental_size_counts_only_files_the_previous_checkpoint_did_not_name() {
        let shared = |name: &str, size| SharedFile {
            path: format!("j/shared/op/{name}.run"),
            size,
        };
        let file = |subtask, runs: Vec<SharedFile>| StateFileMeta {
            subtask,
            path: format!("op/{subtask}.state"),
            size: 10,
            crc32: 0,
            shared: runs,
        };
        let m = CheckpointMetadata {
            job_name: "j".into(),
            checkpoint_id: 2,
            triggered_at_ms: 1,
            completed_at_ms: 2,
            max_parallelism: 16,
            operators: vec![OperatorStateMeta {
                key: "op".into(),
                name: "Op".into(),
                parallelism: 2,
                files: vec![
                    file(0, vec![shared("a", 1000), shared("b", 200)]),
                    file(1, vec![shared("a", 1000), shared("c", 30)]),
                ],
            }],
        };
        assert_eq!(m.state_size(), 20 + 1230);
        assert_eq!(m.incremental_size(&BTreeSet::new()), 20 + 1230);
        let previous: BTreeSet<_> = [shared("a", 1000), shared("old", 5)].into();
        assert_eq!(m.incremental_size(&previous), 20 + 230);
    }

    #[test]
    fn a_shared_file_outside_a_jobs_shared_directory_is_refused() {
        for bad in ["../x.run", "job/chk-1/_metadata", "job/shared", "/job/shared/x"] {
            let m = CheckpointMetadata {
                job_name: "j".into(),
                checkpoint_id: 1,
                triggered_at_ms: 0,
                completed_at_ms: 0,
                max_parallelism: 8,
                operators: vec![OperatorStateMeta {
                    key: "k".into(),
                    name: "k".into(),
                    parallelism: 1,
                    files: vec![StateFileMeta {
                        subtask: 0,
                        path: "k/0.state".into(),
                        size: 1,
                        crc32: 0,
                        shared: vec![SharedFile {
                            path: bad.into(),
                            size: 1,
                        }],
                    }],
                }],
            };
            let err = CheckpointMetadata::decode("p", &m.encode()).unwrap_err().to_string();
            assert!(err.contains("not in a job's shared directory"), "{bad}: {err}");
        }
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let m = CheckpointMetadata {
            job_name: "j".into(),
            checkpoint_id: 7,
            triggered_at_ms: 1,
            completed_at_ms: 2,
            max_parallelism: 128,
            operators: vec![OperatorStateMeta {
                key: "count".into(),
                name: "Count".into(),
                parallelism: 2,
                files: vec![StateFileMeta {
                    subtask: 0,
                    path: "count/0.state".into(),
                    size: 10,
                    crc32: 3,
                    shared: vec![SharedFile {
                        path: "j/shared/count/a0-s0-00000001.run".into(),
                        size: 5,
                    }],
                }],
            }],
        };
        let b = m.encode();
        assert_eq!(CheckpointMetadata::decode("p", &b).unwrap(), m);
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert!(CheckpointMetadata::decode("j/chk-7/_metadata", &bad)
            .unwrap_err()
            .to_string()
            .contains("j/chk-7/_metadata': checksum"));
        assert!(matches!(
            CheckpointMetadata::decode("p", &b[..b.len() - 1]),
            Err(CheckpointError::Corrupt(m)) if m.contains("truncated")
        ));
    }
}
