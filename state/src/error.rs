/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Restored state was written with other types than the job now declares.
    #[error("state '{state}' was saved with type {stored}, the job now declares {declared}: keep the type, declare a migration (KeyedStateStore::migrate_state), or give the operator a new uid and start with --allow-non-restored-state")]
    TypeChanged {
        /// The state's name.
        state: String,
        /// Its types in the checkpoint or savepoint (`key => value`).
        stored: String,
        /// Its types in the job.
        declared: String,
    },
    /// Two states of one operator were registered under the same name.
    #[error("state '{0}' is registered twice in this operator")]
    DuplicateName(String),
    /// A state was registered with one type and used with another.
    #[error("state '{name}' has type {registered}, not {requested}")]
    TypeMismatch {
        /// The state's name.
        name: String,
        /// The type it was registered with.
        registered: &'static str,
        /// The type it was asked for.
        requested: &'static str,
    },
    /// State could not be serialized.
    #[error("cannot encode state: {0}")]
    Encode(String),
    /// A snapshot file is damaged or of an unknown format (names the file and the problem).
    #[error("{0}")]
    Corrupt(String),
    /// A snapshot holds state for a table the operator does not declare.
    #[error("the snapshot holds state '{0}', which this operator does not declare")]
    UnknownState(String),
    /// The tiered backend failed (a run file missing, damaged or unreachable, a read that was
    /// not prefetched); names the file and the problem.
    #[error("tiered state: {0}")]
    Tiered(String),
    /// A max parallelism outside 1..=32768.
    #[error("max parallelism must be between 1 and 32768, got {0}")]
    BadMaxParallelism(u32),
}

impl StateError {
    pub(crate) fn encode(e: bincode::Error) -> Self {
        StateError::Encode(e.to_string())
    }
}
