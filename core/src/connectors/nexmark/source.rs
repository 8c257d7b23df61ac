use crate::connectors::rate::RateLimiter;
use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::source::{Source, SourcePoll, SourceReader};

use super::{Event, NexmarkConfig, NexmarkGenerator};

/// A Nexmark event source: bounded (`num_events`) or unbounded, optionally paced to
/// `events_per_second` of processing time. Subtask `i` of `p` produces event numbers
/// `i, i + p, i + 2p, ...`, so the job sees exactly the same events at any parallelism.
///
/// Event time comes from the generator (`Event::timestamp_ms`); use a monotonous or bounded
/// watermark strategy with `|e: &Event| e.timestamp_ms()`.
#[derive(Debug, Clone)]
pub struct NexmarkSource {
    generator: NexmarkGenerator,
    num_events: Option<u64>,
    events_per_second: Option<u64>,
}

impl NexmarkSource {
    /// A source over `config`; `num_events: None` never ends.
    pub fn new(config: NexmarkConfig, num_events: Option<u64>) -> Result<Self, String> {
        Ok(NexmarkSource {
            generator: NexmarkGenerator::try_new(config)?,
            num_events,
            events_per_second: None,
        })
    }

    /// Paces the whole source (all subtasks together) to `rate` events per second.
    pub fn with_events_per_second(mut self, rate: u64) -> Self {
        self.events_per_second = Some(rate);
        self
    }

    /// The generator, for reference computations over the same events.
    pub fn generator(&self) -> &NexmarkGenerator {
        &self.generator
    }
}

/// One subtask of a [`NexmarkSource`].
#[derive(Debug)]
pub struct NexmarkReader {
    generator: NexmarkGenerator,
    next: u64,
    stride: u64,
    end: Option<u64>,
    rate: Option<RateLimiter>,
}

impl Source for NexmarkSource {
    type Out = Event;
    type Reader = NexmarkReader;

    fn reader(&self, subtask: u32, parallelism: u32) -> Result<NexmarkReader, OperatorError> {
        Ok(NexmarkReader {
            generator: self.generator.clone(),
            next: subtask as u64,
            stride: parallelism as u64,
            end: self.num_events,
            rate: self
                .events_per_second
                .map(|r| RateLimiter::new((r / parallelism as u64).max(1))),
        })
    }
}

impl SourceReader for NexmarkReader {
    type Out = Event;

    fn poll_batch(&mut self, max: usize, out: &mut Vec<Event>, ctx: &OperatorContext) -> Result<SourcePoll, OperatorError> {
        let mut n = max;
        if let Some(rate) = &mut self.rate {
            match rate.allow(ctx.clock.now_ms(), max) {
                Ok(k) => n = k,
                Err(wake) => return Ok(SourcePoll::WaitUntil(wake)),
            }
        }
        let mut produced = 0;
        while produced < n {
            if self.end.is_some_and(|e| self.next >= e) {
                break;
            }
            out.push(self.generator.event(self.next));
            self.next += self.stride;
            produced += 1;
        }
        if let Some(rate) = &mut self.rate {
            rate.record(produced);
        }
        if self.end.is_some_and(|e| self.next >= e) {
            return Ok(SourcePoll::Finished);
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_position(&self) -> Result<Vec<u8>, OperatorError> {
        crate::source::encode_position(&self.next)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        crate::source::restore_strided(&mut self.next, self.stride, position)
    }
}
