//! The coordinator: accepts workers and clients, keeps the worker registry and the job table,
//! and runs one job master per job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_transport::tls::{Identity, NetStream};
use sluice_transport::wire::{
    read_frame_limited, FrameError, WireJobEntry, WireMessage, WireOption, WireProgress, MAX_FRAME_BYTES,
};
use tokio::io::{AsyncRead, ReadHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::acceptor::{Acceptor, Pending};
pub use super::coordinator_config::CoordinatorConfig;

// Part of the coordinator (it restores the coordinator's table), in a file of its own.
#[path = "submission.rs"]
pub(crate) mod submission;
#[path = "takeover.rs"]
mod takeover;
pub(crate) use super::framed::frame_kind;
use super::framed::{framed, FrameSender};
use super::job_master::{JobMaster, MasterParts};
use super::metrics_report::from_wire;
pub(crate) use super::table::{cut, JobEntry, MasterEvent, Shared, State, WorkerEntry};
use super::{options, ClusterError, JobRegistry, JobStatus, StoreOpener};
use crate::error::{InvalidSetting, JobBuildError};
use crate::ha::{self, HaBackend, HaError, JobRecord, MemoryHa, Term};
use crate::metrics::{CheckpointRecord, CheckpointStats, MetricRegistry, MetricSample};
use crate::runtime::engine::SavepointRequest;
pub use crate::runtime::JobException;
use crate::spawned::AbortOnDrop;

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
    /// The options it was submitted with (key, value; empty where not known).
    pub options: Vec<(String, String)>,
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
    /// Bytes the latest completed checkpoint added to the one before it.
    pub latest_incremental_size: u64,
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
            latest_incremental_size: s.latest_incremental_size.load(Relaxed),
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
        // Standalone, the start time keeps job ids unique across restarts; it leads at once.
        let started_ms = config.clock.now_ms() as u64 & 0xffff_ffff_ffff;
        let (ha, term) = match &config.ha {
            Some(ha) => (ha.clone(), None),
            None => {
                let term = Term {
                    epoch: 1,
                    job_id_prefix: started_ms,
                };
                (Arc::new(MemoryHa::new(started_ms)) as Arc<dyn HaBackend>, Some(term))
            }
        };
        let state = State {
            term,
            ..State::default()
        };
        let coordinator = Coordinator {
            shared: Arc::new(Shared {
                config,
                registry,
                opener,
                store,
                state: Mutex::new(state),
                metrics: MetricRegistry::new(),
                deposed: ha.deposed(),
                ha,
            }),
        };
        super::coordinator_metrics::register_process_metrics(&coordinator.shared);
        Ok(coordinator)
    }

    /// Accepts workers and clients on `listener` until the process ends.
    /// Serves until the process ends (accept errors are logged and retried, never fatal).
    ///
    /// Under HA it first campaigns (answering meanwhile that it is a standby), takes over the
    /// stored jobs once it leads, and returns [`ClusterError::Deposed`] when it loses the
    /// leadership, having stopped everything it ran.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), ClusterError> {
        let log = self.shared.config.log.clone();
        let ticker = self.shared.metrics.spawn_ticker();
        let _stop_ticker = AbortOnDrop(ticker);
        let address = match &self.shared.config.advertise_address {
            Some(a) => a.clone(),
            None => listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        };
        takeover::preflight(self).await?;
        let acceptor = Acceptor::new(listener, self.shared.config.max_connections, "control", log.clone());
        let _accepting = AbortOnDrop(tokio::spawn(self.clone().accept_loop(acceptor, log.clone())));
        self.lead(&address).await?;
        self.shared.until_deposed().await;
        slog::error!(
            log,
            "lost the leadership: stopped every job this coordinator ran (a successor restores them)"
        );
        Err(ClusterError::Deposed)
    }

    /// Campaigns (publishing `address`) and, once this coordinator leads, takes over the
    /// stored jobs; at once for a standalone coordinator, which leads from the start.
    pub(crate) async fn lead(&self, address: &str) -> Result<(), ClusterError> {
        if self.shared.lock().term.is_some() {
            return Ok(());
        }
        let log = &self.shared.config.log;
        let mut term = self.win(address).await?;
        // Job ids of this term: the epoch and the time the term began (an etcd that lost its
        // data, or clusters sharing a checkpoint directory, repeat epochs).
        let now = self.shared.config.clock.now_ms() as u64;
        term.job_id_prefix = if self.shared.ha.mode() == "standalone" {
            now & 0xffff_ffff_ffff
        } else {
            (term.epoch & 0xffff) << 32 | (now & 0xffff_ffff)
        };
        slog::info!(log, "this coordinator leads"; "epoch" => term.epoch, "ha" => self.shared.ha.mode(),
            "address" => address);
        // Requests are answered as a standby until the stored jobs are back in the table.
        if let Err(e) = takeover::take_over(self).await {
            slog::error!(log, "taking the stored jobs over failed; resigning"; "error" => %e);
            self.shared.ha.resign().await;
            return Err(match e {
                ClusterError::Ha(HaError::Inconsistent(_) | HaError::Corrupt { .. }) => e,
                _ => ClusterError::Deposed,
            });
        }
        self.shared.lock().term = Some(term);
        Ok(())
    }

    /// Campaigns until this coordinator leads with an epoch above every recorded one. etcd
    /// unreachable is weathered (as a standby); a store whose epochs went backwards is not.
    async fn win(&self, address: &str) -> Result<Term, ClusterError> {
        let (ha, log) = (&self.shared.ha, &self.shared.config.log);
        let mut pause = Duration::from_millis(200);
        loop {
            let failed = match ha.campaign(address).await {
                Ok(term) => match ha::claim_epoch(ha.as_ref(), term.epoch).await {
                    Ok(()) => return Ok(term),
                    Err(e) => {
                        // Won, but could not record the epoch: give the leadership back
                        // rather than hold it without having checked it.
                        ha.resign().await;
                        e
                    }
                },
                Err(e) => e,
            };
            match failed {
                HaError::Unavailable(_) | HaError::Deposed(_) => {
                    slog::warn!(log, "campaigning failed; a standby until it succeeds"; "error" => %failed,
                        "retry_in_ms" => pause.as_millis() as u64);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                e => return Err(e.into()),
            }
        }
    }

    async fn accept_loop(self, mut acceptor: Acceptor, log: slog::Logger) {
        loop {
            let accepted = acceptor.accept().await;
            let _ = accepted.stream.set_nodelay(true);
            let this = self.clone();
            let log = log.new(slog::o!("peer" => accepted.peer.to_string()));
            tokio::spawn(async move {
                let (peer, permit) = (accepted.peer.to_string(), accepted.permit);
                tokio::select! {
                    biased;
                    _ = this.shared.until_deposed() => {}
                    _ = this.handle_connection(accepted.stream, peer, accepted.pending, log) => {}
                }
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
        if self.shared.lock().term.is_none() || !self.shared.ha.holds() {
            let leader = self.shared.ha.leader().await.ok().flatten();
            tx.send(not_leader(leader.as_deref()).to_wire());
            return;
        }
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
                build,
            } => {
                self.worker_session((worker_id, data_address, slots, build), tx, rx, log)
                    .await;
                return;
            }
            WireMessage::SubmitJob {
                job_name,
                options,
                submission,
            } => self
                .submit(
                    &job_name,
                    &options,
                    (!submission.is_empty()).then_some(submission.as_str()),
                )
                .await
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
        (worker_id, data_address, slots, build): (String, String, u32, String),
        tx: FrameSender,
        mut rx: ReadHalf<R>,
        log: slog::Logger,
    ) {
        let sh = &self.shared;
        let checked =
            check_registration(&worker_id, &data_address, slots).and_then(|()| self.same_build(&worker_id, &build));
        if let Err(e) = checked {
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
            // Acknowledged before the entry is visible: a job master that finds the worker in
            // the registry may send it a deployment at once, and the worker must read the
            // acknowledgement first (it takes anything else for a failed registration).
            tx.send(WireMessage::RegisterAck {
                epoch: st.term.map_or(0, |t| t.epoch),
                worker_id: worker_id.to_string(),
                heartbeat_interval_ms: sh.config.heartbeat_interval.as_millis() as u32,
                heartbeat_timeout_ms: sh.config.heartbeat_timeout.as_millis() as u32,
            });
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
    /// with the reason; it is acknowledged only once the HA store holds it.
    ///
    /// `submission` is the client's id for this submission: a client that retries (its
    /// answer lost, the leader changed) gets the job its first try created, not a second
    /// one writing the same output.
    pub async fn submit(
        &self,
        name: &str,
        options: &[WireOption],
        submission: Option<&str>,
    ) -> Result<String, ClusterError> {
        // Options travel to every worker with each deployment: keep them small.
        let size: usize = options.iter().map(|o| o.key.len() + o.value.len()).sum();
        if size > MAX_OPTIONS_BYTES {
            return Err(ClusterError::BadOption(InvalidSetting(format!(
                "the job's options take {size} bytes, more than the limit of {MAX_OPTIONS_BYTES}"
            ))));
        }
        let pairs: Vec<(String, String)> = options.iter().map(|o| (o.key.clone(), o.value.clone())).collect();
        if let Some(s) = submission {
            submission::check_id(s)?;
            // A retry is answered before anything is checked or built again: its first try
            // was accepted, whatever changed since (a moved input, another path policy).
            if let Some(id) = submission::earlier(&self.shared.lock(), s, name, &pairs)? {
                return Ok(id);
            }
        }
        self.check_paths(name, options)?;
        let prepared = self.prepare(name, options)?;
        let (mut entry, admission) = prepared.admission(name);
        entry.options = pairs.clone();
        entry.submission = submission.map(str::to_string);
        entry.stored = false;
        let (id, seq) = match submission::admit(self, entry)? {
            submission::Admitted::New { id, seq } => (id, seq),
            submission::Admitted::Earlier(id) => return Ok(id),
        };
        let record = JobRecord {
            name: name.to_string(),
            options: pairs,
            seq,
            attempt: 0,
            result: None,
            checkpoint_dir: self.shared.config.checkpoint_dir.clone(),
            submission: submission.map(str::to_string),
        };
        if let Err(e) = self.record_submission(&id, &record).await {
            // Not acknowledged, so not kept: the client may submit again.
            self.shared.lock().jobs.remove(&id);
            return Err(e.into());
        }
        if let Some(j) = self.shared.lock().jobs.get_mut(&id) {
            j.stored = true;
        }
        self.launch(&id, name, seq, prepared, admission, 0);
        Ok(id)
    }

    /// Stores a new job's record: a write of unknown outcome is retried, and if the store
    /// stays unavailable the record is withdrawn (fenced), so a job the client was told
    /// failed to submit never runs after a later takeover.
    async fn record_submission(&self, id: &str, record: &JobRecord) -> Result<(), HaError> {
        let sh = &self.shared;
        let mut last = None;
        for pause_ms in [0, 200, 1000] {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            match sh.save_record(id, record).await {
                Ok(()) => return Ok(()),
                Err(HaError::Unavailable(e)) => last = Some(HaError::Unavailable(e)),
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = sh.ha.write(vec![], vec![ha::job_key(id)]).await {
            slog::error!(sh.config.log, "could not withdraw a submission whose record may have been stored: a later leader may run it";
                "job" => id, "error" => %e);
        }
        Err(last.expect("three tries failed"))
    }

    /// Parses and builds a submission (no side effects).
    pub(crate) fn prepare(&self, name: &str, options: &[WireOption]) -> Result<Prepared, ClusterError> {
        let sh = &self.shared;
        let parsed = options::parse(options, sh.store.as_ref())?;
        let mut graph = sh.registry.build(name, &parsed.job)?;
        graph.finalize().map_err(JobBuildError::Graph)?;
        Ok(Prepared { parsed, graph })
    }

    /// Starts the master of admitted job `id`, whose first attempt is `first_attempt`.
    pub(crate) fn launch(
        &self,
        id: &str,
        name: &str,
        seq: u64,
        prepared: Prepared,
        admission: Admission,
        first_attempt: u32,
    ) {
        let sh = &self.shared;
        let Admission {
            events,
            tx,
            stats,
            requests,
        } = admission;
        let scope = super::coordinator_metrics::register_job_metrics(sh, id, name, &stats);
        if let Some(j) = sh.lock().jobs.get_mut(id) {
            j.metric_scope = Some(scope);
        }
        slog::info!(sh.config.log, "job submitted"; "job" => id, "name" => name, "first_attempt" => first_attempt);
        let master = JobMaster::new(MasterParts {
            id: id.to_string(),
            name: name.to_string(),
            graph: prepared.graph,
            options: prepared.parsed,
            shared: sh.clone(),
            events,
            own_events: tx,
            savepoints: requests,
            stats,
            seq,
            first_attempt,
        });
        let shared = sh.clone();
        tokio::spawn(async move {
            // A deposed coordinator stops its jobs at once; its successor restores them.
            tokio::select! {
                biased;
                _ = shared.until_deposed() => {}
                _ = master.run() => {}
            }
        });
    }

    /// Enters a new job into the table under `id` (a fresh one if `None`) and a submission
    /// number, unless as many jobs as allowed are running or waiting already.
    pub(crate) fn admit(&self, entry: JobEntry, id: Option<String>) -> Result<(String, u64), ClusterError> {
        let mut st = self.shared.lock();
        self.admit_locked(&mut st, entry, id)
    }

    /// [`Coordinator::admit`] with the state already locked.
    pub(crate) fn admit_locked(
        &self,
        st: &mut State,
        mut entry: JobEntry,
        id: Option<String>,
    ) -> Result<(String, u64), ClusterError> {
        let sh = &self.shared;
        let active = st.jobs.values().filter(|j| !j.status.is_terminal()).count();
        // Jobs taken over were acknowledged by an earlier leader: never refused here.
        if active >= sh.config.max_active_jobs && !entry.status.is_terminal() && id.is_none() {
            return Err(ClusterError::Busy(format!(
                "{active} jobs are running or waiting, the limit (max-active-jobs) is {}",
                sh.config.max_active_jobs
            )));
        }
        st.next_job += 1;
        // The term's prefix and a counter: unique across leaders and restarts (a new id never
        // finds an older job's checkpoints); a job taken over keeps its id, and a new one
        // skips any id a taken-over job has.
        let id = match id {
            Some(id) => id,
            None => loop {
                let prefix = st.term.map(|t| t.job_id_prefix).ok_or_else(|| not_leader(None))?;
                let id = format!("{:012x}{:04x}", prefix & 0xffff_ffff_ffff, st.next_job);
                if !st.jobs.contains_key(&id) {
                    break id;
                }
                st.next_job += 1;
            },
        };
        entry.seq = st.next_job;
        st.jobs.insert(id.clone(), entry);
        Ok((id, st.next_job))
    }

    /// This coordinator's epoch while it leads; `None` on a standby.
    pub fn leads(&self) -> Option<u64> {
        let term = self.shared.lock().term;
        term.filter(|_| self.shared.ha.holds()).map(|t| t.epoch)
    }

    /// `standalone` or `etcd`.
    pub fn ha_mode(&self) -> &'static str {
        self.shared.ha.mode()
    }

    /// The leader's published control address, if the HA store names one.
    pub async fn leader_address(&self) -> Option<String> {
        self.shared.ha.leader().await.ok().flatten()
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
                options: j.options.clone(),
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
        let now_ms = self.shared.config.clock.now_ms();
        WireMessage::JobList {
            jobs: self
                .jobs()
                .into_iter()
                .map(|j| WireJobEntry {
                    progress: self.progress(&j, now_ms),
                    job_id: j.id,
                    job_name: j.name,
                    status: j.status.as_str().into(),
                    error: cut(j.error.unwrap_or_default(), MAX_LISTED_ERROR),
                })
                .collect(),
        }
    }

    /// How job `j` is doing at `now_ms`, from its workers' metrics and its checkpoints (what
    /// `submit --wait` shows); nothing for a job that has ended.
    fn progress(&self, j: &JobInfo, now_ms: i64) -> WireProgress {
        let none = WireProgress {
            watermark_lag_ms: -1,
            ..WireProgress::default()
        };
        if j.status.is_terminal() {
            return none;
        }
        let samples = self.job_metrics(&j.id).unwrap_or_default();
        let vertices = crate::metrics::vertex_summaries(&samples, &j.vertices);
        let checkpoints = self.checkpoints(&j.id);
        WireProgress {
            in_per_second: vertices.first().map_or(0, |v| v.records_out_per_second.round() as u64),
            out_per_second: vertices.last().map_or(0, |v| v.records_in_per_second.round() as u64),
            watermark_lag_ms: vertices
                .last()
                .and_then(|v| v.input_watermark_ms)
                .filter(|w| *w > 0.0)
                .map_or(-1, |w| (now_ms as f64 - w).max(0.0) as i64),
            checkpoints: checkpoints.as_ref().map_or(0, |c| c.completed),
            last_checkpoint_ms: checkpoints.as_ref().and_then(|c| c.latest).map_or(0, |l| l.1),
            restarts: checkpoints.as_ref().map_or(0, |c| c.restarts),
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
    pub(crate) fn check_paths(&self, name: &str, options: &[WireOption]) -> Result<(), ClusterError> {
        let paths = &self.shared.config.paths;
        let files = self.shared.registry.file_options(name);
        for o in options {
            let file = files.contains(&o.key.as_str());
            // Every worker resolves a relative path against its own directory: the job would
            // read and write different files on each.
            if file && !o.value.contains("://") && !std::path::Path::new(&o.value).is_absolute() {
                return Err(ClusterError::BadOption(InvalidSetting(format!(
                    "--{} {:?}: a job's paths must be absolute (each worker would resolve a relative one against its own directory)",
                    o.key, o.value
                ))));
            }
            if o.key == "from-savepoint" || file {
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

/// A submission parsed and built, ready to run.
pub(crate) struct Prepared {
    parsed: options::SubmitOptions,
    graph: crate::graph::JobGraph,
}

/// What a job master is started with, besides its job.
pub(crate) struct Admission {
    events: mpsc::UnboundedReceiver<MasterEvent>,
    tx: mpsc::UnboundedSender<MasterEvent>,
    stats: Arc<CheckpointStats>,
    requests: Option<crate::runtime::engine::SavepointRequests>,
}

impl Prepared {
    /// The job's entry in the coordinator's table (CREATED) and its master's channels.
    pub(crate) fn admission(&self, name: &str) -> (JobEntry, Admission) {
        let (tx, events) = mpsc::unbounded_channel();
        let (savepoints, requests) = if self.parsed.checkpointing.is_some() {
            let (stx, srx) = mpsc::channel(MAX_WAITING_SAVEPOINTS);
            (Some(stx), Some(Arc::new(tokio::sync::Mutex::new(srx))))
        } else {
            (None, None)
        };
        let stats = Arc::new(CheckpointStats::default());
        let checkpoint_config = self.parsed.checkpointing.as_ref().map(|c| {
            (
                c.interval.as_millis() as u64,
                c.timeout.as_millis() as u64,
                c.min_pause.as_millis() as u64,
                c.tolerable_failures,
                c.retained,
            )
        });
        let vertices = self
            .graph
            .vertices
            .iter()
            .map(|v| (v.name.clone(), v.parallelism))
            .collect();
        let entry = JobEntry::new(name, tx.clone(), savepoints, stats.clone(), checkpoint_config, vertices);
        (
            entry,
            Admission {
                events,
                tx,
                stats,
                requests,
            },
        )
    }
}

/// The answer of a coordinator that does not lead (yet, or any more).
pub(crate) fn not_leader(leader: Option<&str>) -> ClusterError {
    ClusterError::NotLeader {
        leader: leader.map(str::to_string),
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

/// The most slots one worker may offer: more is a mistake (or a lie), and slot sums must not
/// overflow.
pub const MAX_SLOTS_PER_WORKER: u32 = 1024;

impl Coordinator {
    /// Refuses a worker whose binary builds other jobs (or the same from other options)
    /// than this coordinator's: at registration, not as a failing deployment later.
    fn same_build(&self, worker_id: &str, build: &str) -> Result<(), ClusterError> {
        let mine = self.shared.registry.build_id();
        if build == mine {
            return Ok(());
        }
        let shown: String = build.chars().take(512).collect();
        Err(ClusterError::Config(format!(
            "worker '{worker_id}' runs another build than this coordinator: it has {shown:?}, the coordinator {mine:?}; start workers and coordinators from the same binary"
        )))
    }
}

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
            msg: Box::new(msg),
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

impl Coordinator {
    /// Every metric of the cluster: the coordinator's and the latest report of each worker
    /// (with a `worker` label), ordered by name then labels. Series of ended jobs are left
    /// out (a worker's last report may still carry them).
    pub fn metrics(&self) -> Vec<MetricSample> {
        let sh = self.shared();
        let mut all = sh.metrics.snapshot();
        {
            let st = sh.lock();
            let live = |s: &MetricSample| {
                s.label("job_id")
                    .is_none_or(|id| st.jobs.get(id).is_some_and(|j| j.ended.is_none()))
            };
            all.extend(st.worker_metrics.values().flatten().filter(|s| live(s)).cloned());
        }
        all.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        all
    }

    /// The metrics of job `id` (those with its `job_id` label): live while it runs, its
    /// final figures once it ended; `None` for an unknown job.
    pub fn job_metrics(&self, id: &str) -> Option<Vec<MetricSample>> {
        let ended = {
            let st = self.shared().lock();
            st.jobs.get(id)?.ended.as_ref().map(|(_, figures)| figures.clone())
        };
        Some(ended.unwrap_or_else(|| self.shared().live_job_samples(id)))
    }
}
