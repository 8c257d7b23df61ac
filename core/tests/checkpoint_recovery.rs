//! Recovery from checkpoints when things go wrong around them.
//!
//! * A damaged latest checkpoint (a state file with a flipped byte, a truncated state file, a
//!   truncated `_metadata`) is detected by `CheckpointStorage::load` (the error names the file
//!   and the problem), and `load_latest` falls back to the previous complete checkpoint with a
//!   warning in the log. A job started again on the same store resumes from that fallback and
//!   commits every expected record. (Exactly-once cannot hold when the skipped checkpoint's
//!   transactions were already committed: its records are produced again. What is asserted
//!   then is at-least-once, with the duplicates confined to one replayed stretch per key.)
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

use sluice_core::checkpoint::{CheckpointConfig, CheckpointStorage, RestartStrategy};
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

/// Runs the job until at least 3 checkpoints completed, cancels it, damages the latest
/// checkpoint, checks detection and fallback, then runs the job again on the same stores to
/// its end and checks the committed output.
/// Returns the damaged checkpoint's id and the completed checkpoints left after the second run.
fn damaged_latest_checkpoint_falls_back(damage: Damage) -> (u64, Vec<u64>) {
    let rt = rt();
    let store = Arc::new(MemoryStore::new());
    let sink = TransactionalStore::<Out>::new();

    // 1. Run with several checkpoints, then cancel mid-way.
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
        first.cancelled,
        "the first run was cancelled mid-way, it must not have finished"
    );
    assert!(
        first.records_in < RECORDS,
        "the first run read all its input: {}",
        first.records_in
    );

    let storage = CheckpointStorage::new(store.clone(), JOB);
    let ids = rt.block_on(storage.completed_ids()).unwrap();
    assert!(
        ids.len() >= 2 && ids.len() <= 4,
        "retained 3 checkpoints (one more if cancelled while subsuming): {ids:?}"
    );
    let (previous, latest) = (ids[ids.len() - 2], ids[ids.len() - 1]);

    // 2. Damage the latest.
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

    // 3. Loading it says what is wrong and where.
    let err = rt
        .block_on(storage.load(latest))
        .expect_err("a damaged checkpoint must not load");
    let msg = err.to_string();
    assert!(
        msg.contains(&damaged_path),
        "{damage:?}: the error does not name '{damaged_path}': {msg}"
    );
    for w in damage.problem_words() {
        assert!(msg.contains(w), "{damage:?}: the error does not say '{w}': {msg}");
    }
    rt.block_on(storage.load(previous))
        .expect("the previous checkpoint is intact");

    // 4. load_latest falls back to the previous one and warns.
    let log = Captured::default();
    let loaded = rt
        .block_on(storage.load_latest(&log.logger()))
        .expect("load_latest")
        .expect("a usable checkpoint exists");
    assert_eq!(
        loaded.metadata.checkpoint_id, previous,
        "{damage:?}: fell back to the wrong checkpoint"
    );
    let lines = log.lines();
    let warning = lines
        .iter()
        .find(|l| l.contains("checkpoint is unusable; falling back to the previous one"))
        .unwrap_or_else(|| panic!("{damage:?}: no fallback warning in the log: {lines:?}"));
    assert!(warning.starts_with("WARN"), "{warning}");
    assert!(warning.contains(&format!("checkpoint={latest}")), "{warning}");
    assert!(
        warning.contains(&damaged_path),
        "the warning does not name the file: {warning}"
    );
    for w in damage.problem_words() {
        assert!(warning.contains(w), "the warning does not say '{w}': {warning}");
    }

    // 5. Run again on the same stores: it resumes from the fallback and finishes.
    let log2 = Captured::default();
    let second = rt
        .block_on(async {
            let env = job(&sink, 20_000, 2);
            let mut cfg = config(store.clone(), 20, |c| c.retained = 3);
            cfg.log = log2.logger();
            env.execute(cfg).await
        })
        .expect("the second run finishes");
    assert!(!second.cancelled);
    assert_eq!(
        second.resumed_from,
        Some(previous),
        "the second run must resume from the fallback"
    );
    let lines2 = log2.lines();
    assert!(
        lines2
            .iter()
            .any(|l| l.contains("falling back") && l.contains(&damaged_path)),
        "the second run's log does not warn about the damaged checkpoint: {lines2:?}"
    );
    assert_eq!(sink.open_transactions(), 0, "transactions left prepared");
    let left = rt.block_on(storage.completed_ids()).unwrap();

    // 6. At least once: every expected record is committed. Anything more can only be the
    //    records of the damaged checkpoint's transactions, committed by the first run and
    //    produced again after the fallback: each at most twice, and for each key one
    //    contiguous run of counts.
    let got = committed(&sink);
    let want = expected();
    let mut extra: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut gi = got.iter().peekable();
    for w in &want {
        loop {
            match gi.next() {
                Some(g) if g == w => break,
                Some(g) if g < w => extra.entry(g.0).or_default().push(g.1),
                Some(g) => panic!("{damage:?}: expected record {w:?} was never committed (next committed: {g:?})"),
                None => panic!("{damage:?}: expected record {w:?} was never committed"),
            }
        }
    }
    for g in gi {
        extra.entry(g.0).or_default().push(g.1);
    }
    let duplicates: usize = extra.values().map(Vec::len).sum();
    for (k, counts) in &extra {
        assert!(
            counts.windows(2).all(|w| w[1] == w[0] + 1),
            "{damage:?}: key {k}: duplicated counts {counts:?} are not one replayed stretch"
        );
    }
    eprintln!(
        "{damage:?}: fell back from checkpoint {latest} to {previous}; {} records committed, {} expected, {duplicates} duplicates",
        got.len(),
        want.len()
    );
    (latest, left)
}

/// A flipped byte in a state file of the latest checkpoint: checksum mismatch, fallback.
#[test]
fn corrupt_state_file_of_latest_checkpoint_falls_back_to_previous() {
    damaged_latest_checkpoint_falls_back(Damage::FlipStateByte);
}

/// A state file of the latest checkpoint cut in half: size mismatch, fallback.
#[test]
fn truncated_state_file_of_latest_checkpoint_falls_back_to_previous() {
    damaged_latest_checkpoint_falls_back(Damage::TruncateState);
}

/// A truncated `_metadata` of the latest checkpoint: fallback.
#[test]
fn truncated_metadata_of_latest_checkpoint_falls_back_to_previous() {
    damaged_latest_checkpoint_falls_back(Damage::TruncateMetadata);
}

/// Once newer checkpoints complete, the damaged one is subsumed like any other: with
/// `retained = 3`, at most 3 completed checkpoints are left, and the damaged one is not among
/// them.
#[test]
fn damaged_checkpoint_is_subsumed_after_the_fallback() {
    let (damaged, left) = damaged_latest_checkpoint_falls_back(Damage::FlipStateByte);
    assert!(
        !left.contains(&damaged) && left.len() <= 3,
        "after the second run, completed checkpoints {left:?} (retained = 3) still include the damaged {damaged}"
    );
}

/// Every checkpoint damaged: `load_latest` finds none (and warns about each); the job then
/// starts from scratch.
#[test]
fn all_checkpoints_damaged_means_no_checkpoint() {
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
    let loaded = rt.block_on(storage.load_latest(&log.logger())).expect("load_latest");
    assert!(
        loaded.is_none(),
        "a damaged checkpoint was loaded: {:?}",
        loaded.map(|c| c.metadata.checkpoint_id)
    );
    let warnings = log
        .lines()
        .iter()
        .filter(|l| l.contains("falling back") && l.contains("checksum"))
        .count();
    assert_eq!(warnings, ids.len(), "{:?}", log.lines());
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
