//! The worker (task executor): registers its slots with the coordinator, keeps sending
//! heartbeats, accepts data connections from peers, and runs the tasks deployed to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::paths::PathPolicy;
use sluice_transport::tls::{ClusterTls, Identity, NetStream};
use sluice_transport::wire::{read_frame, WireMessage};
use tokio::io::{AsyncRead, ReadHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::acceptor::Acceptor;
use super::deployment::{self, DeployRequest, DeploymentHandle};
use super::exchange::{accept_data, connection_config, Arrival, InboundConnections};
use super::framed::{framed, FrameSender};
use super::{ClusterError, JobRegistry, RefusalKind, StoreOpener};
use crate::clock::Clock;
use crate::cluster::metrics_report::to_wire;
use crate::metrics::MetricRegistry;
use crate::runtime::engine::{JobControl, TaskCommand};
use crate::runtime::ExecutionConfig;
use crate::spawned::AbortOnDrop;
use crate::sync::LockExt;
use sluice_transport::Barrier;

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker's id; by default `worker-<data address>`.
    pub id: Option<String>,
    /// The coordinator's address; with standby coordinators, every coordinator's, separated
    /// by commas (the worker tries them in turn until the leader accepts it).
    pub coordinator: String,
    /// Task slots offered.
    pub slots: u32,
    /// Runtime settings of the tasks (batch size, channel capacity, log); its state backend
    /// is for jobs that do not choose one.
    pub execution: ExecutionConfig,
    /// The block cache (and table sizes) of jobs that choose the tiered state backend when
    /// the default above is the heap; `None`: such jobs fail here, saying so.
    pub state_cache: Option<crate::state_backend::TieredSettings>,
    /// Processing-time clock of the tasks.
    pub clock: Clock,
    /// Longest pause between attempts to reach the coordinator.
    pub max_backoff: Duration,
    /// How long to keep dialing a peer, or waiting for a peer to dial us, when an attempt
    /// starts (and how long a greeted data connection waits for its deployment).
    pub connect_timeout: Duration,
    /// Data connections greeting at once, and greeted ones waiting for their deployment at
    /// once; more are closed at once.
    pub max_data_connections: usize,
    /// A data frame that has begun must be complete within this (a peer that sends half a
    /// frame and stops is cut off).
    pub frame_timeout: Duration,
    /// Mutual TLS to the coordinator and between workers, with this worker's certificate
    /// (its id is the certificate's); `None` talks plain TCP.
    pub tls: Option<ClusterTls>,
    /// The data address told to the coordinator and peers, when it is not the bound one (a
    /// worker bound to `0.0.0.0`, or behind address translation).
    pub advertise_address: Option<String>,
    /// Where the jobs deployed here may read and write files, checked again here (against
    /// this host's files) before a deployment builds its job.
    pub paths: PathPolicy,
    /// Where to look the leader up (etcd) before each round of registration attempts; its
    /// address is tried first, then the `coordinator` list.
    pub find_leader: Option<Arc<dyn crate::ha::HaBackend>>,
}

impl WorkerConfig {
    /// A worker of `slots` slots for the coordinator at `coordinator`, with default settings.
    pub fn new(coordinator: impl Into<String>, slots: u32, execution: ExecutionConfig) -> Self {
        WorkerConfig {
            id: None,
            coordinator: coordinator.into(),
            slots,
            execution,
            state_cache: None,
            clock: Clock::system(),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(20),
            max_data_connections: 1024,
            frame_timeout: Duration::from_secs(30),
            tls: None,
            advertise_address: None,
            paths: PathPolicy::default(),
            find_leader: None,
        }
    }
}

pub(crate) struct WorkerShared {
    pub(crate) id: String,
    pub(crate) config: WorkerConfig,
    pub(crate) registry: Arc<dyn JobRegistry>,
    pub(crate) opener: StoreOpener,
    pub(crate) inbound: Arc<InboundConnections>,
    pub(crate) log: slog::Logger,
    /// The worker's metrics; sent to the coordinator after each heartbeat.
    pub(crate) metrics: MetricRegistry,
    deployments: Mutex<BTreeMap<(String, u32), DeploymentHandle>>,
    /// Deployments whose run has not returned yet (cancelled ones included, until their tasks
    /// and uploads have stopped).
    running: watch::Sender<usize>,
}

impl WorkerShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u32), DeploymentHandle>> {
        self.deployments.locked()
    }

    /// A deployment's tasks have all ended.
    pub(crate) fn finished(&self, job: &str, attempt: u32) {
        self.lock().remove(&(job.to_string(), attempt));
    }

    /// Cancels the job's deployments up to `attempt`; whether one of `attempt` itself was
    /// running here (its end will be reported when it has stopped).
    fn cancel(&self, job: &str, attempt: u32) -> bool {
        // Cancelling attempt N also stops anything older of the same job still here.
        let stale: Vec<(String, u32)> = self
            .lock()
            .keys()
            .filter(|(j, a)| j == job && *a <= attempt)
            .cloned()
            .collect();
        let mut running = false;
        for key in stale {
            if let Some(h) = self.lock().remove(&key) {
                slog::info!(self.log, "cancelling deployment"; "job" => &key.0, "attempt" => key.1);
                h.control.send(JobControl::Cancel);
                running |= key.1 == attempt;
            }
        }
        self.inbound.discard(job, attempt);
        running
    }

    /// Stop-with-savepoint, draining: the sources of the attempt stop and its tasks finish as
    /// at end of input.
    fn drain(&self, job: &str, attempt: u32) {
        if let Some(h) = self.lock().get(&(job.to_string(), attempt)) {
            slog::info!(self.log, "draining deployment"; "job" => job, "attempt" => attempt);
            h.control.send(JobControl::Drain);
        }
    }

    fn cancel_all(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.lock()).into_iter().collect();
        for ((job, attempt), h) in all {
            slog::info!(self.log, "cancelling deployment"; "job" => &job, "attempt" => attempt);
            h.control.send(JobControl::Cancel);
            self.inbound.discard(&job, attempt);
        }
    }

    /// Waits until every deployment has stopped (after [`cancel_all`](Self::cancel_all)), at
    /// most `limit`: a worker that registers again says by that that nothing of its earlier
    /// session runs any more, and the coordinator frees those slots and may delete those
    /// checkpoints.
    async fn all_stopped(&self, limit: Duration) {
        let mut rx = self.running.subscribe();
        if tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await.is_err() {
            slog::warn!(self.log, "deployments did not stop in time; registering again anyway";
                "still_running" => *rx.borrow(), "waited_ms" => limit.as_millis() as u64);
        }
    }

    /// Passes `cmd` to task `task` of the deployment; `Err` with the reason if the task is not
    /// taking its commands (its queue is full: it is stuck, and dropping a checkpoint's
    /// completion or the end of input would leave the attempt waiting forever).
    fn command(&self, job: &str, attempt: u32, task: u32, cmd: TaskCommand) -> Result<(), String> {
        let tx = self
            .lock()
            .get(&(job.to_string(), attempt))
            .and_then(|h| h.commands.get(&(task as usize)).cloned());
        match tx {
            Some(tx) => tx.try_send(cmd).or_else(|e| match e {
                // The task ended meanwhile: its end is reported on its own.
                mpsc::error::TrySendError::Closed(_) => Ok(()),
                mpsc::error::TrySendError::Full(_) => Err(format!(
                    "task #{task} is not taking checkpoint commands ({} queued)",
                    tx.max_capacity()
                )),
            }),
            None => {
                slog::debug!(self.log, "command for a task not running here"; "job" => job, "attempt" => attempt, "task" => task);
                Ok(())
            }
        }
    }
}

/// Counts a deployment as running while it is alive.
struct Running(Arc<WorkerShared>);

impl Running {
    fn new(shared: &Arc<WorkerShared>) -> Self {
        shared.running.send_modify(|n| *n += 1);
        Running(shared.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n -= 1);
    }
}

/// A worker bound to its data address, ready to [`Worker::run`].
pub struct Worker {
    shared: Arc<WorkerShared>,
    listener: TcpListener,
    data_address: String,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .field("data_address", &self.data_address)
            .finish()
    }
}

impl Worker {
    /// Binds the data listener at `bind` (port 0 picks one).
    pub async fn bind(
        config: WorkerConfig,
        bind: &str,
        registry: Arc<dyn JobRegistry>,
        opener: StoreOpener,
    ) -> Result<Self, ClusterError> {
        if config.slots == 0 {
            return Err(ClusterError::Config("--slots must be at least 1".into()));
        }
        let listener = TcpListener::bind(bind).await.map_err(|e| ClusterError::Io {
            what: format!("binding the data address {bind}"),
            source: e,
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| ClusterError::Io {
                what: "reading the bound data address".into(),
                source: e,
            })?
            .to_string();
        let data_address = advertised(&config, &bound)?;
        let id = worker_id(&config, &data_address)?;
        let log = config.execution.log.new(slog::o!("worker" => id.clone()));
        let inbound = Arc::new(InboundConnections::with_limit(config.max_data_connections));
        let metrics = config.execution.metrics.clone().unwrap_or_default();
        metrics
            .root()
            .gauge("worker_slots", "task slots the worker offers")
            .set(config.slots as f64);
        let waiting = Arc::downgrade(&inbound);
        metrics.root().gauge_fn(
            "worker_data_connections_waiting",
            "greeted data connections waiting for their deployment",
            move || Some(waiting.upgrade()?.waiting() as f64),
        );
        Ok(Worker {
            shared: Arc::new(WorkerShared {
                id,
                config,
                registry,
                opener,
                inbound,
                log,
                metrics,
                deployments: Mutex::new(BTreeMap::new()),
                running: watch::channel(0).0,
            }),
            listener,
            data_address,
        })
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Where the worker accepts data connections.
    pub fn data_address(&self) -> &str {
        &self.data_address
    }

    /// Serves until the process ends: stays registered with the coordinator (reconnecting
    /// with back-off when it cannot be reached) and runs what it deploys here.
    pub async fn run(self) -> Result<(), ClusterError> {
        let Worker {
            shared,
            listener,
            data_address,
        } = self;
        let _ticker = AbortOnDrop(shared.metrics.spawn_ticker());
        let _accept = AbortOnDrop(tokio::spawn(accept_data_connections(shared.clone(), listener)));
        let log = shared.log.clone();
        let mut backoff = Duration::from_millis(100);
        let mut coordinators = coordinator_addresses(&shared.config.coordinator, shared.config.find_leader.is_some())?;
        // The highest epoch followed: a coordinator of a lower one is a deposed leader.
        let mut max_epoch = 0u64;
        let mut turn = 0usize;
        loop {
            if turn.is_multiple_of(coordinators.len().max(1)) {
                coordinators = with_leader(&shared, coordinators).await;
                if coordinators.is_empty() {
                    slog::warn!(log, "no leader published yet; looking again"; "retry_in_ms" => backoff.as_millis() as u64);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(shared.config.max_backoff);
                    continue;
                }
                turn = 0;
            }
            let addr = &coordinators[turn % coordinators.len()];
            // With standbys, a coordinator that does not answer soon is passed over (it may be
            // a stopped process whose port still accepts).
            let wait = if coordinators.len() > 1 || shared.config.find_leader.is_some() {
                Duration::from_secs(3)
            } else {
                Duration::from_secs(10)
            };
            let (tx, mut rx, (interval, epoch), silence) =
                match register(&shared, &data_address, (addr, wait), max_epoch).await {
                    Ok(registered) => registered,
                    Err(Registration::Refused(e)) => return Err(e),
                    Err(failed) => {
                        let (what, why) = match failed {
                            Registration::Unreachable(e) => ("cannot reach the coordinator; retrying", e.to_string()),
                            Registration::Retry(why) => ("registration failed; retrying", why),
                            Registration::Refused(_) => unreachable!("returned above"),
                        };
                        turn += 1;
                        // A full round of the coordinators without a leader: wait before the next.
                        let pause = if turn.is_multiple_of(coordinators.len()) {
                            backoff
                        } else {
                            Duration::ZERO
                        };
                        slog::warn!(log, "{}", what; "coordinator" => addr.as_str(),
                        "reason" => why, "retry_in_ms" => pause.as_millis() as u64);
                        tokio::time::sleep(pause).await;
                        if !pause.is_zero() {
                            backoff = (backoff * 2).min(shared.config.max_backoff);
                        }
                        continue;
                    }
                };
            max_epoch = max_epoch.max(epoch);
            slog::info!(log, "registered with the coordinator"; "coordinator" => addr.as_str(), "epoch" => max_epoch,
                "slots" => shared.config.slots, "data_address" => &data_address);
            backoff = Duration::from_millis(100);
            let end = session(&shared, tx, &mut rx, interval, silence).await;
            shared.cancel_all();
            match end {
                SessionEnd::Lost(reason) => {
                    slog::warn!(log, "lost the coordinator; cancelling local tasks and registering again"; "reason" => reason)
                }
                SessionEnd::Replaced(reason) => {
                    slog::error!(log, "stopping: another process registered under this worker's id"; "reason" => &reason);
                    shared.all_stopped(shared.config.connect_timeout).await;
                    let kind = super::RefusalKind::Conflict;
                    return Err(ClusterError::Refused { kind, reason });
                }
            }
            shared.all_stopped(shared.config.connect_timeout).await;
        }
    }
}

/// The data address to tell others: the advertised one if set, else the bound one, which
/// must then be reachable (not a wildcard).
fn advertised(config: &WorkerConfig, bound: &str) -> Result<String, ClusterError> {
    if let Some(a) = &config.advertise_address {
        return Ok(a.clone());
    }
    let wildcard = bound.starts_with("0.0.0.0:") || bound.starts_with("[::]:");
    if wildcard {
        return Err(ClusterError::Config(format!(
            "the data address is bound to {bound}, which peers cannot dial: set --advertise-address to the address they reach this worker at"
        )));
    }
    Ok(bound.to_string())
}

/// The worker's id: with TLS the certificate's (a given id must agree with it), else the
/// given one or one made from the data address.
fn worker_id(config: &WorkerConfig, data_address: &str) -> Result<String, ClusterError> {
    let from_cert = match config.tls.as_ref().map(|t| t.identity()) {
        None => None,
        Some(Identity::Worker(id)) => Some(id.clone()),
        Some(other) => {
            return Err(ClusterError::Config(format!(
                "the worker's TLS certificate is {other}, not a worker's (<id>.worker.sluice)"
            )))
        }
    };
    match (&config.id, from_cert) {
        (Some(given), Some(cert)) if *given != cert => Err(ClusterError::Config(format!(
            "--id {given} does not match the worker's certificate, which is for worker '{cert}'"
        ))),
        (_, Some(cert)) => Ok(cert),
        (Some(given), None) => Ok(given.clone()),
        (None, None) => Ok(format!("worker-{data_address}")),
    }
}

/// Accepts data connections from peers, each greeted and handed to the deployment it is for.
async fn accept_data_connections(shared: Arc<WorkerShared>, listener: TcpListener) {
    let limit = shared.config.max_data_connections;
    let mut acceptor = Acceptor::new(listener, limit, "data", shared.log.clone());
    loop {
        // The permit covers the greeting; greeted connections are bounded where they wait.
        let accepted = acceptor.accept().await;
        let shared = shared.clone();
        let log = shared.log.new(slog::o!("peer" => accepted.peer.to_string()));
        tokio::spawn(async move {
            let net = connection_config(shared.config.execution.channel_capacity, shared.config.frame_timeout);
            let (permit, peer) = (accepted.permit, accepted.peer.to_string());
            let arrival = Arrival {
                peer: &peer,
                pending: accepted.pending,
                tls: shared.config.tls.as_ref(),
                claim_timeout: shared.config.connect_timeout,
            };
            accept_data(accepted.stream, arrival, &shared.inbound, net, log).await;
            drop(permit);
        });
    }
}

/// `list` with the leader the HA store names (if this worker looks it up) first.
async fn with_leader(shared: &WorkerShared, mut list: Vec<String>) -> Vec<String> {
    let Some(ha) = &shared.config.find_leader else {
        return list;
    };
    // The configured list without an earlier round's looked-up leader.
    list.retain(|a| shared.config.coordinator.split(',').any(|c| c.trim() == a));
    match ha.leader().await {
        Ok(Some(leader)) => {
            list.retain(|a| *a != leader);
            list.insert(0, leader);
        }
        Ok(None) => {}
        Err(e) => slog::warn!(shared.log, "cannot look the leader up"; "error" => %e),
    }
    list
}

/// The coordinators' addresses of a comma-separated list (empty allowed when the leader is
/// looked up).
fn coordinator_addresses(list: &str, looked_up: bool) -> Result<Vec<String>, ClusterError> {
    let addrs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if (addrs.is_empty() && !looked_up) || addrs.len() > 16 {
        return Err(ClusterError::Config(format!(
            "--coordinator {list:?} must name 1 to 16 coordinator addresses, separated by commas"
        )));
    }
    Ok(addrs)
}

/// Dials the coordinator (with TLS when configured: it must prove it is the coordinator).
async fn dial_coordinator(shared: &WorkerShared, addr: &str) -> Result<NetStream, Registration> {
    let tcp = TcpStream::connect(addr).await.map_err(Registration::Unreachable)?;
    let _ = tcp.set_nodelay(true);
    match &shared.config.tls {
        None => Ok(NetStream::Plain(tcp)),
        Some(tls) => tls
            .connect(tcp, &Identity::Coordinator, addr, Duration::from_secs(10))
            .await
            .map_err(|e| Registration::Retry(e.to_string())),
    }
}

/// Why a registration did not happen.
enum Registration {
    /// The coordinator refused this worker: retrying would not help.
    Refused(ClusterError),
    /// The coordinator could not be reached: retry.
    Unreachable(std::io::Error),
    /// The coordinator did not answer as expected: retry.
    Retry(String),
}

/// Dials the coordinator at `addr` and registers; returns the connection, the heartbeat
/// interval with the leader's epoch, and the silence after which this worker gives the
/// coordinator up. A standby, or a leader of an epoch below `max_epoch` (deposed), is a
/// reason to try the next coordinator.
async fn register(
    shared: &WorkerShared,
    data_address: &str,
    (addr, wait): (&str, Duration),
    max_epoch: u64,
) -> Result<(FrameSender, ReadHalf<NetStream>, (Duration, u64), Duration), Registration> {
    let stream = dial_coordinator(shared, addr).await?;
    // The writer ends with the connection (its senders dropped, or a write failing).
    let (tx, mut rx, _writer) = framed(stream, shared.log.clone());
    tx.send(WireMessage::Register {
        worker_id: shared.id.clone(),
        data_address: data_address.to_string(),
        slots: shared.config.slots,
        build: shared.registry.build_id(),
    });
    match tokio::time::timeout(wait, read_frame(&mut rx)).await {
        Ok(Ok(Some(WireMessage::RegisterAck { epoch, .. }))) if epoch < max_epoch => Err(Registration::Retry(format!(
            "it leads epoch {epoch}, but this worker followed epoch {max_epoch} already: a deposed leader"
        ))),
        Ok(Ok(Some(WireMessage::RegisterAck {
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            epoch,
            ..
        }))) => {
            let interval = Duration::from_millis(u64::from(heartbeat_interval_ms.max(1)));
            // Half the coordinator's timeout: this worker's tasks stop before the coordinator
            // gives them up and deploys replacements.
            let silence = Duration::from_millis(u64::from(heartbeat_timeout_ms / 2)).max(interval * 3);
            Ok((tx, rx, (interval, epoch), silence))
        }
        Ok(Ok(Some(WireMessage::Rejected { reason, kind }))) if kind == RefusalKind::NotLeader.to_wire() => {
            Err(Registration::Retry(reason))
        }
        Ok(Ok(Some(WireMessage::Rejected { reason, kind }))) => Err(Registration::Refused(ClusterError::Refused {
            kind: super::RefusalKind::from_wire(kind),
            reason,
        })),
        Ok(Ok(Some(m))) => Err(Registration::Retry(format!(
            "unexpected answer {}",
            super::framed::frame_kind(&m)
        ))),
        Ok(Ok(None)) => Err(Registration::Retry("it closed the connection".into())),
        Ok(Err(e)) => Err(Registration::Retry(e.to_string())),
        Err(_) => Err(Registration::Retry(format!("no answer within {} s", wait.as_secs()))),
    }
}

/// Serves one registration: heartbeats out, commands in. Returns why it ended.
/// How a session with the coordinator ended.
enum SessionEnd {
    /// The connection or the coordinator is gone: register again.
    Lost(String),
    /// Another process registered under this worker's id: stop.
    Replaced(String),
}

async fn session<R: AsyncRead>(
    shared: &Arc<WorkerShared>,
    tx: FrameSender,
    rx: &mut ReadHalf<R>,
    interval: Duration,
    silence: Duration,
) -> SessionEnd {
    let _heartbeat = {
        let tx = tx.clone();
        let id = shared.id.clone();
        let metrics = shared.metrics.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if !tx.send(WireMessage::Heartbeat { worker_id: id.clone() }) {
                    return;
                }
                if !tx.send(metrics_report(&id, &metrics)) {
                    return;
                }
            }
        }))
    };
    loop {
        let lost = |why: String| SessionEnd::Lost(why);
        let msg = match tokio::time::timeout(silence, read_frame(rx)).await {
            Err(_) => return lost(format!("nothing from the coordinator for {} ms", silence.as_millis())),
            Ok(Ok(Some(WireMessage::Rejected { reason, .. }))) => return SessionEnd::Replaced(reason),
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return lost("the coordinator closed the connection".to_string()),
            Ok(Err(e)) => return lost(format!("bad frame from the coordinator: {e}")),
        };
        if let Err(reason) = on_command(shared, &tx, msg) {
            return lost(reason);
        }
    }
}

/// This worker's metrics as a report the coordinator accepts: at most
/// `MAX_WORKER_FRAME` bytes, dropping the last points (in name order) if there are too many.
fn metrics_report(id: &str, metrics: &crate::metrics::MetricRegistry) -> WireMessage {
    let mut msg = WireMessage::MetricsReport {
        worker_id: id.to_string(),
        points: to_wire(&metrics.snapshot()),
    };
    while sluice_transport::wire::encode_frame(&msg).map_or(true, |b| b.len() > super::coordinator::MAX_WORKER_FRAME) {
        let WireMessage::MetricsReport { points, .. } = &mut msg else {
            break;
        };
        if points.is_empty() {
            break;
        }
        points.truncate(points.len() / 2);
    }
    msg
}

/// Carries out one frame of the coordinator; `Err` with the reason for a frame no coordinator
/// sends a worker (the session ends).
fn on_command(shared: &Arc<WorkerShared>, tx: &FrameSender, msg: WireMessage) -> Result<(), String> {
    match msg {
        WireMessage::Heartbeat { .. } => {}
        WireMessage::DeployTask {
            job_id,
            attempt,
            job_name,
            options,
            placement,
            peers,
            checkpoint_store,
            restore_checkpoint,
            restore_savepoint,
            uid_mapping,
            state_backend,
        } => deploy(
            shared,
            tx,
            DeployRequest {
                job_id,
                attempt,
                job_name,
                options,
                placement,
                peers,
                checkpoint_store,
                restore_checkpoint,
                restore_savepoint,
                uid_mapping,
                state_backend,
            },
        ),
        WireMessage::CancelTask {
            job_id,
            attempt,
            drain: true,
        } => shared.drain(&job_id, attempt),
        WireMessage::CancelTask {
            job_id,
            attempt,
            drain: false,
        } => {
            if !shared.cancel(&job_id, attempt) {
                // Never deployed here, or already ended: nothing of it runs.
                tx.send(WireMessage::AttemptEnded { job_id, attempt });
            }
        }
        msg @ (WireMessage::TriggerCheckpoint { .. }
        | WireMessage::NotifyCheckpointComplete { .. }
        | WireMessage::EndInput { .. }) => task_command(shared, tx, msg),
        other => {
            return Err(format!(
                "unexpected frame {} from the coordinator",
                super::framed::frame_kind(&other)
            ))
        }
    }
    Ok(())
}

/// Passes a checkpoint command of the coordinator to its task; a task that does not take it
/// is reported failed (the job master restarts the attempt), never silently skipped.
fn task_command(shared: &WorkerShared, tx: &FrameSender, msg: WireMessage) {
    let (job_id, attempt, task, cmd) = match msg {
        WireMessage::TriggerCheckpoint {
            job_id,
            attempt,
            checkpoint_id,
            timestamp_ms,
            task,
        } => (
            job_id,
            attempt,
            task,
            TaskCommand::Trigger(Barrier {
                checkpoint_id,
                timestamp_ms,
            }),
        ),
        WireMessage::NotifyCheckpointComplete {
            job_id,
            attempt,
            checkpoint_id,
            task,
        } => (job_id, attempt, task, TaskCommand::Complete(checkpoint_id)),
        WireMessage::EndInput { job_id, attempt, task } => (job_id, attempt, task, TaskCommand::Finish),
        _ => return,
    };
    if let Err(reason) = shared.command(&job_id, attempt, task, cmd) {
        slog::warn!(shared.log, "task stuck"; "job" => &job_id, "attempt" => attempt, "task" => task, "reason" => &reason);
        tx.send(WireMessage::TaskFailed {
            job_id,
            attempt,
            task,
            reason,
            permanent: false,
        });
    }
}

/// Starts a deployment (cancelling the job's older attempts still here).
/// What a deployment is given of this worker.
fn host(shared: &Arc<WorkerShared>) -> Arc<deployment::Host> {
    let c = &shared.config;
    let me = Arc::downgrade(shared);
    Arc::new(deployment::Host {
        id: shared.id.clone(),
        execution: c.execution.clone(),
        state_cache: c.state_cache.clone(),
        clock: c.clock,
        connect_timeout: c.connect_timeout,
        frame_timeout: c.frame_timeout,
        tls: c.tls.clone(),
        paths: c.paths.clone(),
        registry: shared.registry.clone(),
        opener: shared.opener.clone(),
        inbound: shared.inbound.clone(),
        log: shared.log.clone(),
        metrics: shared.metrics.clone(),
        finished: Box::new(move |job, attempt| {
            if let Some(w) = me.upgrade() {
                w.finished(job, attempt);
            }
        }),
    })
}

fn deploy(shared: &Arc<WorkerShared>, tx: &FrameSender, req: DeployRequest) {
    if req.attempt > 0 {
        shared.cancel(&req.job_id, req.attempt - 1);
    }
    let (handle, control_rx, command_rxs) = deployment::prepare(&req, &shared.id);
    shared.lock().insert((req.job_id.clone(), req.attempt), handle);
    slog::info!(shared.log, "deploying"; "job" => &req.job_id, "attempt" => req.attempt, "name" => &req.job_name);
    let running = Running::new(shared);
    let (shared, tx) = (shared.clone(), tx.clone());
    tokio::spawn(async move {
        deployment::run(host(&shared), tx, req, control_rx, command_rxs).await;
        drop(running);
    });
}
