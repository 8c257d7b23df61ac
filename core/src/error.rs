//! Errors at the boundary of `sluice-core`.

use sluice_state::blob::BlobError;
use sluice_state::StateError;
use sluice_transport::TransportError;

/// A setting, option or parameter is not valid. The message names it and the problem, as the
/// user wrote it (`--checkpoint-timeout (100ms) is shorter than ...`), so callers pass it on
/// as it is; the type says "fix the input", as opposed to a failure of the system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(pub String);

impl InvalidSetting {
    /// The same problem, with what was being set in front (`--restart-strategy: ...`).
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        InvalidSetting(format!("{what}: {}", self.0))
    }
}

impl From<String> for InvalidSetting {
    fn from(s: String) -> Self {
        InvalidSetting(s)
    }
}

/// Why a job could not be built from its name and options (by the embedded runner, the
/// coordinator checking a submission, or a worker building its share).
#[derive(Debug, thiserror::Error)]
pub enum JobBuildError {
    /// No job has this name.
    #[error("unknown job '{name}'; known jobs: {}", known.join(", "))]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// An option is missing, malformed or not used by the job (the message names it).
    #[error(transparent)]
    BadOption(#[from] InvalidSetting),
    /// The job's input cannot be read (names the file).
    #[error("{0}")]
    Input(OperatorError),
    /// The job's graph is not valid.
    #[error(transparent)]
    Graph(#[from] JobError),
}

/// An error raised inside an operator, source or sink; it fails the task that raised it.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A user function reported an error.
    #[error("{0}")]
    User(String),
    /// Reading or writing outside data failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file or resource.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Keyed state was misused.
    #[error(transparent)]
    State(#[from] StateError),
    /// A failure a restart cannot mend: the restored state does not fit the operator (it
    /// belongs to another output, say), or data it needs is gone. The job fails at once
    /// instead of restarting forever; the message says what to do.
    #[error("{0}")]
    Unrecoverable(String),
    /// A window or timer operator got a record without an event timestamp.
    #[error("operator '{0}' needs event timestamps: give the source a WatermarkStrategy with a timestamp assigner")]
    MissingTimestamp(String),
}

impl OperatorError {
    /// An error of a user function, with its message.
    pub fn user(msg: impl Into<String>) -> Self {
        OperatorError::User(msg.into())
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        OperatorError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why a checkpoint could not be written, found or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] BlobError),
    /// A checkpoint file is damaged or of an unknown format (names the file and the problem).
    #[error("{0}")]
    Corrupt(String),
    /// The HA store refused or could not take the checkpoint's entry (this coordinator was
    /// deposed, or etcd did not answer): the checkpoint does not count as complete.
    #[error("the HA store: {0}")]
    Ha(#[from] crate::ha::HaError),
}

/// Why a job could not be built or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job graph is not valid (names the vertex and the problem).
    #[error("invalid job graph: {0}")]
    InvalidGraph(String),
    /// A task failed.
    #[error("task {task} failed: {source}")]
    TaskFailed {
        /// The failed task, as `vertex (subtask/parallelism)`.
        task: String,
        /// Why.
        #[source]
        source: OperatorError,
    },
    /// A task panicked.
    #[error("task {task} panicked: {message}")]
    TaskPanicked {
        /// The task, as `vertex (subtask/parallelism)`.
        task: String,
        /// The panic message.
        message: String,
    },
    /// Checkpointing settings are invalid (names the option).
    #[error("invalid checkpoint configuration: {0}")]
    InvalidCheckpointConfig(InvalidSetting),
    /// Too many consecutive checkpoints failed.
    #[error("{failures} consecutive checkpoints failed (tolerated: {tolerated}); last: {last}")]
    CheckpointsFailing {
        /// Consecutive failures.
        failures: u32,
        /// Failures tolerated.
        tolerated: u32,
        /// Why the last one failed.
        last: String,
    },
    /// The job's state could not be restored from a checkpoint.
    #[error("cannot restore from checkpoint {checkpoint}: {reason}")]
    Restore {
        /// The checkpoint.
        checkpoint: u64,
        /// Why.
        reason: String,
    },
    /// The latest completed checkpoint cannot be restored, and the job may not write its
    /// committed output again (see `UnusableCheckpoint`).
    #[error(
        "checkpoint {checkpoint} cannot be restored: {problem}. Its output was committed when it completed, so restoring an older one ({older} in the store) or starting over would write output again: repair the store, or accept that with --on-unusable-checkpoint fall-back or start-fresh"
    )]
    UnusableCheckpoint {
        /// The latest completed checkpoint.
        checkpoint: u64,
        /// What is wrong with it (names the file).
        problem: String,
        /// How many older completed checkpoints there are (those usable or not).
        older: usize,
    },
    /// Reading checkpoints failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A savepoint could not be taken or restored (says which and why).
    #[error("savepoint: {0}")]
    Savepoint(String),
    /// A worker running tasks of the attempt was lost (cluster mode).
    #[error("worker {worker} was lost: {reason}")]
    WorkerLost {
        /// The worker.
        worker: String,
        /// Why it counts as lost.
        reason: String,
    },
    /// Not enough free task slots for the attempt (cluster mode).
    #[error("not enough task slots: the job needs {needed}, {free} are free after waiting {waited_ms} ms")]
    NotEnoughSlots {
        /// Slots the job needs.
        needed: u32,
        /// Slots free when the wait ended.
        free: u32,
        /// How long it waited.
        waited_ms: u64,
    },
    /// A task running on a worker failed; the reason as the worker reported it (cluster mode).
    #[error("task {task} failed: {reason}")]
    RemoteTask {
        /// The task, as `vertex (subtask/parallelism)`.
        task: String,
        /// The worker's report.
        reason: String,
        /// The worker found that a restart would fail the same way.
        permanent: bool,
    },
    /// A peer sent something that breaks the protocol (names it).
    #[error("{0}")]
    Protocol(String),
    /// A channel broke (its other end failed).
    #[error("task {task}: {source}")]
    Transport {
        /// The task that saw it.
        task: String,
        /// The channel error.
        #[source]
        source: TransportError,
    },
}

impl JobError {
    /// The failure without the task it happened in, for a report that names the task itself
    /// (a worker's `TaskFailed` frame: the coordinator says "task X failed: " once).
    pub fn reason_within_task(&self) -> String {
        match self {
            JobError::TaskFailed { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }

    /// Whether a restart would fail the same way: the checkpoint or savepoint does not fit the
    /// job, or the job itself is invalid. The job then fails at once instead of restarting.
    pub fn is_permanent(&self) -> bool {
        match self {
            JobError::InvalidGraph(_)
            | JobError::InvalidCheckpointConfig(_)
            | JobError::Restore { .. }
            | JobError::UnusableCheckpoint { .. }
            | JobError::Savepoint(_) => true,
            JobError::RemoteTask { permanent, .. } => *permanent,
            JobError::TaskFailed {
                source: OperatorError::Unrecoverable(_),
                ..
            } => true,
            JobError::TaskFailed { .. }
            | JobError::TaskPanicked { .. }
            | JobError::CheckpointsFailing { .. }
            | JobError::Checkpoint(_)
            | JobError::WorkerLost { .. }
            | JobError::NotEnoughSlots { .. }
            | JobError::Protocol(_)
            | JobError::Transport { .. } => false,
        }
    }
}
