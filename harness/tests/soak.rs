//! Soak: a coordinator and two workers run one long paced job while short jobs come and go
//! around it (finished, cancelled, stopped with a savepoint that is then disposed) for
//! `SOAK_SECONDS` (default 60; the test command runs 90, BENCHMARKS.md records a
//! 15-minute run). Every finished job's output is exact, and when it is over the processes
//! hold no more descriptors or threads than after warm-up, their memory has not grown
//! with the number of jobs, ended jobs' checkpoints are gone, `sluice list` keeps only the
//! configured number of ended jobs and `/metrics` only running ones.
//!
//! Prints one line per sample (`soak t=.. jobs=.. coordinator fds/threads/rss ..`) so a long
//! run can be plotted.

// Tests driving child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::procs::{coordinator_with_env, logs, run, submit, text, wait_for_in, worker, Proc};

/// Ended jobs the coordinator keeps (set low so eviction happens within the run).
const RETAINED: usize = 5;

/// Descriptors, threads and resident MiB of a process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_mib: f64,
}

fn usage(p: &Proc) -> Usage {
    let pid = p.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Usage {
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
        threads: field("Threads:") as usize,
        rss_mib: field("VmRSS:") / 1024.0,
    }
}

struct Cluster {
    dir: std::path::PathBuf,
    addr: String,
    rest: String,
    procs: Vec<(&'static str, Proc)>,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let ck = dir.join("ck");
        let retained = RETAINED.to_string();
        let (coord, addr) = coordinator_with_env(
            dir,
            &["--checkpoint-dir", ck.to_str().unwrap(), "--rest-bind", "127.0.0.1:0"],
            &[("SLUICE_COORDINATOR_MAX_RETAINED_JOBS", &retained)],
        );
        let rest = std::fs::read_to_string(dir.join("rest.addr")).unwrap();
        let w1 = worker(dir, &addr, "w1", 2);
        let w2 = worker(dir, &addr, "w2", 2);
        Cluster {
            dir: dir.to_path_buf(),
            addr,
            rest,
            procs: vec![("coordinator", coord), ("w1", w1), ("w2", w2)],
        }
    }

    fn usage(&self) -> Vec<Usage> {
        self.procs.iter().map(|(_, p)| usage(p)).collect()
    }

    fn wait(&self, id: &str, want: &[&str], secs: u64) -> String {
        wait_for_in(Some(&self.dir), &self.addr, id, want, Duration::from_secs(secs))
    }

    /// A wordcount of 300 lines at parallelism 2, checked line for line.
    fn finished_job(&self, n: usize) {
        let dir = self.dir.join(format!("short-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (input, expected) = common::write_input(&dir, 300);
        let out = dir.join("out");
        let id = submit(
            &self.addr,
            &[
                "wordcount",
                "-p",
                "2",
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--checkpoint-interval",
                "100ms",
            ],
        );
        assert_eq!(self.wait(&id, &["FINISHED", "FAILED", "CANCELED"], 60), "FINISHED");
        common::assert_same_lines(&common::committed_lines(&out), &expected, &format!("short job {n}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An unbounded paced Nexmark job ended after a second, by cancel or (odd `n`) by a stop
    /// with a savepoint that is then disposed.
    fn interrupted_job(&self, n: usize) {
        let out = self.dir.join(format!("q1-{n}"));
        let id = submit(
            &self.addr,
            &[
                "nexmark-q1",
                "-p",
                "2",
                "--events-per-second",
                "2000",
                "--checkpoint-interval",
                "100ms",
                "--output",
                out.to_str().unwrap(),
            ],
        );
        self.wait(&id, &["RUNNING"], 60);
        std::thread::sleep(Duration::from_secs(1));
        if n % 2 == 1 {
            let sp = self.dir.join("savepoints");
            let stop = run(&[
                "stop",
                "--coordinator",
                &self.addr,
                "--savepoint-dir",
                sp.to_str().unwrap(),
                &id,
            ]);
            assert!(stop.status.success(), "stop failed: {}", text(&stop.stderr));
            let path = text(&stop.stdout).lines().last().unwrap().trim().to_string();
            let dispose = run(&["savepoint", "dispose", &path]);
            assert!(dispose.status.success(), "dispose failed: {}", text(&dispose.stderr));
        } else {
            let cancel = run(&["cancel", "--coordinator", &self.addr, &id]);
            assert!(cancel.status.success(), "cancel failed: {}", text(&cancel.stderr));
        }
        self.wait(&id, &["CANCELED", "FINISHED"], 60);
        std::fs::remove_dir_all(&out).ok();
    }
}

fn soak_seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

fn print_sample(start: Instant, jobs: usize, cluster: &Cluster) {
    let mut line = format!("soak t={:.0}s jobs={jobs}", start.elapsed().as_secs_f64());
    for ((name, _), u) in cluster.procs.iter().zip(cluster.usage()) {
        line.push_str(&format!(
            " {name} fds={} threads={} rss={:.1}MiB",
            u.fds, u.threads, u.rss_mib
        ));
    }
    println!("{line}");
}

/// Submits the long job: a wordcount paced to take about `seconds`.
fn long_job(cluster: &Cluster, seconds: u64) -> (String, std::path::PathBuf, Vec<String>) {
    let dir = cluster.dir.join("long");
    std::fs::create_dir_all(&dir).unwrap();
    let lines_per_second = 50;
    let (input, expected) = common::write_input(&dir, (seconds * lines_per_second) as usize);
    let out = dir.join("out");
    let id = submit(
        &cluster.addr,
        &[
            "wordcount",
            "-p",
            "2",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--lines-per-second",
            &lines_per_second.to_string(),
            "--checkpoint-interval",
            "200ms",
        ],
    );
    (id, out, expected)
}

#[test]
fn a_cluster_under_job_churn_holds_steady() {
    let tmp = tempfile::tempdir().unwrap();
    let seconds = soak_seconds();
    let cluster = Cluster::start(tmp.path());
    // One job first (the workers have registered once it ran), then the idle baseline:
    // descriptors and threads must come back to it when every job has ended.
    cluster.finished_job(usize::MAX);
    std::thread::sleep(Duration::from_millis(500));
    let idle = cluster.usage();
    let (long, long_out, long_expected) = long_job(&cluster, seconds);
    let start = Instant::now();
    let mut jobs = 0;
    let mut baseline = None;
    // Until the long job ends (paced to take about `seconds`), checked after every short job
    // (before the list could evict it).
    let ended = ["FINISHED", "FAILED", "CANCELED"];
    while !ended.contains(&common::procs::status(&cluster.addr, &long).as_str()) {
        if jobs % 3 == 2 {
            cluster.interrupted_job(jobs);
        } else {
            cluster.finished_job(jobs);
        }
        jobs += 1;
        if jobs == 6 {
            // Warm-up over: every kind of job has run and the allocators have settled.
            std::thread::sleep(Duration::from_millis(500));
            baseline = Some(cluster.usage());
        }
        if jobs % 5 == 0 {
            print_sample(start, jobs, &cluster);
        }
    }
    assert!(jobs >= 8, "only {jobs} jobs ran in {seconds}s\n{}", logs(tmp.path()));
    assert_eq!(cluster.wait(&long, &ended, 10), "FINISHED");
    common::assert_same_lines(&common::committed_lines(&long_out), &long_expected, "the long job");
    std::thread::sleep(Duration::from_secs(1));
    print_sample(start, jobs, &cluster);
    check_steady(&cluster, &idle, &baseline.expect("warm-up done"), jobs);
    check_cleaned_up(&cluster, tmp.path());
}

/// No process holds more descriptors or threads than when it was idle before (every job has
/// ended, so any surplus is leaked), and memory has not grown with the jobs run since warm-up.
fn check_steady(cluster: &Cluster, idle: &[Usage], baseline: &[Usage], jobs: usize) {
    let now = cluster.usage();
    for (((name, _), idle), after) in cluster.procs.iter().zip(idle).zip(&now) {
        assert!(
            after.fds <= idle.fds + 1,
            "{name}: descriptors {} when idle before, {} after {jobs} jobs",
            idle.fds,
            after.fds
        );
        assert!(
            after.threads <= idle.threads + 2,
            "{name}: threads {} when idle before, {} after {jobs} jobs",
            idle.threads,
            after.threads
        );
    }
    for (((name, _), before), after) in cluster.procs.iter().zip(baseline).zip(now) {
        // Allocators keep some of what was freed: a little growth is not a leak, growth
        // with the number of jobs is (a few hundred jobs at 60 KiB each would pass this).
        let allowed = (before.rss_mib * 0.25).max(12.0);
        assert!(
            after.rss_mib <= before.rss_mib + allowed,
            "{name}: resident memory {:.1} MiB after warm-up, {:.1} MiB after {jobs} jobs",
            before.rss_mib,
            after.rss_mib
        );
    }
}

/// Ended jobs left no checkpoint files, the list keeps `RETAINED` of them, and `/metrics` has
/// no job series left (no job runs any more).
fn check_cleaned_up(cluster: &Cluster, dir: &Path) {
    let files: Vec<_> = walk(&dir.join("ck"));
    assert!(files.is_empty(), "checkpoint files of ended jobs remain: {files:?}");
    let list = run(&["list", "--coordinator", &cluster.addr]);
    let listed = text(&list.stdout).lines().filter(|l| !l.trim().is_empty()).count();
    assert!(
        listed <= RETAINED + 1,
        "`sluice list` shows {listed} jobs, RETAINED is {RETAINED}"
    );
    let (code, metrics) = common::http::http_raw(&cluster.rest, "GET", "/metrics", None);
    assert_eq!(code, 200);
    let job_series: Vec<&str> = metrics.lines().filter(|l| l.contains("job_id=")).take(3).collect();
    assert!(job_series.is_empty(), "ended jobs still in /metrics: {job_series:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
