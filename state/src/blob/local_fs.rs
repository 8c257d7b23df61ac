//! [`LocalFsStore`]: objects as files under a root directory.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{validate_path, BlobError, BlobStore, BoxFuture, TEMP_PREFIX};

/// How many temporary file names `put_if_absent` tries before giving up (names can collide
/// only with files left behind by a crashed process that had the same process id).
const MAX_TEMP_NAME_ATTEMPTS: u32 = 16;

/// How many times `put_if_absent` recreates the object's directory when a concurrent
/// `delete` removes it (as empty) between creating it and writing the temporary file.
const MAX_DIR_ATTEMPTS: u32 = 8;

/// Makes temporary file names unique within the process; the process id covers the rest.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Objects as files under a root directory: object `job/chk-1/_metadata` is the file
/// `<root>/job/chk-1/_metadata`.
///
/// `put_if_absent` writes a temporary file (named `.tmp-…`, never listed) in the object's
/// directory, syncs it, then hard-links it to the object's name. The link fails atomically if
/// the name exists, so creation is all-or-nothing and exclusive even between processes. It
/// needs a filesystem with hard links (any local POSIX filesystem, NTFS).
///
/// Because objects are files and their path prefixes are directories, an object path cannot
/// also be a directory of other objects: with `a/b` stored, putting `a` fails (and vice versa).
/// A crash during a put can leave a `.tmp-` file behind; it is invisible to `list` and
/// harmless, but nothing deletes it.
///
/// The file operations are blocking `std::fs` calls made inside the async methods, which is
/// fine for the small objects of checkpoint metadata.
///
/// ```
/// use bytes::Bytes;
/// use sluice_state::blob::{BlobStore, LocalFsStore};
///
/// # let dir = tempfile::tempdir().unwrap();
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = LocalFsStore::new(dir.path().join("checkpoints"))?;
/// store.put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"meta")).await?;
/// assert!(store.root().join("job/chk-1/_metadata").is_file());
/// # Ok::<(), sluice_state::blob::BlobError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct LocalFsStore {
    root: PathBuf,
}

impl LocalFsStore {
    /// Opens (creating it if needed) the store rooted at directory `root`. Fails, naming the
    /// directory, if it cannot be created or is not a writable directory (checked by creating
    /// and removing a probe file).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        let unusable = |e: io::Error| BlobError::Io {
            path: root.display().to_string(),
            source: io::Error::new(
                e.kind(),
                format!("cannot use it as a blob store root, which must be a writable directory: {e}"),
            ),
        };
        fs::create_dir_all(&root).map_err(unusable)?;
        if !root.is_dir() {
            return Err(unusable(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        let (probe, file) = create_temp_file(&root).map_err(unusable)?;
        drop(file);
        fs::remove_file(&probe).map_err(unusable)?;
        Ok(LocalFsStore { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a (validated) object path.
    fn file_of(&self, path: &str) -> PathBuf {
        debug_assert!(validate_path(path).is_ok(), "unvalidated path '{path}'");
        let mut file = self.root.clone();
        file.extend(path.split('/'));
        file
    }

    fn put_blocking(&self, path: &str, bytes: &[u8]) -> Result<(), BlobError> {
        validate_path(path)?;
        let target = self.file_of(path);
        let io_error = |source: io::Error| BlobError::Io {
            path: target.display().to_string(),
            source,
        };
        let dir = target.parent().expect("an object file lies below the root");
        // Cheap early answer for a retried put; the hard link below is what decides.
        if target.is_file() {
            return Err(BlobError::AlreadyExists(path.to_owned()));
        }

        // Directories this put creates: their entries in their parents must be synced too.
        let mut created_dirs = Vec::new();
        let mut attempt = 1;
        let (temp, mut file) = loop {
            created_dirs.extend(self.missing_dirs(dir));
            fs::create_dir_all(dir).map_err(io_error)?;
            match create_temp_file(dir) {
                Ok(created) => break created,
                // A concurrent delete removed the directory while it was empty: create it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < MAX_DIR_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(io_error(e)),
            }
        };
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        let linked = written.and_then(|()| fs::hard_link(&temp, &target));
        // Best effort: a temporary file left behind is never listed and does no harm.
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(if target.is_dir() {
                    io_error(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        "a directory of other objects has this name, so it cannot be an object",
                    ))
                } else {
                    BlobError::AlreadyExists(path.to_owned())
                });
            }
            Err(e) => return Err(io_error(e)),
        }
        // Make the new name (and any new directories) durable before reporting success.
        sync_dir(dir).map_err(io_error)?;
        for created in &created_dirs {
            if let Some(parent) = created.parent() {
                sync_dir(parent).map_err(io_error)?;
            }
        }
        Ok(())
    }

    /// The directories from `dir` up to (not including) the root that do not exist yet.
    fn missing_dirs(&self, dir: &Path) -> Vec<PathBuf> {
        dir.ancestors()
            .take_while(|d| *d != self.root && !d.is_dir())
            .map(Path::to_path_buf)
            .collect()
    }

    fn get_blocking(&self, path: &str) -> Result<Bytes, BlobError> {
        validate_path(path)?;
        let file = self.file_of(path);
        match fs::read(&file) {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            // A directory, or a parent that is a file, is no object either.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory
                ) =>
            {
                Err(BlobError::NotFound(path.to_owned()))
            }
            Err(source) => Err(BlobError::Io {
                path: file.display().to_string(),
                source,
            }),
        }
    }

    /// Opens the file of object `path` with its size; a directory or missing file is no
    /// object.
    fn open_object(&self, path: &str) -> Result<(fs::File, u64), BlobError> {
        validate_path(path)?;
        let file = self.file_of(path);
        let io = |source: io::Error| BlobError::Io {
            path: file.display().to_string(),
            source,
        };
        let f = match fs::File::open(&file) {
            Ok(f) => f,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Err(BlobError::NotFound(path.to_owned()))
            }
            Err(e) => return Err(io(e)),
        };
        let meta = f.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(BlobError::NotFound(path.to_owned()));
        }
        Ok((f, meta.len()))
    }

    fn get_range_blocking(&self, path: &str, range: std::ops::Range<u64>) -> Result<Bytes, BlobError> {
        use std::io::{Read, Seek};
        let (mut f, size) = self.open_object(path)?;
        let (start, end) = super::check_range(path, &range, size)?;
        let mut buf = vec![0; end - start];
        f.seek(io::SeekFrom::Start(range.start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|source| BlobError::Io {
                path: self.file_of(path).display().to_string(),
                source,
            })?;
        Ok(Bytes::from(buf))
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let mut found = Vec::new();
        // Depth-first over directories whose objects could match `prefix`; symlinks are not
        // followed, so the walk ends (the tree below the root is finite).
        let mut pending = vec![(self.root.clone(), String::new())];
        while let Some((dir, dir_path)) = pending.pop() {
            let io_error = |source: io::Error| BlobError::Io {
                path: dir.display().to_string(),
                source,
            };
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Removed by a concurrent delete after its parent was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !dir_path.is_empty() => continue,
                Err(e) => return Err(io_error(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_error)?;
                // Object names are UTF-8; anything else was not put here.
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let path = if dir_path.is_empty() {
                    name
                } else {
                    format!("{dir_path}/{name}")
                };
                // Temporary files (and names no put could create) are not objects.
                if validate_path(&path).is_err() {
                    continue;
                }
                let file_type = match entry.file_type() {
                    Ok(file_type) => file_type,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(e)),
                };
                if file_type.is_dir() {
                    let as_prefix = format!("{path}/");
                    if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                        pending.push((entry.path(), path));
                    }
                } else if file_type.is_file() && path.starts_with(prefix) {
                    found.push(path);
                }
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    fn delete_blocking(&self, path: &str) -> Result<(), BlobError> {
        validate_path(path)?;
        let file = self.file_of(path);
        match fs::remove_file(&file) {
            Ok(()) => {}
            // Nothing to delete: no file, a parent that is a file, or a directory of objects.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
                ) => {}
            Err(source) => {
                return Err(BlobError::Io {
                    path: file.display().to_string(),
                    source,
                })
            }
        }
        // Remove the parents that are now empty, deepest first, up to (not including) the
        // root. `remove_dir` fails on a non-empty directory, which ends the climb. Best effort:
        // an empty directory left behind is harmless.
        let parents = path.split('/').count() - 1;
        for dir in file.ancestors().skip(1).take(parents) {
            if fs::remove_dir(dir).is_err() {
                break;
            }
        }
        Ok(())
    }
}

impl BlobStore for LocalFsStore {
    fn put_if_absent<'a>(&'a self, path: &'a str, bytes: Bytes) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move { self.put_blocking(path, &bytes) })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Bytes, BlobError>> {
        Box::pin(async move { self.get_blocking(path) })
    }

    fn get_range<'a>(&'a self, path: &'a str, range: std::ops::Range<u64>) -> BoxFuture<'a, Result<Bytes, BlobError>> {
        Box::pin(async move { self.get_range_blocking(path, range) })
    }

    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64, BlobError>> {
        Box::pin(async move { self.open_object(path).map(|(_, size)| size) })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, BlobError>> {
        Box::pin(async move { self.list_blocking(prefix) })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move { self.delete_blocking(path) })
    }
}

/// Creates a new, empty temporary file in `dir`, with a name no other file has.
fn create_temp_file(dir: &Path) -> io::Result<(PathBuf, fs::File)> {
    for _ in 0..MAX_TEMP_NAME_ATTEMPTS {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
        match fs::OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            // Left behind by a crashed process that had our process id: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free temporary file name after {MAX_TEMP_NAME_ATTEMPTS} attempts"),
    ))
}

/// Makes the entries of `dir` (created, linked or removed files) durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here; their entries are durable as the
/// filesystem makes them.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::contract::{self, rt};

    fn store() -> (tempfile::TempDir, LocalFsStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFsStore::new(dir.path().join("root")).unwrap();
        (dir, store)
    }

    /// Every file and directory below `root`, relative, sorted (temporary files included).
    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let rel = entry.path().strip_prefix(root).unwrap().to_owned();
                let rel = rel.to_str().unwrap().replace('\\', "/");
                if entry.file_type().unwrap().is_dir() {
                    out.push(format!("{rel}/"));
                    pending.push(entry.path());
                } else {
                    out.push(rel);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn put_then_get_round_trips() {
        let (_dir, store) = store();
        rt().block_on(contract::put_then_get_round_trips(&store));
    }

    #[test]
    fn second_put_is_already_exists_and_keeps_first_content() {
        let (_dir, store) = store();
        rt().block_on(contract::second_put_is_already_exists_and_keeps_first(&store));
    }

    #[test]
    fn get_of_missing_object_is_not_found() {
        let (_dir, store) = store();
        rt().block_on(contract::get_of_missing_object_is_not_found(&store));
    }

    #[test]
    fn ranged_reads_and_head_agree_with_get() {
        let (_dir, store) = store();
        rt().block_on(contract::ranged_reads_and_head_agree_with_get(&store));
    }

    #[test]
    fn list_returns_sorted_paths_by_prefix() {
        let (_dir, store) = store();
        rt().block_on(contract::list_returns_sorted_paths_by_prefix(&store));
    }

    #[test]
    fn delete_is_idempotent() {
        let (_dir, store) = store();
        rt().block_on(contract::delete_is_idempotent(&store));
    }

    #[test]
    fn invalid_paths_are_rejected_with_reason() {
        let (_dir, store) = store();
        rt().block_on(contract::invalid_paths_are_rejected_with_reason(&store));
    }

    #[test]
    fn delete_prefix_deletes_only_the_prefix() {
        let (_dir, store) = store();
        rt().block_on(contract::delete_prefix_deletes_only_the_prefix(&store));
    }

    #[test]
    fn put_leaves_no_temp_file_and_list_never_returns_one() {
        let (_dir, store) = store();
        rt().block_on(async {
            store
                .put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"m"))
                .await
                .unwrap();
            let _ = store
                .put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"again"))
                .await
                .unwrap_err();
            assert_eq!(tree(store.root()), ["job/", "job/chk-1/", "job/chk-1/_metadata"]);
            // As a crashed put would leave them.
            fs::write(store.root().join("job/chk-1/.tmp-77-3"), b"partial").unwrap();
            fs::write(store.root().join(".tmp-1-1"), b"partial").unwrap();
            assert_eq!(store.list("").await.unwrap(), ["job/chk-1/_metadata"]);
            assert_eq!(store.list("job/chk-1/").await.unwrap(), ["job/chk-1/_metadata"]);
            assert_eq!(store.list("job/chk-1/.tmp").await.unwrap(), Vec::<String>::new());
        });
    }

    #[test]
    fn delete_removes_empty_parent_dirs_but_not_the_root() {
        let (_dir, store) = store();
        rt().block_on(async {
            for path in ["job/chk-1/tasks/0", "job/chk-1/_metadata"] {
                store.put_if_absent(path, Bytes::new()).await.unwrap();
            }
            store.delete("job/chk-1/tasks/0").await.unwrap();
            assert_eq!(tree(store.root()), ["job/", "job/chk-1/", "job/chk-1/_metadata"]);
            store.delete("job/chk-1/_metadata").await.unwrap();
            assert!(tree(store.root()).is_empty());
            assert!(store.root().is_dir());
            store.delete("job/chk-1/_metadata").await.unwrap();
            assert!(store.root().is_dir());
        });
    }

    #[test]
    fn reopening_a_root_sees_its_objects() {
        let (dir, store) = store();
        rt().block_on(async {
            store
                .put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"m"))
                .await
                .unwrap();
            drop(store);
            let reopened = LocalFsStore::new(dir.path().join("root")).unwrap();
            assert_eq!(reopened.get("job/chk-1/_metadata").await.unwrap(), "m");
            assert_eq!(reopened.list("").await.unwrap(), ["job/chk-1/_metadata"]);
        });
    }

    #[test]
    fn new_on_a_file_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        for root in [file.clone(), file.join("below")] {
            let err = LocalFsStore::new(&root).unwrap_err();
            assert!(matches!(&err, BlobError::Io { path, .. } if *path == root.display().to_string()));
            let msg = err.to_string();
            assert!(msg.contains(&root.display().to_string()), "{msg}");
            assert!(msg.contains("writable directory"), "{msg}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn new_on_an_unwritable_dir_fails_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("read-only");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o555)).unwrap();
        // Root (and CAP_DAC_OVERRIDE) writes anyway; then there is nothing to check.
        if fs::write(root.join("canary"), b"").is_ok() {
            return;
        }
        let err = LocalFsStore::new(&root).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&root.display().to_string()), "{msg}");
        assert!(msg.contains("writable directory"), "{msg}");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn an_object_cannot_also_be_a_directory_of_objects() {
        let (_dir, store) = store();
        rt().block_on(async {
            store.put_if_absent("a/b", Bytes::from_static(b"b")).await.unwrap();
            let err = store.put_if_absent("a", Bytes::new()).await.unwrap_err();
            assert!(matches!(err, BlobError::Io { .. }), "{err:?}");
            assert!(err.to_string().contains("directory of other objects"), "{err}");
            assert!(matches!(store.get("a").await, Err(BlobError::NotFound(_))));
            store.delete("a").await.unwrap();
            assert_eq!(store.get("a/b").await.unwrap(), "b");

            store.put_if_absent("c", Bytes::new()).await.unwrap();
            let err = store.put_if_absent("c/d", Bytes::new()).await.unwrap_err();
            assert!(err.to_string().contains("c/d"), "{err}");
            assert!(matches!(store.get("c/d").await, Err(BlobError::NotFound(_))));
            assert_eq!(store.list("").await.unwrap(), ["a/b", "c"]);
        });
    }
}
