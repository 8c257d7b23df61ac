//! The reading pattern shared by generated sources: subtask `i` of `p` produces record numbers
//! `i, i + p, i + 2p, ...` up to an optional end, optionally paced, and resumes from the next
//! number it would have produced.

use crate::connectors::rate::RateLimiter;
use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::source::{decode_position, encode_position, SourcePoll};

/// Which record numbers a subtask produces, and how fast.
#[derive(Debug, Clone)]
pub(crate) struct Strided {
    next: u64,
    stride: u64,
    end: Option<u64>,
    rate: Option<RateLimiter>,
}

impl Strided {
    /// Subtask `subtask` of `parallelism`, up to `end`, the whole source paced to
    /// `per_second` records per second.
    pub(crate) fn new(subtask: u32, parallelism: u32, end: Option<u64>, per_second: Option<u64>) -> Self {
        Strided {
            next: subtask as u64,
            stride: parallelism as u64,
            end,
            rate: per_second.map(|r| RateLimiter::new((r / parallelism as u64).max(1))),
        }
    }

    /// Calls `produce` with up to `max` record numbers that may go now.
    pub(crate) fn poll(&mut self, max: usize, ctx: &OperatorContext, mut produce: impl FnMut(u64)) -> SourcePoll {
        let mut n = max;
        if let Some(rate) = &mut self.rate {
            match rate.allow(ctx.clock.now_ms(), max) {
                Ok(k) => n = k,
                Err(wake) => return SourcePoll::WaitUntil(wake),
            }
        }
        let mut produced = 0;
        while produced < n && self.end.is_none_or(|e| self.next < e) {
            produce(self.next);
            self.next += self.stride;
            produced += 1;
        }
        if let Some(rate) = &mut self.rate {
            rate.record(produced);
        }
        if self.end.is_some_and(|e| self.next >= e) {
            SourcePoll::Finished
        } else {
            SourcePoll::Ready
        }
    }

    /// The position to checkpoint: the next record number.
    pub(crate) fn position(&self) -> Result<Vec<u8>, OperatorError> {
        encode_position(&self.next)
    }

    /// Continues from a checkpointed position, which must be one of this subtask's numbers.
    pub(crate) fn restore(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let restored: u64 = decode_position(position)?;
        if restored % self.stride != self.next % self.stride {
            return Err(OperatorError::user(format!(
                "source position {restored} belongs to another subtask (this one reads every {}th record from {})",
                self.stride,
                self.next % self.stride
            )));
        }
        self.next = restored;
        Ok(())
    }
}
