//! The probes of the security issue, as they were made, against a cluster with mutual TLS,
//! REST tokens and confined paths: each is refused with a specific message, logged with the
//! peer's address, and nothing of the running job is lost.

// Tests driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use common::procs::{sluice, text, Proc};
use common::{assert_same_lines, committed_lines, write_input};
use sluice_transport::tls::{ClusterTls, TlsFiles};
use sluice_transport::wire::{encode_frame, read_frame, write_frame, WireMessage};

/// `sluice certs` into `dir` with these workers and admins (and a REST certificate).
fn certs(dir: &Path, workers: &str, admins: &str) {
    let out = sluice()
        .args([
            "certs",
            "--dir",
            dir.to_str().unwrap(),
            "--workers",
            workers,
            "--admins",
            admins,
        ])
        .args(["--rest-hosts", "localhost,127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "sluice certs: {}", text(&out.stderr));
}

/// The environment that makes a process use `stem`'s certificate of the CA in `dir`.
fn tls_env(dir: &Path, stem: &str) -> Vec<(String, String)> {
    common::procs::tls_env_in(dir, stem)
}

fn cli(env: &[(String, String)], args: &[&str]) -> Output {
    sluice().envs(env.iter().cloned()).args(args).output().unwrap()
}

/// A daemon started with `env`; the first line it prints.
fn daemon(dir: &Path, name: &str, env: &[(String, String)], args: &[&str]) -> (Proc, String) {
    let log = dir.join(format!("{name}.log"));
    let mut child: Child = sluice()
        .envs(env.iter().cloned())
        .args(["--log-level", "info"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc { child, log }, line.trim().to_string())
}

fn status_of(env: &[(String, String)], addr: &str, id: &str) -> String {
    let out = cli(env, &["list", "--coordinator", addr]);
    assert!(out.status.success(), "list: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .find(|l| l.starts_with(id))
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Registers as `claimed` over TLS with the certificate `stem`, then sends `then`; the
/// coordinator's first answer.
fn raw_session(dir: &Path, stem: &str, addr: &str, claimed: &str, then: Vec<WireMessage>) -> Option<WireMessage> {
    let tls = ClusterTls::from_files(&TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let who = sluice_transport::tls::Identity::Coordinator;
        let mut s = tls.connect(tcp, &who, addr, Duration::from_secs(5)).await.unwrap();
        let register = WireMessage::Register {
            worker_id: claimed.into(),
            data_address: "127.0.0.1:9".into(),
            slots: 1,
            build: sluice_build(),
        };
        write_frame(&mut s, &encode_frame(&register).unwrap()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s))
            .await
            .ok()?
            .ok()?;
        for m in then {
            write_frame(&mut s, &encode_frame(&m).unwrap()).await.ok()?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        answer
    })
}

#[test]
fn a_tls_cluster_refuses_intruders_impersonators_and_spoofed_frames_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, other) = (tmp.path().join("pki"), tmp.path().join("other"));
    certs(&pki, "w1,w2,w3", "ops");
    certs(&other, "w1", "ops");
    let (input, expected) = write_input(tmp.path(), 20_000);
    let out = tmp.path().join("out");
    let admin = tls_env(&pki, "admin-ops");
    let (coord, line) = daemon(
        tmp.path(),
        "coordinator",
        &tls_env(&pki, "coordinator"),
        &["coordinator", "--bind", "127.0.0.1:0"],
    );
    let addr = line.strip_prefix("coordinator listening on ").unwrap().to_string();
    let mut workers = Vec::new();
    for w in ["w1", "w2"] {
        let env = tls_env(&pki, &format!("worker-{w}"));
        workers.push(daemon(tmp.path(), w, &env, &["worker", "--coordinator", &addr, "--slots", "2"]).0);
    }
    let submitted = cli(
        &admin,
        &[
            "submit",
            "--coordinator",
            &addr,
            "wordcount",
            "--parallelism",
            "4",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--lines-per-second",
            "4000",
        ],
    );
    assert!(submitted.status.success(), "submit: {}", text(&submitted.stderr));
    let id = text(&submitted.stdout).lines().last().unwrap().trim().to_string();
    common::http::eventually("the job runs", Duration::from_secs(30), || {
        status_of(&admin, &addr, &id) == "RUNNING"
    });

    // A client without a certificate, and one of another CA: refused in the handshake.
    let plain = cli(&[], &["cancel", "--coordinator", &addr, &id]);
    assert!(!plain.status.success(), "a plain client cancelled the job");
    assert!(
        text(&plain.stderr).contains("if it uses TLS"),
        "{}",
        text(&plain.stderr)
    );
    // Another CA's admin that trusts ours (it could read our public CA certificate).
    let mut foreign_env = tls_env(&other, "admin-ops");
    foreign_env[0].1 = pki.join("ca.pem").display().to_string();
    let foreign = cli(&foreign_env, &["cancel", "--coordinator", &addr, &id]);
    assert_eq!(foreign.status.code(), Some(7), "{}", text(&foreign.stderr));
    assert!(
        text(&foreign.stderr).contains("refused this client's certificate"),
        "{}",
        text(&foreign.stderr)
    );
    // One that does not trust ours: it refuses the coordinator itself.
    let distrustful = cli(&tls_env(&other, "admin-ops"), &["cancel", "--coordinator", &addr, &id]);
    assert_eq!(distrustful.status.code(), Some(7), "{}", text(&distrustful.stderr));
    // A worker's certificate is not an admin's.
    let as_worker = cli(&tls_env(&pki, "worker-w1"), &["cancel", "--coordinator", &addr, &id]);
    assert_eq!(as_worker.status.code(), Some(7), "{}", text(&as_worker.stderr));
    assert!(
        text(&as_worker.stderr).contains("needs an admin certificate"),
        "{}",
        text(&as_worker.stderr)
    );
    // w3's certificate cannot register as w1 (which would take w1's place and its tasks).
    let answer = raw_session(&pki, "worker-w3", &addr, "w1", Vec::new());
    assert!(
        matches!(&answer, Some(WireMessage::Rejected { reason, kind: 6 }) if reason.contains("w1.worker.sluice")),
        "impersonation: {answer:?}"
    );
    // w3 registered as itself owns no task of the job: its TaskFinished frames are dropped.
    let spoofed = (0..8)
        .map(|task| WireMessage::TaskFinished {
            job_id: id.clone(),
            attempt: 0,
            task,
            cancelled: false,
        })
        .collect();
    let answer = raw_session(&pki, "worker-w3", &addr, "w3", spoofed);
    assert!(
        matches!(answer, Some(WireMessage::RegisterAck { .. })),
        "w3 registers as itself: {answer:?}"
    );

    common::http::eventually("the job finishes", Duration::from_secs(60), || {
        status_of(&admin, &addr, &id) == "FINISHED"
    });
    assert_same_lines(
        &committed_lines(&out),
        &expected,
        "output of the TLS cluster under probes",
    );
    let log = coord.log();
    assert!(
        log.contains("TLS handshake failed") && log.contains("peer"),
        "handshake refusals are logged:\n{log}"
    );
    assert!(log.contains("refused a request: not allowed"), "{log}");
    // The output is not readable by others (umask 027).
    for f in files_under(&out) {
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&f).unwrap());
        assert_eq!(mode & 0o007, 0, "{} has mode {mode:o}", f.display());
    }
    drop(workers);
}

/// `path` if it is a file, else every file under it.
fn files_under(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let entries = std::fs::read_dir(path).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>());
    entries
        .unwrap_or_default()
        .iter()
        .flat_map(|p| files_under(p))
        .collect()
}

/// One HTTP request with an optional bearer token: status and body.
fn call(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        raw.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

const ADMIN: &str = "admin-token-0123456789abcdef";
const READER: &str = "read-token-0123456789abcdef";

fn rest_coordinator(dir: &Path, allowed: &Path, extra: &[(String, String)]) -> (Proc, String, String) {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("admin ops {ADMIN}\nread-only grafana {READER}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut env = vec![
        ("SLUICE_REST_TOKENS_FILE".to_string(), tokens.display().to_string()),
        (
            "SLUICE_SECURITY_ALLOWED_PATHS".to_string(),
            format!("[\"{}\"]", allowed.display()),
        ),
    ];
    env.extend_from_slice(extra);
    let log = dir.join("coordinator.log");
    let mut child = sluice()
        .envs(env)
        .args([
            "--log-level",
            "info",
            "coordinator",
            "--bind",
            "127.0.0.1:0",
            "--rest-bind",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut a, mut r) = (String::new(), String::new());
    out.read_line(&mut a).unwrap();
    out.read_line(&mut r).unwrap();
    let addr = a.trim().rsplit(' ').next().unwrap().to_string();
    let rest = r.trim().rsplit(' ').next().unwrap().to_string();
    (Proc { child, log }, addr, rest)
}

#[test]
fn rest_needs_tokens_and_keeps_paths_inside_the_allowed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let (coord, addr, rest) = rest_coordinator(tmp.path(), &allowed, &[]);
    assert_eq!(call(&rest, "GET", "/healthz", None, "").0, 200);
    let (s, body) = call(&rest, "GET", "/jobs", None, "");
    assert!(s == 401 && body.contains("bearer token"), "{s} {body}");
    assert_eq!(call(&rest, "GET", "/jobs", Some("wrong-token-0123456789"), "").0, 401);
    assert_eq!(call(&rest, "GET", "/jobs", Some(READER), "").0, 200);
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "private words\n").unwrap();
    let submit = |input: &Path| {
        format!(
            r#"{{"job":"wordcount","parallelism":1,"options":{{"input":"{}","output":"{}"}}}}"#,
            input.display(),
            allowed.join("out").display()
        )
    };
    let (s, body) = call(&rest, "POST", "/jobs", Some(READER), &submit(&secret));
    assert!(s == 403 && body.contains("read-only"), "{s} {body}");
    let (s, body) = call(&rest, "POST", "/jobs", Some(ADMIN), &submit(&secret));
    assert!(
        s == 403 && body.contains("--input") && body.contains("outside the allowed paths"),
        "{s} {body}"
    );
    assert!(!allowed.join("out").exists(), "nothing was created for a refused job");
    // A savepoint target outside the allowed paths, for a job that does not even exist.
    let target = tmp.path().join("elsewhere");
    let body = format!(r#"{{"targetDirectory":"{}"}}"#, target.display());
    // The job is checked first: an unknown one is a 404 whatever the target.
    let (s, _) = call(&rest, "POST", "/jobs/nope/savepoints", Some(ADMIN), &body);
    assert_eq!(s, 404);
    let inside = allowed.join("sp");
    let body = format!(r#"{{"targetDirectory":"{}"}}"#, inside.display());
    let (s, _) = call(&rest, "POST", "/jobs/nope/savepoints", Some(ADMIN), &body);
    assert_eq!(s, 404);
    // For a running job, a target outside the allowed paths is refused before anything.
    let _w = common::procs::worker(tmp.path(), &addr, "w1", 1);
    let (input, _) = write_input(&allowed, 2_000);
    let job = format!(
        r#"{{"job":"wordcount","parallelism":1,"options":{{"input":"{}","output":"{}","lines-per-second":"200"}}}}"#,
        input.display(),
        allowed.join("out").display()
    );
    let (s, body) = call(&rest, "POST", "/jobs", Some(ADMIN), &job);
    assert_eq!(s, 202, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = id["jobid"].as_str().or(id["jid"].as_str()).unwrap().to_string();
    let body = format!(r#"{{"targetDirectory":"{}"}}"#, target.display());
    let (s, answer) = call(&rest, "POST", &format!("/jobs/{id}/savepoints"), Some(ADMIN), &body);
    assert!(s == 403 && answer.contains("outside the allowed paths"), "{s} {answer}");
    assert!(
        !target.exists() && !inside.exists(),
        "no savepoint directory was created"
    );
    let log = coord.log();
    assert!(
        log.contains("REST: refused a request") && log.contains("127.0.0.1"),
        "{log}"
    );
}

#[test]
fn rest_switches_turn_submission_and_cancellation_off_and_https_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    certs(&pki, "w1", "ops");
    let allowed = tmp.path().to_path_buf();
    let extra = vec![
        ("SLUICE_REST_SUBMIT_ENABLED".to_string(), "false".to_string()),
        ("SLUICE_REST_CANCEL_ENABLED".to_string(), "false".to_string()),
        (
            "SLUICE_REST_TLS_CERT".to_string(),
            pki.join("rest.pem").display().to_string(),
        ),
        (
            "SLUICE_REST_TLS_KEY".to_string(),
            pki.join("rest.key").display().to_string(),
        ),
    ];
    let (_coord, _addr, rest) = rest_coordinator(tmp.path(), &allowed, &extra);
    let port = rest.rsplit(':').next().unwrap();
    let curl = |method: &str, path: &str, token: &str| -> String {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(pki.join("ca.pem"))
            .args(["-X", method, "-H", &format!("Authorization: Bearer {token}")])
            .args(["-H", "Content-Type: application/json", "-d", "{}"])
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .unwrap();
        text(&out.stdout)
    };
    assert_eq!(curl("GET", "/jobs", ADMIN), "200");
    assert_eq!(curl("POST", "/jobs", ADMIN), "403");
    assert_eq!(curl("PATCH", "/jobs/x", ADMIN), "403");
    assert_eq!(curl("GET", "/jobs", "nope-nope-nope-nope-nope"), "401");
    // Plain HTTP on the HTTPS port gets nothing.
    let plain = std::net::TcpStream::connect(&rest).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /jobs HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        Ok(buf)
    });
    assert!(!plain.unwrap_or_default().contains("200 OK"));
}

#[test]
fn careless_settings_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // A world-readable token file.
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, format!("admin ops {ADMIN}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = sluice()
        .env("SLUICE_REST_TOKENS_FILE", &tokens)
        .args(["coordinator", "--bind", "127.0.0.1:0", "--rest-bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("chmod 600"), "{}", text(&out.stderr));
    // Tokens over plain HTTP beyond loopback.
    let tokens = tmp.path().join("tokens-private");
    std::fs::write(&tokens, format!("admin ops {ADMIN}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = sluice()
        .env("SLUICE_REST_TOKENS_FILE", &tokens)
        .args(["coordinator", "--bind", "127.0.0.1:0", "--rest-bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("over plain HTTP"), "{}", text(&out.stderr));
    // Half the TLS settings.
    let out = sluice()
        .env("SLUICE_SECURITY_TLS_CA", "/x")
        .args(["coordinator", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // A worker on a wildcard address with nothing to tell peers.
    let out = sluice()
        .args(["worker", "--coordinator", "127.0.0.1:1", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("--advertise-address"),
        "{}",
        text(&out.stderr)
    );
    // A worker whose --id is not its certificate's.
    let pki = tmp.path().join("pki");
    certs(&pki, "w1", "ops");
    let out = sluice()
        .envs(tls_env(&pki, "worker-w1"))
        .args(["worker", "--coordinator", "127.0.0.1:1", "--id", "w2"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("does not match the worker's certificate"),
        "{}",
        text(&out.stderr)
    );
    let _: PathBuf = pki;
}

#[test]
fn a_worker_checks_job_files_against_its_own_allowed_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let (input, _) = write_input(tmp.path(), 100);
    // The coordinator allows anything; the worker only its directory.
    let (_coord, line) = daemon(
        tmp.path(),
        "coordinator",
        &[],
        &["coordinator", "--bind", "127.0.0.1:0"],
    );
    let addr = line.strip_prefix("coordinator listening on ").unwrap().to_string();
    let env = vec![(
        "SLUICE_SECURITY_ALLOWED_PATHS".to_string(),
        allowed.display().to_string(),
    )];
    let _w = daemon(
        tmp.path(),
        "w1",
        &env,
        &["worker", "--coordinator", &addr, "--id", "w1"],
    );
    let out = allowed.join("out");
    let submitted = cli(
        &[],
        &[
            "submit",
            "--coordinator",
            &addr,
            "wordcount",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--restart-strategy",
            "fixed-delay:attempts=5,delay=100ms",
        ],
    );
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let id = text(&submitted.stdout).lines().last().unwrap().trim().to_string();
    common::http::eventually("the job fails", Duration::from_secs(30), || {
        status_of(&[], &addr, &id) == "FAILED"
    });
    let listing = text(&cli(&[], &["list", "--coordinator", &addr]).stdout);
    assert!(
        listing.contains("is not allowed") && listing.contains("--input"),
        "{listing}"
    );
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn a_second_process_under_one_worker_id_makes_the_first_stop_instead_of_fighting() {
    let tmp = tempfile::tempdir().unwrap();
    let (coord, line) = daemon(
        tmp.path(),
        "coordinator",
        &[],
        &["coordinator", "--bind", "127.0.0.1:0"],
    );
    let addr = line.strip_prefix("coordinator listening on ").unwrap().to_string();
    let (mut first, _) = daemon(
        tmp.path(),
        "first",
        &[],
        &["worker", "--coordinator", &addr, "--id", "dup"],
    );
    common::http::eventually("the first registers", Duration::from_secs(10), || {
        coord.log().contains("worker registered")
    });
    let (mut second, _) = daemon(
        tmp.path(),
        "second",
        &[],
        &["worker", "--coordinator", &addr, "--id", "dup"],
    );
    let mut ended = None;
    common::http::eventually("the first stops", Duration::from_secs(10), || {
        ended = first.child.try_wait().unwrap();
        ended.is_some()
    });
    assert!(!ended.unwrap().success());
    assert!(first.log().contains("two processes use this id"), "{}", first.log());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(second.child.try_wait().unwrap().is_none(), "the second keeps its place");
    assert_eq!(
        coord.log().matches("worker registered again").count(),
        1,
        "{}",
        coord.log()
    );
    second.kill();
}

/// The build the `sluice` binary registers its workers with.
fn sluice_build() -> String {
    use sluice_core::cluster::JobRegistry;
    sluice::App::new("sluice").builtins().registry().unwrap().build_id()
}
