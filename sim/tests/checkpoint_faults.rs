//! Exactly-once under storage and sink faults, in simulation: a keyed count checkpoints into a
//! store that fails puts and is slow, commits into a sink whose commits fail, and restarts on
//! failures; on every seed the committed output equals the failure-free result exactly.
#![cfg(madsim)]

use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{FaultConfig, MemoryStore};
use sluice_core::{ExecutionConfig, StreamEnv};
use sluice_sim::keyed_count::KeyedCount;

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
    let workload = KeyedCount {
        records: 3_000,
        keys: 11,
        seed,
        records_per_second: 5_000,
    };
    let env = StreamEnv::new("sim-count");
    env.set_parallelism(2);
    workload.build(&env, TransactionalStoreSink::new(sink_store.clone()));
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
    let violations = workload.check(&sink_store.committed());
    assert!(
        violations.is_clean(),
        "seed {seed}: {violations:?} after {} restarts",
        result.restarts
    );
    println!(
        "seed {seed}: checkpoints {} restarts {} store faults {}",
        result.checkpoints_completed,
        result.restarts,
        store.injected_faults()
    );
}
