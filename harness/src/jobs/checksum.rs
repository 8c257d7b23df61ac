//! A sink that reduces the results to one checksum, so two runs (at another parallelism, with
//! or without checkpoints, or after a change to the engine) can be compared by one number.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_core::{Data, OperatorError, Record, Sink, SinkWriter};

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Adds the hash of each result's text (as the job prints it) to a shared sum: the sum does
/// not depend on the order or the subtask results arrive in, only on the multiset of results.
pub(crate) struct ChecksumSink<T> {
    sum: Arc<AtomicU64>,
    format: fn(&T) -> String,
}

impl<T> ChecksumSink<T> {
    pub(crate) fn new(sum: Arc<AtomicU64>, format: fn(&T) -> String) -> Self {
        ChecksumSink { sum, format }
    }
}

pub(crate) struct ChecksumWriter<T> {
    sum: Arc<AtomicU64>,
    format: fn(&T) -> String,
}

impl<T: Data> Sink for ChecksumSink<T> {
    type In = T;
    type Writer = ChecksumWriter<T>;

    fn writer(&self, _subtask: u32, _parallelism: u32) -> Result<ChecksumWriter<T>, OperatorError> {
        Ok(ChecksumWriter {
            sum: self.sum.clone(),
            format: self.format,
        })
    }
}

impl<T: Data> SinkWriter for ChecksumWriter<T> {
    type In = T;

    fn write(&mut self, batch: Vec<Record<T>>) -> Result<(), OperatorError> {
        let part = batch.iter().fold(0u64, |acc, r| {
            acc.wrapping_add(fnv1a((self.format)(&r.value).as_bytes()))
        });
        self.sum.fetch_add(part, Ordering::Relaxed);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_ignores_order_and_batching() {
        let one = Arc::new(AtomicU64::new(0));
        let two = Arc::new(AtomicU64::new(0));
        let f: fn(&u64) -> String = |v| v.to_string();
        let mut a = ChecksumSink::new(one.clone(), f).writer(0, 1).unwrap();
        a.write(
            (1..=100u64)
                .map(|v| Record::new(v, sluice_core::EventTime(0)))
                .collect(),
        )
        .unwrap();
        let mut b = ChecksumSink::new(two.clone(), f).writer(0, 2).unwrap();
        b.write(
            (51..=100u64)
                .rev()
                .map(|v| Record::new(v, sluice_core::EventTime(0)))
                .collect(),
        )
        .unwrap();
        b.write((1..=50u64).map(|v| Record::new(v, sluice_core::EventTime(0))).collect())
            .unwrap();
        assert_eq!(one.load(Ordering::Relaxed), two.load(Ordering::Relaxed));
        assert_ne!(one.load(Ordering::Relaxed), 0);
    }
}
