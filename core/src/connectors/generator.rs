use std::sync::Arc;

use crate::connectors::strided::Strided;
use crate::data::Data;
use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::source::{Source, SourcePoll, SourceReader};
use sluice_state::rng::{mix, SplitMix64};

type GenFn<T> = Arc<dyn Fn(u64, &mut SplitMix64) -> T + Send + Sync>;

/// A seeded, deterministic data generator: record `i` is `f(i, rng)` where `rng` is seeded from
/// `(seed, i)`, so the same seed gives the same records at any parallelism and from any
/// starting point. Bounded with `count`, or unbounded; optionally paced.
///
/// ```
/// use sluice_core::connectors::GeneratorSource;
/// let src = GeneratorSource::new(7, Some(1000), |i, rng| (i, rng.next_below(10)));
/// # let _ = src;
/// ```
pub struct GeneratorSource<T> {
    seed: u64,
    count: Option<u64>,
    per_second: Option<u64>,
    f: GenFn<T>,
}

impl<T> std::fmt::Debug for GeneratorSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorSource")
            .field("seed", &self.seed)
            .field("count", &self.count)
            .finish()
    }
}

impl<T: Data> GeneratorSource<T> {
    /// A generator of `count` records (`None`: endless) made by `f`.
    pub fn new(seed: u64, count: Option<u64>, f: impl Fn(u64, &mut SplitMix64) -> T + Send + Sync + 'static) -> Self {
        GeneratorSource {
            seed,
            count,
            per_second: None,
            f: Arc::new(f),
        }
    }

    /// Paces the whole source to `rate` records per second.
    pub fn with_records_per_second(mut self, rate: u64) -> Self {
        self.per_second = Some(rate);
        self
    }
}

/// One subtask of a [`GeneratorSource`].
pub struct GeneratorReader<T> {
    seed: u64,
    numbers: Strided,
    f: GenFn<T>,
}

impl<T> std::fmt::Debug for GeneratorReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorReader")
            .field("numbers", &self.numbers)
            .finish()
    }
}

impl<T: Data> Source for GeneratorSource<T> {
    type Out = T;
    type Reader = GeneratorReader<T>;
    fn reader(&self, subtask: u32, parallelism: u32) -> Result<GeneratorReader<T>, OperatorError> {
        Ok(GeneratorReader {
            seed: self.seed,
            numbers: Strided::new(subtask, parallelism, self.count, self.per_second),
            f: self.f.clone(),
        })
    }
}

impl<T: Data> SourceReader for GeneratorReader<T> {
    type Out = T;
    fn poll_batch(&mut self, max: usize, out: &mut Vec<T>, ctx: &OperatorContext) -> Result<SourcePoll, OperatorError> {
        let (seed, f) = (self.seed, &self.f);
        Ok(self.numbers.poll(max, ctx, |i| {
            let mut rng = SplitMix64::new(mix(seed, i));
            out.push(f(i, &mut rng));
        }))
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
