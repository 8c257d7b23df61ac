//! Savepoints in embedded mode: a keyed windowed job at parallelism 2 is stopped with a
//! savepoint mid-stream and resumed at parallelism 3 and at 1 (rescaling sources, keyed
//! state and sink transactions); the committed output of each equals the output of one
//! uninterrupted run, computed here directly. A savepoint moved to another directory still
//! restores; a job with an operator removed and another added restores only with
//! `allow_non_restored_state`; damaged savepoints are refused naming the file and the problem.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::savepoint::{list_savepoints, load_savepoint};
use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy};
use sluice_core::connectors::{GeneratorSource, TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{BlobStore, LocalFsStore, MemoryStore};
use sluice_core::window::WindowAssigner;
use sluice_core::{ExecutionConfig, JobError, SavepointRestore, StreamEnv, WatermarkStrategy};

const RECORDS: u64 = 4_000;
const KEYS: u64 = 7;
/// Event time of record i: 10 ms apart; windows of 500 ms.
const WINDOW_MS: u64 = 500;

type Row = (u64, u64, u64);

/// The uninterrupted output: for each key and window, the number of records.
fn expected() -> Vec<Row> {
    let mut counts: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry((i % KEYS, i * 10 / WINDOW_MS)).or_default() += 1;
    }
    counts.into_iter().map(|((k, w), n)| (k, w, n)).collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The job; `variant` changes its operators: 0 as taken, 1 with the window operator replaced
/// by one of another uid and a filter added, 2 with the window operator's uid renamed, 3 with
/// the window's state type changed (counts as `i64`).
fn job(parallelism: u32, sink: TransactionalStore<Row>, variant: u8) -> StreamEnv {
    job_with_sink_uid(parallelism, sink, variant, "sink")
}

fn job_with_sink_uid(parallelism: u32, sink: TransactionalStore<Row>, variant: u8, sink_uid: &str) -> StreamEnv {
    let env = StreamEnv::new("windowed-count");
    env.set_parallelism(parallelism);
    if variant == 3 {
        // Same uid, another accumulator type: the window's state no longer fits.
        let typed = env
            .from_source(
                GeneratorSource::new(7, Some(RECORDS), |i, _| i).with_records_per_second(4_000),
                WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(100))
                    .with_timestamp_assigner(|i: &u64| (*i * 10) as i64),
                "numbers",
            )
            .uid("numbers")
            .map(|i: u64| (i % KEYS, i * 10 / WINDOW_MS, 1i64))
            .key_by(|r: &(u64, u64, i64)| r.0)
            .window(WindowAssigner::tumbling(Duration::from_millis(WINDOW_MS)))
            .reduce(|a: (u64, u64, i64), b: (u64, u64, i64)| (a.0, a.1, a.2 + b.2))
            .uid("window")
            .map(|r: (u64, u64, i64)| (r.0, r.1, r.2 as u64));
        typed
            .sink_to_transactional(TransactionalStoreSink::new(sink), "sink")
            .uid(sink_uid);
        return env;
    }
    let numbers = env
        .from_source(
            GeneratorSource::new(7, Some(RECORDS), |i, _| i).with_records_per_second(4_000),
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(100))
                .with_timestamp_assigner(|i: &u64| (*i * 10) as i64),
            "numbers",
        )
        .uid("numbers")
        .map(|i: u64| (i % KEYS, i * 10 / WINDOW_MS, 1u64));
    let counted = if variant == 0 || variant == 2 {
        numbers
            .key_by(|r: &Row| r.0)
            .window(WindowAssigner::tumbling(Duration::from_millis(WINDOW_MS)))
            .reduce(|a: Row, b: Row| (a.0, a.1, a.2 + b.2))
            .uid(if variant == 0 { "window" } else { "window-renamed" })
    } else {
        numbers
            .filter(|_| true)
            .uid("added-filter")
            .key_by(|r: &Row| r.0)
            .window(WindowAssigner::tumbling(Duration::from_millis(WINDOW_MS)))
            .reduce(|a: Row, b: Row| (a.0, a.1, a.2 + b.2))
            .uid("window-v2")
    };
    counted
        .sink_to_transactional(TransactionalStoreSink::new(sink), "sink")
        .uid(sink_uid);
    env
}

fn config(from: Option<SavepointRestore>) -> ExecutionConfig {
    let mut ck = CheckpointConfig::new(Duration::from_millis(50), Arc::new(MemoryStore::new()));
    ck.timeout = Duration::from_secs(10);
    ExecutionConfig {
        checkpointing: Some(ck),
        restart: Some(RestartStrategy::None),
        from_savepoint: from,
        ..ExecutionConfig::default()
    }
}

fn sorted(mut v: Vec<Row>) -> Vec<Row> {
    v.sort();
    v
}

/// Runs the job at parallelism 2 into `sink` and stops it with a savepoint into `dir` after
/// about a third of its input; returns the savepoint's directory.
fn first_half(sink: &TransactionalStore<Row>, dir: &Path) -> std::path::PathBuf {
    rt().block_on(async {
        let handle = job(2, sink.clone(), 0).spawn(config(None)).unwrap();
        let controller = handle.controller();
        tokio::time::sleep(Duration::from_millis(350)).await;
        let target: Arc<dyn BlobStore> = Arc::new(LocalFsStore::new(dir).unwrap());
        let info = controller
            .stop_with_savepoint(target, false)
            .await
            .expect("savepoint taken");
        let result = handle.join().await.expect("the job stops cleanly");
        assert!(result.cancelled, "stopped, not finished");
        assert!(
            result.records_in < RECORDS,
            "the savepoint must come mid-stream ({} records read)",
            result.records_in
        );
        dir.join(info.name)
    })
}

fn resume(
    sink: &TransactionalStore<Row>,
    savepoint: &Path,
    parallelism: u32,
    variant: u8,
    allow: bool,
) -> Result<(), JobError> {
    resume_mapped(sink, savepoint, parallelism, variant, allow, "")
}

fn resume_mapped(
    sink: &TransactionalStore<Row>,
    savepoint: &Path,
    parallelism: u32,
    variant: u8,
    allow: bool,
    mapping: &str,
) -> Result<(), JobError> {
    rt().block_on(async {
        let from = SavepointRestore {
            store: Arc::new(LocalFsStore::new(savepoint).unwrap()),
            allow_non_restored_state: allow,
            uid_mapping: sluice_core::runtime::parse_uid_mapping(mapping).unwrap(),
        };
        job(parallelism, sink.clone(), variant)
            .execute(config(Some(from)))
            .await
            .map(|_| ())
    })
}

#[test]
fn stop_with_savepoint_then_resume_at_three_and_at_one_is_exact() {
    for p in [3, 1] {
        let dir = tempfile::tempdir().unwrap();
        let sink = TransactionalStore::new();
        let sp = first_half(&sink, dir.path());
        let before = sink.committed().len();
        assert!(
            before < expected().len(),
            "some output is still to come after the savepoint"
        );
        resume(&sink, &sp, p, 0, false).unwrap();
        assert_eq!(sorted(sink.committed()), expected(), "resumed at parallelism {p}");
    }
}

#[test]
fn a_moved_savepoint_restores() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TransactionalStore::new();
    let sp = first_half(&sink, &dir.path().join("a"));
    let moved = dir.path().join("elsewhere").join("copy");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&sp, &moved).unwrap();
    resume(&sink, &moved, 2, 0, false).unwrap();
    assert_eq!(sorted(sink.committed()), expected());
}

#[test]
fn a_changed_job_restores_only_what_matches_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TransactionalStore::new();
    let sp = first_half(&sink, dir.path());
    let err = resume(&sink, &sp, 2, 1, false).unwrap_err().to_string();
    assert!(
        err.contains("'window'") && err.contains("--allow-non-restored-state"),
        "{err}"
    );
    // Allowed: the window's state is dropped; sources and sink resume where they were, so
    // every record after the savepoint is counted once and nothing is duplicated.
    resume(&sink, &sp, 2, 1, true).unwrap();
    let committed = sorted(sink.committed());
    let want = expected();
    let mut got: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for (k, w, n) in &committed {
        *got.entry((*k, *w)).or_default() += n;
    }
    let total: u64 = got.values().sum();
    let windows_before: u64 = want.iter().map(|r| r.2).sum();
    assert!(
        total <= windows_before,
        "records counted twice: {total} > {windows_before}"
    );
    for (k, w, n) in &want {
        assert!(
            got.get(&(*k, *w)).copied().unwrap_or(0) <= *n,
            "window ({k}, {w}) counted more records than it has"
        );
    }
}

#[test]
fn a_running_job_takes_a_savepoint_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TransactionalStore::new();
    rt().block_on(async {
        let handle = job(2, sink.clone(), 0).spawn(config(None)).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let target: Arc<dyn BlobStore> = Arc::new(LocalFsStore::new(dir.path()).unwrap());
        let info = handle.controller().savepoint(target.clone()).await.unwrap();
        let result = handle.join().await.unwrap();
        assert!(!result.cancelled);
        assert_eq!(list_savepoints(target.as_ref()).await.unwrap(), vec![info.name.clone()]);
        let sp = load_savepoint(&LocalFsStore::new(dir.path().join(&info.name)).unwrap())
            .await
            .unwrap();
        assert_eq!(sp.metadata.checkpoint_id, info.checkpoint_id);
        assert!(sp.metadata.operators.iter().any(|o| o.key == "window"));
    });
    assert_eq!(sorted(sink.committed()), expected());
}

#[test]
fn damaged_savepoints_are_refused_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TransactionalStore::new();
    let sp = first_half(&sink, dir.path());
    let copy = |name: &str| {
        let to = dir.path().join(name);
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(&sp)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success());
        to
    };
    let state_file = |root: &Path| {
        let window = root.join("window");
        std::fs::read_dir(&window).unwrap().next().unwrap().unwrap().path()
    };
    // A flipped byte in a state file.
    let flipped = copy("flipped");
    let f = state_file(&flipped);
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let err = resume(&TransactionalStore::new(), &flipped, 2, 0, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("window/") && err.contains("checksum mismatch"), "{err}");
    // A truncated `_metadata`.
    let truncated = copy("truncated");
    let meta = truncated.join("_metadata");
    let bytes = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &bytes[..bytes.len() / 3]).unwrap();
    let err = resume(&TransactionalStore::new(), &truncated, 2, 0, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("_metadata") && (err.contains("truncated") || err.contains("bytes")),
        "{err}"
    );
    // Another format version.
    let versioned = copy("versioned");
    let meta = versioned.join("_metadata");
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[8] = 99;
    std::fs::write(&meta, bytes).unwrap();
    let err = resume(&TransactionalStore::new(), &versioned, 2, 0, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("_metadata") && err.contains("version"), "{err}");
    // Not a savepoint at all.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = resume(&TransactionalStore::new(), &empty, 2, 0, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("_metadata"), "{err}");
}

#[test]
fn a_renamed_operator_restores_through_a_uid_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TransactionalStore::new();
    let sp = first_half(&sink, dir.path());
    let err = resume(&sink, &sp, 2, 2, false).unwrap_err().to_string();
    assert!(
        err.contains("'window'"),
        "without a mapping the old state has no operator: {err}"
    );
    let err = resume_mapped(&sink, &sp, 2, 2, false, "windw=window-renamed")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no operator 'windw'") && err.contains("window"), "{err}");
    resume_mapped(&sink, &sp, 3, 2, false, "window=window-renamed").unwrap();
    assert_eq!(
        sorted(sink.committed()),
        expected(),
        "the renamed window operator kept its state"
    );
}

/// A/B: two jobs start from the same savepoint at the same time, each with its own checkpoint
/// store and its own output (their sinks get new uids: the savepoint's pending transactions
/// belong to the original output). Both finish with the same output, and the savepoint is
/// left exactly as it was.
#[test]
fn two_jobs_from_one_savepoint_at_once_do_not_interfere() {
    let dir = tempfile::tempdir().unwrap();
    let sp = first_half(&TransactionalStore::new(), dir.path());
    let snapshot = |root: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for op in std::fs::read_dir(root).unwrap() {
            let p = op.unwrap().path();
            let entries: Vec<std::path::PathBuf> = if p.is_dir() {
                std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect()
            } else {
                vec![p]
            };
            for f in entries {
                files.push((f.display().to_string(), std::fs::read(&f).unwrap()));
            }
        }
        files.sort();
        files
    };
    let before = snapshot(&sp);
    let (a, b) = (TransactionalStore::new(), TransactionalStore::new());
    rt().block_on(async {
        let run = |sink: TransactionalStore<Row>, uid: &'static str, p: u32| {
            let from = SavepointRestore {
                store: Arc::new(LocalFsStore::new(&sp).unwrap()),
                allow_non_restored_state: true,
                uid_mapping: Default::default(),
            };
            job_with_sink_uid(p, sink, 0, uid)
                .spawn(config(Some(from)))
                .expect("valid job")
                .join()
        };
        let (ra, rb) = tokio::join!(run(a.clone(), "sink-a", 2), run(b.clone(), "sink-b", 3));
        ra.expect("job A finishes");
        rb.expect("job B finishes");
    });
    let (out_a, out_b) = (sorted(a.committed()), sorted(b.committed()));
    assert!(!out_a.is_empty());
    assert_eq!(out_a, out_b, "both jobs resume the same state");
    assert_eq!(snapshot(&sp), before, "restoring does not touch the savepoint");
}

#[test]
fn a_changed_state_type_is_refused_naming_the_operator_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TransactionalStore::new();
    let sp = first_half(&sink, dir.path());
    let err = resume(&sink, &sp, 2, 3, false).unwrap_err().to_string();
    assert!(
        err.contains("operator 'window'") && err.contains("state 'windows'") && err.contains("i64"),
        "{err}"
    );
}

/// A running count per key in a keyed process function: version 1 keeps it as `u32`,
/// version 2 as `u64`, migrating saved `u32` counts when `migrate` is set.
#[derive(Clone)]
struct Counter {
    wide: bool,
    migrate: bool,
    narrow: Option<sluice_core::state::ValueState<u32>>,
    wide_state: Option<sluice_core::state::ValueState<u64>>,
}

impl sluice_core::KeyedProcessFunction for Counter {
    type Key = u64;
    type In = u64;
    type Out = (u64, u64);
    fn open(&mut self, s: &mut sluice_core::state::KeyedStateStore<u64>) -> Result<(), sluice_core::OperatorError> {
        if self.wide {
            self.wide_state = Some(s.value_state("count")?);
            if self.migrate {
                s.migrate_state::<u32, u64>("count", u64::from);
            }
        } else {
            self.narrow = Some(s.value_state("count")?);
        }
        Ok(())
    }
    fn process_element(
        &mut self,
        v: u64,
        ctx: &mut sluice_core::KeyedContext<'_, u64>,
        out: &mut sluice_core::Collector<'_, (u64, u64)>,
    ) -> Result<(), sluice_core::OperatorError> {
        let n = match (self.narrow, self.wide_state) {
            (Some(s), _) => u64::from(ctx.update_value(s, |c| {
                *c += 1;
                *c
            })),
            (_, Some(s)) => ctx.update_value(s, |c| {
                *c += 1;
                *c
            }),
            _ => unreachable!("open registers one of the two"),
        };
        out.collect((v % KEYS, n));
        Ok(())
    }
}

fn counting_job(p: u32, sink: TransactionalStore<(u64, u64)>, counter: Counter) -> StreamEnv {
    let env = StreamEnv::new("counting");
    env.set_parallelism(p);
    env.from_source(
        GeneratorSource::new(3, Some(RECORDS), |i, _| i).with_records_per_second(4_000),
        WatermarkStrategy::no_watermarks(),
        "numbers",
    )
    .uid("numbers")
    .key_by(|i: &u64| i % KEYS)
    .process(counter)
    .uid("counter")
    .sink_to_transactional(TransactionalStoreSink::new(sink), "sink")
    .uid("sink");
    env
}

#[test]
fn a_state_migration_restores_state_saved_with_the_old_type() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TransactionalStore::new();
    let v1 = Counter {
        wide: false,
        migrate: false,
        narrow: None,
        wide_state: None,
    };
    let sp = rt().block_on(async {
        let handle = counting_job(2, sink.clone(), v1).spawn(config(None)).unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        let target: Arc<dyn BlobStore> = Arc::new(LocalFsStore::new(dir.path()).unwrap());
        let info = handle.controller().stop_with_savepoint(target, false).await.unwrap();
        handle.join().await.unwrap();
        dir.path().join(info.name)
    });
    let from = |sp: &Path| SavepointRestore {
        store: Arc::new(LocalFsStore::new(sp).unwrap()),
        allow_non_restored_state: false,
        uid_mapping: Default::default(),
    };
    let v2 = |migrate| Counter {
        wide: true,
        migrate,
        narrow: None,
        wide_state: None,
    };
    let refused = rt()
        .block_on(counting_job(3, sink.clone(), v2(false)).execute(config(Some(from(&sp)))))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("operator 'counter'")
            && refused.contains("state 'count'")
            && refused.contains("migrate_state"),
        "{refused}"
    );
    rt().block_on(counting_job(3, sink.clone(), v2(true)).execute(config(Some(from(&sp)))))
        .unwrap();
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry(i % KEYS).or_default() += 1;
    }
    let want: Vec<(u64, u64)> = counts
        .iter()
        .flat_map(|(k, n)| (1..=*n).map(move |c| (*k, c)))
        .collect();
    let mut got = sink.committed();
    got.sort();
    assert_eq!(got, want, "counts go on from the migrated state");
}
