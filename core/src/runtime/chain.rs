//! The operators of one task, driven in order: the output of one is the input of the next.
//!
//! Before each synchronous call, an operator that asks for it
//! ([`ErasedOperator::wants_prepare`]) is prepared: it may wait there for the state the call
//! will read (tiered state fetched from the object store), so the call itself never waits.

use crate::data::EventTime;
use crate::error::OperatorError;
use crate::operator::{AnyBatch, ErasedOperator, ErasedPrepare, OperatorContext};

pub(crate) struct ChainOps {
    pub(crate) ops: Vec<(Box<dyn ErasedOperator>, OperatorContext)>,
}

/// Prepares `op` for `step`, if it wants that.
async fn prepare(
    op: &mut dyn ErasedOperator,
    ctx: &mut OperatorContext,
    step: ErasedPrepare<'_>,
) -> Result<(), OperatorError> {
    if op.wants_prepare() {
        op.prepare(step, ctx).await?;
    }
    Ok(())
}

/// Which per-operator progress call [`ChainOps::each`] makes.
#[derive(Clone, Copy)]
enum Progress {
    Watermark,
    ProcessingTime(i64),
    EndOfInput,
}

impl ChainOps {
    /// Runs `batch` through the operators from `start` on; returns what the last one emits.
    pub(crate) async fn push_from(&mut self, start: usize, batch: AnyBatch) -> Result<Option<AnyBatch>, OperatorError> {
        let mut cur = batch;
        for (op, ctx) in &mut self.ops[start..] {
            prepare(op.as_mut(), ctx, ErasedPrepare::Batch(&mut cur)).await?;
            match op.process(cur, ctx)? {
                Some(next) => cur = next,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Runs a progress call on each operator in chain order, pushing each operator's output
    /// down the rest of the chain, and collects what leaves the tail.
    async fn each(&mut self, progress: Progress) -> Result<Vec<AnyBatch>, OperatorError> {
        let mut tail_out = Vec::new();
        let mut i = 0;
        while i < self.ops.len() {
            let (op, ctx) = &mut self.ops[i];
            let out = match progress {
                Progress::Watermark => {
                    prepare(op.as_mut(), ctx, ErasedPrepare::Watermark).await?;
                    op.on_watermark(ctx)?
                }
                Progress::ProcessingTime(now_ms) => match op.next_processing_timer() {
                    Some(t) if t <= now_ms => {
                        prepare(op.as_mut(), ctx, ErasedPrepare::ProcessingTime(now_ms)).await?;
                        op.on_processing_time(now_ms, ctx)?
                    }
                    _ => None,
                },
                Progress::EndOfInput => op.end_of_input(ctx)?,
            };
            // An operator that fires its timers a chunk at a time is called until it is done.
            let again = matches!(progress, Progress::Watermark) && op.timers_left(ctx);
            if let Some(b) = out {
                if let Some(out) = Box::pin(self.push_from(i + 1, b)).await? {
                    tail_out.push(out);
                }
            }
            if !again {
                i += 1;
            }
        }
        Ok(tail_out)
    }

    /// The task's watermark advanced: every operator fires its event-time timers in turn.
    pub(crate) async fn watermark(&mut self, wm: EventTime) -> Result<Vec<AnyBatch>, OperatorError> {
        for (_, ctx) in &mut self.ops {
            debug_assert!(wm >= ctx.watermark, "watermark went back in {}", ctx.vertex_name);
            ctx.watermark = wm;
        }
        self.each(Progress::Watermark).await
    }

    pub(crate) async fn processing_time(&mut self, now_ms: i64) -> Result<Vec<AnyBatch>, OperatorError> {
        self.each(Progress::ProcessingTime(now_ms)).await
    }

    pub(crate) async fn end_of_input(&mut self) -> Result<Vec<AnyBatch>, OperatorError> {
        self.each(Progress::EndOfInput).await
    }

    /// Prepares every operator for a snapshot of checkpoint `id` (tiered state writes its
    /// memory table out, so the snapshot can name runs only).
    pub(crate) async fn prepare_snapshot(&mut self, id: u64) -> Result<(), OperatorError> {
        for (op, ctx) in &mut self.ops {
            prepare(op.as_mut(), ctx, ErasedPrepare::Snapshot(id)).await?;
        }
        Ok(())
    }

    pub(crate) fn next_processing_timer(&self) -> Option<i64> {
        self.ops.iter().filter_map(|(op, _)| op.next_processing_timer()).min()
    }
}
