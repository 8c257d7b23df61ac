//! The windowed-count workload and its oracle: records `0..n` at event time `i` ms, keyed by
//! `i % keys`, counted per key in sliding event-time windows (each record falls in several),
//! written through a two-phase-commit sink. The committed output must hold exactly one
//! `(key, window start, count)` per key and window that saw a record.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_core::connectors::GeneratorSource;
use sluice_core::{AggregateFunction, StreamEnv, TransactionalSink, WatermarkStrategy, WindowAssigner};

use crate::keyed_count::Violations;

/// Window size in ms.
const SIZE_MS: i64 = 300;
/// Window slide in ms: each record is in `SIZE_MS / SLIDE_MS` windows.
const SLIDE_MS: i64 = 100;

/// A windowed count over a replayable, paced source.
#[derive(Debug, Clone, Copy)]
pub struct WindowedCount {
    /// Records generated.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Generator seed.
    pub seed: u64,
    /// Source pace, records per second of (simulated) time.
    pub records_per_second: u64,
}

#[derive(Clone)]
struct Count;

impl AggregateFunction for Count {
    type In = (u64, i64);
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: (u64, i64)) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

impl WindowedCount {
    /// The failure-free committed output, sorted: computed window by window, apart from the
    /// engine's assigner.
    pub fn expected(&self) -> Vec<(u64, i64, u64)> {
        let mut counts: BTreeMap<(u64, i64), u64> = BTreeMap::new();
        for i in 0..self.records {
            let t = i as i64;
            // Every window [s, s + SIZE_MS) with s a multiple of SLIDE_MS that holds t.
            let mut s = t - t.rem_euclid(SLIDE_MS);
            while s > t - SIZE_MS {
                *counts.entry((i % self.keys, s)).or_default() += 1;
                s -= SLIDE_MS;
            }
        }
        counts.into_iter().map(|((k, s), c)| (k, s, c)).collect()
    }

    /// Adds the pipeline to `env`, ending in `sink`.
    pub fn build<S: TransactionalSink<In = (u64, i64, u64)>>(&self, env: &StreamEnv, sink: S) {
        let keys = self.keys;
        env.from_source(
            GeneratorSource::new(self.seed, Some(self.records), |i, _| i)
                .with_records_per_second(self.records_per_second),
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::ZERO)
                .with_timestamp_assigner(|i: &u64| *i as i64),
            "timed-numbers",
        )
        .uid("timed-numbers")
        .map(move |i: u64| (i % keys, i as i64))
        .key_by(|r: &(u64, i64)| r.0)
        .window(WindowAssigner::sliding(
            Duration::from_millis(SIZE_MS as u64),
            Duration::from_millis(SLIDE_MS as u64),
        ))
        .aggregate_with(Count, |k: &u64, w, c: u64| (*k, w.start, c))
        .uid("window-count")
        .sink_to_transactional(sink, "window-sink")
        .uid("window-sink");
    }

    /// Compares committed records with the oracle as multisets.
    pub fn check(&self, committed: &[(u64, i64, u64)]) -> Violations {
        Violations::between(&self.expected(), committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_counts_in_every_window_that_holds_it() {
        let w = WindowedCount {
            records: 4,
            keys: 2,
            seed: 0,
            records_per_second: 1,
        };
        // Key 0 at 0 and 2 ms, key 1 at 1 and 3 ms: each in the windows starting at -200,
        // -100 and 0.
        let want: Vec<(u64, i64, u64)> = [0, 1]
            .into_iter()
            .flat_map(|k| [-200, -100, 0].map(|s| (k, s, 2)))
            .collect();
        assert_eq!(w.expected(), want);
        let mut out = want.clone();
        assert!(w.check(&out).is_clean());
        out[0].2 = 3;
        assert_eq!(
            w.check(&out),
            Violations {
                lost: 1,
                duplicated: 0,
                spurious: 1
            }
        );
    }
}
