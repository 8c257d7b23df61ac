//! The whole cluster under madsim (see `sluice_sim::cluster`): the real coordinator, three
//! workers of two slots and the TCP transport as simulated nodes; per seed a swarm of fault
//! rates (worker kills and restarts, partitions between any two nodes, latency, failing and
//! ambiguous store writes, failing sink commits). After the faults stop the job must finish
//! within a bound of simulated time, and its committed output must equal the failure-free
//! result exactly.
//!
//! Each run prints one summary line; `scripts/test-all.sh` adds up the totals.
#![cfg(madsim)]

use std::time::Duration;

use sluice_core::cluster::JobStatus;
use sluice_sim::cluster::{run_keyed_count, ClusterSpec, FaultPlan, SinkProtocol};
use sluice_sim::keyed_count::KeyedCount;

#[madsim::test]
async fn cluster_output_is_exact_under_kills_partitions_and_storage_faults() {
    let seed = madsim::runtime::Handle::current().seed();
    let faults = FaultPlan::draw(seed);
    let plan = format!(
        "kill {:.3}/tick partition {:.3}/tick latency <= {} ms store put errors {:.3} ambiguous {:.3} failing commits {}",
        faults.kill_per_tick,
        faults.partition_per_tick,
        faults.max_latency_ms,
        faults.store.put_error_rate,
        faults.store.put_ambiguous_rate,
        faults.failing_commits
    );
    let run = run_keyed_count(ClusterSpec {
        subnet: 0,
        workers: 3,
        slots: 2,
        parallelism: 3,
        checkpoint_interval: Duration::from_millis(100),
        workload: KeyedCount {
            records: 4_000,
            keys: 13,
            seed,
            records_per_second: 1_000,
        },
        sink: SinkProtocol::Correct,
        faults,
    })
    .await;
    println!("seed {seed}: swarm {plan}; {run}");
    assert_eq!(
        run.status,
        Some(JobStatus::Finished),
        "seed {seed}: the job did not finish: {:?}",
        run.error
    );
    assert!(
        run.violations.is_clean(),
        "seed {seed}: {:?} after {} failovers",
        run.violations,
        run.failovers
    );
}
