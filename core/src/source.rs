//! Sources: the readers that bring records into a job.

use std::sync::Arc;

use crate::data::{Data, EventTime, Record};
use crate::error::OperatorError;
use crate::operator::{AnyBatch, OperatorContext};
use crate::watermark::WatermarkStrategy;

/// What a source reader's poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePoll {
    /// Records may have been produced; poll again.
    Ready,
    /// Nothing to read before processing time `wake_at_ms` (rate limits, empty input).
    WaitUntil(i64),
    /// The input is exhausted (a bounded source); the records produced by this poll are the
    /// last ones.
    Finished,
}

/// A source: one reader per parallel subtask.
pub trait Source: Send + Sync + 'static {
    /// Record type produced.
    type Out: Data;
    /// The reader of one subtask.
    type Reader: SourceReader<Out = Self::Out>;

    /// The reader for subtask `subtask` of `parallelism`; each subtask reads its own share.
    fn reader(&self, subtask: u32, parallelism: u32) -> Result<Self::Reader, OperatorError>;
}

/// Reads one subtask's share of a source.
pub trait SourceReader: Send + 'static {
    /// Record type produced.
    type Out: Data;

    /// Produces up to `max` records into `out`.
    fn poll_batch(
        &mut self,
        max: usize,
        out: &mut Vec<Self::Out>,
        ctx: &OperatorContext,
    ) -> Result<SourcePoll, OperatorError>;
}

/// The runtime's view of a source subtask with its watermark strategy applied.
pub(crate) trait ErasedSource: Send {
    /// Polls up to `max` records; returns the stamped batch (if any) and the poll state.
    fn poll(
        &mut self,
        max: usize,
        ctx: &OperatorContext,
    ) -> Result<(Option<AnyBatch>, SourcePoll), OperatorError>;
    /// The watermark implied by everything produced so far.
    fn watermark(&self) -> EventTime;
    /// The idle timeout, if the strategy has one.
    fn idle_timeout_ms(&self) -> Option<i64>;
}

pub(crate) type SourceFactory =
    Arc<dyn Fn(u32, u32) -> Result<Box<dyn ErasedSource>, OperatorError> + Send + Sync>;

struct StampedSource<R: SourceReader> {
    reader: R,
    strategy: WatermarkStrategy<R::Out>,
    max_ts: i64,
    scratch: Vec<R::Out>,
}

impl<R: SourceReader> ErasedSource for StampedSource<R> {
    fn poll(
        &mut self,
        max: usize,
        ctx: &OperatorContext,
    ) -> Result<(Option<AnyBatch>, SourcePoll), OperatorError> {
        self.scratch.clear();
        let state = self.reader.poll_batch(max, &mut self.scratch, ctx)?;
        if self.scratch.is_empty() {
            return Ok((None, state));
        }
        let mut batch = Vec::with_capacity(self.scratch.len());
        match &self.strategy.timestamps {
            Some(ts_of) => {
                for v in self.scratch.drain(..) {
                    let ts = ts_of(&v);
                    self.max_ts = self.max_ts.max(ts);
                    batch.push(Record::new(v, EventTime(ts)));
                }
            }
            None => batch.extend(self.scratch.drain(..).map(|v| Record::new(v, EventTime::MIN))),
        }
        ctx.metrics.add_out(batch.len());
        Ok((Some(Box::new(batch)), state))
    }

    fn watermark(&self) -> EventTime {
        if !self.strategy.emits_watermarks || self.max_ts == i64::MIN {
            return EventTime::MIN;
        }
        EventTime(
            self.max_ts
                .saturating_sub(self.strategy.max_out_of_orderness_ms)
                .saturating_sub(1),
        )
    }

    fn idle_timeout_ms(&self) -> Option<i64> {
        self.strategy.idle_timeout_ms
    }
}

pub(crate) fn source_factory<S: Source>(
    source: S,
    strategy: WatermarkStrategy<S::Out>,
) -> SourceFactory {
    let source = Arc::new(source);
    Arc::new(move |subtask, parallelism| {
        let reader = source.reader(subtask, parallelism)?;
        Ok(Box::new(StampedSource {
            reader,
            strategy: strategy.clone(),
            max_ts: i64::MIN,
            scratch: Vec::new(),
        }) as Box<dyn ErasedSource>)
    })
}
