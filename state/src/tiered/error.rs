use crate::blob::BlobError;

/// Errors of the tiered state store.
///
/// Every message names the run file it concerns, so an operator can tell which object of a
/// checkpoint is damaged or missing.
#[derive(Debug, thiserror::Error)]
pub enum TieredError {
    /// A run file (or one of its blocks) fails its checksum or does not parse: the file is
    /// damaged or is no run file. Never read past: a restore falls back to an earlier
    /// checkpoint.
    #[error("run file '{file}' is corrupt: {reason}")]
    Corrupt {
        /// The run file's object path.
        file: String,
        /// What is wrong, e.g. `block 3 fails its checksum`.
        reason: String,
    },
    /// The object store failed while reading or writing a run file.
    #[error("run file '{file}': {source}")]
    Store {
        /// The run file's object path.
        file: String,
        /// The store's error.
        #[source]
        source: BlobError,
    },
    /// A read needed a block that was not fetched beforehand: a bug in the caller, which must
    /// prefetch every key it reads before reading it synchronously.
    #[error("block {block} of run file '{file}' was read without being prefetched")]
    NotPrefetched {
        /// The run file's object path.
        file: String,
        /// The block's index in the file.
        block: usize,
    },
    /// Keys were added to a run out of order, or a key too short to carry its key group.
    #[error("bad run input: {0}")]
    BadInput(String),
}

impl TieredError {
    pub(crate) fn corrupt(file: &str, reason: impl Into<String>) -> Self {
        TieredError::Corrupt {
            file: file.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn store(file: &str, source: BlobError) -> Self {
        TieredError::Store {
            file: file.to_owned(),
            source,
        }
    }
}
