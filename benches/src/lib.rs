//! Benchmarks of Sluice: the Nexmark runner (`cargo run --release -p sluice-benches --bin
//! nexmark`) and criterion micro-benchmarks (`cargo bench -p sluice-benches`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice::jobs::{self, NexmarkArgs, Output};
use sluice_core::checkpoint::CheckpointConfig;
use sluice_core::state::blob::LocalFsStore;
use sluice_core::state_backend::StateBackendConfig;
use sluice_core::{ExecutionConfig, JobResult, StreamEnv};

fn tempfile_dir(job: &str, parallelism: u32) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-bench-{}-{job}-p{parallelism}", std::process::id()))
}

/// One measured run of a built-in job.
#[derive(Debug, Clone)]
pub struct RunFigures {
    /// The job.
    pub job: String,
    /// Parallelism.
    pub parallelism: u32,
    /// Source events.
    pub events: u64,
    /// Result records.
    pub results: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Events per second.
    pub events_per_second: f64,
    /// Peak resident memory of the process in KiB (Linux `VmHWM`), if known.
    pub peak_rss_kib: Option<u64>,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Order-independent checksum of the results (see `sluice::jobs::Output::Checksum`),
    /// if asked for.
    pub checksum: Option<u64>,
}

/// Where a run's events come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// Generated in the source: this many.
    Generated(u64),
    /// Read from the part files in a directory (written by `nexmark --write-events`).
    Files(PathBuf),
}

/// Runs `job` over `input` at `parallelism`, discarding results (or reducing them to a
/// checksum); with
/// `checkpoint_interval`, checkpoints go to a fresh directory on local disk (removed after),
/// and keyed state lives in `backend` (the tiered backend needs checkpoints).
pub fn run_once(
    job: &str,
    input: &Input,
    parallelism: u32,
    checkpoint_interval: Option<Duration>,
    checksum: bool,
    backend: StateBackendConfig,
) -> anyhow::Result<RunFigures> {
    let sum = checksum.then(|| Arc::new(std::sync::atomic::AtomicU64::new(0)));
    let args = NexmarkArgs {
        events: match input {
            Input::Generated(n) => Some(*n),
            Input::Files(_) => None,
        },
        events_dir: match input {
            Input::Generated(_) => None,
            Input::Files(d) => Some(d.clone()),
        },
        ..NexmarkArgs::default()
    };
    let output = sum.clone().map_or(Output::Discard, Output::Checksum);
    let env = StreamEnv::new(job);
    env.set_parallelism(parallelism);
    jobs::build_nexmark(&env, jobs::nexmark::query(job)?, &args, &output)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(parallelism.max(2) as usize)
        .enable_all()
        .build()?;
    let mut config = ExecutionConfig {
        state_backend: backend,
        ..ExecutionConfig::default()
    };
    let dir = tempfile_dir(job, parallelism);
    if let Some(interval) = checkpoint_interval {
        std::fs::create_dir_all(&dir)?;
        let store = LocalFsStore::new(&dir)?;
        config.checkpointing = Some(CheckpointConfig::new(interval, Arc::new(store)));
    }
    let r: Result<JobResult, _> = rt.block_on(env.execute(config));
    if checkpoint_interval.is_some() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let r = r?;
    // From files, the source skips the kinds of events the query does not read: the input is
    // every event in the files.
    let events = match input {
        Input::Generated(_) => r.records_in,
        Input::Files(dir) => sluice_core::connectors::nexmark::event_count(dir).map_err(anyhow::Error::msg)?,
    };
    let seconds = r.duration.as_secs_f64();
    Ok(RunFigures {
        job: job.to_string(),
        parallelism,
        events,
        results: r.records_out,
        seconds,
        events_per_second: if seconds > 0.0 { events as f64 / seconds } else { 0.0 },
        peak_rss_kib: peak_rss_kib(),
        checkpoints: r.checkpoints_completed,
        checksum: sum.map(|s| s.load(std::sync::atomic::Ordering::Relaxed)),
    })
}

/// Peak resident set size of this process (KiB), from `/proc/self/status`.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
