//! Savepoints: checkpoints that a person asks for, that the system never deletes, and that are
//! self-contained, so they can be moved or copied anywhere and restored from there.
//!
//! A savepoint is a directory `savepoint-<job>-<checkpoint id>` holding the same files as a
//! checkpoint: `_metadata` (written last) and one state file per operator subtask with state,
//! under `<operator uid>/<subtask>.state`. All paths in `_metadata` are relative to the
//! directory. State is stored per operator uid and key group (each state file is grouped by
//! key group), so a savepoint restores at any parallelism up to the max parallelism.
//! Format: `docs/savepoint-format.md`.

use bytes::Bytes;
use sluice_state::blob::{BlobError, BlobStore};

use crate::checkpoint::storage::{load_dir, path_segment};
use crate::checkpoint::{CheckpointMetadata, CheckpointStorage, LoadedCheckpoint};
use crate::error::CheckpointError;

/// The directory name of the savepoint of `job` taken at checkpoint `id`.
pub fn savepoint_name(job: &str, id: u64) -> String {
    format!("savepoint-{}-{id:010}", path_segment(job))
}

/// Copies completed checkpoint `meta` from `from` into `target` as the savepoint directory
/// `name`, state files first and `_metadata` last (a savepoint without `_metadata` is
/// incomplete and is not listed). Returns `name`.
pub async fn write_savepoint(
    from: &CheckpointStorage,
    meta: &CheckpointMetadata,
    target: &dyn BlobStore,
    name: &str,
) -> Result<String, CheckpointError> {
    let src = from.dir(meta.checkpoint_id);
    // The savepoint's own metadata: files rewritten in canonical form have other sizes.
    let mut written = meta.clone();
    for op in &mut written.operators {
        for f in &mut op.files {
            let path = format!("{src}{}", f.path);
            let bytes = retried(|| from.store().get(&path)).await?;
            // A damaged file must not become a savepoint that cannot be restored later.
            if bytes.len() as u64 != f.size || crc32fast::hash(&bytes) != f.crc32 {
                return Err(CheckpointError::Corrupt(format!(
                    "state file '{path}' does not match its checkpoint's metadata ({} bytes, {} expected, or a checksum mismatch): the savepoint was not written",
                    bytes.len(),
                    f.size
                )));
            }
            let bytes = canonical(from, &path, bytes).await?;
            f.size = bytes.len() as u64;
            f.crc32 = crc32fast::hash(&bytes);
            // The canonical file holds the entries themselves: it names no shared run.
            f.shared.clear();
            let to = format!("{name}/{}", f.path);
            retried(|| put_exact(target, &to, bytes.clone())).await?;
        }
    }
    let to = format!("{name}/_metadata");
    let meta_bytes = Bytes::from(written.encode());
    retried(|| put_exact(target, &to, meta_bytes.clone())).await?;
    Ok(name.to_string())
}

/// State file `path` in canonical form: tiered state is read out of its runs (savepoints
/// never name the checkpoint store's shared files, so they can move anywhere and restore into
/// either backend); other files are kept as they are.
async fn canonical(from: &CheckpointStorage, path: &str, bytes: Bytes) -> Result<Bytes, CheckpointError> {
    let rewritten = sluice_state::tiered::to_canonical(std::sync::Arc::clone(from.store()), path, &bytes)
        .await
        .map_err(|e| {
            CheckpointError::Corrupt(format!(
                "state file '{path}' could not be made canonical for the savepoint: {e}"
            ))
        })?;
    Ok(rewritten.map_or(bytes, Bytes::from))
}

/// Tries a store request up to three times: object stores fail now and then, and a savepoint
/// copies many files.
async fn retried<T, E, F, Fut>(mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = std::time::Duration::from_millis(20);
    for _ in 0..2 {
        if let Ok(v) = f().await {
            return Ok(v);
        }
        tokio::time::sleep(delay).await;
        delay *= 4;
    }
    f().await
}

/// Writes `bytes` at `path` unless the very same bytes are there already (a retried copy).
async fn put_exact(store: &dyn BlobStore, path: &str, bytes: Bytes) -> Result<(), CheckpointError> {
    match store.put_if_absent(path, bytes.clone()).await {
        Ok(()) => Ok(()),
        Err(BlobError::AlreadyExists(p)) => {
            if store.get(path).await? == bytes {
                Ok(())
            } else {
                Err(CheckpointError::Storage(BlobError::AlreadyExists(p)))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads and checks the savepoint at the root of `store` (its `_metadata` at the top). A
/// checkpoint of the tiered backend is refused by name: it is not self-contained (its runs
/// are in its job's directory, shared with its other checkpoints).
pub async fn load_savepoint(store: &dyn BlobStore) -> Result<LoadedCheckpoint, CheckpointError> {
    let bytes = store.get("_metadata").await?;
    let meta = CheckpointMetadata::decode("_metadata", &bytes)?;
    if let Some(run) = meta.shared_files().into_iter().next() {
        return Err(CheckpointError::Corrupt(format!(
            "not a savepoint: a checkpoint of the tiered state backend, whose runs live in its job's checkpoint directory (it names '{}'): resume the job from its checkpoint directory, or take a savepoint of it (sluice stop --savepoint-dir, or sluice run --savepoint-dir)",
            run.path
        )));
    }
    load_dir(store, "").await
}

/// The savepoints directly under the root of `store` (directories with a `_metadata`), by name.
pub async fn list_savepoints(store: &dyn BlobStore) -> Result<Vec<String>, CheckpointError> {
    let mut names: Vec<String> = store
        .list("")
        .await?
        .iter()
        .filter_map(|p| {
            let (dir, file) = p.split_once('/')?;
            (file == "_metadata").then(|| dir.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Deletes the savepoint at the root of `store`: exactly the files its `_metadata` names, then
/// `_metadata` itself (last, so a savepoint whose files are half deleted still says what it
/// was; its state files are checked before anything is deleted). Refuses what is not a
/// savepoint (no `_metadata`, or one that does not decode) and deletes nothing then; files
/// the metadata does not name are left alone. Returns the files deleted.
pub async fn dispose_savepoint(store: &dyn BlobStore) -> Result<usize, CheckpointError> {
    let bytes = store.get("_metadata").await?;
    let meta = CheckpointMetadata::decode("_metadata", &bytes)?;
    // Decoding refused paths that leave the directory, so every one is safe to delete.
    let files: Vec<String> = meta
        .operators
        .iter()
        .flat_map(|o| &o.files)
        .map(|f| f.path.clone())
        .collect();
    let mut deleted = 0;
    for path in &files {
        match store.delete(path).await {
            Ok(()) => deleted += 1,
            // Already gone (an earlier dispose was interrupted): nothing to do.
            Err(BlobError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    store.delete("_metadata").await?;
    Ok(deleted + 1)
}
