//! The network shuffle under the simulator: every keyed exchange crosses simulated TCP
//! (madsim's network), with checkpoints into a faulty store; committed output is exact.
#![cfg(madsim)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{FaultConfig, MemoryStore};
use sluice_core::{ExecutionConfig, StreamEnv};
use sluice_sim::keyed_count::KeyedCount;

#[madsim::test]
async fn keyed_count_over_simulated_tcp_is_exactly_once() {
    let seed = madsim::runtime::Handle::current().seed();
    let node = madsim::runtime::Handle::current()
        .create_node()
        .name("worker")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)))
        .build();
    let workload = KeyedCount {
        records: 2_000,
        keys: 7,
        seed,
        records_per_second: 4_000,
    };
    let sink_store = TransactionalStore::new();
    let committed = sink_store.clone();
    let result = node
        .spawn(async move {
            let store = Arc::new(MemoryStore::with_faults(FaultConfig {
                seed,
                put_error_rate: 0.1,
                max_latency_ms: 10,
                ..FaultConfig::default()
            }));
            let env = StreamEnv::new("sim-tcp-count");
            env.set_parallelism(2);
            workload.build(&env, TransactionalStoreSink::new(sink_store));
            let mut cfg = CheckpointConfig::new(Duration::from_millis(40), store);
            cfg.tolerable_failures = 5;
            // Lost acknowledgements (a fault point) must time out quickly.
            cfg.timeout = Duration::from_secs(1);
            let config = ExecutionConfig {
                transport: std::sync::Arc::new(sluice_core::cluster::LoopbackShuffle),
                batch_size: 16,
                channel_capacity: 2,
                checkpointing: Some(cfg),
                restart: Some(RestartStrategy::FixedDelay {
                    attempts: 100,
                    delay: Duration::from_millis(10),
                }),
                clock: Some(sluice_core::Clock::starting_at(1_700_000_000_000)),
                ..ExecutionConfig::default()
            };
            tokio::time::timeout(Duration::from_secs(300), env.execute(config)).await
        })
        .await
        .expect("node ran")
        .expect("finished within 5 simulated minutes")
        .expect("job finished");
    let violations = workload.check(&committed.committed());
    assert!(
        violations.is_clean(),
        "seed {seed}: {violations:?} ({} checkpoints, {} restarts)",
        result.checkpoints_completed,
        result.restarts
    );
}
