//! The tiered state backend end to end, through the `sluice` binary: the same results as the
//! heap backend (and checkpoints that store only new runs), a SIGKILL mid-run resumed exactly
//! from a checkpoint whose state lives in shared run files (with a disk tier), savepoints that carry state from heap to tiered and back (and restore
//! after the tiered checkpoint store is gone: savepoints are self-contained), and refused
//! options.

// A test driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::procs::{signal, sluice, text, wait_within};
use common::{assert_same_lines, committed_lines, write_input};

/// How long one run may take.
const LIMIT: Duration = Duration::from_secs(120);

const TIERED: &[&str] = &["--state-backend", "tiered", "--state-cache-memory", "1MiB"];

/// The run files of `job` under checkpoint directory `ck`.
fn run_files(ck: &Path, job: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![ck.join(job).join("shared")];
    while let Some(dir) = pending.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                pending.push(p);
            } else if p.extension().is_some_and(|x| x == "run") {
                found.push(p);
            }
        }
    }
    found
}

/// The run files the completed checkpoints of `job` under `ck` name.
fn named_runs(ck: &Path, job: &str) -> Vec<PathBuf> {
    let mut named = Vec::new();
    for e in std::fs::read_dir(ck.join(job)).unwrap().flatten() {
        let meta = e.path().join("_metadata");
        if let Ok(bytes) = std::fs::read(&meta) {
            let m = sluice_core::checkpoint::CheckpointMetadata::decode("m", &bytes).unwrap();
            named.extend(m.shared_files().into_iter().map(|f| ck.join(f.path)));
        }
    }
    named
}

/// A bounded Nexmark query at parallelism 1 (its output order is then deterministic too).
fn nexmark(query: &str, out: &Path, ck: &Path, extra: &[&str]) -> Output {
    nexmark_cmd(query, out, ck, extra).output().unwrap()
}

/// [`nexmark`], to be started.
fn nexmark_cmd(query: &str, out: &Path, ck: &Path, extra: &[&str]) -> Command {
    let mut c = sluice();
    c.args([
        "run",
        query,
        "--events",
        "60000",
        // Paced, so that dozens of checkpoints complete, runs are compacted, and
        // subsumed checkpoints' runs are deleted.
        "--events-per-second",
        "30000",
        "-p",
        "1",
        "--checkpoint-interval",
        "50ms",
    ])
    .arg("--checkpoint-dir")
    .arg(ck)
    .arg("--output")
    .arg(out)
    .args(extra)
    .args(["-q", "--log-format", "json", "--log-level", "info"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// The full and incremental sizes of each completed checkpoint, from the JSON log.
fn checkpoint_sizes(stderr: &[u8]) -> Vec<(u64, u64)> {
    text(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "checkpoint complete")
        .map(|v| {
            let size = v["size"].as_u64().expect("a completed checkpoint logs its size");
            let incremental = v["incremental_size"]
                .as_u64()
                .expect("a completed checkpoint logs its incremental size");
            (size, incremental)
        })
        .collect()
}

#[test]
fn tiered_and_heap_state_give_the_same_results() {
    // q3 and q4 keep keyed state in process functions, q5 and q8 in windows.
    for query in ["nexmark-q3", "nexmark-q4", "nexmark-q5", "nexmark-q8"] {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        let heap = nexmark(query, &p("out-heap"), &p("ck-heap"), &[]);
        assert!(heap.status.success(), "{}", text(&heap.stderr));
        let tiered = nexmark(query, &p("out-tiered"), &p("ck-tiered"), TIERED);
        assert!(tiered.status.success(), "{}", text(&tiered.stderr));
        let want = committed_lines(&p("out-heap"));
        assert!(!want.is_empty(), "{query} wrote nothing");
        assert_eq!(committed_lines(&p("out-tiered")), want, "{query}");
        let runs = run_files(&p("ck-tiered"), query);
        assert!(!runs.is_empty(), "{query}: no run file was written");
        assert!(run_files(&p("ck-heap"), query).is_empty());
        // Runs no retained checkpoint names were deleted as checkpoints were subsumed.
        let named = named_runs(&p("ck-tiered"), query);
        let stray: Vec<_> = runs.iter().filter(|r| !named.contains(*r)).collect();
        assert!(
            stray.is_empty(),
            "{query}: runs no checkpoint names are left: {stray:?}"
        );
        // The heap backend stores everything every time; the tiered one only the new runs
        // (and a manifest), once runs are shared between checkpoints.
        let heap_sizes = checkpoint_sizes(&heap.stderr);
        assert!(heap_sizes.len() > 2, "{query}: too few checkpoints: {heap_sizes:?}");
        assert!(heap_sizes.iter().all(|(full, inc)| full == inc), "{heap_sizes:?}");
        let sizes = checkpoint_sizes(&tiered.stderr);
        assert!(sizes.len() > 2, "{query}: too few checkpoints: {sizes:?}");
        assert!(sizes.iter().all(|(full, inc)| inc <= full), "{sizes:?}");
        assert!(
            sizes.iter().any(|(full, inc)| inc < full),
            "{query}: no tiered checkpoint shared a run with the one before: {sizes:?}"
        );
    }
}

/// `sluice run wordcount` at parallelism 2, paced, checkpointing every 100 ms.
fn wordcount(input: &Path, out: &Path, ck: &Path, extra: &[&str]) -> Command {
    let mut c = sluice();
    c.args(["run", "wordcount", "-p", "2", "--lines-per-second", "5000"])
        .args(["--checkpoint-interval", "100ms", "--restart-strategy", "none"])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--checkpoint-dir")
        .arg(ck)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The id of the latest completed checkpoint of `job` (0 if none; older ones are deleted as
/// newer ones complete).
fn latest_checkpoint(ck: &Path, job: &str) -> u64 {
    std::fs::read_dir(ck.join(job))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("_metadata").is_file())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Waits until `n` more checkpoints of `job` completed since the run started.
fn wait_for_checkpoints(child: &mut Child, ck: &Path, job: &str, n: u64) {
    let start = Instant::now();
    let before = latest_checkpoint(ck, job);
    while latest_checkpoint(ck, job) < before + n {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint completed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_tiered_job_killed_mid_run_resumes_exactly_from_its_shared_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 30_000);
    let (out, ck) = (tmp.path().join("out"), tmp.path().join("ck"));
    // With a disk tier below a cache too small for the state: the killed process's claim
    // on the directory goes with it, and the next one starts the tier afresh.
    let cache = tmp.path().join("cache");
    let args: Vec<&str> = [
        TIERED,
        &["--state-cache-disk", "64MiB", "--state-cache-dir"],
        &[cache.to_str().unwrap()],
    ]
    .concat();
    let mut first = wordcount(&input, &out, &ck, &args).spawn().unwrap();
    wait_for_checkpoints(&mut first, &ck, "wordcount", 3);
    signal(&first, "-KILL");
    let _ = wait_within(first, LIMIT);
    assert!(!run_files(&ck, "wordcount").is_empty(), "the state was not tiered");
    let second = wait_within(wordcount(&input, &out, &ck, &args).spawn().unwrap(), LIMIT);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_same_lines(&committed_lines(&out), &expected, "tiered wordcount after SIGKILL");
}

/// Runs `job` until two checkpoints completed, then SIGTERM with `--savepoint-dir`: the
/// savepoint's path (printed last).
fn savepoint_after_checkpoints(mut c: Command, ck: &Path, job: &str, sp: &Path) -> String {
    let mut child = c.args(["--savepoint-dir", sp.to_str().unwrap()]).spawn().unwrap();
    wait_for_checkpoints(&mut child, ck, job, 2);
    signal(&child, "-TERM");
    let output = wait_within(child, LIMIT);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).lines().last().unwrap().to_string()
}

#[test]
fn savepoints_carry_state_from_heap_to_tiered_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 30_000);
    let p = |n: &str| tmp.path().join(n);
    let out = p("out");
    let heap_sp = savepoint_after_checkpoints(
        wordcount(&input, &out, &p("ck1"), &[]),
        &p("ck1"),
        "wordcount",
        &p("sp"),
    );
    let from = ["--from-savepoint", heap_sp.as_str()];
    let tiered = wordcount(&input, &out, &p("ck2"), &[TIERED, &from[..]].concat());
    let tiered_sp = savepoint_after_checkpoints(tiered, &p("ck2"), "wordcount", &p("sp"));
    assert!(
        !run_files(&p("ck2"), "wordcount").is_empty(),
        "the middle run was not tiered"
    );
    // The savepoint names no run of the tiered checkpoint store: it restores without it.
    let meta = std::fs::read(Path::new(&tiered_sp).join("_metadata")).unwrap();
    let meta = sluice_core::checkpoint::CheckpointMetadata::decode("sp", &meta).unwrap();
    assert!(meta.shared_files().is_empty(), "{:?}", meta.shared_files());
    std::fs::remove_dir_all(p("ck2")).unwrap();
    let last = wait_within(
        wordcount(&input, &out, &p("ck3"), &["--from-savepoint", &tiered_sp])
            .spawn()
            .unwrap(),
        LIMIT,
    );
    assert!(last.status.success(), "{}", text(&last.stderr));
    assert_same_lines(
        &committed_lines(&out),
        &expected,
        "heap -> tiered -> heap through savepoints",
    );
}

/// Window contents and their timers cross backends too: q5 (sliding windows) goes heap ->
/// tiered -> heap through two savepoints and ends with the output of an uninterrupted run.
#[test]
fn windows_move_between_backends_through_savepoints() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let query = "nexmark-q5";
    let whole = nexmark(query, &p("out-whole"), &p("ck-whole"), &[]);
    assert!(whole.status.success(), "{}", text(&whole.stderr));
    let want = committed_lines(&p("out-whole"));
    assert!(!want.is_empty());
    let out = p("out");
    let heap_sp = savepoint_after_checkpoints(nexmark_cmd(query, &out, &p("ck1"), &[]), &p("ck1"), query, &p("sp"));
    let from = ["--from-savepoint", heap_sp.as_str()];
    let tiered = nexmark_cmd(query, &out, &p("ck2"), &[TIERED, &from[..]].concat());
    let tiered_sp = savepoint_after_checkpoints(tiered, &p("ck2"), query, &p("sp"));
    assert!(!run_files(&p("ck2"), query).is_empty(), "the middle run was not tiered");
    let rest = nexmark(query, &out, &p("ck3"), &["--from-savepoint", &tiered_sp]);
    assert!(rest.status.success(), "{}", text(&rest.stderr));
    assert_same_lines(&committed_lines(&out), &want, "q5: heap -> tiered -> heap");
}

/// A tiered window job killed mid-run resumes from its checkpoint: window contents from the
/// shared runs, their timers from the state file (nothing derives them there).
#[test]
fn a_tiered_window_job_killed_mid_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let query = "nexmark-q5";
    let whole = nexmark(query, &p("out-whole"), &p("ck-whole"), &[]);
    assert!(whole.status.success(), "{}", text(&whole.stderr));
    let (out, ck) = (p("out"), p("ck"));
    let mut first = nexmark_cmd(query, &out, &ck, TIERED).spawn().unwrap();
    wait_for_checkpoints(&mut first, &ck, query, 3);
    signal(&first, "-KILL");
    let _ = wait_within(first, LIMIT);
    assert!(!run_files(&ck, query).is_empty(), "the state was not tiered");
    let second = nexmark(query, &out, &ck, TIERED);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_same_lines(
        &committed_lines(&out),
        &committed_lines(&p("out-whole")),
        "tiered q5 after SIGKILL",
    );
}

#[test]
fn a_tiered_checkpoint_is_refused_by_the_heap_backend_naming_the_way_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = write_input(tmp.path(), 30_000);
    let (out, ck) = (tmp.path().join("out"), tmp.path().join("ck"));
    let mut first = wordcount(&input, &out, &ck, TIERED).spawn().unwrap();
    wait_for_checkpoints(&mut first, &ck, "wordcount", 2);
    signal(&first, "-KILL");
    let _ = wait_within(first, LIMIT);
    let heap = wait_within(wordcount(&input, &out, &ck, &[]).spawn().unwrap(), LIMIT);
    let err = text(&heap.stderr);
    assert!(!heap.status.success());
    assert!(err.contains("tiered") && err.contains("savepoint"), "{err}");
    // Nor is a tiered checkpoint a savepoint: its runs are in the job's directory.
    let chk = ck
        .join("wordcount")
        .join(format!("chk-{:010}", latest_checkpoint(&ck, "wordcount")));
    assert!(chk.join("_metadata").is_file(), "{}", chk.display());
    let from = ["--from-savepoint", chk.to_str().unwrap()];
    let as_savepoint = wait_within(
        wordcount(&input, &out, &tmp.path().join("ck2"), &[TIERED, &from[..]].concat())
            .spawn()
            .unwrap(),
        LIMIT,
    );
    let err = text(&as_savepoint.stderr);
    assert!(!as_savepoint.status.success());
    assert!(
        err.contains("not a savepoint: a checkpoint of the tiered state backend"),
        "{err}"
    );
}

#[test]
fn bad_state_options_are_refused_naming_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let ck = ck.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--state-backend", "tiered"], "--checkpoint-dir"),
        (&["--state-backend", "rocksdb"], "heap or tiered"),
        (&["--state-cache-memory", "64MiB"], "--state-backend tiered"),
        (
            &[
                "--state-backend",
                "tiered",
                "--state-cache-memory",
                "100KiB",
                "--checkpoint-dir",
                ck,
                "--checkpoint-interval",
                "1s",
            ],
            "at least 1MiB",
        ),
        (
            &[
                "--state-backend",
                "tiered",
                "--state-cache-memory",
                "12XB",
                "--checkpoint-dir",
                ck,
                "--checkpoint-interval",
                "1s",
            ],
            "unknown size unit 'XB'",
        ),
    ];
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (file, cache) = (file.to_str().unwrap(), tmp.path().join("cache"));
    let cache = cache.to_str().unwrap();
    let tiered = |more: &[&'static str]| -> Vec<&str> {
        let mut v = vec![
            "--state-backend",
            "tiered",
            "--checkpoint-interval",
            "1s",
            "--checkpoint-dir",
            ck,
        ];
        v.extend_from_slice(more);
        v
    };
    let disk_cases: Vec<(Vec<&str>, &str)> = vec![
        (tiered(&["--state-cache-disk", "1GiB"]), "needs --state-cache-dir"),
        (vec!["--state-cache-dir", cache], "--state-backend tiered"),
        (
            [tiered(&["--state-cache-dir"]), vec![cache]].concat(),
            "needs --state-cache-disk",
        ),
        (
            [
                tiered(&["--state-cache-disk", "1MiB", "--state-cache-dir"]),
                vec![cache],
            ]
            .concat(),
            "must be at least",
        ),
        (
            [
                tiered(&["--state-cache-disk", "64MiB", "--state-cache-dir"]),
                vec![file],
            ]
            .concat(),
            "is not a directory",
        ),
        (
            [
                tiered(&["--state-cache-disk", "900TiB", "--state-cache-dir"]),
                vec![cache],
            ]
            .concat(),
            "bytes free",
        ),
        (
            [tiered(&["--state-cache-disk", "64MiB", "--state-cache-dir"]), vec![ck]].concat(),
            "overlap",
        ),
    ];
    let disk_cases: Vec<(&[&str], &str)> = disk_cases.iter().map(|(a, w)| (a.as_slice(), *w)).collect();
    let cases: Vec<(&[&str], &str)> = cases.iter().copied().chain(disk_cases).collect();
    // Cache settings in a file (or the environment) that picks heap would be ignored.
    let conf = tmp.path().join("sluice.toml");
    std::fs::write(&conf, "[state]\nbackend = \"heap\"\ncache-disk = \"64MiB\"\n").unwrap();
    let o = sluice()
        .args(["run", "nexmark-q4", "--events", "10", "--print", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o.stderr).contains("[state] backend is heap"),
        "{}",
        text(&o.stderr)
    );
    for (args, want) in cases {
        let o = sluice()
            .args(["run", "nexmark-q4", "--events", "10", "--print"])
            .args(args)
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
