//! One execution attempt of an embedded job: build every task (restoring its state) on the
//! transport the job's factory makes, run them with the checkpoint coordinator, and tear all
//! of them down when the attempt ends.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::checkpoint::coordinator::{Coordinator, JobCheckpointing, TaskRef};
use crate::checkpoint::LoadedCheckpoint;
use crate::clock::Clock;
use crate::error::JobError;
use crate::graph::JobGraph;
use crate::metrics::{MetricGroup, MetricRegistry, MetricSample, VertexMetrics};
use crate::runtime::control::ControlReceiver;
use crate::runtime::task::{CheckpointLink, Task, TaskExit};
use crate::runtime::task_builder::{build_task, task_specs, TaskEnv};
use crate::runtime::task_set::{panic_message, TaskSet};
use crate::runtime::transport::AttemptWiring;
use crate::runtime::{ExecutionConfig, JobControl};
use crate::spawned::AbortOnDrop;
use crate::sync::LockExt;

/// One execution attempt: all tasks of the job, and the checkpoint coordinator.
pub(crate) struct Attempt<'a> {
    pub(crate) graph: Arc<JobGraph>,
    pub(crate) config: &'a ExecutionConfig,
    pub(crate) attempt: u32,
    pub(crate) clock: Clock,
    pub(crate) log: slog::Logger,
    pub(crate) control_rx: ControlReceiver,
    pub(crate) checkpointing: Option<JobCheckpointing>,
    pub(crate) retained: VecDeque<u64>,
    /// The job's metric scope (job id and name).
    pub(crate) metrics: MetricGroup,
    /// Where the attempt leaves every metric as it ends (before its task metrics go).
    pub(crate) figures: (MetricRegistry, Arc<std::sync::Mutex<Option<Vec<MetricSample>>>>),
}

/// The tasks of an attempt before they run, and the coordinator's ends of their checkpoint
/// channels.
struct Built {
    tasks: Vec<(usize, Task)>,
    refs: Vec<TaskRef>,
    events: Option<mpsc::Receiver<crate::checkpoint::protocol::TaskEvent>>,
    vertex_metrics: Vec<Arc<VertexMetrics>>,
}

impl Attempt<'_> {
    pub(crate) async fn run(
        self,
        restored: Option<&LoadedCheckpoint>,
    ) -> Result<(TaskExit, Vec<Arc<VertexMetrics>>), JobError> {
        let transport = self
            .config
            .transport
            .connect(AttemptWiring {
                graph: &self.graph,
                attempt: self.attempt,
                channel_capacity: self.config.channel_capacity,
                log: &self.log,
            })
            .await
            .map_err(|source| JobError::Transport {
                task: "the attempt's transport".into(),
                source,
            })?;
        // The attempt's task metrics leave the registry with it.
        let scope = self.metrics.child_scope();
        let _unregister = scope.guard();
        let built = self.build(transport.as_ref(), &scope, restored)?;
        let coordinator = match (&self.checkpointing, built.events) {
            (Some(job), Some(events)) => {
                let log = self.log.new(slog::o!("component" => "checkpoint-coordinator"));
                let mut c = Coordinator::new(&self.graph, job, self.retained.clone(), built.refs, events, log);
                // The coordinator comes back with its result: the tasks' command channels
                // close only when the result has been read, so a failing coordinator's error
                // is seen before the tasks it leaves behind report that they stopped.
                Some(AbortOnDrop(tokio::spawn(async move { (c.run().await, c) })))
            }
            _ => None,
        };
        let tasks = TaskSet::spawn(built.tasks);
        let exit = self.follow(tasks, coordinator).await;
        let (registry, figures) = &self.figures;
        *figures.locked() = Some(registry.snapshot());
        Ok((exit?, built.vertex_metrics))
    }

    /// Builds every task of the job; with checkpointing, each gets its checkpoint link.
    fn build(
        &self,
        transport: &dyn sluice_transport::Transport,
        scope: &MetricGroup,
        restored: Option<&LoadedCheckpoint>,
    ) -> Result<Built, JobError> {
        let graph = &self.graph;
        let vertex_metrics: Vec<Arc<VertexMetrics>> =
            graph.vertices.iter().map(|_| VertexMetrics::new_shared()).collect();
        let env = TaskEnv {
            graph,
            config: self.config,
            attempt: self.attempt,
            clock: self.clock,
            log: &self.log,
            control_rx: &self.control_rx,
            checkpointing: self.checkpointing.is_some(),
            storage: self.checkpointing.as_ref().map(|j| &j.storage),
            metrics: scope,
        };
        let (events_tx, events_rx) = mpsc::channel(1024);
        let (mut tasks, mut refs) = (Vec::new(), Vec::new());
        for (index, spec) in task_specs(graph).into_iter().enumerate() {
            let link = self.checkpointing.as_ref().map(|job| {
                let (tx, rx) = mpsc::channel(64);
                refs.push(TaskRef::of(tx, &spec, graph));
                CheckpointLink::new(
                    index,
                    rx,
                    events_tx.clone(),
                    job.storage.clone(),
                    graph.max_parallelism,
                    restored,
                )
            });
            tasks.push((
                index,
                build_task(&env, &spec, transport, &vertex_metrics, link, restored)?,
            ));
        }
        Ok(Built {
            tasks,
            refs,
            events: self.checkpointing.is_some().then_some(events_rx),
            vertex_metrics,
        })
    }

    /// Waits until every task ended, or the first failure (of a task or of the checkpoint
    /// coordinator); then stops everything of the attempt.
    async fn follow(
        &self,
        mut tasks: TaskSet,
        mut coordinator: Option<AbortOnDrop<(Result<(), JobError>, Coordinator)>>,
    ) -> Result<TaskExit, JobError> {
        let mut first_error = None;
        let mut cancelled = false;
        loop {
            let done = tokio::select! {
                // Fixed polling order: tokio's random branch order is not seeded by the simulator.
                biased;
                r = async { coordinator.as_mut().expect("guarded").handle().await }, if coordinator.is_some() => {
                    coordinator = None;
                    match r {
                        Ok((Ok(()), _)) => continue,
                        Ok((Err(e), _)) => { first_error = Some(e); break; }
                        Err(e) => { first_error = Some(JobError::TaskPanicked { task: "checkpoint coordinator".into(), message: panic_message(e) }); break; }
                    }
                }
                done = tasks.next() => done,
            };
            let Some((_, r)) = done else { break };
            match r {
                Ok(TaskExit::Finished) => {}
                Ok(TaskExit::Cancelled) => cancelled = true,
                // After a cancel that was asked for, tasks find their channels closed by
                // neighbours that already stopped: that is the cancel, not a failure.
                Err(JobError::Transport { .. }) if *self.control_rx.borrow() == JobControl::Cancel => cancelled = true,
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        // Stop everything of this attempt before the next one starts: no task may run for a
        // stale attempt.
        drop(coordinator);
        let panicked = tasks.stop().await;
        match (first_error, panicked) {
            // Prefer the panic's own message over the guard's report.
            (Some(JobError::TaskPanicked { task, .. }), Some(message)) => Err(JobError::TaskPanicked { task, message }),
            (Some(e), _) => Err(e),
            (None, Some(message)) => Err(JobError::TaskPanicked {
                task: "a task".into(),
                message,
            }),
            (None, None) => Ok(if cancelled {
                TaskExit::Cancelled
            } else {
                TaskExit::Finished
            }),
        }
    }
}
