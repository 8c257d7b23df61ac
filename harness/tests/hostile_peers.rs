//! The cluster's ports against peers that do not play by the rules, as they were found: raw
//! and partial frames, floods of connections and of credit frames, oversized requests, a
//! worker offering 2^32 - 1 slots, idle REST connections, and a coordinator out of file
//! descriptors. Each is refused or survived with bounded memory, and the process keeps
//! serving everyone else.

// Tests driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::procs::{coordinator, run, sluice, submit, text, wait_for, worker, Proc};
use sluice_transport::wire::{encode_frame, WireMessage};
use sluice_transport::ChannelId;

/// Resident memory of process `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether the peer closed `s` within `within` (a read returns end of stream or an error).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
        if start.elapsed() > within {
            return false;
        }
    }
}

fn frame(msg: &WireMessage) -> Vec<u8> {
    encode_frame(msg).unwrap().to_vec()
}

/// The one frame the peer answers with (`None` if it closes first).
fn read_reply(s: &mut TcpStream) -> Option<WireMessage> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(Some((msg, _))) = sluice_transport::wire::decode_frame(&bytes) {
            return Some(msg);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// `sluice list` works: the coordinator still serves.
fn still_serves(addr: &str) {
    let out = run(&["list", "--coordinator", addr]);
    assert!(out.status.success(), "list failed: {}", text(&out.stderr));
}

#[test]
fn raw_and_partial_frames_on_the_control_port_are_refused_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (coord, addr) = coordinator(tmp.path(), &[]);
    let pid = coord.child.id();
    let before = rss_mib(pid);
    // Forty connections announcing a frame of almost 16 MiB and sending a little of it.
    let mut partial = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&((16u32 << 20) - 1).to_le_bytes()).unwrap();
        s.write_all(&vec![7u8; 64 << 10]).unwrap();
        partial.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_mib(pid);
    println!("coordinator resident memory with 40 partial 16 MiB frames: {before:.1} -> {during:.1} MiB");
    assert!(
        during - before < 64.0,
        "40 partial frames took {before:.0} -> {during:.0} MiB"
    );
    // They are cut off when the first-frame wait ends.
    for s in &mut partial {
        assert!(
            closed_within(s, Duration::from_secs(15)),
            "a partial first frame was not cut off"
        );
    }
    // Garbage, and a length prefix over the limit: closed at once.
    let mut g = TcpStream::connect(&addr).unwrap();
    g.write_all(&[9, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    assert!(closed_within(&mut g, Duration::from_secs(5)));
    let mut huge = TcpStream::connect(&addr).unwrap();
    huge.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(closed_within(&mut huge, Duration::from_secs(5)));
    still_serves(&addr);
    let log = coord.log();
    assert!(log.contains("refused a request larger than the limit"), "{log}");
}

#[test]
fn an_oversized_submission_is_refused_and_listing_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let (_coord, addr) = coordinator(tmp.path(), &[]);
    // Ten submissions with 0.9 MB of options each (the client API, as the CLI would send
    // them if an argument could be that long).
    for _ in 0..10 {
        let mut s = TcpStream::connect(&addr).unwrap();
        let submit = WireMessage::SubmitJob {
            job_name: "wordcount".into(),
            options: vec![sluice_transport::wire::WireOption {
                key: "input".into(),
                value: "x".repeat(900 << 10),
            }],
            submission: String::new(),
        };
        s.write_all(&frame(&submit)).unwrap();
        match read_reply(&mut s) {
            Some(WireMessage::Rejected { reason, .. }) => {
                assert!(reason.contains("exceeds the coordinator's limit"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // Options that fit in a frame but not in the options limit are refused by name too.
    let medium = "y".repeat(40 << 10);
    let out = run(&[
        "submit",
        "--coordinator",
        &addr,
        "wordcount",
        "--input",
        &medium,
        "--output",
        "/tmp/o",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("more than the limit"),
        "{}",
        text(&out.stderr)
    );
    still_serves(&addr);
}

#[test]
fn a_worker_offering_absurd_slots_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_coord, addr) = coordinator(tmp.path(), &[]);
    let mut s = TcpStream::connect(&addr).unwrap();
    let register = WireMessage::Register {
        worker_id: "greedy".into(),
        data_address: "127.0.0.1:1".into(),
        slots: u32::MAX,
        build: String::new(),
    };
    s.write_all(&frame(&register)).unwrap();
    match read_reply(&mut s) {
        Some(WireMessage::Rejected { reason, .. }) => assert!(reason.contains("between 1 and 1024"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let out = run(&["list", "--coordinator", &addr]);
    assert!(out.status.success());
}

#[test]
fn descriptor_exhaustion_does_not_end_the_coordinator() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("coordinator.log");
    // The coordinator with room for 48 descriptors in all.
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=48:48", "--"])
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .args(["--log-level", "info", "coordinator", "--bind", "127.0.0.1:0"])
        .env_remove("SLUICE_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    let _guard = Proc {
        child,
        log: log.clone(),
    };
    // Hold more connections than it has descriptors.
    let held: Vec<TcpStream> = (0..80).filter_map(|_| TcpStream::connect(&addr).ok()).collect();
    std::thread::sleep(Duration::from_secs(1));
    drop(held);
    // Once they are gone, it serves again (after its first-frame waits end).
    let start = Instant::now();
    loop {
        let out = run(&["list", "--coordinator", &addr]);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the coordinator did not recover: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("accepting a connection failed; retrying"),
        "no EMFILE in the log:\n{text}"
    );
}

/// A worker whose data port the test talks to; its data address from its first line.
fn worker_with_data_address(dir: &Path, addr: &str, env: &[(&str, &str)]) -> (Proc, String) {
    let log = dir.join("worker.log");
    let mut cmd = sluice();
    cmd.args([
        "--log-level",
        "info",
        "worker",
        "--coordinator",
        addr,
        "--id",
        "w1",
        "--slots",
        "1",
    ])
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child: Child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let data = line.trim().rsplit(' ').next().unwrap().to_string();
    (Proc { child, log }, data)
}

fn hello(job: &str) -> Vec<u8> {
    frame(&WireMessage::DataHello {
        job_id: job.into(),
        attempt: 0,
        worker_id: "intruder".into(),
    })
}

#[test]
fn floods_and_partial_frames_on_the_data_port_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (_coord, addr) = coordinator(tmp.path(), &[]);
    // The frame timeout well below the connect (claim) timeout: partial frames must be cut
    // off by the former, not by the latter.
    let env = [
        ("SLUICE_WORKER_FRAME_TIMEOUT", "1s"),
        ("SLUICE_WORKER_CONNECT_TIMEOUT", "8s"),
    ];
    let (w, data) = worker_with_data_address(tmp.path(), &addr, &env);
    let pid = w.child.id();
    let before = rss_mib(pid);
    // A million credit frames for channels nobody opened, after a greeting: a receiving
    // connection takes no credits, so the first one closes it.
    let mut s = TcpStream::connect(&data).unwrap();
    s.write_all(&hello("no-such-job")).unwrap();
    let credit = |i: u32| {
        frame(&WireMessage::Credit {
            channel: ChannelId {
                edge: i,
                from: i,
                to: i,
            },
            attempt: 0,
            credits: 1,
        })
    };
    let mut flood = Vec::with_capacity(1 << 20);
    for i in 0..20_000 {
        flood.extend_from_slice(&credit(i));
    }
    let mut sent = 0;
    for _ in 0..50 {
        if s.write_all(&flood).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < 50 || closed_within(&mut s, Duration::from_secs(5)),
        "the credit flood was not cut off"
    );
    // Twenty greeted connections that start a 16 MiB frame and stop: cut off after the frame
    // timeout, holding little meanwhile.
    let mut partial = Vec::new();
    for i in 0..20 {
        let mut p = TcpStream::connect(&data).unwrap();
        p.write_all(&hello(&format!("job-{i}"))).unwrap();
        p.write_all(&((16u32 << 20) - 8).to_le_bytes()).unwrap();
        p.write_all(&vec![1u8; 256 << 10]).unwrap();
        partial.push(p);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_mib(pid);
    println!(
        "worker resident memory after a credit flood and 20 partial 16 MiB frames: {before:.1} -> {during:.1} MiB"
    );
    assert!(
        during - before < 64.0,
        "partial frames took {before:.0} -> {during:.0} MiB"
    );
    for p in &mut partial {
        assert!(
            closed_within(p, Duration::from_secs(4)),
            "a partial data frame was not cut off by the frame timeout"
        );
    }
    // A greeting for an attempt that never runs here is closed after the connect timeout.
    let mut idle = TcpStream::connect(&data).unwrap();
    idle.write_all(&hello("never-deployed")).unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(12)),
        "an unclaimed connection stayed open"
    );
    let log = w.log();
    assert!(log.contains("credit for channel"), "{log}");
}

#[test]
fn idle_and_surplus_rest_connections_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("coordinator.log");
    let mut child = sluice()
        .args([
            "--log-level",
            "info",
            "coordinator",
            "--bind",
            "127.0.0.1:0",
            "--rest-bind",
            "127.0.0.1:0",
        ])
        .env("SLUICE_REST_IDLE_TIMEOUT", "1s")
        .env("SLUICE_REST_MAX_CONNECTIONS", "8")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut l1, mut l2) = (String::new(), String::new());
    out.read_line(&mut l1).unwrap();
    out.read_line(&mut l2).unwrap();
    let rest = l2.trim().rsplit(' ').next().unwrap().to_string();
    let _guard = Proc { child, log };
    // A silent connection is closed after the idle timeout.
    let mut silent = TcpStream::connect(&rest).unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(15)),
        "an idle REST connection stayed open"
    );
    // More connections than the limit: the surplus is closed at once, the rest still served.
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&rest).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&rest).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)),
        "a connection over the limit was served"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = common::http::http(&rest, "GET", "/overview", None);
    assert_eq!(code, 200);
}

#[test]
fn connections_between_workers_close_when_their_attempt_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = common::write_input(tmp.path(), 500);
    let (_coord, addr) = coordinator(tmp.path(), &[]);
    let (w1, w2) = (worker(tmp.path(), &addr, "w1", 1), worker(tmp.path(), &addr, "w2", 1));
    let run_job = |i: usize| {
        let out = tmp.path().join(format!("out-{i}"));
        let id = submit(
            &addr,
            &[
                "wordcount",
                "-p",
                "2",
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
        );
        let end = wait_for(&addr, &id, &["FINISHED", "FAILED", "CANCELED"], Duration::from_secs(60));
        let listing = text(&run(&["list", "--coordinator", &addr]).stdout);
        assert_eq!(
            end,
            "FINISHED",
            "job {i}: {listing}\n{}",
            common::procs::logs(tmp.path())
        );
    };
    // Each job spans both workers (one slot each), so each opens connections between them.
    run_job(0);
    std::thread::sleep(Duration::from_millis(500));
    let (f1, f2) = (fds(w1.child.id()), fds(w2.child.id()));
    for i in 1..=10 {
        run_job(i);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (g1, g2) = (fds(w1.child.id()), fds(w2.child.id()));
    assert!(
        g1 <= f1 + 2 && g2 <= f2 + 2,
        "descriptors grew over 10 jobs: w1 {f1} -> {g1}, w2 {f2} -> {g2}"
    );
}

#[test]
fn one_address_holding_connections_unintroduced_does_not_shut_out_others() {
    let tmp = tempfile::tempdir().unwrap();
    // Room for 100 connections: without a cap per address, the flood below would take all.
    let env = [("SLUICE_COORDINATOR_MAX_CONNECTIONS", "100")];
    let (coord, addr) = common::procs::coordinator_with_env(tmp.path(), &[], &env);
    // 200 connections from 127.0.0.2 that never say anything: at most 64 are kept waiting
    // for their first frame, the rest are closed at once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..200 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(s) = socket.connect(addr.parse().unwrap()).await {
                held.push(s);
            }
        }
        held
    });
    std::thread::sleep(Duration::from_millis(300));
    // Everyone else (127.0.0.1) is served at once.
    let start = Instant::now();
    still_serves(&addr);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "listing took {:?}",
        start.elapsed()
    );
    let log = coord.log();
    assert!(
        log.contains("too many connections from this address have not introduced themselves"),
        "{log}"
    );
    drop(held);
}
