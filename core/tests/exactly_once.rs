//! Exactly-once under failures: a keyed count over a replayable bounded source, checkpointed
//! every few hundred records, with tasks failing at random points several times per run; the
//! committed output of the two-phase-commit sink must equal the failure-free output exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{GeneratorSource, TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::MemoryStore;
use sluice_core::state::rng::SplitMix64;
use sluice_core::{ExecutionConfig, StreamEnv, WatermarkStrategy};

const RECORDS: u64 = 6_000;
const KEYS: u64 = 37;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}

/// Expected committed output: for each key seen n times, (key, 1) .. (key, n) once each.
fn expected() -> Vec<(u64, u64)> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry(i % KEYS).or_default() += 1;
    }
    let mut out: Vec<(u64, u64)> = counts
        .iter()
        .flat_map(|(k, n)| (1..=*n).map(move |c| (*k, c)))
        .collect();
    out.sort();
    out
}

/// Fails (panics) when it sees one of `fail_at` for the first time.
#[derive(Clone)]
struct FaultPlan {
    fail_at: Arc<Mutex<Vec<u64>>>,
    fired: Arc<AtomicU32>,
}

impl FaultPlan {
    fn new(seed: u64, failures: usize) -> Self {
        let mut rng = SplitMix64::new(seed);
        let fail_at = (0..failures).map(|_| rng.next_below(RECORDS)).collect();
        FaultPlan {
            fail_at: Arc::new(Mutex::new(fail_at)),
            fired: Arc::new(AtomicU32::new(0)),
        }
    }

    fn check(&self, i: u64) {
        let mut f = self.fail_at.lock().unwrap();
        if let Some(pos) = f.iter().position(|&x| x == i) {
            f.remove(pos);
            drop(f);
            self.fired.fetch_add(1, Ordering::SeqCst);
            panic!("injected failure at record {i}");
        }
    }
}

fn run(seed: u64, failures: usize, parallelism: u32) -> (Vec<(u64, u64)>, u32, u32) {
    let env = StreamEnv::new("exactly-once-count");
    env.set_parallelism(parallelism);
    let plan = FaultPlan::new(seed, failures);
    let store = TransactionalStore::new();
    let p = plan.clone();
    env.from_source(
        GeneratorSource::new(seed, Some(RECORDS), |i, _| i).with_records_per_second(20_000),
        WatermarkStrategy::no_watermarks(),
        "numbers",
    )
    .uid("numbers")
    .map(move |i: u64| {
        p.check(i);
        (i % KEYS, 1u64)
    })
    .key_by(|r: &(u64, u64)| r.0)
    .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
    .uid("count")
    .sink_to_transactional(TransactionalStoreSink::new(store.clone()), "sink")
    .uid("sink");
    let mut cfg = CheckpointConfig::new(Duration::from_millis(15), Arc::new(MemoryStore::new()));
    cfg.retained = 2;
    let config = ExecutionConfig {
        batch_size: 64,
        checkpointing: Some(cfg),
        restart: Some(RestartStrategy::FixedDelay {
            attempts: 100,
            delay: Duration::from_millis(1),
        }),
        ..ExecutionConfig::default()
    };
    let result = rt()
        .block_on(env.execute(config))
        .expect("job finishes despite failures");
    let mut got = store.committed();
    got.sort();
    (got, result.restarts, plan.fired.load(Ordering::SeqCst))
}

#[test]
fn failure_free_run_commits_every_update_once() {
    let (got, restarts, _) = run(1, 0, 2);
    assert_eq!(restarts, 0);
    assert_eq!(got, expected());
}

#[test]
fn committed_output_is_exact_despite_repeated_task_failures() {
    let want = expected();
    let mut total_failures = 0;
    for seed in 0..12u64 {
        let parallelism = 1 + (seed % 3) as u32;
        let (got, restarts, fired) = run(seed, 3, parallelism);
        assert_eq!(fired, 3, "seed {seed}: every planned failure happened");
        // Two planned failures can strike in one attempt (two subtasks at once): every restart
        // has at least one failure behind it.
        assert!(
            (1..=fired).contains(&restarts),
            "seed {seed}: {restarts} restarts for {fired} failures"
        );
        if got != want {
            let dups = got.windows(2).filter(|w| w[0] == w[1]).count();
            panic!(
                "seed {seed} (parallelism {parallelism}): committed {} records, expected {}; {dups} duplicates",
                got.len(),
                want.len()
            );
        }
        total_failures += fired;
    }
    assert_eq!(total_failures, 36);
}
