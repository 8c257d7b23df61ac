//! The coordinator driven only through its REST API (over real HTTP on 127.0.0.1): submit a
//! job, watch it run, take a savepoint and fetch its status, stop with a savepoint, start
//! again from it at another parallelism, cancel; and bad requests (unknown job id, malformed
//! body, wrong method, unknown path, unusable savepoint directory) answered with a 4xx and a
//! JSON error naming the problem, with the job unaffected.

// A test driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_LOG");
    c
}

#[test]
fn a_cluster_driven_only_through_http() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 20_000);
    let (out, ck, sp) = (tmp.path().join("out"), tmp.path().join("ck"), tmp.path().join("sp"));
    let mut coord = sluice()
        .args([
            "coordinator",
            "--bind",
            "127.0.0.1:0",
            "--rest-bind",
            "127.0.0.1:0",
            "--checkpoint-dir",
            ck.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(coord.stdout.take().unwrap()).lines();
    let addr = lines.next().unwrap().unwrap().rsplit(' ').next().unwrap().to_string();
    let rest = lines.next().unwrap().unwrap().rsplit(' ').next().unwrap().to_string();
    let _coord = Proc(coord);
    let (code, v) = http(&rest, "GET", "/readyz", None);
    assert_eq!(
        (code, v["ready"].as_bool()),
        (503, Some(false)),
        "not ready without workers"
    );
    let _workers: Vec<Proc> = ["w1", "w2"]
        .iter()
        .map(|id| {
            Proc(
                sluice()
                    .args(["worker", "--coordinator", &addr, "--slots", "2", "--id", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let start = Instant::now();
    // Ready with the first worker; the test wants both.
    while http(&rest, "GET", "/readyz", None).0 != 200 || http(&rest, "GET", "/overview", None).1["workers"] != 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "workers did not register");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, overview) = http(&rest, "GET", "/overview", None);
    assert_eq!(
        (overview["workers"].as_u64(), overview["slots-total"].as_u64()),
        (Some(2), Some(4)),
        "{overview}"
    );
    assert_eq!(
        http(&rest, "GET", "/workers", None).1["workers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(http(&rest, "GET", "/healthz", None).0, 200);

    // Submit; it runs.
    let body = |p: u32, extra: Value| {
        let mut b = json!({
            "job": "wordcount",
            "parallelism": p,
            "options": { "input": input.to_str().unwrap(), "output": out.to_str().unwrap(), "checkpoint-interval": "200ms" }
        });
        if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        b.to_string()
    };
    let mut first: Value = serde_json::from_str(&body(2, json!({}))).unwrap();
    first["options"]["lines-per-second"] = json!(4000);
    let (code, v) = http(&rest, "POST", "/jobs", Some(&first.to_string()));
    assert_eq!(code, 202, "{v}");
    let id = v["jobid"].as_str().unwrap().to_string();
    wait_state(&rest, &id, &["RUNNING"], Duration::from_secs(20));

    // Bad requests: 4xx with a JSON error, the job unaffected.
    let bad: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/jobs/0000", None, 404, "no job with id '0000'"),
        ("PATCH", "/jobs/0000", None, 404, "no job with id '0000'"),
        ("POST", "/jobs", Some("{not json"), 400, "malformed request body"),
        ("POST", "/jobs", Some(r#"{"job": "nope"}"#), 400, "unknown job 'nope'"),
        (
            "POST",
            "/jobs",
            Some(r#"{"job": "wordcount", "colour": 1}"#),
            400,
            "unknown field `colour`",
        ),
        ("DELETE", "/jobs", None, 405, "method not allowed"),
        ("GET", "/no/such/path", None, 404, "no such path"),
        (
            "POST",
            &format!("/jobs/{id}/savepoints"),
            Some(r#"{"targetDirectory": "/dev/null/sp"}"#),
            400,
            "/dev/null/sp",
        ),
        (
            "POST",
            &format!("/jobs/{id}/savepoints"),
            Some(r#"{}"#),
            400,
            "targetDirectory",
        ),
        (
            "GET",
            &format!("/jobs/{id}/savepoints/ffff"),
            None,
            404,
            "no savepoint request 'ffff'",
        ),
    ];
    for (method, path, body, want_code, want_text) in bad {
        let (code, v) = http(&rest, method, path, *body);
        let err = v["errors"][0].as_str().unwrap_or_default().to_string();
        assert_eq!(code, *want_code, "{method} {path}: {v}");
        assert!(err.contains(want_text), "{method} {path}: {err}");
    }
    assert_eq!(state(&rest, &id), "RUNNING", "bad requests leave the job alone");
    // Checkpoints complete and are counted.
    let start = Instant::now();
    loop {
        let (code, v) = http(&rest, "GET", &format!("/jobs/{id}/checkpoints"), None);
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["config"]["interval-ms"].as_u64(), Some(200), "{v}");
        if v["counts"]["completed"].as_u64().unwrap_or(0) >= 2 && v["latest"]["state-size"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "checkpoints do not rise: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Metrics rise, per vertex and in the job's metric list, and the workers' metrics reach
    // the coordinator's Prometheus endpoint.
    let (_, j) = http(&rest, "GET", &format!("/jobs/{id}"), None);
    let vertices = j["vertices"].as_array().unwrap_or_else(|| panic!("no vertices: {j}"));
    assert!(vertices.iter().all(|v| v["parallelism"] == 2), "{j}");
    let source = vertices[0]["name"].as_str().unwrap().to_string();
    let read_by_source = || {
        let (_, j) = http(&rest, "GET", &format!("/jobs/{id}"), None);
        j["vertices"][0]["metrics"]["write-records"].as_u64().unwrap_or(0)
    };
    let before = read_by_source();
    eventually("the source's records out rise", Duration::from_secs(20), || {
        read_by_source() > before
    });
    let first = metric_sum(&rest, &id, "operator_records_out");
    eventually("operator_records_out rises", Duration::from_secs(20), || {
        metric_sum(&rest, &id, "operator_records_out") > first
    });
    let (code, v) = http(
        &rest,
        "GET",
        &format!("/jobs/{id}/metrics?name=operator_records_in"),
        None,
    );
    assert_eq!(code, 200);
    let series = v["metrics"].as_array().unwrap();
    assert!(
        series.iter().any(|m| m["labels"]["worker"] == "w1") && series.iter().any(|m| m["labels"]["worker"] == "w2"),
        "{v}"
    );
    assert!(
        series
            .iter()
            .all(|m| m["labels"]["job_id"] == id.as_str() && m["type"] == "meter"),
        "{v}"
    );
    let (code, text) = http_raw(&rest, "GET", "/metrics", None);
    assert_eq!(code, 200);
    for family in [
        "sluice_operator_records_in_total",
        "sluice_operator_records_out_per_second",
        "sluice_task_busy_ratio",
        "sluice_task_backpressured_ratio",
        "sluice_task_input_watermark_seconds",
        "sluice_task_output_buffer_usage",
        "sluice_checkpoints_completed_total",
        "sluice_last_checkpoint_alignment_seconds",
        "sluice_coordinator_workers",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "/metrics lacks {family}");
    }
    assert!(text.contains(&format!("operator=\"{source}\"")), "{text}");
    promtool_check(&text);
    let (_, v) = http(&rest, "GET", &format!("/jobs/{id}/checkpoints"), None);
    let history = v["history"].as_array().unwrap();
    assert!(
        !history.is_empty() && history[0]["status"] == "COMPLETED" && history[0]["duration-ms"].is_u64(),
        "{v}"
    );

    // A savepoint while it runs, then stop with a savepoint.
    let sp_dir = json!({ "targetDirectory": sp.to_str().unwrap() }).to_string();
    let (code, v) = http(&rest, "POST", &format!("/jobs/{id}/savepoints"), Some(&sp_dir));
    assert_eq!(code, 202, "{v}");
    let running = savepoint_location(&rest, &id, v["request-id"].as_str().unwrap());
    assert!(Path::new(&running).join("_metadata").is_file(), "{running}");
    let (code, v) = http(&rest, "POST", &format!("/jobs/{id}/stop"), Some(&sp_dir));
    assert_eq!(code, 202, "{v}");
    let stopped = savepoint_location(&rest, &id, v["request-id"].as_str().unwrap());
    assert_eq!(
        wait_state(&rest, &id, &["FINISHED", "FAILED", "CANCELED"], Duration::from_secs(20)),
        "FINISHED"
    );
    let (code, v) = http(&rest, "PATCH", &format!("/jobs/{id}"), None);
    assert_eq!(code, 409, "cancelling an ended job: {v}");

    // Start again from the savepoint at parallelism 3: exact output.
    let (code, v) = http(
        &rest,
        "POST",
        "/jobs",
        Some(&body(3, json!({ "savepointPath": stopped }))),
    );
    assert_eq!(code, 202, "{v}");
    let id2 = v["jobid"].as_str().unwrap().to_string();
    assert_eq!(
        wait_state(
            &rest,
            &id2,
            &["FINISHED", "FAILED", "CANCELED"],
            Duration::from_secs(60)
        ),
        "FINISHED"
    );
    assert_same_lines(&committed_lines(&out), &expected, "resumed through the REST API");

    // Cancel a running job.
    let (code, v) = http(
        &rest,
        "POST",
        "/jobs",
        Some(r#"{"job": "nexmark-q0", "parallelism": 1, "options": {"events-per-second": 1000}}"#),
    );
    assert_eq!(code, 202, "{v}");
    let id3 = v["jobid"].as_str().unwrap().to_string();
    wait_state(&rest, &id3, &["RUNNING"], Duration::from_secs(20));
    assert_eq!(http(&rest, "PATCH", &format!("/jobs/{id3}"), None).0, 202);
    wait_state(&rest, &id3, &["CANCELED"], Duration::from_secs(20));
    let (_, jobs) = http(&rest, "GET", "/jobs", None);
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(3), "{jobs}");
}
