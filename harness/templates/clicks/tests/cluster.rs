//! The template's binary as a cluster: a coordinator and two workers of `clicks`, the sessions
//! job submitted with checkpoints, one worker killed (SIGKILL) mid-run, and the committed
//! sessions compared with a plain computation over the same clicks.
// Sluice's own lint bans threads and wall-clock reads in code the simulator runs; a test
// that drives processes needs both.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_clicks");

/// A child process killed when dropped, with its standard output's lines.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        Proc::start_logging(args, Stdio::null())
    }

    /// Like [`Proc::start`], its standard error (the log) going to `log`.
    fn start_logging(args: &[&str], log: impl Into<Stdio>) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("SLUICE_LOG")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the clicks binary starts");
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proc { child, lines }
    }

    /// The rest of the first line starting with `prefix`.
    fn wait_for(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].trim().to_string(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line starting with {prefix:?}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clicks(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("SLUICE_LOG").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `n` clicks of 12 users in time order, with silences long enough to split sessions.
fn write_clicks(path: &Path, n: usize) -> Vec<(i64, String)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let (mut t, mut text, mut all) = (0i64, String::new(), Vec::new());
    for _ in 0..n {
        t += next(400) as i64;
        let user = format!("u{}", next(12));
        text.push_str(&format!("{t},{user},p{}\n", next(5)));
        all.push((t, user));
    }
    std::fs::write(path, text).unwrap();
    all
}

/// The sessions of `all` with `gap_ms`, computed directly: per user, split where two clicks
/// are more than the gap apart.
fn expected(all: &[(i64, String)], gap_ms: i64) -> Vec<String> {
    let mut by_user: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (t, u) in all {
        by_user.entry(u).or_default().push(*t);
    }
    let mut lines = Vec::new();
    for (user, times) in by_user {
        let (mut start, mut end, mut n) = (times[0], times[0], 0u64);
        for t in times {
            if t - end > gap_ms {
                lines.push(format!("{user} {start} {end} {n}"));
                (start, n) = (t, 0);
            }
            end = t;
            n += 1;
        }
        lines.push(format!("{user} {start} {end} {n}"));
    }
    lines.sort();
    lines
}

fn committed(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).into_iter().flatten() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") && e.path().is_file() {
            lines.extend(std::fs::read_to_string(e.path()).unwrap().lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

fn status(addr: &str, id: &str) -> String {
    let out = clicks(&["list", "--coordinator", addr]);
    let list = text(&out.stdout);
    list.lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("UNKNOWN")
        .to_string()
}

/// A coordinator (logging to `log`) with checkpoints in `ck`, and `workers` workers of one
/// slot each; the coordinator's address.
fn start_cluster(ck: &Path, log: &Path, workers: usize) -> (Proc, String, Vec<Proc>) {
    let coordinator = Proc::start_logging(
        &[
            "--log-level",
            "info",
            "coordinator",
            "--bind",
            "127.0.0.1:0",
            "--checkpoint-dir",
            ck.to_str().unwrap(),
        ],
        std::fs::File::create(log).unwrap(),
    );
    let addr = coordinator.wait_for("coordinator listening on ");
    let workers: Vec<Proc> = (0..workers).map(|_| start_worker(&addr)).collect();
    (coordinator, addr, workers)
}

fn start_worker(addr: &str) -> Proc {
    let w = Proc::start(&["worker", "--coordinator", addr, "--slots", "1"]);
    w.wait_for("worker ");
    w
}

fn wait_until_finished(addr: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(addr, id) != "FINISHED" {
        assert!(
            Instant::now() < deadline,
            "the job did not finish: {}",
            status(addr, id)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_template_runs_on_a_cluster_of_its_own_binary_through_a_worker_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("clicks.csv");
    let all = write_clicks(&input, 6000);
    let (ck, out, log) = (
        tmp.path().join("ck"),
        tmp.path().join("out"),
        tmp.path().join("coordinator.log"),
    );
    let listing = text(&clicks(&["jobs"]).stdout);
    assert!(
        listing.starts_with("sessions\n") && listing.contains("--gap <DURATION>"),
        "{listing}"
    );
    let (_coordinator, addr, workers) = start_cluster(&ck, &log, 2);

    let input = input.to_str().unwrap();
    let refused = clicks(&[
        "submit",
        "--coordinator",
        &addr,
        "sessions",
        "--input",
        input,
        "--print",
        "--gap",
        "soon",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("--gap"), "{}", text(&refused.stderr));

    let submitted = clicks(&[
        "submit",
        "--coordinator",
        &addr,
        "-p",
        "2",
        "--checkpoint-interval",
        "200ms",
        "--restart-strategy",
        "fixed-delay:attempts=10,delay=200ms",
        "sessions",
        "--input",
        input,
        "--output",
        out.to_str().unwrap(),
        "--gap",
        "2s",
        "--lines-per-second",
        "1000",
    ]);
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let id = text(&submitted.stdout).lines().last().unwrap().to_string();

    // Mid-run (the input takes three seconds): one of the two workers the job runs on (one
    // slot each, parallelism 2) dies without a word, and a new one takes its place.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status(&addr, &id), "RUNNING");
    let mut workers = workers.into_iter();
    drop(workers.next());
    let _survivor = workers.next();
    let _replacement = start_worker(&addr);

    wait_until_finished(&addr, &id);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("attempt failed; restarting"),
        "the kill must have cost an attempt:\n{log}"
    );
    assert!(
        log.contains("checkpoint complete"),
        "the attempt after it restored a checkpoint:\n{log}"
    );
    let want = expected(&all, 2000);
    assert!(want.len() > 100, "the input makes many sessions");
    assert_eq!(committed(&out), want, "every session exactly once");
}
