//! The coordinator: accepts workers and clients, keeps the worker registry and the job table,
//! and runs one job master per job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_state::blob::BlobStore;
use sluice_transport::tls::{ClusterTls, Identity, NetStream};
use sluice_transport::wire::{read_frame_limited, FrameError, WireJobEntry, WireMessage, WireOption, MAX_FRAME_BYTES};
use tokio::io::{AsyncRead, ReadHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::acceptor::{Acceptor, Pending};
use super::framed::{framed, FrameSender};
use super::job_master::{JobMaster, MasterEvent, MasterParts};
use super::metrics_report::from_wire;
use super::{options, ClusterError, JobRegistry, JobStatus, StoreOpener};
use crate::clock::Clock;
use crate::error::{InvalidSetting, JobBuildError};
use crate::metrics::{CheckpointRecord, CheckpointStats, MetricRegistry, MetricSample, ScopeGuard};
use crate::paths::PathPolicy;
use crate::runtime::engine::SavepointRequest;
use crate::spawned::AbortOnDrop;

/// Settings of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How often workers send heartbeats (told to them at registration).
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// How long a job waits for enough free slots before it fails.
    pub slot_wait: Duration,
    /// Where jobs' checkpoints go (a location the workers can open too); `None` turns
    /// checkpointing off for every job.
    pub checkpoint_dir: Option<String>,
    /// Processing-time clock (job ids, checkpoint timestamps).
    pub clock: Clock,
    /// Connections the control port serves at once (workers and clients); more are closed
    /// at once.
    pub max_connections: usize,
    /// Ended jobs kept in the job table (their status, error and final figures); the oldest
    /// are forgotten beyond it.
    pub max_retained_jobs: usize,
    /// Jobs running or waiting for slots at once; more submissions are refused.
    pub max_active_jobs: usize,
    /// How long an ended attempt waits for its workers to confirm that its tasks and their
    /// uploads have stopped, before its slots are freed (and, if the job ended, its
    /// checkpoints deleted) anyway, with a warning.
    pub cancel_timeout: Duration,
    /// Mutual TLS on the control port (workers, clients) with this node's certificate; `None`
    /// accepts plain connections from anyone who reaches the port.
    pub tls: Option<ClusterTls>,
    /// Where job files, savepoint targets and savepoints to start from may be.
    pub paths: PathPolicy,
    /// Where savepoints go when a request names no directory (Flink's
    /// `state.savepoints.dir`).
    pub savepoint_dir: Option<String>,
    /// The simulation's deliberately broken variant: registrations and requests are taken
    /// at their word instead of being checked against the peer's certificate (the checker
    /// must then see an impostor's damage). Exists only in simulation builds.
    #[cfg(madsim)]
    #[doc(hidden)]
    pub trust_claimed_identities: bool,
    /// Where the coordinator logs.
    pub log: slog::Logger,
}

impl CoordinatorConfig {
    /// Defaults: heartbeats every 500 ms, lost after 10 s of silence, jobs wait 60 s for slots.
    pub fn new(log: slog::Logger) -> Self {
        CoordinatorConfig {
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(10),
            slot_wait: Duration::from_secs(60),
            checkpoint_dir: None,
            clock: Clock::system(),
            max_connections: 1024,
            max_retained_jobs: 1000,
            cancel_timeout: Duration::from_secs(30),
            max_active_jobs: 1024,
            tls: None,
            paths: PathPolicy::default(),
            savepoint_dir: None,
            #[cfg(madsim)]
            trust_claimed_identities: false,
            log,
        }
    }
}

/// A job as the coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The job's id.
    pub id: String,
    /// Its name in the registry.
    pub name: String,
    /// Its status.
    pub status: JobStatus,
    /// Why it failed (or why its last attempt failed).
    pub error: Option<String>,
    /// Its current execution attempt.
    pub attempt: u32,
    /// Its vertices: name and parallelism, in graph order.
    pub vertices: Vec<(String, u32)>,
}

/// A job's checkpoint counters and settings, as `GET /jobs/{id}/checkpoints` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointOverview {
    /// Checkpoints triggered, completed and failed, over all attempts.
    pub triggered: u64,
    /// Completed.
    pub completed: u64,
    /// Failed (declined, timed out, not stored).
    pub failed: u64,
    /// Restarts of the job.
    pub restarts: u64,
    /// The latest completed checkpoint: id, duration (ms), state size (bytes), completion
    /// time (ms since the epoch).
    pub latest: Option<(u64, u64, u64, i64)>,
    /// Interval, timeout and min pause (ms), tolerable failures and retained count, if the job
    /// checkpoints.
    pub config: Option<(u64, u64, u64, u32, u32)>,
    /// Alignment of the latest completed checkpoint (the longest of any task), in ms.
    pub latest_alignment_ms: u64,
    /// The recent checkpoints, oldest first.
    pub history: Vec<CheckpointRecord>,
}

impl CheckpointOverview {
    /// The overview of a job with these counters and checkpoint settings.
    pub fn of(s: &CheckpointStats, config: Option<(u64, u64, u64, u32, u32)>) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let latest = s.latest_id.load(Relaxed);
        CheckpointOverview {
            triggered: s.triggered.load(Relaxed),
            completed: s.completed.load(Relaxed),
            failed: s.failed.load(Relaxed),
            restarts: s.restarts.load(Relaxed),
            latest: (latest > 0).then(|| {
                (
                    latest,
                    s.latest_duration_ms.load(Relaxed),
                    s.latest_size.load(Relaxed),
                    s.latest_completed_at_ms.load(Relaxed),
                )
            }),
            config,
            latest_alignment_ms: s.latest_alignment_ms.load(Relaxed),
            history: s.history(),
        }
    }
}

/// A registered worker as the coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: String,
    /// Where it accepts data connections.
    pub data_address: String,
    /// Slots it offers.
    pub slots: u32,
    /// Slots in use.
    pub used: u32,
}

pub(crate) struct WorkerEntry {
    /// Distinguishes this registration from an earlier one of the same worker id.
    pub(crate) session: u64,
    pub(crate) data_address: String,
    pub(crate) slots: u32,
    pub(crate) used: u32,
    pub(crate) tx: FrameSender,
}

pub(crate) struct JobEntry {
    pub(crate) name: String,
    pub(crate) status: JobStatus,
    pub(crate) error: Option<String>,
    pub(crate) attempt: u32,
    pub(crate) events: mpsc::UnboundedSender<MasterEvent>,
    /// Savepoint requests, for jobs that checkpoint.
    pub(crate) savepoints: Option<mpsc::Sender<SavepointRequest>>,
    pub(crate) stats: Arc<CheckpointStats>,
    pub(crate) checkpoint_config: Option<(u64, u64, u64, u32, u32)>,
    /// Failures of the job's attempts, oldest first (the last [`MAX_EXCEPTIONS`]).
    pub(crate) exceptions: std::collections::VecDeque<JobException>,
    /// Vertex names and parallelism, in graph order.
    pub(crate) vertices: Vec<(String, u32)>,
    /// Submission order (FIFO for slots).
    pub(crate) seq: u64,
    /// The job's own metrics on the coordinator (checkpoints, restarts, uptime): unregistered
    /// when it ends.
    pub(crate) metric_scope: Option<ScopeGuard>,
    /// Once ended: when, and its metrics as they were at the end (what `GET /jobs/{id}` shows
    /// after its series left `/metrics`).
    pub(crate) ended: Option<(i64, Vec<MetricSample>)>,
    /// The workers of the job's latest attempt: frames about the job from any other worker
    /// are dropped before they reach (and queue up at) its master.
    pub(crate) placed_on: std::collections::BTreeSet<String>,
}

pub use crate::runtime::JobException;
use crate::runtime::MAX_EXCEPTIONS;
use crate::sync::LockExt;

#[derive(Default)]
pub(crate) struct State {
    pub(crate) workers: BTreeMap<String, WorkerEntry>,
    pub(crate) jobs: BTreeMap<String, JobEntry>,
    /// The latest metrics each worker reported, with its `worker` label.
    pub(crate) worker_metrics: BTreeMap<String, Vec<MetricSample>>,
    /// Jobs waiting for slots: submission number and slots needed. The earliest that could
    /// run on the cluster gets slots first.
    pub(crate) slot_queue: BTreeMap<u64, u32>,
    next_session: u64,
    next_job: u64,
}

pub(crate) struct Shared {
    pub(crate) config: CoordinatorConfig,
    pub(crate) registry: Arc<dyn JobRegistry>,
    pub(crate) opener: StoreOpener,
    pub(crate) store: Option<Arc<dyn BlobStore>>,
    pub(crate) state: Mutex<State>,
    /// The coordinator's own metrics (process and job scopes).
    pub(crate) metrics: MetricRegistry,
    /// Distinguishes this coordinator's job ids from an earlier run's.
    started_ms: i64,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    pub(crate) fn set_status(&self, job: &str, status: JobStatus, error: Option<String>) {
        let mut st = self.lock();
        if let Some(j) = st.jobs.get_mut(job) {
            if j.status != status {
                slog::info!(self.config.log, "job status"; "job" => job, "name" => &j.name, "status" => status.as_str(),
                    "error" => error.as_deref().unwrap_or(""));
            }
            j.status = status;
            if error.is_some() {
                j.error = error;
            }
        }
    }

    /// Records a failure of `job`'s current attempt in its exceptions history.
    pub(crate) fn record_exception(&self, job: &str, reason: &str) {
        let now = self.config.clock.now_ms();
        if let Some(j) = self.lock().jobs.get_mut(job) {
            if j.exceptions.len() == MAX_EXCEPTIONS {
                j.exceptions.pop_front();
            }
            let attempt = j.attempt;
            j.exceptions.push_back(JobException {
                timestamp_ms: now,
                attempt,
                reason: reason.to_string(),
            });
        }
    }

    pub(crate) fn set_attempt(&self, job: &str, attempt: u32) {
        if let Some(j) = self.lock().jobs.get_mut(job) {
            j.attempt = attempt;
        }
    }

    /// The metrics of job `id` now: the coordinator's own and the workers' latest reports.
    pub(crate) fn live_job_samples(&self, id: &str) -> Vec<MetricSample> {
        let mut all: Vec<MetricSample> = self
            .metrics
            .snapshot()
            .into_iter()
            .filter(|s| s.label("job_id") == Some(id))
            .collect();
        all.extend(
            self.lock()
                .worker_metrics
                .values()
                .flatten()
                .filter(|s| s.label("job_id") == Some(id))
                .cloned(),
        );
        all.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        all
    }

    /// Job `id` has ended: keeps its final figures, takes its series out of the metrics, and
    /// forgets the oldest ended jobs beyond the retention limit.
    pub(crate) fn job_ended(&self, id: &str) {
        // Taken without the state lock: reading the coordinator's gauges takes it.
        let figures = self.live_job_samples(id);
        let now = self.config.clock.now_ms();
        let (scope, evicted) = {
            let mut st = self.lock();
            let Some(j) = st.jobs.get_mut(id) else { return };
            debug_assert!(j.status.is_terminal(), "job {id} ended while {}", j.status);
            j.ended = Some((now, figures));
            let scope = j.metric_scope.take();
            (scope, evict_ended(&mut st, self.config.max_retained_jobs))
        };
        drop(scope);
        for (old, guard) in evicted {
            drop(guard);
            slog::debug!(self.config.log, "forgot an ended job (retention)"; "job" => old);
        }
    }

    /// Tells every job master (they ignore what is not theirs).
    pub(crate) fn broadcast(&self, ev: impl Fn() -> MasterEvent) {
        for j in self.lock().jobs.values() {
            let _ = j.events.send(ev());
        }
    }
}

/// The coordinator of a cluster; cheap to clone (all clones are the same coordinator). The
/// network server ([`Coordinator::serve`]) and the REST API are thin layers over its methods.
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
}

impl Coordinator {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator building jobs from `registry`; `opener` opens `config.checkpoint_dir`.
    pub fn new(
        config: CoordinatorConfig,
        registry: Arc<dyn JobRegistry>,
        opener: StoreOpener,
    ) -> Result<Self, ClusterError> {
        if let Some(other) = config
            .tls
            .as_ref()
            .map(|t| t.identity())
            .filter(|i| **i != Identity::Coordinator)
        {
            return Err(ClusterError::Config(format!(
                "the coordinator's TLS certificate is {other}, not coordinator.sluice: workers and clients would refuse it"
            )));
        }
        // Workers stop their tasks after half the timeout of silence (at least three
        // intervals); that must come well before the coordinator redeploys them.
        if config.heartbeat_interval.is_zero() || config.heartbeat_timeout < config.heartbeat_interval * 6 {
            return Err(ClusterError::Config(format!(
                "the heartbeat timeout ({:?}) must be at least six heartbeat intervals ({:?})",
                config.heartbeat_timeout, config.heartbeat_interval
            )));
        }
        let store = match &config.checkpoint_dir {
            Some(dir) => Some((opener)(dir).map_err(|e| ClusterError::Config(format!("--checkpoint-dir {dir}: {e}")))?),
            None => None,
        };
        let started_ms = config.clock.now_ms();
        let coordinator = Coordinator {
            shared: Arc::new(Shared {
                config,
                registry,
                opener,
                store,
                state: Mutex::new(State::default()),
                metrics: MetricRegistry::new(),
                started_ms,
            }),
        };
        super::coordinator_metrics::register_process_metrics(&coordinator.shared);
        Ok(coordinator)
    }

    /// Accepts workers and clients on `listener` until the process ends.
    /// Serves until the process ends (accept errors are logged and retried, never fatal).
    pub async fn serve(&self, listener: TcpListener) -> Result<(), ClusterError> {
        let log = &self.shared.config.log;
        let ticker = self.shared.metrics.spawn_ticker();
        let _stop_ticker = AbortOnDrop(ticker);
        let mut acceptor = Acceptor::new(listener, self.shared.config.max_connections, "control", log.clone());
        loop {
            let accepted = acceptor.accept().await;
            let _ = accepted.stream.set_nodelay(true);
            let this = self.clone();
            let log = log.new(slog::o!("peer" => accepted.peer.to_string()));
            tokio::spawn(async move {
                let (peer, permit) = (accepted.peer.to_string(), accepted.permit);
                this.handle_connection(accepted.stream, peer, accepted.pending, log)
                    .await;
                drop(permit);
            });
        }
    }

    /// Serves one connection and returns once its last answer is written (or given up on).
    async fn handle_connection(&self, stream: TcpStream, peer: String, pending: Pending, log: slog::Logger) {
        // The handshake runs here, under the first frame's deadline, never in the accept loop.
        let (stream, who) = match &self.shared.config.tls {
            None => (NetStream::Plain(stream), None),
            Some(tls) => match tls.accept(stream, &peer, FIRST_FRAME_WAIT).await {
                Ok((stream, who)) => (stream, Some(who)),
                Err(e) => {
                    slog::warn!(log, "refused a connection: TLS handshake failed"; "reason" => %e);
                    return;
                }
            },
        };
        let log = match &who {
            Some(who) => log.new(slog::o!("identity" => who.to_string())),
            None => log,
        };
        let (tx, rx, writer) = framed(stream, log.clone());
        self.converse(tx, rx, who, pending, log).await;
        // The connection counts against the limit until its answer is out: a client that
        // does not read cannot leave answers piling up beyond it.
        let _ = tokio::time::timeout(super::framed::WRITE_TIMEOUT, writer).await;
    }

    async fn converse(
        &self,
        tx: FrameSender,
        mut rx: ReadHalf<NetStream>,
        who: Option<Identity>,
        pending: Pending,
        log: slog::Logger,
    ) {
        let Some(first) = read_first_frame(&tx, &mut rx, &log).await else {
            return;
        };
        drop(pending);
        if let Err(e) = authorize(self.checked(who.as_ref()), &first) {
            slog::warn!(log, "refused a request: not allowed"; "frame" => frame_kind(&first), "reason" => %e);
            tx.send(e.to_wire());
            return;
        }
        let reply = match first {
            WireMessage::Register {
                worker_id,
                data_address,
                slots,
            } => {
                self.worker_session(worker_id, data_address, slots, tx, rx, log).await;
                return;
            }
            WireMessage::SubmitJob { job_name, options } => self
                .submit(&job_name, &options)
                .map(|job_id| WireMessage::JobSubmitted { job_id }),
            WireMessage::ListJobs => Ok(self.job_list()),
            WireMessage::CancelJob { job_id } => self.cancel(&job_id).map(|()| WireMessage::JobCancelled { job_id }),
            WireMessage::TriggerSavepoint {
                job_id,
                target_dir,
                stop,
                drain,
            } => self
                .savepoint(&job_id, &target_dir, stop.then_some(drain))
                .await
                .map(|(path, checkpoint_id)| WireMessage::SavepointDone { path, checkpoint_id }),
            other => {
                slog::warn!(log, "closing connection: unexpected first frame"; "frame" => frame_kind(&other));
                return;
            }
        };
        let reply = reply.unwrap_or_else(|e| {
            if e.kind() == super::RefusalKind::Forbidden {
                slog::warn!(log, "refused a request: not allowed"; "reason" => %e);
            }
            e.to_wire()
        });
        tx.send(reply);
    }

    /// The identity a conversation is checked against (the simulation's broken variant
    /// checks none).
    fn checked<'a>(&self, who: Option<&'a Identity>) -> Option<&'a Identity> {
        #[cfg(madsim)]
        if self.shared.config.trust_claimed_identities {
            return None;
        }
        who
    }

    async fn worker_session<R: AsyncRead>(
        &self,
        worker_id: String,
        data_address: String,
        slots: u32,
        tx: FrameSender,
        mut rx: ReadHalf<R>,
        log: slog::Logger,
    ) {
        let sh = &self.shared;
        if let Err(e) = check_registration(&worker_id, &data_address, slots) {
            slog::warn!(log, "refused a worker registration"; "reason" => %e);
            tx.send(e.to_wire());
            return;
        }
        let log = log.new(slog::o!("worker" => worker_id.clone()));
        let session = self.register_worker(&worker_id, &data_address, slots, &tx, &log);
        // Heartbeats to the worker too: a worker that stops hearing from the coordinator stops
        // its tasks (they would be zombies once the coordinator redeploys them elsewhere).
        let beat = {
            let (tx, id, every) = (tx.clone(), worker_id.clone(), sh.config.heartbeat_interval);
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if !tx.send(WireMessage::Heartbeat { worker_id: id.clone() }) {
                        return;
                    }
                }
            }))
        };
        sh.broadcast(|| MasterEvent::SlotsChanged);
        let reason = self.read_worker_frames(&worker_id, session, &mut rx, &log).await;
        drop(beat);
        let removed = {
            let mut st = sh.lock();
            if st.workers.get(&worker_id).is_some_and(|w| w.session == session) {
                st.workers.remove(&worker_id);
                st.worker_metrics.remove(&worker_id);
                true
            } else {
                false
            }
        };
        if removed {
            slog::warn!(log, "worker lost"; "reason" => &reason);
            sh.broadcast(|| MasterEvent::WorkerLost {
                worker: worker_id.clone(),
                reason: reason.clone(),
            });
        }
    }

    /// Enters a worker in the registry (replacing an earlier registration of the same id) and
    /// acknowledges it; returns the new registration's session number.
    fn register_worker(
        &self,
        worker_id: &str,
        data_address: &str,
        slots: u32,
        tx: &FrameSender,
        log: &slog::Logger,
    ) -> u64 {
        let sh = &self.shared;
        let (session, replaced) = {
            let mut st = sh.lock();
            st.next_session += 1;
            let session = st.next_session;
            let old = st.workers.insert(
                worker_id.to_string(),
                WorkerEntry {
                    session,
                    data_address: data_address.to_string(),
                    slots,
                    used: 0,
                    tx: tx.clone(),
                },
            );
            (session, old)
        };
        let replaced = replaced.is_some_and(|old| {
            // If the earlier registration's process still listens, it is a second process
            // with this id (and, with TLS, this certificate): it is told so and stops, rather
            // than registering again and taking the place back, forever.
            old.tx.send(
                ClusterError::Refused {
                    kind: super::RefusalKind::Conflict,
                    reason: format!("worker '{worker_id}' registered again from another connection: two processes use this id; this one stops"),
                }
                .to_wire(),
            );
            slog::warn!(log, "worker registered again while its earlier registration was open: a restart, or two processes with one id";
                "worker" => worker_id);
            true
        });
        slog::info!(log, "worker registered"; "slots" => slots, "data_address" => data_address, "replaces_earlier" => replaced);
        if replaced {
            // The worker restarted before its old registration was found dead: whatever ran
            // there is gone.
            sh.broadcast(|| MasterEvent::WorkerLost {
                worker: worker_id.to_string(),
                reason: "the worker registered again (it restarted)".into(),
            });
        }
        tx.send(WireMessage::RegisterAck {
            worker_id: worker_id.to_string(),
            heartbeat_interval_ms: sh.config.heartbeat_interval.as_millis() as u32,
            heartbeat_timeout_ms: sh.config.heartbeat_timeout.as_millis() as u32,
        });
        session
    }

    /// Reads a registered worker's frames until it goes silent, closes or misbehaves; returns
    /// why the session ended.
    async fn read_worker_frames<R: AsyncRead>(
        &self,
        worker_id: &str,
        session: u64,
        rx: &mut ReadHalf<R>,
        log: &slog::Logger,
    ) -> String {
        let sh = &self.shared;
        let timeout = sh.config.heartbeat_timeout;
        loop {
            let frame = read_frame_limited(rx, MAX_WORKER_FRAME, Some(timeout));
            let msg = match tokio::time::timeout(timeout, frame).await {
                Err(_) => return format!("no heartbeat for {} ms", timeout.as_millis()),
                Ok(Ok(None)) => return "connection closed".to_string(),
                Ok(Err(e)) => return format!("bad frame: {e}"),
                Ok(Ok(Some(msg))) => msg,
            };
            // A registration under the same id replaced this session: the connection ends,
            // so its process cancels what it runs instead of running on unseen.
            if sh.lock().workers.get(worker_id).is_none_or(|w| w.session != session) {
                return "another worker registered with the same id".to_string();
            }
            match msg {
                WireMessage::Heartbeat { .. } => {}
                WireMessage::MetricsReport { points, .. } => {
                    let samples = from_wire(points, ("worker", worker_id));
                    let mut st = sh.lock();
                    if st.workers.get(worker_id).is_some_and(|w| w.session == session) {
                        st.worker_metrics.insert(worker_id.to_string(), samples);
                    }
                }
                msg => {
                    if let Err(reason) = self.route(msg, worker_id, session, log) {
                        return reason;
                    }
                }
            }
        }
    }

    /// Passes a worker's frame about a job to the job's master, if the job runs on that worker
    /// (anything else is dropped here, before it could queue up); `Err` for a frame that is
    /// about no job (the session ends).
    fn route(&self, msg: WireMessage, worker_id: &str, session: u64, log: &slog::Logger) -> Result<(), String> {
        let Some(job) = job_of(&msg) else {
            return Err(format!("unexpected frame {} from a worker", frame_kind(&msg)));
        };
        let target = self
            .shared
            .lock()
            .jobs
            .get(job)
            .map(|j| (j.placed_on.contains(worker_id), j.events.clone()));
        match target {
            Some((true, events)) => {
                let _ = events.send(master_event(msg, worker_id, session));
            }
            Some((false, _)) => {
                // Late frames of a worker the job has left, or a worker speaking about tasks
                // that are not its own: either way not acted on.
                slog::info!(log, "dropped a frame about a job that does not run on this worker"; "job" => job,
                    "frame" => frame_kind(&msg))
            }
            None => slog::debug!(log, "frame for an unknown job dropped"; "job" => job),
        }
        Ok(())
    }

    /// Submits job `name` with `options` (as `sluice submit` gives them, without `--`);
    /// returns its id. The job is built here first, so a bad name or option is refused now
    /// with the reason.
    pub fn submit(&self, name: &str, options: &[WireOption]) -> Result<String, ClusterError> {
        let sh = &self.shared;
        // Options travel to every worker with each deployment: keep them small.
        let size: usize = options.iter().map(|o| o.key.len() + o.value.len()).sum();
        if size > MAX_OPTIONS_BYTES {
            return Err(ClusterError::BadOption(InvalidSetting(format!(
                "the job's options take {size} bytes, more than the limit of {MAX_OPTIONS_BYTES}"
            ))));
        }
        self.check_paths(name, options)?;
        let parsed = options::parse(options, sh.store.as_ref())?;
        let mut graph = sh.registry.build(name, &parsed.job)?;
        graph.finalize().map_err(JobBuildError::Graph)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (savepoints, requests) = if parsed.checkpointing.is_some() {
            let (stx, srx) = mpsc::channel(MAX_WAITING_SAVEPOINTS);
            (Some(stx), Some(Arc::new(tokio::sync::Mutex::new(srx))))
        } else {
            (None, None)
        };
        let stats = Arc::new(CheckpointStats::default());
        let entry = JobEntry {
            name: name.to_string(),
            status: JobStatus::Created,
            error: None,
            attempt: 0,
            events: tx.clone(),
            savepoints,
            stats: stats.clone(),
            checkpoint_config: parsed.checkpointing.as_ref().map(|c| {
                (
                    c.interval.as_millis() as u64,
                    c.timeout.as_millis() as u64,
                    c.min_pause.as_millis() as u64,
                    c.tolerable_failures,
                    c.retained,
                )
            }),
            exceptions: Default::default(),
            vertices: graph.vertices.iter().map(|v| (v.name.clone(), v.parallelism)).collect(),
            seq: 0,
            metric_scope: None,
            ended: None,
            placed_on: Default::default(),
        };
        let (id, seq) = self.admit(entry)?;
        let scope = super::coordinator_metrics::register_job_metrics(sh, &id, name, &stats);
        if let Some(j) = sh.lock().jobs.get_mut(&id) {
            j.metric_scope = Some(scope);
        }
        slog::info!(sh.config.log, "job submitted"; "job" => &id, "name" => name);
        let master = JobMaster::new(MasterParts {
            id: id.clone(),
            name: name.to_string(),
            graph,
            options: parsed,
            shared: sh.clone(),
            events: rx,
            own_events: tx,
            savepoints: requests,
            stats,
            seq,
        });
        tokio::spawn(master.run());
        Ok(id)
    }

    /// Enters a new job into the table under a fresh id and submission number, unless as many
    /// jobs as allowed are running or waiting already.
    fn admit(&self, mut entry: JobEntry) -> Result<(String, u64), ClusterError> {
        let sh = &self.shared;
        let mut st = sh.lock();
        let active = st.jobs.values().filter(|j| !j.status.is_terminal()).count();
        if active >= sh.config.max_active_jobs {
            return Err(ClusterError::Busy(format!(
                "{active} jobs are running or waiting, the limit (max-active-jobs) is {}",
                sh.config.max_active_jobs
            )));
        }
        st.next_job += 1;
        // Start time and a counter: unique across restarts of the coordinator (a new id never
        // finds an older job's checkpoints).
        let id = format!("{:012x}{:04x}", sh.started_ms as u64 & 0xffff_ffff_ffff, st.next_job);
        entry.seq = st.next_job;
        st.jobs.insert(id.clone(), entry);
        Ok((id, st.next_job))
    }

    /// Job `id`'s checkpoint counters and settings.
    pub fn checkpoints(&self, id: &str) -> Option<CheckpointOverview> {
        let st = self.shared.lock();
        let j = st.jobs.get(id)?;
        Some(CheckpointOverview::of(&j.stats, j.checkpoint_config))
    }

    /// Job `id`'s failures, oldest first.
    pub fn exceptions(&self, id: &str) -> Option<Vec<JobException>> {
        self.shared
            .lock()
            .jobs
            .get(id)
            .map(|j| j.exceptions.iter().cloned().collect())
    }

    /// The coordinator's settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.shared.config
    }

    /// Every job, in id order (oldest first).
    pub fn jobs(&self) -> Vec<JobInfo> {
        self.shared
            .lock()
            .jobs
            .iter()
            .map(|(id, j)| JobInfo {
                id: id.clone(),
                name: j.name.clone(),
                status: j.status,
                error: j.error.clone(),
                attempt: j.attempt,
                vertices: j.vertices.clone(),
            })
            .collect()
    }

    /// One job.
    pub fn job(&self, id: &str) -> Option<JobInfo> {
        self.jobs().into_iter().find(|j| j.id == id)
    }

    /// Every registered worker, in id order.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.shared
            .lock()
            .workers
            .iter()
            .map(|(id, w)| WorkerInfo {
                id: id.clone(),
                data_address: w.data_address.clone(),
                slots: w.slots,
                used: w.used,
            })
            .collect()
    }

    /// The `JobList` answer: every job in the table (bounded by the retention of ended jobs),
    /// each error text cut short, so the frame stays well under the limit.
    fn job_list(&self) -> WireMessage {
        WireMessage::JobList {
            jobs: self
                .jobs()
                .into_iter()
                .map(|j| WireJobEntry {
                    job_id: j.id,
                    job_name: j.name,
                    status: j.status.as_str().into(),
                    error: cut(j.error.unwrap_or_default(), MAX_LISTED_ERROR),
                })
                .collect(),
        }
    }

    /// Job `id`'s entry, or the error naming the known ids.
    fn unknown_job(st: &State, id: &str) -> ClusterError {
        ClusterError::UnknownJob {
            id: id.to_string(),
            known: st.jobs.keys().cloned().collect(),
        }
    }

    /// Checks that job `id` can take a savepoint now: it exists, runs and checkpoints.
    pub fn check_savepoint(&self, id: &str) -> Result<(), ClusterError> {
        self.savepoint_queue(id).map(|_| ())
    }

    fn savepoint_queue(&self, id: &str) -> Result<mpsc::Sender<SavepointRequest>, ClusterError> {
        let st = self.shared.lock();
        let j = st.jobs.get(id).ok_or_else(|| Self::unknown_job(&st, id))?;
        if j.status.is_terminal() {
            return Err(ClusterError::JobEnded {
                id: id.to_string(),
                status: j.status,
            });
        }
        j.savepoints
            .clone()
            .ok_or_else(|| ClusterError::NotCheckpointing { id: id.to_string() })
    }

    /// Takes a savepoint of job `id` into `target_dir` (a location the coordinator and the
    /// workers can reach); with `stop = Some(drain)` the job stops after it, draining first
    /// if `drain`. Returns the savepoint's path and the checkpoint it was taken at.
    pub async fn savepoint(
        &self,
        id: &str,
        target_dir: &str,
        stop: Option<bool>,
    ) -> Result<(String, u64), ClusterError> {
        let tx = self.savepoint_queue(id)?;
        // Only now, for a job that exists and checkpoints: nothing is created for others.
        let target_dir = &self.savepoint_target(target_dir)?;
        let target = (self.shared.opener)(target_dir).map_err(|source| ClusterError::SavepointTarget {
            target: target_dir.to_string(),
            source,
        })?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let interrupted = || ClusterError::SavepointInterrupted { id: id.to_string() };
        tx.try_send(SavepointRequest { target, stop, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ClusterError::Busy(format!(
                    "job {id} has {MAX_WAITING_SAVEPOINTS} savepoints waiting already"
                )),
                mpsc::error::TrySendError::Closed(_) => interrupted(),
            })?;
        match answer.await {
            Ok(Ok(info)) => Ok((
                format!("{}/{}", target_dir.trim_end_matches('/'), info.name),
                info.checkpoint_id,
            )),
            Ok(Err(reason)) => Err(ClusterError::SavepointFailed {
                id: id.to_string(),
                reason,
            }),
            Err(_) => Err(interrupted()),
        }
    }

    /// Where a savepoint asked for with `given` goes: `given`, else the default savepoint
    /// directory; either must be inside the allowed paths.
    pub fn savepoint_target(&self, given: &str) -> Result<String, ClusterError> {
        let config = &self.shared.config;
        let target = match (given.is_empty(), &config.savepoint_dir) {
            (false, _) => given.to_string(),
            (true, Some(default)) => default.clone(),
            (true, None) => {
                return Err(ClusterError::Config(
                    "no savepoint directory: name one, or set [security] savepoint-dir on the coordinator".into(),
                ))
            }
        };
        config.paths.check("the savepoint directory", &target)?;
        Ok(target)
    }

    /// Refuses a submission naming files outside the allowed paths: the job's own file
    /// options (as its registry names them) and the savepoint to start from.
    fn check_paths(&self, name: &str, options: &[WireOption]) -> Result<(), ClusterError> {
        let paths = &self.shared.config.paths;
        let files = self.shared.registry.file_options(name);
        for o in options {
            if o.key == "from-savepoint" || files.contains(&o.key.as_str()) {
                paths.check(&format!("--{}", o.key), &o.value)?;
            }
        }
        Ok(())
    }

    /// Asks job `id` to stop at once.
    pub fn cancel(&self, id: &str) -> Result<(), ClusterError> {
        let st = self.shared.lock();
        let j = st.jobs.get(id).ok_or_else(|| Self::unknown_job(&st, id))?;
        if j.status.is_terminal() {
            return Err(ClusterError::JobEnded {
                id: id.to_string(),
                status: j.status,
            });
        }
        let _ = j.events.send(MasterEvent::Cancel);
        Ok(())
    }
}

/// The most a first frame may hold: a registration or a client request, small by nature.
/// (A submission's options fit easily; anything larger is refused before it is read.)
const MAX_FIRST_FRAME: usize = 64 << 10;

/// Reads a connection's first frame: anyone can connect, so it is small and must come
/// soon. `None` if the connection is to close (the reason logged, and answered when the
/// client can read an answer).
async fn read_first_frame(tx: &FrameSender, rx: &mut ReadHalf<NetStream>, log: &slog::Logger) -> Option<WireMessage> {
    let first = read_frame_limited(rx, MAX_FIRST_FRAME, Some(FIRST_FRAME_WAIT));
    match tokio::time::timeout(FIRST_FRAME_WAIT, first).await {
        Err(_) => {
            slog::info!(log, "closing connection: no frame within 10 s");
            None
        }
        Ok(Ok(None)) => None,
        Ok(Err(FrameError::TooLarge { len, max })) if len <= MAX_FRAME_BYTES => {
            // Read (and throw away) what the client sends, so it can read the answer.
            slog::warn!(log, "refused a request larger than the limit"; "bytes" => len, "limit" => max);
            if discard(rx, len).await {
                tx.send(
                    ClusterError::BadOption(InvalidSetting(format!(
                        "a request of {len} bytes exceeds the coordinator's limit of {max} bytes (are the job's options that long?)"
                    )))
                    .to_wire(),
                );
            }
            None
        }
        Ok(Err(e)) => {
            slog::warn!(log, "closing connection: bad first frame"; "reason" => %e);
            None
        }
        Ok(Ok(Some(f))) => Some(f),
    }
}

/// Whether a peer that proved identity `who` (`None`: TLS is off, nobody proves anything) may
/// send `first` as its first frame: a worker registers only under its certificate's id, and
/// only an admin submits, lists, cancels or takes savepoints.
fn authorize(who: Option<&Identity>, first: &WireMessage) -> Result<(), ClusterError> {
    let Some(who) = who else { return Ok(()) };
    let client_request = matches!(
        first,
        WireMessage::SubmitJob { .. }
            | WireMessage::ListJobs
            | WireMessage::CancelJob { .. }
            | WireMessage::TriggerSavepoint { .. }
    );
    match (first, who) {
        (WireMessage::Register { worker_id, .. }, Identity::Worker(id)) if id == worker_id => Ok(()),
        (WireMessage::Register { worker_id, .. }, _) => Err(ClusterError::Forbidden(format!(
            "a registration as worker '{worker_id}' needs the certificate {}; this one is {who}",
            Identity::Worker(worker_id.clone()).dns_name()
        ))),
        (_, Identity::Admin(_)) if client_request => Ok(()),
        _ if client_request => Err(ClusterError::Forbidden(format!(
            "{} needs an admin certificate (<name>.admin.sluice); this one is {who}",
            frame_kind(first)
        ))),
        // Nothing else may open a conversation, whoever sends it.
        _ => Err(ClusterError::Forbidden(format!(
            "{} cannot start a conversation with the coordinator",
            frame_kind(first)
        ))),
    }
}

/// The most a submission's options may take (keys and values together).
const MAX_OPTIONS_BYTES: usize = 32 << 10;

/// Savepoint requests a job holds before it takes them on; more are refused as busy.
const MAX_WAITING_SAVEPOINTS: usize = 4;

/// Reads and drops `len` bytes of a refused frame's body (within the first-frame wait);
/// whether they all came.
async fn discard<R: AsyncRead>(rx: &mut ReadHalf<R>, len: usize) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 8192];
    let mut left = len;
    let drain = async {
        while left > 0 {
            match rx.read(&mut buf[..left.min(8192)]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => left -= n,
            }
        }
        true
    };
    tokio::time::timeout(FIRST_FRAME_WAIT, drain).await.unwrap_or(false)
}

/// How long a new connection has to send its first frame.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(10);

/// The most a registered worker's frame may hold (metric reports are the largest).
pub(crate) const MAX_WORKER_FRAME: usize = 4 << 20;

/// The most of a job's error text a `JobList` answer carries.
const MAX_LISTED_ERROR: usize = 1024;

/// `text` cut to at most `max` bytes (at a character boundary), marked as cut.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [...]");
    }
    text
}

/// Removes the oldest ended jobs beyond `keep` ended ones (Flink's job store capacity);
/// returns their ids and metric scopes (dropped by the caller, outside the lock).
fn evict_ended(st: &mut State, keep: usize) -> Vec<(String, Option<ScopeGuard>)> {
    let mut ended: Vec<(i64, u64, String)> = st
        .jobs
        .iter()
        .filter_map(|(id, j)| j.ended.as_ref().map(|(at, _)| (*at, j.seq, id.clone())))
        .collect();
    if ended.len() <= keep {
        return Vec::new();
    }
    ended.sort();
    let excess = ended.len() - keep;
    ended
        .into_iter()
        .take(excess)
        .filter_map(|(_, _, id)| st.jobs.remove(&id).map(|mut j| (id, j.metric_scope.take())))
        .collect()
}

/// The most slots one worker may offer: more is a mistake (or a lie), and slot sums must not
/// overflow.
pub const MAX_SLOTS_PER_WORKER: u32 = 1024;

/// Refuses a registration that cannot be right: no id, no slots or too many, an id or
/// address too long to be one.
fn check_registration(worker_id: &str, data_address: &str, slots: u32) -> Result<(), ClusterError> {
    if worker_id.is_empty() || worker_id.len() > 256 || data_address.len() > 256 {
        return Err(ClusterError::Config(format!(
            "a worker needs an id and a data address of at most 256 bytes (got an id of {} and an address of {} bytes)",
            worker_id.len(),
            data_address.len()
        )));
    }
    if slots == 0 || slots > MAX_SLOTS_PER_WORKER {
        return Err(ClusterError::Config(format!(
            "worker '{worker_id}' offers {slots} slots: a worker offers between 1 and {MAX_SLOTS_PER_WORKER}"
        )));
    }
    Ok(())
}

/// What a job master hears of frame `msg` from worker `worker_id` (in its session `session`):
/// the end of an attempt on a worker names the worker, which the frame itself does not.
fn master_event(msg: WireMessage, worker_id: &str, session: u64) -> MasterEvent {
    match msg {
        WireMessage::AttemptEnded { attempt, .. } => MasterEvent::AttemptEnded {
            worker: worker_id.to_string(),
            session,
            attempt,
        },
        msg => MasterEvent::Frame {
            msg,
            worker: worker_id.to_string(),
        },
    }
}

/// The job a worker's frame is about.
fn job_of(msg: &WireMessage) -> Option<&str> {
    match msg {
        WireMessage::AttemptEnded { job_id, .. }
        | WireMessage::AckCheckpoint { job_id, .. }
        | WireMessage::DeclineCheckpoint { job_id, .. }
        | WireMessage::InputFinished { job_id, .. }
        | WireMessage::TaskFinished { job_id, .. }
        | WireMessage::TaskFailed { job_id, .. } => Some(job_id),
        _ => None,
    }
}

/// A frame's kind, for logs.
pub(crate) fn frame_kind(msg: &WireMessage) -> String {
    let dbg = format!("{msg:?}");
    dbg.split([' ', '{', '(']).next().unwrap_or_default().to_string()
}

#[cfg(test)]
impl Coordinator {
    /// Registers a worker played by a test: the frames the coordinator sends it arrive on the
    /// returned receiver.
    pub(crate) fn add_test_worker(&self, id: &str, slots: u32) -> mpsc::UnboundedReceiver<WireMessage> {
        let (tx, rx) = FrameSender::channel();
        let log = self.shared.config.log.clone();
        self.register_worker(id, &format!("{id}:0"), slots, &tx, &log);
        // The acknowledgement is for a real worker; the test does not need it.
        let mut rx = rx;
        let _ = rx.try_recv();
        self.shared.broadcast(|| MasterEvent::SlotsChanged);
        rx
    }

    /// Test worker `worker` says nothing of `attempt` of `job` runs there any more.
    pub(crate) fn end_test_attempt(&self, worker: &str, job: &str, attempt: u32) {
        let msg = WireMessage::AttemptEnded {
            job_id: job.to_string(),
            attempt,
        };
        self.deliver_test_frame(worker, msg);
    }

    /// A frame from a test's worker, routed as a worker connection routes it.
    pub(crate) fn deliver_test_frame(&self, worker: &str, msg: WireMessage) {
        let session = self
            .shared
            .lock()
            .workers
            .get(worker)
            .expect("a registered test worker")
            .session;
        let log = self.shared.config.log.clone();
        self.route(msg, worker, session, &log).expect("a frame about a job");
    }

    /// A test's worker is gone, as if its connection dropped.
    pub(crate) fn lose_test_worker(&self, id: &str) {
        self.shared.lock().workers.remove(id);
        self.shared.broadcast(|| MasterEvent::WorkerLost {
            worker: id.to_string(),
            reason: "the test took it away".into(),
        });
    }

    /// A metrics report of a test's worker: one gauge `test_records` of job `job`.
    pub(crate) fn report_test_metrics(&self, worker: &str, job: &str, value: f64) {
        let sample = MetricSample {
            name: "test_records".into(),
            help: String::new(),
            labels: vec![("job_id".into(), job.into()), ("worker".into(), worker.into())],
            value: crate::metrics::MetricValue::Gauge(value),
        };
        self.shared
            .lock()
            .worker_metrics
            .insert(worker.to_string(), vec![sample]);
    }

    /// Slots in use on worker `id`.
    pub(crate) fn used_slots(&self, id: &str) -> u32 {
        self.shared.lock().workers.get(id).map_or(0, |w| w.used)
    }
}
