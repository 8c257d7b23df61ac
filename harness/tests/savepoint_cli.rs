//! Savepoints of an embedded run from the command line: `sluice run ... --savepoint-dir DIR`
//! stops with a savepoint on SIGTERM and prints its path last; `sluice run --from-savepoint`
//! resumes it at another parallelism with exact output; `sluice savepoint list|inspect|dispose`
//! manage the archive; bad input is refused with the option or file named.

// A test driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{assert_same_lines, committed_lines, write_input};

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_LOG");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str]) -> Output {
    sluice().args(args).output().unwrap()
}

/// Runs wordcount at parallelism 2 and sends SIGTERM after `after`; returns the savepoint path.
fn stop_with_savepoint(input: &Path, out: &Path, ck: &Path, sp: &Path, after: Duration) -> String {
    let child = sluice()
        .args([
            "run",
            "wordcount",
            "-p",
            "2",
            "--lines-per-second",
            "5000",
            "--checkpoint-interval",
            "100ms",
        ])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--checkpoint-dir")
        .arg(ck)
        .arg("--savepoint-dir")
        .arg(sp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let path = stdout.lines().last().unwrap().to_string();
    assert!(stdout.contains("cancelled"), "stopped, not finished:\n{stdout}");
    assert!(
        Path::new(&path).join("_metadata").is_file(),
        "the last line is the savepoint path:\n{stdout}"
    );
    path
}

fn resume(input: &Path, out: &Path, ck: &Path, savepoint: &str, p: &str) -> Output {
    sluice()
        .args([
            "run",
            "wordcount",
            "-p",
            p,
            "--checkpoint-interval",
            "100ms",
            "--restart-strategy",
            "none",
        ])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--checkpoint-dir")
        .arg(ck)
        .arg("--from-savepoint")
        .arg(savepoint)
        .output()
        .unwrap()
}

#[test]
fn stop_with_savepoint_on_sigterm_then_resume_at_three_and_one_is_exact() {
    for p in ["3", "1"] {
        let tmp = tempfile::tempdir().unwrap();
        let (input, expected) = write_input(tmp.path(), 30_000);
        let (out, sp) = (tmp.path().join("out"), tmp.path().join("savepoints"));
        let path = stop_with_savepoint(&input, &out, &tmp.path().join("ck1"), &sp, Duration::from_millis(1500));
        let before = committed_lines(&out).len();
        assert!(
            before > 0 && before < expected.len(),
            "the stop came mid-stream ({before} lines)"
        );
        let r = resume(&input, &out, &tmp.path().join("ck2"), &path, p);
        assert!(r.status.success(), "{}", text(&r.stderr));
        assert_same_lines(
            &committed_lines(&out),
            &expected,
            &format!("resumed at parallelism {p}"),
        );
    }
}

#[test]
fn the_archive_lists_inspects_and_disposes_savepoints() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = write_input(tmp.path(), 30_000);
    let (out, sp) = (tmp.path().join("out"), tmp.path().join("savepoints"));
    let path = stop_with_savepoint(&input, &out, &tmp.path().join("ck"), &sp, Duration::from_millis(800));
    let list = run(&["savepoint", "list", sp.to_str().unwrap()]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listing = text(&list.stdout);
    assert!(
        listing.starts_with(&path) && listing.contains("job wordcount checkpoint"),
        "{listing}"
    );
    let inspect = run(&["savepoint", "inspect", &path]);
    let shown = text(&inspect.stdout);
    for want in [
        "job: wordcount",
        "from checkpoint:",
        "created at: 20",
        "operator count (Count): parallelism 2",
        "key groups 0..=63",
        "key groups 64..=127",
        "crc32",
    ] {
        assert!(shown.contains(want), "inspect lacks '{want}':\n{shown}");
    }
    let dispose = run(&["savepoint", "dispose", &path]);
    assert!(dispose.status.success(), "{}", text(&dispose.stderr));
    assert!(!Path::new(&path).exists());
    assert_eq!(text(&run(&["savepoint", "list", sp.to_str().unwrap()]).stdout), "");
    // What is not a savepoint is not disposed.
    let not = tmp.path().join("not-a-savepoint");
    std::fs::create_dir_all(&not).unwrap();
    std::fs::write(not.join("keep.txt"), "precious").unwrap();
    let refused = run(&["savepoint", "dispose", not.to_str().unwrap()]);
    assert!(
        !refused.status.success() && text(&refused.stderr).contains("not a savepoint"),
        "{}",
        text(&refused.stderr)
    );
    assert!(not.join("keep.txt").is_file());
}

#[test]
fn bad_savepoint_options_and_files_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = write_input(tmp.path(), 100);
    let base = |extra: &[&str]| {
        let mut args = vec!["run", "wordcount", "--input", input.to_str().unwrap(), "--print"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["--from-savepoint", "/no/such/savepoint"],
            "no such savepoint directory",
        ),
        (
            &["--allow-non-restored-state"],
            "--allow-non-restored-state needs --from-savepoint",
        ),
        (&["--savepoint-dir", "/tmp/x"], "--savepoint-dir needs checkpointing"),
        (&["--drain"], "--drain needs --savepoint-dir"),
    ];
    for (args, want) in cases {
        let o = base(args);
        assert!(!o.status.success(), "{args:?} was accepted");
        let err = text(&o.stderr);
        assert!(err.contains(want) && !err.contains("panicked"), "{args:?}: {err}");
    }
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = base(&["--from-savepoint", empty.to_str().unwrap()]);
    assert!(
        text(&o.stderr).contains("not a savepoint (no _metadata in it)"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["savepoint", "inspect", empty.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("not a savepoint"),
        "{}",
        text(&o.stderr)
    );
}
