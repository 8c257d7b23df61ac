//! The keyed-count workload and its oracle: records `0..n` keyed by `i % keys`, counted with a
//! rolling reduce, written through a two-phase-commit sink. For a key seen `c` times the
//! committed output must hold exactly `(key, 1) ..= (key, c)`, once each.

use std::collections::BTreeMap;

use sluice_core::connectors::GeneratorSource;
use sluice_core::{StreamEnv, TransactionalSink, WatermarkStrategy};

/// A keyed count over a replayable, paced source.
#[derive(Debug, Clone, Copy)]
pub struct KeyedCount {
    /// Records generated.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Generator seed.
    pub seed: u64,
    /// Source pace, records per second of (simulated) time.
    pub records_per_second: u64,
}

/// How a run's committed output differs from the oracle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations {
    /// Expected records missing.
    pub lost: usize,
    /// Records committed more often than expected.
    pub duplicated: usize,
    /// Records that should not exist at all.
    pub spurious: usize,
}

impl Violations {
    /// No loss, no duplicate, nothing spurious.
    pub fn is_clean(&self) -> bool {
        *self == Violations::default()
    }

    /// How `committed` differs from `expected`, as multisets.
    pub fn between<T: Ord + Clone>(expected: &[T], committed: &[T]) -> Violations {
        let mut want: BTreeMap<T, i64> = BTreeMap::new();
        for r in expected {
            *want.entry(r.clone()).or_default() += 1;
        }
        let mut got: BTreeMap<T, i64> = BTreeMap::new();
        for r in committed {
            *got.entry(r.clone()).or_default() += 1;
        }
        let mut v = Violations::default();
        for (r, n) in &got {
            match want.get(r) {
                None => v.spurious += *n as usize,
                Some(w) if n > w => v.duplicated += (n - w) as usize,
                _ => {}
            }
        }
        for (r, w) in &want {
            let n = got.get(r).copied().unwrap_or(0);
            if n < *w {
                v.lost += (w - n) as usize;
            }
        }
        v
    }
}

impl KeyedCount {
    /// The failure-free committed output, sorted.
    pub fn expected(&self) -> Vec<(u64, u64)> {
        let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
        for i in 0..self.records {
            *counts.entry(i % self.keys).or_default() += 1;
        }
        counts
            .iter()
            .flat_map(|(k, n)| (1..=*n).map(move |c| (*k, c)))
            .collect()
    }

    /// Adds the pipeline to `env`, ending in `sink`.
    pub fn build<S: TransactionalSink<In = (u64, u64)>>(&self, env: &StreamEnv, sink: S) {
        let keys = self.keys;
        env.from_source(
            GeneratorSource::new(self.seed, Some(self.records), |i, _| i)
                .with_records_per_second(self.records_per_second),
            WatermarkStrategy::no_watermarks(),
            "numbers",
        )
        .uid("numbers")
        .map(move |i: u64| (i % keys, 1u64))
        .key_by(|r: &(u64, u64)| r.0)
        .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
        .uid("count")
        .sink_to_transactional(sink, "sink")
        .uid("sink");
    }

    /// Compares committed records with the oracle as multisets.
    pub fn check(&self, committed: &[(u64, u64)]) -> Violations {
        Violations::between(&self.expected(), committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_counts_each_kind_of_violation() {
        let w = KeyedCount {
            records: 6,
            keys: 2,
            seed: 0,
            records_per_second: 1,
        };
        let mut out = w.expected();
        assert!(w.check(&out).is_clean());
        out.pop();
        out.push((0, 1));
        out.push((9, 9));
        assert_eq!(
            w.check(&out),
            Violations {
                lost: 1,
                duplicated: 1,
                spurious: 1
            }
        );
    }
}
