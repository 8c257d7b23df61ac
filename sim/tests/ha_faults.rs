//! High availability under madsim (see `sluice_sim::ha`): three coordinators elected over an
//! etcd twin, three workers, the keyed count with checkpoints and the two-phase-commit sink.
//! Per seed a swarm of fault rates: everything of the cluster suite (worker kills, partitions
//! between any two nodes, latency, store faults, failing commits, bit rot) plus coordinator
//! kills and restarts, pauses that wake a zombie, cuts between a coordinator and etcd only,
//! etcd unreachable for everyone,
//! and on odd seeds a forced split brain (the leader cut from etcd for three lease TTLs while
//! it still reaches its workers).
//!
//! Invariants: no write of an older epoch sent after a newer epoch's write succeeded (two
//! epochs never both act); after the faults stop the job finishes (liveness); the committed
//! output equals the failure-free result exactly.
//!
//! Each run prints one summary line; `scripts/test-all.sh` adds up the totals.
#![cfg(madsim)]

use std::time::Duration;

use sluice_sim::cluster::{run_keyed_count, ClusterSpec, FaultPlan, HaSpec, SinkProtocol};
use sluice_sim::keyed_count::KeyedCount;

#[madsim::test]
async fn ha_output_is_exact_and_no_two_epochs_act_under_leader_faults() {
    let seed = madsim::runtime::Handle::current().seed();
    let mut faults = FaultPlan::draw_ha(seed);
    if seed % 2 == 1 {
        faults.split_brain_at = Some(10);
    }
    let plan = format!(
        "coordinator kill {:.3}/tick pause {:.3}/tick etcd cut {:.3}/tick etcd outage {:.3}/tick etcd timeouts {:.3} split brain {} worker kill {:.3}/tick partition {:.3}/tick rot {:.3}/tick",
        faults.coordinator_kill_per_tick,
        faults.pause_per_tick,
        faults.etcd_cut_per_tick,
        faults.etcd_outage_per_tick,
        faults.etcd_timeout_rate,
        faults.split_brain_at.is_some(),
        faults.kill_per_tick,
        faults.partition_per_tick,
        faults.rot_per_tick,
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
        tls: false,
        impostor: false,
        trust_claimed_identities: false,
        ha: Some(HaSpec {
            coordinators: 3,
            lease_ttl: Duration::from_secs(2),
            unfenced: false,
        }),
    })
    .await;
    println!("seed {seed}: ha swarm {plan}; {run}");
    assert!(
        run.stale_writes.is_empty(),
        "seed {seed}: a deposed leader wrote after its successor: {:?}",
        run.stale_writes
    );
    assert!(!run.epochs.is_empty(), "seed {seed}: no leader ever wrote");
    run.assert_exact_or_stopped_on_rot(seed);
}
