//! Embedded runs against corrupt or mismatched files and badly timed signals, as they were
//! found: the only retained checkpoint damaged, a savepoint restored into another output
//! directory, SIGTERM while the job waits to restart, `savepoint dispose` on a directory that
//! is not (only) a savepoint, and event files whose part count differs from the parallelism.
//! Each is refused with the file and the problem named, or handled, and nothing committed is
//! written twice.

// Tests driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::procs::{signal, wait_within};
use common::{committed_lines, write_input};

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_LOG");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sluice run wordcount` at parallelism 2, paced, checkpointing every 100 ms.
fn wordcount(input: &Path, out: &Path, ck: &Path, extra: &[&str]) -> Command {
    let mut c = sluice();
    c.args([
        "--log-level",
        "info",
        "run",
        "wordcount",
        "-p",
        "2",
        "--lines-per-second",
        "5000",
    ])
    .args(["--checkpoint-interval", "100ms"])
    .arg("--input")
    .arg(input)
    .arg("--output")
    .arg(out)
    .arg("--checkpoint-dir")
    .arg(ck)
    .args(extra);
    c
}

/// Completed checkpoint directories of the wordcount job.
fn completed(ck: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(ck.join("wordcount")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("_metadata").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Waits until a checkpoint completed and output was committed.
fn wait_for_commits(child: &mut Child, ck: &Path, out: &Path) {
    let start = Instant::now();
    while completed(ck).is_empty() || committed_lines(out).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(30), "no checkpoint completed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_damaged_lone_checkpoint_stops_the_rerun_instead_of_writing_output_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 30_000);
    let (out, ck) = (tmp.path().join("out"), tmp.path().join("ck"));
    let mut first = wordcount(&input, &out, &ck, &[]).stderr(Stdio::null()).spawn().unwrap();
    wait_for_commits(&mut first, &ck, &out);
    first.kill().unwrap();
    first.wait().unwrap();
    let before = committed_lines(&out);
    let lone = completed(&ck);
    // One checkpoint is retained; the kill may land between completing the next one and
    // deleting the one it replaces, leaving two: then the latest is the one that matters.
    assert!(matches!(lone.len(), 1 | 2), "one checkpoint retained: {lone:?}");
    // Damage a state file of the latest checkpoint.
    let state = walk(lone.last().unwrap())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "state"))
        .unwrap();
    let mut bytes = std::fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&state, bytes).unwrap();

    let again = wordcount(&input, &out, &ck, &[]).output().unwrap();
    let err = text(&again.stderr);
    assert_eq!(again.status.code(), Some(6), "{err}");
    assert!(
        err.contains("cannot be restored") && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(err.contains("--on-unusable-checkpoint"), "{err}");
    assert_eq!(committed_lines(&out), before, "output was committed again");
    assert_eq!(completed(&ck), lone, "the damaged checkpoint was deleted");

    // Asked for explicitly, it starts over (writing the committed output again).
    let fresh = wordcount(&input, &out, &ck, &["--start-fresh"]).output().unwrap();
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    let after = committed_lines(&out);
    assert_eq!(
        after.len(),
        before.len() + expected.len(),
        "a fresh start writes everything once more"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all.extend(walk(&p));
        } else {
            all.push(p);
        }
    }
    all.sort();
    all
}

/// Runs until a checkpoint completed, then SIGTERM with `--savepoint-dir`: the savepoint path.
fn take_savepoint(input: &Path, out: &Path, ck: &Path, sp: &Path) -> String {
    let mut child = wordcount(input, out, ck, &["--savepoint-dir", sp.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_commits(&mut child, ck, out);
    signal(&child, "-TERM");
    let output = wait_within(child, Duration::from_secs(30));
    assert!(output.status.success());
    text(&output.stdout).lines().last().unwrap().to_string()
}

#[test]
fn a_savepoint_restored_into_another_output_directory_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = write_input(tmp.path(), 30_000);
    let (out, sp) = (tmp.path().join("out"), tmp.path().join("sp"));
    let savepoint = take_savepoint(&input, &out, &tmp.path().join("ck"), &sp);
    let elsewhere = tmp.path().join("elsewhere");
    let start = Instant::now();
    let again = wordcount(
        &input,
        &elsewhere,
        &tmp.path().join("ck2"),
        &["--from-savepoint", &savepoint],
    )
    .output()
    .unwrap();
    let err = text(&again.stderr);
    assert_eq!(again.status.code(), Some(4), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "refused only after {:?}",
        start.elapsed()
    );
    assert!(
        err.contains(out.to_str().unwrap()) && err.contains(elsewhere.to_str().unwrap()),
        "{err}"
    );
    assert!(
        err.contains("new uid") && err.contains("--allow-non-restored-state"),
        "{err}"
    );
    // Into the same directory it resumes.
    let same = wordcount(&input, &out, &tmp.path().join("ck3"), &["--from-savepoint", &savepoint])
        .output()
        .unwrap();
    assert!(same.status.success(), "{}", text(&same.stderr));
}

#[test]
fn sigterm_while_the_job_waits_to_restart_stops_it_with_a_savepoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = write_input(tmp.path(), 30_000);
    let (out, ck, sp) = (tmp.path().join("out"), tmp.path().join("ck"), tmp.path().join("sp"));
    let log = tmp.path().join("run.log");
    let extra = [
        "--savepoint-dir",
        sp.to_str().unwrap(),
        "--restart-strategy",
        "fixed-delay:attempts=100,delay=1h",
    ];
    let mut child = wordcount(&input, &out, &ck, &extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_commits(&mut child, &ck, &out);
    // The sink's pending directory turns into a file: every attempt fails from now on.
    std::fs::rename(out.join("_pending"), tmp.path().join("moved")).unwrap();
    std::fs::write(out.join("_pending"), b"not a directory").unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("attempt failed; restarting")
    {
        assert!(start.elapsed() < Duration::from_secs(30), "the job did not fail");
        std::thread::sleep(Duration::from_millis(50));
    }
    let latest = completed(&ck).last().cloned().unwrap();
    signal(&child, "-TERM");
    let output = wait_within(child, Duration::from_secs(20));
    assert!(output.status.success(), "{}", std::fs::read_to_string(&log).unwrap());
    let path = text(&output.stdout).lines().last().unwrap().to_string();
    assert!(Path::new(&path).join("_metadata").is_file(), "no savepoint: {path}");
    let id: String = latest
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches("chk-")
        .into();
    assert!(
        path.ends_with(&id),
        "the savepoint {path} is not a copy of the latest checkpoint {id}"
    );
}

#[test]
fn dispose_deletes_only_what_the_savepoint_names_and_refuses_what_is_not_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = write_input(tmp.path(), 30_000);
    let sp = tmp.path().join("sp");
    let savepoint = take_savepoint(&input, &tmp.path().join("out"), &tmp.path().join("ck"), &sp);
    let notes = Path::new(&savepoint).join("notes.txt");
    std::fs::write(&notes, b"mine").unwrap();
    let out = sluice().args(["savepoint", "dispose", &savepoint]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("notes.txt"), "{}", text(&out.stdout));
    assert!(notes.is_file(), "a file not part of the savepoint was deleted");
    assert_eq!(
        walk(Path::new(&savepoint)),
        vec![notes.clone()],
        "savepoint files left behind"
    );

    // A directory without `_metadata`: refused, untouched.
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(plain.join("sub")).unwrap();
    std::fs::write(plain.join("sub/file"), b"x").unwrap();
    let out = sluice()
        .args(["savepoint", "dispose", plain.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(plain.join("sub/file").is_file());
    // A `_metadata` that is not one: refused, untouched.
    std::fs::write(plain.join("_metadata"), b"garbage").unwrap();
    let out = sluice()
        .args(["savepoint", "dispose", plain.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(plain.join("sub/file").is_file() && plain.join("_metadata").is_file());
}

#[test]
fn event_files_with_another_part_count_than_the_parallelism_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("events");
    sluice_core::connectors::nexmark::write_event_files(
        sluice_core::connectors::nexmark::NexmarkConfig::default(),
        5000,
        &dir,
        2,
    )
    .unwrap();
    let out = sluice()
        .args(["run", "nexmark-q8", "-p", "1", "--events-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds 2 part files and the source runs at parallelism 1"),
        "{err}"
    );
    let ok = sluice()
        .args(["run", "nexmark-q8", "-p", "2", "--events-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));
}
