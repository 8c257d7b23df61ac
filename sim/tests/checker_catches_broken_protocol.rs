//! The suite can fail: with a sink that commits before the checkpoint completes, the same fault
//! scenario that the correct protocol passes on every run produces duplicates, and the
//! exactly-once checker reports them. This keeps the checker honest.
#![cfg(madsim)]

use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{FaultConfig, MemoryStore};
use sluice_core::{ExecutionConfig, StreamEnv, TransactionalSink};
use sluice_sim::broken_sink::EagerCommitSink;
use sluice_sim::keyed_count::{KeyedCount, Violations};

async fn run<S: TransactionalSink<In = (u64, u64)>>(w: KeyedCount, fault_seed: u64, sink: S) {
    let env = StreamEnv::new("checker");
    env.set_parallelism(2);
    w.build(&env, sink);
    // Checkpoint puts fail often and none is tolerated: the job fails and restores repeatedly.
    let store = Arc::new(MemoryStore::with_faults(FaultConfig {
        seed: fault_seed,
        put_error_rate: 0.15,
        max_latency_ms: 5,
        ..FaultConfig::default()
    }));
    let config = ExecutionConfig {
        batch_size: 16,
        channel_capacity: 2,
        checkpointing: Some({
            let mut c = CheckpointConfig::new(Duration::from_millis(30), store);
            // Lost acknowledgements (a fault point) must time out quickly.
            c.timeout = Duration::from_secs(1);
            c
        }),
        restart: Some(RestartStrategy::FixedDelay {
            attempts: 1000,
            delay: Duration::from_millis(5),
        }),
        clock: Some(sluice_core::Clock::starting_at(1_700_000_000_000)),
        ..ExecutionConfig::default()
    };
    tokio::time::timeout(Duration::from_secs(300), env.execute(config))
        .await
        .expect("progress")
        .expect("job finishes");
}

#[madsim::test]
async fn exactly_once_checker_catches_a_sink_that_commits_before_the_checkpoint_completes() {
    let base = madsim::runtime::Handle::current().seed();
    let mut correct_violations = Vec::new();
    let mut broken_violations = Vec::new();
    for k in 0..6u64 {
        let w = KeyedCount {
            records: 1_500,
            keys: 7,
            seed: base ^ k,
            records_per_second: 3_000,
        };
        let good = TransactionalStore::new();
        run(w, base.wrapping_add(k), TransactionalStoreSink::new(good.clone())).await;
        correct_violations.push(w.check(&good.committed()));
        let bad = TransactionalStore::new();
        run(w, base.wrapping_add(k), EagerCommitSink::new(bad.clone())).await;
        broken_violations.push(w.check(&bad.committed()));
    }
    assert!(
        correct_violations.iter().all(Violations::is_clean),
        "the correct protocol violated exactly-once: {correct_violations:?}"
    );
    assert!(
        broken_violations.iter().any(|v| v.duplicated > 0),
        "the broken protocol went unnoticed in 6 runs: {broken_violations:?}"
    );
}

/// The same in cluster mode: a sink that commits at pre-commit, in a cluster whose workers
/// are killed often, shows duplicates, while the correct sink under the same faults does not.
#[madsim::test]
async fn the_cluster_suite_catches_a_sink_that_commits_before_the_checkpoint_completes() {
    use sluice_sim::cluster::{run_keyed_count, ClusterSpec, FaultPlan, SinkProtocol};
    let base = madsim::runtime::Handle::current().seed();
    let mut correct = Vec::new();
    let mut broken = Vec::new();
    for k in 0..3u8 {
        for (protocol, out) in [
            (SinkProtocol::Correct, &mut correct),
            (SinkProtocol::EagerCommit, &mut broken),
        ] {
            let mut faults = FaultPlan::draw(base ^ u64::from(k));
            faults.kill_per_tick = 0.15;
            // Rot may stop a job early (by design); here only the sink protocol differs.
            faults.rot_per_tick = 0.0;
            let run = run_keyed_count(ClusterSpec {
                subnet: 2 * k + u8::from(protocol == SinkProtocol::EagerCommit),
                workers: 3,
                slots: 2,
                parallelism: 3,
                checkpoint_interval: Duration::from_millis(100),
                workload: KeyedCount {
                    records: 3_000,
                    keys: 7,
                    seed: base ^ u64::from(k),
                    records_per_second: 1_000,
                },
                sink: protocol,
                faults,
                on_unusable: "fail",
                tls: k % 2 == 0,
                impostor: false,
                trust_claimed_identities: false,
                ha: None,
            })
            .await;
            out.push(run.violations);
        }
    }
    assert!(
        correct.iter().all(Violations::is_clean),
        "the correct protocol violated exactly-once: {correct:?}"
    );
    assert!(
        broken.iter().any(|v| v.duplicated > 0),
        "the broken protocol went unnoticed in 3 cluster runs: {broken:?}"
    );
}

/// Bit rot in the checkpoint store: a job told to start fresh when its latest checkpoint is
/// unusable writes committed output again, and the checker sees the duplicates; the default
/// (stop with an error) under the same faults writes nothing twice.
#[madsim::test]
async fn the_cluster_suite_catches_a_job_that_starts_over_past_a_rotted_checkpoint() {
    use sluice_core::cluster::JobStatus;
    use sluice_sim::cluster::{run_keyed_count, ClusterSpec, FaultPlan, SinkProtocol};
    let base = madsim::runtime::Handle::current().seed();
    let mut safe = Vec::new();
    let mut fresh = Vec::new();
    for k in 0..3u8 {
        for (policy, out) in [("fail", &mut safe), ("start-fresh", &mut fresh)] {
            // Rot must hit the latest checkpoint and a failover must follow before the next
            // checkpoint replaces it: frequent kills and rot, and checkpoints 500 ms apart.
            let mut faults = FaultPlan::draw(base ^ u64::from(k));
            faults.kill_per_tick = 0.3;
            faults.rot_per_tick = 0.5;
            let run = run_keyed_count(ClusterSpec {
                subnet: 10 + 2 * k + u8::from(policy == "start-fresh"),
                workers: 3,
                slots: 2,
                parallelism: 3,
                checkpoint_interval: Duration::from_millis(500),
                workload: KeyedCount {
                    records: 3_000,
                    keys: 7,
                    seed: base ^ u64::from(k),
                    records_per_second: 1_000,
                },
                sink: SinkProtocol::Correct,
                faults,
                on_unusable: policy,
                tls: false,
                impostor: false,
                trust_claimed_identities: false,
                ha: None,
            })
            .await;
            out.push((run.status, run.rotted, run.violations));
        }
    }
    assert!(
        safe.iter().all(|(status, _, v)| v.duplicated == 0
            && v.spurious == 0
            && (*status == Some(JobStatus::Failed) || v.is_clean())),
        "stopping on an unusable checkpoint wrote output twice or wrong: {safe:?}"
    );
    assert!(
        fresh.iter().any(|(_, _, v)| v.duplicated > 0),
        "starting over past a rotted checkpoint went unnoticed in 3 cluster runs: {fresh:?}"
    );
}

/// An impostor with a valid certificate of its own claims worker 0's id and "finishes" the
/// tasks deployed to it without running them. The coordinator that checks identities refuses
/// it: it never holds worker 0's place, no deployment reaches it, and the output is exact.
/// One that takes registrations at their word (the broken variant) gives it worker 0's place
/// again and again (with it, in some runs, deployments naming the job's options, files and
/// checkpoint location); the failovers it causes are survived, so the output oracle alone
/// would not see it: the identity oracle does.
#[madsim::test]
async fn the_cluster_suite_catches_a_coordinator_that_trusts_claimed_identities() {
    use sluice_core::cluster::JobStatus;
    use sluice_sim::cluster::{run_keyed_count, ClusterSpec, FaultPlan, SinkProtocol};
    let base = madsim::runtime::Handle::current().seed();
    let mut checked = Vec::new();
    let mut trusting = Vec::new();
    for k in 0..2u8 {
        for (trust, out) in [(false, &mut checked), (true, &mut trusting)] {
            // No other faults: whatever goes wrong is the impostor's doing.
            let faults = FaultPlan::quiet(base ^ u64::from(k));
            let run = run_keyed_count(ClusterSpec {
                subnet: 20 + 2 * k + u8::from(trust),
                workers: 3,
                slots: 2,
                parallelism: 3,
                checkpoint_interval: Duration::from_millis(100),
                workload: KeyedCount {
                    records: 3_000,
                    keys: 7,
                    seed: base ^ u64::from(k),
                    records_per_second: 1_000,
                },
                sink: SinkProtocol::Correct,
                faults,
                on_unusable: "fail",
                tls: true,
                impostor: true,
                trust_claimed_identities: trust,
                ha: None,
            })
            .await;
            println!("trust {trust}: {run}");
            out.push((run.status, run.violations, run.impostor.unwrap_or_default()));
        }
    }
    assert!(
        checked.iter().all(|(status, v, i)| *status == Some(JobStatus::Finished)
            && v.is_clean()
            && i.accepted_as_victim == 0
            && i.deployments == 0),
        "with identities checked the impostor got in or did damage: {checked:?}"
    );
    assert!(
        trusting
            .iter()
            .any(|(status, v, i)| *status != Some(JobStatus::Finished)
                || !v.is_clean()
                || i.accepted_as_victim > 0
                || i.deployments > 0),
        "an impostor taking worker 0's place went unnoticed in 2 cluster runs: {trusting:?}"
    );
}

/// A forced split brain: the leader is cut from etcd for three lease TTLs while it still
/// reaches its workers, then the link heals. The fenced coordinator steps down within half a
/// TTL and its successor takes the job over: no older epoch writes after a newer one and the
/// output is exact. The broken variant (a leader that ignores its lost lease and writes
/// without the fence) keeps running its job beside its successor, and once etcd is back its
/// writes land after the successor's: the epoch audit reports them.
#[madsim::test]
async fn the_ha_suite_catches_a_leader_that_ignores_its_lost_lease() {
    use sluice_core::cluster::JobStatus;
    use sluice_sim::cluster::{run_keyed_count, ClusterSpec, FaultPlan, HaSpec, SinkProtocol};
    let base = madsim::runtime::Handle::current().seed();
    let mut fenced = Vec::new();
    let mut unfenced = Vec::new();
    for k in 0..2u8 {
        for (broken, out) in [(false, &mut fenced), (true, &mut unfenced)] {
            // No other faults: whatever goes wrong is the split brain's doing.
            let mut faults = FaultPlan::quiet(base ^ u64::from(k));
            faults.split_brain_at = Some(8);
            let run = run_keyed_count(ClusterSpec {
                subnet: 30 + 2 * k + u8::from(broken),
                workers: 3,
                slots: 2,
                parallelism: 3,
                checkpoint_interval: Duration::from_millis(100),
                workload: KeyedCount {
                    records: 6_000,
                    keys: 7,
                    seed: base ^ u64::from(k),
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
                    unfenced: broken,
                }),
            })
            .await;
            println!("unfenced {broken}: {run}");
            out.push((run.status, run.violations, run.stale_writes.len(), run.epochs.len()));
        }
    }
    assert!(
        fenced
            .iter()
            .all(|(status, v, stale, epochs)| *status == Some(JobStatus::Finished)
                && v.is_clean()
                && *stale == 0
                && *epochs >= 2),
        "the fenced leader let two epochs act, or the split brain changed no leader: {fenced:?}"
    );
    assert!(
        unfenced
            .iter()
            .any(|(status, v, stale, _)| *stale > 0 || !v.is_clean() || *status != Some(JobStatus::Finished)),
        "a leader writing after losing its lease went unnoticed in 2 runs: {unfenced:?}"
    );
}

/// The tiered suite's deletion oracle catches a coordinator that deletes a subsumed
/// checkpoint's runs although the retained checkpoint names them too, while the correct
/// deletion keeps every named run on the same seeds.
#[madsim::test]
async fn the_tiered_suite_catches_a_gc_that_deletes_runs_a_retained_checkpoint_names() {
    let base = madsim::runtime::Handle::current().seed();
    let (mut correct, mut broken) = (Vec::new(), Vec::new());
    // Both regimes of the workload (bit 1 of the seed chooses it), with a calm store: every
    // checkpoint completes and shares runs with the one before, so a broken deletion must
    // show on every seed. Under store faults it can hide (a failed delete keeps the run;
    // failing checkpoints leave few to compare): the fault suite, tiered_faults.rs, checks
    // the correct deletion under faults on its 50 seeds.
    for regime in [0, 2] {
        correct.push(sluice_sim::tiered::run_with(false, base ^ regime, false).await);
        broken.push(sluice_sim::tiered::run_with(true, base ^ regime, false).await);
    }
    assert!(
        correct.iter().all(|r| r.exact && r.missing == 0),
        "the correct deletion lost a named run or output: {correct:?}"
    );
    assert!(
        broken.iter().all(|r| r.missing > 0),
        "the broken deletion went unnoticed with a calm store: {broken:?}"
    );
}
