//! The operators of one task, driven in order: the output of one is the input of the next.

use crate::data::EventTime;
use crate::error::OperatorError;
use crate::operator::{AnyBatch, ErasedOperator, OperatorContext};

pub(crate) struct ChainOps {
    pub(crate) ops: Vec<(Box<dyn ErasedOperator>, OperatorContext)>,
}

impl ChainOps {
    /// Runs `batch` through the operators from `start` on; returns what the last one emits.
    pub(crate) fn push_from(&mut self, start: usize, batch: AnyBatch) -> Result<Option<AnyBatch>, OperatorError> {
        let mut cur = batch;
        for (op, ctx) in &mut self.ops[start..] {
            match op.process(cur, ctx)? {
                Some(next) => cur = next,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Runs a per-operator hook in chain order, pushing each operator's output down the rest
    /// of the chain, and collects what leaves the tail.
    fn each(
        &mut self,
        mut hook: impl FnMut(&mut dyn ErasedOperator, &mut OperatorContext) -> Result<Option<AnyBatch>, OperatorError>,
    ) -> Result<Vec<AnyBatch>, OperatorError> {
        let mut tail_out = Vec::new();
        for i in 0..self.ops.len() {
            let (op, ctx) = &mut self.ops[i];
            if let Some(b) = hook(op.as_mut(), ctx)? {
                if let Some(out) = self.push_from(i + 1, b)? {
                    tail_out.push(out);
                }
            }
        }
        Ok(tail_out)
    }

    /// The task's watermark advanced: every operator fires its event-time timers in turn.
    pub(crate) fn watermark(&mut self, wm: EventTime) -> Result<Vec<AnyBatch>, OperatorError> {
        self.each(|op, ctx| {
            debug_assert!(wm >= ctx.watermark, "watermark went back in {}", ctx.vertex_name);
            ctx.watermark = wm;
            op.on_watermark(ctx)
        })
    }

    pub(crate) fn processing_time(&mut self, now_ms: i64) -> Result<Vec<AnyBatch>, OperatorError> {
        self.each(|op, ctx| match op.next_processing_timer() {
            Some(t) if t <= now_ms => op.on_processing_time(now_ms, ctx),
            _ => Ok(None),
        })
    }

    pub(crate) fn end_of_input(&mut self) -> Result<Vec<AnyBatch>, OperatorError> {
        self.each(|op, ctx| op.end_of_input(ctx))
    }

    pub(crate) fn next_processing_timer(&self) -> Option<i64> {
        self.ops.iter().filter_map(|(op, _)| op.next_processing_timer()).min()
    }
}
