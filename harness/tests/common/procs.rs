//! Sluice processes for the cluster tests: a coordinator and workers as child processes on
//! 127.0.0.1 (killed when the test ends), and the CLI to drive them.

// Child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Certificates of the cluster a test binary runs over mutual TLS (see [`secure`]).
static PKI: OnceLock<PathBuf> = OnceLock::new();

/// Makes every process these helpers start in this test binary (coordinators, workers, CLI
/// commands) use mutual TLS: a CA and certificates for the coordinator, workers `w1`..`w4`
/// and an admin, made once. Call it first in every test of a binary that runs secured.
pub(crate) fn secure() {
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "certs",
                "--dir",
                dir.to_str().unwrap(),
                "--workers",
                "w1,w2,w3,w4",
                "--admins",
                "test",
            ])
            .output()
            .expect("sluice certs runs");
        assert!(
            out.status.success(),
            "sluice certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    });
}

/// Whether this test binary runs its cluster over TLS.
pub(crate) fn secured() -> bool {
    PKI.get().is_some()
}

/// The environment that gives a process certificate `stem` when the binary is secured.
fn tls_env(stem: &str) -> Vec<(String, String)> {
    PKI.get().map_or_else(Vec::new, |dir| tls_env_in(dir, stem))
}

/// The environment that makes a process use certificate `stem` of the CA in `dir` (files
/// as `sluice certs` names them).
pub(crate) fn tls_env_in(dir: &Path, stem: &str) -> Vec<(String, String)> {
    let p = |f: &str| dir.join(f).display().to_string();
    vec![
        ("SLUICE_SECURITY_TLS_CA".into(), p("ca.pem")),
        ("SLUICE_SECURITY_TLS_CERT".into(), p(&format!("{stem}.pem"))),
        ("SLUICE_SECURITY_TLS_KEY".into(), p(&format!("{stem}.key"))),
    ]
}

/// A child process killed when the test ends, however it ends.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_LOG");
    c
}

pub(crate) fn coordinator(dir: &Path, args: &[&str]) -> (Proc, String) {
    coordinator_with_env(dir, args, &[])
}

/// A coordinator with extra environment (configuration keys as `SLUICE_<SECTION>_<KEY>`).
pub(crate) fn coordinator_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let log = dir.join("coordinator.log");
    let mut child = sluice()
        .envs(env.iter().copied())
        .envs(tls_env("coordinator"))
        .args([
            "--log-level",
            "info",
            "coordinator",
            "--bind",
            "127.0.0.1:0",
            "--heartbeat-timeout",
            "3s",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if args.contains(&"--rest-bind") {
        // The REST address follows on the next line; the test reads it from the log instead.
        let mut rest = String::new();
        out.read_line(&mut rest).unwrap();
        std::fs::write(
            dir.join("rest.addr"),
            rest.trim().rsplit(' ').next().unwrap_or_default(),
        )
        .unwrap();
    }
    let addr = line
        .trim()
        .strip_prefix("coordinator listening on ")
        .unwrap_or_else(|| {
            let _ = child.wait();
            panic!(
                "unexpected first line of the coordinator: {line:?}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .to_string();
    (Proc { child, log }, addr)
}

pub(crate) fn worker(dir: &Path, addr: &str, id: &str, slots: u32) -> Proc {
    worker_finding(dir, &["--coordinator", addr], id, slots)
}

/// A worker told how to find its coordinator by `find` (`--coordinator ...`, or
/// `--etcd-endpoints ... --cluster-id ...`).
pub(crate) fn worker_finding(dir: &Path, find: &[&str], id: &str, slots: u32) -> Proc {
    let log = dir.join(format!("{id}-{}.log", Instant::now().elapsed().as_nanos()));
    let child = sluice()
        .envs(tls_env(&format!("worker-{id}")))
        .args(["--log-level", "info", "worker"])
        .args(find)
        .args(["--id", id, "--slots", &slots.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Proc { child, log }
}

/// Runs the CLI (as the admin when the binary is secured).
pub(crate) fn run(args: &[&str]) -> Output {
    sluice().envs(tls_env("admin-test")).args(args).output().unwrap()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn submit(addr: &str, args: &[&str]) -> String {
    let out = run(&[&["submit", "--coordinator", addr], args].concat());
    assert!(out.status.success(), "submit failed: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .last()
        .expect("submit prints the job id last")
        .trim()
        .to_string()
}

/// The job's status as `sluice list` prints it.
pub(crate) fn status(addr: &str, id: &str) -> String {
    let out = run(&["list", "--coordinator", addr]);
    assert!(out.status.success(), "list failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("job {id} not listed in:\n{stdout}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields.len() >= 3, "list line is `<id> <name> <STATUS>`: {line}");
    fields[2].to_string()
}

/// Every log in `dir`, for failure messages.
pub(crate) fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    paths.sort();
    for p in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "log")) {
        out.push_str(&format!(
            "==== {}\n{}\n",
            p.display(),
            std::fs::read_to_string(&p).unwrap_or_default()
        ));
    }
    out
}

pub(crate) fn wait_for(addr: &str, id: &str, want: &[&str], timeout: Duration) -> String {
    wait_for_in(None, addr, id, want, timeout)
}

pub(crate) fn wait_for_in(dir: Option<&Path>, addr: &str, id: &str, want: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let s = status(addr, id);
        if want.contains(&s.as_str()) {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "job {id} is {s} after {timeout:?}, waited for {want:?}\n{}",
            dir.map(logs).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `sig` (e.g. `-TERM`) to the child.
pub(crate) fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// Waits for a child with a deadline (the test fails if it runs on).
pub(crate) fn wait_within(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the run did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().map(|mut s| s.read_to_string(&mut stdout));
    child.stderr.take().map(|mut s| s.read_to_string(&mut stderr));
    Output {
        status: child.wait().unwrap(),
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}
