//! The coordinator's job table and worker registry: what every part of the coordinator (the
//! connection handlers, the job masters, the metrics, the takeover) reads and changes, with
//! the HA store that makes a job's durable part outlive this process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_state::blob::BlobStore;
use tokio::sync::{mpsc, watch};

use super::coordinator_config::CoordinatorConfig;
use super::framed::FrameSender;
use super::{JobRegistry, JobStatus, StoreOpener};
use crate::ha::{self, HaBackend, HaError, JobRecord, Term};
use crate::metrics::{CheckpointStats, MetricRegistry, MetricSample, ScopeGuard};
use crate::runtime::engine::SavepointRequest;
use crate::runtime::engine::StopAction;
use crate::runtime::JobException;
use sluice_transport::wire::WireMessage;

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
    /// The options the job was submitted with (key, value).
    pub(crate) options: Vec<(String, String)>,
    /// The client's id for the submission that created the job: a retry with the same id
    /// (and the same options) is answered with this job.
    pub(crate) submission: Option<String>,
    /// Whether the HA store holds the job's record (a retry is answered only then: until it
    /// is stored, the first try may still be withdrawn).
    pub(crate) stored: bool,
}

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
    pub(crate) next_session: u64,
    pub(crate) next_job: u64,
    /// This coordinator's term while it leads; `None` on a standby.
    pub(crate) term: Option<Term>,
    /// Submission ids of jobs the table forgot, with the job and how it ended (oldest
    /// first, bounded): a late retry is refused instead of run again.
    pub(crate) forgotten_submissions: std::collections::VecDeque<(String, String, JobStatus)>,
}

pub(crate) struct Shared {
    pub(crate) config: CoordinatorConfig,
    pub(crate) registry: Arc<dyn JobRegistry>,
    pub(crate) opener: StoreOpener,
    pub(crate) store: Option<Arc<dyn BlobStore>>,
    pub(crate) state: Mutex<State>,
    /// The coordinator's own metrics (process and job scopes).
    pub(crate) metrics: MetricRegistry,
    /// Leader election and the fenced job store.
    pub(crate) ha: Arc<dyn HaBackend>,
    /// Turns true when this coordinator loses its leadership: everything it runs stops.
    pub(crate) deposed: watch::Receiver<bool>,
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

    /// Records job `id` in the HA store (fenced: a deposed coordinator records nothing).
    pub(crate) async fn save_record(&self, id: &str, record: &JobRecord) -> Result<(), HaError> {
        self.ha.write(vec![(ha::job_key(id), record.encode())], vec![]).await
    }

    /// Job `id`'s stored record with `change` applied, written back (fenced).
    pub(crate) async fn update_record(&self, id: &str, change: impl Fn(&mut JobRecord)) -> Result<(), HaError> {
        let key = ha::job_key(id);
        let found = self.ha.read(&key).await?;
        let (_, bytes) = found.iter().find(|(k, _)| *k == key).ok_or_else(|| HaError::Corrupt {
            key: key.clone(),
            reason: "the job's record is missing".into(),
        })?;
        let mut record = JobRecord::decode(&key, bytes)?;
        change(&mut record);
        self.save_record(id, &record).await
    }

    /// [`Shared::update_record`], retried while the store is unavailable (a write whose
    /// outcome is unknown is written again: it is idempotent), until it is done or this
    /// coordinator is deposed. Nothing that depends on it happens before.
    pub(crate) async fn update_record_durably(&self, id: &str, change: impl Fn(&mut JobRecord)) -> Result<(), HaError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.update_record(id, &change).await {
                Err(HaError::Unavailable(e)) => {
                    slog::warn!(self.config.log, "the HA store is unavailable; retrying"; "job" => id, "error" => e,
                        "retry_in_ms" => pause.as_millis() as u64);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                done => return done,
            }
        }
    }

    /// Resolves once this coordinator has lost its leadership (never, standalone).
    pub(crate) async fn until_deposed(&self) {
        let mut deposed = self.deposed.clone();
        let _ = deposed.wait_for(|d| *d).await;
        if deposed.has_changed().is_err() {
            // The backend is gone: nothing will ever depose this coordinator.
            std::future::pending::<()>().await;
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
        let mut forgotten = Vec::with_capacity(evicted.len());
        for (old, guard) in evicted {
            drop(guard);
            slog::debug!(self.config.log, "forgot an ended job (retention)"; "job" => &old);
            forgotten.push(old);
        }
        if !forgotten.is_empty() {
            tokio::spawn(forget_records(self.ha.clone(), forgotten, self.config.log.clone()));
        }
    }

    /// Tells every job master (they ignore what is not theirs).
    pub(crate) fn broadcast(&self, ev: impl Fn() -> MasterEvent) {
        for j in self.lock().jobs.values() {
            let _ = j.events.send(ev());
        }
    }
}

impl JobEntry {
    /// A job that has not started yet.
    pub(crate) fn new(
        name: &str,
        events: mpsc::UnboundedSender<MasterEvent>,
        savepoints: Option<mpsc::Sender<SavepointRequest>>,
        stats: Arc<CheckpointStats>,
        checkpoint_config: Option<(u64, u64, u64, u32, u32)>,
        vertices: Vec<(String, u32)>,
    ) -> Self {
        JobEntry {
            name: name.to_string(),
            status: JobStatus::Created,
            error: None,
            attempt: 0,
            events,
            savepoints,
            stats,
            checkpoint_config,
            exceptions: Default::default(),
            vertices,
            seq: 0,
            metric_scope: None,
            ended: None,
            placed_on: Default::default(),
            options: Vec::new(),
            submission: None,
            stored: true,
        }
    }
}

/// Removes the HA records of jobs the table forgot (and any checkpoint entries they kept),
/// so the store stays as small as the table (fenced; a deposed leader removes nothing).
async fn forget_records(ha: Arc<dyn HaBackend>, jobs: Vec<String>, log: slog::Logger) {
    for job in jobs {
        let mut keys = vec![ha::job_key(&job)];
        match ha.read(&ha::checkpoint_prefix(&job)).await {
            Ok(entries) => keys.extend(entries.into_iter().map(|(k, _)| k)),
            Err(e) => {
                slog::debug!(log, "could not list a forgotten job's checkpoint entries"; "job" => &job, "error" => %e)
            }
        }
        if let Err(e) = ha.write(vec![], keys).await {
            slog::warn!(log, "could not remove a forgotten job's record"; "job" => &job, "error" => %e);
        }
    }
}

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
        .filter_map(|(_, _, id)| {
            let mut j = st.jobs.remove(&id)?;
            super::coordinator::submission::remember_forgotten(st, &id, &j);
            Some((id, j.metric_scope.take()))
        })
        .collect()
}

/// What reaches a job master.
#[derive(Debug)]
pub(crate) enum MasterEvent {
    /// A frame about this job from worker `worker` (boxed: frames are far larger than the
    /// other events).
    Frame { msg: Box<WireMessage>, worker: String },
    /// A worker is gone (every master hears of every loss).
    WorkerLost { worker: String, reason: String },
    /// Worker `worker` (in registration `session`) says nothing of `attempt` runs there any
    /// more.
    AttemptEnded { worker: String, session: u64, attempt: u32 },
    /// A worker registered: slots may be free now.
    SlotsChanged,
    /// Cancel the job.
    Cancel,
    /// A stop-with-savepoint asks the job to drain, or (the savepoint complete) to stop.
    Stop(StopAction),
}
