//! Runs a job embedded in this process and summarizes it.

use std::fmt::Write as _;

use std::sync::Arc;

use serde_json::json;
use sluice_core::metrics::MetricRegistry;
use sluice_core::spawned::AbortOnDrop;
use sluice_core::{ExecutionConfig, JobGraph, JobResult};

use crate::config::Config;
use crate::error::HarnessError;
use crate::rest::{EmbeddedJob, RestOptions};
use crate::settings::RunSettings;

/// What runs beside an embedded job: its REST API and metric reporters.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// Serve the REST API here (`127.0.0.1:0` picks a port); its address is printed as
    /// `rest api listening on ADDR`.
    pub rest_bind: Option<String>,
    /// After the job ends, keep the REST API up this long, so clients can read the final
    /// status and the savepoint of a stop.
    pub rest_linger: std::time::Duration,
    /// Reporters and their settings.
    pub config: Config,
    /// How the run's progress is shown while it runs.
    pub status: crate::app::StatusOutput,
}

/// How an embedded run ended.
#[derive(Debug)]
pub struct EmbeddedOutcome {
    /// The job's result.
    pub result: JobResult,
    /// The savepoint taken on stop (`--savepoint-dir`), as a path.
    pub savepoint: Option<String>,
}

/// Builds and runs job `name` to its end, or until a `stop()` future resolves (Ctrl-C,
/// SIGTERM): then it drains, or with `--savepoint-dir` stops with a savepoint; a second stop
/// while that goes on cancels the job.
pub async fn run_embedded<F: std::future::Future<Output = ()>>(
    (name, graph, parallelism): (&str, JobGraph, u32),
    settings: &RunSettings,
    services: &Services,
    log: slog::Logger,
    stop: impl Fn() -> F,
) -> Result<EmbeddedOutcome, HarnessError> {
    let registry = MetricRegistry::new();
    // An id in the coordinator's format, so tools treat both modes alike.
    let now_ms = sluice_core::Clock::system().now_ms();
    let job_id = format!("{:012x}{:04x}", now_ms as u64 & 0xffff_ffff_ffff, 1);
    let config = settings.apply(ExecutionConfig {
        log: log.new(slog::o!("job_id" => job_id.clone())),
        metrics: Some(registry.clone()),
        job_id: Some(job_id.clone()),
        ..ExecutionConfig::default()
    })?;
    let checkpoint_config = config.checkpointing.as_ref().map(|c| {
        (
            c.interval.as_millis() as u64,
            c.timeout.as_millis() as u64,
            c.min_pause.as_millis() as u64,
            c.tolerable_failures,
            c.retained,
        )
    });
    slog::info!(log, "starting job"; "job" => name, "job_id" => &job_id, "parallelism" => parallelism);
    slog::debug!(log, "plan"; "plan" => graph.describe());
    let handle = sluice_core::runtime::spawn(graph, config)?;
    let controller = handle.controller();
    // Background tasks of the run: aborted when it ends.
    let mut background = vec![AbortOnDrop(registry.spawn_ticker())];
    if let Some(bind) = &services.rest_bind {
        let backend = EmbeddedJob {
            id: job_id.clone(),
            name: name.to_string(),
            controller: controller.clone(),
            checkpoint_config,
            config: json!({
                "mode": "embedded",
                "job": name,
                "parallelism": parallelism,
                "checkpoint-dir": settings.checkpoint_dir.as_ref().map(|d| d.display().to_string()),
                "reporters": services.config.metrics.reporters,
            }),
            open_store: crate::settings::open_store,
        };
        background.push(AbortOnDrop(serve_rest(bind, backend, services, &log).await?));
    }
    let source_registry = registry.clone();
    let reporters =
        crate::reporters::start(&services.config, Arc::new(move || source_registry.snapshot()), &log).await?;
    background.extend(reporters.into_iter().map(AbortOnDrop));
    let status = crate::app::status::embedded(&services.status, registry.clone(), controller.clone());
    let (result, savepoint) = run_until_stopped(handle, &controller, settings, stop, &log).await?;
    if let Some(status) = status {
        status.finish().await;
    }
    if services.rest_bind.is_some() && !services.rest_linger.is_zero() {
        slog::info!(log, "job ended; the REST API stays up a little longer"; "linger_ms" => services.rest_linger.as_millis() as u64);
        tokio::time::sleep(services.rest_linger).await;
    }
    if let Some(id) = result.resumed_from {
        slog::info!(log, "resumed from checkpoint"; "checkpoint" => id);
    }
    slog::info!(log, "job finished"; "records_in" => result.records_in, "records_out" => result.records_out,
        "restarts" => result.restarts, "checkpoints" => result.checkpoints_completed);
    Ok(EmbeddedOutcome { result, savepoint })
}

/// Serves the REST API of the embedded job on `bind`; prints its address and the job id.
async fn serve_rest(
    bind: &str,
    backend: EmbeddedJob,
    services: &Services,
    log: &slog::Logger,
) -> Result<tokio::task::JoinHandle<()>, HarnessError> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| HarnessError::BadOption(format!("--rest-port: binding {bind}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| HarnessError::BadOption(format!("--rest-port: reading the bound address: {e}")))?;
    crate::logging::announce(format_args!("rest api listening on {addr}"));
    crate::logging::announce(format_args!("job id {}", backend.id));
    slog::info!(log, "REST API listening"; "address" => addr.to_string(), "job_id" => &backend.id);
    let security = crate::rest::RestSecurity::from_config(&services.config, log.clone())?;
    let tls = security.tls.clone();
    let app = crate::rest::router(
        Arc::new(backend),
        RestOptions {
            prometheus: services.config.reporter("prometheus"),
            security,
        },
    );
    Ok(tokio::spawn(crate::rest::serve(
        Arc::new(listener),
        app,
        services.config.rest_limits(),
        tls,
        log.clone(),
    )))
}

/// Waits for the job to end; if a stop comes first, drains it or stops it with a savepoint
/// (`--savepoint-dir`), and returns the savepoint's path with the result. A second stop
/// cancels the job (a drain or a savepoint that does not end is not waited for forever).
async fn run_until_stopped<F: std::future::Future<Output = ()>>(
    handle: sluice_core::JobHandle,
    controller: &sluice_core::JobController,
    settings: &RunSettings,
    stop: impl Fn() -> F,
    log: &slog::Logger,
) -> Result<(JobResult, Option<String>), HarnessError> {
    let join = handle.join();
    tokio::pin!(join);
    tokio::select! {
        r = &mut join => Ok((r?, None)),
        _ = stop() => {
            let stopping = stop_gracefully(controller, settings, log);
            tokio::pin!(stopping);
            let savepoint = tokio::select! {
                s = &mut stopping => s?,
                _ = stop() => {
                    slog::warn!(log, "second stop requested: cancelling the job");
                    controller.cancel();
                    None
                }
            };
            Ok((join.await?, savepoint))
        }
    }
}

/// The first stop: a savepoint and stop (`--savepoint-dir`), or a drain.
async fn stop_gracefully(
    controller: &sluice_core::JobController,
    settings: &RunSettings,
    log: &slog::Logger,
) -> Result<Option<String>, HarnessError> {
    let Some(dir) = &settings.savepoint_dir else {
        slog::info!(log, "stop requested: draining the job");
        controller.drain();
        return Ok(None);
    };
    slog::info!(log, "stop requested: stopping with a savepoint"; "dir" => dir.display().to_string(), "drain" => settings.drain);
    let location = dir.to_string_lossy();
    let target = crate::settings::open_store(&location).map_err(|source| HarnessError::Store {
        location: location.to_string(),
        source,
    })?;
    let info = controller.stop_with_savepoint(target, settings.drain).await?;
    Ok(Some(format!(
        "{}/{}",
        dir.display().to_string().trim_end_matches('/'),
        info.name
    )))
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
        let _ = writeln!(
            s,
            "  checkpoints completed: {}, restarts: {}",
            r.checkpoints_completed, r.restarts
        );
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
