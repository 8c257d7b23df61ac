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

mod acceptor;
mod client;
mod coordinator;
mod coordinator_config;
mod coordinator_metrics;
mod deployment;
mod error;
mod exchange;
mod framed;
mod job_master;
mod loopback;
mod metrics_report;
mod options;
mod placement;
mod table;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_state::blob::{BlobError, BlobStore};

use crate::error::JobBuildError;
use crate::graph::JobGraph;

/// A job's status (defined with the runtime, which reports it in both modes).
pub use crate::status::JobStatus;
pub use client::{
    cancel_job, list_jobs, list_jobs_with_progress, outcome_unknown, submission_id, submit_job, trigger_savepoint,
    Target, SUBMIT_RETRY_FOR,
};
pub use coordinator::{
    CheckpointOverview, Coordinator, CoordinatorConfig, JobException, JobInfo, WorkerInfo, MAX_SLOTS_PER_WORKER,
};
pub use error::{ClusterError, RefusalKind};
pub use loopback::LoopbackShuffle;
/// Mutual TLS for the cluster's ports and the identities it proves (re-exported so that
/// daemons and the simulation configure it without depending on the transport crate).
pub use sluice_transport::tls;
/// Why a frame could not be decoded (the source of [`ClusterError::Frame`]).
pub use sluice_transport::wire::FrameError;
/// A key/value option of a submission, as [`Coordinator::submit`] takes it.
pub use sluice_transport::wire::{WireOption, WireProgress};
pub use worker::{Worker, WorkerConfig};

/// Builds jobs by name: the coordinator (to check a submission) and every worker (to run its
/// share) build the same graph from the same name and options.
pub trait JobRegistry: Send + Sync + 'static {
    /// Builds job `name` with `options` (key/value, as given to `sluice submit`, including
    /// `parallelism`). The error says what is wrong; for an unknown name it lists the known
    /// jobs.
    fn build(&self, name: &str, options: &BTreeMap<String, String>) -> Result<JobGraph, JobBuildError>;

    /// The options of job `name` that name files or directories (keys without `--`): the
    /// coordinator checks them against its allowed paths before anything is built or run.
    fn file_options(&self, name: &str) -> Vec<&'static str> {
        let _ = name;
        Vec::new()
    }

    /// What this registry builds, as a short text (binary, version, jobs and a digest of
    /// their options): a worker registers with it, and a coordinator whose registry says
    /// otherwise refuses the worker, which could not run the same jobs from the same options.
    fn build_id(&self) -> String {
        String::new()
    }
}

/// Opens the blob store named by a checkpoint location (a directory, or `s3://bucket/prefix`):
/// the coordinator and the workers open the same location.
pub type StoreOpener = Arc<dyn Fn(&str) -> Result<Arc<dyn BlobStore>, BlobError> + Send + Sync>;
