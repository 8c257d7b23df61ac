//! An embedded job's driver: its attempts run in this process, through the shared
//! attempt/restart loop (`job_loop`), and its controller follows it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::coordinator::{JobCheckpointing, SavepointRequests, StopHook};
use crate::checkpoint::restart::RestartTracker;
use crate::checkpoint::{CheckpointStorage, RestartStrategy};
use crate::clock::Clock;
use crate::error::JobError;
use crate::graph::{JobGraph, VertexKind};
use crate::metrics::{MetricGroup, VertexMetrics, VertexSnapshot};
use crate::runtime::attempt::Attempt;
use crate::runtime::control::ControlReceiver;
use crate::runtime::job_loop::{self, AttemptEnd, AttemptRunner, AttemptStart, JobAttempts, LoopEnd};
use crate::runtime::progress::JobProgress;
use crate::runtime::task::TaskExit;
use crate::runtime::{ExecutionConfig, JobControl, JobResult};
use crate::status::JobStatus;

/// Runs the attempts of an embedded job; the embedded side of [`AttemptRunner`].
struct Embedded {
    graph: Arc<JobGraph>,
    config: ExecutionConfig,
    clock: Clock,
    log: slog::Logger,
    control_rx: ControlReceiver,
    checkpointing: Option<JobCheckpointing>,
    progress: Arc<JobProgress>,
    /// The job's metric scope (job id and name).
    metrics: MetricGroup,
    /// The checkpoint the first attempt resumed from.
    resumed_from: Option<u64>,
    /// The running (or last) attempt started with the job already draining: a failure of it
    /// ends the job instead of restarting it again.
    drained_attempt: bool,
}

impl AttemptRunner for Embedded {
    type Done = Vec<Arc<VertexMetrics>>;

    fn starting(&mut self, attempt: u32) {
        self.progress.attempt.store(attempt, Ordering::Relaxed);
    }

    async fn run(&mut self, start: AttemptStart) -> AttemptEnd<Self::Done> {
        if let Some(ck) = &start.restored {
            let id = ck.metadata.checkpoint_id;
            slog::info!(self.log, "restoring from checkpoint"; "checkpoint" => id, "attempt" => start.attempt);
            if start.attempt == 0 {
                self.resumed_from = Some(id);
            }
        }
        self.progress.set_status(JobStatus::Running);
        self.drained_attempt = *self.control_rx.borrow() == JobControl::Drain;
        let attempt = Attempt {
            graph: self.graph.clone(),
            config: &self.config,
            attempt: start.attempt,
            clock: self.clock,
            log: self.log.new(slog::o!("attempt" => start.attempt)),
            control_rx: self.control_rx.clone(),
            checkpointing: self.checkpointing.clone(),
            retained: start.retained,
            metrics: self.metrics.clone(),
            figures: (
                self.progress.metrics.clone(),
                self.progress.last_attempt_figures.clone(),
            ),
        };
        match attempt.run(start.restored.as_ref()).await {
            Ok((exit, metrics)) => AttemptEnd::Ended {
                done: metrics,
                cancelled: exit == TaskExit::Cancelled,
            },
            Err(e) => AttemptEnd::Failed(e),
        }
    }

    fn cancelling(&self) -> bool {
        match *self.control_rx.borrow() {
            JobControl::Cancel => true,
            // Asked to stop, and the attempt started to drain failed: stop here.
            JobControl::Drain => self.drained_attempt,
            JobControl::Run => false,
        }
    }

    /// Waits out the restart delay, unless the job is stopped meanwhile: a cancel ends it, a
    /// drain (Ctrl-C, SIGTERM) starts the next attempt at once (it drains from its start), and
    /// a savepoint asked for meanwhile is taken from the latest checkpoint.
    async fn wait(&mut self, delay: Duration) -> bool {
        let mut ctl = self.control_rx.clone();
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let requests = self.checkpointing.as_ref().and_then(|c| c.savepoints.clone());
        loop {
            tokio::select! {
                // Fixed polling order: tokio's random branch order is not seeded by the simulator.
                biased;
                c = ctl.wait_for(|c| *c != JobControl::Run) => return c == Ok(JobControl::Drain),
                req = job_loop::next_savepoint_request(requests.as_ref()) => {
                    let job = self.checkpointing.as_ref().expect("requests come with checkpointing");
                    if job_loop::savepoint_between_attempts(job, req, &self.log).await {
                        return false;
                    }
                }
                _ = &mut sleep => return true,
            }
        }
    }

    fn status(&mut self, status: JobStatus) {
        if status == JobStatus::Restarting {
            self.progress.stats.restarts.fetch_add(1, Ordering::Relaxed);
        }
        self.progress.set_status(status);
    }

    fn failed(&mut self, attempt: u32, error: &JobError) {
        debug_assert_eq!(attempt, self.progress.attempt.load(Ordering::Relaxed));
        self.progress.record_failure(self.clock.now_ms(), error.to_string());
    }
}

/// Runs attempts until one ends the job: it finishes, is cancelled, or fails with no restart
/// left.
pub(super) async fn run_job(
    graph: JobGraph,
    config: ExecutionConfig,
    control_rx: ControlReceiver,
    progress: Arc<JobProgress>,
    savepoints: Option<SavepointRequests>,
    stop: StopHook,
) -> Result<JobResult, JobError> {
    let graph = Arc::new(graph);
    let clock = config.clock.unwrap_or_else(Clock::system);
    let log = config.log.new(slog::o!("job" => graph.name.clone()));
    let storage = config
        .checkpointing
        .as_ref()
        .map(|c| CheckpointStorage::new(c.store.clone(), &graph.name));
    let first_id = job_loop::first_checkpoint_id(storage.as_ref(), config.from_savepoint.as_ref()).await?;
    let checkpointing = match (&config.checkpointing, &storage) {
        (Some(c), Some(st)) => Some(JobCheckpointing {
            config: c.clone(),
            storage: st.clone(),
            clock,
            next_id: Arc::new(AtomicU64::new(first_id)),
            stats: progress.stats.clone(),
            savepoints,
            stop,
        }),
        _ => None,
    };
    let started = clock.elapsed();
    let metrics = job_metrics(&config, &graph, clock, started, &progress);
    let _unregister = metrics.guard();
    let mut job = JobAttempts {
        graph: &graph,
        storage: storage.as_ref(),
        on_unusable: config.checkpointing.as_ref().map(|c| c.on_unusable).unwrap_or_default(),
        savepoint: config.from_savepoint.as_ref(),
        tracker: RestartTracker::new(restart_strategy(&config)),
        clock,
        log: &log,
        first_attempt: 0,
    };
    let mut runner = Embedded {
        graph: graph.clone(),
        config: config.clone(),
        clock,
        log: log.clone(),
        control_rx,
        checkpointing,
        progress: progress.clone(),
        metrics: metrics.clone(),
        resumed_from: None,
        drained_attempt: false,
    };
    let (metrics, cancelled) = match job_loop::run_attempts(&mut job, &mut runner).await {
        LoopEnd::Ended { done, cancelled } => (done, cancelled),
        LoopEnd::CancelledBetweenAttempts => (Vec::new(), true),
        LoopEnd::Failed(e) => return Err(e),
    };
    Ok(result(
        &graph,
        &metrics,
        cancelled,
        clock.elapsed() - started,
        &job,
        &runner,
    ))
}

/// The restart strategy of the job: the configured one, else the default.
fn restart_strategy(config: &ExecutionConfig) -> RestartStrategy {
    (config.restart.clone()).unwrap_or_else(|| RestartStrategy::default_for(config.checkpointing.is_some()))
}

/// The job's metric scope, with its checkpoint statistics and uptime registered.
fn job_metrics(
    config: &ExecutionConfig,
    graph: &JobGraph,
    clock: Clock,
    started: Duration,
    progress: &JobProgress,
) -> MetricGroup {
    let registry = config.metrics.clone().unwrap_or_default();
    let scope = match &config.job_id {
        Some(id) => registry.scope(&[("job_id", id.as_str()), ("job_name", graph.name.as_str())]),
        None => registry.scope(&[("job_name", graph.name.as_str())]),
    };
    progress.stats.register(&scope);
    config.state_backend.register_metrics(&scope);
    scope.gauge_fn("job_uptime_seconds", "time since the job started", move || {
        Some((clock.elapsed() - started).as_secs_f64())
    });
    scope
}

/// The result of the job from the metrics of its last attempt (empty if it was cancelled
/// between attempts).
fn result(
    graph: &JobGraph,
    metrics: &[Arc<VertexMetrics>],
    cancelled: bool,
    duration: Duration,
    job: &JobAttempts<'_>,
    runner: &Embedded,
) -> JobResult {
    let vertices: Vec<VertexSnapshot> = graph
        .vertices
        .iter()
        .enumerate()
        .map(|(i, v)| match metrics.get(i) {
            Some(m) => m.snapshot(&v.name, v.parallelism),
            None => VertexMetrics::default().snapshot(&v.name, v.parallelism),
        })
        .collect();
    let records_in = graph
        .vertices
        .iter()
        .zip(&vertices)
        .filter(|(v, _)| matches!(v.kind, VertexKind::Source(_)))
        .map(|(_, s)| s.records_out)
        .sum();
    let records_out = (0..graph.vertices.len())
        .filter(|&v| graph.out_edges(v).is_empty())
        .map(|v| vertices[v].records_out)
        .sum();
    JobResult {
        name: graph.name.clone(),
        cancelled,
        duration,
        vertices,
        records_in,
        records_out,
        restarts: job.tracker.restarts(),
        checkpoints_completed: runner.progress.stats.completed.load(Ordering::Relaxed),
        resumed_from: runner.resumed_from,
    }
}
