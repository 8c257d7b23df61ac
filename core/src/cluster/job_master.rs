//! The job master: runs one job's attempts on the cluster, from slot reservation to failover,
//! through the runtime's attempt/restart loop (the same one the embedded runtime uses).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_transport::wire::{WireMessage, WireOption, WirePeer};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::options::SubmitOptions;
use super::placement::{pick_slots, place_tasks, slots_needed};
use super::table::{cut, MasterEvent, Shared};
use super::JobStatus;
use crate::checkpoint::metadata::StateFileMeta;
use crate::checkpoint::restart::RestartTracker;
use crate::checkpoint::{CheckpointStorage, RestartStrategy};
use crate::error::JobError;
use crate::graph::JobGraph;
use crate::metrics::CheckpointStats;
use crate::runtime::engine::{
    first_checkpoint_id, next_savepoint_request, panic_message, run_attempts, savepoint_between_attempts, task_name,
    task_specs, AttemptEnd, AttemptRunner, AttemptStart, CheckpointCoordinator, JobAttempts, JobCheckpointing, LoopEnd,
    StopAction, StopHook, TaskCommand, TaskEvent, TaskRef, TaskSpec,
};
use crate::runtime::SavepointRestore;
use crate::spawned::AbortOnDrop;

/// How an attempt on the cluster ended.
enum Outcome {
    Finished,
    Cancelled,
    /// Stopped after a stop-with-savepoint.
    Stopped,
    Failed(JobError),
}

/// The most of a job's error text kept in the job table (an error can quote user input).
const MAX_ERROR: usize = 4096;

/// Slots held by a running attempt: `(worker, session, count)`.
type Reservation = Vec<(String, u64, u32)>;

/// The checkpoint coordinator of a deployed attempt and the forwarders of its commands.
struct AttemptCheckpoints {
    /// Acknowledgements and declines from the workers go in here; dropped when every task
    /// finished, which ends the coordinator.
    events: Option<mpsc::Sender<TaskEvent>>,
    coordinator: AbortOnDrop<(Result<(), JobError>, CheckpointCoordinator)>,
    _forwarders: Vec<AbortOnDrop<()>>,
}

/// Everything the job master needs to run the job; see the module documentation.
pub(crate) struct JobMaster {
    id: String,
    name: String,
    graph: Arc<JobGraph>,
    options: SubmitOptions,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<MasterEvent>,
    log: slog::Logger,
    specs: Vec<TaskSpec>,
    stats: Arc<CheckpointStats>,
    /// This master's own event queue (the stop-with-savepoint hook sends to it).
    own_events: mpsc::UnboundedSender<MasterEvent>,
    savepoints: Option<crate::runtime::engine::SavepointRequests>,
    /// The job's checkpointing, once `run` has found the first checkpoint id.
    checkpointing: Option<JobCheckpointing>,
    /// A stop-with-savepoint completed: the job ends, whatever else happens meanwhile (a
    /// failure queued before the stop must not restart it).
    stopped: Arc<AtomicBool>,
    /// Submission order: jobs waiting for slots get them in this order.
    seq: u64,
    first_attempt: u32,
    /// Workers (and their sessions) that said the running attempt has ended on them.
    ended_on: BTreeSet<(String, u64)>,
    /// A cancel arrived while an ended attempt was being waited for.
    cancel_requested: bool,
}

/// What [`JobMaster::new`] is given.
pub(crate) struct MasterParts {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) graph: JobGraph,
    pub(crate) options: SubmitOptions,
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: mpsc::UnboundedReceiver<MasterEvent>,
    pub(crate) own_events: mpsc::UnboundedSender<MasterEvent>,
    pub(crate) savepoints: Option<crate::runtime::engine::SavepointRequests>,
    pub(crate) stats: Arc<CheckpointStats>,
    pub(crate) seq: u64,
    /// The first attempt's number: above every attempt an earlier leader started.
    pub(crate) first_attempt: u32,
}

impl JobMaster {
    pub(crate) fn new(p: MasterParts) -> Self {
        let log = p
            .shared
            .config
            .log
            .new(slog::o!("job" => p.id.clone(), "name" => p.name.clone()));
        let specs = task_specs(&p.graph);
        JobMaster {
            id: p.id,
            name: p.name,
            graph: Arc::new(p.graph),
            options: p.options,
            shared: p.shared,
            events: p.events,
            log,
            specs,
            stats: p.stats,
            own_events: p.own_events,
            savepoints: p.savepoints,
            checkpointing: None,
            stopped: Arc::default(),
            seq: p.seq,
            first_attempt: p.first_attempt,
            ended_on: BTreeSet::new(),
            cancel_requested: false,
        }
    }

    /// Runs the job to its end and records how it ended: in the HA store first (fenced),
    /// then in the table; its checkpoints are cleaned up only once the store holds the result.
    pub(crate) async fn run(mut self) {
        let (status, error) = self.run_attempts().await;
        if let Some(e) = &error {
            slog::error!(self.log, "job failed"; "error" => e);
        }
        let error = error.map(|e| cut(e, MAX_ERROR));
        let result = crate::ha::JobResult {
            status: status.as_str().to_string(),
            error: error.clone(),
        };
        let recorded = self
            .shared
            .update_record_durably(&self.id, |r| r.result = Some(result.clone()))
            .await;
        if let Err(e) = recorded {
            // Deposed: the successor runs the job again from its checkpoints. A damaged
            // record: the job ends here, and nothing is deleted.
            slog::error!(self.log, "could not record how the job ended; keeping its checkpoints"; "error" => %e,
                "status" => status.as_str());
            if matches!(e, crate::ha::HaError::Deposed(_)) {
                return;
            }
            self.shared.set_status(&self.id, status, error);
            self.shared.job_ended(&self.id);
            return;
        }
        self.shared.set_status(&self.id, status, error);
        self.shared.job_ended(&self.id);
        self.clean_up_checkpoints(status).await;
    }

    /// The job's checkpoints, recorded in (and fenced by) the HA store.
    fn storage(&self, store: &Arc<dyn sluice_state::blob::BlobStore>) -> CheckpointStorage {
        CheckpointStorage::new(store.clone(), &self.id).with_ledger(self.shared.ha.clone(), &self.id)
    }

    /// Deletes the job's checkpoints once it ended FINISHED (its output is committed and it
    /// will not run again) or CANCELED (unless it was submitted with
    /// `retain-checkpoints-on-cancel`, Flink's RETAIN_ON_CANCELLATION). A FAILED job keeps
    /// them, to be resumed from. Savepoints are never deleted.
    async fn clean_up_checkpoints(&self, status: JobStatus) {
        let Some(c) = &self.options.checkpointing else { return };
        let delete = match status {
            JobStatus::Finished => true,
            JobStatus::Canceled => !self.options.retain_on_cancel,
            _ => false,
        };
        if !delete {
            return;
        }
        match self.storage(&c.store).discard_job().await {
            Ok(n) => slog::info!(self.log, "deleted the job's checkpoints"; "files" => n, "status" => status.as_str()),
            Err(e) => slog::warn!(self.log, "could not delete the job's checkpoints"; "error" => %e),
        }
    }

    async fn run_attempts(&mut self) -> (JobStatus, Option<String>) {
        let storage = self.options.checkpointing.as_ref().map(|c| self.storage(&c.store));
        let savepoint = match self.savepoint_restore() {
            Ok(s) => s,
            Err(e) => return (JobStatus::Failed, Some(e.to_string())),
        };
        let first_id = match first_checkpoint_id(storage.as_ref(), savepoint.as_ref()).await {
            Ok(id) => id,
            Err(e) => return (JobStatus::Failed, Some(format!("reading the checkpoint store: {e}"))),
        };
        self.checkpointing = self.job_checkpointing(storage.as_ref(), first_id);
        let graph = self.graph.clone();
        let log = self.log.clone();
        let mut job = JobAttempts {
            graph: &graph,
            storage: storage.as_ref(),
            on_unusable: self
                .options
                .checkpointing
                .as_ref()
                .map(|c| c.on_unusable)
                .unwrap_or_default(),
            savepoint: savepoint.as_ref(),
            tracker: RestartTracker::new(
                (self.options.restart.clone()).unwrap_or_else(|| RestartStrategy::default_for(storage.is_some())),
            ),
            clock: self.shared.config.clock,
            log: &log,
            first_attempt: self.first_attempt,
        };
        let end = run_attempts(&mut job, self).await;
        if self.stopped.load(Ordering::SeqCst) {
            // A stop-with-savepoint completed: the job finished, whatever came after.
            return (JobStatus::Finished, None);
        }
        match end {
            LoopEnd::Ended { cancelled: false, .. } => (JobStatus::Finished, None),
            LoopEnd::Ended { cancelled: true, .. } | LoopEnd::CancelledBetweenAttempts => (JobStatus::Canceled, None),
            // Cancelled while a failed attempt was being stopped, with no restart left: the
            // user's cancel decides (the failure is in the exception history).
            LoopEnd::Failed(_) if self.cancel_requested => (JobStatus::Canceled, None),
            LoopEnd::Failed(e) => (JobStatus::Failed, Some(e.to_string())),
        }
    }

    /// The savepoint the job starts from, opened.
    fn savepoint_restore(&self) -> Result<Option<SavepointRestore>, JobError> {
        let Some((path, allow, mapping)) = &self.options.from_savepoint else {
            return Ok(None);
        };
        let store = (self.shared.opener)(path).map_err(|e| JobError::Savepoint(format!("savepoint {path}: {e}")))?;
        Ok(Some(SavepointRestore {
            store,
            allow_non_restored_state: *allow,
            uid_mapping: mapping.clone(),
        }))
    }

    fn job_checkpointing(&self, storage: Option<&CheckpointStorage>, first_id: u64) -> Option<JobCheckpointing> {
        let (config, storage) = (self.options.checkpointing.as_ref()?, storage?);
        let (tx, stopped) = (self.own_events.clone(), self.stopped.clone());
        let stop: StopHook = Arc::new(move |a| {
            if a == StopAction::Cancel {
                stopped.store(true, Ordering::SeqCst);
            }
            let _ = tx.send(MasterEvent::Stop(a));
        });
        Some(JobCheckpointing {
            config: config.clone(),
            storage: storage.clone(),
            clock: self.shared.config.clock,
            next_id: Arc::new(AtomicU64::new(first_id)),
            stats: self.stats.clone(),
            savepoints: self.savepoints.clone(),
            stop,
        })
    }

    /// Waits (at most the configured slot wait) until `needed` slots are free, and takes them.
    /// Waiting jobs get slots in submission order; a worker registering or a job releasing its
    /// slots wakes them.
    async fn reserve_slots(&mut self, needed: u32) -> Result<(Vec<String>, Reservation), Outcome> {
        self.shared.lock().slot_queue.insert(self.seq, needed);
        let r = self.wait_for_slots(needed).await;
        // Out of the queue, whatever happened: the next in line may go now.
        self.shared.lock().slot_queue.remove(&self.seq);
        self.shared.broadcast(|| MasterEvent::SlotsChanged);
        r
    }

    async fn wait_for_slots(&mut self, needed: u32) -> Result<(Vec<String>, Reservation), Outcome> {
        let deadline = Instant::now() + self.shared.config.slot_wait;
        let mut logged = false;
        loop {
            let free_total = match self.try_reserve(needed) {
                Ok(reserved) => return Ok(reserved),
                Err(free) => free,
            };
            if !logged {
                slog::info!(self.log, "waiting for slots"; "needed" => needed, "free" => free_total);
                logged = true;
            }
            tokio::select! {
                biased;
                ev = self.events.recv() => match ev {
                    None | Some(MasterEvent::Cancel) => return Err(Outcome::Cancelled),
                    Some(_) => {}
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Outcome::Failed(JobError::NotEnoughSlots {
                        needed,
                        free: free_total,
                        waited_ms: self.shared.config.slot_wait.as_millis() as u64,
                    }));
                }
            }
        }
    }

    /// Takes `needed` free slots if there are so many and no job that could run is ahead of
    /// this one; else the number free.
    fn try_reserve(&self, needed: u32) -> Result<(Vec<String>, Reservation), u32> {
        let mut st = self.shared.lock();
        // Jobs submitted earlier go first, except those that need more slots than the cluster
        // has at all: they wait for workers to join and must not hold up everyone else.
        let total: u32 = st.workers.values().map(|w| w.slots).fold(0, u32::saturating_add);
        let first_in_line = !st
            .slot_queue
            .range(..self.seq)
            .any(|(_, &ahead_needs)| ahead_needs <= total);
        let free: Vec<(String, u32)> = st
            .workers
            .iter()
            .map(|(id, w)| (id.clone(), w.slots.saturating_sub(w.used)))
            .collect();
        let picked = pick_slots(&free, needed).filter(|_| first_in_line);
        let Some(slots) = picked else {
            return Err(free.iter().map(|(_, n)| *n).fold(0, u32::saturating_add));
        };
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for w in &slots {
            *counts.entry(w.clone()).or_default() += 1;
        }
        let mut reservation = Vec::new();
        for (w, n) in counts {
            let entry = st
                .workers
                .get_mut(&w)
                .expect("picked from the registry under the same lock");
            entry.used += n;
            debug_assert!(
                entry.used <= entry.slots,
                "worker {w} has more slots in use than it offers"
            );
            reservation.push((w, entry.session, n));
        }
        Ok((slots, reservation))
    }

    /// Gives the attempt's slots back, and wakes the jobs waiting for slots.
    fn release(&self, reservation: &Reservation) {
        {
            let mut st = self.shared.lock();
            for (w, session, n) in reservation {
                // A worker that registered again since holds none of these slots.
                if let Some(entry) = st.workers.get_mut(w).filter(|e| e.session == *session) {
                    entry.used = entry.used.saturating_sub(*n);
                }
            }
        }
        self.shared.broadcast(|| MasterEvent::SlotsChanged);
    }

    /// Waits until every worker of the attempt has said that nothing of it runs there any
    /// more (or is gone), at most the cancel timeout: until then its slots are not free, and
    /// a job is not over while one of its tasks could still write a state file. Events that
    /// matter after the wait (a cancel, a stop) are queued again.
    async fn await_attempt_end(&mut self, attempt: u32, reservation: &Reservation) {
        let ended = std::mem::take(&mut self.ended_on);
        let mut waiting: BTreeSet<(String, u64)> = reservation
            .iter()
            .map(|(w, s, _)| (w.clone(), *s))
            .filter(|w| !ended.contains(w))
            .collect();
        let deadline = Instant::now() + self.shared.config.cancel_timeout;
        let mut later = Vec::new();
        loop {
            // A worker gone, or registered again since (a new process), runs nothing of it.
            waiting.retain(|(w, s)| self.shared.lock().workers.get(w).is_some_and(|e| e.session == *s));
            if waiting.is_empty() {
                break;
            }
            tokio::select! {
                // Fixed polling order: tokio's random branch order is not seeded by the simulator.
                biased;
                ev = self.events.recv() => match ev {
                    None => break,
                    Some(MasterEvent::AttemptEnded { worker, session, attempt: a }) if a == attempt => {
                        waiting.remove(&(worker, session));
                    }
                    Some(ev @ (MasterEvent::Cancel | MasterEvent::Stop(_))) => {
                        self.cancel_requested |= matches!(ev, MasterEvent::Cancel);
                        later.push(ev);
                    }
                    Some(_) => {}
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let workers: Vec<&str> = waiting.iter().map(|(w, _)| w.as_str()).collect();
                    slog::warn!(self.log, "workers did not confirm that the attempt's tasks stopped; freeing its slots anyway";
                        "attempt" => attempt, "workers" => workers.join(","),
                        "timeout_ms" => self.shared.config.cancel_timeout.as_millis() as u64);
                    break;
                }
            }
        }
        for ev in later {
            let _ = self.own_events.send(ev);
        }
    }

    fn send_to(&self, worker: &str, msg: WireMessage) -> bool {
        // A leader whose lease is no longer certain (woken from a pause before it noticed)
        // sends nothing; it is about to be stopped.
        if !self.shared.ha.holds() {
            return false;
        }
        let tx = self.shared.lock().workers.get(worker).map(|w| w.tx.clone());
        tx.is_some_and(|tx| tx.send(msg))
    }

    fn cancel_everywhere(&self, attempt: u32, workers: &BTreeSet<String>, drain: bool) {
        for w in workers {
            self.send_to(
                w,
                WireMessage::CancelTask {
                    job_id: self.id.clone(),
                    attempt,
                    drain,
                },
            );
        }
    }

    /// Deploys attempt `attempt` on the workers of `placement` and follows it to its end.
    async fn run_attempt(&mut self, attempt: u32, placement: &[String], start: &AttemptStart) -> Outcome {
        let workers: BTreeSet<String> = placement.iter().cloned().collect();
        if let Some(j) = self.shared.lock().jobs.get_mut(&self.id) {
            j.placed_on = workers.clone();
        }
        let peers: Result<Vec<WirePeer>, String> = {
            let st = self.shared.lock();
            workers
                .iter()
                .map(|w| match st.workers.get(w) {
                    Some(e) => Ok(WirePeer {
                        worker_id: w.clone(),
                        data_address: e.data_address.clone(),
                    }),
                    None => Err(w.clone()),
                })
                .collect()
        };
        let peers = match peers {
            Ok(p) => p,
            Err(worker) => {
                // Nothing was deployed; the others answer the cancel at once, so the attempt's
                // end is not waited for.
                self.cancel_everywhere(attempt, &workers, false);
                return Outcome::Failed(JobError::WorkerLost {
                    worker,
                    reason: "it went away while the attempt was being placed".into(),
                });
            }
        };
        for w in &workers {
            if !self.send_to(w, self.deploy_frame(attempt, placement, &peers, start)) {
                self.cancel_everywhere(attempt, &workers, false);
                return Outcome::Failed(JobError::WorkerLost {
                    worker: w.clone(),
                    reason: "it went away while the attempt was being deployed".into(),
                });
            }
        }
        slog::info!(self.log, "attempt deployed"; "attempt" => attempt, "tasks" => placement.len(),
            "workers" => workers.iter().cloned().collect::<Vec<_>>().join(","));
        self.shared.set_status(&self.id, JobStatus::Running, None);
        let outcome = self.supervise(attempt, placement, start).await;
        if !matches!(outcome, Outcome::Finished) {
            self.cancel_everywhere(attempt, &workers, false);
        }
        outcome
    }

    fn deploy_frame(
        &self,
        attempt: u32,
        placement: &[String],
        peers: &[WirePeer],
        start: &AttemptStart,
    ) -> WireMessage {
        let checkpoint_store = match (&self.checkpointing, &self.shared.config.checkpoint_dir) {
            (Some(_), Some(dir)) => dir.clone(),
            _ => String::new(),
        };
        let restore_savepoint = match (&self.options.from_savepoint, start.from_savepoint) {
            (Some((path, _, _)), true) => path.clone(),
            _ => String::new(),
        };
        WireMessage::DeployTask {
            job_id: self.id.clone(),
            attempt,
            job_name: self.name.clone(),
            options: self.options.job_wire(),
            placement: placement.to_vec(),
            peers: peers.to_vec(),
            checkpoint_store,
            restore_checkpoint: start.restored.as_ref().map_or(0, |c| c.metadata.checkpoint_id),
            restore_savepoint,
            uid_mapping: self
                .options
                .from_savepoint
                .iter()
                .flat_map(|(_, _, m)| m.iter())
                .map(|(k, v)| WireOption {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            state_backend: self.options.state_backend_wire(),
        }
    }

    /// Starts the checkpoint coordinator of a deployed attempt: its commands become frames to
    /// the worker of each task.
    fn start_checkpoints(
        &self,
        attempt: u32,
        placement: &[String],
        start: &AttemptStart,
    ) -> Option<AttemptCheckpoints> {
        let job = self.checkpointing.as_ref()?;
        let (events, rx) = mpsc::channel::<TaskEvent>(1024);
        let mut tasks = Vec::with_capacity(self.specs.len());
        let mut forwarders = Vec::new();
        for (task, spec) in self.specs.iter().enumerate() {
            let (commands, crx) = mpsc::channel::<TaskCommand>(64);
            tasks.push(TaskRef::of(commands, spec, &self.graph));
            let route = (
                self.shared.clone(),
                self.id.clone(),
                placement[task].clone(),
                attempt,
                task as u32,
            );
            forwarders.push(AbortOnDrop(tokio::spawn(forward_commands(crx, route))));
        }
        let log = self
            .log
            .new(slog::o!("component" => "checkpoint-coordinator", "attempt" => attempt));
        let mut c = CheckpointCoordinator::new(&self.graph, job, start.retained.clone(), tasks, rx, log);
        Some(AttemptCheckpoints {
            events: Some(events),
            // The coordinator comes back with its result: its command channels close only
            // once the result has been read.
            coordinator: AbortOnDrop(tokio::spawn(async move { (c.run().await, c) })),
            _forwarders: forwarders,
        })
    }

    /// Follows a deployed attempt to its end, running its checkpoint coordinator.
    async fn supervise(&mut self, attempt: u32, placement: &[String], start: &AttemptStart) -> Outcome {
        let mut checkpoints = self.start_checkpoints(attempt, placement, start);
        let mut finished = Finished::default();
        loop {
            tokio::select! {
                biased;
                ev = self.events.recv() => {
                    if let Some(outcome) = self.on_event(ev, attempt, placement, &mut checkpoints, &mut finished).await {
                        return outcome;
                    }
                }
                r = async { checkpoints.as_mut().expect("guarded").coordinator.handle().await }, if checkpoints.is_some() => {
                    match r {
                        Ok((Err(e), _)) => return Outcome::Failed(e),
                        Ok((Ok(()), _)) => {}
                        Err(e) => return Outcome::Failed(JobError::TaskPanicked {
                            task: "checkpoint coordinator".into(),
                            message: panic_message(e),
                        }),
                    }
                    // It ended without error (nothing more to coordinate): stop polling it.
                    checkpoints = None;
                }
            }
        }
    }

    /// Handles one event of a running attempt; `Some` when the attempt has ended.
    async fn on_event(
        &mut self,
        ev: Option<MasterEvent>,
        attempt: u32,
        placement: &[String],
        checkpoints: &mut Option<AttemptCheckpoints>,
        finished: &mut Finished,
    ) -> Option<Outcome> {
        match ev {
            None | Some(MasterEvent::Cancel) => {
                self.shared.set_status(&self.id, JobStatus::Cancelling, None);
                Some(Outcome::Cancelled)
            }
            Some(MasterEvent::SlotsChanged) => None,
            Some(MasterEvent::AttemptEnded {
                worker,
                session,
                attempt: a,
            }) => {
                // A worker whose part ended before the rest (its tasks finished, or it failed).
                if a == attempt {
                    self.ended_on.insert((worker, session));
                }
                None
            }
            Some(MasterEvent::Stop(StopAction::Cancel)) => Some(Outcome::Stopped),
            Some(MasterEvent::Stop(StopAction::Drain)) => {
                let workers: BTreeSet<String> = placement.iter().cloned().collect();
                self.cancel_everywhere(attempt, &workers, true);
                None
            }
            Some(MasterEvent::WorkerLost { worker, reason }) => placement
                .contains(&worker)
                .then_some(Outcome::Failed(JobError::WorkerLost { worker, reason })),
            Some(MasterEvent::Frame { msg, worker }) => {
                let frame_attempt = attempt_of(&msg)?;
                if frame_attempt != attempt {
                    slog::debug!(self.log, "dropped a frame of another attempt"; "frame_attempt" => frame_attempt, "attempt" => attempt);
                    return None;
                }
                // Only the worker a task was placed on speaks for it.
                if task_of(&msg).is_none_or(|t| placement.get(t as usize) != Some(&worker)) {
                    slog::warn!(self.log, "dropped a frame about a task the job does not have on that worker";
                        "frame" => super::framed::frame_kind(&msg), "worker" => &worker);
                    return None;
                }
                self.on_frame(*msg, checkpoints, finished).await
            }
        }
    }

    /// A frame of the running attempt from a worker; `Some` when the attempt has ended.
    async fn on_frame(
        &mut self,
        msg: WireMessage,
        checkpoints: &mut Option<AttemptCheckpoints>,
        finished: &mut Finished,
    ) -> Option<Outcome> {
        let event = match msg {
            WireMessage::TaskFinished { task, cancelled, .. } => {
                finished.tasks.insert(task);
                finished.any_cancelled |= cancelled;
                if finished.tasks.len() < self.specs.len() {
                    return None;
                }
                return Some(self.all_finished(checkpoints, finished.any_cancelled).await);
            }
            WireMessage::TaskFailed {
                task,
                reason,
                permanent,
                ..
            } => {
                return Some(Outcome::Failed(JobError::RemoteTask {
                    task: self.task_name(task),
                    reason,
                    permanent,
                }));
            }
            other => match self.checkpoint_event(other) {
                Ok(Some(event)) => event,
                Ok(None) => return None,
                Err(failed) => return Some(failed),
            },
        };
        // Cloned for the send only: the coordinator ends when the last sender is gone.
        if let Some(tx) = checkpoints.as_ref().and_then(|c| c.events.clone()) {
            let _ = tx.send(event).await;
        }
        None
    }

    /// The checkpoint coordinator's event in a worker's frame (`None` for a frame that is not
    /// about checkpoints); `Err` with the attempt's failure for an acknowledgement that does
    /// not decode.
    fn checkpoint_event(&self, msg: WireMessage) -> Result<Option<TaskEvent>, Outcome> {
        Ok(Some(match msg {
            WireMessage::AckCheckpoint {
                checkpoint_id,
                task,
                state,
                alignment_ms,
                ..
            } => {
                let files: Vec<(String, StateFileMeta)> = bincode::deserialize(&state).map_err(|e| {
                    Outcome::Failed(JobError::Protocol(format!(
                        "task {} acknowledged checkpoint {checkpoint_id} with undecodable state metadata: {e}",
                        self.task_name(task)
                    )))
                })?;
                TaskEvent::Acked {
                    task: task as usize,
                    checkpoint_id,
                    files,
                    alignment_ms,
                }
            }
            WireMessage::DeclineCheckpoint {
                checkpoint_id,
                task,
                reason,
                ..
            } => TaskEvent::Declined {
                task: task as usize,
                checkpoint_id,
                reason,
            },
            WireMessage::InputFinished { task, .. } => TaskEvent::InputFinished { task: task as usize },
            other => {
                slog::warn!(self.log, "unexpected frame for a job"; "frame" => super::framed::frame_kind(&other));
                return Ok(None);
            }
        }))
    }

    /// Every task finished: the checkpoint coordinator ends once no task can send it anything
    /// more, and its result decides.
    async fn all_finished(&self, checkpoints: &mut Option<AttemptCheckpoints>, any_cancelled: bool) -> Outcome {
        if let Some(c) = checkpoints.as_mut() {
            drop(c.events.take());
            if let Ok((Err(e), _)) = c.coordinator.handle().await {
                return Outcome::Failed(e);
            }
        }
        if any_cancelled {
            Outcome::Cancelled
        } else {
            Outcome::Finished
        }
    }

    fn task_name(&self, task: u32) -> String {
        match self.specs.get(task as usize) {
            Some(s) => task_name(&self.graph, s),
            None => format!("#{task} (not in this job)"),
        }
    }
}

/// The tasks of the running attempt that reported their end.
#[derive(Default)]
struct Finished {
    tasks: BTreeSet<u32>,
    any_cancelled: bool,
}

/// Sends the checkpoint coordinator's commands for task `task` to the worker it runs on.
async fn forward_commands(
    mut commands: mpsc::Receiver<TaskCommand>,
    (shared, job_id, worker, attempt, task): (Arc<Shared>, String, String, u32, u32),
) {
    while let Some(cmd) = commands.recv().await {
        let job_id = job_id.clone();
        let msg = match cmd {
            TaskCommand::Trigger(b) => WireMessage::TriggerCheckpoint {
                job_id,
                attempt,
                checkpoint_id: b.checkpoint_id,
                timestamp_ms: b.timestamp_ms,
                task,
            },
            TaskCommand::Complete(id) => WireMessage::NotifyCheckpointComplete {
                job_id,
                attempt,
                checkpoint_id: id,
                task,
            },
            TaskCommand::Finish => WireMessage::EndInput { job_id, attempt, task },
        };
        let tx = shared.lock().workers.get(&worker).map(|w| w.tx.clone());
        // A lost worker fails the attempt through its own event; a leader whose lease is no
        // longer certain sends nothing (a completion notice would make sinks commit).
        if let Some(tx) = tx.filter(|_| shared.ha.holds()) {
            tx.send(msg);
        }
    }
}

impl JobMaster {
    /// Records `attempt` in the HA store (retried while it is unavailable). A deposed master
    /// waits here to be stopped: it must not deploy.
    async fn record_attempt(&self, attempt: u32) -> Result<(), JobError> {
        match self
            .shared
            .update_record_durably(&self.id, |r| r.attempt = r.attempt.max(attempt))
            .await
        {
            Ok(()) => Ok(()),
            Err(crate::ha::HaError::Deposed(_)) => std::future::pending().await,
            Err(e) => Err(JobError::Checkpoint(e.into())),
        }
    }
}

impl AttemptRunner for JobMaster {
    type Done = ();

    fn starting(&mut self, attempt: u32) {
        self.shared.set_attempt(&self.id, attempt);
    }

    async fn run(&mut self, start: AttemptStart) -> AttemptEnd<()> {
        let attempt = start.attempt;
        let outcome = match self.reserve_slots(slots_needed(&self.specs)).await {
            Err(outcome) => outcome,
            Ok((slots, reservation)) => {
                // Recorded right before anything is deployed: a successor starts above it.
                if let Err(e) = self.record_attempt(attempt).await {
                    self.release(&reservation);
                    return AttemptEnd::Failed(e);
                }
                if let Some(ck) = start.restored.as_ref().filter(|_| !start.from_savepoint) {
                    slog::info!(self.log, "restoring from checkpoint"; "checkpoint" => ck.metadata.checkpoint_id, "attempt" => attempt);
                }
                let placement = place_tasks(&self.specs, &slots);
                let outcome = self.run_attempt(attempt, &placement, &start).await;
                self.await_attempt_end(attempt, &reservation).await;
                self.release(&reservation);
                outcome
            }
        };
        if self.stopped.load(Ordering::SeqCst) {
            // The savepoint is taken and the client told the job stopped.
            return AttemptEnd::Ended {
                done: (),
                cancelled: false,
            };
        }
        match outcome {
            Outcome::Finished | Outcome::Stopped => AttemptEnd::Ended {
                done: (),
                cancelled: false,
            },
            Outcome::Cancelled => AttemptEnd::Ended {
                done: (),
                cancelled: true,
            },
            Outcome::Failed(e) => AttemptEnd::Failed(e),
        }
    }

    fn cancelling(&self) -> bool {
        // A cancel is an event: it ends the running attempt as cancelled, or, queued behind a
        // failure, it ends the restart wait.
        false
    }

    /// Waits out the restart delay, unless the job is cancelled meanwhile; a savepoint asked
    /// for meanwhile is taken from the latest checkpoint (and a stop ends the wait).
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        let requests = self.savepoints.clone();
        loop {
            tokio::select! {
                biased;
                ev = self.events.recv() => {
                    if matches!(ev, None | Some(MasterEvent::Cancel) | Some(MasterEvent::Stop(StopAction::Cancel))) {
                        return false;
                    }
                }
                req = next_savepoint_request(requests.as_ref()) => {
                    let job = self.checkpointing.as_ref().expect("requests come with checkpointing");
                    if savepoint_between_attempts(job, req, &self.log).await {
                        return false;
                    }
                }
                _ = tokio::time::sleep_until(until) => return true,
            }
        }
    }

    fn status(&mut self, status: JobStatus) {
        if status == JobStatus::Restarting {
            self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.set_status(&self.id, status, None);
    }

    fn failed(&mut self, attempt: u32, error: &JobError) {
        debug_assert!(self
            .shared
            .lock()
            .jobs
            .get(&self.id)
            .is_none_or(|j| j.attempt == attempt));
        let reason = error.to_string();
        self.shared.record_exception(&self.id, &reason);
        self.shared.set_status(&self.id, JobStatus::Failing, Some(reason));
    }
}

fn task_of(msg: &WireMessage) -> Option<u32> {
    match msg {
        WireMessage::AckCheckpoint { task, .. }
        | WireMessage::DeclineCheckpoint { task, .. }
        | WireMessage::InputFinished { task, .. }
        | WireMessage::TaskFinished { task, .. }
        | WireMessage::TaskFailed { task, .. } => Some(*task),
        _ => None,
    }
}

fn attempt_of(msg: &WireMessage) -> Option<u32> {
    match msg {
        WireMessage::AckCheckpoint { attempt, .. }
        | WireMessage::DeclineCheckpoint { attempt, .. }
        | WireMessage::InputFinished { attempt, .. }
        | WireMessage::TaskFinished { attempt, .. }
        | WireMessage::TaskFailed { attempt, .. } => Some(*attempt),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! The job master against workers played by the test (frames in, frames out), on tokio's
    //! paused clock: deployment, failover, restarts, slots, cancels and stops.
    use std::collections::BTreeMap;

    use sluice_state::blob::{BlobStore, MemoryStore};
    use sluice_transport::wire::WireOption;

    use super::*;
    use crate::api::StreamEnv;
    use crate::cluster::{Coordinator, CoordinatorConfig, JobRegistry, StoreOpener};
    use crate::connectors::{DiscardSink, VecSource};
    use crate::error::JobBuildError;
    use crate::WatermarkStrategy;

    /// A source chain and a sink chain (a rebalance between them), `parallelism` each.
    struct TwoChains;

    impl JobRegistry for TwoChains {
        fn build(&self, name: &str, options: &BTreeMap<String, String>) -> Result<JobGraph, JobBuildError> {
            let p = options.get("parallelism").map_or(1, |p| p.parse().unwrap());
            let env = StreamEnv::new(name);
            env.set_parallelism(p);
            env.from_source(
                VecSource::new(vec![1u64]),
                WatermarkStrategy::for_monotonous_timestamps(),
                "src",
            )
            .rebalance()
            .sink_to(DiscardSink::default(), "sink");
            Ok(env.build()?)
        }
    }

    fn coordinator(slot_wait: Duration) -> Coordinator {
        coordinator_with(slot_wait, Arc::new(MemoryStore::new()), 1000)
    }

    fn coordinator_with(slot_wait: Duration, store: Arc<MemoryStore>, retained_jobs: usize) -> Coordinator {
        coordinator_configured(store, |config| {
            config.slot_wait = slot_wait;
            config.max_retained_jobs = retained_jobs;
        })
    }

    fn coordinator_configured(store: Arc<MemoryStore>, tweak: impl FnOnce(&mut CoordinatorConfig)) -> Coordinator {
        let mut config = CoordinatorConfig::new(slog::Logger::root(slog::Discard, slog::o!()));
        config.checkpoint_dir = Some("mem".into());
        // Test workers confirm the end of every attempt they ran (as real ones do): a test
        // that forgets to hangs here instead of passing on the timeout.
        config.cancel_timeout = Duration::from_secs(3600);
        tweak(&mut config);
        let store: Arc<dyn sluice_state::blob::BlobStore> = store;
        let opener: StoreOpener = Arc::new(move |_| Ok(store.clone()));
        Coordinator::new(config, Arc::new(TwoChains), opener).unwrap()
    }

    fn options(kv: &[(&str, &str)]) -> Vec<WireOption> {
        kv.iter()
            .map(|(k, v)| WireOption {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    /// A deployment a test worker received: job, attempt and the worker of every task.
    #[derive(Debug)]
    struct Deployed {
        job: String,
        attempt: u32,
        placement: Vec<String>,
    }

    /// The next deployment sent to a test worker (other frames are skipped).
    async fn deployed(rx: &mut mpsc::UnboundedReceiver<WireMessage>) -> Deployed {
        loop {
            match rx.recv().await.expect("the coordinator keeps the worker") {
                WireMessage::DeployTask {
                    job_id,
                    attempt,
                    placement,
                    ..
                } => {
                    return Deployed {
                        job: job_id,
                        attempt,
                        placement,
                    }
                }
                _ => continue,
            }
        }
    }

    /// Whether test worker `worker` was told to cancel `attempt` (frames up to now); if it
    /// was, it answers as a real worker does once the attempt's tasks have stopped.
    fn cancelled(c: &Coordinator, rx: &mut mpsc::UnboundedReceiver<WireMessage>, worker: &str, attempt: u32) -> bool {
        let job = std::iter::from_fn(|| rx.try_recv().ok()).find_map(|m| match m {
            WireMessage::CancelTask {
                job_id,
                attempt: a,
                drain: false,
            } if a == attempt => Some(job_id),
            _ => None,
        });
        if let Some(job) = &job {
            c.end_test_attempt(worker, job, attempt);
        }
        job.is_some()
    }

    /// Reports every task of `d` on `worker` finished, then the attempt ended there.
    fn finish(c: &Coordinator, d: &Deployed, worker: &str) {
        for (task, w) in d.placement.iter().enumerate() {
            if w == worker {
                c.deliver_test_frame(
                    worker,
                    WireMessage::TaskFinished {
                        job_id: d.job.clone(),
                        attempt: d.attempt,
                        task: task as u32,
                        cancelled: false,
                    },
                );
            }
        }
        c.end_test_attempt(worker, &d.job, d.attempt);
    }

    /// Task 0 of `d` fails; its workers then stop the attempt (a real worker does once it is
    /// cancelled, which the master does at once) and say so.
    fn fail(c: &Coordinator, d: &Deployed, reason: &str) {
        c.deliver_test_frame(
            &d.placement[0],
            WireMessage::TaskFailed {
                job_id: d.job.clone(),
                attempt: d.attempt,
                task: 0,
                reason: reason.into(),
                permanent: false,
            },
        );
        end_everywhere(c, d);
    }

    /// Every worker of `d` says the attempt has ended there.
    fn end_everywhere(c: &Coordinator, d: &Deployed) {
        let workers: BTreeSet<&String> = d.placement.iter().collect();
        for w in workers {
            c.end_test_attempt(w, &d.job, d.attempt);
        }
    }

    /// Waits (paused time) until job `id` has `status`.
    async fn status_becomes(c: &Coordinator, id: &str, status: JobStatus) -> crate::cluster::JobInfo {
        for _ in 0..10_000 {
            let j = c.job(id).unwrap();
            if j.status == status {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} never became {status}: {:?}", c.job(id));
    }

    #[real_tokio::test(start_paused = true)]
    async fn finishes_when_every_task_finished_and_releases_its_slots() {
        let c = coordinator(Duration::from_secs(5));
        let (mut w1, mut w2) = (c.add_test_worker("w1", 1), c.add_test_worker("w2", 1));
        let id = c.submit("two", &options(&[("parallelism", "2")]), None).await.unwrap();
        let (d1, d2) = (deployed(&mut w1).await, deployed(&mut w2).await);
        assert_eq!(
            d1.placement,
            ["w1", "w2", "w1", "w2"],
            "slots spread evenly, subtask i in slot i"
        );
        assert_eq!((c.used_slots("w1"), c.used_slots("w2")), (1, 1));
        assert_eq!(status_becomes(&c, &id, JobStatus::Running).await.attempt, 0);
        finish(&c, &d1, "w1");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            c.job(&id).unwrap().status,
            JobStatus::Running,
            "w2's tasks are still running"
        );
        finish(&c, &d2, "w2");
        status_becomes(&c, &id, JobStatus::Finished).await;
        assert_eq!((c.used_slots("w1"), c.used_slots("w2")), (0, 0));
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_failed_task_restarts_the_job_after_the_delay_and_is_recorded() {
        let c = coordinator(Duration::from_secs(5));
        let mut w1 = c.add_test_worker("w1", 2);
        let opts = options(&[
            ("parallelism", "2"),
            ("restart-strategy", "fixed-delay:attempts=3,delay=2s"),
        ]);
        let id = c.submit("two", &opts, None).await.unwrap();
        let d0 = deployed(&mut w1).await;
        let failed_at = tokio::time::Instant::now();
        fail(&c, &d0, "boom");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cancelled(&c, &mut w1, "w1", 0), "attempt 0 is cancelled at once");
        let d1 = deployed(&mut w1).await;
        assert_eq!(d1.attempt, 1);
        assert!(
            failed_at.elapsed() >= Duration::from_secs(2),
            "the restart waited {:?}",
            failed_at.elapsed()
        );
        // A frame of attempt 0 arriving late does not count for attempt 1.
        finish(&c, &d0, "w1");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(c.job(&id).unwrap().status, JobStatus::Running);
        finish(&c, &d1, "w1");
        status_becomes(&c, &id, JobStatus::Finished).await;
        let exceptions = c.exceptions(&id).unwrap();
        assert_eq!(exceptions.len(), 1);
        assert_eq!(exceptions[0].attempt, 0);
        assert!(
            exceptions[0].reason.contains("task src (1/2) failed: boom"),
            "{:?}",
            exceptions[0]
        );
        assert_eq!(c.checkpoints(&id).unwrap().restarts, 1);
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_lost_worker_fails_the_attempt_over_to_the_slots_left() {
        let c = coordinator(Duration::from_secs(5));
        let (mut w1, mut w2) = (c.add_test_worker("w1", 2), c.add_test_worker("w2", 2));
        let opts = options(&[
            ("parallelism", "2"),
            ("restart-strategy", "fixed-delay:attempts=1,delay=1s"),
        ]);
        let id = c.submit("two", &opts, None).await.unwrap();
        let d0 = deployed(&mut w1).await;
        assert_eq!(d0.placement, ["w1", "w2", "w1", "w2"]);
        c.lose_test_worker("w2");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            cancelled(&c, &mut w1, "w1", 0),
            "the rest of attempt 0 is cancelled at once"
        );
        let d1 = deployed(&mut w1).await;
        assert_eq!((d1.attempt, d1.placement.clone()), (1, vec!["w1".to_string(); 4]));
        assert!(w2.try_recv().is_ok(), "w2 got attempt 0 before it went");
        finish(&c, &d1, "w1");
        status_becomes(&c, &id, JobStatus::Finished).await;
        assert!(c.exceptions(&id).unwrap()[0].reason.contains("worker w2 was lost"));
    }

    #[real_tokio::test(start_paused = true)]
    async fn waits_for_slots_then_fails_naming_the_numbers() {
        let c = coordinator(Duration::from_secs(3));
        let _w1 = c.add_test_worker("w1", 1);
        let id = c.submit("two", &options(&[("parallelism", "2")]), None).await.unwrap();
        let j = status_becomes(&c, &id, JobStatus::Failed).await;
        let err = j.error.unwrap();
        assert!(
            err.contains("the job needs 2, 1 are free after waiting 3000 ms"),
            "{err}"
        );
        assert_eq!(c.used_slots("w1"), 0);
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_worker_registering_while_a_job_waits_gives_it_slots() {
        let c = coordinator(Duration::from_secs(30));
        let mut w1 = c.add_test_worker("w1", 1);
        let id = c.submit("two", &options(&[("parallelism", "2")]), None).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(c.job(&id).unwrap().status, JobStatus::Created);
        let mut w2 = c.add_test_worker("w2", 1);
        let (d1, d2) = (deployed(&mut w1).await, deployed(&mut w2).await);
        finish(&c, &d1, "w1");
        finish(&c, &d2, "w2");
        status_becomes(&c, &id, JobStatus::Finished).await;
    }

    #[real_tokio::test(start_paused = true)]
    async fn slots_go_to_waiting_jobs_in_submission_order_when_they_are_released() {
        let c = coordinator(Duration::from_secs(600));
        let mut w1 = c.add_test_worker("w1", 1);
        let a = c.submit("two", &options(&[]), None).await.unwrap();
        let da = deployed(&mut w1).await;
        let b = c.submit("two", &options(&[]), None).await.unwrap();
        let cc = c.submit("two", &options(&[]), None).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(c.job(&b).unwrap().status, JobStatus::Created);
        assert_eq!(c.job(&cc).unwrap().status, JobStatus::Created);
        finish(&c, &da, "w1");
        status_becomes(&c, &a, JobStatus::Finished).await;
        let db = deployed(&mut w1).await;
        assert_eq!(db.job, b, "the earlier submission gets the slot first");
        assert_eq!(c.job(&cc).unwrap().status, JobStatus::Created);
        finish(&c, &db, "w1");
        let dc = deployed(&mut w1).await;
        assert_eq!(dc.job, cc);
        finish(&c, &dc, "w1");
        status_becomes(&c, &cc, JobStatus::Finished).await;
    }

    #[real_tokio::test(start_paused = true)]
    async fn ended_jobs_keep_their_figures_leave_the_metrics_and_the_oldest_are_forgotten() {
        let c = coordinator_with(Duration::from_secs(5), Arc::new(MemoryStore::new()), 2);
        let mut w1 = c.add_test_worker("w1", 1);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = c.submit("two", &options(&[]), None).await.unwrap();
            let d = deployed(&mut w1).await;
            c.report_test_metrics("w1", &id, 42.0);
            assert!(c.metrics().iter().any(|s| s.label("job_id") == Some(id.as_str())));
            finish(&c, &d, "w1");
            status_becomes(&c, &id, JobStatus::Finished).await;
            ids.push(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(c.job(&ids[0]).is_none(), "the oldest ended job is forgotten beyond 2");
        for id in &ids[1..] {
            let figures = c.job_metrics(id).expect("an ended job keeps its figures");
            assert!(
                figures
                    .iter()
                    .any(|s| s.name == "test_records" && s.label("worker") == Some("w1")),
                "the worker's last report is kept: {figures:?}"
            );
            assert!(
                !c.metrics().iter().any(|s| s.label("job_id") == Some(id.as_str())),
                "an ended job's series left /metrics"
            );
        }
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_retry_of_a_submission_whose_job_was_forgotten_is_refused_not_run_again() {
        let c = coordinator_with(Duration::from_secs(5), Arc::new(MemoryStore::new()), 1);
        let mut w1 = c.add_test_worker("w1", 1);
        let mut ids = Vec::new();
        for sub in ["first", "second"] {
            let id = c.submit("two", &options(&[]), Some(sub)).await.unwrap();
            let d = deployed(&mut w1).await;
            finish(&c, &d, "w1");
            status_becomes(&c, &id, JobStatus::Finished).await;
            ids.push(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(c.job(&ids[0]).is_none(), "forgotten beyond one retained job");
        let e = c.submit("two", &options(&[]), Some("first")).await.unwrap_err();
        assert!(
            matches!(&e, crate::cluster::ClusterError::JobEnded { id, status: JobStatus::Finished } if *id == ids[0]),
            "{e}"
        );
        assert_eq!(c.submit("two", &options(&[]), Some("second")).await.unwrap(), ids[1]);
        assert_eq!(c.jobs().len(), 1, "nothing ran again");
    }

    #[real_tokio::test(start_paused = true)]
    async fn checkpoints_are_deleted_when_a_job_finishes_or_is_cancelled_unless_retained() {
        let store = Arc::new(MemoryStore::new());
        let c = coordinator_with(Duration::from_secs(5), store.clone(), 100);
        let mut w1 = c.add_test_worker("w1", 1);
        let with_checkpoints = |extra: &[(&str, &str)]| {
            let mut kv = vec![("checkpoint-interval", "1h"), ("checkpoint-timeout", "2h")];
            kv.extend_from_slice(extra);
            options(&kv)
        };
        let put = |id: &str| {
            let store = store.clone();
            let path = format!("{id}/chk-0000000001/src/0.state");
            async move {
                store
                    .put_if_absent(&path, bytes::Bytes::from_static(b"x"))
                    .await
                    .unwrap()
            }
        };
        let finished = c.submit("two", &with_checkpoints(&[]), None).await.unwrap();
        let d = deployed(&mut w1).await;
        put(&finished).await;
        finish(&c, &d, "w1");
        status_becomes(&c, &finished, JobStatus::Finished).await;
        let cancelled = c.submit("two", &with_checkpoints(&[]), None).await.unwrap();
        deployed(&mut w1).await;
        put(&cancelled).await;
        c.cancel(&cancelled).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(super::tests::cancelled(&c, &mut w1, "w1", 0));
        status_becomes(&c, &cancelled, JobStatus::Canceled).await;
        let kept = c
            .submit(
                "two",
                &with_checkpoints(&[("retain-checkpoints-on-cancel", "true")]),
                None,
            )
            .await
            .unwrap();
        deployed(&mut w1).await;
        put(&kept).await;
        c.cancel(&kept).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(super::tests::cancelled(&c, &mut w1, "w1", 0));
        status_becomes(&c, &kept, JobStatus::Canceled).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let paths = store.paths();
        assert!(!paths.iter().any(|p| p.starts_with(&finished)), "{paths:?}");
        assert!(!paths.iter().any(|p| p.starts_with(&cancelled)), "{paths:?}");
        assert!(paths.iter().any(|p| p.starts_with(&kept)), "{paths:?}");
    }

    #[real_tokio::test(start_paused = true)]
    async fn cancel_while_running_cancels_the_tasks_everywhere() {
        let c = coordinator(Duration::from_secs(5));
        let (mut w1, mut w2) = (c.add_test_worker("w1", 1), c.add_test_worker("w2", 1));
        let id = c.submit("two", &options(&[("parallelism", "2")]), None).await.unwrap();
        deployed(&mut w1).await;
        deployed(&mut w2).await;
        c.cancel(&id).unwrap();
        status_becomes(&c, &id, JobStatus::Cancelling).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cancelled(&c, &mut w1, "w1", 0) && cancelled(&c, &mut w2, "w2", 0));
        status_becomes(&c, &id, JobStatus::Canceled).await;
        assert!(matches!(
            c.cancel(&id),
            Err(crate::cluster::ClusterError::JobEnded { .. })
        ));
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_cancelled_job_ends_and_frees_its_slots_once_its_workers_say_its_tasks_stopped() {
        let c = coordinator(Duration::from_secs(5));
        let (mut w1, mut w2) = (c.add_test_worker("w1", 1), c.add_test_worker("w2", 1));
        let id = c.submit("two", &options(&[("parallelism", "2")]), None).await.unwrap();
        deployed(&mut w1).await;
        deployed(&mut w2).await;
        c.cancel(&id).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(c.job(&id).unwrap().status, JobStatus::Cancelling);
        assert_eq!((c.used_slots("w1"), c.used_slots("w2")), (1, 1), "tasks may still run");
        assert!(cancelled(&c, &mut w1, "w1", 0));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            c.job(&id).unwrap().status,
            JobStatus::Cancelling,
            "w2 has not confirmed"
        );
        // A confirmation of another attempt does not count.
        c.end_test_attempt("w2", &id, 7);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(c.job(&id).unwrap().status, JobStatus::Cancelling);
        assert!(cancelled(&c, &mut w2, "w2", 0));
        status_becomes(&c, &id, JobStatus::Canceled).await;
        assert_eq!((c.used_slots("w1"), c.used_slots("w2")), (0, 0));
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_worker_that_never_confirms_holds_the_slots_only_until_the_cancel_timeout() {
        let c = coordinator_configured(Arc::new(MemoryStore::new()), |config| {
            config.cancel_timeout = Duration::from_secs(30);
        });
        let mut w1 = c.add_test_worker("w1", 1);
        let id = c.submit("two", &options(&[]), None).await.unwrap();
        deployed(&mut w1).await;
        let cancelled_at = tokio::time::Instant::now();
        c.cancel(&id).unwrap();
        status_becomes(&c, &id, JobStatus::Canceled).await;
        assert!(
            cancelled_at.elapsed() >= Duration::from_secs(30),
            "{:?}",
            cancelled_at.elapsed()
        );
        assert_eq!(c.used_slots("w1"), 0);
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_lost_worker_needs_no_confirmation() {
        let c = coordinator(Duration::from_secs(5));
        let (mut w1, mut w2) = (c.add_test_worker("w1", 1), c.add_test_worker("w2", 1));
        let id = c.submit("two", &options(&[("parallelism", "2")]), None).await.unwrap();
        deployed(&mut w1).await;
        deployed(&mut w2).await;
        c.cancel(&id).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cancelled(&c, &mut w1, "w1", 0));
        c.lose_test_worker("w2");
        status_becomes(&c, &id, JobStatus::Canceled).await;
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_cancel_while_a_failed_attempt_stops_ends_the_job_canceled() {
        let c = coordinator(Duration::from_secs(5));
        let mut w1 = c.add_test_worker("w1", 1);
        let id = c
            .submit("two", &options(&[("restart-strategy", "none")]), None)
            .await
            .unwrap();
        let d = deployed(&mut w1).await;
        c.deliver_test_frame(
            "w1",
            WireMessage::TaskFailed {
                job_id: d.job.clone(),
                attempt: 0,
                task: 0,
                reason: "boom".into(),
                permanent: false,
            },
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.cancel(&id).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cancelled(&c, &mut w1, "w1", 0));
        status_becomes(&c, &id, JobStatus::Canceled).await;
        assert!(c.exceptions(&id).unwrap()[0].reason.contains("boom"));
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_job_larger_than_the_cluster_does_not_hold_up_the_jobs_behind_it() {
        let c = coordinator(Duration::from_secs(600));
        let mut w1 = c.add_test_worker("w1", 2);
        let big = c.submit("two", &options(&[("parallelism", "3")]), None).await.unwrap();
        let small = c.submit("two", &options(&[("parallelism", "2")]), None).await.unwrap();
        let d = deployed(&mut w1).await;
        assert_eq!(
            d.job, small,
            "the job that fits runs while the larger one waits for workers"
        );
        assert_eq!(c.job(&big).unwrap().status, JobStatus::Created);
        // A worker joins: now the big one could run, and it is next in line.
        let mut w2 = c.add_test_worker("w2", 1);
        finish(&c, &d, "w1");
        let db = deployed(&mut w2).await;
        assert_eq!(db.job, big);
    }

    #[real_tokio::test(start_paused = true)]
    async fn submissions_beyond_the_active_job_limit_are_refused_as_busy() {
        let c = coordinator_configured(Arc::new(MemoryStore::new()), |config| config.max_active_jobs = 2);
        let _w1 = c.add_test_worker("w1", 1);
        c.submit("two", &options(&[]), None).await.unwrap();
        c.submit("two", &options(&[]), None).await.unwrap();
        let e = c.submit("two", &options(&[]), None).await.unwrap_err();
        assert!(matches!(e, crate::cluster::ClusterError::Busy(_)), "{e}");
        assert!(e.to_string().contains("limit (max-active-jobs) is 2"), "{e}");
    }

    #[real_tokio::test(start_paused = true)]
    async fn cancel_during_the_restart_delay_ends_the_job_canceled() {
        let c = coordinator(Duration::from_secs(5));
        let mut w1 = c.add_test_worker("w1", 2);
        let opts = options(&[
            ("parallelism", "1"),
            ("restart-strategy", "fixed-delay:attempts=3,delay=1h"),
        ]);
        let id = c.submit("two", &opts, None).await.unwrap();
        let d0 = deployed(&mut w1).await;
        fail(&c, &d0, "boom");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cancelled(&c, &mut w1, "w1", 0));
        status_becomes(&c, &id, JobStatus::Restarting).await;
        c.cancel(&id).unwrap();
        status_becomes(&c, &id, JobStatus::Canceled).await;
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_failure_a_restart_cannot_mend_fails_the_job_at_once() {
        let c = coordinator(Duration::from_secs(5));
        let mut w1 = c.add_test_worker("w1", 1);
        let opts = options(&[("restart-strategy", "fixed-delay:attempts=5,delay=1s")]);
        let id = c.submit("two", &opts, None).await.unwrap();
        let d = deployed(&mut w1).await;
        c.deliver_test_frame(
            &d.placement[1],
            WireMessage::TaskFailed {
                job_id: d.job.clone(),
                attempt: d.attempt,
                task: 1,
                reason: "the savepoint's state does not fit".into(),
                permanent: true,
            },
        );
        end_everywhere(&c, &d);
        let j = status_becomes(&c, &id, JobStatus::Failed).await;
        assert_eq!(j.attempt, 0, "no restart");
        assert!(j.error.unwrap().contains("does not fit"));
    }

    #[real_tokio::test(start_paused = true)]
    async fn frames_about_tasks_the_job_does_not_have_are_dropped() {
        let c = coordinator(Duration::from_secs(5));
        let mut w1 = c.add_test_worker("w1", 1);
        let id = c.submit("two", &options(&[]), None).await.unwrap();
        let d = deployed(&mut w1).await;
        for task in [2, 7, u32::MAX] {
            c.deliver_test_frame(
                "w1",
                WireMessage::TaskFinished {
                    job_id: d.job.clone(),
                    attempt: 0,
                    task,
                    cancelled: false,
                },
            );
        }
        // Nor does a worker speak for a task placed on another one.
        let _w2 = c.add_test_worker("w2", 1);
        c.deliver_test_frame(
            "w2",
            WireMessage::TaskFinished {
                job_id: d.job.clone(),
                attempt: 0,
                task: 1,
                cancelled: false,
            },
        );
        finish(
            &c,
            &Deployed {
                placement: vec!["w1".into()],
                ..d
            },
            "w1",
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            c.job(&id).unwrap().status,
            JobStatus::Running,
            "only task 0 of 2 really finished"
        );
    }

    #[real_tokio::test(start_paused = true)]
    async fn no_restart_left_fails_the_job_with_the_last_reason() {
        let c = coordinator(Duration::from_secs(5));
        let mut w1 = c.add_test_worker("w1", 1);
        let opts = options(&[("restart-strategy", "fixed-delay:attempts=1,delay=1s")]);
        let id = c.submit("two", &opts, None).await.unwrap();
        fail(&c, &deployed(&mut w1).await, "first");
        fail(&c, &deployed(&mut w1).await, "second");
        let j = status_becomes(&c, &id, JobStatus::Failed).await;
        assert_eq!(j.attempt, 1);
        assert!(j.error.unwrap().contains("second"));
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_completed_stop_with_savepoint_outweighs_a_failure_that_follows() {
        // The stop-with-savepoint race: the savepoint completed (the hook marked the job
        // stopped) and a failure of the same attempt reaches the master before the stop does.
        // The job ends FINISHED; it must not restart from the savepoint's checkpoint.
        let c = coordinator(Duration::from_millis(100));
        let (tx, rx) = mpsc::unbounded_channel();
        let parts = MasterParts {
            id: "job".into(),
            name: "two".into(),
            graph: TwoChains.build("two", &BTreeMap::new()).unwrap(),
            options: super::super::options::parse(
                &options(&[("restart-strategy", "fixed-delay:attempts=5,delay=1s")]),
                None,
            )
            .unwrap(),
            shared: c.shared().clone(),
            events: rx,
            own_events: tx,
            savepoints: None,
            stats: Arc::default(),
            seq: 1,
            first_attempt: 0,
        };
        let mut master = JobMaster::new(parts);
        master.stopped.store(true, Ordering::SeqCst);
        // No worker: the attempt fails for want of slots, after the stop completed.
        let (status, error) = master.run_attempts().await;
        assert_eq!((status, error), (JobStatus::Finished, None));
    }

    /// A coordinator over the HA store `ha` (leading once [`Coordinator::lead`] ran).
    fn ha_coordinator(ha: Arc<crate::ha::MemoryHa>, store: Arc<MemoryStore>) -> Coordinator {
        coordinator_configured(store, |config| {
            config.ha = Some(ha);
        })
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_new_leader_resumes_running_jobs_above_the_old_attempts_and_keeps_ended_ones_ended() {
        let (store, old_ha) = (Arc::new(MemoryStore::new()), Arc::new(crate::ha::MemoryHa::new(1)));
        let old = ha_coordinator(old_ha.clone(), store.clone());
        assert!(
            old.submit("two", &options(&[]), None).await.is_err(),
            "a standby takes no jobs"
        );
        old.lead("old:1").await.unwrap();
        let mut w = old.add_test_worker("w1", 4);
        let running = old
            .submit("two", &options(&[("parallelism", "2")]), None)
            .await
            .unwrap();
        let first = deployed(&mut w).await;
        let ended = old.submit("two", &options(&[]), None).await.unwrap();
        let d = deployed(&mut w).await;
        assert_eq!(d.job, ended);
        finish(&old, &d, "w1");
        status_becomes(&old, &ended, JobStatus::Finished).await;
        // The old leader loses its lease; its successor (the next epoch) takes over.
        let new_ha = Arc::new(old_ha.successor(2));
        old_ha.depose();
        let e = old.submit("two", &options(&[]), None).await.unwrap_err();
        assert_eq!(e.kind(), crate::cluster::RefusalKind::NotLeader, "{e}");
        let new = ha_coordinator(new_ha, store);
        new.lead("new:1").await.unwrap();
        assert_eq!(new.job(&ended).unwrap().status, JobStatus::Finished);
        let mut w = new.add_test_worker("w1", 4);
        let again = deployed(&mut w).await;
        assert_eq!(again.job, running, "only the job that had not ended runs again");
        assert_eq!(
            again.attempt,
            first.attempt + 1,
            "above every attempt of the old leader"
        );
        assert_eq!(new.job(&running).unwrap().name, "two");
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_deposed_leader_deploys_nothing_more() {
        let ha = Arc::new(crate::ha::MemoryHa::new(1));
        let c = ha_coordinator(ha.clone(), Arc::new(MemoryStore::new()));
        c.lead("a:1").await.unwrap();
        let mut w = c.add_test_worker("w1", 4);
        let id = c
            .submit(
                "two",
                &options(&[("restart-strategy", "fixed-delay:attempts=5,delay=1s")]),
                None,
            )
            .await
            .unwrap();
        let d = deployed(&mut w).await;
        ha.depose();
        // The attempt fails; a new one would need a fenced record of its number, which a
        // deposed leader cannot write: nothing is deployed again.
        fail(&c, &d, "boom");
        end_everywhere(&c, &d);
        tokio::time::sleep(Duration::from_secs(30)).await;
        while let Ok(msg) = w.try_recv() {
            assert!(
                !matches!(msg, WireMessage::DeployTask { .. }),
                "a deposed leader deployed job {id} again"
            );
        }
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_retried_submission_gets_its_job_back_at_the_same_leader_and_at_its_successor() {
        let (store, old_ha) = (Arc::new(MemoryStore::new()), Arc::new(crate::ha::MemoryHa::new(1)));
        let old = ha_coordinator(old_ha.clone(), store.clone());
        old.lead("old:1").await.unwrap();
        let opts = options(&[("parallelism", "2")]);
        let id = old.submit("two", &opts, Some("try-1")).await.unwrap();
        assert_eq!(old.submit("two", &opts, Some("try-1")).await.unwrap(), id);
        let other = old.submit("two", &options(&[]), Some("try-1")).await.unwrap_err();
        assert!(other.to_string().contains("'try-1' was used for job"), "{other}");
        for bad in ["", "has space", &"x".repeat(129)] {
            let e = old.submit("two", &opts, Some(bad)).await.unwrap_err();
            assert!(e.to_string().contains("submission id"), "{e}");
        }
        // The answer was lost and the leader deposed: the client retries at the successor,
        // which must not create a second job writing the same output.
        let new_ha = Arc::new(old_ha.successor(2));
        old_ha.depose();
        let new = ha_coordinator(new_ha, store);
        new.lead("new:1").await.unwrap();
        assert_eq!(new.submit("two", &opts, Some("try-1")).await.unwrap(), id);
        assert_eq!(new.jobs().len(), 1, "one job, not two");
        let fresh = new.submit("two", &opts, Some("try-2")).await.unwrap();
        assert_ne!(fresh, id);
    }
}
