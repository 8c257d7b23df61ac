//! High availability across real processes: a real etcd, two coordinators (a leader and a
//! standby), two workers and a keyed job with checkpoints and the two-phase-commit file sink.
//!
//! - SIGKILL of the leader mid-run: the standby takes over within the lease TTL plus the
//!   restart delay, lists the same job id RUNNING then FINISHED, and the committed output is
//!   exact and duplicate-free.
//! - SIGSTOP of the leader (a zombie that wakes after losing its lease): the standby takes
//!   over; once resumed, the old leader commits no checkpoint, deletes none and aborts no
//!   transaction (its log says it stepped down), and the output is exact.

// A test driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::http::http;
use common::procs::{coordinator, logs, run, status, submit, text, wait_for_in, worker, worker_finding, Proc};
use common::{assert_same_lines, committed_lines, write_input};
use serde_json::json;

const LEASE_TTL: &str = "2s";

/// A coordinator of cluster `cluster` in its own directory under `dir`.
fn ha_coordinator(dir: &Path, name: &str, etcd: &Etcd, cluster: &str, ck: &Path) -> (Proc, String) {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).unwrap();
    coordinator(
        &own,
        &[
            "--checkpoint-dir",
            ck.to_str().unwrap(),
            "--ha",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoint,
            "--cluster-id",
            cluster,
            "--lease-ttl",
            LEASE_TTL,
            "--rest-bind",
            "127.0.0.1:0",
        ],
    )
}

/// The REST address of the coordinator started in `dir/name`.
fn rest_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name).join("rest.addr")).unwrap()
}

fn wait_log(p: &Proc, needle: &str, timeout: Duration) {
    let start = Instant::now();
    while !p.log().contains(needle) {
        assert!(
            start.elapsed() < timeout,
            "no {needle:?} within {timeout:?}:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checkpoints of `job` the leader logged as complete.
fn completed(p: &Proc) -> usize {
    p.log().matches("checkpoint complete").count()
}

struct Cluster {
    etcd: Etcd,
    cluster: String,
    tmp: tempfile::TempDir,
    leader: Proc,
    standby: Proc,
    standby_addr: String,
    both: String,
    _workers: Vec<Proc>,
    id: String,
    out: std::path::PathBuf,
    expected: Vec<String>,
}

/// Starts etcd, the two coordinators (the first leads), two workers that know both, and the
/// job; returns once the job runs and a checkpoint committed output.
fn start(cluster: &str) -> Cluster {
    let etcd = Etcd::start();
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 60_000);
    let (out, ck) = (tmp.path().join("out"), tmp.path().join("ck"));
    let (leader, leader_addr) = ha_coordinator(tmp.path(), "c1", &etcd, cluster, &ck);
    wait_log(&leader, "this coordinator leads", Duration::from_secs(20));
    let (standby, standby_addr) = ha_coordinator(tmp.path(), "c2", &etcd, cluster, &ck);
    let both = format!("{leader_addr},{standby_addr}");
    // The standby's REST API knows no jobs: it says so and where the leader is.
    let (code, body) = http(&rest_of(tmp.path(), "c2"), "GET", "/jobs", None);
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["leader"], leader_addr.as_str(), "{body}");
    let (code, body) = http(&rest_of(tmp.path(), "c2"), "GET", "/overview", None);
    assert_eq!(
        (code, &body["ha"], &body["leading"]),
        (200, &json!("etcd"), &json!(false)),
        "{body}"
    );
    let (_, body) = http(&rest_of(tmp.path(), "c1"), "GET", "/overview", None);
    assert_eq!(body["leading"], json!(true), "{body}");
    // One worker knows both coordinators, the other looks the leader up in etcd.
    let workers = vec![
        worker(tmp.path(), &both, "w1", 2),
        worker_finding(
            tmp.path(),
            &["--etcd-endpoints", &etcd.endpoint, "--cluster-id", cluster],
            "w2",
            2,
        ),
    ];
    let id = submit(
        &both,
        &[
            "wordcount",
            "--parallelism",
            "4",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--lines-per-second",
            "5000",
            "--checkpoint-interval",
            "200ms",
            "--restart-strategy",
            "fixed-delay:attempts=20,delay=200ms",
        ],
    );
    wait_for_in(Some(tmp.path()), &both, &id, &["RUNNING"], Duration::from_secs(30));
    let begun = Instant::now();
    while completed(&leader) < 2 || committed_lines(&out).is_empty() {
        assert!(
            begun.elapsed() < Duration::from_secs(30),
            "no checkpoint committed:\n{}",
            leader.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Cluster {
        etcd,
        cluster: cluster.to_string(),
        tmp,
        leader,
        standby,
        standby_addr,
        both,
        _workers: workers,
        id,
        out,
        expected,
    }
}

impl Cluster {
    /// Waits until the standby leads and lists the job RUNNING (or already FINISHED), then
    /// FINISHED; returns how long the takeover took from `since`.
    fn standby_finishes_the_job(&self, since: Instant) -> Duration {
        wait_log(&self.standby, "this coordinator leads", Duration::from_secs(30));
        let took_over = since.elapsed();
        let seen = wait_for_in(
            Some(self.tmp.path()),
            &self.standby_addr,
            &self.id,
            &["RUNNING", "FINISHED"],
            Duration::from_secs(30),
        );
        eprintln!(
            "the standby leads {took_over:?} after the fault and lists job {} {seen}",
            self.id
        );
        wait_for_in(
            Some(self.tmp.path()),
            &self.standby_addr,
            &self.id,
            &["FINISHED"],
            Duration::from_secs(90),
        );
        assert_same_lines(
            &committed_lines(&self.out),
            &self.expected,
            "the committed output after the failover",
        );
        took_over
    }
}

#[test]
fn sigkill_of_the_leader_fails_over_to_the_standby_with_exactly_once_output() {
    let mut c = start("kill");
    let killed_at = Instant::now();
    c.leader.kill();
    let took = c.standby_finishes_the_job(killed_at);
    // Lease TTL (2 s) plus the campaign and takeover: well within the TTL plus a restart delay.
    assert!(
        took < Duration::from_secs(10),
        "takeover took {took:?}:\n{}",
        logs(c.tmp.path())
    );
    assert!(
        c.standby.log().contains("resuming a job taken over"),
        "{}",
        c.standby.log()
    );
    // Clients that know both find the leader, and so do clients that ask etcd.
    let out = run(&["list", "--coordinator", &c.both]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{} wordcount FINISHED", c.id)),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["list", "--etcd-endpoints", &c.etcd.endpoint, "--cluster-id", &c.cluster]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{} wordcount FINISHED", c.id)),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(status(&c.standby_addr, &c.id), "FINISHED");
    // The old leader's address alone answers nothing (it is gone); a standby names the leader.
    let out = run(&[
        "list",
        "--etcd-endpoints",
        &c.etcd.endpoint,
        "--cluster-id",
        "no-such-cluster",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no leader is known"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_stopped_leader_that_wakes_after_losing_its_lease_neither_commits_nor_deletes() {
    let c = start("zombie");
    let pid = c.leader.child.id().to_string();
    let stopped_at = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    wait_log(&c.standby, "this coordinator leads", Duration::from_secs(30));
    // Let the new leader run the job for a while, then wake the old one up.
    std::thread::sleep(Duration::from_millis(1500));
    let before = c.leader.log().len();
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    wait_log(&c.leader, "lost the leadership", Duration::from_secs(15));
    c.standby_finishes_the_job(stopped_at);
    let woke = c.leader.log()[before..].to_string();
    // What would have a durable effect: a committed checkpoint (sinks commit on it), a
    // deletion, a new attempt (its sinks would recover and abort transactions), a worker
    // taken back from the new leader.
    for forbidden in [
        "checkpoint complete",
        "deleted",
        "restoring from checkpoint",
        "attempt deployed",
        "worker registered",
    ] {
        assert!(
            !woke.contains(forbidden),
            "the deposed leader acted after waking ({forbidden:?}):\n{woke}"
        );
    }
    assert!(
        woke.contains("campaigning again"),
        "the deposed leader campaigns again:\n{woke}"
    );
}
