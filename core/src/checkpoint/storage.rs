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

use crate::checkpoint::metadata::{CheckpointMetadata, SharedFile, StateFileMeta};
use crate::error::CheckpointError;
use crate::ha::{self, HaBackend};

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
    /// Where completed checkpoints are recorded, under which job id (cluster mode).
    ledger: Option<(Arc<dyn HaBackend>, String)>,
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
            ledger: None,
        }
    }

    /// The job's directory in the store (its checkpoints and shared files are below it).
    pub fn job_dir(&self) -> &str {
        &self.job
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// The directory of checkpoint `id` (with a trailing slash).
    pub fn dir(&self, id: u64) -> String {
        format!("{}/chk-{id:010}/", self.job)
    }

    /// Writes the state file of one operator subtask (with the shared files it names);
    /// returns its metadata entry.
    pub async fn write_state(
        &self,
        id: u64,
        operator_key: &str,
        subtask: u32,
        (bytes, shared): (Vec<u8>, Vec<SharedFile>),
    ) -> Result<StateFileMeta, BlobError> {
        let rel = format!("{}/{subtask}.state", path_segment(operator_key));
        let meta = StateFileMeta {
            subtask,
            size: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
            path: rel.clone(),
            shared,
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

    /// Records completed checkpoints in `ha` (a cluster's job store) instead of finding them
    /// by their `_metadata` files: the entry is the commit point, and every deletion is
    /// fenced, so a deposed coordinator neither commits nor deletes a checkpoint.
    pub fn with_ledger(mut self, ha: Arc<dyn HaBackend>, job: &str) -> Self {
        self.ledger = Some((ha, job.to_string()));
        self
    }

    /// Completes checkpoint `meta.checkpoint_id`: writes its `_metadata`, then (with a ledger)
    /// its entry, which is when it counts as complete.
    pub async fn commit(&self, meta: &CheckpointMetadata) -> Result<(), CheckpointError> {
        let dir = self.dir(meta.checkpoint_id);
        let path = format!("{dir}_metadata");
        let bytes = meta.encode();
        match self.store.put_if_absent(&path, Bytes::from(bytes.clone())).await {
            Ok(()) => {}
            Err(BlobError::AlreadyExists(p)) => {
                if self.store.get(&path).await?.as_ref() != bytes.as_slice() {
                    return Err(BlobError::AlreadyExists(p).into());
                }
            }
            Err(e) => return Err(e.into()),
        }
        if let Some((ha, job)) = &self.ledger {
            let key = ha::checkpoint_key(job, meta.checkpoint_id);
            // A brief etcd hiccup (a restart, a refused connection) is retried: the write is
            // idempotent, and until it succeeds nothing is notified.
            let mut tries = 0;
            loop {
                match ha.write(vec![(key.clone(), dir.clone().into_bytes())], vec![]).await {
                    Err(ha::HaError::Unavailable(_)) if tries < 3 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100 << tries)).await;
                    }
                    done => break done?,
                }
            }
        }
        Ok(())
    }

    /// Ids of the completed checkpoints, ascending: the ledger's entries, or without one the
    /// checkpoints that have a `_metadata`.
    pub async fn completed_ids(&self) -> Result<Vec<u64>, CheckpointError> {
        if let Some((ha, job)) = &self.ledger {
            let prefix = ha::checkpoint_prefix(job);
            let entries = ha.read(&prefix).await?;
            let mut ids = Vec::with_capacity(entries.len());
            for (key, _) in entries {
                let id = key.strip_prefix(&prefix).and_then(|id| id.parse::<u64>().ok());
                ids.push(id.ok_or_else(|| {
                    CheckpointError::Corrupt(format!("the HA store's checkpoint entry {key} names no checkpoint id"))
                })?);
            }
            ids.sort_unstable();
            return Ok(ids);
        }
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
    pub async fn discard_job(&self) -> Result<usize, CheckpointError> {
        let mut n = 0;
        let ids = self.completed_ids().await?;
        self.forget(&ids).await?;
        for id in ids {
            self.store.delete(&format!("{}_metadata", self.dir(id))).await?;
            n += 1;
        }
        Ok(n + delete_prefix(self.store.as_ref(), &format!("{}/", self.job)).await?)
    }

    /// The `_metadata` of checkpoint `id` (without loading its state files).
    pub async fn metadata(&self, id: u64) -> Result<CheckpointMetadata, CheckpointError> {
        let path = format!("{}_metadata", self.dir(id));
        let bytes = self.store.get(&path).await?;
        CheckpointMetadata::decode(&path, &bytes)
    }

    /// Deletes shared file `path`, which must lie in this job's shared directory (a path
    /// from metadata is input: nothing else of the store is deleted on its word).
    pub async fn delete_shared(&self, path: &str) -> Result<(), CheckpointError> {
        let dir = format!("{}/shared/", self.job);
        if !path.starts_with(&dir) || !crate::checkpoint::metadata::is_shared_path(path) {
            return Err(CheckpointError::Corrupt(format!(
                "refusing to delete '{path}': not a shared file of job directory '{}'",
                self.job
            )));
        }
        self.store.delete(path).await?;
        Ok(())
    }

    /// Removes the ledger's entries of `ids` (fenced: a deposed coordinator removes, and so
    /// deletes, nothing).
    async fn forget(&self, ids: &[u64]) -> Result<(), CheckpointError> {
        if let Some((ha, job)) = &self.ledger {
            let keys = ids.iter().map(|&id| ha::checkpoint_key(job, id)).collect();
            ha.write(vec![], keys).await?;
        }
        Ok(())
    }

    /// Deletes checkpoint `id` (its ledger entry, then its metadata, so it stops counting as
    /// complete before any of its files goes).
    pub async fn discard(&self, id: u64) -> Result<(), CheckpointError> {
        self.forget(&[id]).await?;
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
/// empty or ending in `/`): metadata, every state file (size, checksum, format) and the size
/// of every shared run it names. Errors name the file and the problem.
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
    // The runs of tiered state are read lazily, but one that is gone or cut makes the
    // checkpoint unusable now, not at the first read of one of its keys.
    for f in metadata.shared_files() {
        let size = store.head(&f.path).await?;
        if size != f.size {
            return Err(CheckpointError::Corrupt(format!(
                "shared run '{}' has {size} bytes, the metadata says {}",
                f.path, f.size
            )));
        }
    }
    Ok(LoadedCheckpoint { metadata, files })
}
