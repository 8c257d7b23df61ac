//! The job master: runs one job's attempts on the cluster, from slot reservation to failover.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_transport::wire::{WireMessage, WirePeer};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::coordinator::Shared;
use super::options::SubmitOptions;
use super::placement::{pick_slots, place_tasks, slots_needed};
use super::JobStatus;
use crate::checkpoint::coordinator::{
    Coordinator as CheckpointCoordinator, OperatorInfo, SavepointRequests, StopAction, TaskRef,
};
use crate::checkpoint::metadata::StateFileMeta;
use crate::checkpoint::protocol::{TaskCommand, TaskEvent};
use crate::checkpoint::restart::RestartTracker;
use crate::checkpoint::{CheckpointStorage, RestartStrategy};
use crate::error::JobError;
use crate::graph::JobGraph;
use crate::metrics::CheckpointStats;
use crate::runtime::attempt::{task_specs, TaskSpec};
use crate::runtime::restore;
use crate::runtime::SavepointRestore;
use crate::spawned::AbortOnDrop;

/// What reaches a job master.
#[derive(Debug)]
pub(crate) enum MasterEvent {
    /// A frame about this job from a worker.
    Frame(WireMessage),
    /// A worker is gone (every master hears of every loss).
    WorkerLost { worker: String, reason: String },
    /// A worker registered: slots may be free now.
    SlotsChanged,
    /// Cancel the job.
    Cancel,
    /// A stop-with-savepoint asks the job to drain, or (the savepoint complete) to stop.
    Stop(StopAction),
}

/// How an attempt ended.
enum Outcome {
    Finished,
    Cancelled,
    /// Stopped after a stop-with-savepoint.
    Stopped,
    Failed(String),
}

/// Slots held by a running attempt: `(worker, session, count)`.
type Reservation = Vec<(String, u64, u32)>;

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
    savepoints: Option<SavepointRequests>,
    /// A stop-with-savepoint completed: the job ends, whatever else happens meanwhile (a
    /// failure queued before the stop must not restart it).
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl JobMaster {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        name: String,
        graph: JobGraph,
        options: SubmitOptions,
        shared: Arc<Shared>,
        events: mpsc::UnboundedReceiver<MasterEvent>,
        own_events: mpsc::UnboundedSender<MasterEvent>,
        savepoints: Option<SavepointRequests>,
        stats: Arc<CheckpointStats>,
    ) -> Self {
        let log = shared
            .config
            .log
            .new(slog::o!("job" => id.clone(), "name" => name.clone()));
        let specs = task_specs(&graph);
        JobMaster {
            id,
            name,
            graph: Arc::new(graph),
            options,
            shared,
            events,
            log,
            specs,
            stats,
            own_events,
            savepoints,
            stopped: Arc::default(),
        }
    }

    pub(crate) async fn run(mut self) {
        let (status, error) = self.run_attempts().await;
        if let Some(e) = &error {
            slog::error!(self.log, "job failed"; "error" => e);
        }
        self.shared.set_status(&self.id, status, error);
    }

    async fn run_attempts(&mut self) -> (JobStatus, Option<String>) {
        let storage = self
            .options
            .checkpointing
            .as_ref()
            .map(|c| CheckpointStorage::new(c.store.clone(), &self.id));
        let strategy = self.options.restart.clone().unwrap_or(if storage.is_some() {
            RestartStrategy::default_exponential()
        } else {
            RestartStrategy::None
        });
        let mut tracker = RestartTracker::new(strategy);
        let next_id = Arc::new(AtomicU64::new(1));
        if let Some(st) = &storage {
            match st.highest_id().await {
                Ok(h) => next_id.store(h + 1, Ordering::SeqCst),
                Err(e) => return (JobStatus::Failed, Some(format!("reading the checkpoint store: {e}"))),
            }
        }
        let savepoint = match &self.options.from_savepoint {
            None => None,
            Some((path, allow, mapping)) => {
                let store = match (self.shared.opener)(path) {
                    Ok(s) => s,
                    Err(e) => return (JobStatus::Failed, Some(format!("savepoint {path}: {e}"))),
                };
                match crate::checkpoint::savepoint::load_savepoint(store.as_ref()).await {
                    // Checkpoint ids go on after the savepoint's: its sink transactions are named by them.
                    Ok(sp) => next_id.fetch_max(sp.metadata.checkpoint_id + 1, Ordering::SeqCst),
                    Err(e) => return (JobStatus::Failed, Some(format!("savepoint {path}: {e}"))),
                };
                Some((
                    path.clone(),
                    SavepointRestore {
                        store,
                        allow_non_restored_state: *allow,
                        uid_mapping: mapping.clone(),
                    },
                ))
            }
        };
        let needed = slots_needed(&self.specs);
        let mut attempt = 0u32;
        loop {
            self.shared.set_attempt(&self.id, attempt);
            let outcome = match self.reserve_slots(needed).await {
                Err(outcome) => outcome,
                Ok((slots, reservation)) => {
                    let outcome = match crate::runtime::prepare_attempt(
                        &self.graph,
                        storage.as_ref(),
                        savepoint.as_ref().map(|s| &s.1),
                        &self.log,
                    )
                    .await
                    {
                        Err(e @ (JobError::Restore { .. } | JobError::Savepoint(_))) => {
                            self.release(&reservation);
                            return (JobStatus::Failed, Some(e.to_string()));
                        }
                        Err(e) => Outcome::Failed(e.to_string()),
                        Ok((restored, retained, from_savepoint)) => {
                            let restore_id = restored.as_ref().map_or(0, |c| c.metadata.checkpoint_id);
                            let restore_savepoint = match (&savepoint, from_savepoint) {
                                (Some((path, _)), true) => path.clone(),
                                _ => String::new(),
                            };
                            if restore_id > 0 {
                                slog::info!(self.log, "restoring from checkpoint"; "checkpoint" => restore_id, "attempt" => attempt,
                                    "savepoint" => &restore_savepoint);
                            }
                            let placement = place_tasks(&self.specs, &slots);
                            self.run_attempt(
                                attempt,
                                &placement,
                                storage.as_ref(),
                                (restore_id, restore_savepoint),
                                retained,
                                &next_id,
                            )
                            .await
                        }
                    };
                    self.release(&reservation);
                    outcome
                }
            };
            if self.stopped.load(Ordering::SeqCst) {
                // The savepoint is taken and the client told the job stopped.
                return (JobStatus::Finished, None);
            }
            match outcome {
                Outcome::Finished | Outcome::Stopped => return (JobStatus::Finished, None),
                Outcome::Cancelled => return (JobStatus::Canceled, None),
                Outcome::Failed(reason) => {
                    self.shared.record_exception(&self.id, &reason);
                    self.shared
                        .set_status(&self.id, JobStatus::Failing, Some(reason.clone()));
                    let Some(delay) = tracker.on_failure(self.shared.config.clock.now_ms()) else {
                        return (JobStatus::Failed, Some(reason));
                    };
                    slog::warn!(self.log, "attempt failed; restarting"; "attempt" => attempt, "reason" => &reason,
                        "delay_ms" => delay.as_millis() as u64);
                    self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                    self.shared.set_status(&self.id, JobStatus::Restarting, None);
                    let until = Instant::now() + delay;
                    loop {
                        tokio::select! {
                            biased;
                            ev = self.events.recv() => {
                                if matches!(ev, None | Some(MasterEvent::Cancel)) {
                                    return (JobStatus::Canceled, None);
                                }
                            }
                            _ = tokio::time::sleep_until(until) => break,
                        }
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Waits (at most the configured slot wait) until `needed` slots are free, and takes them.
    async fn reserve_slots(&mut self, needed: u32) -> Result<(Vec<String>, Reservation), Outcome> {
        let deadline = Instant::now() + self.shared.config.slot_wait;
        let mut logged = false;
        loop {
            let free_total = {
                let mut st = self.shared.lock();
                let free: Vec<(String, u32)> = st
                    .workers
                    .iter()
                    .map(|(id, w)| (id.clone(), w.slots - w.used))
                    .collect();
                if let Some(slots) = pick_slots(&free, needed) {
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
                        reservation.push((w, entry.session, n));
                    }
                    return Ok((slots, reservation));
                }
                free.iter().map(|(_, n)| *n).sum::<u32>()
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
                    return Err(Outcome::Failed(format!(
                        "not enough task slots: the job needs {needed}, {free_total} are free after waiting {} ms",
                        self.shared.config.slot_wait.as_millis()
                    )));
                }
            }
        }
    }

    fn release(&self, reservation: &Reservation) {
        let mut st = self.shared.lock();
        for (w, session, n) in reservation {
            // A worker that registered again since holds none of these slots.
            if let Some(entry) = st.workers.get_mut(w).filter(|e| e.session == *session) {
                entry.used = entry.used.saturating_sub(*n);
            }
        }
    }

    fn send_to(&self, worker: &str, msg: WireMessage) -> bool {
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

    async fn run_attempt(
        &mut self,
        attempt: u32,
        placement: &[String],
        storage: Option<&CheckpointStorage>,
        (restore_id, restore_savepoint): (u64, String),
        retained: VecDeque<u64>,
        next_id: &Arc<AtomicU64>,
    ) -> Outcome {
        let workers: BTreeSet<String> = placement.iter().cloned().collect();
        let peers: Vec<WirePeer> = {
            let st = self.shared.lock();
            workers
                .iter()
                .filter_map(|w| {
                    st.workers.get(w).map(|e| WirePeer {
                        worker_id: w.clone(),
                        data_address: e.data_address.clone(),
                    })
                })
                .collect()
        };
        if peers.len() != workers.len() {
            return Outcome::Failed("a worker was lost while the attempt was being placed".into());
        }
        let checkpoint_store = match (storage, &self.shared.config.checkpoint_dir) {
            (Some(_), Some(dir)) => dir.clone(),
            _ => String::new(),
        };
        for w in &workers {
            let deployed = self.send_to(
                w,
                WireMessage::DeployTask {
                    job_id: self.id.clone(),
                    attempt,
                    job_name: self.name.clone(),
                    options: self.options.job_wire(),
                    placement: placement.to_vec(),
                    peers: peers.clone(),
                    checkpoint_store: checkpoint_store.clone(),
                    restore_checkpoint: restore_id,
                    restore_savepoint: restore_savepoint.clone(),
                    uid_mapping: self
                        .options
                        .from_savepoint
                        .iter()
                        .flat_map(|(_, _, m)| m.iter())
                        .map(|(k, v)| sluice_transport::wire::WireOption {
                            key: k.clone(),
                            value: v.clone(),
                        })
                        .collect(),
                },
            );
            if !deployed {
                self.cancel_everywhere(attempt, &workers, false);
                return Outcome::Failed(format!("worker {w} was lost while the attempt was being deployed"));
            }
        }
        slog::info!(self.log, "attempt deployed"; "attempt" => attempt, "tasks" => placement.len(),
            "workers" => workers.iter().cloned().collect::<Vec<_>>().join(","));
        self.shared.set_status(&self.id, JobStatus::Running, None);
        let outcome = self.supervise(attempt, placement, storage, retained, next_id).await;
        if !matches!(outcome, Outcome::Finished) {
            self.cancel_everywhere(attempt, &workers, false);
        }
        outcome
    }

    /// Follows a deployed attempt to its end, running its checkpoint coordinator.
    async fn supervise(
        &mut self,
        attempt: u32,
        placement: &[String],
        storage: Option<&CheckpointStorage>,
        retained: VecDeque<u64>,
        next_id: &Arc<AtomicU64>,
    ) -> Outcome {
        let mut events_tx = None;
        let mut checkpoints = None;
        if let (Some(storage), Some(cfg)) = (storage, &self.options.checkpointing) {
            let (tx, rx) = mpsc::channel::<TaskEvent>(1024);
            events_tx = Some(tx);
            let mut tasks = Vec::with_capacity(self.specs.len());
            let mut forwarders = Vec::new();
            for (task, spec) in self.specs.iter().enumerate() {
                let (ctx, mut crx) = mpsc::channel::<TaskCommand>(64);
                tasks.push(TaskRef {
                    commands: ctx,
                    is_source: spec.is_source,
                });
                let worker = placement[task].clone();
                let shared = self.shared.clone();
                let job_id = self.id.clone();
                forwarders.push(AbortOnDrop(tokio::spawn(async move {
                    while let Some(cmd) = crx.recv().await {
                        let task = task as u32;
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
                        // A lost worker fails the attempt through its own event.
                        if let Some(tx) = tx {
                            tx.send(msg);
                        }
                    }
                })));
            }
            let coordinator = CheckpointCoordinator {
                config: cfg.clone(),
                storage: storage.clone(),
                clock: self.shared.config.clock,
                log: self
                    .log
                    .new(slog::o!("component" => "checkpoint-coordinator", "attempt" => attempt)),
                job_name: self.graph.name.clone(),
                max_parallelism: self.graph.max_parallelism,
                operators: (0..self.graph.vertices.len())
                    .map(|v| OperatorInfo {
                        key: restore::operator_key(&self.graph, v),
                        name: self.graph.vertices[v].name.clone(),
                        parallelism: self.graph.vertices[v].parallelism,
                    })
                    .collect(),
                tasks,
                events: rx,
                next_id: next_id.clone(),
                retained,
                stats: self.stats.clone(),
                savepoints: self.savepoints.clone(),
                stop: {
                    let (tx, stopped) = (self.own_events.clone(), self.stopped.clone());
                    Arc::new(move |a| {
                        if a == StopAction::Cancel {
                            stopped.store(true, Ordering::SeqCst);
                        }
                        let _ = tx.send(MasterEvent::Stop(a));
                    })
                },
            };
            checkpoints = Some((
                AbortOnDrop(tokio::spawn(async move {
                    let mut c = coordinator;
                    c.run().await
                })),
                forwarders,
            ));
        }
        let total = self.specs.len();
        let mut finished = BTreeSet::new();
        let mut any_cancelled = false;
        loop {
            tokio::select! {
                biased;
                ev = self.events.recv() => match ev {
                    None | Some(MasterEvent::Cancel) => {
                        self.shared.set_status(&self.id, JobStatus::Cancelling, None);
                        return Outcome::Cancelled;
                    }
                    Some(MasterEvent::SlotsChanged) => {}
                    Some(MasterEvent::Stop(StopAction::Cancel)) => return Outcome::Stopped,
                    Some(MasterEvent::Stop(StopAction::Drain)) => {
                        let workers: BTreeSet<String> = placement.iter().cloned().collect();
                        self.cancel_everywhere(attempt, &workers, true);
                    }
                    Some(MasterEvent::WorkerLost { worker, reason }) => {
                        if placement.contains(&worker) {
                            return Outcome::Failed(format!("worker {worker} was lost: {reason}"));
                        }
                    }
                    Some(MasterEvent::Frame(msg)) => {
                        let Some(frame_attempt) = attempt_of(&msg) else { continue };
                        if frame_attempt != attempt {
                            slog::debug!(self.log, "dropped a frame of another attempt"; "frame_attempt" => frame_attempt, "attempt" => attempt);
                            continue;
                        }
                        match msg {
                            WireMessage::TaskFinished { task, cancelled, .. } => {
                                finished.insert(task);
                                any_cancelled |= cancelled;
                                if finished.len() == total {
                                    // The checkpoint coordinator ends once no task can send it
                                    // anything more.
                                    drop(events_tx.take());
                                    if let Some((h, _)) = checkpoints.as_mut() {
                                        if let Ok(Err(e)) = (&mut h.0).await {
                                            return Outcome::Failed(e.to_string());
                                        }
                                    }
                                    return if any_cancelled { Outcome::Cancelled } else { Outcome::Finished };
                                }
                            }
                            WireMessage::TaskFailed { task, reason, .. } => {
                                return Outcome::Failed(format!("task {} failed: {reason}", self.task_name(task)));
                            }
                            WireMessage::AckCheckpoint { checkpoint_id, task, state, alignment_ms, .. } => {
                                let files: Vec<(String, StateFileMeta)> = match bincode::deserialize(&state) {
                                    Ok(f) => f,
                                    Err(e) => return Outcome::Failed(format!(
                                        "task {} acknowledged checkpoint {checkpoint_id} with undecodable state metadata: {e}",
                                        self.task_name(task)
                                    )),
                                };
                                if let Some(tx) = &events_tx {
                                    let _ = tx.send(TaskEvent::Acked { task: task as usize, checkpoint_id, files, alignment_ms }).await;
                                }
                            }
                            WireMessage::DeclineCheckpoint { checkpoint_id, task, reason, .. } => {
                                if let Some(tx) = &events_tx {
                                    let _ = tx.send(TaskEvent::Declined { task: task as usize, checkpoint_id, reason }).await;
                                }
                            }
                            WireMessage::InputFinished { task, .. } => {
                                if let Some(tx) = &events_tx {
                                    let _ = tx.send(TaskEvent::InputFinished { task: task as usize }).await;
                                }
                            }
                            other => slog::warn!(self.log, "unexpected frame for a job"; "frame" => super::coordinator::frame_kind(&other)),
                        }
                    }
                },
                r = async { (&mut checkpoints.as_mut().expect("guarded by the branch condition").0 .0).await }, if checkpoints.is_some() => {
                    match r {
                        Ok(Err(e)) => return Outcome::Failed(e.to_string()),
                        Ok(Ok(())) => {}
                        Err(e) => return Outcome::Failed(format!("checkpoint coordinator stopped: {e}")),
                    }
                    // It ended without error (nothing more to coordinate): stop polling it.
                    checkpoints = None;
                }
            }
        }
    }

    fn task_name(&self, task: u32) -> String {
        match self.specs.get(task as usize) {
            Some(s) => {
                let names: Vec<&str> = s.chain.iter().map(|&v| self.graph.vertices[v].name.as_str()).collect();
                let p = self.graph.vertices[s.chain[0]].parallelism;
                format!("{} ({}/{})", names.join(" -> "), s.subtask + 1, p)
            }
            None => format!("#{task} (not in this job)"),
        }
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
