//! A worker's share of one execution attempt: build the graph, connect the data plane, run
//! the tasks placed here, and report to the coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_transport::wire::{WireMessage, WireOption, WirePeer};
use tokio::sync::mpsc;

use super::exchange::{ClusterTransport, ExchangeSetup};
use super::framed::FrameSender;
use crate::checkpoint::{CheckpointStorage, LoadedCheckpoint};
use crate::error::JobError;
use crate::graph::JobGraph;
use crate::metrics::VertexMetrics;
use crate::runtime::engine::{
    build_task, control_channel, load_mapped_savepoint, task_specs, CheckpointLink, ControlReceiver, ControlSender,
    JobControl, Task, TaskCommand, TaskEnv, TaskEvent, TaskExit, TaskSet, TaskSpec,
};
use crate::runtime::ExecutionConfig;
use crate::state_backend::{StateBackendConfig, TieredSettings};

/// A `DeployTask` frame's contents.
pub(crate) struct DeployRequest {
    pub(crate) job_id: String,
    pub(crate) attempt: u32,
    pub(crate) job_name: String,
    pub(crate) options: Vec<WireOption>,
    pub(crate) placement: Vec<String>,
    pub(crate) peers: Vec<WirePeer>,
    pub(crate) checkpoint_store: String,
    pub(crate) restore_checkpoint: u64,
    pub(crate) restore_savepoint: String,
    pub(crate) uid_mapping: Vec<WireOption>,
    /// The state backend the job asked for (`heap`, `tiered`); empty: the worker's default.
    pub(crate) state_backend: String,
}

/// What a deployment needs of the worker that runs it (given by the worker, so this module
/// does not depend on it).
pub(crate) struct Host {
    /// The worker's id.
    pub(crate) id: String,
    /// Runtime settings of the tasks (its state backend: for jobs that do not choose one).
    pub(crate) execution: crate::runtime::ExecutionConfig,
    /// The block cache of jobs that choose the tiered backend on a worker whose default is
    /// the heap.
    pub(crate) state_cache: Option<TieredSettings>,
    /// Processing-time clock of the tasks.
    pub(crate) clock: crate::clock::Clock,
    /// How long to wait for peers when an attempt starts.
    pub(crate) connect_timeout: std::time::Duration,
    /// How long a started data frame may take.
    pub(crate) frame_timeout: std::time::Duration,
    /// TLS between workers.
    pub(crate) tls: Option<sluice_transport::tls::ClusterTls>,
    /// Where the job's files may be.
    pub(crate) paths: crate::paths::PathPolicy,
    /// Builds the job.
    pub(crate) registry: Arc<dyn super::JobRegistry>,
    /// Opens checkpoint and savepoint locations.
    pub(crate) opener: super::StoreOpener,
    /// Greeted data connections waiting for their deployment.
    pub(crate) inbound: Arc<super::exchange::InboundConnections>,
    /// The worker's log.
    pub(crate) log: slog::Logger,
    /// The worker's metrics.
    pub(crate) metrics: crate::metrics::MetricRegistry,
    /// Tells the worker an attempt finished here.
    pub(crate) finished: OnFinished,
}

/// Called with the job id and attempt when an attempt's tasks all finished here.
pub(crate) type OnFinished = Box<dyn Fn(&str, u32) + Send + Sync>;

/// The worker's hold on a running deployment.
pub(crate) struct DeploymentHandle {
    /// Cancel by sending `Cancel` (or dropping the handle).
    pub(crate) control: ControlSender,
    /// Checkpoint commands for each local task, by task number.
    pub(crate) commands: BTreeMap<usize, mpsc::Sender<TaskCommand>>,
}

/// The command receivers of a deployment's local tasks, by task number.
pub(crate) type CommandReceivers = BTreeMap<usize, mpsc::Receiver<TaskCommand>>;

/// Creates the handle of a deployment and what its runner consumes. The command channels
/// exist from the start, so a checkpoint trigger that arrives while the data plane is still
/// being connected waits in its channel.
pub(crate) fn prepare(req: &DeployRequest, me: &str) -> (DeploymentHandle, ControlReceiver, CommandReceivers) {
    let (control, control_rx) = control_channel(JobControl::Run);
    let mut commands = BTreeMap::new();
    let mut receivers = BTreeMap::new();
    if !req.checkpoint_store.is_empty() {
        for (task, w) in req.placement.iter().enumerate() {
            if w == me {
                let (tx, rx) = mpsc::channel(64);
                commands.insert(task, tx);
                receivers.insert(task, rx);
            }
        }
    }
    (DeploymentHandle { control, commands }, control_rx, receivers)
}

async fn cancelled(mut rx: ControlReceiver) {
    let _ = rx.wait_for(|c| *c == JobControl::Cancel).await;
}

/// What a deployment reports to the coordinator, tagged with its job and attempt.
struct Reporter<'a> {
    to_coordinator: &'a FrameSender,
    job_id: &'a str,
    attempt: u32,
    log: &'a slog::Logger,
}

impl Reporter<'_> {
    /// Task `task` failed (or could not be set up); `permanent` if a restart would fail the
    /// same way (the restored state does not fit the job).
    fn fail(&self, task: usize, reason: String, permanent: bool) {
        slog::warn!(self.log, "task failed"; "task" => task, "reason" => &reason, "permanent" => permanent);
        self.to_coordinator.send(WireMessage::TaskFailed {
            job_id: self.job_id.to_string(),
            attempt: self.attempt,
            task: task as u32,
            reason,
            permanent,
        });
    }

    fn event(&self, ev: TaskEvent) {
        let (job_id, attempt) = (self.job_id.to_string(), self.attempt);
        self.to_coordinator.send(match ev {
            TaskEvent::Acked {
                task,
                checkpoint_id,
                files,
                alignment_ms,
            } => WireMessage::AckCheckpoint {
                job_id,
                attempt,
                checkpoint_id,
                task: task as u32,
                state: bincode::serialize(&files)
                    .expect("state file metadata is plain data and always encodes")
                    .into(),
                alignment_ms,
            },
            TaskEvent::Declined {
                task,
                checkpoint_id,
                reason,
            } => WireMessage::DeclineCheckpoint {
                job_id,
                attempt,
                checkpoint_id,
                task: task as u32,
                reason,
            },
            TaskEvent::InputFinished { task } => WireMessage::InputFinished {
                job_id,
                attempt,
                task: task as u32,
            },
        });
    }

    fn finished(&self, task: usize, exit: TaskExit) {
        self.to_coordinator.send(WireMessage::TaskFinished {
            job_id: self.job_id.to_string(),
            attempt: self.attempt,
            task: task as u32,
            cancelled: exit == TaskExit::Cancelled,
        });
    }
}

/// Runs the deployment until its tasks end or it is cancelled, then tells the coordinator the
/// attempt has stopped here (whichever way it ended: set-up failures and cancels too), so the
/// job ends, frees its slots and deletes its checkpoints only once nothing of it still runs.
pub(crate) async fn run(
    worker: Arc<Host>,
    to_coordinator: FrameSender,
    req: DeployRequest,
    control_rx: ControlReceiver,
    command_rxs: CommandReceivers,
) {
    let ended = WireMessage::AttemptEnded {
        job_id: req.job_id.clone(),
        attempt: req.attempt,
    };
    run_until_ended(worker, &to_coordinator, req, control_rx, command_rxs).await;
    to_coordinator.send(ended);
}

async fn run_until_ended(
    worker: Arc<Host>,
    to_coordinator: &FrameSender,
    req: DeployRequest,
    control_rx: ControlReceiver,
    command_rxs: CommandReceivers,
) {
    let me = worker.id.clone();
    let log = worker
        .log
        .new(slog::o!("job" => req.job_id.clone(), "name" => req.job_name.clone(), "attempt" => req.attempt));
    let report = Reporter {
        to_coordinator,
        job_id: &req.job_id,
        attempt: req.attempt,
        log: &log,
    };
    let local: Vec<usize> = (0..req.placement.len()).filter(|&t| req.placement[t] == me).collect();
    let Some(&first) = local.first() else {
        slog::warn!(log, "deployment places no task on this worker");
        return;
    };
    // A path refused here would be refused again: that failure is permanent.
    let built = check_paths(&worker, &req).map_err(|e| (e, true));
    let (graph, specs) = match built.and_then(|()| build_graph(&worker, &req).map_err(|e| (e, false))) {
        Ok(g) => g,
        Err((e, permanent)) => return report.fail(first, e, permanent),
    };
    let execution = match job_execution(&worker, &req) {
        Ok(e) => e,
        Err((e, permanent)) => return report.fail(first, e, permanent),
    };
    let (storage, restored, transport) = tokio::select! {
        biased;
        _ = cancelled(control_rx.clone()) => return,
        r = setup(&worker, &req, &graph, &specs, &log) => match r {
            Ok(v) => v,
            Err(e) => return report.fail(first, e, false),
        },
    };
    let (events_tx, events_rx) = mpsc::channel::<TaskEvent>(256);
    // The deployment's task metrics leave the worker's registry when it ends.
    let scope = worker
        .metrics
        .scope(&[("job_id", req.job_id.as_str()), ("job_name", req.job_name.as_str())]);
    let _unregister = scope.guard();
    let env = TaskEnv {
        metrics: &scope,
        graph: &graph,
        config: &execution,
        attempt: req.attempt,
        clock: worker.clock,
        log: &log,
        control_rx: &control_rx,
        checkpointing: storage.is_some(),
        storage: storage.as_ref(),
    };
    let links = Links {
        commands: command_rxs,
        events: events_tx,
        storage: storage.as_ref(),
    };
    let tasks = match build_local_tasks(&env, &specs, &transport, &local, links, restored.as_ref()) {
        Ok(tasks) => tasks,
        Err((t, e)) => {
            transport.close_all();
            return report.fail(t, e.reason_within_task(), e.is_permanent());
        }
    };
    slog::info!(log, "deployment running"; "tasks" => tasks.len());
    if follow(TaskSet::spawn(tasks), events_rx, &report, control_rx).await {
        transport.close_all();
        return;
    }
    transport.close_finished();
    (worker.finished)(&req.job_id, req.attempt);
}

/// What the local tasks' checkpoint links are made of (with checkpointing).
struct Links<'a> {
    commands: CommandReceivers,
    events: mpsc::Sender<TaskEvent>,
    storage: Option<&'a CheckpointStorage>,
}

/// Builds the tasks placed here (`local`); on an error, the task it was building and why.
fn build_local_tasks(
    env: &TaskEnv<'_>,
    specs: &[TaskSpec],
    transport: &ClusterTransport,
    local: &[usize],
    mut links: Links<'_>,
    restored: Option<&LoadedCheckpoint>,
) -> Result<Vec<(usize, Task)>, (usize, JobError)> {
    let vertex_metrics: Vec<Arc<VertexMetrics>> =
        env.graph.vertices.iter().map(|_| VertexMetrics::new_shared()).collect();
    let mut tasks = Vec::with_capacity(local.len());
    for &t in local {
        let link = links.storage.map(|st| {
            let rx = links
                .commands
                .remove(&t)
                .expect("a command channel was made for every local task");
            CheckpointLink::new(
                t,
                rx,
                links.events.clone(),
                st.clone(),
                env.graph.max_parallelism,
                restored,
            )
        });
        let task = build_task(env, &specs[t], transport, &vertex_metrics, link, restored).map_err(|e| (t, e))?;
        tasks.push((t, task));
    }
    Ok(tasks)
}

/// The runtime settings of the job's tasks here: the worker's, with the state backend the
/// job asked for; else why not, and whether that is permanent (another worker may have the
/// state cache this one lacks; a backend this build does not know stays unknown).
fn job_execution(worker: &Host, req: &DeployRequest) -> Result<ExecutionConfig, (String, bool)> {
    let mut execution = worker.execution.clone();
    match req.state_backend.as_str() {
        "" => {}
        "heap" => execution.state_backend = StateBackendConfig::Heap,
        "tiered" => {
            let settings = match (&worker.execution.state_backend, &worker.state_cache) {
                (StateBackendConfig::Tiered(s), _) | (_, Some(s)) => s.clone(),
                (StateBackendConfig::Heap, None) => {
                    return Err((
                        format!(
                            "job '{}' asks for the tiered state backend and worker {} has no state cache: start it with --state-cache-memory SIZE",
                            req.job_name, worker.id
                        ),
                        false,
                    ))
                }
            };
            execution.state_backend = StateBackendConfig::Tiered(settings);
        }
        other => {
            // The name came off the network: shown quoted and cut short.
            let shown: String = other.chars().take(32).collect();
            return Err((
                format!(
                    "the coordinator asked worker {} for state backend {shown:?}, which it does not know: do the coordinator and worker run the same build?",
                    worker.id
                ),
                true,
            ));
        }
    }
    Ok(execution)
}

/// Checks the files the job names against this worker's allowed paths: the coordinator
/// checked them at submission, against its own view of the file system; this host's may
/// differ (other mounts, links), and its files are the ones that will be opened.
fn check_paths(worker: &Host, req: &DeployRequest) -> Result<(), String> {
    let files = worker.registry.file_options(&req.job_name);
    for o in req.options.iter().filter(|o| files.contains(&o.key.as_str())) {
        worker
            .paths
            .check(&format!("--{}", o.key), &o.value)
            .map_err(|e| format!("worker {}: {e}", worker.id))?;
    }
    Ok(())
}

/// Builds the job's graph from its name and options, as the coordinator did.
fn build_graph(worker: &Host, req: &DeployRequest) -> Result<(JobGraph, Vec<TaskSpec>), String> {
    let options = req.options.iter().map(|o| (o.key.clone(), o.value.clone())).collect();
    let mut graph = worker
        .registry
        .build(&req.job_name, &options)
        .map_err(|e| format!("building job '{}' on worker {}: {e}", req.job_name, worker.id))?;
    graph.finalize().map_err(|e| e.to_string())?;
    let specs = task_specs(&graph);
    if specs.len() != req.placement.len() {
        return Err(format!(
            "the coordinator placed {} tasks but job '{}' has {} here: do the coordinator and worker run the same build?",
            req.placement.len(),
            req.job_name,
            specs.len()
        ));
    }
    Ok((graph, specs))
}

/// Opens the checkpoint store, loads what the attempt restores, and connects the data plane.
async fn setup(
    worker: &Host,
    req: &DeployRequest,
    graph: &JobGraph,
    specs: &[TaskSpec],
    log: &slog::Logger,
) -> Result<(Option<CheckpointStorage>, Option<LoadedCheckpoint>, ClusterTransport), String> {
    let storage = if req.checkpoint_store.is_empty() {
        None
    } else {
        let store = (worker.opener)(&req.checkpoint_store)
            .map_err(|e| format!("opening checkpoint store {}: {e}", req.checkpoint_store))?;
        Some(CheckpointStorage::new(store, &req.job_id))
    };
    let restored = restore_point(worker, req, storage.as_ref()).await?;
    let addresses: BTreeMap<String, String> = req
        .peers
        .iter()
        .map(|p| (p.worker_id.clone(), p.data_address.clone()))
        .collect();
    let transport = ClusterTransport::connect(ExchangeSetup {
        me: &worker.id,
        job_id: &req.job_id,
        attempt: req.attempt,
        graph,
        specs,
        placement: req.placement.clone(),
        addresses: &addresses,
        channel_capacity: worker.execution.channel_capacity,
        inbound: &worker.inbound,
        connect_timeout: worker.connect_timeout,
        frame_timeout: worker.frame_timeout,
        tls: worker.tls.as_ref(),
        log,
    })
    .await?;
    Ok((storage, restored, transport))
}

/// The savepoint or checkpoint the coordinator told the attempt to restore.
async fn restore_point(
    worker: &Host,
    req: &DeployRequest,
    storage: Option<&CheckpointStorage>,
) -> Result<Option<LoadedCheckpoint>, String> {
    if !req.restore_savepoint.is_empty() {
        let path = &req.restore_savepoint;
        let store = (worker.opener)(path).map_err(|e| format!("opening savepoint {path}: {e}"))?;
        let mapping = req
            .uid_mapping
            .iter()
            .map(|o| (o.key.clone(), o.value.clone()))
            .collect();
        return Ok(Some(load_mapped_savepoint(store.as_ref(), &mapping).await?));
    }
    match (storage, req.restore_checkpoint) {
        (Some(st), id) if id > 0 => Ok(Some(
            st.load(id).await.map_err(|e| format!("loading checkpoint {id}: {e}"))?,
        )),
        _ => Ok(None),
    }
}

/// Reports the tasks' checkpoint events and ends until every task ended; returns `true` if
/// the deployment was cancelled first (its tasks are stopped then).
async fn follow(
    mut tasks: TaskSet,
    mut events: mpsc::Receiver<TaskEvent>,
    report: &Reporter<'_>,
    control_rx: ControlReceiver,
) -> bool {
    let mut events_open = true;
    let mut cancel = std::pin::pin!(cancelled(control_rx));
    let was_cancelled = loop {
        tokio::select! {
            biased;
            _ = &mut cancel => {
                slog::info!(report.log, "deployment cancelled");
                break true;
            }
            // Polled before task ends: a task's checkpoint events reach the coordinator
            // before its end does.
            ev = events.recv(), if events_open => match ev {
                Some(ev) => report.event(ev),
                None => events_open = false,
            },
            done = tasks.next() => match done {
                None => break false,
                Some((t, Ok(exit))) => report.finished(t, exit),
                Some((t, Err(e))) => report.fail(t, e.reason_within_task(), e.is_permanent()),
            },
        }
    };
    // Ended tasks may still have uploads under way: they stop (and are seen to) too.
    tasks.stop().await;
    was_cancelled
}
