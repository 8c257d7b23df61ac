//! Deletes the shared files of tiered state when no retained checkpoint names them.
//!
//! A checkpoint names every run its subtasks' tables hold (its `_metadata` lists them), and
//! runs are shared by the checkpoints taken while they lived. When a checkpoint is
//! subsumed, the files it named that no retained checkpoint names are deleted. That is safe
//! against the running attempt too: a table only ever drops runs (when it compacts them), so
//! a run missing from the newest retained checkpoint was dropped before that checkpoint's
//! barrier and is read by no one since; and a failed checkpoint deletes no shared file (the
//! table goes on using its runs, and the next checkpoint names them). What no checkpoint ever
//! named (a run written before a crash) stays until the job's directory is deleted.

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::metadata::SharedFile;
use crate::checkpoint::CheckpointStorage;
use crate::error::CheckpointError;

/// The shared files of retained checkpoints, by checkpoint id: recorded as checkpoints
/// complete, read from `_metadata` for those retained from before (a restart, a new leader).
#[derive(Debug, Default)]
pub(crate) struct SharedFiles {
    by_checkpoint: BTreeMap<u64, BTreeSet<SharedFile>>,
}

impl SharedFiles {
    /// Checkpoint `id` completed naming `files`.
    pub(crate) fn completed(&mut self, id: u64, files: BTreeSet<SharedFile>) {
        self.by_checkpoint.insert(id, files);
    }

    /// The shared files checkpoint `id` names.
    pub(crate) async fn of(
        &mut self,
        storage: &CheckpointStorage,
        id: u64,
    ) -> Result<&BTreeSet<SharedFile>, CheckpointError> {
        if let std::collections::btree_map::Entry::Vacant(e) = self.by_checkpoint.entry(id) {
            e.insert(storage.metadata(id).await?.shared_files());
        }
        Ok(&self.by_checkpoint[&id])
    }

    /// Checkpoint `old` was discarded, naming `files`: deletes those that none of the
    /// `retained` checkpoints names. Returns how many it deleted. When a retained
    /// checkpoint's list cannot be read, nothing is deleted (a file too many is kept, never
    /// one too few).
    pub(crate) async fn discarded(
        &mut self,
        storage: &CheckpointStorage,
        old: u64,
        files: BTreeSet<SharedFile>,
        retained: &[u64],
    ) -> Result<usize, CheckpointError> {
        self.by_checkpoint.remove(&old);
        let mut live = BTreeSet::new();
        for &id in retained {
            live.extend(self.of(storage, id).await?.iter().map(|f| f.path.clone()));
        }
        let mut deleted = 0;
        for f in files.iter().filter(|f| !live.contains(&f.path)) {
            storage.delete_shared(&f.path).await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use sluice_state::blob::{BlobStore, MemoryStore};

    use super::*;
    use crate::checkpoint::metadata::{CheckpointMetadata, OperatorStateMeta, StateFileMeta};

    fn file(name: &str) -> SharedFile {
        SharedFile {
            path: format!("job/shared/op/{name}.run"),
            size: 10,
        }
    }

    /// Commits checkpoint `id` naming `names` and stores those files.
    async fn checkpoint(
        storage: &CheckpointStorage,
        store: &MemoryStore,
        id: u64,
        names: &[&str],
    ) -> BTreeSet<SharedFile> {
        let shared: Vec<SharedFile> = names.iter().map(|n| file(n)).collect();
        for f in &shared {
            let _ = store.put_if_absent(&f.path, Bytes::from_static(b"run")).await;
        }
        let meta = CheckpointMetadata {
            job_name: "job".into(),
            checkpoint_id: id,
            triggered_at_ms: 0,
            completed_at_ms: 0,
            max_parallelism: 8,
            operators: vec![OperatorStateMeta {
                key: "op".into(),
                name: "op".into(),
                parallelism: 1,
                files: vec![StateFileMeta {
                    subtask: 0,
                    path: "op/0.state".into(),
                    size: 1,
                    crc32: 0,
                    shared,
                }],
            }],
        };
        storage.commit(&meta).await.unwrap();
        meta.shared_files()
    }

    fn runs(store: &MemoryStore) -> Vec<String> {
        store.paths().into_iter().filter(|p| p.ends_with(".run")).collect()
    }

    #[tokio::test]
    async fn a_subsumed_checkpoints_files_go_unless_a_retained_one_names_them() {
        let store = Arc::new(MemoryStore::new());
        let storage = CheckpointStorage::new(store.clone(), "job");
        let mut gc = SharedFiles::default();
        let one = checkpoint(&storage, &store, 1, &["a", "b"]).await;
        gc.completed(1, one.clone());
        let two = checkpoint(&storage, &store, 2, &["b", "c"]).await;
        gc.completed(2, two.clone());
        assert_eq!(gc.discarded(&storage, 1, one, &[2]).await.unwrap(), 1);
        assert_eq!(runs(&store), ["job/shared/op/b.run", "job/shared/op/c.run"]);
        // A coordinator that did not see checkpoint 3 complete reads what it names.
        checkpoint(&storage, &store, 3, &["c", "d"]).await;
        let mut fresh = SharedFiles::default();
        let two = fresh.of(&storage, 2).await.unwrap().clone();
        assert_eq!(fresh.discarded(&storage, 2, two, &[3]).await.unwrap(), 1);
        assert_eq!(runs(&store), ["job/shared/op/c.run", "job/shared/op/d.run"]);
    }

    #[tokio::test]
    async fn nothing_is_deleted_when_a_retained_checkpoints_files_are_unknown() {
        let store = Arc::new(MemoryStore::new());
        let storage = CheckpointStorage::new(store.clone(), "job");
        let mut gc = SharedFiles::default();
        let one = checkpoint(&storage, &store, 1, &["a", "b"]).await;
        // Checkpoint 2 is retained but its metadata cannot be read.
        assert!(gc.discarded(&storage, 1, one, &[2]).await.is_err());
        assert_eq!(runs(&store).len(), 2, "a file too many is kept, never one too few");
    }

    #[tokio::test]
    async fn only_files_of_the_jobs_shared_directory_are_deleted() {
        let store = Arc::new(MemoryStore::new());
        let storage = CheckpointStorage::new(store.clone(), "job");
        for path in ["other/shared/op/x.run", "job/chk-0000000001/_metadata", "job/shared"] {
            let err = storage.delete_shared(path).await.unwrap_err().to_string();
            assert!(err.contains("refusing to delete"), "{path}: {err}");
        }
    }
}
