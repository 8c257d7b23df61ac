//! The operator contract of the task runtime, and its type-erased form.
//!
//! An operator transforms batches: it gets a `Vec<Record<In>>` and appends its results to a
//! `Vec<Record<Out>>`. Progress reaches it beside the data: [`Operator::on_watermark`] when the
//! event-time clock of its task advances, [`Operator::on_processing_time`] when a
//! processing-time timer it asked for is due, and [`Operator::end_of_input`] when a bounded
//! input is exhausted. Operators never see channels, partitioning or chaining: the task does.

use std::any::Any;
use std::sync::Arc;

use crate::clock::Clock;
use crate::data::{Data, EventTime, Record};
use crate::error::OperatorError;
use crate::metrics::task::OperatorMetrics;
use crate::metrics::MetricGroup;
use crate::sync::LockExt;
use sluice_state::{RestoredState, StateWriter};

/// A boxed, `Send` future (what [`Operator::prepare`] returns).
pub type BoxFuture<'a, T> = sluice_state::blob::BoxFuture<'a, T>;

/// What an operator is about to be called for, so that [`Operator::prepare`] can fetch the
/// state the call will read (or store what a snapshot needs) before the synchronous call.
#[derive(Debug)]
pub enum Prepare<'a, T> {
    /// [`Operator::process`] of this batch follows.
    Batch(&'a [Record<T>]),
    /// [`Operator::on_watermark`] follows (the new watermark is in the context).
    Watermark,
    /// [`Operator::on_processing_time`] with this time follows.
    ProcessingTime(i64),
    /// [`Operator::snapshot_state`] of this checkpoint follows.
    Snapshot(u64),
}

/// What an operator instance knows about where it runs.
#[derive(Debug)]
pub struct OperatorContext {
    /// Name of the vertex.
    pub vertex_name: String,
    /// Index of this parallel instance.
    pub subtask: u32,
    /// Number of parallel instances of the vertex.
    pub parallelism: u32,
    /// Number of key groups of the job.
    pub max_parallelism: u32,
    /// The task's current event-time watermark.
    pub watermark: EventTime,
    /// Processing-time clock.
    pub clock: Clock,
    /// Structured logger with job, vertex and subtask in its context.
    pub log: slog::Logger,
    /// The execution attempt (0 on the first run, +1 on every restart).
    pub attempt: u32,
    /// Whether the job takes checkpoints (sinks then commit only on checkpoint completion).
    pub checkpointing: bool,
    /// Where keyed state lives.
    pub state_backend: crate::state_backend::StateBackend,
    pub(crate) metrics: Arc<OperatorMetrics>,
}

impl OperatorContext {
    /// Counts records dropped for being late.
    pub fn count_late_records(&self, n: u64) {
        self.metrics.add_late(n);
    }

    /// The operator's metric scope (job, task, subtask and operator labels): user functions
    /// register their own counters, gauges, meters and histograms here.
    pub fn metrics(&self) -> &MetricGroup {
        self.metrics.group()
    }

    /// A context for unit tests of a single source or operator: subtask 0 of 1, clock at 0,
    /// checkpointing on, metrics that go nowhere.
    #[cfg(test)]
    pub(crate) fn for_test(vertex_name: &str) -> Self {
        OperatorContext {
            vertex_name: vertex_name.into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            watermark: EventTime::MIN,
            clock: Clock::starting_at(0),
            log: slog::Logger::root(slog::Discard, slog::o!()),
            attempt: 0,
            checkpointing: true,
            state_backend: crate::state_backend::StateBackend::Heap,
            metrics: Arc::new(OperatorMetrics::detached()),
        }
    }

    /// `vertex (subtask+1/parallelism)`, as Flink names a subtask.
    pub fn task_name(&self) -> String {
        format!("{} ({}/{})", self.vertex_name, self.subtask + 1, self.parallelism)
    }
}

/// A typed, one-input operator. Two-input operators (connect, join) are one-input operators
/// over an [`crate::data::Either`] of their inputs.
pub trait Operator: Send + 'static {
    /// Record type in.
    type In: Data;
    /// Record type out.
    type Out: Data;

    /// Called once before the first record.
    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Whether the operator needs [`Operator::prepare`] before its calls (state that is not
    /// all in memory). The runtime skips the hook for operators that say no.
    fn wants_prepare(&self) -> bool {
        false
    }

    /// Runs before a synchronous call (see [`Prepare`]) and may wait: fetch the state the call
    /// will read, flush what a snapshot must store. Operators are synchronous; this is where
    /// their waiting happens.
    fn prepare<'a>(
        &'a mut self,
        _step: Prepare<'a, Self::In>,
        _ctx: &'a mut OperatorContext,
    ) -> BoxFuture<'a, Result<(), OperatorError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Processes one batch, appending results to `out`.
    fn process(
        &mut self,
        batch: Vec<Record<Self::In>>,
        ctx: &mut OperatorContext,
        out: &mut Vec<Record<Self::Out>>,
    ) -> Result<(), OperatorError>;

    /// The task's watermark advanced to `ctx.watermark`: fire event-time timers up to it.
    fn on_watermark(
        &mut self,
        _ctx: &mut OperatorContext,
        _out: &mut Vec<Record<Self::Out>>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Whether [`Operator::on_watermark`] left event-time timers due at the current watermark
    /// unfired (it fires them a prepared chunk at a time): the runtime then prepares and calls
    /// it again.
    fn timers_left(&self, _ctx: &OperatorContext) -> bool {
        false
    }

    /// The earliest processing time (ms) at which the operator wants
    /// [`Operator::on_processing_time`].
    fn next_processing_timer(&self) -> Option<i64> {
        None
    }

    /// Processing time reached `now_ms`: fire processing-time timers up to it.
    fn on_processing_time(
        &mut self,
        _now_ms: i64,
        _ctx: &mut OperatorContext,
        _out: &mut Vec<Record<Self::Out>>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The synchronous half of a snapshot for checkpoint `checkpoint_id`, taken while the task
    /// holds the barrier: freeze the state (cheaply) and return the work that serializes it,
    /// which runs in the background while processing goes on. `None`: no state.
    fn snapshot_state(
        &mut self,
        _checkpoint_id: u64,
        _ctx: &mut OperatorContext,
    ) -> Result<Option<AsyncSnapshot>, OperatorError> {
        Ok(None)
    }

    /// Restores the state of this subtask (called after `open`, before any record).
    fn restore_state(&mut self, state: &RestoredState, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        if state.is_empty() {
            return Ok(());
        }
        Err(OperatorError::user(format!(
            "operator '{}' has no state but the checkpoint holds state for it",
            ctx.vertex_name
        )))
    }

    /// Checkpoint `checkpoint_id` completed: every task has its snapshot stored.
    fn notify_checkpoint_complete(
        &mut self,
        _checkpoint_id: u64,
        _ctx: &mut OperatorContext,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// All input has arrived (after the final watermark); emit anything still held.
    fn end_of_input(
        &mut self,
        _ctx: &mut OperatorContext,
        _out: &mut Vec<Record<Self::Out>>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// The background half of a snapshot: serializes what the synchronous half froze.
pub type AsyncSnapshot = Box<dyn FnOnce(&mut StateWriter) -> Result<(), OperatorError> + Send>;

/// A batch with its type erased: always a `Vec<Record<T>>` for the edge's `T`.
pub(crate) type AnyBatch = Box<dyn Any + Send>;

/// [`Prepare`] with the batch's type erased.
pub(crate) enum ErasedPrepare<'a> {
    /// Mutable only because a shared reference to an erased batch is not `Send`.
    Batch(&'a mut AnyBatch),
    Watermark,
    ProcessingTime(i64),
    Snapshot(u64),
}

/// The runtime's view of an operator: batches in and out with types erased, so one task can
/// drive a chain of operators of different types.
pub(crate) trait ErasedOperator: Send {
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError>;
    fn wants_prepare(&self) -> bool;
    fn prepare<'a>(
        &'a mut self,
        step: ErasedPrepare<'a>,
        ctx: &'a mut OperatorContext,
    ) -> BoxFuture<'a, Result<(), OperatorError>>;
    fn process(&mut self, batch: AnyBatch, ctx: &mut OperatorContext) -> Result<Option<AnyBatch>, OperatorError>;
    fn on_watermark(&mut self, ctx: &mut OperatorContext) -> Result<Option<AnyBatch>, OperatorError>;
    fn timers_left(&self, ctx: &OperatorContext) -> bool;
    fn next_processing_timer(&self) -> Option<i64>;
    fn on_processing_time(&mut self, now_ms: i64, ctx: &mut OperatorContext)
        -> Result<Option<AnyBatch>, OperatorError>;
    fn end_of_input(&mut self, ctx: &mut OperatorContext) -> Result<Option<AnyBatch>, OperatorError>;
    fn snapshot_state(&mut self, id: u64, ctx: &mut OperatorContext) -> Result<Option<AsyncSnapshot>, OperatorError>;
    fn restore_state(&mut self, state: &RestoredState, ctx: &mut OperatorContext) -> Result<(), OperatorError>;
    fn notify_checkpoint_complete(&mut self, id: u64, ctx: &mut OperatorContext) -> Result<(), OperatorError>;
}

/// Adapts a typed [`Operator`] to [`ErasedOperator`], counting records in and out.
pub(crate) struct Erased<O: Operator>(pub(crate) O);

impl<O: Operator> Erased<O> {
    fn finish(out: Vec<Record<O::Out>>, ctx: &OperatorContext) -> Option<AnyBatch> {
        if out.is_empty() {
            None
        } else {
            ctx.metrics.add_out(out.len());
            Some(Box::new(out))
        }
    }
}

impl<O: Operator> ErasedOperator for Erased<O> {
    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.0.open(ctx)
    }

    fn wants_prepare(&self) -> bool {
        self.0.wants_prepare()
    }

    fn prepare<'a>(
        &'a mut self,
        step: ErasedPrepare<'a>,
        ctx: &'a mut OperatorContext,
    ) -> BoxFuture<'a, Result<(), OperatorError>> {
        let step = match step {
            ErasedPrepare::Batch(b) => {
                let batch = b.downcast_mut::<Vec<Record<O::In>>>().unwrap_or_else(|| {
                    panic!(
                        "operator '{}' prepared for a batch of the wrong type: the job graph wired mismatched types",
                        ctx.vertex_name
                    )
                });
                Prepare::Batch(batch.as_slice())
            }
            ErasedPrepare::Watermark => Prepare::Watermark,
            ErasedPrepare::ProcessingTime(t) => Prepare::ProcessingTime(t),
            ErasedPrepare::Snapshot(id) => Prepare::Snapshot(id),
        };
        self.0.prepare(step, ctx)
    }

    fn process(&mut self, batch: AnyBatch, ctx: &mut OperatorContext) -> Result<Option<AnyBatch>, OperatorError> {
        let batch = *batch.downcast::<Vec<Record<O::In>>>().unwrap_or_else(|_| {
            panic!(
                "operator '{}' got a batch of the wrong type: the job graph wired mismatched types",
                ctx.vertex_name
            )
        });
        ctx.metrics.add_in(batch.len());
        let mut out = Vec::with_capacity(batch.len());
        self.0.process(batch, ctx, &mut out)?;
        Ok(Self::finish(out, ctx))
    }

    fn on_watermark(&mut self, ctx: &mut OperatorContext) -> Result<Option<AnyBatch>, OperatorError> {
        let mut out = Vec::new();
        self.0.on_watermark(ctx, &mut out)?;
        Ok(Self::finish(out, ctx))
    }

    fn timers_left(&self, ctx: &OperatorContext) -> bool {
        self.0.timers_left(ctx)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.0.next_processing_timer()
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext,
    ) -> Result<Option<AnyBatch>, OperatorError> {
        let mut out = Vec::new();
        self.0.on_processing_time(now_ms, ctx, &mut out)?;
        Ok(Self::finish(out, ctx))
    }

    fn end_of_input(&mut self, ctx: &mut OperatorContext) -> Result<Option<AnyBatch>, OperatorError> {
        let mut out = Vec::new();
        self.0.end_of_input(ctx, &mut out)?;
        Ok(Self::finish(out, ctx))
    }

    fn snapshot_state(&mut self, id: u64, ctx: &mut OperatorContext) -> Result<Option<AsyncSnapshot>, OperatorError> {
        self.0.snapshot_state(id, ctx)
    }

    fn restore_state(&mut self, state: &RestoredState, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.0.restore_state(state, ctx)
    }

    fn notify_checkpoint_complete(&mut self, id: u64, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.0.notify_checkpoint_complete(id, ctx)
    }
}

/// Builds one operator instance per subtask.
pub(crate) type OperatorFactory = Arc<dyn Fn() -> Box<dyn ErasedOperator> + Send + Sync>;

/// Wraps a cloneable typed operator as a factory: each subtask gets a clone of the prototype.
pub(crate) fn factory_of<O: Operator + Clone>(op: O) -> OperatorFactory {
    // The mutex makes the prototype shareable without asking operators to be `Sync`.
    let proto = std::sync::Mutex::new(op);
    Arc::new(move || {
        let op = proto.locked().clone();
        Box::new(Erased(op)) as Box<dyn ErasedOperator>
    })
}
