//! Helpers shared by the integration tests of `sluice-core`: a runtime, job runners, sources
//! of timestamped events, a sum aggregate, and result accessors.

#![allow(dead_code)]

use std::time::Duration;

use sluice_core::connectors::{CollectSink, VecSource};
use sluice_core::{AggregateFunction, Data, DataStream, ExecutionConfig, JobResult, StreamEnv, WatermarkStrategy};

/// A test event: (key, event time ms, value).
pub(crate) type Ev = (char, i64, i64);

/// The runtime every test runs its jobs on.
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `env`'s job to its end with `config`; panics if it fails.
pub(crate) fn run_with(env: &StreamEnv, config: ExecutionConfig) -> JobResult {
    rt().block_on(env.execute(config)).expect("job failed")
}

/// Runs `env`'s job to its end with the default config.
pub(crate) fn run(env: &StreamEnv) -> JobResult {
    run_with(env, ExecutionConfig::default())
}

/// One record per batch and a watermark after every batch: event time advances between records.
pub(crate) fn stepwise() -> ExecutionConfig {
    ExecutionConfig {
        batch_size: 1,
        watermark_interval_ms: 0,
        ..Default::default()
    }
}

pub(crate) fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The sink's (value, event time) pairs, sorted.
pub(crate) fn timed<T: Data + Ord>(sink: &CollectSink<T>) -> Vec<(T, i64)> {
    sorted(sink.records().into_iter().map(|r| (r.value, r.ts.millis())).collect())
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A source of `items` stamped with their event time, out of order by at most `bound_ms`.
pub(crate) fn events(env: &StreamEnv, items: Vec<Ev>, bound_ms: u64) -> DataStream<Ev> {
    let wm = WatermarkStrategy::for_bounded_out_of_orderness(ms(bound_ms)).with_timestamp_assigner(|e: &Ev| e.1);
    env.from_source(VecSource::new(items), wm, "events")
}

/// A source of `items` without event time.
pub(crate) fn plain<T: Data>(env: &StreamEnv, items: Vec<T>, name: &str) -> DataStream<T> {
    env.from_source(VecSource::new(items), WatermarkStrategy::no_watermarks(), name)
}

/// The late records dropped by the vertex called `vertex`.
pub(crate) fn late_dropped(r: &JobResult, vertex: &str) -> u64 {
    r.vertices
        .iter()
        .find(|v| v.name == vertex)
        .expect("no such vertex")
        .late_records_dropped
}

/// Sums the values of events.
#[derive(Clone)]
pub(crate) struct Sum;

impl AggregateFunction for Sum {
    type In = Ev;
    type Acc = i64;
    type Out = i64;
    fn create_accumulator(&self) -> i64 {
        0
    }
    fn add(&self, acc: &mut i64, v: Ev) {
        *acc += v.2;
    }
    fn get_result(&self, acc: &i64) -> i64 {
        *acc
    }
    fn merge(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}
