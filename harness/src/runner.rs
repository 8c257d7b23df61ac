//! Runs a built-in job embedded in this process and summarizes it.

use std::fmt::Write as _;

use sluice_core::{ExecutionConfig, JobResult};

use crate::error::HarnessError;
use crate::jobs::{self, JobOptions};
use crate::settings::RunSettings;

/// How an embedded run ended.
#[derive(Debug)]
pub struct EmbeddedOutcome {
    /// The job's result.
    pub result: JobResult,
    /// The savepoint taken on stop (`--savepoint-dir`), as a path.
    pub savepoint: Option<String>,
}

/// Builds and runs job `name` to its end, or until `stop` resolves: then it drains, or with
/// `--savepoint-dir` stops with a savepoint.
pub async fn run_embedded(
    name: &str,
    opts: &JobOptions,
    settings: &RunSettings,
    log: slog::Logger,
    stop: impl std::future::Future<Output = ()>,
) -> Result<EmbeddedOutcome, HarnessError> {
    let config = settings.apply(ExecutionConfig {
        log: log.clone(),
        ..ExecutionConfig::default()
    })?;
    let env = jobs::build(name, opts)?;
    let graph = env.build()?;
    slog::info!(log, "starting job"; "job" => name, "parallelism" => opts.parallelism);
    slog::debug!(log, "plan"; "plan" => graph.describe());
    let handle = sluice_core::runtime::spawn(graph, config)?;
    let controller = handle.controller();
    let join = handle.join();
    tokio::pin!(join);
    let mut savepoint = None;
    let result = tokio::select! {
        r = &mut join => r?,
        _ = stop => {
            match &settings.savepoint_dir {
                Some(dir) => {
                    slog::info!(log, "stop requested: stopping with a savepoint"; "dir" => dir.display().to_string(), "drain" => settings.drain);
                    let target = crate::settings::open_store(&dir.to_string_lossy()).map_err(HarnessError::BadOption)?;
                    let info = controller.stop_with_savepoint(target, settings.drain).await?;
                    savepoint = Some(format!("{}/{}", dir.display().to_string().trim_end_matches('/'), info.name));
                }
                None => {
                    slog::info!(log, "stop requested: draining the job");
                    controller.drain();
                }
            }
            join.await?
        }
    };
    if let Some(id) = result.resumed_from {
        slog::info!(log, "resumed from checkpoint"; "checkpoint" => id);
    }
    slog::info!(log, "job finished"; "records_in" => result.records_in, "records_out" => result.records_out,
        "restarts" => result.restarts, "checkpoints" => result.checkpoints_completed);
    Ok(EmbeddedOutcome { result, savepoint })
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
    if let Some(id) = r.resumed_from {
        let _ = writeln!(s, "  resumed from checkpoint {id}");
    }
    if r.checkpoints_completed > 0 || r.restarts > 0 {
        let _ = writeln!(s, "  checkpoints completed: {}, restarts: {}", r.checkpoints_completed, r.restarts);
    }
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
