//! Cluster mode across real processes on 127.0.0.1: a coordinator and two workers run a keyed
//! job at parallelism 4 spread over both; one worker is SIGKILLed mid-run and started again;
//! the committed output of the two-phase-commit file sink must equal the failure-free output
//! exactly (no loss, no duplicates), with nothing left pending. Also: submit, list and
//! cancel from the CLI, and bad input (unknown job, unknown job id, options the coordinator
//! can't honour, too few slots, a wrong coordinator address, garbage on the control port).

// A test driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::procs::{coordinator, logs, run, secure, secured, status, submit, text, wait_for, wait_for_in, worker};
use common::{assert_same_lines, committed_lines, write_input};

fn completed_checkpoints(ck: &Path, job: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(ck.join(job)) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_metadata").is_file())
        .count()
}

/// Run files the job's tiered state wrote under its checkpoint directory.
fn tiered_runs(ck: &Path, job: &str) -> usize {
    let Ok(operators) = std::fs::read_dir(ck.join(job).join("shared")) else {
        return 0;
    };
    operators
        .filter_map(|o| std::fs::read_dir(o.ok()?.path()).ok())
        .flatten()
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "run"))
        })
        .count()
}

#[test]
fn sigkill_of_a_worker_fails_over_with_exactly_once_output() {
    failover_is_exact(&[]);
}

/// The same failover with the job's state in the tiered backend, chosen by the job on
/// workers whose default is the heap: the restarted attempt reads the runs the killed one
/// wrote, from the other process.
#[test]
fn a_job_on_the_tiered_backend_fails_over_with_exactly_once_output() {
    failover_is_exact(&["--state-backend", "tiered"]);
}

/// A coordinator and two workers (heap by default) run wordcount (submitted with `extra`);
/// one worker is SIGKILLed after a checkpoint and comes back; the output must be exact.
fn failover_is_exact(extra: &[&str]) {
    secure();
    let tiered = extra.contains(&"tiered");
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 30_000);
    let (out, ck) = (tmp.path().join("out"), tmp.path().join("ck"));
    let (coord, addr) = coordinator(
        tmp.path(),
        &["--checkpoint-dir", ck.to_str().unwrap(), "--rest-bind", "127.0.0.1:0"],
    );
    let w1 = worker(tmp.path(), &addr, "w1", 2);
    let mut w2 = worker(tmp.path(), &addr, "w2", 2);
    let mut args = vec![
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
        "--checkpoint-timeout",
        "5s",
        "--restart-strategy",
        "fixed-delay:attempts=10,delay=200ms",
    ];
    args.extend_from_slice(extra);
    let id = submit(&addr, &args);
    wait_for(&addr, &id, &["RUNNING"], Duration::from_secs(30));
    // Kill once some checkpoints are complete, so the failover restores state and commits
    // are already in the output.
    let start = Instant::now();
    // With the tiered backend, the checkpoints name run files: the state is not on the heap.
    while completed_checkpoints(&ck, &id) < 1
        || committed_lines(&out).is_empty()
        || (tiered && tiered_runs(&ck, &id) == 0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no checkpoint completed:\n{}",
            coord.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        w2.log().contains("deployment running"),
        "the job is spread over both workers:\n{}",
        w2.log()
    );
    w2.kill();
    let state = wait_for(
        &addr,
        &id,
        &["FAILING", "RESTARTING", "FINISHED"],
        Duration::from_secs(10),
    );
    assert_ne!(
        state, "FINISHED",
        "the job must not finish without the killed worker's tasks"
    );
    // Only two slots are left for four subtasks: the job waits for the worker to come back.
    let _w2 = worker(tmp.path(), &addr, "w2", 2);
    let end = wait_for_in(
        Some(tmp.path()),
        &addr,
        &id,
        &["FINISHED", "FAILED", "CANCELED"],
        Duration::from_secs(60),
    );
    let log = coord.log();
    assert_eq!(end, "FINISHED", "coordinator log:\n{log}");
    if std::env::var_os("SLUICE_TEST_DUMP_LOGS").is_some() {
        eprintln!("{}", logs(tmp.path()));
    }
    assert!(
        log.contains("worker lost") && log.contains("restoring from checkpoint"),
        "failover not logged:\n{log}"
    );
    // The failure is in the job's exceptions history.
    let rest = std::fs::read_to_string(tmp.path().join("rest.addr")).unwrap();
    let mut s = std::net::TcpStream::connect(&rest).unwrap();
    write!(
        s,
        "GET /jobs/{id}/exceptions HTTP/1.1\r\nHost: {rest}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    // The first failure reported is the lost worker, or a task on the surviving worker whose
    // channel to it closed: whichever reached the coordinator first.
    assert!(
        answer.contains(r#""attempt":0"#) && (answer.contains("worker w2 was lost") || answer.contains("is closed")),
        "exceptions history: {answer}"
    );
    // A stuck checkpoint would time out and restart the job, hiding a hang: there must be none.
    assert!(
        !log.contains("checkpoint failed"),
        "a checkpoint failed:\n{}",
        logs(tmp.path())
    );
    assert_same_lines(
        &committed_lines(&out),
        &expected,
        "cluster output after a worker was killed",
    );
    let pending = std::fs::read_dir(out.join("_pending")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pending, 0, "transactions left pending");
    drop(w1);
}

#[test]
fn submit_list_cancel_and_bad_input() {
    secure();
    let tmp = tempfile::tempdir().unwrap();
    let (coord, addr) = coordinator(tmp.path(), &["--slot-wait", "1s"]);
    let _w = worker(tmp.path(), &addr, "w1", 2);

    let out = run(&["submit", "--coordinator", &addr, "no-such-job"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown job 'no-such-job'") && err.contains("nexmark-q5"),
        "{err}"
    );

    let out = run(&[
        "submit",
        "--coordinator",
        &addr,
        "nexmark-q0",
        "--checkpoint-interval",
        "1s",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--checkpoint-dir"), "{}", text(&out.stderr));
    // The tiered backend keeps its files in the checkpoint storage: refused at submission.
    let out = run(&[
        "submit",
        "--coordinator",
        &addr,
        "nexmark-q0",
        "--state-backend",
        "tiered",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--state-backend tiered keeps the job's state in its checkpoint storage"),
        "{}",
        text(&out.stderr)
    );
    // A worker has no backend of its own: every subtask runs on the job's.
    let out = run(&["worker", "--coordinator", &addr, "--state-backend", "tiered"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("in a cluster each job chooses its backend"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "submit",
        "--coordinator",
        &addr,
        "nexmark-q0",
        "--state-backend",
        "rocks",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(r#""rocks" is not a state backend"#),
        "{}",
        text(&out.stderr)
    );

    let id = submit(
        &addr,
        &["nexmark-q0", "--parallelism", "2", "--events-per-second", "2000"],
    );
    assert_eq!(id.len(), 16, "job ids are 16 hex digits: {id}");
    wait_for(&addr, &id, &["RUNNING"], Duration::from_secs(20));
    let out = run(&["cancel", "--coordinator", &addr, &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(&addr, &id, &["CANCELED"], Duration::from_secs(20));
    let out = run(&["cancel", "--coordinator", &addr, &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already ended: CANCELED"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["cancel", "--coordinator", &addr, "0000"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no job with id '0000'"),
        "{}",
        text(&out.stderr)
    );

    // Three slots needed, two offered: the job waits a second, then fails and says why.
    let big = submit(&addr, &["nexmark-q0", "--parallelism", "3", "--events", "10"]);
    wait_for(&addr, &big, &["FAILED"], Duration::from_secs(20));
    let listing = text(&run(&["list", "--coordinator", &addr]).stdout);
    assert!(
        listing.contains("not enough task slots: the job needs 3, 2 are free"),
        "{listing}"
    );

    // A finished bounded job.
    let small = submit(&addr, &["nexmark-q1", "--parallelism", "2", "--events", "5000"]);
    wait_for(&addr, &small, &["FINISHED"], Duration::from_secs(30));

    // Garbage on the control port closes that connection with a logged reason (over TLS:
    // the handshake fails); the coordinator keeps serving.
    let reason = if secured() {
        "TLS handshake failed"
    } else {
        "bad first frame"
    };
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(&[12, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    // Over TLS the coordinator first sends an alert record (content type 21) saying why.
    let alert_only = secured() && answer.first() == Some(&21) && answer.len() < 16;
    assert!(
        answer.is_empty() || alert_only,
        "the coordinator closes a connection that sends garbage: {answer:?}"
    );
    let start = Instant::now();
    while !coord.log().contains(reason) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no reason logged:\n{}",
            coord.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status(&addr, &small), "FINISHED");

    // A client pointed at a wrong address says so.
    let out = run(&["list", "--coordinator", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot reach the coordinator at 127.0.0.1:1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_worker_pointed_at_a_wrong_address_retries_with_back_off() {
    secure();
    let tmp = tempfile::tempdir().unwrap();
    let mut w = worker(tmp.path(), "127.0.0.1:1", "w4", 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(w.child.try_wait().unwrap().is_none(), "the worker keeps trying");
    w.kill();
    let log = w.log();
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot reach the coordinator; retrying"))
        .collect();
    assert!(retries.len() >= 2, "expected repeated attempts:\n{log}");
    assert!(
        log.contains("retry_in_ms: 100") && log.contains("retry_in_ms: 200"),
        "back-off doubles:\n{log}"
    );
}

/// Savepoints in cluster mode: a savepoint of a running job, then stop with a savepoint;
/// the job submitted again from it at parallelism 3 finishes with exact output. Bad requests
/// are refused by name.
#[test]
fn stop_with_savepoint_and_resubmit_at_another_parallelism_is_exact() {
    secure();
    let tmp = tempfile::tempdir().unwrap();
    let (input, expected) = write_input(tmp.path(), 20_000);
    let (out, ck, sp) = (
        tmp.path().join("out"),
        tmp.path().join("ck"),
        tmp.path().join("savepoints"),
    );
    let (_coord, addr) = coordinator(tmp.path(), &["--checkpoint-dir", ck.to_str().unwrap()]);
    let _w1 = worker(tmp.path(), &addr, "w1", 2);
    let _w2 = worker(tmp.path(), &addr, "w2", 2);
    let common = |p: &'static str| -> Vec<String> {
        [
            "wordcount",
            "--parallelism",
            p,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--checkpoint-interval",
            "200ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut first = common("2");
    first.extend(["--lines-per-second".to_string(), "4000".to_string()]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let id = submit(&addr, &first);
    wait_for(&addr, &id, &["RUNNING"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    let sp_dir = sp.to_str().unwrap();
    let taken = run(&["savepoint", "--coordinator", &addr, &id, sp_dir]);
    assert!(taken.status.success(), "{}", text(&taken.stderr));
    let running_savepoint = text(&taken.stdout).lines().last().unwrap().to_string();
    assert!(
        Path::new(&running_savepoint).join("_metadata").is_file(),
        "{running_savepoint}"
    );
    let stopped = run(&["stop", "--coordinator", &addr, &id, "--savepoint-dir", sp_dir]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let path = text(&stopped.stdout).lines().last().unwrap().to_string();
    assert_eq!(
        wait_for(&addr, &id, &["FINISHED", "FAILED", "CANCELED"], Duration::from_secs(20)),
        "FINISHED"
    );
    assert!(committed_lines(&out).len() < expected.len(), "the stop came mid-stream");
    // A savepoint of a job that has ended, and of one that does not exist, are refused.
    let again = run(&["savepoint", "--coordinator", &addr, &id, sp_dir]);
    assert!(
        !again.status.success() && text(&again.stderr).contains("already ended"),
        "{}",
        text(&again.stderr)
    );
    let unknown = run(&["stop", "--coordinator", &addr, "0000", "--savepoint-dir", sp_dir]);
    assert!(
        !unknown.status.success() && text(&unknown.stderr).contains("no job with id '0000'"),
        "{}",
        text(&unknown.stderr)
    );
    // Resume at parallelism 3 from the stop's savepoint.
    let mut second = common("3");
    second.extend(["--from-savepoint".to_string(), path.clone()]);
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let id2 = submit(&addr, &second);
    assert_eq!(
        wait_for_in(
            Some(tmp.path()),
            &addr,
            &id2,
            &["FINISHED", "FAILED", "CANCELED"],
            Duration::from_secs(60)
        ),
        "FINISHED"
    );
    assert_same_lines(
        &committed_lines(&out),
        &expected,
        "resumed from a savepoint at parallelism 3",
    );
    // The archive lists both savepoints.
    let listing = text(&run(&["savepoint", "list", sp_dir]).stdout);
    assert_eq!(listing.lines().count(), 2, "{listing}");
}
