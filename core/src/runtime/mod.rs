//! The embedded executor: runs a whole job graph as tokio tasks in one process, with channels
//! from the in-process transport between them.

mod chain;
mod input_gate;
mod outputs;
mod restore;
mod task;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_transport::net::{ConnectionConfig, TcpLoopbackTransport};
use sluice_transport::{ChannelId, LocalTransport, Transport};
use tokio::sync::{mpsc, watch};

use crate::checkpoint::coordinator::{Coordinator, OperatorInfo, TaskRef};
use crate::checkpoint::restart::RestartTracker;
use crate::checkpoint::{CheckpointConfig, CheckpointStorage, LoadedCheckpoint, RestartStrategy};
use crate::clock::Clock;
use crate::data::EventTime;
use crate::error::{CheckpointError, JobError};
use crate::graph::{JobGraph, VertexKind};
use crate::metrics::{CheckpointStats, VertexMetrics, VertexSnapshot};
use crate::operator::OperatorContext;
use crate::partition::{PartitionKind, RouterArgs};
use chain::ChainOps;
use input_gate::InputGate;
use outputs::{EdgeOutput, Outputs};
use task::{CheckpointLink, Head, SourceHead, Task, TaskExit};

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
    tx: Arc<watch::Sender<JobControl>>,
}

impl JobController {
    /// Asks the job to stop at once.
    pub fn cancel(&self) {
        let _ = self.tx.send(JobControl::Cancel);
    }

    /// Asks the sources to stop, letting everything in flight finish (like end of input).
    pub fn drain(&self) {
        let _ = self.tx.send(JobControl::Drain);
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
pub fn spawn(mut graph: JobGraph, config: ExecutionConfig) -> Result<JobHandle, JobError> {
    graph.finalize()?;
    if config.batch_size == 0 || config.channel_capacity == 0 {
        return Err(JobError::InvalidGraph(
            "batch size and channel capacity must be at least 1".into(),
        ));
    }
    if let Some(c) = &config.checkpointing {
        c.validate().map_err(JobError::InvalidCheckpointConfig)?;
    }
    let (control_tx, control_rx) = watch::channel(JobControl::Run);
    let control_tx = Arc::new(control_tx);
    let control = JobController { tx: control_tx.clone() };
    let stats = Arc::new(CheckpointStats::default());
    let done = tokio::spawn(run_job(graph, config, control_rx, stats.clone()));
    Ok(JobHandle { control, done, stats })
}

/// Runs attempts until one ends the job: it finishes, is cancelled, or fails with no restart
/// left.
async fn run_job(
    graph: JobGraph,
    config: ExecutionConfig,
    control_rx: watch::Receiver<JobControl>,
    stats: Arc<CheckpointStats>,
) -> Result<JobResult, JobError> {
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
        next_id.store(st.highest_id().await.map_err(CheckpointError::from)? + 1, Ordering::SeqCst);
    }
    let started = clock.elapsed();
    let mut resumed_from = None;
    let mut attempt = 0u32;
    loop {
        let outcome = match prepare_attempt(&graph, storage.as_ref(), &log).await {
            // A checkpoint that does not fit the job will not fit it after a restart either.
            Err(e @ JobError::Restore { .. }) => return Err(e),
            // Reading the store failed: a failure like any other, for the restart strategy.
            Err(e) => Err(e),
            Ok((restored, retained)) => {
                if let Some(ck) = &restored {
                    let id = ck.metadata.checkpoint_id;
                    slog::info!(log, "restoring from checkpoint"; "checkpoint" => id, "attempt" => attempt);
                    if attempt == 0 {
                        resumed_from = Some(id);
                    }
                }
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
                let Some(delay) = tracker.on_failure(clock.now_ms()) else {
                    slog::error!(log, "job failed; no restart left"; "error" => %e);
                    return Err(e);
                };
                slog::warn!(log, "job failed; restarting"; "error" => %e, "delay_ms" => delay.as_millis() as u64,
                    "restart" => tracker.restarts());
                stats.restarts.fetch_add(1, Ordering::Relaxed);
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

/// Finds what an attempt restores: the latest usable checkpoint, and the complete checkpoints
/// the coordinator will retain. Complete checkpoints newer than the one restored are unusable
/// (damaged): they are deleted so they don't linger or count as retained.
async fn prepare_attempt(
    graph: &JobGraph,
    storage: Option<&CheckpointStorage>,
    log: &slog::Logger,
) -> Result<(Option<LoadedCheckpoint>, VecDeque<u64>), JobError> {
    let Some(st) = storage else {
        return Ok((None, VecDeque::new()));
    };
    let restored = st.load_latest(log).await?;
    let restored_id = restored.as_ref().map_or(0, |c| c.metadata.checkpoint_id);
    if let Some(ck) = &restored {
        restore::check_compatible(graph, ck).map_err(|reason| JobError::Restore { checkpoint: restored_id, reason })?;
    }
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
    Ok((restored, retained))
}

/// One execution attempt: all tasks of the job, and the checkpoint coordinator.
struct Attempt<'a> {
    graph: Arc<JobGraph>,
    config: &'a ExecutionConfig,
    attempt: u32,
    clock: Clock,
    log: slog::Logger,
    control_rx: watch::Receiver<JobControl>,
    storage: Option<CheckpointStorage>,
    next_id: Arc<AtomicU64>,
    retained: VecDeque<u64>,
    stats: Arc<CheckpointStats>,
}

/// Reports a task that panicked (see `Attempt::run`).
struct PanicReport {
    tx: mpsc::Sender<Done>,
    task: String,
    armed: bool,
}

impl PanicReport {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PanicReport {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            let _ = self.tx.try_send(Done::Task(Err(JobError::TaskPanicked {
                task: self.task.clone(),
                message: "panicked".into(),
            })));
        }
    }
}

enum Done {
    Task(Result<TaskExit, JobError>),
    Coordinator(Result<(), JobError>),
}

impl Attempt<'_> {
    async fn run(self, restored: Option<&LoadedCheckpoint>) -> Result<(TaskExit, Vec<Arc<VertexMetrics>>), JobError> {
        let graph = &self.graph;
        let transport: Box<dyn Transport> = if self.config.shuffle_over_tcp {
            // Every channel that is not a forward edge crosses a real TCP connection.
            let crossing: std::collections::BTreeSet<u32> = (0..graph.edges.len())
                .filter(|&e| graph.edges[e].kind() != PartitionKind::Forward)
                .map(|e| e as u32)
                .collect();
            let cap = self.config.channel_capacity;
            let net = ConnectionConfig {
                credits_per_channel: cap as u32,
                queue_per_channel: cap,
                frames_per_pass: 64,
            };
            Box::new(
                TcpLoopbackTransport::connect(cap, net, self.attempt, move |id| crossing.contains(&id.edge), self.log.clone())
                    .await
                    .map_err(|e| JobError::InvalidGraph(e.to_string()))?,
            )
        } else {
            Box::new(LocalTransport::new(self.config.channel_capacity))
        };
        let metrics: Vec<Arc<VertexMetrics>> = graph.vertices.iter().map(|_| VertexMetrics::new_shared()).collect();
        let (events_tx, events_rx) = mpsc::channel(1024);
        let mut tasks = Vec::new();
        let mut task_refs = Vec::new();
        for chain in graph.chains() {
            for subtask in 0..chain.parallelism {
                let link = match &self.storage {
                    Some(st) => {
                        let (tx, rx) = mpsc::channel(64);
                        task_refs.push(TaskRef {
                            commands: tx,
                            is_source: matches!(graph.vertices[chain.vertices[0]].kind, VertexKind::Source(_)),
                        });
                        Some(CheckpointLink {
                            task: tasks.len(),
                            commands: rx,
                            events: events_tx.clone(),
                            storage: st.clone(),
                            max_parallelism: graph.max_parallelism,
                            op_keys: Vec::new(),
                            last_snapshot: restored.map_or(0, |c| c.metadata.checkpoint_id),
                            last_notified: restored.map_or(0, |c| c.metadata.checkpoint_id),
                        })
                    }
                    None => None,
                };
                tasks.push(build_task(&self, &chain.vertices, subtask, transport.as_ref(), &metrics, link, restored)?);
            }
        }
        drop(events_tx);
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(tasks.len() + 1);
        let mut handles = Vec::new();
        let total = tasks.len();
        for t in tasks {
            let tx = done_tx.clone();
            handles.push(tokio::spawn(async move {
                // A panic unwinds through the guard, which reports it: the other tasks may be
                // waiting on channels that a panicked task never closes (over the network).
                let guard = PanicReport {
                    tx: tx.clone(),
                    task: t.name.clone(),
                    armed: true,
                };
                let r = t.run().await;
                guard.disarm();
                let _ = tx.send(Done::Task(r)).await;
            }));
        }
        if let (Some(storage), Some(cfg)) = (&self.storage, &self.config.checkpointing) {
            let coordinator = Coordinator {
                config: cfg.clone(),
                storage: storage.clone(),
                clock: self.clock,
                log: self.log.new(slog::o!("component" => "checkpoint-coordinator")),
                job_name: graph.name.clone(),
                max_parallelism: graph.max_parallelism,
                operators: (0..graph.vertices.len())
                    .map(|v| OperatorInfo {
                        key: restore::operator_key(graph, v),
                        name: graph.vertices[v].name.clone(),
                        parallelism: graph.vertices[v].parallelism,
                    })
                    .collect(),
                tasks: task_refs,
                events: events_rx,
                next_id: self.next_id.clone(),
                retained: self.retained.clone(),
                stats: self.stats.clone(),
            };
            let tx = done_tx.clone();
            handles.push(tokio::spawn(async move {
                let r = coordinator.run().await;
                let _ = tx.send(Done::Coordinator(r)).await;
            }));
        }
        drop(done_tx);
        let mut first_error: Option<JobError> = None;
        let mut cancelled = false;
        let mut finished = 0usize;
        while finished < total {
            let Some(done) = done_rx.recv().await else {
                // A task panicked (it never reported): find out which.
                break;
            };
            match done {
                Done::Coordinator(Ok(())) => {}
                Done::Coordinator(Err(e)) | Done::Task(Err(e @ JobError::CheckpointsFailing { .. })) => {
                    first_error.get_or_insert(e);
                    break;
                }
                Done::Task(Ok(TaskExit::Finished)) => finished += 1,
                Done::Task(Ok(TaskExit::Cancelled)) => {
                    finished += 1;
                    cancelled = true;
                }
                // After a cancel that was asked for, tasks find their channels closed by
                // neighbours that already stopped: that is the cancel, not a failure.
                Done::Task(Err(JobError::Transport { .. })) if *self.control_rx.borrow() == JobControl::Cancel => {
                    finished += 1;
                    cancelled = true;
                }
                Done::Task(Err(e)) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        let all_done = finished == total && first_error.is_none();
        // Stop everything of this attempt before the next one starts: no task may run for a
        // stale attempt.
        for h in &handles {
            h.abort();
        }
        let mut panicked = None;
        for h in handles {
            if let Err(e) = h.await {
                if !e.is_cancelled() {
                    panicked.get_or_insert(panic_message(e));
                }
            }
        }
        if let Some(e) = first_error {
            // Prefer the panic's own message over the guard's report.
            return Err(match (e, panicked) {
                (JobError::TaskPanicked { task, .. }, Some(message)) => JobError::TaskPanicked { task, message },
                (e, _) => e,
            });
        }
        if let Some(message) = panicked {
            return Err(JobError::TaskPanicked {
                task: "a task".into(),
                message,
            });
        }
        if !all_done {
            return Err(JobError::TaskPanicked {
                task: "a task".into(),
                message: "ended without reporting".into(),
            });
        }
        Ok((if cancelled { TaskExit::Cancelled } else { TaskExit::Finished }, metrics))
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "task was cancelled".into();
    }
    // madsim's JoinError cannot hand out the panic payload; its message names it.
    #[cfg(madsim)]
    {
        e.to_string()
    }
    #[cfg(not(madsim))]
    {
        let p = e.into_panic();
        if let Some(s) = p.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = p.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic".into()
        }
    }
}

fn build_task(
    at: &Attempt<'_>,
    chain: &[usize],
    subtask: u32,
    transport: &dyn Transport,
    metrics: &[Arc<VertexMetrics>],
    mut link: Option<CheckpointLink>,
    restored: Option<&LoadedCheckpoint>,
) -> Result<Task, JobError> {
    let graph = &*at.graph;
    let config = at.config;
    let head = chain[0];
    let tail = *chain.last().expect("a chain has at least its head");
    let parallelism = graph.vertices[head].parallelism;
    let names: Vec<&str> = chain.iter().map(|&v| graph.vertices[v].name.as_str()).collect();
    let task_name = format!("{} ({}/{})", names.join(" -> "), subtask + 1, parallelism);
    let task_log = at.log.new(slog::o!("task" => names.join(" -> "), "subtask" => subtask));
    let ctx_for = |v: usize| OperatorContext {
        vertex_name: graph.vertices[v].name.clone(),
        subtask,
        parallelism,
        max_parallelism: graph.max_parallelism,
        watermark: EventTime::MIN,
        clock: at.clock,
        log: task_log.new(slog::o!("vertex" => graph.vertices[v].name.clone())),
        attempt: at.attempt,
        checkpointing: at.storage.is_some(),
        metrics: metrics[v].clone(),
    };
    let failed = |e| JobError::TaskFailed {
        task: task_name.clone(),
        source: e,
    };
    let restore_err = |reason: String| JobError::Restore {
        checkpoint: restored.map_or(0, |c| c.metadata.checkpoint_id),
        reason: format!("task {task_name}: {reason}"),
    };
    let mut ops = Vec::new();
    let mut op_keys = Vec::new();
    let mut source = None;
    for &v in chain {
        let key = restore::operator_key(graph, v);
        let state = match restored {
            Some(ck) => restore::restored_for(ck, &key, subtask, parallelism, graph.max_parallelism).map_err(restore_err)?,
            None => sluice_state::RestoredState::empty(),
        };
        match &graph.vertices[v].kind {
            VertexKind::Source(f) => {
                let mut s = f(subtask, parallelism).map_err(failed)?;
                if let Some(ck) = restored {
                    let old = ck.metadata.operators.iter().find(|o| o.key == key).map(|o| o.parallelism);
                    if old.is_some_and(|p| p != parallelism) {
                        return Err(restore_err(format!(
                            "source '{key}' ran at parallelism {}, now {parallelism}: its read positions cannot be redistributed",
                            old.unwrap_or(0)
                        )));
                    }
                }
                if let Some(pos) = state.operator_state().next() {
                    s.restore(pos).map_err(failed)?;
                }
                source = Some(SourceHead {
                    source: s,
                    ctx: ctx_for(v),
                    key,
                });
            }
            VertexKind::Operator(f) => {
                let mut op = f();
                let mut ctx = ctx_for(v);
                op.open(&mut ctx).map_err(failed)?;
                op.restore_state(&state, &mut ctx).map_err(failed)?;
                ops.push((op, ctx));
                op_keys.push(key);
            }
        }
    }
    if let Some(l) = link.as_mut() {
        l.op_keys = op_keys;
    }
    let wire = |e: sluice_transport::TransportError| JobError::InvalidGraph(e.to_string());
    let head = match source {
        Some(s) => Head::Source(s),
        None => {
            let mut inputs = Vec::new();
            for e in graph.in_edges(head) {
                let edge = &graph.edges[e];
                let up = graph.vertices[edge.source].parallelism;
                let senders: Vec<u32> = if edge.kind() == PartitionKind::Forward {
                    vec![subtask]
                } else {
                    (0..up).collect()
                };
                for from in senders {
                    let id = ChannelId { edge: e as u32, from, to: subtask };
                    inputs.push((transport.input(id).map_err(wire)?, edge.codec.clone()));
                }
            }
            Head::Inputs(InputGate::new(inputs))
        }
    };
    let mut edges = Vec::new();
    for e in graph.out_edges(tail) {
        let edge = &graph.edges[e];
        let down = graph.vertices[edge.target].parallelism;
        let targets: Vec<u32> = if edge.kind() == PartitionKind::Forward {
            vec![subtask]
        } else {
            (0..down).collect()
        };
        let mut channels = Vec::new();
        for &to in &targets {
            let id = ChannelId { edge: e as u32, from: subtask, to };
            channels.push(transport.output(id).map_err(wire)?);
        }
        edges.push(EdgeOutput {
            codec: edge.codec.clone(),
            router: (edge.router())(RouterArgs {
                sender: subtask,
                targets: targets.len() as u32,
                batch_size: config.batch_size,
                max_parallelism: graph.max_parallelism,
            }),
            channels,
        });
    }
    Ok(Task::new(
        task_name,
        subtask,
        head,
        ChainOps { ops },
        Outputs::new(edges),
        at.control_rx.clone(),
        config.batch_size,
        config.watermark_interval_ms,
        task_log,
        link,
    ))
}
