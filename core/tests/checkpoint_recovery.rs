//! Recovery from checkpoints when things go wrong around them.
//!
//! * A damaged latest checkpoint (a state file with a flipped byte, a truncated state file, a
//!   truncated `_metadata`) is detected by `CheckpointStorage::load` (the error names the file
//!   and the problem). Its transactions were committed when it completed, so by default a job
//!   started again on the same store stops with `JobError::UnusableCheckpoint` (nothing
//!   written twice, the checkpoint kept). With `fall-back` it restores the previous checkpoint
//!   and commits every expected record (at-least-once: the damaged checkpoint's records are
//!   produced again, confined to one replayed stretch per key); with `start-fresh` it starts
//!   over.
//! * Checkpoint storage failures: with 20% of puts failing and failures tolerated, the job
//!   still finishes with exactly-once output; with every put failing and none (or two)
//!   tolerated, it fails with `JobError::CheckpointsFailing` saying how many failed.
//! * Sink commit failures: failing commits fail the task, and with a fixed-delay restart
//!   strategy the job still ends with exactly-once output.
//!
//! The job: a paced `GeneratorSource` of numbers, keyed by `i % 37`, counted by `reduce`, into
//! a `TransactionalStoreSink`; the failure-free output is `(k, 1) ..= (k, n_k)` for each key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use sluice_core::checkpoint::{CheckpointConfig, CheckpointStorage, Latest, RestartStrategy, UnusableCheckpoint};
use sluice_core::connectors::{GeneratorSource, TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{FaultConfig, MemoryStore};
use sluice_core::{ExecutionConfig, JobError, JobResult, StreamEnv, WatermarkStrategy};

const JOB: &str = "recovery-count";
const RECORDS: u64 = 6_000;
const KEYS: u64 = 37;

type Out = (u64, u64);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}

/// The failure-free output: for each key seen n times, (key, 1) ..= (key, n), sorted.
fn expected() -> Vec<Out> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry(i % KEYS).or_default() += 1;
    }
    counts
        .iter()
        .flat_map(|(k, n)| (1..=*n).map(move |c| (*k, c)))
        .collect()
}

fn committed(store: &TransactionalStore<Out>) -> Vec<Out> {
    let mut v = store.committed();
    v.sort();
    v
}

/// Panics with a short description unless `got` equals the expected output exactly.
fn assert_exactly_once(got: &[Out], what: &str) {
    let want = expected();
    if got != want.as_slice() {
        let dups = got.windows(2).filter(|w| w[0] == w[1]).count();
        let mut missing = want.clone();
        missing.retain(|r| got.binary_search(r).is_err());
        panic!(
            "{what}: committed {} records, expected {}; {dups} duplicates, {} missing (first: {:?})",
            got.len(),
            want.len(),
            missing.len(),
            missing.first()
        );
    }
}

/// The keyed counting job, paced to `rate` records per second, committing into `sink`.
fn job(sink: &TransactionalStore<Out>, rate: u64, parallelism: u32) -> StreamEnv {
    let env = StreamEnv::new(JOB);
    env.set_parallelism(parallelism);
    env.from_source(
        GeneratorSource::new(3, Some(RECORDS), |i, _| i).with_records_per_second(rate),
        WatermarkStrategy::no_watermarks(),
        "numbers",
    )
    .uid("numbers")
    .map(|i: u64| (i % KEYS, 1u64))
    .key_by(|r: &Out| r.0)
    .reduce(|a: Out, b: Out| (a.0, a.1 + b.1))
    .uid("count")
    .sink_to_transactional(TransactionalStoreSink::new(sink.clone()), "sink")
    .uid("sink");
    env
}

fn config(store: Arc<MemoryStore>, interval_ms: u64, f: impl FnOnce(&mut CheckpointConfig)) -> ExecutionConfig {
    let mut cfg = CheckpointConfig::new(Duration::from_millis(interval_ms), store);
    f(&mut cfg);
    ExecutionConfig {
        batch_size: 64,
        checkpointing: Some(cfg),
        restart: Some(RestartStrategy::None),
        ..ExecutionConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// A log drain that keeps every record as a line.

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

struct KvLine<'a>(&'a mut String);

impl slog::Serializer for KvLine<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for Captured {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV;
        let mut line = format!("{} {}", record.level().as_short_str(), record.msg());
        let _ = record.kv().serialize(record, &mut KvLine(&mut line));
        let _ = values.serialize(record, &mut KvLine(&mut line));
        self.0.lock().unwrap().push(line);
        Ok(())
    }
}

impl Captured {
    fn logger(&self) -> slog::Logger {
        slog::Logger::root(self.clone(), slog::o!())
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Damaged latest checkpoint

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Flip one byte in the middle of the keyed state file of the latest checkpoint.
    FlipStateByte,
    /// Cut the keyed state file of the latest checkpoint in half.
    TruncateState,
    /// Cut the `_metadata` of the latest checkpoint short.
    TruncateMetadata,
}

impl Damage {
    /// Words the problem description must contain.
    fn problem_words(self) -> &'static [&'static str] {
        match self {
            Damage::FlipStateByte => &["checksum mismatch"],
            Damage::TruncateState => &["bytes, the metadata says"],
            Damage::TruncateMetadata => &["truncated"],
        }
    }
}

/// The first run: cancelled after at least 3 checkpoints completed; then the latest is
/// damaged. Returns the store and sink as left, the previous and latest checkpoint ids and the
/// damaged file's path.
fn run_then_damage(damage: Damage) -> (Arc<MemoryStore>, TransactionalStore<Out>, u64, u64, String) {
    let rt = rt();
    let store = Arc::new(MemoryStore::new());
    let sink = TransactionalStore::<Out>::new();
    let first: JobResult = rt.block_on(async {
        let env = job(&sink, 3_000, 2);
        let handle = env
            .spawn(config(store.clone(), 20, |c| c.retained = 3))
            .expect("job starts");
        let stats = handle.checkpoint_stats();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.completed.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "3 checkpoints did not complete within 30 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        handle.cancel();
        handle.join().await.expect("a cancelled job ends without error")
    });
    assert!(
        first.cancelled && first.records_in < RECORDS,
        "the first run must be cancelled mid-way"
    );
    let storage = CheckpointStorage::new(store.clone(), JOB);
    let ids = rt.block_on(storage.completed_ids()).unwrap();
    assert!(
        ids.len() >= 2 && ids.len() <= 4,
        "retained 3 checkpoints (one more if cancelled while subsuming): {ids:?}"
    );
    let (previous, latest) = (ids[ids.len() - 2], ids[ids.len() - 1]);
    let dir = storage.dir(latest);
    let damaged_path = match damage {
        Damage::FlipStateByte | Damage::TruncateState => {
            let path = store
                .paths()
                .into_iter()
                .find(|p| p.starts_with(&dir) && p.contains("/count/") && p.ends_with(".state"))
                .unwrap_or_else(|| panic!("no keyed state file under {dir}: {:?}", store.paths()));
            store
                .corrupt(&path, |b| match damage {
                    Damage::FlipStateByte => {
                        let mid = b.len() / 2;
                        b[mid] ^= 0x5a;
                    }
                    _ => b.truncate(b.len() / 2),
                })
                .unwrap();
            path
        }
        Damage::TruncateMetadata => {
            let path = format!("{dir}_metadata");
            store.corrupt(&path, |b| b.truncate(b.len() - 7)).unwrap();
            path
        }
    };
    // Loading it says what is wrong and where; the previous one is intact.
    let msg = rt
        .block_on(storage.load(latest))
        .expect_err("a damaged checkpoint must not load")
        .to_string();
    assert!(
        msg.contains(&damaged_path),
        "{damage:?}: the error does not name '{damaged_path}': {msg}"
    );
    for w in damage.problem_words() {
        assert!(msg.contains(w), "{damage:?}: the error does not say '{w}': {msg}");
    }
    rt.block_on(storage.load(previous))
        .expect("the previous checkpoint is intact");
    match rt.block_on(storage.latest()).unwrap() {
        Latest::Unusable { id, problem, older } => {
            assert_eq!(id, latest);
            assert!(problem.to_string().contains(&damaged_path));
            assert_eq!(older.first(), Some(&previous), "older ones, newest first: {older:?}");
        }
        other => panic!("{damage:?}: the latest is not reported unusable: {other:?}"),
    }
    (store, sink, previous, latest, damaged_path)
}

/// Runs the job again on `store` (to its end) with `policy` for an unusable checkpoint.
fn run_again(
    store: &Arc<MemoryStore>,
    sink: &TransactionalStore<Out>,
    policy: UnusableCheckpoint,
    log: &Captured,
) -> Result<JobResult, JobError> {
    rt().block_on(async {
        let env = job(sink, 20_000, 2);
        let mut cfg = config(store.clone(), 20, |c| {
            c.retained = 3;
            c.on_unusable = policy;
        });
        cfg.log = log.logger();
        env.execute(cfg).await
    })
}

/// Every committed record is expected, and none is committed twice.
fn assert_no_duplicates(got: &[Out], what: &str) {
    let want: std::collections::BTreeSet<Out> = expected().into_iter().collect();
    let mut seen = std::collections::BTreeSet::new();
    for g in got {
        assert!(want.contains(g), "{what}: spurious record {g:?}");
        assert!(seen.insert(*g), "{what}: record {g:?} committed twice");
    }
}

/// By default a job whose latest checkpoint is damaged stops with an error naming it, the file
/// and the problem, keeps the checkpoint, and writes nothing twice.
fn damaged_latest_checkpoint_stops_the_job(damage: Damage) {
    let (store, sink, _, latest, damaged_path) = run_then_damage(damage);
    let before = committed(&sink);
    let paths_before = store.paths();
    let log = Captured::default();
    let err = run_again(&store, &sink, UnusableCheckpoint::Fail, &log).expect_err("the job must not start");
    let JobError::UnusableCheckpoint {
        checkpoint,
        problem,
        older,
    } = &err
    else {
        panic!("{damage:?}: expected UnusableCheckpoint, got {err}")
    };
    assert_eq!(*checkpoint, latest);
    assert!(problem.contains(&damaged_path), "{err}");
    assert!(*older >= 1);
    let text = err.to_string();
    assert!(
        text.contains("--on-unusable-checkpoint fall-back or start-fresh"),
        "{text}"
    );
    assert_eq!(store.paths(), paths_before, "{damage:?}: the store was changed");
    let after = committed(&sink);
    assert_eq!(after, before, "{damage:?}: output was committed");
    assert_no_duplicates(&after, &format!("{damage:?}"));
    assert!(log
        .lines()
        .iter()
        .any(|l| l.contains("cannot be restored") && l.contains(&damaged_path)));
}

#[test]
fn corrupt_state_file_of_the_latest_checkpoint_stops_the_job() {
    damaged_latest_checkpoint_stops_the_job(Damage::FlipStateByte);
}

#[test]
fn truncated_state_file_of_the_latest_checkpoint_stops_the_job() {
    damaged_latest_checkpoint_stops_the_job(Damage::TruncateState);
}

#[test]
fn truncated_metadata_of_the_latest_checkpoint_stops_the_job() {
    damaged_latest_checkpoint_stops_the_job(Damage::TruncateMetadata);
}

/// With `fall-back`, the job restores the previous checkpoint, deletes the damaged one, and
/// commits every expected record; what it commits twice can only be the damaged checkpoint's
/// records, produced again: each at most twice, one contiguous run of counts per key.
#[test]
fn with_fall_back_the_previous_checkpoint_is_restored_at_least_once() {
    let damage = Damage::FlipStateByte;
    let (store, sink, previous, latest, damaged_path) = run_then_damage(damage);
    let log = Captured::default();
    let second = run_again(&store, &sink, UnusableCheckpoint::FallBack, &log).expect("the second run finishes");
    assert!(!second.cancelled);
    assert_eq!(
        second.resumed_from,
        Some(previous),
        "the second run must resume from the fallback"
    );
    let lines = log.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cannot be restored") && l.contains(&damaged_path)),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("falling back to an older checkpoint")),
        "{lines:?}"
    );
    assert_eq!(sink.open_transactions(), 0, "transactions left prepared");
    let left = rt()
        .block_on(CheckpointStorage::new(store.clone(), JOB).completed_ids())
        .unwrap();
    assert!(
        !left.contains(&latest) && left.len() <= 3,
        "completed checkpoints {left:?} (retained = 3) still include the damaged {latest}"
    );
    let got = committed(&sink);
    let want = expected();
    let mut extra: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut gi = got.iter().peekable();
    for w in &want {
        loop {
            match gi.next() {
                Some(g) if g == w => break,
                Some(g) if g < w => extra.entry(g.0).or_default().push(g.1),
                Some(g) => panic!("expected record {w:?} was never committed (next committed: {g:?})"),
                None => panic!("expected record {w:?} was never committed"),
            }
        }
    }
    for g in gi {
        extra.entry(g.0).or_default().push(g.1);
    }
    for (k, counts) in &extra {
        assert!(
            counts.windows(2).all(|w| w[1] == w[0] + 1),
            "key {k}: duplicated counts {counts:?} are not one replayed stretch"
        );
    }
}

/// With `start-fresh`, the damaged checkpoints are deleted and the job starts over.
#[test]
fn with_start_fresh_the_job_starts_over() {
    let (store, sink, _, _, _) = run_then_damage(Damage::TruncateMetadata);
    let log = Captured::default();
    let second = run_again(&store, &sink, UnusableCheckpoint::StartFresh, &log).expect("the second run finishes");
    assert_eq!(second.resumed_from, None);
    assert_eq!(second.records_in, RECORDS, "it read all input again");
    assert!(log.lines().iter().any(|l| l.contains("deleted unusable checkpoint")));
}

/// Every checkpoint damaged: with `fall-back` there is nothing to fall back to, and the job
/// stops with the error about the latest.
#[test]
fn with_every_checkpoint_damaged_fall_back_stops_too() {
    let rt = rt();
    let store = Arc::new(MemoryStore::new());
    let sink = TransactionalStore::<Out>::new();
    rt.block_on(async {
        let handle = job(&sink, 3_000, 1)
            .spawn(config(store.clone(), 20, |c| c.retained = 2))
            .unwrap();
        let stats = handle.checkpoint_stats();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.completed.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "2 checkpoints did not complete within 30 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        handle.cancel();
        handle.join().await.expect("cancelled");
    });
    let storage = CheckpointStorage::new(store.clone(), JOB);
    let ids = rt.block_on(storage.completed_ids()).unwrap();
    assert!(ids.len() >= 2, "{ids:?}");
    for id in &ids {
        store
            .corrupt(&format!("{}_metadata", storage.dir(*id)), |b| b[20] ^= 1)
            .unwrap();
    }
    let log = Captured::default();
    let err = run_again(&store, &sink, UnusableCheckpoint::FallBack, &log).expect_err("nothing to fall back to");
    assert!(
        matches!(err, JobError::UnusableCheckpoint { checkpoint, .. } if checkpoint == *ids.last().unwrap()),
        "{err}"
    );
    let warnings = log.lines().iter().filter(|l| l.contains("checksum")).count();
    assert_eq!(
        warnings,
        ids.len(),
        "each damaged checkpoint is named: {:?}",
        log.lines()
    );
}

// ---------------------------------------------------------------------------------------------
// Checkpoint storage failures

/// 20% of puts to the checkpoint store fail: many checkpoints fail, failures are tolerated,
/// and the job finishes with exactly-once output.
#[test]
fn failing_checkpoint_puts_are_tolerated_and_output_is_exactly_once() {
    for seed in [1u64, 2, 3] {
        let store = Arc::new(MemoryStore::with_faults(FaultConfig {
            seed,
            put_error_rate: 0.2,
            ..FaultConfig::default()
        }));
        let sink = TransactionalStore::<Out>::new();
        let (result, failed) = rt().block_on(async {
            let handle = job(&sink, 15_000, 2)
                .spawn(config(store.clone(), 10, |c| c.tolerable_failures = 1_000))
                .unwrap();
            let stats = handle.checkpoint_stats();
            let r = handle.join().await;
            (r, stats.failed.load(Ordering::SeqCst))
        });
        let result = result.unwrap_or_else(|e| panic!("seed {seed}: the job failed: {e}"));
        assert!(!result.cancelled);
        assert_eq!(
            result.restarts, 0,
            "seed {seed}: failed checkpoints within tolerance must not restart the job"
        );
        assert!(failed > 0, "seed {seed}: no checkpoint failed, the faults did not bite");
        assert!(store.injected_faults() > 0);
        assert!(result.checkpoints_completed > 0);
        assert_exactly_once(&committed(&sink), &format!("seed {seed}"));
        assert_eq!(sink.open_transactions(), 0, "seed {seed}: transactions left prepared");
        eprintln!(
            "seed {seed}: {} checkpoints completed, {failed} failed, {} faults injected",
            result.checkpoints_completed,
            store.injected_faults()
        );
    }
}

/// Every put fails: with `tolerated` failures allowed and no restart, the job fails with
/// `CheckpointsFailing` after `tolerated + 1` consecutive failures, and says so.
fn every_put_fails(tolerated: u32) {
    let store = Arc::new(MemoryStore::new());
    store.fail_next("put", u32::MAX);
    let sink = TransactionalStore::<Out>::new();
    let err = rt()
        .block_on(job(&sink, 20_000, 2).execute(config(store.clone(), 10, |c| c.tolerable_failures = tolerated)))
        .expect_err("a job whose checkpoints all fail must fail");
    let msg = err.to_string();
    match &err {
        JobError::CheckpointsFailing {
            failures,
            tolerated: t,
            last,
        } => {
            assert_eq!(*failures, tolerated + 1, "{msg}");
            assert_eq!(*t, tolerated, "{msg}");
            assert!(
                last.contains("injected"),
                "the last failure's reason names the store fault: {msg}"
            );
        }
        other => panic!("expected CheckpointsFailing, got {other:?}"),
    }
    assert!(
        msg.starts_with(&format!(
            "{} consecutive checkpoints failed (tolerated: {tolerated}); last: checkpoint ",
            tolerated + 1
        )),
        "{msg}"
    );
    assert!(
        sink.committed().is_empty(),
        "nothing may be committed without a completed checkpoint"
    );
    assert!(
        store.paths().is_empty(),
        "a failed put stored something: {:?}",
        store.paths()
    );
}

#[test]
fn every_put_failing_with_none_tolerated_fails_the_job_after_one() {
    every_put_fails(0);
}

#[test]
fn every_put_failing_with_two_tolerated_fails_the_job_after_three() {
    every_put_fails(2);
}

// ---------------------------------------------------------------------------------------------
// Sink commit failures

fn fixed_delay() -> Option<RestartStrategy> {
    Some(RestartStrategy::FixedDelay {
        attempts: 10,
        delay: Duration::from_millis(10),
    })
}

/// The first two commits fail (the very first checkpoint's, then the retry in recovery): the
/// job restarts and still commits every record exactly once.
#[test]
fn failing_commits_from_the_start_restart_and_output_is_exactly_once() {
    let store = Arc::new(MemoryStore::new());
    let sink = TransactionalStore::<Out>::new();
    sink.fail_next_commits(2);
    let mut cfg = config(store, 15, |c| c.retained = 2);
    cfg.restart = fixed_delay();
    let result = rt()
        .block_on(job(&sink, 10_000, 2).execute(cfg))
        .expect("the job recovers from failed commits");
    assert!(
        result.restarts >= 1,
        "a failed commit must fail the task: {} restarts",
        result.restarts
    );
    assert_exactly_once(&committed(&sink), "commits failing from the start");
    assert_eq!(sink.open_transactions(), 0);
    eprintln!("commits failing from the start: {} restarts", result.restarts);
}

/// Two commits fail after the job has run for a few checkpoints.
#[test]
fn failing_commits_mid_run_restart_and_output_is_exactly_once() {
    let store = Arc::new(MemoryStore::new());
    let sink = TransactionalStore::<Out>::new();
    let mut cfg = config(store, 15, |c| c.retained = 2);
    cfg.restart = fixed_delay();
    let result = rt()
        .block_on(async {
            let handle = job(&sink, 5_000, 2).spawn(cfg).unwrap();
            let stats = handle.checkpoint_stats();
            let deadline = Instant::now() + Duration::from_secs(30);
            while stats.completed.load(Ordering::SeqCst) < 3 {
                assert!(Instant::now() < deadline, "3 checkpoints did not complete within 30 s");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sink.fail_next_commits(2);
            handle.join().await
        })
        .expect("the job recovers from failed commits");
    assert!(
        result.restarts >= 1,
        "a failed commit must fail the task: {} restarts",
        result.restarts
    );
    assert_exactly_once(&committed(&sink), "commits failing mid-run");
    assert_eq!(sink.open_transactions(), 0);
}

// ---------------------------------------------------------------------------------------------
// Reading checkpoints while restarting

/// A task fails mid-run (a failed commit) and the restart's first read of the checkpoint store
/// fails too (`get`, or `list`): that is one more failure for the restart strategy, which has
/// attempts left, so the job restarts again and ends with exactly-once output.
fn read_failure_during_restart(op: &'static str) {
    let store = Arc::new(MemoryStore::new());
    let sink = TransactionalStore::<Out>::new();
    // Nothing is subsumed (which would list and delete), so while running the job only puts.
    let mut cfg = config(store.clone(), 15, |c| c.retained = 1_000);
    cfg.restart = fixed_delay();
    let result = rt().block_on(async {
        let handle = job(&sink, 5_000, 2).spawn(cfg).unwrap();
        let stats = handle.checkpoint_stats();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.completed.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "3 checkpoints did not complete within 30 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The next get or list is the restart's.
        store.fail_next(op, 1);
        sink.fail_next_commits(1);
        handle.join().await
    });
    assert_eq!(store.injected_faults(), 1, "the injected {op} failure was hit");
    let result = result
        .unwrap_or_else(|e| panic!("a failed {op} while restarting ended the job although restarts were left: {e}"));
    assert!(result.restarts >= 2, "{} restarts", result.restarts);
    assert_exactly_once(&committed(&sink), &format!("{op} failing while restarting"));
}

#[test]
fn failed_get_while_restoring_is_retried_by_the_restart_strategy() {
    read_failure_during_restart("get");
}

#[test]
fn failed_list_while_restarting_is_retried_by_the_restart_strategy() {
    read_failure_during_restart("list");
}
