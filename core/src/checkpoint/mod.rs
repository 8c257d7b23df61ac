//! Checkpoints: consistent snapshots of a running job by aligned barriers (asynchronous barrier
//! snapshotting, Carbone et al. 2015), their storage, and the restart strategies that use them.
//!
//! The [`coordinator`] injects barrier N at every source at the configured interval. A task
//! that has seen barrier N on all its inputs snapshots its operators (a cheap synchronous
//! freeze), forwards the barrier, and serializes and uploads the state in the background,
//! then acknowledges. When every task has acknowledged, the coordinator writes the
//! checkpoint's `_metadata` (create-if-absent, last) and tells the tasks, which is when
//! two-phase-commit sinks commit.

pub mod config;
pub(crate) mod coordinator;
mod gc;
pub mod metadata;
pub(crate) mod protocol;
pub mod restart;
pub mod savepoint;
pub mod storage;

pub use config::{CheckpointConfig, UnusableCheckpoint};
pub use coordinator::SavepointInfo;
pub use metadata::{CheckpointMetadata, OperatorStateMeta, SharedFile, StateFileMeta, METADATA_FORMAT_VERSION};
pub use restart::RestartStrategy;
pub use storage::{CheckpointStorage, Latest, LoadedCheckpoint};
