//! Runs a built-in job embedded in this process and summarizes it.

use std::fmt::Write as _;

use sluice_core::{ExecutionConfig, JobResult};

use crate::error::HarnessError;
use crate::jobs::{self, JobOptions};

/// Builds and runs job `name` to its end (or until `stop` resolves, which drains it).
pub async fn run_embedded(
    name: &str,
    opts: &JobOptions,
    log: slog::Logger,
    stop: impl std::future::Future<Output = ()>,
) -> Result<JobResult, HarnessError> {
    let env = jobs::build(name, opts)?;
    let graph = env.build()?;
    slog::info!(log, "starting job"; "job" => name, "parallelism" => opts.parallelism);
    slog::debug!(log, "plan"; "plan" => graph.describe());
    let config = ExecutionConfig {
        log: log.clone(),
        ..ExecutionConfig::default()
    };
    let handle = sluice_core::runtime::spawn(graph, config)?;
    let controller = handle.controller();
    let join = handle.join();
    tokio::pin!(join);
    let result = tokio::select! {
        r = &mut join => r?,
        _ = stop => {
            slog::info!(log, "stop requested: draining the job");
            controller.drain();
            join.await?
        }
    };
    slog::info!(log, "job finished"; "records_in" => result.records_in, "records_out" => result.records_out);
    Ok(result)
}

/// A short human-readable summary of a finished job.
pub fn summary(r: &JobResult) -> String {
    let mut s = String::new();
    let secs = r.duration.as_secs_f64();
    let _ = writeln!(
        s,
        "job {} {}: {} records in, {} records out, {:.3} s, {:.0} events/s",
        r.name,
        if r.cancelled { "cancelled" } else { "finished" },
        r.records_in,
        r.records_out,
        secs,
        r.events_per_second()
    );
    for v in &r.vertices {
        let _ = write!(
            s,
            "  {:<22} x{:<3} in {:>12}  out {:>12}",
            v.name, v.parallelism, v.records_in, v.records_out
        );
        if v.late_records_dropped > 0 {
            let _ = write!(s, "  late dropped {}", v.late_records_dropped);
        }
        s.push('\n');
    }
    s
}
