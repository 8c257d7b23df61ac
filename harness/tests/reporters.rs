//! The push reporters chosen in the configuration file: StatsD over UDP (received by a
//! listener here) and the log reporter (its summary on standard error); and configuration
//! files the daemon refuses, naming the problem.

// A test driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_LOG");
    c
}

fn config_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("sluice.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn statsd_reporter_sends_gauges_over_udp() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    listener.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let cfg = config_file(
        tmp.path(),
        &format!(
            "[metrics]\nreporters = [\"statsd\"]\ninterval = \"200ms\"\n[metrics.statsd]\naddress = \"{}\"\nprefix = \"test\"\n",
            listener.local_addr().unwrap()
        ),
    );
    let mut child = sluice()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "nexmark-q0",
            "--events-per-second",
            "2000",
            "--events",
            "8000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `test.<job name>.<task>.<subtask>.<operator>.operator_records_in.count` per operator.
    let mut counts: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let start = Instant::now();
    let mut buf = [0u8; 65536];
    while start.elapsed() < Duration::from_secs(30) {
        let Ok(n) = listener.recv(&mut buf) else {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            continue;
        };
        let text = std::str::from_utf8(&buf[..n]).expect("statsd packets are text");
        assert!(n <= 1432, "a packet of {n} bytes exceeds the MTU-safe limit");
        for line in text.lines() {
            let (name, rest) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a statsd line: {line}"));
            let (value, kind) = rest
                .split_once('|')
                .unwrap_or_else(|| panic!("not a statsd line: {line}"));
            assert_eq!(kind, "g", "{line}");
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            assert!(name.starts_with("test.") && !name.contains(' '), "{line}");
            if name.ends_with(".operator_records_in.count") {
                counts.entry(name.to_string()).or_default().push(v);
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!counts.is_empty(), "no operator_records_in.count gauges arrived");
    let rose = counts.values().any(|vs| vs.first() < vs.last());
    assert!(rose, "records in never rose across reports: {counts:?}");
}

#[test]
fn log_reporter_writes_a_periodic_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(tmp.path(), "[metrics]\nreporters = [\"log\"]\ninterval = \"200ms\"\n[logging]\nlevel = \"warn\"\nmodules = { \"sluice::reporters\" = \"info\" }\n");
    let out = sluice()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "nexmark-q0",
            "--events-per-second",
            "4000",
            "--events",
            "4000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics report"), "no summary on stderr:\n{err}");
    assert!(err.contains("operator_records_in"), "{err}");
    // The other modules stay at warn: the runtime's info records are not there.
    assert!(
        !err.contains("starting job"),
        "logging.modules leaked info records of other modules:\n{err}"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Env, &str)] = &[
        ("[coordinator]\nbindd = \"x\"\n", &[], "bindd"),
        ("[metrics]\nreporters = [\"graphite\"]\n", &[], "graphite"),
        ("[logging]\nlevel = \"loud\"\n", &[], "loud"),
        ("", &[("SLUICE_WORKER_SLOTZ", "2")], "SLUICE_WORKER_SLOTZ"),
        ("", &[("SLUICE_COORDINATOR_SLOT_WAIT", "soon")], "coordinator.slot-wait"),
    ];
    for (text, env, needle) in cases {
        let cfg = config_file(tmp.path(), text);
        let mut c = sluice();
        c.args([
            "--config",
            cfg.to_str().unwrap(),
            "coordinator",
            "--bind",
            "127.0.0.1:0",
        ]);
        for (k, v) in *env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} {env:?} was accepted");
        assert!(err.contains(needle), "{text:?} {env:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn the_coordinator_takes_its_settings_from_the_file_and_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(
        tmp.path(),
        "[coordinator]\nbind = \"127.0.0.1:0\"\nrest-bind = \"127.0.0.1:0\"\nheartbeat-interval = \"250ms\"\n",
    );
    let mut child = sluice()
        .args(["--config", cfg.to_str().unwrap(), "coordinator"])
        .env("SLUICE_COORDINATOR_SLOT_WAIT", "7s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let _coordinator = lines.next().unwrap().unwrap();
    let rest = lines.next().unwrap().unwrap().rsplit(' ').next().unwrap().to_string();
    let body = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&rest).unwrap();
        write!(s, "GET /config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("\"heartbeat-interval-ms\":250"), "{body}");
    assert!(body.contains("\"slot-wait-ms\":7000"), "{body}");
}
