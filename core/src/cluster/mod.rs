//! Cluster mode: a coordinator (Flink's job manager) and workers (task executors) in separate
//! processes, talking plain TCP with the FlatBuffers frames of `sluice-transport` — no gRPC.
//!
//! - A worker dials the coordinator, registers its task slots and data address, and sends
//!   heartbeats. The coordinator declares it lost when its connection drops or its heartbeats
//!   stop for longer than the heartbeat timeout.
//! - A client submits a job by its name in the [`JobRegistry`] with options. The coordinator
//!   builds the graph (to check it), picks slots (one slot runs one subtask of every chain,
//!   as Flink's slot sharing does), and sends each chosen worker a `DeployTask` with the job's
//!   name, its options and the placement of every task. Workers run the same binary, so they
//!   build the same graph and run the tasks placed on them. Tasks on one worker exchange
//!   batches in process; across workers, over one credit-controlled TCP connection per pair
//!   and direction.
//! - The coordinator runs the checkpoint coordinator of each job: triggers go to source tasks
//!   as frames, acknowledgements come back as frames, and the coordinator writes `_metadata`
//!   and notifies the tasks (which is when two-phase-commit sinks commit).
//! - A lost worker, a failed task or too many failed checkpoints fail the attempt: the
//!   coordinator cancels it everywhere, waits as the restart strategy says, waits (bounded) for
//!   enough slots, and deploys attempt + 1 restored from the latest completed checkpoint.
//!   Every frame names its attempt; frames of an older attempt are dropped.

mod client;
mod coordinator;
mod coordinator_metrics;
mod deployment;
mod exchange;
mod framed;
mod job_master;
mod metrics_report;
mod options;
mod placement;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_state::blob::BlobStore;
use sluice_transport::wire::FrameError;

use crate::graph::JobGraph;

pub use client::{cancel_job, list_jobs, submit_job, trigger_savepoint};
pub use coordinator::{CheckpointOverview, Coordinator, CoordinatorConfig, JobException, JobInfo, WorkerInfo};
/// A key/value option of a submission, as [`Coordinator::submit`] takes it.
pub use sluice_transport::wire::WireOption;
pub use worker::{Worker, WorkerConfig};

/// Builds jobs by name: the coordinator (to check a submission) and every worker (to run its
/// share) build the same graph from the same name and options.
pub trait JobRegistry: Send + Sync + 'static {
    /// Builds job `name` with `options` (key/value, as given to `sluice submit`, including
    /// `parallelism`). The error says what is wrong; for an unknown name it lists the known
    /// jobs.
    fn build(&self, name: &str, options: &BTreeMap<String, String>) -> Result<JobGraph, String>;
}

/// Opens the blob store named by a checkpoint location (a directory, or `s3://bucket/prefix`):
/// the coordinator and the workers open the same location.
pub type StoreOpener = Arc<dyn Fn(&str) -> Result<Arc<dyn BlobStore>, String> + Send + Sync>;

/// A job's status, with Flink's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobStatus {
    /// Accepted, waiting for slots for its first attempt.
    Created,
    /// An attempt is deployed.
    Running,
    /// An attempt failed and is being torn down.
    Failing,
    /// Waiting to start the next attempt (restart delay, or slots).
    Restarting,
    /// A cancel was asked for and is being carried out.
    Cancelling,
    /// Cancelled.
    Canceled,
    /// Every task finished its input.
    Finished,
    /// Failed with no restart left.
    Failed,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Failing,
        JobStatus::Restarting,
        JobStatus::Cancelling,
        JobStatus::Canceled,
        JobStatus::Finished,
        JobStatus::Failed,
    ];

    /// Flink's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Failed => "FAILED",
        }
    }

    /// Parses Flink's name of a status.
    pub fn parse(s: &str) -> Option<Self> {
        [
            JobStatus::Created,
            JobStatus::Running,
            JobStatus::Failing,
            JobStatus::Restarting,
            JobStatus::Cancelling,
            JobStatus::Canceled,
            JobStatus::Finished,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the job has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Canceled | JobStatus::Finished | JobStatus::Failed)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A socket could not be bound, reached, read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the address.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer sent a frame that could not be decoded.
    #[error("{what}: {source}")]
    Frame {
        /// What was being done, with the address.
        what: String,
        /// The decoding error.
        #[source]
        source: FrameError,
    },
    /// The coordinator refused the request (the reason says why).
    #[error("{0}")]
    Rejected(String),
    /// The peer answered something this build does not expect.
    #[error("unexpected answer from {peer}: {what}")]
    Protocol {
        /// Who answered.
        peer: String,
        /// What came.
        what: String,
    },
    /// A setting is invalid (names the option and the problem).
    #[error("{0}")]
    Config(String),
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
}
