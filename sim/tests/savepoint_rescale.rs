//! Savepoints under faults, in simulation: a keyed count runs at a parallelism drawn from the
//! seed with failing checkpoint writes and sink commits, is stopped with a savepoint (into a
//! store that fails too, so the savepoint is retried) at a random moment, and resumes from it
//! at another drawn parallelism under the same faults. The committed output must equal the
//! failure-free result exactly.
#![cfg(madsim)]

use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{BlobStore, FaultConfig, MemoryStore, PrefixedStore};
use sluice_core::{ExecutionConfig, SavepointRestore, StreamEnv};
use sluice_sim::keyed_count::KeyedCount;

fn config(seed: u64, store: Arc<MemoryStore>, from: Option<SavepointRestore>) -> ExecutionConfig {
    let _ = seed;
    let mut ck = CheckpointConfig::new(Duration::from_millis(50), store);
    ck.tolerable_failures = 3;
    ck.timeout = Duration::from_secs(2);
    ExecutionConfig {
        batch_size: 32,
        channel_capacity: 2,
        checkpointing: Some(ck),
        restart: Some(RestartStrategy::FixedDelay {
            attempts: 1000,
            delay: Duration::from_millis(20),
        }),
        clock: Some(sluice_core::Clock::starting_at(1_700_000_000_000)),
        from_savepoint: from,
        ..ExecutionConfig::default()
    }
}

fn faults(seed: u64) -> FaultConfig {
    let rate = |max: f64| (madsim::rand::random::<u32>() % 1000) as f64 / 1000.0 * max;
    FaultConfig {
        seed,
        put_error_rate: rate(0.15),
        put_ambiguous_rate: rate(0.05),
        get_error_rate: 0.0,
        list_error_rate: 0.0,
        delete_error_rate: rate(0.1),
        max_latency_ms: madsim::rand::random::<u64>() % 20,
    }
}

#[madsim::test]
async fn savepoint_and_rescale_under_faults_is_exact() {
    let seed = madsim::runtime::Handle::current().seed();
    let p1 = 1 + madsim::rand::random::<u32>() % 3;
    let p2 = 1 + madsim::rand::random::<u32>() % 4;
    let workload = KeyedCount {
        records: 3_000,
        keys: 11,
        seed,
        records_per_second: 1_000,
    };
    let sink = TransactionalStore::new();
    sink.fail_next_commits(madsim::rand::random::<u32>() % 3);
    let savepoints = Arc::new(MemoryStore::with_faults(faults(seed ^ 1)));

    let env = StreamEnv::new("sim-savepoint");
    env.set_parallelism(p1);
    workload.build(&env, TransactionalStoreSink::new(sink.clone()));
    let handle = env
        .spawn(config(seed, Arc::new(MemoryStore::with_faults(faults(seed))), None))
        .expect("valid job");
    let controller = handle.controller();
    tokio::time::sleep(Duration::from_millis(100 + madsim::rand::random::<u64>() % 1500)).await;
    let target: Arc<dyn BlobStore> = savepoints.clone();
    let mut taken = None;
    let mut tries = 0;
    while taken.is_none() && tries < 20 {
        tries += 1;
        match controller.stop_with_savepoint(target.clone(), false).await {
            Ok(info) => taken = Some(info),
            // The savepoint's store failed, or its checkpoint did: the job runs on; try again.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let first = tokio::time::timeout(Duration::from_secs(300), handle.join())
        .await
        .expect("the first run ends");
    let resumed = match &taken {
        Some(info) => {
            assert!(
                first.expect("stopped cleanly").cancelled,
                "seed {seed}: a stop-with-savepoint ends the job"
            );
            let env = StreamEnv::new("sim-savepoint");
            env.set_parallelism(p2);
            workload.build(&env, TransactionalStoreSink::new(sink.clone()));
            let from = SavepointRestore {
                store: Arc::new(PrefixedStore::new(savepoints.clone(), &info.name)),
                allow_non_restored_state: false,
                uid_mapping: Default::default(),
            };
            let r = tokio::time::timeout(
                Duration::from_secs(600),
                env.execute(config(
                    seed,
                    Arc::new(MemoryStore::with_faults(faults(seed ^ 2))),
                    Some(from),
                )),
            )
            .await
            .expect("the resumed run ends within 10 simulated minutes")
            .expect("the resumed run finishes");
            Some(r.restarts)
        }
        // The input ran out before a savepoint succeeded: the first run finished on its own.
        None => {
            first.expect("the first run finishes");
            None
        }
    };
    let violations = workload.check(&sink.committed());
    println!(
        "seed {seed}: parallelism {p1} -> {p2}; savepoint {:?} after {tries} tries; restarts after resume {resumed:?}; violations {violations:?}",
        taken.as_ref().map(|i| i.checkpoint_id)
    );
    assert!(violations.is_clean(), "seed {seed}: {violations:?}");
}
