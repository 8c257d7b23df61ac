//! The manifest of a tiered subtask's snapshot: which states it has (name, id, types) and
//! which run files hold them. A checkpoint's state file carries it as operator state instead
//! of the entries themselves, so a checkpoint stores only the runs created since the last one.

use serde::{Deserialize, Serialize};

use super::TieredError;

const MAGIC: &[u8; 8] = b"SLMANIF1";

/// One state of the subtask: its name, the id its keys carry, and its types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestState {
    /// The state's name.
    pub name: String,
    /// The id in its keys (`[key group][id][key]`).
    pub id: u32,
    /// `key type => value type`, checked on restore.
    pub types: String,
}

/// One run file the snapshot needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRun {
    /// Its object path in the checkpoint store.
    pub file: String,
    /// The first and last key group of its keys.
    pub key_groups: (u32, u32),
    /// The key groups (inclusive) whose entries in it are current: those the snapshot's
    /// subtask owned and, for a run restored from an earlier layout, that were current then.
    /// Its other entries are stale copies of keys someone else went on changing.
    pub visible: (u32, u32),
    /// Its size in bytes.
    pub size: u64,
}

/// A tiered subtask's snapshot (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job's max parallelism (key groups) when it was written.
    pub max_parallelism: u32,
    /// The states.
    pub states: Vec<ManifestState>,
    /// The runs, newest first.
    pub runs: Vec<ManifestRun>,
}

impl Manifest {
    /// Encodes the manifest (magic, then bincode).
    pub fn encode(&self) -> Result<Vec<u8>, TieredError> {
        let mut out = MAGIC.to_vec();
        bincode::serialize_into(&mut out, self)
            .map_err(|e| TieredError::BadInput(format!("cannot encode a manifest: {e}")))?;
        Ok(out)
    }

    /// Whether `bytes` (an operator state element) is a manifest.
    pub fn is_manifest(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Decodes a manifest; `file` (the state file holding it) appears in errors.
    pub fn decode(file: &str, bytes: &[u8]) -> Result<Self, TieredError> {
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| TieredError::corrupt(file, "no tiered manifest (wrong magic)"))?;
        let m: Manifest =
            bincode::deserialize(body).map_err(|e| TieredError::corrupt(file, format!("undecodable manifest: {e}")))?;
        if !(1..=crate::MAX_MAX_PARALLELISM).contains(&m.max_parallelism) {
            return Err(TieredError::corrupt(
                file,
                format!("manifest for max parallelism {}", m.max_parallelism),
            ));
        }
        Ok(m)
    }

    /// The run files (path and size) the manifests among `operator_state` name, in order
    /// (an element that is no manifest names none).
    pub fn runs_named(operator_state: &[Vec<u8>]) -> Result<Vec<(String, u64)>, TieredError> {
        let mut runs = Vec::new();
        for op in operator_state.iter().filter(|op| Self::is_manifest(op)) {
            runs.extend(
                Self::decode("a snapshot", op)?
                    .runs
                    .into_iter()
                    .map(|r| (r.file, r.size)),
            );
        }
        Ok(runs)
    }

    /// The runs with current entries in key groups `[first, last]`, each with the key
    /// groups to read from it (its visible ones within `[first, last]`).
    pub fn runs_for(&self, first: u32, last: u32) -> impl Iterator<Item = (&ManifestRun, (u32, u32))> {
        self.runs.iter().filter_map(move |r| {
            let lo = r.visible.0.max(r.key_groups.0).max(first);
            let hi = r.visible.1.min(r.key_groups.1).min(last);
            (lo <= hi).then_some((r, (lo, hi)))
        })
    }
}
