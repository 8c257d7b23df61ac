use std::sync::Arc;

use crate::connectors::nexmark::rng::{mix, SplitMix64};
use crate::connectors::rate::RateLimiter;
use crate::data::Data;
use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::source::{Source, SourcePoll, SourceReader};

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
    next: u64,
    stride: u64,
    end: Option<u64>,
    rate: Option<RateLimiter>,
    f: GenFn<T>,
}

impl<T> std::fmt::Debug for GeneratorReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorReader").field("next", &self.next).finish()
    }
}

impl<T: Data> Source for GeneratorSource<T> {
    type Out = T;
    type Reader = GeneratorReader<T>;
    fn reader(&self, subtask: u32, parallelism: u32) -> Result<GeneratorReader<T>, OperatorError> {
        Ok(GeneratorReader {
            seed: self.seed,
            next: subtask as u64,
            stride: parallelism as u64,
            end: self.count,
            rate: self
                .per_second
                .map(|r| RateLimiter::new((r / parallelism as u64).max(1))),
            f: self.f.clone(),
        })
    }
}

impl<T: Data> SourceReader for GeneratorReader<T> {
    type Out = T;
    fn poll_batch(&mut self, max: usize, out: &mut Vec<T>, ctx: &OperatorContext) -> Result<SourcePoll, OperatorError> {
        let mut n = max;
        if let Some(rate) = &mut self.rate {
            match rate.allow(ctx.clock.now_ms(), max) {
                Ok(k) => n = k,
                Err(wake) => return Ok(SourcePoll::WaitUntil(wake)),
            }
        }
        let mut produced = 0;
        while produced < n && self.end.is_none_or(|e| self.next < e) {
            let mut rng = SplitMix64::new(mix(self.seed, self.next));
            out.push((self.f)(self.next, &mut rng));
            self.next += self.stride;
            produced += 1;
        }
        if let Some(rate) = &mut self.rate {
            rate.record(produced);
        }
        if self.end.is_some_and(|e| self.next >= e) {
            Ok(SourcePoll::Finished)
        } else {
            Ok(SourcePoll::Ready)
        }
    }

    fn snapshot_position(&self) -> Result<Vec<u8>, OperatorError> {
        crate::source::encode_position(&self.next)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        crate::source::restore_strided(&mut self.next, self.stride, position)
    }
}
