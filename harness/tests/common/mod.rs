//! Test helpers shared by the harness's integration tests.

#![allow(dead_code)]

pub(crate) mod etcd;
pub(crate) mod http;
pub(crate) mod procs;
pub(crate) mod s3;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Words of a line as wordcount defines them: maximal runs of alphanumeric characters,
/// lowercased. Written here independently of `sluice::jobs::wordcount::words`, so the tests
/// check the job against a separate reading of its specification.
pub(crate) fn expected_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in line.chars() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Writes the deterministic input file and returns its path and the failure-free output
/// lines, sorted.
pub(crate) fn write_input(dir: &Path, lines: usize) -> (PathBuf, Vec<String>) {
    const VOCAB: [&str; 12] = [
        "Alpha", "beta", "GAMMA", "delta", "Epsilon", "zeta", "eta", "theta", "iota", "kappa", "Lambda", "mu",
    ];
    const SEPARATORS: [&str; 6] = [" ", ", ", "-", "; ", "! ", " ("];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut text = String::new();
    for _ in 0..lines {
        let tokens = 2 + next(5);
        for t in 0..tokens {
            if t > 0 {
                text.push_str(SEPARATORS[next(SEPARATORS.len() as u64) as usize]);
            }
            let word = VOCAB[next(VOCAB.len() as u64) as usize];
            match next(4) {
                0 => text.push_str(&format!("{word}{}", next(20))),
                1 => text.push_str(&next(50).to_string()),
                _ => text.push_str(word),
            }
        }
        text.push('\n');
    }
    let path = dir.join("input.txt");
    std::fs::write(&path, &text).unwrap();

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        for w in expected_words(line) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut expected: Vec<String> = counts
        .iter()
        .flat_map(|(w, n)| (1..=*n).map(move |i| format!("{w}\t{i}")))
        .collect();
    expected.sort();
    (path, expected)
}

/// Lines of the committed part files directly in `out` (not `_pending/`, not dot-files).
pub(crate) fn committed_lines(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return lines;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "_pending" || !e.path().is_file() {
            continue;
        }
        assert!(
            name.starts_with("part-"),
            "unexpected file {name} in the output directory"
        );
        let content = std::fs::read_to_string(e.path()).unwrap();
        lines.extend(content.lines().map(str::to_string));
    }
    lines.sort();
    lines
}

/// Compares sorted multisets and describes the first differences.
pub(crate) fn assert_same_lines(got: &[String], want: &[String], what: &str) {
    if got == want {
        return;
    }
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < got.len() || j < want.len() {
        match (got.get(i), want.get(j)) {
            (Some(g), Some(w)) if g == w => {
                i += 1;
                j += 1;
            }
            (Some(g), Some(w)) if g < w => {
                extra.push(g.clone());
                i += 1;
            }
            (Some(g), None) => {
                extra.push(g.clone());
                i += 1;
            }
            (_, Some(w)) => {
                missing.push(w.clone());
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    panic!(
        "{what}: {} lines committed, {} expected; {} missing (first {:?}), {} extra (first {:?})",
        got.len(),
        want.len(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>()
    );
}

/// Checks Prometheus text with `promtool check metrics` (Debian's `prometheus` package; the
/// test command installs it). Fails, saying so, if promtool is missing.
pub(crate) fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!("promtool is needed to validate /metrics and could not be started ({e}): apt-get install prometheus (scripts/test-all.sh does)"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics rejected the exposition:\n{}{}\n--- the text ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
