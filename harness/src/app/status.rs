//! The live status of a running job: a line refreshed in place on a terminal, a plain line
//! every 10 s otherwise, nothing when asked to be quiet. Always on standard error, so
//! standard output keeps only results and ids.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_core::cluster::{list_jobs_with_progress, ClusterError, JobStatus, Target, WireProgress};
use sluice_core::metrics::{vertex_summaries, MetricRegistry};
use sluice_core::JobController;

/// How a running job's progress is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusOutput {
    /// Not at all.
    #[default]
    Off,
    /// One line refreshed in place every second (standard error is a terminal).
    Terminal,
    /// A plain line every 10 s (standard error is a file or a pipe).
    Lines,
}

impl StatusOutput {
    /// Off with `quiet`, with JSON logs (whose readers want only JSON on standard error),
    /// and when results are printed to the terminal the line would be drawn on; else by
    /// whether standard error is a terminal.
    pub fn choose(quiet: bool, json_logs: bool, prints_results: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        if quiet || json_logs || (prints_results && terminal && std::io::stdout().is_terminal()) {
            return StatusOutput::Off;
        }
        if terminal {
            StatusOutput::Terminal
        } else {
            StatusOutput::Lines
        }
    }

    fn every(self) -> Duration {
        match self {
            StatusOutput::Terminal => Duration::from_secs(1),
            _ => Duration::from_secs(10),
        }
    }

    /// Shows `line`.
    fn show(self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = match self {
            StatusOutput::Off => Ok(()),
            // Carriage return and erase-line: the line is rewritten where it stands.
            StatusOutput::Terminal => write!(err, "\r\x1b[2K{line}"),
            StatusOutput::Lines => writeln!(err, "{line}"),
        };
        let _ = err.flush();
    }

    /// Ends the in-place line, so what is printed next starts on a line of its own.
    fn finish(self) {
        if self == StatusOutput::Terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// The figures of one status line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StatusFigures {
    /// The job's status.
    pub status: String,
    /// Records per second out of the first vertex (the sources) and into the last (the sinks).
    pub in_per_second: f64,
    /// See `in_per_second`.
    pub out_per_second: f64,
    /// How far the sinks' watermark is behind the wall clock (event-time jobs only).
    pub watermark_lag: Option<Duration>,
    /// Checkpoints completed, and the last one's duration.
    pub checkpoints: u64,
    /// See `checkpoints`.
    pub last_checkpoint: Option<Duration>,
    /// Restarts so far.
    pub restarts: u64,
}

impl StatusFigures {
    /// The line as shown.
    pub fn line(&self, elapsed: Duration) -> String {
        let mut s = format!(
            "{} {:>5}s | in {:.0}/s out {:.0}/s",
            self.status,
            elapsed.as_secs(),
            self.in_per_second,
            self.out_per_second
        );
        // Behind the wall clock by more than a day, event time is not wall-clock time (a
        // replay, generated data): the lag says nothing then.
        if let Some(lag) = self.watermark_lag.filter(|l| *l < Duration::from_secs(86_400)) {
            s.push_str(&format!(" | watermark lag {:.1}s", lag.as_secs_f64()));
        }
        s.push_str(&format!(" | checkpoints {}", self.checkpoints));
        if let Some(d) = self.last_checkpoint {
            s.push_str(&format!(" (last {} ms)", d.as_millis()));
        }
        s.push_str(&format!(" | restarts {}", self.restarts));
        s
    }
}

/// The figures of an embedded job from its controller and metrics, at wall-clock `now_ms`.
pub(crate) fn embedded_figures(controller: &JobController, registry: &MetricRegistry, now_ms: i64) -> StatusFigures {
    let vertices = vertex_summaries(&registry.snapshot(), controller.vertices());
    let stats = controller.checkpoint_stats();
    let last = stats.latest_duration_ms.load(Ordering::Relaxed);
    StatusFigures {
        status: controller.status().as_str().to_string(),
        in_per_second: vertices.first().map_or(0.0, |v| v.records_out_per_second),
        out_per_second: vertices.last().map_or(0.0, |v| v.records_in_per_second),
        watermark_lag: vertices
            .last()
            .and_then(|v| v.input_watermark_ms)
            .filter(|w| *w > 0.0)
            .map(|w| Duration::from_millis((now_ms as f64 - w).max(0.0) as u64)),
        checkpoints: stats.completed.load(Ordering::Relaxed),
        last_checkpoint: (stats.completed.load(Ordering::Relaxed) > 0).then(|| Duration::from_millis(last)),
        restarts: stats.restarts.load(Ordering::Relaxed),
    }
}

/// The status of an embedded run being shown; [`StatusTask::finish`] stops it and ends
/// its line before the summary is printed (dropped, it just stops).
pub(crate) struct StatusTask {
    stop: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusTask {
    /// Stops showing the status, once its last line is ended.
    pub(crate) async fn finish(mut self) {
        self.stop.notify_one();
        let _ = (&mut self.task).await;
    }
}

impl Drop for StatusTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Shows an embedded job's status while it runs; `None` when the status is off.
pub(crate) fn embedded(
    output: &StatusOutput,
    registry: MetricRegistry,
    controller: JobController,
) -> Option<StatusTask> {
    let output = *output;
    if output == StatusOutput::Off {
        return None;
    }
    let started = tokio::time::Instant::now();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let _finish = Finish(output);
        let mut tick = tokio::time::interval(output.every());
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = stopped.notified() => return,
                _ = tick.tick() => {}
            }
            let now_ms = sluice_core::Clock::system().now_ms();
            output.show(&embedded_figures(&controller, &registry, now_ms).line(started.elapsed()));
        }
    });
    Some(StatusTask { stop, task })
}

/// Ends the in-place line when the status task ends (or is aborted).
struct Finish(StatusOutput);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// `submit --wait`: follows job `id` until it ends, showing its status; `Ok` only if it
/// FINISHED. A coordinator that cannot answer for a while (a failover) is asked again.
pub(crate) async fn follow(to: Target<'_>, id: &str, output: StatusOutput) -> Result<(), crate::HarnessError> {
    let started = tokio::time::Instant::now();
    let mut last_shown: Option<tokio::time::Instant> = None;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let finish = Finish(output);
    loop {
        let jobs = match list_jobs_with_progress(to).await {
            Ok(jobs) => jobs,
            // A failover under way (the leader gone or changing): the next one answers soon.
            Err(e) if transient(&e) && failing_since.is_none_or(|t| t.elapsed() < FOLLOW_PATIENCE) => {
                if failing_since.is_none() {
                    output.show(&format!(
                        "job {id}: the coordinator does not answer ({e}); asking again for up to {} s",
                        FOLLOW_PATIENCE.as_secs()
                    ));
                    output.finish();
                    failing_since = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        failing_since = None;
        let (job, progress) = jobs
            .into_iter()
            .find(|(j, _)| j.id == id)
            .ok_or_else(|| ClusterError::UnknownJob {
                id: id.to_string(),
                known: Vec::new(),
            })?;
        if job.status.is_terminal() {
            drop(finish);
            return ended(id, job.status, job.error);
        }
        if last_shown.is_none_or(|t| t.elapsed() >= output.every()) {
            output.show(&cluster_figures(job.status, &progress).line(started.elapsed()));
            last_shown = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How long `submit --wait` keeps asking coordinators that do not answer (a failover takes
/// the lease TTL and a takeover).
const FOLLOW_PATIENCE: Duration = Duration::from_secs(60);

/// An error a failover explains: the coordinator unreachable, silent, or not leading.
fn transient(e: &ClusterError) -> bool {
    matches!(e, ClusterError::Io { .. }) || sluice_core::cluster::outcome_unknown(e)
}

/// The figures of a job on a cluster, as its coordinator reports them.
pub(crate) fn cluster_figures(status: JobStatus, p: &WireProgress) -> StatusFigures {
    StatusFigures {
        status: status.as_str().to_string(),
        in_per_second: p.in_per_second as f64,
        out_per_second: p.out_per_second as f64,
        watermark_lag: u64::try_from(p.watermark_lag_ms).ok().map(Duration::from_millis),
        checkpoints: p.checkpoints,
        last_checkpoint: (p.checkpoints > 0).then(|| Duration::from_millis(p.last_checkpoint_ms)),
        restarts: p.restarts,
    }
}

/// How `submit --wait` ends: a line on how the job ended; an error unless it FINISHED.
fn ended(id: &str, status: JobStatus, error: Option<String>) -> Result<(), crate::HarnessError> {
    super::cli::print_line(format_args!("job {id} {status}"));
    match status {
        JobStatus::Finished => Ok(()),
        other => Err(crate::HarnessError::JobEnded {
            id: id.to_string(),
            status: other.as_str().to_string(),
            error,
        }),
    }
}
