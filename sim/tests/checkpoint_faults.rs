//! Exactly-once under storage and sink faults, in simulation: a keyed count checkpoints into a
//! store that fails puts and is slow, commits into a sink whose commits fail, and restarts on
//! failures; on every seed the committed output equals the failure-free result exactly.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{GeneratorSource, TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{FaultConfig, MemoryStore};
use sluice_core::{ExecutionConfig, StreamEnv, WatermarkStrategy};

const RECORDS: u64 = 3_000;
const KEYS: u64 = 11;

fn expected() -> Vec<(u64, u64)> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry(i % KEYS).or_default() += 1;
    }
    let mut out: Vec<(u64, u64)> = counts.iter().flat_map(|(k, n)| (1..=*n).map(move |c| (*k, c))).collect();
    out.sort();
    out
}

#[madsim::test]
async fn committed_output_is_exact_under_storage_and_commit_faults() {
    let seed = madsim::runtime::Handle::current().seed();
    // A swarm of fault rates drawn from the seed, not one fixed profile.
    let rate = |max: f64| (madsim::rand::random::<u32>() % 1000) as f64 / 1000.0 * max;
    let faults = FaultConfig {
        seed,
        put_error_rate: rate(0.2),
        put_ambiguous_rate: rate(0.1),
        get_error_rate: 0.0,
        list_error_rate: 0.0,
        delete_error_rate: rate(0.2),
        max_latency_ms: madsim::rand::random::<u64>() % 30,
    };
    let store = Arc::new(MemoryStore::with_faults(faults));
    let sink_store = TransactionalStore::new();
    sink_store.fail_next_commits((madsim::rand::random::<u32>() % 3) as u32);
    let env = StreamEnv::new("sim-count");
    env.set_parallelism(2);
    env.from_source(
        GeneratorSource::new(seed, Some(RECORDS), |i, _| i).with_records_per_second(5_000),
        WatermarkStrategy::no_watermarks(),
        "numbers",
    )
    .uid("numbers")
    .map(|i: u64| (i % KEYS, 1u64))
    .key_by(|r: &(u64, u64)| r.0)
    .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
    .uid("count")
    .sink_to_transactional(TransactionalStoreSink::new(sink_store.clone()), "sink")
    .uid("sink");
    let mut cfg = CheckpointConfig::new(Duration::from_millis(50), store.clone());
    cfg.tolerable_failures = 3;
    cfg.timeout = Duration::from_secs(2);
    let config = ExecutionConfig {
        batch_size: 32,
        channel_capacity: 2,
        checkpointing: Some(cfg),
        restart: Some(RestartStrategy::FixedDelay {
            attempts: 1000,
            delay: Duration::from_millis(20),
        }),
        clock: Some(sluice_core::Clock::starting_at(1_700_000_000_000)),
        ..ExecutionConfig::default()
    };
    let result = tokio::time::timeout(Duration::from_secs(600), env.execute(config))
        .await
        .expect("the job makes progress and ends within 10 simulated minutes")
        .expect("job finishes");
    let mut got = sink_store.committed();
    got.sort();
    let want = expected();
    assert_eq!(got.len(), want.len(), "seed {seed}: restarts {}", result.restarts);
    assert_eq!(got, want, "seed {seed}");
    println!(
        "seed {seed}: checkpoints {} restarts {} store faults {}",
        result.checkpoints_completed,
        result.restarts,
        store.injected_faults()
    );
}
