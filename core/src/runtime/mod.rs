//! The embedded executor: runs a whole job graph as tokio tasks in one process, with channels
//! from the in-process transport between them.

pub(crate) mod attempt;
mod chain;
pub(crate) mod control;
mod input_gate;
mod outputs;
mod progress;
pub(crate) mod restore;
pub(crate) mod task;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use control::{ControlReceiver, ControlSender};
use sluice_state::blob::BlobStore;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::coordinator::{SavepointInfo, SavepointRequest, SavepointRequests, StopAction, StopHook};
use crate::checkpoint::savepoint::load_savepoint;

use crate::checkpoint::restart::RestartTracker;
use crate::checkpoint::{CheckpointConfig, CheckpointStorage, LoadedCheckpoint, RestartStrategy};
use crate::clock::Clock;
use crate::error::{CheckpointError, JobError};
use crate::graph::{JobGraph, VertexKind};
use crate::metrics::{CheckpointStats, MetricRegistry, VertexSnapshot};
use crate::status::JobStatus;
use crate::sync::LockExt;
use attempt::Attempt;
use progress::JobProgress;
pub use progress::{ExceptionHistory, JobException, MAX_EXCEPTIONS};
pub use restore::parse_uid_mapping;
use task::TaskExit;

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
    /// Send every non-forward channel over a real TCP connection on 127.0.0.1 (encoded,
    /// framed and credit-controlled as between workers): to test and measure the network
    /// shuffle in one process.
    pub shuffle_over_tcp: bool,
    /// Start from this savepoint (unless the checkpoint store already holds a checkpoint of
    /// this run, which is newer).
    pub from_savepoint: Option<SavepointRestore>,
    /// Where the job's metrics are registered; `None` keeps them in a registry of its own.
    pub metrics: Option<MetricRegistry>,
    /// The job's id, for the `job_id` label of its metrics and its log records.
    pub job_id: Option<String>,
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
            shuffle_over_tcp: false,
            from_savepoint: None,
            metrics: None,
            job_id: None,
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
        let r = run_job(graph, config, control_rx, progress.clone(), requests, stop).await;
        progress.set_status(match &r {
            Ok(res) if res.cancelled && !progress.stopped_with_savepoint.load(Ordering::SeqCst) => JobStatus::Canceled,
            Ok(_) => JobStatus::Finished,
            Err(_) => JobStatus::Failed,
        });
        r
    });
    Ok(JobHandle { control, done, stats })
}

/// Runs attempts until one ends the job: it finishes, is cancelled, or fails with no restart
/// left.
async fn run_job(
    graph: JobGraph,
    config: ExecutionConfig,
    control_rx: ControlReceiver,
    progress: Arc<JobProgress>,
    savepoints: Option<SavepointRequests>,
    stop: StopHook,
) -> Result<JobResult, JobError> {
    let stats = progress.stats.clone();
    let graph = Arc::new(graph);
    let clock = config.clock.unwrap_or_else(Clock::system);
    let log = config.log.new(slog::o!("job" => graph.name.clone()));
    let storage = config
        .checkpointing
        .as_ref()
        .map(|c| CheckpointStorage::new(c.store.clone(), &graph.name));
    let restart = config.restart.clone().unwrap_or(if config.checkpointing.is_some() {
        RestartStrategy::default_exponential()
    } else {
        RestartStrategy::None
    });
    let mut tracker = RestartTracker::new(restart);
    let next_id = Arc::new(AtomicU64::new(1));
    if let Some(st) = &storage {
        next_id.store(
            st.highest_id().await.map_err(CheckpointError::from)? + 1,
            Ordering::SeqCst,
        );
    }
    if let Some(sp) = &config.from_savepoint {
        // Checkpoint ids go on after the savepoint's: its sink transactions are named by them.
        let meta = load_savepoint(sp.store.as_ref()).await?.metadata;
        next_id.fetch_max(meta.checkpoint_id + 1, Ordering::SeqCst);
    }
    let started = clock.elapsed();
    let registry = config.metrics.clone().unwrap_or_default();
    let job_metrics = match &config.job_id {
        Some(id) => registry.scope(&[("job_id", id.as_str()), ("job_name", graph.name.as_str())]),
        None => registry.scope(&[("job_name", graph.name.as_str())]),
    };
    let _unregister = job_metrics.guard();
    stats.register(&job_metrics);
    job_metrics.gauge_fn("job_uptime_seconds", "time since the job started", move || {
        Some((clock.elapsed() - started).as_secs_f64())
    });
    let mut resumed_from = None;
    let mut attempt = 0u32;
    loop {
        let outcome = match prepare_attempt(&graph, storage.as_ref(), config.from_savepoint.as_ref(), &log).await {
            // A checkpoint that does not fit the job will not fit it after a restart either.
            Err(e @ JobError::Restore { .. }) => return Err(e),
            // Reading the store failed: a failure like any other, for the restart strategy.
            Err(e) => Err(e),
            Ok((restored, retained, _)) => {
                if let Some(ck) = &restored {
                    let id = ck.metadata.checkpoint_id;
                    slog::info!(log, "restoring from checkpoint"; "checkpoint" => id, "attempt" => attempt);
                    if attempt == 0 {
                        resumed_from = Some(id);
                    }
                }
                progress.attempt.store(attempt, Ordering::Relaxed);
                progress.set_status(JobStatus::Running);
                let run = Attempt {
                    graph: graph.clone(),
                    config: &config,
                    attempt,
                    clock,
                    log: log.new(slog::o!("attempt" => attempt)),
                    control_rx: control_rx.clone(),
                    storage: storage.clone(),
                    next_id: next_id.clone(),
                    retained,
                    stats: stats.clone(),
                    savepoints: savepoints.clone(),
                    stop: stop.clone(),
                    metrics: job_metrics.clone(),
                };
                run.run(restored.as_ref()).await
            }
        };
        match outcome {
            Ok((exit, metrics)) => {
                let vertices: Vec<VertexSnapshot> = graph
                    .vertices
                    .iter()
                    .zip(&metrics)
                    .map(|(v, m)| m.snapshot(&v.name, v.parallelism))
                    .collect();
                let records_in = graph
                    .vertices
                    .iter()
                    .zip(&vertices)
                    .filter(|(v, _)| matches!(v.kind, VertexKind::Source(_)))
                    .map(|(_, s)| s.records_out)
                    .sum();
                let records_out = (0..graph.vertices.len())
                    .filter(|&v| graph.out_edges(v).is_empty())
                    .map(|v| vertices[v].records_out)
                    .sum();
                return Ok(JobResult {
                    name: graph.name.clone(),
                    cancelled: exit == TaskExit::Cancelled,
                    duration: clock.elapsed() - started,
                    vertices,
                    records_in,
                    records_out,
                    restarts: tracker.restarts(),
                    checkpoints_completed: stats.completed.load(Ordering::Relaxed),
                    resumed_from,
                });
            }
            Err(e) => {
                if *control_rx.borrow() == JobControl::Cancel {
                    return Err(e);
                }
                progress.record_failure(clock.now_ms(), e.to_string());
                let Some(delay) = tracker.on_failure(clock.now_ms()) else {
                    slog::error!(log, "job failed; no restart left"; "error" => %e);
                    return Err(e);
                };
                slog::warn!(log, "job failed; restarting"; "error" => %e, "delay_ms" => delay.as_millis() as u64,
                    "restart" => tracker.restarts());
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                progress.set_status(JobStatus::Restarting);
                let mut ctl = control_rx.clone();
                tokio::select! {
                    // Fixed polling order: tokio's random branch order is not seeded by the simulator.
                    biased;
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctl.wait_for(|c| *c == JobControl::Cancel) => return Err(e),
                }
                attempt += 1;
            }
        }
    }
}

/// Finds what an attempt restores: the latest usable checkpoint (else the savepoint, if the
/// job starts from one; the `bool` says so), and the complete checkpoints the coordinator will
/// retain. Complete checkpoints newer than the one restored are unusable
/// (damaged): they are deleted so they don't linger or count as retained.
pub(crate) async fn prepare_attempt(
    graph: &JobGraph,
    storage: Option<&CheckpointStorage>,
    savepoint: Option<&SavepointRestore>,
    log: &slog::Logger,
) -> Result<(Option<LoadedCheckpoint>, VecDeque<u64>, bool), JobError> {
    let (restored, retained) = match storage {
        None => (None, VecDeque::new()),
        Some(st) => {
            let restored = st.load_latest(log).await?;
            let restored_id = restored.as_ref().map_or(0, |c| c.metadata.checkpoint_id);
            let mut retained = VecDeque::new();
            for id in st.completed_ids().await.map_err(CheckpointError::from)? {
                if id <= restored_id {
                    retained.push_back(id);
                } else if let Err(e) = st.discard(id).await {
                    slog::warn!(log, "could not delete unusable checkpoint"; "checkpoint" => id, "error" => %e);
                } else {
                    slog::info!(log, "deleted unusable checkpoint"; "checkpoint" => id);
                }
            }
            (restored, retained)
        }
    };
    if let Some(ck) = &restored {
        restore::check_compatible(graph, ck, false).map_err(|reason| JobError::Restore {
            checkpoint: ck.metadata.checkpoint_id,
            reason,
        })?;
        if savepoint.is_some() {
            slog::info!(log, "the checkpoint store holds a checkpoint of this run, newer than the savepoint: restoring it instead";
                "checkpoint" => ck.metadata.checkpoint_id);
        }
        return Ok((restored, retained, false));
    }
    let Some(sp) = savepoint else {
        return Ok((None, retained, false));
    };
    let mut ck = load_savepoint(sp.store.as_ref())
        .await
        .map_err(|e| JobError::Savepoint(format!("savepoint {:?}: {e}", sp.store)))?;
    restore::map_uids(&mut ck, &sp.uid_mapping)
        .map_err(|e| JobError::Savepoint(format!("savepoint {:?}: {e}", sp.store)))?;
    restore::check_compatible(graph, &ck, sp.allow_non_restored_state).map_err(|reason| {
        JobError::Savepoint(format!(
            "cannot restore savepoint {:?} (checkpoint {}): {reason}",
            sp.store, ck.metadata.checkpoint_id
        ))
    })?;
    for op in restore::unmatched_operators(graph, &ck) {
        slog::warn!(log, "dropping state of an operator the job no longer has (--allow-non-restored-state)"; "operator" => op);
    }
    slog::info!(log, "restoring from savepoint"; "savepoint" => format!("{:?}", sp.store), "checkpoint" => ck.metadata.checkpoint_id);
    Ok((Some(ck), retained, true))
}
