//! The whole cluster under madsim (see `sluice_sim::cluster`): the real coordinator, three
//! workers of two slots and the TCP transport as simulated nodes; per seed a swarm of fault
//! rates (worker kills and restarts, partitions between any two nodes, latency, failing and
//! ambiguous store writes, failing sink commits, and in one seed in three bit rot in the
//! checkpoint store). After the faults stop the job must finish within a bound of simulated
//! time, and its committed output must equal the failure-free result exactly; or, where rot
//! made the latest checkpoint unusable, the job must have stopped saying so, with nothing
//! written twice or wrong.
//!
//! Each run prints one summary line; `scripts/test-all.sh` adds up the totals.
#![cfg(madsim)]

use std::time::Duration;

use sluice_sim::cluster::{run_keyed_count, ClusterSpec, FaultPlan, SinkProtocol};
use sluice_sim::keyed_count::KeyedCount;

#[madsim::test]
async fn cluster_output_is_exact_under_kills_partitions_and_storage_faults() {
    let seed = madsim::runtime::Handle::current().seed();
    let faults = FaultPlan::draw(seed);
    let plan = format!(
        "kill {:.3}/tick partition {:.3}/tick latency <= {} ms store put errors {:.3} ambiguous {:.3} rot {:.3}/tick failing commits {} tls {}",
        faults.kill_per_tick,
        faults.partition_per_tick,
        faults.max_latency_ms,
        faults.store.put_error_rate,
        faults.store.put_ambiguous_rate,
        faults.rot_per_tick,
        faults.failing_commits,
        if seed % 2 == 0 { "on" } else { "off" }
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
        on_unusable: "fail",
        // Every other seed over mutual TLS (the seed decides, so the fault plan is the same).
        tls: seed % 2 == 0,
        // With TLS, an impostor tries to take worker 0's place and to finish its tasks.
        impostor: seed % 2 == 0,
        trust_claimed_identities: false,
        ha: None,
    })
    .await;
    println!("seed {seed}: swarm {plan}; {run}");
    if let Some(i) = run.impostor {
        assert_eq!(
            i.accepted_as_victim, 0,
            "seed {seed}: the impostor registered as worker-0"
        );
    }
    run.assert_exact_or_stopped_on_rot(seed);
}
