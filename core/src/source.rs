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
pub trait SourceReader: Send + Sync + 'static {
    /// Record type produced.
    type Out: Data;

    /// Produces up to `max` records into `out`.
    fn poll_batch(
        &mut self,
        max: usize,
        out: &mut Vec<Self::Out>,
        ctx: &OperatorContext,
    ) -> Result<SourcePoll, OperatorError>;

    /// The reader's position, stored in checkpoints so that a restored job reads on from
    /// exactly there. The default refuses: a source that cannot replay from a position cannot
    /// take part in checkpoints.
    fn snapshot_position(&self) -> Result<Vec<u8>, OperatorError> {
        Err(OperatorError::user(
            "this source cannot be checkpointed: it does not implement snapshot_position",
        ))
    }

    /// Continues from a position taken by [`SourceReader::snapshot_position`].
    fn restore_position(&mut self, _position: &[u8]) -> Result<(), OperatorError> {
        Err(OperatorError::user(
            "this source cannot be restored: it does not implement restore_position",
        ))
    }

    /// Continues after a run at parallelism `old_parallelism` (rescaling): `positions[i]` is
    /// what old subtask `i` returned from [`SourceReader::snapshot_position`]. Each new subtask
    /// gets all of them and must read exactly its share of what none of them had read. The
    /// default refuses.
    fn restore_rescaled(&mut self, old_parallelism: u32, _positions: &[Vec<u8>]) -> Result<(), OperatorError> {
        Err(OperatorError::user(format!(
            "this source cannot change its parallelism (it ran at {old_parallelism}): it does not implement restore_rescaled"
        )))
    }
}

/// Encodes a position with bincode (for [`SourceReader::snapshot_position`]).
pub fn encode_position<T: serde::Serialize>(p: &T) -> Result<Vec<u8>, OperatorError> {
    bincode::serialize(p).map_err(|e| OperatorError::user(format!("cannot encode source position: {e}")))
}

/// Decodes a position encoded by [`encode_position`].
pub fn decode_position<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, OperatorError> {
    bincode::deserialize(b).map_err(|e| OperatorError::user(format!("cannot decode source position: {e}")))
}

/// The runtime's view of a source subtask with its watermark strategy applied.
pub(crate) trait ErasedSource: Send + Sync {
    /// Polls up to `max` records; returns the stamped batch (if any) and the poll state.
    fn poll(&mut self, max: usize, ctx: &OperatorContext) -> Result<(Option<AnyBatch>, SourcePoll), OperatorError>;
    /// The watermark implied by everything produced so far.
    fn watermark(&self) -> EventTime;
    /// The idle timeout, if the strategy has one.
    fn idle_timeout_ms(&self) -> Option<i64>;
    /// The position and watermark state to checkpoint.
    fn snapshot(&self) -> Result<Vec<u8>, OperatorError>;
    /// Restores what [`ErasedSource::snapshot`] returned.
    fn restore(&mut self, state: &[u8]) -> Result<(), OperatorError>;
    /// Restores what every subtask of a run at another parallelism returned (in subtask order).
    fn restore_rescaled(&mut self, old_parallelism: u32, states: &[Vec<u8>]) -> Result<(), OperatorError>;
}

pub(crate) type SourceFactory = Arc<dyn Fn(u32, u32) -> Result<Box<dyn ErasedSource>, OperatorError> + Send + Sync>;

struct StampedSource<R: SourceReader> {
    reader: R,
    strategy: WatermarkStrategy<R::Out>,
    max_ts: i64,
    scratch: Vec<R::Out>,
}

impl<R: SourceReader> ErasedSource for StampedSource<R> {
    fn poll(&mut self, max: usize, ctx: &OperatorContext) -> Result<(Option<AnyBatch>, SourcePoll), OperatorError> {
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

    fn snapshot(&self) -> Result<Vec<u8>, OperatorError> {
        // The highest timestamp seen is part of the position: without it a restored source
        // would emit lower watermarks than the original run did at the same point.
        encode_position(&(self.max_ts, self.reader.snapshot_position()?))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        let (max_ts, position): (i64, Vec<u8>) = decode_position(state)?;
        self.max_ts = max_ts;
        self.reader.restore_position(&position)
    }

    fn restore_rescaled(&mut self, old_parallelism: u32, states: &[Vec<u8>]) -> Result<(), OperatorError> {
        let mut positions = Vec::with_capacity(states.len());
        // The lowest highest-timestamp: a new subtask may read what the slowest old one had
        // not, so its watermark must not start above that.
        let mut max_ts = i64::MAX;
        for s in states {
            let (ts, position): (i64, Vec<u8>) = decode_position(s)?;
            max_ts = max_ts.min(ts);
            positions.push(position);
        }
        self.max_ts = if states.is_empty() { i64::MIN } else { max_ts };
        self.reader.restore_rescaled(old_parallelism, &positions)
    }
}

pub(crate) fn source_factory<S: Source>(source: S, strategy: WatermarkStrategy<S::Out>) -> SourceFactory {
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
