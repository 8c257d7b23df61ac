//! The loop of one task: a chain of operators fed by a source or by input channels, taking
//! part in checkpoints when the job has them.

use sluice_state::StateWriter;
use sluice_transport::{Barrier, ChannelStatus, Payload, StreamMessage};
use tokio::sync::mpsc;

use crate::checkpoint::metadata::SharedFile;
use crate::checkpoint::metadata::StateFileMeta;
use crate::checkpoint::protocol::{TaskCommand, TaskEvent};
use crate::checkpoint::CheckpointStorage;
use crate::clock::Clock;
use crate::data::EventTime;
use crate::error::{JobError, OperatorError};
use crate::metrics::task::TaskMetrics;
use crate::metrics::Meter;
use crate::operator::{AsyncSnapshot, OperatorContext};
use crate::runtime::chain::ChainOps;
use crate::runtime::control::ControlReceiver;
use crate::runtime::input_gate::{GateEvent, InputGate};
use crate::runtime::outputs::Outputs;
use crate::runtime::JobControl;
use crate::source::{ErasedSource, SourcePoll};
use crate::spawned::BackgroundTasks;

/// How a task ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskExit {
    Finished,
    Cancelled,
}

pub(crate) struct SourceHead {
    pub(crate) source: Box<dyn ErasedSource>,
    pub(crate) ctx: OperatorContext,
    /// The source's key in checkpoints.
    pub(crate) key: String,
}

pub(crate) enum Head {
    Source(SourceHead),
    Inputs(InputGate),
}

/// The task's side of the checkpoint protocol.
pub(crate) struct CheckpointLink {
    pub(crate) task: usize,
    pub(crate) commands: mpsc::Receiver<TaskCommand>,
    pub(crate) events: mpsc::Sender<TaskEvent>,
    pub(crate) storage: CheckpointStorage,
    pub(crate) max_parallelism: u32,
    /// Checkpoint key of each chained operator, in chain order.
    pub(crate) op_keys: Vec<String>,
    pub(crate) last_snapshot: u64,
    pub(crate) last_notified: u64,
}

impl CheckpointLink {
    /// The link of task number `task`, resuming after `restored` if there is one.
    pub(crate) fn new(
        task: usize,
        commands: mpsc::Receiver<TaskCommand>,
        events: mpsc::Sender<TaskEvent>,
        storage: CheckpointStorage,
        max_parallelism: u32,
        restored: Option<&crate::checkpoint::LoadedCheckpoint>,
    ) -> Self {
        let last = restored.map_or(0, |c| c.metadata.checkpoint_id);
        CheckpointLink {
            task,
            commands,
            events,
            storage,
            max_parallelism,
            op_keys: Vec::new(),
            last_snapshot: last,
            last_notified: last,
        }
    }
}

/// Where a source task stands between polls.
struct SourcePace {
    /// The last watermark sent, and when.
    last_wm: EventTime,
    last_wm_at: i64,
    /// When the source last produced records.
    last_data_at: i64,
    /// Whether the source told its consumers it is idle.
    idle: bool,
    polls: u32,
}

/// What waiting on the inputs came to.
enum InputWait {
    Event(GateEvent),
    /// Look again (a timer is due, the control changed, a command was handled).
    Again,
    Exit(TaskExit),
}

/// Counts the time until it is dropped as the task's idle time.
struct IdleTimer {
    idle_ns: Meter,
    start: tokio::time::Instant,
}

impl IdleTimer {
    fn start(metrics: &TaskMetrics) -> Self {
        IdleTimer {
            idle_ns: metrics.idle_ns.clone(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Drop for IdleTimer {
    fn drop(&mut self) {
        self.idle_ns.mark(self.start.elapsed().as_nanos() as u64);
    }
}

pub(crate) struct Task {
    pub(crate) name: String,
    pub(crate) subtask: u32,
    pub(crate) head: Head,
    pub(crate) chain: ChainOps,
    pub(crate) outputs: Outputs,
    pub(crate) control: ControlReceiver,
    pub(crate) batch_size: usize,
    pub(crate) watermark_interval_ms: i64,
    pub(crate) log: slog::Logger,
    pub(crate) link: Option<CheckpointLink>,
    /// Background uploads of this task's snapshots, stopped with the attempt's tasks (a failed
    /// or cancelled attempt must not keep writing).
    pub(crate) uploads: BackgroundTasks,
    metrics: TaskMetrics,
}

enum Part {
    Source(Vec<u8>),
    Operator(AsyncSnapshot),
}

/// The background half of a task's checkpoint: serialize the frozen state and store it.
struct Upload {
    id: u64,
    task: usize,
    subtask: u32,
    max_parallelism: u32,
    storage: CheckpointStorage,
    alignment_ms: u64,
    state_size: crate::metrics::Gauge,
}

impl Upload {
    /// Writes one state file per part; the acknowledgement, or the decline saying why not.
    async fn run(self, parts: Vec<(String, Part)>) -> TaskEvent {
        match self.write(parts).await {
            Ok(files) => TaskEvent::Acked {
                task: self.task,
                checkpoint_id: self.id,
                files,
                alignment_ms: self.alignment_ms,
            },
            Err(reason) => TaskEvent::Declined {
                task: self.task,
                checkpoint_id: self.id,
                reason,
            },
        }
    }

    async fn write(&self, parts: Vec<(String, Part)>) -> Result<Vec<(String, StateFileMeta)>, String> {
        let mut files = Vec::with_capacity(parts.len());
        let mut written = 0u64;
        for (key, part) in parts {
            let mut w = StateWriter::new(self.max_parallelism);
            match part {
                Part::Source(pos) => w.add_operator_state_raw(pos),
                Part::Operator(f) => f(&mut w).map_err(|e| e.to_string())?,
            }
            // The runs of tiered state it names: the checkpoint needs them as well.
            let shared = sluice_state::tiered::Manifest::runs_named(w.operator_state())
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(path, size)| SharedFile { path, size })
                .collect();
            let bytes = w.finish().map_err(|e| e.to_string())?;
            written += bytes.len() as u64;
            crate::buggify::maybe_delay("state upload").await;
            let meta = self
                .storage
                .write_state(self.id, &key, self.subtask, (bytes, shared))
                .await
                .map_err(|e| format!("storing state of '{key}': {e}"))?;
            files.push((key, meta));
        }
        self.state_size.set(written as f64);
        Ok(files)
    }
}

impl Task {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        subtask: u32,
        head: Head,
        chain: ChainOps,
        outputs: Outputs,
        control: ControlReceiver,
        batch_size: usize,
        watermark_interval_ms: i64,
        log: slog::Logger,
        link: Option<CheckpointLink>,
        metrics: TaskMetrics,
    ) -> Self {
        Task {
            name,
            subtask,
            head,
            chain,
            outputs,
            control,
            batch_size,
            watermark_interval_ms,
            log,
            link,
            uploads: BackgroundTasks::default(),
            metrics,
        }
    }

    fn op_err(&self, source: OperatorError) -> JobError {
        JobError::TaskFailed {
            task: self.name.clone(),
            source,
        }
    }

    fn net_err(&self, source: sluice_transport::TransportError) -> JobError {
        JobError::Transport {
            task: self.name.clone(),
            source,
        }
    }

    pub(crate) async fn run(mut self) -> Result<TaskExit, JobError> {
        slog::debug!(self.log, "task starting");
        let head = std::mem::replace(
            &mut self.head,
            Head::Inputs(InputGate::new(Vec::new(), Default::default())),
        );
        let exit = match head {
            Head::Source(src) => self.run_source(src).await?,
            Head::Inputs(gate) => self.run_inputs(gate).await?,
        };
        slog::debug!(self.log, "task ended"; "exit" => ?exit);
        Ok(exit)
    }

    fn control(&self) -> JobControl {
        *self.control.borrow()
    }

    async fn fire_processing_timers(&mut self, now_ms: i64) -> Result<(), JobError> {
        let out = self.chain.processing_time(now_ms).await.map_err(|e| self.op_err(e))?;
        self.outputs.emit_all(out).await.map_err(|e| self.net_err(e))
    }

    async fn advance_watermark(&mut self, wm: EventTime) -> Result<(), JobError> {
        self.metrics.input_watermark.set(wm.0 as f64 / 1000.0);
        self.metrics.output_watermark.set(wm.0 as f64 / 1000.0);
        let out = self.chain.watermark(wm).await.map_err(|e| self.op_err(e))?;
        self.outputs.emit_all(out).await.map_err(|e| self.net_err(e))?;
        self.outputs
            .broadcast(|| StreamMessage::Watermark(wm.0))
            .await
            .map_err(|e| self.net_err(e))
    }

    /// Takes this task's part of checkpoint `b`: freeze operator state, forward the barrier,
    /// then serialize and upload in the background and acknowledge.
    async fn checkpoint(
        &mut self,
        b: Barrier,
        source: Option<&SourceHead>,
        alignment: std::time::Duration,
    ) -> Result<(), JobError> {
        let id = b.checkpoint_id;
        let Some(link) = self.link.as_ref() else {
            return Err(self.op_err(OperatorError::user(
                "a checkpoint barrier reached a job without checkpointing",
            )));
        };
        debug_assert!(
            id > link.last_snapshot,
            "checkpoint ids must increase: {id} after {}",
            link.last_snapshot
        );
        let mut parts: Vec<(String, Part)> = Vec::new();
        if let Some(src) = source {
            let pos = src.source.snapshot().map_err(|e| self.op_err(e))?;
            parts.push((src.key.clone(), Part::Source(pos)));
        }
        let keys = link.op_keys.clone();
        // Tiered state writes out what is only in memory first, so the snapshot names runs.
        self.chain
            .prepare_snapshot(id)
            .await
            .map_err(|e| JobError::TaskFailed {
                task: self.name.clone(),
                source: e,
            })?;
        for (i, (op, ctx)) in self.chain.ops.iter_mut().enumerate() {
            let snap = op.snapshot_state(id, ctx).map_err(|e| JobError::TaskFailed {
                task: self.name.clone(),
                source: e,
            })?;
            if let Some(s) = snap {
                parts.push((keys[i].clone(), Part::Operator(s)));
            }
        }
        // The barrier goes on right after the synchronous part: downstream tasks align while
        // this one's state is still being written.
        crate::buggify::maybe_delay("barrier").await;
        self.outputs
            .broadcast(|| StreamMessage::Barrier(b))
            .await
            .map_err(|e| self.net_err(e))?;
        let link = self.link.as_mut().expect("checked above");
        link.last_snapshot = id;
        let upload = Upload {
            id,
            task: link.task,
            subtask: self.subtask,
            max_parallelism: link.max_parallelism,
            storage: link.storage.clone(),
            alignment_ms: alignment.as_millis() as u64,
            state_size: self.metrics.state_size.clone(),
        };
        let events = link.events.clone();
        self.uploads.spawn(async move {
            let ev = upload.run(parts).await;
            if crate::buggify::fire("lost ack", 20) {
                // The acknowledgement is lost: the coordinator must time the checkpoint out.
                return;
            }
            let _ = events.send(ev).await;
        });
        Ok(())
    }

    fn notify_complete(&mut self, id: u64) -> Result<(), JobError> {
        for (op, ctx) in &mut self.chain.ops {
            op.notify_checkpoint_complete(id, ctx)
                .map_err(|e| JobError::TaskFailed {
                    task: self.name.clone(),
                    source: e,
                })?;
        }
        if let Some(link) = self.link.as_mut() {
            link.last_notified = link.last_notified.max(id);
        }
        Ok(())
    }

    /// Handles a coordinator command; returns true on `Finish`.
    async fn on_command(&mut self, cmd: TaskCommand, source: Option<&SourceHead>) -> Result<bool, JobError> {
        match cmd {
            TaskCommand::Trigger(b) => {
                self.checkpoint(b, source, std::time::Duration::ZERO).await?;
                Ok(false)
            }
            TaskCommand::Complete(id) => {
                self.notify_complete(id)?;
                Ok(false)
            }
            TaskCommand::Finish => Ok(true),
        }
    }

    fn try_command(&mut self) -> Option<TaskCommand> {
        self.link.as_mut()?.commands.try_recv().ok()
    }

    /// Waits for the next command, or `None` when the job is cancelled.
    async fn next_command(&mut self) -> Option<TaskCommand> {
        let mut control = self.control.clone();
        let link = self.link.as_mut()?;
        loop {
            if *control.borrow() == JobControl::Cancel {
                return None;
            }
            tokio::select! {
                // Fixed polling order: tokio's random branch order is not seeded by the simulator.
                biased;
                cmd = link.commands.recv() => return cmd,
                r = control.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// End of input: the final watermark fires every timer, then operators flush and the
    /// consumers are told that nothing follows.
    async fn finish(&mut self, last_wm: EventTime) -> Result<TaskExit, JobError> {
        if last_wm < EventTime::MAX {
            self.advance_watermark(EventTime::MAX).await?;
        }
        // With checkpoints, the final one must be committed before the operators end: it is
        // what publishes the last output of two-phase-commit sinks.
        while let Some(link) = &self.link {
            if link.last_notified >= link.last_snapshot {
                break;
            }
            match self.next_command().await {
                Some(cmd) => {
                    self.on_command(cmd, None).await?;
                }
                None => return Ok(TaskExit::Cancelled),
            }
        }
        let out = self.chain.end_of_input().await.map_err(|e| self.op_err(e))?;
        self.outputs.emit_all(out).await.map_err(|e| self.net_err(e))?;
        self.outputs
            .broadcast(|| StreamMessage::EndOfPartition)
            .await
            .map_err(|e| self.net_err(e))?;
        Ok(TaskExit::Finished)
    }

    /// A source whose input ended, in a job with checkpoints: it reports so, takes part in
    /// the final checkpoint, and ends when the coordinator says it is complete.
    async fn finish_source(&mut self, src: SourceHead, mut last_wm: EventTime) -> Result<TaskExit, JobError> {
        if last_wm < EventTime::MAX {
            self.advance_watermark(EventTime::MAX).await?;
            last_wm = EventTime::MAX;
        }
        self.outputs.flush().await.map_err(|e| self.net_err(e))?;
        let Some(link) = &self.link else {
            return self.finish(last_wm).await;
        };
        let _ = link.events.send(TaskEvent::InputFinished { task: link.task }).await;
        loop {
            match self.next_command().await {
                None => return Ok(TaskExit::Cancelled),
                Some(cmd) => {
                    if self.on_command(cmd, Some(&src)).await? {
                        break;
                    }
                }
            }
        }
        self.finish(last_wm).await
    }

    async fn run_source(&mut self, mut src: SourceHead) -> Result<TaskExit, JobError> {
        let clock = src.ctx.clock;
        let mut pace = SourcePace {
            last_wm: EventTime::MIN,
            last_wm_at: clock.now_ms(),
            last_data_at: clock.now_ms(),
            idle: false,
            polls: 0,
        };
        // One receiver for the whole loop: it remembers which changes it has seen.
        let mut control = self.control.clone();
        loop {
            match self.control() {
                JobControl::Cancel => return Ok(TaskExit::Cancelled),
                JobControl::Drain => return self.finish_source(src, pace.last_wm).await,
                JobControl::Run => {}
            }
            while let Some(cmd) = self.try_command() {
                // `Finish` only follows this source's own report that its input ended.
                let finish = self.on_command(cmd, Some(&src)).await?;
                debug_assert!(!finish, "Finish reached a source that is still reading");
            }
            let now = clock.now_ms();
            if self.chain.next_processing_timer().is_some_and(|t| t <= now) {
                self.fire_processing_timers(now).await?;
            }
            let state = self.poll_source(&mut src, &mut pace, now).await?;
            match state {
                SourcePoll::Ready => {
                    pace.polls = pace.polls.wrapping_add(1);
                    // A chained source never awaits a full channel, so give other tasks on
                    // this worker thread a turn now and then.
                    if pace.polls.is_multiple_of(8) {
                        tokio::task::yield_now().await;
                    }
                }
                SourcePoll::Finished => {
                    return if self.link.is_some() {
                        self.finish_source(src, pace.last_wm).await
                    } else {
                        self.finish(pace.last_wm).await
                    };
                }
                SourcePoll::WaitUntil(t) => {
                    if let Some(exit) = self.source_wait(&src, &mut pace, &mut control, now, t).await? {
                        return Ok(exit);
                    }
                }
            }
        }
    }

    /// Polls the source once: pushes its batch through the chain and advances the watermark
    /// when it is due.
    async fn poll_source(
        &mut self,
        src: &mut SourceHead,
        pace: &mut SourcePace,
        now: i64,
    ) -> Result<SourcePoll, JobError> {
        let (batch, state) = src.source.poll(self.batch_size, &src.ctx).map_err(|e| self.op_err(e))?;
        if let Some(b) = batch {
            if pace.idle {
                pace.idle = false;
                self.broadcast_status(ChannelStatus::Active).await?;
            }
            pace.last_data_at = now;
            let out = self.chain.push_from(0, b).await.map_err(|e| self.op_err(e))?;
            if let Some(out) = out {
                self.outputs.emit(out).await.map_err(|e| self.net_err(e))?;
            }
        }
        let wm = src.source.watermark();
        let waiting = !matches!(state, SourcePoll::Ready);
        if wm > pace.last_wm && (waiting || now - pace.last_wm_at >= self.watermark_interval_ms) {
            self.advance_watermark(wm).await?;
            pace.last_wm = wm;
            pace.last_wm_at = now;
        }
        Ok(state)
    }

    /// The source has nothing until `until`: flush, mark the source idle if it has been quiet
    /// for its idle timeout, and sleep until then, a processing-time timer, a control change
    /// or a checkpoint command. `Some` if the attempt is being torn down.
    async fn source_wait(
        &mut self,
        src: &SourceHead,
        pace: &mut SourcePace,
        control: &mut ControlReceiver,
        now: i64,
        until: i64,
    ) -> Result<Option<TaskExit>, JobError> {
        self.outputs.flush().await.map_err(|e| self.net_err(e))?;
        let mut wake = until;
        if let Some(timeout) = src.source.idle_timeout_ms() {
            if !pace.idle && now - pace.last_data_at >= timeout {
                pace.idle = true;
                slog::debug!(self.log, "source idle");
                self.broadcast_status(ChannelStatus::Idle).await?;
            } else if !pace.idle {
                wake = wake.min(pace.last_data_at + timeout);
            }
        }
        if let Some(timer) = self.chain.next_processing_timer() {
            wake = wake.min(timer);
        }
        if wake <= now {
            return Ok(None);
        }
        let _idle = IdleTimer::start(&self.metrics);
        let sleep = tokio::time::sleep_until(src.ctx.clock.instant_at(wake));
        let Some(link) = self.link.as_mut() else {
            tokio::select! {
                // Fixed polling order: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = sleep => {}
                _ = control.changed() => {}
            }
            return Ok(None);
        };
        tokio::select! {
            // Fixed polling order: tokio's random branch order is not seeded by the simulator.
            biased;
            _ = sleep => {}
            _ = control.changed() => {}
            cmd = link.commands.recv() => match cmd {
                Some(cmd) => {
                    self.on_command(cmd, Some(src)).await?;
                }
                // The coordinator is gone: this attempt is being torn down.
                None => return Ok(Some(TaskExit::Cancelled)),
            }
        }
        Ok(None)
    }

    async fn broadcast_status(&mut self, status: ChannelStatus) -> Result<(), JobError> {
        self.outputs
            .broadcast(|| StreamMessage::Status(status))
            .await
            .map_err(|e| self.net_err(e))
    }

    async fn run_inputs(&mut self, mut gate: InputGate) -> Result<TaskExit, JobError> {
        let clock = match self.chain.ops.first() {
            Some((_, ctx)) => ctx.clock,
            None => unreachable!("a task without a source has at least one operator"),
        };
        // One receiver for the whole loop: it remembers which changes it has seen. (A fresh
        // clone per wait would see every earlier change as new, and a drained task would spin.)
        let mut control = self.control.clone();
        loop {
            if self.control() == JobControl::Cancel {
                return Ok(TaskExit::Cancelled);
            }
            while let Some(cmd) = self.try_command() {
                self.on_command(cmd, None).await?;
            }
            let timer = self.chain.next_processing_timer();
            if let Some(t) = timer {
                let now = clock.now_ms();
                if t <= now {
                    self.fire_processing_timers(now).await?;
                    continue;
                }
            }
            let event = match gate.try_next().map_err(|e| self.net_err(e))? {
                Some(ev) => ev,
                None => match self.input_wait(&mut gate, &mut control, clock, timer).await? {
                    InputWait::Event(ev) => ev,
                    InputWait::Again => continue,
                    InputWait::Exit(exit) => return Ok(exit),
                },
            };
            if let Some(exit) = self.on_gate_event(event, &gate).await? {
                return Ok(exit);
            }
        }
    }

    /// Nothing is queued on the inputs: send what is buffered (so records don't wait for a
    /// full batch while the input is quiet), then wait for input, a timer, a control change
    /// or a checkpoint command.
    async fn input_wait(
        &mut self,
        gate: &mut InputGate,
        control: &mut ControlReceiver,
        clock: Clock,
        timer: Option<i64>,
    ) -> Result<InputWait, JobError> {
        self.outputs.flush().await.map_err(|e| self.net_err(e))?;
        let far = clock.instant_at(timer.unwrap_or(i64::MAX / 4));
        let _idle = IdleTimer::start(&self.metrics);
        let command = async {
            match self.link.as_mut() {
                Some(link) => link.commands.recv().await,
                None => std::future::pending().await,
            }
        };
        let cmd = tokio::select! {
            // Fixed polling order: tokio's random branch order is not seeded by the simulator.
            biased;
            ev = gate.next() => return Ok(InputWait::Event(ev.map_err(|e| self.net_err(e))?)),
            _ = tokio::time::sleep_until(far), if timer.is_some() => return Ok(InputWait::Again),
            _ = control.changed() => return Ok(InputWait::Again),
            cmd = command => cmd,
        };
        match cmd {
            Some(cmd) => {
                self.on_command(cmd, None).await?;
                Ok(InputWait::Again)
            }
            // The coordinator is gone: this attempt is being torn down.
            None => Ok(InputWait::Exit(TaskExit::Cancelled)),
        }
    }

    /// Handles what came from the inputs; `Some` when the task ends.
    async fn on_gate_event(&mut self, event: GateEvent, gate: &InputGate) -> Result<Option<TaskExit>, JobError> {
        match event {
            GateEvent::Data(Payload::Local(b)) => {
                if let Some(out) = self.chain.push_from(0, b).await.map_err(|e| self.op_err(e))? {
                    self.outputs.emit(out).await.map_err(|e| self.net_err(e))?;
                }
            }
            GateEvent::Data(Payload::Encoded(_)) => {
                unreachable!("the input gate decodes network batches before handing them out")
            }
            GateEvent::Watermark(wm) => self.advance_watermark(wm).await?,
            GateEvent::Idle => self.broadcast_status(ChannelStatus::Idle).await?,
            GateEvent::Active => self.broadcast_status(ChannelStatus::Active).await?,
            GateEvent::Barrier(b) => self.checkpoint(b, None, gate.last_alignment()).await?,
            GateEvent::End => return self.finish(gate.watermark()).await.map(Some),
        }
        Ok(None)
    }
}
