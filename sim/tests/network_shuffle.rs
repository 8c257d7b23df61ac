//! The network shuffle under the simulator: every keyed exchange crosses simulated TCP
//! (madsim's network), with checkpoints into a faulty store; committed output is exact.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{GeneratorSource, TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{FaultConfig, MemoryStore};
use sluice_core::{ExecutionConfig, StreamEnv, WatermarkStrategy};

const RECORDS: u64 = 2_000;

#[madsim::test]
async fn keyed_count_over_simulated_tcp_is_exactly_once() {
    let seed = madsim::runtime::Handle::current().seed();
    let node = madsim::runtime::Handle::current()
        .create_node()
        .name("worker")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)))
        .build();
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
            env.from_source(
                GeneratorSource::new(seed, Some(RECORDS), |i, _| i).with_records_per_second(4_000),
                WatermarkStrategy::no_watermarks(),
                "numbers",
            )
            .uid("numbers")
            .map(|i: u64| (i % 7, 1u64))
            .key_by(|r: &(u64, u64)| r.0)
            .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
            .uid("count")
            .sink_to_transactional(TransactionalStoreSink::new(sink_store), "sink")
            .uid("sink");
            let mut cfg = CheckpointConfig::new(Duration::from_millis(40), store);
            cfg.tolerable_failures = 5;
            let config = ExecutionConfig {
                shuffle_over_tcp: true,
                batch_size: 16,
                channel_capacity: 2,
                checkpointing: Some(cfg),
                restart: Some(RestartStrategy::FixedDelay { attempts: 100, delay: Duration::from_millis(10) }),
                clock: Some(sluice_core::Clock::starting_at(1_700_000_000_000)),
                ..ExecutionConfig::default()
            };
            tokio::time::timeout(Duration::from_secs(300), env.execute(config)).await
        })
        .await
        .expect("node ran")
        .expect("finished within 5 simulated minutes")
        .expect("job finished");
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry(i % 7).or_default() += 1;
    }
    let mut want: Vec<(u64, u64)> = counts.iter().flat_map(|(k, n)| (1..=*n).map(move |c| (*k, c))).collect();
    want.sort();
    let mut got = committed.committed();
    got.sort();
    assert_eq!(got, want, "seed {seed}, {} checkpoints, {} restarts", result.checkpoints_completed, result.restarts);
}
