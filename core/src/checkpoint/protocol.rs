//! Messages between the checkpoint coordinator and the tasks of one execution attempt.
//!
//! Each attempt has its own channels, so a message of an earlier attempt can never reach the
//! coordinator or the tasks of a later one.

use sluice_transport::Barrier;

use crate::checkpoint::metadata::StateFileMeta;

/// Coordinator to task.
#[derive(Debug, Clone)]
pub(crate) enum TaskCommand {
    /// (Sources only) take a snapshot and emit this barrier.
    Trigger(Barrier),
    /// Checkpoint complete: sinks commit what they pre-committed for it.
    Complete(u64),
    /// (Sources only) the final checkpoint is complete: end the input.
    Finish,
}

/// Task to coordinator.
#[derive(Debug)]
pub(crate) enum TaskEvent {
    /// The task stored its snapshot for the checkpoint.
    Acked {
        task: usize,
        checkpoint_id: u64,
        /// `(operator key, file)` of each operator of the task that has state.
        files: Vec<(String, StateFileMeta)>,
        /// How long the task aligned the checkpoint's barriers, in ms.
        alignment_ms: u64,
    },
    /// The task could not snapshot.
    Declined {
        task: usize,
        checkpoint_id: u64,
        reason: String,
    },
    /// A source task read all of its input and waits for the final checkpoint.
    InputFinished { task: usize },
}
