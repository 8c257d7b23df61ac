//! The runtime: runs a job graph's tasks as tokio tasks. Embedded, a whole job runs in this
//! process (its channels from the [`transport::TransportFactory`] of its
//! [`ExecutionConfig`]); in cluster mode each worker runs its share of an attempt through
//! [`engine`], the one seam between the runtime and `cluster/`.

mod attempt;
mod chain;
pub(crate) mod control;
mod embedded;
pub(crate) mod engine;
mod input_gate;
pub(crate) mod job_loop;
mod outputs;
mod progress;
pub(crate) mod restore;
pub(crate) mod task;
mod task_builder;
mod task_set;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use control::ControlSender;
use sluice_state::blob::BlobStore;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::coordinator::{SavepointInfo, SavepointRequest, StopAction, StopHook};
use crate::checkpoint::{CheckpointConfig, RestartStrategy};
use crate::clock::Clock;
use crate::error::JobError;
use crate::graph::JobGraph;
use crate::metrics::{CheckpointStats, MetricRegistry, MetricSample, VertexSnapshot};
use crate::status::JobStatus;
use crate::sync::LockExt;
use progress::JobProgress;
pub use progress::{ExceptionHistory, JobException, MAX_EXCEPTIONS};
pub use restore::parse_uid_mapping;
use transport::{InProcess, TransportFactory};

/// What the tasks of a running job are asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobControl {
    /// Keep going.
    Run,
    /// Sources stop reading and the job finishes as if the input had ended: every window
    /// fires and sinks publish what they have.
    Drain,
    /// Stop at once, without flushing.
    Cancel,
}

/// Settings of the runtime (not of the job's logic).
#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    /// Records per batch sent between tasks.
    pub batch_size: usize,
    /// Batches a channel holds before its producer waits (backpressure).
    pub channel_capacity: usize,
    /// How often (ms of processing time) a busy source emits a watermark.
    pub watermark_interval_ms: i64,
    /// Processing-time clock; `None` reads the system clock at start.
    pub clock: Option<Clock>,
    /// Where tasks log.
    pub log: slog::Logger,
    /// Checkpointing, if on. The job then resumes from the latest complete checkpoint in the
    /// store when one exists.
    pub checkpointing: Option<CheckpointConfig>,
    /// What to do when a task fails; `None` picks Flink's default (exponential delay with
    /// checkpointing, no restart without).
    pub restart: Option<RestartStrategy>,
    /// Makes the transport of each attempt: in process by default;
    /// `sluice_core::cluster::LoopbackShuffle` sends exchanges over a real TCP connection
    /// (encoded, framed and credit-controlled as between workers), to test and measure the
    /// network shuffle in one process.
    pub transport: Arc<dyn TransportFactory>,
    /// Start from this savepoint (unless the checkpoint store already holds a checkpoint of
    /// this run, which is newer).
    pub from_savepoint: Option<SavepointRestore>,
    /// Where the job's metrics are registered; `None` keeps them in a registry of its own.
    pub metrics: Option<MetricRegistry>,
    /// The job's id, for the `job_id` label of its metrics and its log records.
    pub job_id: Option<String>,
    /// Where keyed state lives (the tiered backend needs checkpointing: its runs live in the
    /// checkpoint store).
    pub state_backend: crate::state_backend::StateBackendConfig,
}

/// A savepoint to start a job from.
#[derive(Clone)]
pub struct SavepointRestore {
    /// The store whose root is the savepoint directory.
    pub store: Arc<dyn BlobStore>,
    /// Drop the state of operators the job no longer has instead of refusing to start.
    pub allow_non_restored_state: bool,
    /// Operators renamed since the savepoint: old uid → new uid.
    pub uid_mapping: BTreeMap<String, String>,
}

impl std::fmt::Debug for SavepointRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavepointRestore")
            .field("store", &self.store)
            .field("allow_non_restored_state", &self.allow_non_restored_state)
            .field("uid_mapping", &self.uid_mapping)
            .finish()
    }
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            batch_size: 1024,
            channel_capacity: 8,
            watermark_interval_ms: 200,
            clock: None,
            log: slog::Logger::root(slog::Discard, slog::o!()),
            checkpointing: None,
            restart: None,
            transport: Arc::new(InProcess),
            from_savepoint: None,
            metrics: None,
            job_id: None,
            state_backend: crate::state_backend::StateBackendConfig::Heap,
        }
    }
}

/// The outcome of a finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The job's name.
    pub name: String,
    /// Whether it finished or was cancelled.
    pub cancelled: bool,
    /// Wall time from start to end.
    pub duration: Duration,
    /// Counters per vertex, in graph order (of the last attempt).
    pub vertices: Vec<VertexSnapshot>,
    /// Records read by all sources (in the last attempt).
    pub records_in: u64,
    /// Records written by all sinks (in the last attempt).
    pub records_out: u64,
    /// Restarts after failures.
    pub restarts: u32,
    /// Checkpoints completed over all attempts.
    pub checkpoints_completed: u64,
    /// The checkpoint the first attempt resumed from, if any.
    pub resumed_from: Option<u64>,
}

impl JobResult {
    /// Source records per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.records_in as f64 / secs
        } else {
            0.0
        }
    }
}

/// A job running in the background.
#[derive(Debug)]
pub struct JobHandle {
    control: JobController,
    done: tokio::task::JoinHandle<Result<JobResult, JobError>>,
    stats: Arc<CheckpointStats>,
}

/// Sends control requests to a running job; cheap to clone.
#[derive(Debug, Clone)]
pub struct JobController {
    tx: Arc<ControlSender>,
    savepoints: Option<mpsc::Sender<SavepointRequest>>,
    progress: Arc<JobProgress>,
}

impl JobController {
    /// Asks the job to stop at once.
    pub fn cancel(&self) {
        self.progress.set_status(JobStatus::Cancelling);
        self.tx.send(JobControl::Cancel);
    }

    /// The job's status (Flink's names).
    pub fn status(&self) -> JobStatus {
        self.progress.status()
    }

    /// The current execution attempt (0 first, +1 per restart).
    pub fn attempt(&self) -> u32 {
        self.progress.attempt.load(Ordering::Relaxed)
    }

    /// Failures of the job's attempts, oldest first.
    pub fn exceptions(&self) -> Vec<JobException> {
        self.progress.exceptions.locked().to_vec()
    }

    /// The job's vertices: name and parallelism, in graph order.
    pub fn vertices(&self) -> &[(String, u32)] {
        &self.progress.vertices
    }

    /// Live checkpoint and restart counters, and the recent checkpoints.
    pub fn checkpoint_stats(&self) -> Arc<CheckpointStats> {
        self.progress.stats.clone()
    }

    /// The registry holding the job's metrics.
    pub fn metrics(&self) -> &MetricRegistry {
        &self.progress.metrics
    }

    /// The job's metrics: live while it runs; once it ended, as its last attempt left them
    /// (its task metrics leave the registry with the attempt).
    pub fn final_or_live_metrics(&self) -> Vec<MetricSample> {
        if self.status().is_terminal() {
            if let Some(figures) = self.progress.last_attempt_figures.locked().clone() {
                return figures;
            }
        }
        self.progress.metrics.snapshot()
    }

    /// Asks the sources to stop, letting everything in flight finish (like end of input).
    pub fn drain(&self) {
        self.tx.send(JobControl::Drain);
    }

    async fn request_savepoint(
        &self,
        target: Arc<dyn BlobStore>,
        stop: Option<bool>,
    ) -> Result<SavepointInfo, JobError> {
        let tx = self.savepoints.as_ref().ok_or_else(|| {
            JobError::Savepoint("savepoints need checkpointing: configure a checkpoint storage and interval".into())
        })?;
        let (reply, answer) = oneshot::channel();
        tx.send(SavepointRequest { target, stop, reply })
            .await
            .map_err(|_| JobError::Savepoint("the job has ended".into()))?;
        match answer.await {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(e)) => Err(JobError::Savepoint(e)),
            Err(_) => Err(JobError::Savepoint(
                "the job ended before the savepoint completed".into(),
            )),
        }
    }

    /// Takes a savepoint into the root of `target` while the job keeps running; returns its
    /// directory name there.
    pub async fn savepoint(&self, target: Arc<dyn BlobStore>) -> Result<SavepointInfo, JobError> {
        self.request_savepoint(target, None).await
    }

    /// Takes a savepoint and stops the job: with `drain`, the sources stop first and every
    /// window fires (as at end of input), and the final checkpoint is the savepoint; without,
    /// the job stops right after the savepoint, and nothing after it is committed.
    pub async fn stop_with_savepoint(
        &self,
        target: Arc<dyn BlobStore>,
        drain: bool,
    ) -> Result<SavepointInfo, JobError> {
        self.request_savepoint(target, Some(drain)).await
    }
}

impl JobHandle {
    /// Asks the job to stop at once.
    pub fn cancel(&self) {
        self.control.cancel()
    }

    /// Asks the sources to stop, letting everything in flight finish (like end of input).
    pub fn drain(&self) {
        self.control.drain()
    }

    /// Live checkpoint and restart counters.
    pub fn checkpoint_stats(&self) -> Arc<CheckpointStats> {
        self.stats.clone()
    }

    /// A controller that outlives `join`.
    pub fn controller(&self) -> JobController {
        self.control.clone()
    }

    /// Waits for the job to end.
    pub async fn join(self) -> Result<JobResult, JobError> {
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(JobError::TaskPanicked {
                task: "job driver".into(),
                message: e.to_string(),
            }),
        }
    }
}

/// Runs a job to its end.
pub async fn execute(graph: JobGraph, config: ExecutionConfig) -> Result<JobResult, JobError> {
    spawn(graph, config)?.join().await
}

/// Starts a job and returns a handle to control it.
pub fn spawn(mut graph: JobGraph, mut config: ExecutionConfig) -> Result<JobHandle, JobError> {
    graph.finalize()?;
    if config.batch_size == 0 || config.channel_capacity == 0 {
        return Err(JobError::InvalidGraph(
            "batch size and channel capacity must be at least 1".into(),
        ));
    }
    if let Some(c) = &config.checkpointing {
        c.validate().map_err(JobError::InvalidCheckpointConfig)?;
    }
    let (control_tx, control_rx) = control::channel(JobControl::Run);
    let control_tx = Arc::new(control_tx);
    let (savepoints, requests) = if config.checkpointing.is_some() {
        let (tx, rx) = mpsc::channel(4);
        (Some(tx), Some(Arc::new(tokio::sync::Mutex::new(rx))))
    } else {
        (None, None)
    };
    let stats = Arc::new(CheckpointStats::default());
    let registry = config.metrics.get_or_insert_with(MetricRegistry::new).clone();
    let progress = Arc::new(JobProgress {
        status: std::sync::Mutex::new(JobStatus::Created),
        attempt: Default::default(),
        exceptions: Default::default(),
        vertices: graph.vertices.iter().map(|v| (v.name.clone(), v.parallelism)).collect(),
        stopped_with_savepoint: Default::default(),
        stats: stats.clone(),
        metrics: registry,
        last_attempt_figures: Arc::default(),
    });
    let control = JobController {
        tx: control_tx.clone(),
        savepoints,
        progress: progress.clone(),
    };
    let stop: StopHook = {
        let tx = control_tx.clone();
        let progress = progress.clone();
        Arc::new(move |a| {
            progress.stopped_with_savepoint.store(true, Ordering::SeqCst);
            tx.send(match a {
                StopAction::Drain => JobControl::Drain,
                StopAction::Cancel => JobControl::Cancel,
            })
        })
    };
    let done = tokio::spawn(async move {
        let r = embedded::run_job(graph, config, control_rx, progress.clone(), requests, stop).await;
        progress.set_status(match &r {
            Ok(res) if res.cancelled && !progress.stopped_with_savepoint.load(Ordering::SeqCst) => JobStatus::Canceled,
            Ok(_) => JobStatus::Finished,
            Err(_) => JobStatus::Failed,
        });
        r
    });
    Ok(JobHandle { control, done, stats })
}
