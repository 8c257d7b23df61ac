//! The `_metadata` of a completed checkpoint: which state files make it up.
//!
//! Encoded like a state file: magic `SLCMETA1`, format version (u16), body length (u64),
//! bincode body, crc32 of everything before it. Paths are relative to the checkpoint's
//! directory, so a checkpoint (or savepoint) directory can be moved as a whole.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sluice_state::MAX_MAX_PARALLELISM;

use crate::error::CheckpointError;

/// The version of the metadata format written by this build.
pub const METADATA_FORMAT_VERSION: u16 = 1;
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
}

impl CheckpointMetadata {
    /// Total bytes of state.
    pub fn state_size(&self) -> u64 {
        self.operators.iter().flat_map(|o| &o.files).map(|f| f.size).sum()
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
        if version != METADATA_FORMAT_VERSION {
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
        let meta: Self = bincode::deserialize(&bytes[18..crc_at]).map_err(|e| bad(format!("undecodable: {e}")))?;
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
            }
        }
        Ok(())
    }
}

/// Whether `path` stays inside the directory it is relative to: not absolute, no `..`, `.` or
/// empty segments, no NUL or backslash (which some stores and filesystems treat specially).
pub(crate) fn is_plain_relative(path: &str) -> bool {
    !path.is_empty() && !path.contains(['\\', '\0']) && path.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

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
