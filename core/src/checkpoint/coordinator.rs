//! The checkpoint coordinator of one execution attempt.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
use crate::graph::JobGraph;
use crate::metrics::{CheckpointOutcome, CheckpointRecord, CheckpointStats};
use crate::runtime::restore;

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
    /// The keys of the operators of its chain: the only state it may acknowledge.
    pub(crate) operators: Vec<String>,
    /// Its subtask: the only subtask its state files may be of.
    pub(crate) subtask: u32,
}

impl TaskRef {
    /// The task of `spec` in `graph`, reached through `commands`.
    pub(crate) fn of(
        commands: mpsc::Sender<TaskCommand>,
        spec: &crate::runtime::engine::TaskSpec,
        graph: &JobGraph,
    ) -> Self {
        TaskRef {
            commands,
            is_source: spec.is_source,
            operators: spec.chain.iter().map(|&v| restore::operator_key(graph, v)).collect(),
            subtask: spec.subtask,
        }
    }

    /// The first of `files` that is not this task's to acknowledge (another operator's or
    /// another subtask's state: a confused or hostile peer).
    fn foreign<'a>(&self, files: &'a [(String, StateFileMeta)]) -> Option<&'a (String, StateFileMeta)> {
        files
            .iter()
            .find(|(key, f)| f.subtask != self.subtask || !self.operators.contains(key))
    }
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

/// What the checkpoint coordinators of a job's attempts share: its settings and store, the
/// checkpoint id counter (ids keep increasing across attempts), its statistics, its savepoint
/// requests and how to end it after a stop-with-savepoint.
#[derive(Clone)]
pub(crate) struct JobCheckpointing {
    pub(crate) config: CheckpointConfig,
    pub(crate) storage: CheckpointStorage,
    pub(crate) clock: Clock,
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) stats: Arc<CheckpointStats>,
    pub(crate) savepoints: Option<SavepointRequests>,
    pub(crate) stop: StopHook,
}

/// The checkpoint coordinator of one execution attempt.
pub(crate) struct Coordinator {
    config: CheckpointConfig,
    storage: CheckpointStorage,
    clock: Clock,
    log: slog::Logger,
    job_name: String,
    max_parallelism: u32,
    operators: Vec<OperatorInfo>,
    tasks: Vec<TaskRef>,
    events: mpsc::Receiver<TaskEvent>,
    next_id: Arc<AtomicU64>,
    /// Completed checkpoints still retained, oldest first.
    retained: VecDeque<u64>,
    /// The shared files of the retained checkpoints (deleted when no longer named).
    shared: crate::checkpoint::gc::SharedFiles,
    stats: Arc<CheckpointStats>,
    savepoints: Option<SavepointRequests>,
    stop: StopHook,
}

/// Where one run of the coordinator stands.
struct Progress {
    /// Source tasks, and how many of them read all of their input.
    sources: usize,
    /// Source tasks that reported the end of their input (a set: a peer repeating itself
    /// must not make the count reach the number of sources early).
    sources_finished: BTreeSet<usize>,
    /// The final checkpoint (after every source finished) is complete.
    final_done: bool,
    pending: Option<Pending>,
    /// Consecutive failed checkpoints.
    failures: u32,
    next_trigger: Instant,
    /// A savepoint asked for and not triggered yet.
    waiting: Option<SavepointRequest>,
    /// A stop-with-savepoint that drains first: it is taken at the final checkpoint.
    at_final: Option<SavepointRequest>,
    /// A stop-with-savepoint completed: no checkpoint may follow it.
    stopped: bool,
}

impl Progress {
    fn all_input_done(&self) -> bool {
        self.sources_finished.len() == self.sources
    }

    /// Whether the interval timer may trigger a checkpoint now.
    fn can_trigger(&self) -> bool {
        self.pending.is_none() && !self.all_input_done() && !self.stopped
    }
}

impl Coordinator {
    /// The coordinator of an attempt of `graph` whose tasks are `tasks` (numbered as the
    /// attempt numbers them) and send their events on `events`; it retains `retained`.
    pub(crate) fn new(
        graph: &JobGraph,
        job: &JobCheckpointing,
        retained: VecDeque<u64>,
        tasks: Vec<TaskRef>,
        events: mpsc::Receiver<TaskEvent>,
        log: slog::Logger,
    ) -> Self {
        Coordinator {
            config: job.config.clone(),
            storage: job.storage.clone(),
            clock: job.clock,
            log,
            job_name: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            operators: (0..graph.vertices.len())
                .map(|v| OperatorInfo {
                    key: restore::operator_key(graph, v),
                    name: graph.vertices[v].name.clone(),
                    parallelism: graph.vertices[v].parallelism,
                })
                .collect(),
            tasks,
            events,
            next_id: job.next_id.clone(),
            retained,
            shared: Default::default(),
            stats: job.stats.clone(),
            savepoints: job.savepoints.clone(),
            stop: job.stop.clone(),
        }
    }

    /// Runs until the tasks are gone; fails if checkpoints fail more often than tolerated.
    pub(crate) async fn run(&mut self) -> Result<(), JobError> {
        let mut s = Progress {
            sources: self.tasks.iter().filter(|t| t.is_source).count(),
            sources_finished: BTreeSet::new(),
            final_done: false,
            pending: None,
            failures: 0,
            next_trigger: Instant::now() + self.config.interval,
            waiting: None,
            at_final: None,
            stopped: false,
        };
        let requests = self.savepoints.clone();
        let mut requests = match &requests {
            Some(r) => Some(r.clone().lock_owned().await),
            None => None,
        };
        loop {
            if self.trigger_due(&mut s).await {
                continue;
            }
            let deadline = s.pending.as_ref().map(|p| p.deadline);
            let can_request =
                requests.is_some() && s.waiting.is_none() && s.at_final.is_none() && !s.stopped && !s.final_done;
            tokio::select! {
                // Fixed polling order: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = tokio::time::sleep_until(s.next_trigger), if s.can_trigger() => {
                    s.pending = Some(self.trigger(false).await);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(s.next_trigger)), if deadline.is_some() => {
                    self.time_out(&mut s).await?;
                }
                req = async { requests.as_mut().expect("guarded by can_request").recv().await }, if can_request => {
                    match req {
                        None => requests = None,
                        Some(req) => self.on_request(&mut s, req),
                    }
                }
                ev = self.events.recv() => match ev {
                    None => return Ok(()),
                    Some(ev) => self.on_event(&mut s, ev).await?,
                },
            }
        }
    }

    /// Triggers what is due regardless of the interval: the final checkpoint once every
    /// source finished, or a savepoint that was asked for. Returns whether it triggered.
    async fn trigger_due(&mut self, s: &mut Progress) -> bool {
        if s.pending.is_some() || s.stopped {
            return false;
        }
        if s.all_input_done() && !s.final_done {
            // Every source read all its input: the final checkpoint commits the rest.
            let mut p = self.trigger(true).await;
            p.savepoint = s.at_final.take().or_else(|| s.waiting.take());
            s.pending = Some(p);
            return true;
        }
        if !s.all_input_done() && s.waiting.is_some() {
            let mut p = self.trigger(false).await;
            p.savepoint = s.waiting.take();
            s.pending = Some(p);
            return true;
        }
        false
    }

    async fn time_out(&mut self, s: &mut Progress) -> Result<(), JobError> {
        let p = s.pending.take().expect("a deadline implies a pending checkpoint");
        let missing: Vec<String> = (0..self.tasks.len())
            .filter(|t| !p.acks.contains_key(t))
            .map(|t| t.to_string())
            .collect();
        let reason = format!(
            "timed out with {} of {} tasks acknowledged (waiting for tasks {})",
            p.acks.len(),
            self.tasks.len(),
            missing.join(", ")
        );
        self.fail(p, reason, &mut s.failures).await?;
        s.next_trigger = Instant::now() + self.config.min_pause;
        Ok(())
    }

    fn on_request(&mut self, s: &mut Progress, req: SavepointRequest) {
        if req.stop == Some(true) {
            slog::info!(self.log, "stop with savepoint: draining the job first");
            s.at_final = Some(req);
            (self.stop)(StopAction::Drain);
        } else {
            s.waiting = Some(req);
        }
    }

    async fn on_event(&mut self, s: &mut Progress, ev: TaskEvent) -> Result<(), JobError> {
        let task = match &ev {
            TaskEvent::InputFinished { task } | TaskEvent::Declined { task, .. } | TaskEvent::Acked { task, .. } => {
                *task
            }
        };
        if task >= self.tasks.len() {
            // Events come from workers: a task number out of range is a peer's bug, not ours.
            slog::warn!(self.log, "dropped an event of a task the attempt does not have"; "task" => task);
            return Ok(());
        }
        match ev {
            TaskEvent::InputFinished { task } => {
                if !self.tasks[task].is_source {
                    slog::warn!(self.log, "dropped an end of input from a task that is not a source"; "task" => task);
                    return Ok(());
                }
                slog::debug!(self.log, "source input finished"; "task" => task);
                s.sources_finished.insert(task);
            }
            TaskEvent::Declined {
                task,
                checkpoint_id,
                reason,
            } => {
                if s.pending.as_ref().is_some_and(|p| p.id == checkpoint_id) {
                    let p = s.pending.take().expect("checked");
                    self.fail(p, format!("task {task} declined: {reason}"), &mut s.failures)
                        .await?;
                    s.next_trigger = Instant::now() + self.config.min_pause;
                }
            }
            TaskEvent::Acked {
                task,
                checkpoint_id,
                files,
                alignment_ms,
            } => {
                let Some(p) = s.pending.as_mut().filter(|p| p.id == checkpoint_id) else {
                    return Ok(());
                };
                if p.acks.contains_key(&task) {
                    slog::warn!(self.log, "ignored a second acknowledgement"; "task" => task, "checkpoint" => checkpoint_id);
                    return Ok(());
                }
                if let Some((key, f)) = self.tasks.get(task).and_then(|t| t.foreign(&files)) {
                    let reason = format!(
                        "task {task} acknowledged state that is not its own (operator {key}, subtask {})",
                        f.subtask
                    );
                    let p = s.pending.take().expect("checked");
                    self.fail(p, reason, &mut s.failures).await?;
                    s.next_trigger = Instant::now() + self.config.min_pause;
                    return Ok(());
                }
                p.alignment_ms = p.alignment_ms.max(alignment_ms);
                p.acks.insert(task, files);
                if p.acks.len() == self.tasks.len() {
                    self.all_acknowledged(s).await?;
                }
            }
        }
        Ok(())
    }

    /// Every task acknowledged the pending checkpoint: complete it (and its savepoint).
    async fn all_acknowledged(&mut self, s: &mut Progress) -> Result<(), JobError> {
        let mut p = s.pending.take().expect("the caller checked");
        let started = p.started;
        let savepoint = p.savepoint.take();
        match self.complete(p, savepoint.is_some()).await {
            Ok((meta, is_final)) => {
                s.failures = 0;
                s.final_done |= is_final;
                if let Some(req) = savepoint {
                    s.stopped |= self.finish_savepoint(req, &meta).await;
                }
            }
            Err((mut p, reason)) => {
                p.savepoint = savepoint;
                self.fail(p, reason, &mut s.failures).await?;
            }
        }
        s.next_trigger = (started + self.config.interval).max(Instant::now() + self.config.min_pause);
        Ok(())
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

    /// The metadata of checkpoint `p` from its acknowledgements; `Err` if they do not make a
    /// checkpoint that could be restored (state of operators the job does not have, a subtask
    /// or a path twice): acknowledgements come from workers, and a checkpoint committed now
    /// but unusable later would stop the job for good.
    fn metadata(&self, p: &Pending) -> Result<CheckpointMetadata, String> {
        let mut by_op: BTreeMap<&str, Vec<StateFileMeta>> = BTreeMap::new();
        for files in p.acks.values() {
            for (key, f) in files {
                by_op.entry(key.as_str()).or_default().push(f.clone());
            }
        }
        let operators = self
            .operators
            .iter()
            .filter_map(|o| {
                let mut files = by_op.remove(o.key.as_str())?;
                files.sort_by_key(|f| f.subtask);
                Some(OperatorStateMeta {
                    key: o.key.clone(),
                    name: o.name.clone(),
                    parallelism: o.parallelism,
                    files,
                })
            })
            .collect();
        if let Some(unknown) = by_op.keys().next() {
            return Err(format!(
                "state was acknowledged for operator '{unknown}', which the job does not have"
            ));
        }
        let meta = CheckpointMetadata {
            job_name: self.job_name.clone(),
            checkpoint_id: p.id,
            triggered_at_ms: p.triggered_ms,
            completed_at_ms: self.clock.now_ms(),
            max_parallelism: self.max_parallelism,
            operators,
        };
        meta.check()?;
        Ok(meta)
    }

    /// Writes the metadata and notifies the tasks; returns the metadata and whether it was the
    /// final checkpoint.
    async fn complete(&mut self, p: Pending, savepoint: bool) -> Result<(CheckpointMetadata, bool), (Pending, String)> {
        let meta = match self.metadata(&p) {
            Ok(meta) => meta,
            Err(e) => return Err((p, e)),
        };
        crate::buggify::maybe_delay("metadata write").await;
        if let Err(e) = self.storage.commit(&meta).await {
            return Err((p, format!("writing its metadata failed: {e}")));
        }
        let duration = p.started.elapsed();
        let sizes = (meta.state_size(), self.incremental_size(&meta).await);
        slog::info!(self.log, "checkpoint complete";
            "checkpoint" => p.id, "duration_ms" => duration.as_millis() as u64, "size" => sizes.0,
            "incremental_size" => sizes.1);
        self.stats.record_completed(p.id, duration, sizes, meta.completed_at_ms);
        self.stats.record(CheckpointRecord {
            id: p.id,
            savepoint,
            triggered_at_ms: p.triggered_ms,
            duration_ms: duration.as_millis() as u64,
            state_size: sizes.0,
            incremental_size: sizes.1,
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
        self.retain(&meta).await;
        Ok((meta, p.is_final))
    }

    /// Bytes `meta` added to the latest retained checkpoint (all of it when there is none, or
    /// when that checkpoint's list of shared files cannot be read).
    async fn incremental_size(&mut self, meta: &CheckpointMetadata) -> u64 {
        let Some(&previous) = self.retained.back() else {
            return meta.state_size();
        };
        match self.shared.of(&self.storage, previous).await {
            Ok(files) => meta.incremental_size(files),
            Err(_) => meta.state_size(),
        }
    }

    /// Keeps completed checkpoint `id` and deletes the ones it subsumes beyond the retained
    /// count.
    async fn retain(&mut self, meta: &CheckpointMetadata) {
        let id = meta.checkpoint_id;
        debug_assert!(
            self.retained.back().is_none_or(|&last| last < id),
            "completed checkpoint ids must increase: {id} after {:?}",
            self.retained.back()
        );
        self.retained.push_back(id);
        self.shared.completed(id, meta.shared_files());
        while self.retained.len() > self.config.retained as usize {
            let old = self.retained.pop_front().expect("longer than retained >= 1");
            // Read before the checkpoint goes: which shared files it named.
            let files = self.shared.of(&self.storage, old).await.cloned();
            if let Err(e) = self.storage.discard(old).await {
                slog::warn!(self.log, "could not delete subsumed checkpoint"; "checkpoint" => old, "error" => %e);
                continue;
            }
            let retained: Vec<u64> = self.retained.iter().copied().collect();
            #[cfg(madsim)]
            let retained = if self.config.broken_gc { Vec::new() } else { retained };
            let deleted = match files {
                Ok(files) => self.shared.discarded(&self.storage, old, files, &retained).await,
                Err(e) => Err(e),
            };
            match deleted {
                Ok(n) if n > 0 => slog::debug!(self.log, "deleted shared files"; "checkpoint" => old, "files" => n),
                Ok(_) => {}
                Err(e) => {
                    slog::warn!(self.log, "kept the shared files of a subsumed checkpoint"; "checkpoint" => old, "error" => %e)
                }
            }
        }
    }

    async fn fail(&mut self, mut p: Pending, reason: String, failures: &mut u32) -> Result<(), JobError> {
        self.stats.record(CheckpointRecord {
            id: p.id,
            savepoint: p.savepoint.is_some(),
            triggered_at_ms: p.triggered_ms,
            duration_ms: p.started.elapsed().as_millis() as u64,
            state_size: 0,
            incremental_size: 0,
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

#[cfg(test)]
mod tests {
    //! The coordinator against fake tasks: the tests hold the tasks' command receivers and
    //! send their events, on tokio's paused clock (time moves only when everything waits).
    use std::time::Duration;

    use sluice_state::blob::{BlobStore, MemoryStore};

    use super::*;
    use crate::api::StreamEnv;
    use crate::checkpoint::savepoint::list_savepoints;
    use crate::connectors::{DiscardSink, VecSource};
    use crate::WatermarkStrategy;

    const SOURCE: usize = 0;
    const SINK: usize = 1;

    /// A source task and a sink task of a two-vertex job, and the coordinator of their attempt.
    struct Harness {
        commands: Vec<mpsc::Receiver<TaskCommand>>,
        events: mpsc::Sender<TaskEvent>,
        store: Arc<MemoryStore>,
        stats: Arc<CheckpointStats>,
        requests: mpsc::Sender<SavepointRequest>,
        stops: Arc<std::sync::Mutex<Vec<StopAction>>>,
        run: tokio::task::JoinHandle<Result<(), JobError>>,
    }

    fn graph() -> JobGraph {
        let env = StreamEnv::new("unit");
        env.from_source(
            VecSource::new(vec![1u64]),
            WatermarkStrategy::for_monotonous_timestamps(),
            "src",
        )
        .uid("src")
        .sink_to(DiscardSink::default(), "sink")
        .uid("sink");
        let mut g = env.build().expect("a valid graph");
        g.finalize().expect("a valid graph");
        g
    }

    fn start(config: impl FnOnce(&mut CheckpointConfig)) -> Harness {
        let store = Arc::new(MemoryStore::new());
        let mut cfg = CheckpointConfig::new(Duration::from_millis(100), store.clone());
        cfg.timeout = Duration::from_secs(1);
        config(&mut cfg);
        let (requests, rx) = mpsc::channel(4);
        let stops = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = stops.clone();
        let stats = Arc::new(CheckpointStats::default());
        let job = JobCheckpointing {
            storage: CheckpointStorage::new(store.clone(), "unit"),
            config: cfg,
            clock: Clock::system(),
            next_id: Arc::new(AtomicU64::new(1)),
            stats: stats.clone(),
            savepoints: Some(Arc::new(tokio::sync::Mutex::new(rx))),
            stop: Arc::new(move |a| s.lock().unwrap().push(a)),
        };
        let (mut commands, mut tasks) = (Vec::new(), Vec::new());
        for is_source in [true, false] {
            let (tx, rx) = mpsc::channel(64);
            tasks.push(TaskRef {
                commands: tx,
                is_source,
                operators: Vec::new(),
                subtask: 0,
            });
            commands.push(rx);
        }
        let (events, events_rx) = mpsc::channel(64);
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let mut c = Coordinator::new(&graph(), &job, VecDeque::new(), tasks, events_rx, log);
        let run = tokio::spawn(async move { c.run().await });
        Harness {
            commands,
            events,
            store,
            stats,
            requests,
            stops,
            run,
        }
    }

    impl Harness {
        async fn next_command(&mut self, task: usize) -> TaskCommand {
            self.commands[task].recv().await.expect("the coordinator is running")
        }

        /// The next barrier at the source, and the (paused) time it came at.
        async fn triggered(&mut self) -> (u64, Instant) {
            match self.next_command(SOURCE).await {
                TaskCommand::Trigger(b) => (b.checkpoint_id, Instant::now()),
                other => panic!("expected a trigger, got {other:?}"),
            }
        }

        async fn ack(&self, task: usize, checkpoint_id: u64) {
            let ev = TaskEvent::Acked {
                task,
                checkpoint_id,
                files: Vec::new(),
                alignment_ms: 0,
            };
            self.events.send(ev).await.unwrap();
        }

        async fn ack_all(&mut self, id: u64) {
            self.ack(SOURCE, id).await;
            self.ack(SINK, id).await;
            for task in [SOURCE, SINK] {
                assert!(matches!(self.next_command(task).await, TaskCommand::Complete(c) if c == id));
            }
        }

        async fn completed(&self) -> Vec<u64> {
            CheckpointStorage::new(self.store.clone(), "unit")
                .completed_ids()
                .await
                .unwrap()
        }
    }

    #[real_tokio::test(start_paused = true)]
    async fn triggers_at_the_interval_and_completes_when_every_task_acknowledged() {
        let mut h = start(|_| {});
        let t0 = Instant::now();
        let (id, at) = h.triggered().await;
        assert_eq!((id, at - t0), (1, Duration::from_millis(100)));
        h.ack(SOURCE, 1).await;
        tokio::task::yield_now().await;
        assert!(h.completed().await.is_empty(), "complete before the sink acknowledged");
        h.ack(SINK, 1).await;
        for task in [SOURCE, SINK] {
            assert!(matches!(h.next_command(task).await, TaskCommand::Complete(1)));
        }
        assert_eq!(h.completed().await, [1]);
        assert_eq!(h.stats.completed.load(Ordering::Relaxed), 1);
        let (id, at2) = h.triggered().await;
        assert_eq!(
            (id, at2 - at),
            (2, Duration::from_millis(100)),
            "the next one an interval after the start of the last"
        );
    }

    #[real_tokio::test(start_paused = true)]
    async fn state_acknowledged_for_another_task_fails_the_checkpoint() {
        let mut h = start(|c| c.tolerable_failures = 5);
        let (id, _) = h.triggered().await;
        // The source task claims a file of an operator and subtask that are not its own.
        let forged = vec![(
            "someone-else".to_string(),
            StateFileMeta {
                subtask: 1,
                path: "x".into(),
                size: 1,
                crc32: 0,
                shared: Vec::new(),
            },
        )];
        let ack = TaskEvent::Acked {
            task: SOURCE,
            checkpoint_id: id,
            files: forged,
            alignment_ms: 0,
        };
        h.events.send(ack).await.unwrap();
        h.ack(SINK, id).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            h.completed().await.is_empty(),
            "a checkpoint with forged state completed"
        );
        assert_eq!(h.stats.failed.load(Ordering::Relaxed), 1);
    }

    #[real_tokio::test(start_paused = true)]
    async fn acknowledgements_of_another_checkpoint_are_ignored() {
        let mut h = start(|_| {});
        let (id, _) = h.triggered().await;
        h.ack(SOURCE, id + 7).await;
        h.ack(SINK, id + 7).await;
        h.ack(SOURCE, id).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(h.completed().await.is_empty());
        h.ack(SINK, id).await;
        assert!(matches!(h.next_command(SOURCE).await, TaskCommand::Complete(c) if c == id));
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_timed_out_checkpoint_fails_the_job_beyond_the_tolerated_failures() {
        let mut h = start(|c| c.tolerable_failures = 1);
        let (first, t1) = h.triggered().await;
        h.ack(SOURCE, first).await;
        // The sink never acknowledges: timed out after 1 s, then another try after min pause 0.
        let (second, t2) = h.triggered().await;
        assert_eq!((second, t2 - t1), (first + 1, Duration::from_secs(1)));
        assert_eq!(h.stats.failed.load(Ordering::Relaxed), 1);
        let err = h.run.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, JobError::CheckpointsFailing { failures: 2, tolerated: 1, last } if last.contains("timed out") && last.contains("waiting for tasks 0, 1")),
            "{err}"
        );
        assert!(h.store.paths().is_empty(), "failed checkpoints leave nothing behind");
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_decline_fails_the_checkpoint_and_the_next_waits_the_min_pause() {
        let mut h = start(|c| {
            c.tolerable_failures = 5;
            c.min_pause = Duration::from_millis(500);
        });
        let (id, _) = h.triggered().await;
        let declined_at = Instant::now();
        let decline = TaskEvent::Declined {
            task: SINK,
            checkpoint_id: id,
            reason: "disk full".into(),
        };
        h.events.send(decline).await.unwrap();
        let (next, at) = h.triggered().await;
        assert_eq!(next, id + 1);
        assert!(at - declined_at >= Duration::from_millis(500), "{:?}", at - declined_at);
        let history = h.stats.history();
        assert!(history
            .iter()
            .any(|r| matches!(&r.outcome, CheckpointOutcome::Failed(m) if m.contains("disk full"))));
    }

    #[real_tokio::test(start_paused = true)]
    async fn min_pause_spaces_checkpoints_longer_than_the_interval() {
        let mut h = start(|c| c.min_pause = Duration::from_millis(300));
        let (id, _) = h.triggered().await;
        h.ack_all(id).await;
        let completed_at = Instant::now();
        let (_, at) = h.triggered().await;
        assert_eq!(at - completed_at, Duration::from_millis(300));
    }

    #[real_tokio::test(start_paused = true)]
    async fn retains_the_configured_number_and_deletes_the_subsumed() {
        let mut h = start(|c| c.retained = 2);
        for _ in 0..4 {
            let (id, _) = h.triggered().await;
            h.ack_all(id).await;
        }
        assert_eq!(h.completed().await, [3, 4]);
        assert!(!h
            .store
            .paths()
            .iter()
            .any(|p| p.contains("chk-0000000001") || p.contains("chk-0000000002")));
    }

    #[real_tokio::test(start_paused = true)]
    async fn the_final_checkpoint_follows_the_end_of_input_at_once_and_ends_the_sources() {
        let mut h = start(|c| c.interval = Duration::from_secs(3600));
        let t0 = Instant::now();
        h.events.send(TaskEvent::InputFinished { task: SOURCE }).await.unwrap();
        let (id, at) = h.triggered().await;
        assert_eq!(at, t0, "the final checkpoint does not wait for the interval");
        h.ack_all(id).await;
        assert!(matches!(h.next_command(SOURCE).await, TaskCommand::Finish));
        drop(h.events);
        assert!(
            h.run.await.unwrap().is_ok(),
            "the coordinator ends when the tasks are gone"
        );
    }

    #[real_tokio::test(start_paused = true)]
    async fn stop_with_savepoint_writes_it_then_stops_and_triggers_nothing_more() {
        let mut h = start(|c| c.interval = Duration::from_secs(3600));
        let target = Arc::new(MemoryStore::new());
        let (reply, answer) = oneshot::channel();
        let req = SavepointRequest {
            target: target.clone(),
            stop: Some(false),
            reply,
        };
        h.requests.send(req).await.unwrap();
        let (id, _) = h.triggered().await;
        h.ack_all(id).await;
        let info = answer.await.unwrap().unwrap();
        assert_eq!(info.checkpoint_id, id);
        assert_eq!(list_savepoints(target.as_ref()).await.unwrap(), vec![info.name]);
        assert_eq!(*h.stops.lock().unwrap(), [StopAction::Cancel]);
        tokio::time::sleep(Duration::from_secs(7200)).await;
        assert!(
            h.commands[SOURCE].try_recv().is_err(),
            "no checkpoint after a stop-with-savepoint"
        );
    }

    #[real_tokio::test(start_paused = true)]
    async fn stop_with_drain_drains_first_and_takes_the_savepoint_at_the_final_checkpoint() {
        let mut h = start(|c| c.interval = Duration::from_secs(3600));
        let target: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let (reply, answer) = oneshot::channel();
        let req = SavepointRequest {
            target,
            stop: Some(true),
            reply,
        };
        h.requests.send(req).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(*h.stops.lock().unwrap(), [StopAction::Drain]);
        h.events.send(TaskEvent::InputFinished { task: SOURCE }).await.unwrap();
        let (id, _) = h.triggered().await;
        h.ack_all(id).await;
        assert_eq!(answer.await.unwrap().unwrap().checkpoint_id, id);
    }

    #[real_tokio::test(start_paused = true)]
    async fn a_failed_savepoint_checkpoint_answers_the_request_with_the_reason() {
        let mut h = start(|c| {
            c.interval = Duration::from_secs(3600);
            c.tolerable_failures = 3;
        });
        let (reply, answer) = oneshot::channel();
        let req = SavepointRequest {
            target: Arc::new(MemoryStore::new()),
            stop: None,
            reply,
        };
        h.requests.send(req).await.unwrap();
        let (id, _) = h.triggered().await;
        let decline = TaskEvent::Declined {
            task: SOURCE,
            checkpoint_id: id,
            reason: "no".into(),
        };
        h.events.send(decline).await.unwrap();
        let err = answer.await.unwrap().unwrap_err();
        assert!(
            err.contains(&format!("checkpoint {id} failed")) && err.contains("declined: no"),
            "{err}"
        );
    }
}
