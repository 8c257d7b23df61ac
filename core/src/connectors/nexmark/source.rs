use crate::connectors::strided::Strided;
use crate::error::{InvalidSetting, OperatorError};
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
    pub fn new(config: NexmarkConfig, num_events: Option<u64>) -> Result<Self, InvalidSetting> {
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
    numbers: Strided,
}

impl Source for NexmarkSource {
    type Out = Event;
    type Reader = NexmarkReader;

    fn reader(&self, subtask: u32, parallelism: u32) -> Result<NexmarkReader, OperatorError> {
        Ok(NexmarkReader {
            generator: self.generator.clone(),
            numbers: Strided::new(subtask, parallelism, self.num_events, self.events_per_second),
        })
    }
}

impl SourceReader for NexmarkReader {
    type Out = Event;

    fn poll_batch(
        &mut self,
        max: usize,
        out: &mut Vec<Event>,
        ctx: &OperatorContext,
    ) -> Result<SourcePoll, OperatorError> {
        let generator = &self.generator;
        Ok(self.numbers.poll(max, ctx, |i| out.push(generator.event(i))))
    }

    fn snapshot_position(&self) -> Result<Vec<u8>, OperatorError> {
        self.numbers.position()
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        self.numbers.restore(position)
    }

    fn restore_rescaled(&mut self, old_parallelism: u32, positions: &[Vec<u8>]) -> Result<(), OperatorError> {
        self.numbers.restore_rescaled(old_parallelism, positions)
    }
}
