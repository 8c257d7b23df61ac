//! The reading pattern shared by generated sources: subtask `i` of `p` produces record numbers
//! `i, i + p, i + 2p, ...` up to an optional end, optionally paced, and resumes from the next
//! number it would have produced.
//!
//! Rescaling: a job restored at another parallelism hands every new subtask the positions of
//! all old subtasks. Everything below the lowest old position was read; above it, the numbers
//! the faster old subtasks had read are listed, and each new subtask skips those of its own
//! numbers. The skip list travels in the position until it is used up, so rescaling twice is
//! as exact as once.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

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
    /// Numbers of this subtask at or above `next` that were read before a rescale, ascending.
    skip: VecDeque<u64>,
}

/// A checkpointed position.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    next: u64,
    skip: Vec<u64>,
}

fn decode(bytes: &[u8]) -> Result<Position, OperatorError> {
    // Positions written before rescaling existed are a bare number.
    if bytes.len() == 8 {
        return Ok(Position {
            next: decode_position(bytes)?,
            skip: Vec::new(),
        });
    }
    decode_position(bytes)
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
            skip: VecDeque::new(),
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
            if self.skip.front() == Some(&self.next) {
                self.skip.pop_front();
            } else {
                produce(self.next);
                produced += 1;
            }
            self.next += self.stride;
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

    /// The position to checkpoint: the next record number (and any numbers above it that were
    /// read before a rescale).
    pub(crate) fn position(&self) -> Result<Vec<u8>, OperatorError> {
        encode_position(&Position {
            next: self.next,
            skip: self.skip.iter().copied().collect(),
        })
    }

    /// Continues from a checkpointed position, which must be one of this subtask's numbers.
    pub(crate) fn restore(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let restored = decode(position)?;
        if restored.next % self.stride != self.next % self.stride {
            return Err(OperatorError::user(format!(
                "source position {} belongs to another subtask (this one reads every {}th record from {})",
                restored.next,
                self.stride,
                self.next % self.stride
            )));
        }
        self.next = restored.next;
        self.skip = restored.skip.into();
        Ok(())
    }

    /// Continues after a run at parallelism `old_parallelism` whose subtask `i` was at
    /// `positions[i]`: this subtask reads its numbers that no old subtask had read.
    pub(crate) fn restore_rescaled(
        &mut self,
        old_parallelism: u32,
        positions: &[Vec<u8>],
    ) -> Result<(), OperatorError> {
        let old = u64::from(old_parallelism);
        if positions.len() as u64 != old {
            return Err(OperatorError::user(format!(
                "the source ran at parallelism {old_parallelism} but {} positions were restored",
                positions.len()
            )));
        }
        let mut olds = Vec::with_capacity(positions.len());
        for (i, p) in positions.iter().enumerate() {
            let pos = decode(p)?;
            if pos.next % old != i as u64 {
                return Err(OperatorError::user(format!(
                    "restored source position {} is not one of subtask {i}'s numbers at parallelism {old_parallelism}",
                    pos.next
                )));
            }
            olds.push(pos);
        }
        let low = olds.iter().map(|p| p.next).min().unwrap_or(0);
        let class = self.next % self.stride;
        // Everything below `low` was read; above it, what the faster old subtasks read.
        let mut read: Vec<u64> = Vec::new();
        for (i, p) in olds.iter().enumerate() {
            let first = low + (i as u64 + old - low % old) % old;
            read.extend(
                (first..p.next)
                    .step_by(old as usize)
                    .filter(|n| n % self.stride == class),
            );
            read.extend(p.skip.iter().copied().filter(|n| n % self.stride == class));
        }
        read.sort_unstable();
        read.dedup();
        self.next = low + (class + self.stride - low % self.stride) % self.stride;
        self.skip = read.into_iter().filter(|&n| n >= self.next).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Reads `n` numbers from each subtask of `subs` (fewer if finished), returning them.
    fn read(subs: &mut [Strided], per_subtask: &[usize]) -> Vec<u64> {
        let mut out = Vec::new();
        for (s, &n) in subs.iter_mut().zip(per_subtask) {
            let mut left = n;
            while left > 0 && s.end.is_none_or(|e| s.next < e) {
                if s.skip.front() == Some(&s.next) {
                    s.skip.pop_front();
                } else {
                    out.push(s.next);
                    left -= 1;
                }
                s.next += s.stride;
            }
        }
        out
    }

    fn rescale(subs: &[Strided], to: u32, end: u64) -> Vec<Strided> {
        let positions: Vec<Vec<u8>> = subs.iter().map(|s| s.position().unwrap()).collect();
        (0..to)
            .map(|j| {
                let mut s = Strided::new(j, to, Some(end), None);
                s.restore_rescaled(subs.len() as u32, &positions).unwrap();
                s
            })
            .collect()
    }

    #[test]
    fn rescaling_up_and_down_reads_every_number_exactly_once() {
        let end = 10_000;
        let mut subs: Vec<Strided> = (0..2).map(|i| Strided::new(i, 2, Some(end), None)).collect();
        // Uneven progress: subtask 0 far ahead of subtask 1.
        let mut seen = read(&mut subs, &[900, 37]);
        let mut subs = rescale(&subs, 3, end);
        seen.extend(read(&mut subs, &[100, 5, 260]));
        let mut subs = rescale(&subs, 1, end);
        seen.extend(read(&mut subs, &[200]));
        let mut subs = rescale(&subs, 4, end);
        seen.extend(read(&mut subs, &[usize::MAX, usize::MAX, usize::MAX, usize::MAX]));
        let unique: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "a number was read twice");
        assert_eq!(unique, (0..end).collect::<BTreeSet<u64>>(), "a number was never read");
    }

    #[test]
    fn positions_of_the_old_format_still_restore() {
        let mut s = Strided::new(1, 2, None, None);
        s.restore(&encode_position(&41u64).unwrap()).unwrap();
        assert_eq!(s.next, 41);
        assert!(
            s.restore(&encode_position(&40u64).unwrap()).is_err(),
            "40 is subtask 0's"
        );
    }
}
