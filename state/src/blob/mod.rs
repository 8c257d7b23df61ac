//! A small object-store abstraction: where checkpoints and savepoints are stored.
//!
//! [`BlobStore`] has six operations (create-if-absent, get, ranged get, head, list by prefix,
//! delete) over
//! immutable objects named by relative, `/`-separated paths. Two stores implement it:
//! [`LocalFsStore`] (files under a root directory) and [`MemoryStore`] (a map in memory with
//! seeded, injectable faults and latency, for tests and the simulation).
//!
//! # The commit protocol it supports
//!
//! Objects are never overwritten, so the only conditional write is
//! [`put_if_absent`](BlobStore::put_if_absent): create an object at a new path, atomically
//! (a reader sees all of it or nothing), or fail with [`BlobError::AlreadyExists`]. Every
//! backend can do that, a local filesystem included (a hard link fails atomically when the
//! target exists), whereas compare-and-swap of an existing object cannot be had everywhere.
//! So a checkpoint commits like this:
//!
//! 1. write its data objects (SSTs, per-task manifests) under new, unique paths;
//! 2. write `<job>/chk-<id>/_metadata` **last**, with `put_if_absent`. The checkpoint is
//!    complete exactly when its `_metadata` exists; a crash before that leaves only
//!    unreferenced objects, which garbage collection deletes later;
//! 3. a restore lists the `chk-` prefix and takes the highest checkpoint whose `_metadata`
//!    exists.
//!
//! Because `_metadata` is created at a new numbered path, two coordinators racing for the
//! same checkpoint id cannot both commit: one of them gets `AlreadyExists`. A put that fails
//! with an ambiguous error ([`BlobError::Injected`] or a timeout) may have been stored; the
//! caller finds out by retrying: `AlreadyExists` on retry then means "committed earlier",
//! provided the retry writes the same bytes (the caller can `get` and compare).
//!
//! # Paths
//!
//! Non-empty, relative (no leading `/`), `/`-separated, with no empty segment (so no `//` and
//! no trailing `/`), no `.` or `..` segment, no backslash, no NUL byte, and no segment that
//! starts with `.tmp-` (reserved for [`LocalFsStore`]'s temporary files). Both stores reject
//! anything else with [`BlobError::InvalidPath`]. A `list` prefix is a plain string prefix
//! and is not validated.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use sluice_state::blob::{BlobError, BlobStore, MemoryStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! store.put_if_absent("job/chk-1/task-0", Bytes::from_static(b"state")).await?;
//! store.put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"meta")).await?; // commit
//! let again = store.put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"other")).await;
//! assert!(matches!(again, Err(BlobError::AlreadyExists(_))));
//! assert_eq!(store.list("job/chk-1/").await?, ["job/chk-1/_metadata", "job/chk-1/task-0"]);
//! # Ok::<(), BlobError>(())
//! # }).unwrap();
//! ```

mod error;
mod local_fs;
mod memory;
#[cfg(all(feature = "object-store", not(madsim)))]
mod object_store;
mod prefixed;

#[cfg(all(feature = "object-store", not(madsim)))]
pub use self::object_store::ObjectStoreBlob;
pub use error::BlobError;
pub use local_fs::LocalFsStore;
pub use memory::{FaultConfig, MemoryStore};
pub use prefixed::PrefixedStore;

/// A boxed, `Send` future: what [`BlobStore`]'s methods return, so the trait is usable as
/// `dyn BlobStore`.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where checkpoints and savepoints are stored. Paths are relative, '/'-separated, no "..",
/// no leading '/' (see the [module docs](self) for the full rules and the commit protocol).
pub trait BlobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates `path` holding `bytes` only if it does not exist yet; atomic: a reader sees all
    /// of it or nothing. `Err(BlobError::AlreadyExists)` if present (the stored object is kept).
    fn put_if_absent<'a>(&'a self, path: &'a str, bytes: bytes::Bytes) -> BoxFuture<'a, Result<(), BlobError>>;

    /// The whole object. `Err(BlobError::NotFound)` if absent.
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<bytes::Bytes, BlobError>>;

    /// The bytes `range` (`start..end`, end exclusive) of the object: how a reader fetches one
    /// block of a large file without the rest. `Err(BlobError::OutOfRange)` unless
    /// `start <= end <= size`; `Err(BlobError::NotFound)` if absent.
    fn get_range<'a>(
        &'a self,
        path: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<bytes::Bytes, BlobError>>;

    /// The object's size in bytes. `Err(BlobError::NotFound)` if absent.
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64, BlobError>>;

    /// All object paths that start with `prefix` (a plain string prefix over full paths, so
    /// `"job/chk-1"` also matches `"job/chk-10/_metadata"`), sorted ascending.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, BlobError>>;

    /// Deletes one object; deleting a missing object is `Ok` (idempotent).
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), BlobError>>;
}

/// A shared store is a store (so a [`PrefixedStore`] can wrap an `Arc<dyn BlobStore>`).
impl<T: BlobStore + ?Sized> BlobStore for std::sync::Arc<T> {
    fn put_if_absent<'a>(&'a self, path: &'a str, bytes: bytes::Bytes) -> BoxFuture<'a, Result<(), BlobError>> {
        (**self).put_if_absent(path, bytes)
    }
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<bytes::Bytes, BlobError>> {
        (**self).get(path)
    }
    fn get_range<'a>(
        &'a self,
        path: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<bytes::Bytes, BlobError>> {
        (**self).get_range(path, range)
    }
    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64, BlobError>> {
        (**self).head(path)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, BlobError>> {
        (**self).list(prefix)
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        (**self).delete(path)
    }
}

/// Deletes every object under `prefix` (a `list` then one `delete` per object) and returns how
/// many objects were listed and deleted.
///
/// Not atomic: on error some objects may already be gone. Calling it again is safe, since
/// `delete` is idempotent. An empty prefix deletes everything in the store.
pub async fn delete_prefix(store: &dyn BlobStore, prefix: &str) -> Result<usize, BlobError> {
    let paths = store.list(prefix).await?;
    for path in &paths {
        debug_assert!(path.starts_with(prefix), "list('{prefix}') returned '{path}'");
        store.delete(path).await?;
    }
    Ok(paths.len())
}

/// Checks that `path` is a valid object path (see the module docs).
pub(crate) fn validate_path(path: &str) -> Result<(), BlobError> {
    let reason = if path.is_empty() {
        Some("the path is empty")
    } else if path.starts_with('/') {
        Some("the path is absolute (starts with '/')")
    } else if path.contains('\\') {
        Some("the path contains a backslash; use '/' to separate segments")
    } else if path.contains('\0') {
        Some("the path contains a NUL byte")
    } else {
        path.split('/').find_map(|segment| match segment {
            "" => Some("the path has an empty segment ('//' or a trailing '/')"),
            ".." => Some("the path has a '..' segment"),
            "." => Some("the path has a '.' segment"),
            s if s.starts_with(TEMP_PREFIX) => {
                Some("a segment starts with '.tmp-', which is reserved for temporary files")
            }
            _ => None,
        })
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(BlobError::InvalidPath {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// The name prefix of [`LocalFsStore`]'s temporary files; no object segment may start with it.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Checks that `range` lies inside an object of `size` bytes and returns it as offsets into
/// the object's bytes.
pub(crate) fn check_range(path: &str, range: &std::ops::Range<u64>, size: u64) -> Result<(usize, usize), BlobError> {
    let outside = || BlobError::OutOfRange {
        path: path.to_owned(),
        start: range.start,
        end: range.end,
        size,
    };
    if range.start > range.end || range.end > size {
        return Err(outside());
    }
    // Inside an object that is in memory or in one file, so within usize on any host that
    // could hold it; refused rather than truncated otherwise.
    let start = usize::try_from(range.start).map_err(|_| outside())?;
    let end = usize::try_from(range.end).map_err(|_| outside())?;
    Ok((start, end))
}

/// Behaviour every [`BlobStore`] must have, run against each store by its own tests.
#[cfg(test)]
pub(crate) mod contract {
    use bytes::Bytes;

    use super::{delete_prefix, BlobError, BlobStore};

    pub(crate) fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub(crate) async fn put_then_get_round_trips(store: &dyn BlobStore) {
        let bytes = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>());
        store.put_if_absent("job/chk-1/task-0", bytes.clone()).await.unwrap();
        assert_eq!(store.get("job/chk-1/task-0").await.unwrap(), bytes);
        store.put_if_absent("empty", Bytes::new()).await.unwrap();
        assert_eq!(store.get("empty").await.unwrap(), Bytes::new());
    }

    pub(crate) async fn second_put_is_already_exists_and_keeps_first(store: &dyn BlobStore) {
        store
            .put_if_absent("job/chk-3/_metadata", Bytes::from_static(b"first"))
            .await
            .unwrap();
        let err = store
            .put_if_absent("job/chk-3/_metadata", Bytes::from_static(b"second"))
            .await
            .unwrap_err();
        assert!(matches!(&err, BlobError::AlreadyExists(p) if p == "job/chk-3/_metadata"));
        assert_eq!(err.to_string(), "object 'job/chk-3/_metadata' already exists");
        assert_eq!(store.get("job/chk-3/_metadata").await.unwrap(), "first");
    }

    pub(crate) async fn get_of_missing_object_is_not_found(store: &dyn BlobStore) {
        let err = store.get("job/chk-9/_metadata").await.unwrap_err();
        assert!(matches!(&err, BlobError::NotFound(p) if p == "job/chk-9/_metadata"));
        assert_eq!(err.to_string(), "object 'job/chk-9/_metadata' not found");
    }

    pub(crate) async fn list_returns_sorted_paths_by_prefix(store: &dyn BlobStore) {
        for path in [
            "job/chk-2/_metadata",
            "job/chk-10/_metadata",
            "job/chk-1/task-1",
            "job/chk-1/_metadata",
            "job/shared/a.sst",
            "other/chk-1/_metadata",
            "jobx",
        ] {
            store.put_if_absent(path, Bytes::from(path)).await.unwrap();
        }
        assert_eq!(
            store.list("job/chk-1").await.unwrap(),
            ["job/chk-1/_metadata", "job/chk-1/task-1", "job/chk-10/_metadata"]
        );
        assert_eq!(
            store.list("job/chk-1/").await.unwrap(),
            ["job/chk-1/_metadata", "job/chk-1/task-1"]
        );
        assert_eq!(
            store.list("job/").await.unwrap(),
            [
                "job/chk-1/_metadata",
                "job/chk-1/task-1",
                "job/chk-10/_metadata",
                "job/chk-2/_metadata",
                "job/shared/a.sst"
            ]
        );
        assert_eq!(
            store.list("job").await.unwrap().last().map(String::as_str),
            Some("jobx")
        );
        assert_eq!(store.list("").await.unwrap().len(), 7);
        assert_eq!(
            store.list("job/chk-1/_metadata").await.unwrap(),
            ["job/chk-1/_metadata"]
        );
        assert!(store.list("nothing/").await.unwrap().is_empty());
        // Prefixes no valid path can start with match nothing (and must not escape a root).
        for prefix in ["../", "/job", "job//", "./job", "job\\"] {
            assert!(store.list(prefix).await.unwrap().is_empty(), "{prefix}");
        }
    }

    pub(crate) async fn delete_is_idempotent(store: &dyn BlobStore) {
        store
            .put_if_absent("job/chk-1/task-0", Bytes::from_static(b"x"))
            .await
            .unwrap();
        store
            .put_if_absent("job/chk-1/task-1", Bytes::from_static(b"y"))
            .await
            .unwrap();
        store.delete("job/chk-1/task-0").await.unwrap();
        store.delete("job/chk-1/task-0").await.unwrap();
        store.delete("never/existed").await.unwrap();
        assert!(matches!(
            store.get("job/chk-1/task-0").await,
            Err(BlobError::NotFound(_))
        ));
        assert_eq!(store.list("").await.unwrap(), ["job/chk-1/task-1"]);
        // The path is free again.
        store
            .put_if_absent("job/chk-1/task-0", Bytes::from_static(b"z"))
            .await
            .unwrap();
        assert_eq!(store.get("job/chk-1/task-0").await.unwrap(), "z");
    }

    pub(crate) async fn invalid_paths_are_rejected_with_reason(store: &dyn BlobStore) {
        let cases = [
            ("", "empty"),
            ("/abs/path", "absolute"),
            ("a/../b", "'..'"),
            ("..", "'..'"),
            ("a/./b", "'.'"),
            ("a\\b", "backslash"),
            ("a//b", "empty segment"),
            ("a/b/", "empty segment"),
            ("a/\0", "NUL"),
            ("a/.tmp-1", ".tmp-"),
        ];
        for (path, expected) in cases {
            let errors = [
                store.put_if_absent(path, Bytes::new()).await.unwrap_err(),
                store.get(path).await.unwrap_err(),
                store.delete(path).await.unwrap_err(),
            ];
            for err in errors {
                let BlobError::InvalidPath { path: p, reason } = &err else {
                    panic!("'{path}' gave {err:?}, expected InvalidPath");
                };
                assert_eq!(p, path);
                assert!(reason.contains(expected), "'{path}': {reason}");
                let msg = err.to_string();
                assert!(msg.starts_with(&format!("invalid object path '{path}': ")), "{msg}");
            }
        }
        assert!(store.list("").await.unwrap().is_empty());
    }

    pub(crate) async fn ranged_reads_and_head_agree_with_get(store: &dyn BlobStore) {
        let bytes: Bytes = (0..1000u32).map(|i| (i % 251) as u8).collect();
        store.put_if_absent("run/1.sst", bytes.clone()).await.unwrap();
        assert_eq!(store.head("run/1.sst").await.unwrap(), 1000);
        assert_eq!(store.get_range("run/1.sst", 0..1000).await.unwrap(), bytes);
        assert_eq!(store.get_range("run/1.sst", 10..20).await.unwrap(), bytes.slice(10..20));
        assert_eq!(
            store.get_range("run/1.sst", 999..1000).await.unwrap(),
            bytes.slice(999..)
        );
        assert!(store.get_range("run/1.sst", 1000..1000).await.unwrap().is_empty());
        // A reversed range (start past end) is a caller's bug and refused like the others.
        let (start, end) = (20, 10);
        for bad in [990..1001, start..end, 1001..1002] {
            let err = store.get_range("run/1.sst", bad.clone()).await.unwrap_err();
            assert!(
                matches!(err, BlobError::OutOfRange { size: 1000, .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("'run/1.sst' of 1000 bytes"), "{err}");
        }
        assert!(matches!(store.head("run/2.sst").await, Err(BlobError::NotFound(_))));
        assert!(matches!(
            store.get_range("run/2.sst", 0..1).await,
            Err(BlobError::NotFound(_))
        ));
        assert!(
            matches!(store.head("run").await, Err(BlobError::NotFound(_))),
            "a prefix is no object"
        );
        assert!(matches!(store.head("../x").await, Err(BlobError::InvalidPath { .. })));
    }

    pub(crate) async fn delete_prefix_deletes_only_the_prefix(store: &dyn BlobStore) {
        for path in ["job/chk-1/a", "job/chk-1/b", "job/chk-10/a", "job/chk-2/a"] {
            store.put_if_absent(path, Bytes::new()).await.unwrap();
        }
        assert_eq!(delete_prefix(store, "job/chk-1/").await.unwrap(), 2);
        assert_eq!(store.list("").await.unwrap(), ["job/chk-10/a", "job/chk-2/a"]);
        assert_eq!(delete_prefix(store, "job/chk-1/").await.unwrap(), 0);
        assert_eq!(delete_prefix(store, "").await.unwrap(), 2);
        assert!(store.list("").await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths_are_accepted() {
        for path in [
            "a",
            "job/chk-1/_metadata",
            "job/shared/0-127/x.sst",
            ".hidden",
            "a/.b",
            "...",
            "a/tmp-1",
        ] {
            validate_path(path).unwrap();
        }
    }

    #[test]
    fn blob_store_is_object_safe() {
        let store: Box<dyn BlobStore> = Box::new(MemoryStore::new());
        contract::rt().block_on(contract::put_then_get_round_trips(&*store));
    }

    #[test]
    fn delete_prefix_deletes_only_the_prefix() {
        let store = MemoryStore::new();
        contract::rt().block_on(contract::delete_prefix_deletes_only_the_prefix(&store));
    }

    #[test]
    fn delete_prefix_stops_at_the_first_error_and_can_be_retried() {
        let store = MemoryStore::new();
        contract::rt().block_on(async {
            for path in ["p/a", "p/b", "p/c"] {
                store.put_if_absent(path, bytes::Bytes::new()).await.unwrap();
            }
            store.fail_next("delete", 1);
            assert!(matches!(
                delete_prefix(&store, "p/").await,
                Err(BlobError::Injected { op: "delete", .. })
            ));
            assert_eq!(delete_prefix(&store, "p/").await.unwrap(), 3);
            assert!(store.paths().is_empty());
        });
    }
}
