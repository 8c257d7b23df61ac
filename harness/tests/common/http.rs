//! A minimal HTTP/1.1 client for driving the REST API in tests, and polling helpers.

// Tests driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request; returns the status and the raw body (chunked bodies decoded).
pub(crate) fn http_raw(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// One request; returns the status and the JSON body (`Null` if it is not JSON).
pub(crate) fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, text) = http_raw(addr, method, path, body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The job's state.
pub(crate) fn state(rest: &str, id: &str) -> String {
    let (code, v) = http(rest, "GET", &format!("/jobs/{id}"), None);
    assert_eq!(code, 200, "{v}");
    v["state"].as_str().unwrap().to_string()
}

/// Waits until the job is in one of `want`; returns that state.
pub(crate) fn wait_state(rest: &str, id: &str, want: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let s = state(rest, id);
        if want.contains(&s.as_str()) {
            return s;
        }
        assert!(start.elapsed() < timeout, "job {id} is {s}, waited for {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for a savepoint request to complete; returns its location.
pub(crate) fn savepoint_location(rest: &str, id: &str, trigger: &str) -> String {
    let start = Instant::now();
    loop {
        let (code, v) = http(rest, "GET", &format!("/jobs/{id}/savepoints/{trigger}"), None);
        assert_eq!(code, 200, "{v}");
        if v["status"]["id"] == "COMPLETED" {
            return v["operation"]["location"]
                .as_str()
                .unwrap_or_else(|| panic!("savepoint failed: {v}"))
                .to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "savepoint still in progress: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sums metric `name` of the job over all its series (`GET /jobs/{id}/metrics`).
pub(crate) fn metric_sum(rest: &str, id: &str, name: &str) -> f64 {
    let (code, v) = http(rest, "GET", &format!("/jobs/{id}/metrics?name={name}"), None);
    assert_eq!(code, 200, "{v}");
    v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == name)
        .map(|m| m["value"].as_f64().unwrap_or(0.0))
        .sum()
}

/// Waits until `cond` holds, or fails with `what`.
pub(crate) fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
