//! `sluice run --rest-port` driven only through HTTP: find the job, watch its metrics rise,
//! take a savepoint and fetch it, stop with a savepoint, start again from it (exact output),
//! cancel; bad requests get a 4xx naming the problem and leave the job alone.

// A test driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::{eventually, http, http_raw, metric_sum, savepoint_location, state, wait_state};
use common::{assert_same_lines, committed_lines, promtool_check, write_input};
use serde_json::{json, Value};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sluice run ARGS --rest-port 0`; returns the process, the REST address and the
/// job id it prints.
fn run_with_rest(args: &[&str]) -> (Proc, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_remove("SLUICE_LOG")
        .arg("run")
        .args(args)
        .args(["--rest-port", "0", "--rest-linger", "5s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let rest = lines.next().unwrap().unwrap();
    let rest = rest
        .strip_prefix("rest api listening on ")
        .unwrap_or_else(|| panic!("first line: {rest}"))
        .to_string();
    let id = lines.next().unwrap().unwrap();
    let id = id
        .strip_prefix("job id ")
        .unwrap_or_else(|| panic!("second line: {id}"))
        .to_string();
    // The rest of standard output (the summary) is drained so the process never blocks.
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), rest, id)
}

#[test]
fn an_embedded_job_driven_only_through_http() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 20_000);
    let (out, ck, sp) = (tmp.path().join("out"), tmp.path().join("ck"), tmp.path().join("sp"));
    let job_args = |ck: &Path| -> Vec<String> {
        [
            "wordcount",
            "-p",
            "2",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--checkpoint-dir",
            ck.to_str().unwrap(),
            "--checkpoint-interval",
            "200ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut first = job_args(&ck);
    first.extend(["--lines-per-second".to_string(), "3000".to_string()]);
    let (mut proc1, rest, id) = run_with_rest(&first.iter().map(String::as_str).collect::<Vec<_>>());

    let (code, v) = http(&rest, "GET", "/jobs", None);
    assert_eq!(code, 200);
    assert_eq!(v["jobs"][0]["jid"], id.as_str(), "{v}");
    assert_eq!(v["jobs"][0]["name"], "wordcount", "{v}");
    wait_state(&rest, &id, &["RUNNING"], Duration::from_secs(20));
    assert_eq!(http(&rest, "GET", "/readyz", None).0, 200);
    assert_eq!(http(&rest, "GET", "/overview", None).1["mode"], "embedded");

    // Metrics rise.
    let (_, j) = http(&rest, "GET", &format!("/jobs/{id}"), None);
    let vertices = j["vertices"].as_array().unwrap_or_else(|| panic!("no vertices: {j}"));
    assert!(
        vertices.len() >= 3 && vertices.iter().all(|v| v["parallelism"] == 2),
        "{j}"
    );
    let last = vertices.len() - 1;
    let sink_in = || {
        http(&rest, "GET", &format!("/jobs/{id}"), None).1["vertices"][last]["metrics"]["read-records"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = sink_in();
    eventually("the sink's records in rise", Duration::from_secs(20), || {
        sink_in() > before
    });
    let first_count = metric_sum(&rest, &id, "operator_records_in");
    eventually("operator_records_in rises", Duration::from_secs(20), || {
        metric_sum(&rest, &id, "operator_records_in") > first_count
    });
    eventually("checkpoints complete", Duration::from_secs(20), || {
        metric_sum(&rest, &id, "checkpoints_completed") >= 2.0
    });
    let (code, text) = http_raw(&rest, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(text.contains("sluice_operator_records_in_total{"), "{text}");
    assert!(text.contains(&format!("job_id=\"{id}\"")), "{text}");
    assert!(
        text.contains("sluice_checkpoint_duration_seconds_bucket{"),
        "no checkpoint duration histogram: {text}"
    );
    promtool_check(&text);

    // Bad requests: a 4xx with a JSON error naming the problem; the job goes on.
    let bad: &[(&str, String, Option<&str>, u16, &str)] = &[
        ("GET", "/jobs/0000".into(), None, 404, "no job with id '0000'"),
        ("GET", "/jobs/0000/metrics".into(), None, 404, "no job with id '0000'"),
        ("PATCH", "/jobs/0000".into(), None, 404, "no job with id '0000'"),
        (
            "POST",
            "/jobs".into(),
            Some(r#"{"job": "wordcount"}"#),
            405,
            "embedded run has one job",
        ),
        (
            "POST",
            format!("/jobs/{id}/savepoints"),
            Some("{not json"),
            400,
            "malformed request body",
        ),
        (
            "POST",
            format!("/jobs/{id}/savepoints"),
            Some(r#"{"targetDirectory": "/dev/null/sp"}"#),
            400,
            "/dev/null/sp",
        ),
        (
            "POST",
            format!("/jobs/{id}/stop"),
            Some(r#"{"targetDirectory": "/tmp", "fast": true}"#),
            400,
            "unknown field `fast`",
        ),
        ("GET", format!("/jobs/{id}/metrics?colour=red"), None, 400, "colour"),
        ("DELETE", format!("/jobs/{id}"), None, 405, "method not allowed"),
    ];
    for (method, path, body, want_code, want_text) in bad {
        let (code, v) = http(&rest, method, path, *body);
        let err = v["errors"][0].as_str().unwrap_or_default().to_string();
        assert_eq!(code, *want_code, "{method} {path}: {v}");
        assert!(err.contains(want_text), "{method} {path}: {err}");
    }
    assert_eq!(state(&rest, &id), "RUNNING", "bad requests leave the job alone");

    // A savepoint while it runs, then stop with one.
    let target = json!({ "targetDirectory": sp.to_str().unwrap() }).to_string();
    let (code, v) = http(&rest, "POST", &format!("/jobs/{id}/savepoints"), Some(&target));
    assert_eq!(code, 202, "{v}");
    let running = savepoint_location(&rest, &id, v["request-id"].as_str().unwrap());
    assert!(Path::new(&running).join("_metadata").is_file(), "{running}");
    let (code, v) = http(&rest, "POST", &format!("/jobs/{id}/stop"), Some(&target));
    assert_eq!(code, 202, "{v}");
    let stopped = savepoint_location(&rest, &id, v["request-id"].as_str().unwrap());
    assert!(Path::new(&stopped).join("_metadata").is_file(), "{stopped}");
    assert_eq!(
        wait_state(&rest, &id, &["FINISHED", "FAILED", "CANCELED"], Duration::from_secs(20)),
        "FINISHED"
    );
    let (code, v) = http(&rest, "PATCH", &format!("/jobs/{id}"), None);
    assert_eq!(code, 409, "cancelling an ended job: {v}");
    assert!(proc1.0.wait().unwrap().success());

    // Start again from the savepoint at parallelism 3 (fresh checkpoint dir): exact output.
    let mut second = job_args(&tmp.path().join("ck2"));
    second[2] = "3".into();
    second.extend(["--from-savepoint".to_string(), stopped.clone()]);
    let (mut proc2, rest2, id2) = run_with_rest(&second.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        wait_state(
            &rest2,
            &id2,
            &["FINISHED", "FAILED", "CANCELED"],
            Duration::from_secs(60)
        ),
        "FINISHED"
    );
    let (_, v) = http(&rest2, "GET", &format!("/jobs/{id2}/checkpoints"), None);
    assert!(v["counts"]["completed"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(proc2.0.wait().unwrap().success());
    assert_same_lines(
        &committed_lines(&out),
        &expected,
        "stopped and resumed through the REST API",
    );

    // Cancel a running job.
    let (mut proc3, rest3, id3) = run_with_rest(&["nexmark-q0", "--events-per-second", "1000"]);
    wait_state(&rest3, &id3, &["RUNNING"], Duration::from_secs(20));
    assert_eq!(http(&rest3, "PATCH", &format!("/jobs/{id3}"), None).0, 202);
    assert_eq!(
        wait_state(
            &rest3,
            &id3,
            &["CANCELED", "FINISHED", "FAILED"],
            Duration::from_secs(20)
        ),
        "CANCELED"
    );
    let (_, v) = http(&rest3, "GET", "/readyz", None);
    assert_eq!(v["ready"], Value::Bool(false));
    assert!(proc3.0.wait().unwrap().success());
}
