//! End-to-end tests of the `sluice` command line, run as a separate process.
//!
//! `sluice jobs` lists the built-in jobs; `sluice run wordcount` writes exactly the expected
//! `word<TAB>count` updates to its part files (the expectation is computed here, independently
//! of the job's code); `sluice run nexmark-q5` runs to its end and prints a summary; and every
//! kind of bad input is rejected with a non-zero exit code and an error message, never a panic.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const ALL_JOBS: [&str; 9] = [
    "wordcount",
    "nexmark-q0",
    "nexmark-q1",
    "nexmark-q2",
    "nexmark-q3",
    "nexmark-q4",
    "nexmark-q5",
    "nexmark-q7",
    "nexmark-q8",
];

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        // A log level from the caller's environment must not change what the tests see.
        .env_remove("SLUICE_LOG")
        .output()
        .expect("the sluice binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn jobs_lists_all_nine_jobs() {
    let out = sluice(&["jobs"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // One line per job starts with its name (the options line below it is indented).
    let listed: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut want = ALL_JOBS.to_vec();
    want.sort_unstable();
    let mut got = listed.clone();
    got.sort_unstable();
    assert_eq!(got, want, "jobs listed:\n{stdout}");
}

/// Every line of every file under `dir`.
fn lines_under(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output directory exists") {
        let path = entry.expect("dir entry").path();
        if path.is_file() {
            let content = std::fs::read_to_string(&path).expect("part file is UTF-8");
            lines.extend(content.lines().map(str::to_string));
        }
    }
    lines
}

#[test]
fn wordcount_writes_every_count_update_at_parallelism_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    let output = dir.path().join("out");
    let mut content = String::new();
    for i in 0..300 {
        content.push_str(&format!(
            "The quick, brown fox #{i} jumps-over the LAZY dog; the dog sleeps. Ünïcode ü x{}\n",
            i % 7
        ));
        if i % 50 == 0 {
            content.push_str("\n   ,;- \n"); // lines without words
        }
    }
    std::fs::write(&input, &content).expect("write input");

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for line in content.lines() {
        for w in common::expected_words(line) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut want: Vec<String> = counts
        .iter()
        .flat_map(|(w, n)| (1..=*n).map(move |k| format!("{w}\t{k}")))
        .collect();
    want.sort();
    assert!(
        counts["the"] == 900 && counts.contains_key("ünïcode"),
        "test input as intended"
    );

    let out = sluice(&[
        "run",
        "wordcount",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "-p",
        "2",
    ]);
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        text(&out.stderr)
    );
    let mut got = lines_under(&output);
    got.sort();
    assert_eq!(got.len(), want.len(), "number of output lines");
    assert!(got == want, "part files differ from the expected count updates");
}

#[test]
fn nexmark_q5_runs_to_its_end_and_prints_a_summary() {
    let out = sluice(&["run", "nexmark-q5", "--events", "50000"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "exit {:?}, stderr: {stderr}", out.status);
    let summary = stdout
        .lines()
        .find(|l| l.contains("events/s"))
        .unwrap_or_else(|| panic!("no summary line with events/s in stdout:\n{stdout}"));
    assert!(summary.contains("50000 records in"), "summary: {summary}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn exit_codes_tell_the_kind_of_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let damaged = dir.path().join("savepoint-damaged");
    std::fs::create_dir(&damaged).unwrap();
    std::fs::write(damaged.join("_metadata"), b"not a savepoint").unwrap();
    let damaged = damaged.to_str().unwrap();
    let nowhere = dir.path().join("nowhere");
    let nowhere = nowhere.to_str().unwrap();
    // (case, arguments, exit code): the README's table.
    let cases: Vec<(&str, Vec<&str>, i32)> = vec![
        ("unknown job", vec!["run", "no-such-job"], 3),
        (
            "parallelism 0",
            vec!["run", "nexmark-q0", "--events", "10", "-p", "0"],
            2,
        ),
        ("unknown flag", vec!["run", "nexmark-q0", "--bogus"], 2),
        (
            "bad duration",
            vec!["run", "nexmark-q0", "--checkpoint-interval", "soon"],
            2,
        ),
        ("no such savepoint", vec!["savepoint", "inspect", nowhere], 3),
        ("damaged savepoint", vec!["savepoint", "inspect", damaged], 6),
        (
            "unreachable coordinator",
            vec!["list", "--coordinator", "127.0.0.1:1"],
            5,
        ),
        (
            "cancel, unreachable",
            vec!["cancel", "--coordinator", "127.0.0.1:1", "x"],
            5,
        ),
    ];
    for (case, args, code) in cases {
        let out = sluice(&args);
        assert_eq!(out.status.code(), Some(code), "{case}: stderr {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("panicked"), "{case}");
    }
}

#[test]
fn bad_input_is_rejected_with_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-input.txt");
    let missing = missing.to_str().unwrap();
    let out_dir = dir.path().join("out");
    let out_dir = out_dir.to_str().unwrap();

    // (case, arguments, substrings stderr must contain)
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "unknown job",
            vec!["run", "no-such-job"],
            [&["no-such-job"][..], &ALL_JOBS[..]].concat(),
        ),
        ("unknown option", vec!["run", "wordcount", "--bogus"], vec!["--bogus"]),
        (
            "missing input file",
            vec!["run", "wordcount", "--input", missing, "--output", out_dir],
            vec![missing],
        ),
        (
            "parallelism 0",
            vec!["run", "nexmark-q0", "--events", "10", "--parallelism", "0"],
            vec!["parallelism"],
        ),
        (
            "wordcount without --input",
            vec!["run", "wordcount", "--output", out_dir],
            vec!["--input"],
        ),
        (
            "--input on a nexmark job",
            vec!["run", "nexmark-q0", "--input", "x"],
            vec!["unexpected argument '--input'"],
        ),
        (
            "malformed number",
            vec!["run", "nexmark-q0", "--events", "abc"],
            vec!["abc", "--events"],
        ),
        (
            "missing events directory",
            vec!["run", "nexmark-q0", "--events-dir", missing],
            vec![missing],
        ),
        (
            "events directory and --events",
            vec!["run", "nexmark-q0", "--events-dir", out_dir, "--events", "5"],
            vec!["--events-dir", "--events"],
        ),
        (
            "--events-dir on wordcount",
            vec![
                "run",
                "wordcount",
                "--input",
                "x",
                "--output",
                out_dir,
                "--events-dir",
                "d",
            ],
            vec!["unexpected argument '--events-dir'"],
        ),
    ];
    let mut failures = Vec::new();
    for (case, args, needles) in &cases {
        let out = sluice(args);
        let stderr = text(&out.stderr);
        if out.status.success() || out.status.code().is_none() {
            failures.push(format!("{case}: exit status {:?}", out.status));
        }
        if stderr.contains("panicked") {
            failures.push(format!("{case}: panicked: {stderr}"));
        }
        for n in needles {
            if !stderr.contains(n) {
                failures.push(format!("{case}: stderr lacks {n:?}: {stderr}"));
            }
        }
        if *case == "unknown job" && stderr.trim_end().lines().count() != 1 {
            failures.push(format!("{case}: error is not one line: {stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        !Path::new(out_dir).join("part-0-0").exists(),
        "a rejected run wrote output"
    );
}

#[test]
fn with_json_logs_the_final_error_is_json_too() {
    let out = sluice(&[
        "--log-format",
        "json",
        "run",
        "wordcount",
        "--input",
        "/no/such/file",
        "--print",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(!stderr.trim().is_empty());
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["level"] == "ERRO" && v.get("exit_code").is_some() {
            assert!(v["msg"].as_str().unwrap().contains("/no/such/file"), "{line}");
        }
    }
}
