//! Kill and resume: `sluice run wordcount` with checkpoints is killed with SIGKILL mid-run, and
//! a second run of the same command resumes from the latest checkpoint and finishes. The
//! committed part files in the output directory (the union over both runs) must then hold
//! exactly the output of a failure-free run, computed here independently of the job's code:
//! for each word seen n times, the lines `word<TAB>1` .. `word<TAB>n`, each once. Nothing may
//! be left pending in `_pending/`.
//!
//! The kill comes at three moments: before the first checkpoint could complete, after the
//! second, and after a dozen; and once twice in a row (the resumed run is killed as well). Bad checkpoint options are rejected with a one-line error naming
//! the option, a non-zero exit code, and no panic.

// A test driving a child process: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LINES: usize = 30_000;

use common::{assert_same_lines, committed_lines, write_input};

struct Dirs {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
    ck: PathBuf,
    expected: Vec<String>,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), LINES);
    Dirs {
        out: tmp.path().join("out"),
        ck: tmp.path().join("ck"),
        input,
        expected,
        _tmp: tmp,
    }
}

fn run_command(d: &Dirs) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("run")
        .arg("wordcount")
        .arg("--input")
        .arg(&d.input)
        .arg("--output")
        .arg(&d.out)
        .args(["-p", "2"])
        .arg("--checkpoint-dir")
        .arg(&d.ck)
        .args([
            "--checkpoint-interval",
            "100ms",
            "--lines-per-second",
            "10000",
            "--restart-strategy",
            "none",
        ])
        .env_remove("SLUICE_LOG");
    c
}

/// The highest checkpoint id with a `_metadata` under `ck/wordcount/` (0 if none).
fn latest_checkpoint(ck: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(ck.join("wordcount")) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_metadata").is_file())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// When to kill a run.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// As soon as the sink has opened, before the first checkpoint (at 100 ms) is likely done
    /// (first run only).
    SinkOpened,
    /// Once this many more checkpoints completed than there were when the run started.
    After(u64),
}

/// Starts a run and kills it with SIGKILL at `at`; returns the latest complete checkpoint
/// after the kill.
fn run_and_kill(d: &Dirs, at: KillAt, run: usize) -> u64 {
    let stderr_path = d.ck.with_file_name(format!("run-{run}.stderr"));
    let before = latest_checkpoint(&d.ck);
    let committed_before = committed_lines(&d.out).len();
    let mut child = run_command(d)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("the sluice binary starts");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "run {run} ({at:?}): ended by itself ({status}) before it could be killed; stderr: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        let ready = match at {
            KillAt::SinkOpened => d.out.join("_pending").is_dir(),
            KillAt::After(n) => latest_checkpoint(&d.ck) >= before + n,
        };
        if ready {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run {run} ({at:?}): not reached within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    let killed_after = started.elapsed();
    assert_eq!(
        status.signal(),
        Some(9),
        "run {run} ({at:?}): not killed mid-run: {status}"
    );
    let committed = committed_lines(&d.out).len();
    assert!(
        committed < d.expected.len(),
        "run {run} ({at:?}): the killed run had already committed all {} lines",
        d.expected.len()
    );
    assert!(committed >= committed_before, "run {run}: committed output shrank");
    let at_kill = latest_checkpoint(&d.ck);
    eprintln!(
        "run {run} ({at:?}): killed after {killed_after:?} at checkpoint {at_kill}, {committed} of {} lines committed",
        d.expected.len()
    );
    at_kill
}

/// Kills one run after another at `kills`, then runs to the end and checks the output.
fn kill_then_resume(kills: &[KillAt]) {
    let d = dirs();
    let mut at_kill = 0;
    for (i, at) in kills.iter().enumerate() {
        at_kill = run_and_kill(&d, *at, i + 1);
    }

    // The last run resumes from the latest complete checkpoint and finishes.
    let last: Output = run_command(&d).output().expect("the sluice binary runs");
    let stdout = text(&last.stdout);
    let stderr = text(&last.stderr);
    assert!(
        last.status.success(),
        "{kills:?}: the last run failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        last.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("job wordcount finished"), "{stdout}");
    let resumed: Option<u64> = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("resumed from checkpoint "))
        .map(|id| id.trim().parse().expect("a checkpoint id"));
    if at_kill > 0 {
        let id = resumed.unwrap_or_else(|| {
            panic!("{kills:?}: checkpoint {at_kill} existed, but the last run did not resume: {stdout}")
        });
        assert_eq!(
            id, at_kill,
            "{kills:?}: resumed from checkpoint {id}, the latest complete one is {at_kill}"
        );
    } else {
        assert_eq!(resumed, None, "{kills:?}: no checkpoint existed, yet: {stdout}");
    }

    assert_same_lines(&committed_lines(&d.out), &d.expected, &format!("{kills:?}"));
    let pending: Vec<String> = std::fs::read_dir(d.out.join("_pending"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-") || n.starts_with(".inprogress"))
        .collect();
    assert!(
        pending.is_empty(),
        "{kills:?}: left in _pending after the last run: {pending:?}"
    );
}

#[test]
fn killed_before_the_first_checkpoint_then_rerun_is_exact() {
    kill_then_resume(&[KillAt::SinkOpened]);
}

#[test]
fn killed_after_two_checkpoints_then_resumed_is_exact() {
    kill_then_resume(&[KillAt::After(2)]);
}

#[test]
fn killed_after_a_dozen_checkpoints_then_resumed_is_exact() {
    kill_then_resume(&[KillAt::After(12)]);
}

/// A resumed run is killed too; the third run resumes from the second's checkpoint.
#[test]
fn killed_twice_then_resumed_is_exact() {
    kill_then_resume(&[KillAt::After(3), KillAt::After(4)]);
}

/// Bad checkpoint options: a non-zero exit, one line on stderr naming the option, no panic.
#[test]
fn bad_checkpoint_options_fail_with_a_one_line_error_naming_the_option() {
    let d = dirs();
    let input = d.input.to_str().unwrap();
    let out = d.out.to_str().unwrap();
    let ck = d.ck.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--checkpoint-dir", ck, "--checkpoint-interval", "0ms"],
            "--checkpoint-interval",
        ),
        (
            &[
                "--checkpoint-dir",
                ck,
                "--checkpoint-timeout",
                "10ms",
                "--checkpoint-interval",
                "1s",
            ],
            "--checkpoint-timeout",
        ),
        (
            &["--checkpoint-dir", "/dev/null/ck", "--checkpoint-interval", "1s"],
            "--checkpoint-dir",
        ),
        (&["--checkpoint-dir", ck], "--checkpoint-dir"),
    ];
    for (extra, option) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "wordcount", "--input", input, "--output", out, "-p", "2"])
            .args(extra)
            .env_remove("SLUICE_LOG")
            .output()
            .unwrap();
        let stderr = text(&o.stderr);
        assert!(!o.status.success(), "{extra:?} was accepted");
        assert!(o.status.code().is_some(), "{extra:?}: killed by a signal: {}", o.status);
        assert!(!stderr.contains("panicked"), "{extra:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{extra:?}: expected one line on stderr, got: {stderr}");
        assert!(lines[0].starts_with("error: "), "{extra:?}: {stderr}");
        assert!(
            lines[0].contains(option),
            "{extra:?}: the error does not name {option}: {stderr}"
        );
        assert!(text(&o.stdout).is_empty(), "{extra:?}: stdout: {}", text(&o.stdout));
    }
    assert!(
        !d.out.join("_pending").exists(),
        "a rejected run started writing output"
    );
}
