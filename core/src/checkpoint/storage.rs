//! Where a job's checkpoints live in a [`BlobStore`], and how they are written, found and
//! loaded.
//!
//! Layout (documented in `docs/checkpoint-format.md`):
//!
//! ```text
//! <job>/chk-<id, 10 digits>/<operator key>/<subtask>.state   state files, written first
//! <job>/chk-<id, 10 digits>/_metadata                         written last, create-if-absent
//! ```
//!
//! A checkpoint exists once its `_metadata` exists: the metadata is written with a
//! create-if-absent put of a new object, which every backend supports atomically.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use sluice_state::blob::{delete_prefix, BlobError, BlobStore};
use sluice_state::{KeyGroup, KeyGroupRange, StateFile};

use crate::checkpoint::metadata::{CheckpointMetadata, StateFileMeta};
use crate::error::CheckpointError;

/// A loaded, checked checkpoint: its metadata and every state file, decoded.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// The metadata.
    pub metadata: CheckpointMetadata,
    /// Decoded state files by their path relative to the checkpoint directory.
    pub files: BTreeMap<String, Arc<StateFile>>,
}

/// How a job's latest completed checkpoint stands ([`CheckpointStorage::latest`]).
#[derive(Debug)]
pub enum Latest {
    /// The job has no completed checkpoint.
    None,
    /// The latest loads and checks out.
    Usable(LoadedCheckpoint),
    /// The latest cannot be restored.
    Unusable {
        /// Its id.
        id: u64,
        /// What is wrong with it (names the file and the problem).
        problem: CheckpointError,
        /// The other completed checkpoints, newest first.
        older: Vec<u64>,
    },
}

/// The checkpoints of one job in a store.
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn BlobStore>,
    job: String,
}

/// Turns an operator name or uid into a path segment.
pub fn path_segment(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.starts_with('.') {
        format!("_{cleaned}")
    } else {
        cleaned
    }
}

impl CheckpointStorage {
    /// The checkpoints of job `job` in `store`.
    pub fn new(store: Arc<dyn BlobStore>, job: &str) -> Self {
        CheckpointStorage {
            store,
            job: path_segment(job),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// The directory of checkpoint `id` (with a trailing slash).
    pub fn dir(&self, id: u64) -> String {
        format!("{}/chk-{id:010}/", self.job)
    }

    /// Writes the state file of one operator subtask; returns its metadata entry.
    pub async fn write_state(
        &self,
        id: u64,
        operator_key: &str,
        subtask: u32,
        bytes: Vec<u8>,
    ) -> Result<StateFileMeta, BlobError> {
        let rel = format!("{}/{subtask}.state", path_segment(operator_key));
        let meta = StateFileMeta {
            subtask,
            size: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
            path: rel.clone(),
        };
        let full = format!("{}{rel}", self.dir(id));
        match self.store.put_if_absent(&full, Bytes::from(bytes)).await {
            Ok(()) => Ok(meta),
            // An earlier try of the same write may have stored it (an ambiguous put): it is
            // ours if it has the same checksum.
            Err(BlobError::AlreadyExists(p)) => {
                let existing = self.store.get(&full).await?;
                if crc32fast::hash(&existing) == meta.crc32 && existing.len() as u64 == meta.size {
                    Ok(meta)
                } else {
                    Err(BlobError::AlreadyExists(p))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Completes checkpoint `meta.checkpoint_id` by writing its `_metadata`.
    pub async fn commit(&self, meta: &CheckpointMetadata) -> Result<(), BlobError> {
        let path = format!("{}_metadata", self.dir(meta.checkpoint_id));
        let bytes = meta.encode();
        match self.store.put_if_absent(&path, Bytes::from(bytes.clone())).await {
            Ok(()) => Ok(()),
            Err(BlobError::AlreadyExists(p)) => {
                if self.store.get(&path).await?.as_ref() == bytes.as_slice() {
                    Ok(())
                } else {
                    Err(BlobError::AlreadyExists(p))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Ids of the checkpoints that have a `_metadata`, ascending.
    pub async fn completed_ids(&self) -> Result<Vec<u64>, BlobError> {
        let prefix = format!("{}/chk-", self.job);
        let mut ids: Vec<u64> = self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|p| {
                let rest = p.strip_prefix(&prefix)?;
                let (id, file) = rest.split_once('/')?;
                (file == "_metadata").then(|| id.parse().ok())?
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// The highest checkpoint id with any file (complete or not), to continue numbering.
    pub async fn highest_id(&self) -> Result<u64, BlobError> {
        let prefix = format!("{}/chk-", self.job);
        Ok(self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|p| p.strip_prefix(&prefix)?.split_once('/')?.0.parse::<u64>().ok())
            .max()
            .unwrap_or(0))
    }

    /// Loads and checks checkpoint `id`: metadata and every state file (size, checksum,
    /// format).
    pub async fn load(&self, id: u64) -> Result<LoadedCheckpoint, CheckpointError> {
        load_dir(self.store.as_ref(), &self.dir(id)).await
    }

    /// How the latest completed checkpoint stands: none, usable (loaded and checked), or
    /// unusable with the problem. Only a failing store is an error: a damaged or vanished
    /// checkpoint is an answer, for the caller's recovery policy to decide on.
    pub async fn latest(&self) -> Result<Latest, CheckpointError> {
        let mut ids = self.completed_ids().await?;
        let Some(id) = ids.pop() else {
            return Ok(Latest::None);
        };
        match self.load(id).await {
            Ok(c) => Ok(Latest::Usable(c)),
            Err(CheckpointError::Storage(e)) if !matches!(e, BlobError::NotFound(_)) => {
                Err(CheckpointError::Storage(e))
            }
            Err(problem) => {
                ids.reverse();
                Ok(Latest::Unusable {
                    id,
                    problem,
                    older: ids,
                })
            }
        }
    }

    /// Deletes every checkpoint of the job (complete or not): the job has ended and will not
    /// restore any. Metadata first, so a half-deleted checkpoint never counts as complete.
    /// Returns the files deleted.
    pub async fn discard_job(&self) -> Result<usize, BlobError> {
        let mut n = 0;
        for id in self.completed_ids().await? {
            self.store.delete(&format!("{}_metadata", self.dir(id))).await?;
            n += 1;
        }
        Ok(n + delete_prefix(self.store.as_ref(), &format!("{}/", self.job)).await?)
    }

    /// Deletes checkpoint `id` (its metadata first, so it stops counting as complete).
    pub async fn discard(&self, id: u64) -> Result<(), BlobError> {
        let dir = self.dir(id);
        self.store.delete(&format!("{dir}_metadata")).await?;
        delete_prefix(self.store.as_ref(), &dir).await?;
        Ok(())
    }
}

/// Checks that a state file holds only key groups of the subtask that wrote it. Subtasks'
/// ranges are disjoint, so no key group is then restored from two files (which would apply
/// its entries twice, the later silently winning).
fn check_key_groups(
    path: &str,
    file: &StateFile,
    max_parallelism: u32,
    parallelism: u32,
    subtask: u32,
) -> Result<(), CheckpointError> {
    let range = KeyGroupRange::for_subtask(max_parallelism, parallelism, subtask);
    match file.key_groups().find(|&kg| !range.contains(KeyGroup(kg))) {
        None => Ok(()),
        Some(kg) => Err(CheckpointError::Corrupt(format!(
            "state file '{path}' holds key group {kg}, outside key groups {}..={} of subtask {subtask} of {parallelism}",
            range.start, range.end
        ))),
    }
}

/// Loads and checks the checkpoint or savepoint whose `_metadata` is at `{dir}_metadata` (`dir`
/// empty or ending in `/`): metadata and every state file (size, checksum, format). Errors
/// name the file and the problem.
pub async fn load_dir(store: &dyn BlobStore, dir: &str) -> Result<LoadedCheckpoint, CheckpointError> {
    let meta_path = format!("{dir}_metadata");
    let bytes = store.get(&meta_path).await?;
    let metadata = CheckpointMetadata::decode(&meta_path, &bytes)?;
    let mut files = BTreeMap::new();
    for op in &metadata.operators {
        for f in &op.files {
            let path = format!("{dir}{}", f.path);
            let data = store.get(&path).await?;
            if data.len() as u64 != f.size {
                return Err(CheckpointError::Corrupt(format!(
                    "state file '{path}' has {} bytes, the metadata says {}",
                    data.len(),
                    f.size
                )));
            }
            if crc32fast::hash(&data) != f.crc32 {
                return Err(CheckpointError::Corrupt(format!(
                    "state file '{path}': checksum mismatch: the file is corrupt"
                )));
            }
            let decoded = StateFile::decode(&path, &data).map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
            check_key_groups(&path, &decoded, metadata.max_parallelism, op.parallelism, f.subtask)?;
            files.insert(f.path.clone(), Arc::new(decoded));
        }
    }
    Ok(LoadedCheckpoint { metadata, files })
}
