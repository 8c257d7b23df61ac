//! The network shuffle: with every non-forward channel over a real loopback TCP connection
//! (batches encoded, framed, credit-controlled), jobs produce exactly what they produce in
//! process — including checkpoints with barrier alignment across the network and recovery
//! from failures with exactly-once output.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{CollectSink, GeneratorSource, TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::MemoryStore;
use sluice_core::{AggregateFunction, ExecutionConfig, StreamEnv, WatermarkStrategy, WindowAssigner};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Clone)]
struct Sum;

impl AggregateFunction for Sum {
    type In = (u64, u64, i64);
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, v: (u64, u64, i64)) {
        *acc += v.1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

fn windowed_sums(over_tcp: bool) -> Vec<(u64, i64, u64)> {
    let env = StreamEnv::new("sums");
    env.set_parallelism(3);
    let sink = CollectSink::new();
    env.from_source(
        GeneratorSource::new(3, Some(30_000), |i, rng| {
            (
                rng.next_below(50),
                rng.next_below(100),
                i as i64 + rng.next_below(40) as i64,
            )
        }),
        WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(50))
            .with_timestamp_assigner(|r: &(u64, u64, i64)| r.2),
        "gen",
    )
    .key_by(|r: &(u64, u64, i64)| r.0)
    .window(WindowAssigner::tumbling(Duration::from_millis(500)))
    .aggregate_with(Sum, |k: &u64, w, s: u64| (*k, w.start, s))
    .sink_to(sink.clone(), "collect");
    let config = ExecutionConfig {
        transport: if over_tcp {
            std::sync::Arc::new(sluice_core::cluster::LoopbackShuffle)
        } else {
            std::sync::Arc::new(sluice_core::runtime::transport::InProcess)
        },
        batch_size: 100,
        ..ExecutionConfig::default()
    };
    let r = rt().block_on(env.execute(config)).unwrap();
    assert_eq!(r.records_in, 30_000);
    let mut v = sink.values();
    v.sort();
    v
}

#[test]
fn windowed_job_gives_the_same_result_over_tcp_as_in_process() {
    let local = windowed_sums(false);
    assert!(local.len() > 100);
    assert_eq!(windowed_sums(true), local);
}

#[test]
fn checkpoints_and_recovery_are_exactly_once_over_tcp() {
    const N: u64 = 8_000;
    let store = TransactionalStore::new();
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    let env = StreamEnv::new("count-over-tcp");
    env.set_parallelism(2);
    env.from_source(
        GeneratorSource::new(1, Some(N), |i, _| i).with_records_per_second(20_000),
        WatermarkStrategy::no_watermarks(),
        "numbers",
    )
    .uid("numbers")
    .map(move |i: u64| {
        if i == N / 2 && !f.swap(true, Ordering::SeqCst) {
            panic!("injected failure at record {i}");
        }
        (i % 13, 1u64)
    })
    .key_by(|r: &(u64, u64)| r.0)
    .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
    .uid("count")
    .sink_to_transactional(TransactionalStoreSink::new(store.clone()), "sink")
    .uid("sink");
    let config = ExecutionConfig {
        transport: std::sync::Arc::new(sluice_core::cluster::LoopbackShuffle),
        batch_size: 50,
        checkpointing: Some(CheckpointConfig::new(
            Duration::from_millis(20),
            Arc::new(MemoryStore::new()),
        )),
        restart: Some(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(5),
        }),
        ..ExecutionConfig::default()
    };
    let r = rt().block_on(env.execute(config)).unwrap();
    assert_eq!(r.restarts, 1);
    assert!(r.checkpoints_completed >= 2, "{} checkpoints", r.checkpoints_completed);
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..N {
        *counts.entry(i % 13).or_default() += 1;
    }
    let mut want: Vec<(u64, u64)> = counts
        .iter()
        .flat_map(|(k, n)| (1..=*n).map(move |c| (*k, c)))
        .collect();
    want.sort();
    let mut got = store.committed();
    got.sort();
    assert_eq!(got, want);
}
