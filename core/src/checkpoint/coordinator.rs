//! The checkpoint coordinator of one execution attempt.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_state::blob::BlobStore;
use sluice_transport::Barrier;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::checkpoint::metadata::{CheckpointMetadata, OperatorStateMeta, StateFileMeta};
use crate::checkpoint::protocol::{TaskCommand, TaskEvent};
use crate::checkpoint::savepoint::{savepoint_name, write_savepoint};
use crate::checkpoint::{CheckpointConfig, CheckpointStorage};
use crate::clock::Clock;
use crate::error::JobError;
use crate::metrics::{CheckpointOutcome, CheckpointRecord, CheckpointStats};

/// An operator as the coordinator lists it in metadata.
#[derive(Debug, Clone)]
pub(crate) struct OperatorInfo {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) parallelism: u32,
}

/// How the coordinator reaches one task.
#[derive(Debug)]
pub(crate) struct TaskRef {
    pub(crate) commands: mpsc::Sender<TaskCommand>,
    pub(crate) is_source: bool,
}

/// Where a savepoint goes, and what to do after it.
pub(crate) struct SavepointRequest {
    /// The savepoint directory is created at the root of this store.
    pub(crate) target: Arc<dyn BlobStore>,
    /// Stop the job once the savepoint is complete: `Some(true)` drains first (every window
    /// fires, as at end of input), `Some(false)` stops right after.
    pub(crate) stop: Option<bool>,
    pub(crate) reply: oneshot::Sender<Result<SavepointInfo, String>>,
}

/// A completed savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavepointInfo {
    /// The savepoint's directory name under the target.
    pub name: String,
    /// The checkpoint it was taken at.
    pub checkpoint_id: u64,
}

/// How the coordinator asks the job to end after a stop-with-savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopAction {
    /// Stop the sources and let everything finish (the final checkpoint becomes the savepoint).
    Drain,
    /// Stop now: the savepoint is complete and no further checkpoint will be taken.
    Cancel,
}

/// Receives savepoint requests; shared by the attempts of a job.
pub(crate) type SavepointRequests = Arc<tokio::sync::Mutex<mpsc::Receiver<SavepointRequest>>>;

/// Ends the job after a stop-with-savepoint.
pub(crate) type StopHook = Arc<dyn Fn(StopAction) + Send + Sync>;

struct Pending {
    id: u64,
    savepoint: Option<SavepointRequest>,
    triggered_ms: i64,
    started: Instant,
    deadline: Instant,
    is_final: bool,
    acks: BTreeMap<usize, Vec<(String, StateFileMeta)>>,
    /// The longest barrier alignment reported so far, in ms.
    alignment_ms: u64,
}

pub(crate) struct Coordinator {
    pub(crate) config: CheckpointConfig,
    pub(crate) storage: CheckpointStorage,
    pub(crate) clock: Clock,
    pub(crate) log: slog::Logger,
    pub(crate) job_name: String,
    pub(crate) max_parallelism: u32,
    pub(crate) operators: Vec<OperatorInfo>,
    pub(crate) tasks: Vec<TaskRef>,
    pub(crate) events: mpsc::Receiver<TaskEvent>,
    /// Shared across attempts so ids keep increasing after a restart.
    pub(crate) next_id: Arc<AtomicU64>,
    /// Completed checkpoints still retained, oldest first.
    pub(crate) retained: VecDeque<u64>,
    pub(crate) stats: Arc<CheckpointStats>,
    /// Savepoint requests of the job, if it takes any.
    pub(crate) savepoints: Option<SavepointRequests>,
    /// Ends the job after a stop-with-savepoint.
    pub(crate) stop: StopHook,
}

impl Coordinator {
    /// Runs until the tasks are gone; fails if checkpoints fail more often than tolerated.
    pub(crate) async fn run(&mut self) -> Result<(), JobError> {
        let sources = self.tasks.iter().filter(|t| t.is_source).count();
        let mut sources_finished = 0usize;
        let mut final_done = false;
        let mut pending: Option<Pending> = None;
        let mut failures = 0u32;
        let mut next_trigger = Instant::now() + self.config.interval;
        let requests = self.savepoints.clone();
        let mut requests = match &requests {
            Some(r) => Some(r.clone().lock_owned().await),
            None => None,
        };
        // A savepoint asked for and not triggered yet; one whose job drains first (it is
        // taken at the final checkpoint); whether a stop-with-savepoint has completed (no
        // checkpoint may follow it).
        let mut waiting: Option<SavepointRequest> = None;
        let mut at_final: Option<SavepointRequest> = None;
        let mut stopped = false;
        loop {
            let all_input_done = sources_finished == sources;
            if pending.is_none() && all_input_done && !final_done && !stopped {
                // Every source read all its input: the final checkpoint commits the rest.
                let mut p = self.trigger(true).await;
                p.savepoint = at_final.take().or_else(|| waiting.take());
                pending = Some(p);
                continue;
            }
            if pending.is_none() && !all_input_done && !stopped && waiting.is_some() {
                let mut p = self.trigger(false).await;
                p.savepoint = waiting.take();
                pending = Some(p);
                continue;
            }
            let can_trigger = pending.is_none() && !all_input_done && !stopped;
            let deadline = pending.as_ref().map(|p| p.deadline);
            let can_request = requests.is_some() && waiting.is_none() && at_final.is_none() && !stopped && !final_done;
            tokio::select! {
                // Fixed polling order: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = tokio::time::sleep_until(next_trigger), if can_trigger => {
                    pending = Some(self.trigger(false).await);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(next_trigger)), if deadline.is_some() => {
                    let p = pending.take().expect("deadline implies a pending checkpoint");
                    let missing: Vec<String> = (0..self.tasks.len()).filter(|t| !p.acks.contains_key(t)).map(|t| t.to_string()).collect();
                    let reason = format!(
                        "timed out with {} of {} tasks acknowledged (waiting for tasks {})",
                        p.acks.len(),
                        self.tasks.len(),
                        missing.join(", ")
                    );
                    self.fail(p, reason, &mut failures).await?;
                    next_trigger = Instant::now() + self.config.min_pause;
                }
                req = async { requests.as_mut().expect("guarded by can_request").recv().await }, if can_request => {
                    match req {
                        None => requests = None,
                        Some(req) if req.stop == Some(true) => {
                            slog::info!(self.log, "stop with savepoint: draining the job first");
                            at_final = Some(req);
                            (self.stop)(StopAction::Drain);
                        }
                        Some(req) => waiting = Some(req),
                    }
                }
                ev = self.events.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    match ev {
                        TaskEvent::InputFinished { task } => {
                            slog::debug!(self.log, "source input finished"; "task" => task);
                            sources_finished += 1;
                        }
                        TaskEvent::Declined { task, checkpoint_id, reason } => {
                            if pending.as_ref().is_some_and(|p| p.id == checkpoint_id) {
                                let p = pending.take().expect("checked");
                                self.fail(p, format!("task {task} declined: {reason}"), &mut failures).await?;
                                next_trigger = Instant::now() + self.config.min_pause;
                            }
                        }
                        TaskEvent::Acked { task, checkpoint_id, files, alignment_ms } => {
                            let Some(p) = pending.as_mut().filter(|p| p.id == checkpoint_id) else { continue };
                            p.alignment_ms = p.alignment_ms.max(alignment_ms);
                            let dup = p.acks.insert(task, files);
                            debug_assert!(dup.is_none(), "task {task} acknowledged checkpoint {checkpoint_id} twice");
                            if p.acks.len() == self.tasks.len() {
                                let mut p = pending.take().expect("checked");
                                let started = p.started;
                                let savepoint = p.savepoint.take();
                                match self.complete(p, savepoint.is_some()).await {
                                    Ok(meta) => {
                                        failures = 0;
                                        final_done |= meta.1;
                                        if let Some(req) = savepoint {
                                            stopped |= self.finish_savepoint(req, &meta.0).await;
                                        }
                                    }
                                    Err((mut p, reason)) => {
                                        p.savepoint = savepoint;
                                        self.fail(p, reason, &mut failures).await?;
                                    }
                                }
                                next_trigger = (started + self.config.interval).max(Instant::now() + self.config.min_pause);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Copies the completed checkpoint into the savepoint's target and answers the request;
    /// returns whether the job now stops (no checkpoint may follow a stop-with-savepoint).
    async fn finish_savepoint(&mut self, req: SavepointRequest, meta: &CheckpointMetadata) -> bool {
        let name = savepoint_name(&self.job_name, meta.checkpoint_id);
        let result = write_savepoint(&self.storage, meta, req.target.as_ref(), &name).await;
        match result {
            Ok(name) => {
                slog::info!(self.log, "savepoint complete"; "checkpoint" => meta.checkpoint_id, "savepoint" => &name,
                    "target" => format!("{:?}", req.target));
                let _ = req.reply.send(Ok(SavepointInfo {
                    name,
                    checkpoint_id: meta.checkpoint_id,
                }));
                if req.stop == Some(false) {
                    (self.stop)(StopAction::Cancel);
                    return true;
                }
                false
            }
            Err(e) => {
                slog::warn!(self.log, "savepoint failed"; "checkpoint" => meta.checkpoint_id, "error" => %e);
                let _ = req.reply.send(Err(format!("writing savepoint {name}: {e}")));
                false
            }
        }
    }

    async fn trigger(&mut self, is_final: bool) -> Pending {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let barrier = Barrier {
            checkpoint_id: id,
            timestamp_ms: self.clock.now_ms(),
        };
        slog::debug!(self.log, "triggering checkpoint"; "checkpoint" => id, "final" => is_final);
        self.stats.triggered.fetch_add(1, Ordering::Relaxed);
        for t in self.tasks.iter().filter(|t| t.is_source) {
            // A source that is gone has failed; the job is being torn down anyway.
            let _ = t.commands.send(TaskCommand::Trigger(barrier)).await;
        }
        let now = Instant::now();
        Pending {
            id,
            savepoint: None,
            triggered_ms: barrier.timestamp_ms,
            started: now,
            deadline: now + self.config.timeout,
            is_final,
            acks: BTreeMap::new(),
            alignment_ms: 0,
        }
    }

    /// Writes the metadata and notifies the tasks; returns the metadata and whether it was the
    /// final checkpoint.
    async fn complete(&mut self, p: Pending, savepoint: bool) -> Result<(CheckpointMetadata, bool), (Pending, String)> {
        let mut by_op: BTreeMap<String, Vec<StateFileMeta>> = BTreeMap::new();
        for files in p.acks.values() {
            for (key, f) in files {
                by_op.entry(key.clone()).or_default().push(f.clone());
            }
        }
        let operators = self
            .operators
            .iter()
            .filter_map(|o| {
                let mut files = by_op.remove(&o.key)?;
                files.sort_by_key(|f| f.subtask);
                Some(OperatorStateMeta {
                    key: o.key.clone(),
                    name: o.name.clone(),
                    parallelism: o.parallelism,
                    files,
                })
            })
            .collect();
        debug_assert!(
            by_op.is_empty(),
            "state acknowledged for unknown operators: {:?}",
            by_op.keys()
        );
        let meta = CheckpointMetadata {
            job_name: self.job_name.clone(),
            checkpoint_id: p.id,
            triggered_at_ms: p.triggered_ms,
            completed_at_ms: self.clock.now_ms(),
            max_parallelism: self.max_parallelism,
            operators,
        };
        crate::buggify::maybe_delay("metadata write").await;
        if let Err(e) = self.storage.commit(&meta).await {
            return Err((p, format!("writing its metadata failed: {e}")));
        }
        let duration = p.started.elapsed();
        slog::info!(self.log, "checkpoint complete";
            "checkpoint" => p.id, "duration_ms" => duration.as_millis() as u64, "size" => meta.state_size());
        self.stats
            .record_completed(p.id, duration, meta.state_size(), meta.completed_at_ms);
        self.stats.record(CheckpointRecord {
            id: p.id,
            savepoint,
            triggered_at_ms: p.triggered_ms,
            duration_ms: duration.as_millis() as u64,
            state_size: meta.state_size(),
            alignment_ms: p.alignment_ms,
            outcome: CheckpointOutcome::Completed,
        });
        for t in &self.tasks {
            let _ = t.commands.send(TaskCommand::Complete(p.id)).await;
        }
        if p.is_final {
            for t in self.tasks.iter().filter(|t| t.is_source) {
                let _ = t.commands.send(TaskCommand::Finish).await;
            }
        }
        self.retained.push_back(p.id);
        while self.retained.len() > self.config.retained as usize {
            let old = self.retained.pop_front().expect("longer than retained >= 1");
            if let Err(e) = self.storage.discard(old).await {
                slog::warn!(self.log, "could not delete subsumed checkpoint"; "checkpoint" => old, "error" => %e);
            }
        }
        Ok((meta, p.is_final))
    }

    async fn fail(&mut self, mut p: Pending, reason: String, failures: &mut u32) -> Result<(), JobError> {
        self.stats.record(CheckpointRecord {
            id: p.id,
            savepoint: p.savepoint.is_some(),
            triggered_at_ms: p.triggered_ms,
            duration_ms: p.started.elapsed().as_millis() as u64,
            state_size: 0,
            alignment_ms: p.alignment_ms,
            outcome: CheckpointOutcome::Failed(reason.clone()),
        });
        if let Some(req) = p.savepoint.take() {
            let _ = req
                .reply
                .send(Err(format!("the savepoint's checkpoint {} failed: {reason}", p.id)));
        }
        *failures += 1;
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        slog::warn!(self.log, "checkpoint failed"; "checkpoint" => p.id, "reason" => &reason,
            "consecutive_failures" => *failures);
        if let Err(e) = self.storage.discard(p.id).await {
            slog::debug!(self.log, "could not clean up failed checkpoint"; "checkpoint" => p.id, "error" => %e);
        }
        if *failures > self.config.tolerable_failures {
            return Err(JobError::CheckpointsFailing {
                failures: *failures,
                tolerated: self.config.tolerable_failures,
                last: format!("checkpoint {}: {reason}", p.id),
            });
        }
        Ok(())
    }
}
