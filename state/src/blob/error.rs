/// Errors of a [`BlobStore`](super::BlobStore).
///
/// Every message names the object path (or, for [`LocalFsStore`](super::LocalFsStore), the
/// file or directory) and the problem, e.g. `object 'job/chk-3/_metadata' already exists`.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object at this path.
    #[error("object '{0}' not found")]
    NotFound(String),
    /// `put_if_absent` found an object at this path; the stored object was not changed.
    #[error("object '{0}' already exists")]
    AlreadyExists(String),
    /// The backend's I/O failed. After a failed put the object may or may not exist (the
    /// failure can come after the object became visible, e.g. while syncing its directory).
    #[error("I/O error on '{path}': {source}")]
    Io {
        /// The file or directory the operation was working on.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a valid object path (see [`BlobStore`](super::BlobStore)).
    #[error("invalid object path '{path}': {reason}")]
    InvalidPath {
        /// The rejected path, as given.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A ranged read asked for bytes outside the object (or for a range that ends before it
    /// starts): a reader with a wrong offset must not get a short block it would misparse.
    #[error("range {start}..{end} is outside object '{path}' of {size} bytes")]
    OutOfRange {
        /// The object path.
        path: String,
        /// The first byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The object's size.
        size: u64,
    },
    /// A fault injected by a test store ([`MemoryStore`](super::MemoryStore)). For a put this
    /// may be an ambiguous commit: the object may or may not have been stored.
    #[error("injected fault: {op} of object '{path}' failed")]
    Injected {
        /// The operation: `"put"`, `"get"`, `"list"` or `"delete"`.
        op: &'static str,
        /// The object path (the prefix, for `list`).
        path: String,
    },
}
