//! The embedded executor: runs a whole job graph as tokio tasks in one process, with channels
//! from the in-process transport between them.

mod chain;
mod input_gate;
mod outputs;
mod task;

use std::sync::Arc;
use std::time::Duration;

use sluice_transport::{ChannelId, LocalTransport, Transport};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::error::JobError;
use crate::graph::{JobGraph, VertexKind};
use crate::metrics::{VertexMetrics, VertexSnapshot};
use crate::operator::OperatorContext;
use crate::partition::{PartitionKind, RouterArgs};
use crate::data::EventTime;
use chain::ChainOps;
use input_gate::InputGate;
use outputs::{EdgeOutput, Outputs};
use task::{Head, SourceHead, Task, TaskExit};

/// What the tasks of a running job are asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobControl {
    /// Keep going.
    Run,
    /// Sources stop reading and the job finishes as if the input had ended: every window
    /// fires and sinks publish what they have.
    Drain,
    /// Stop at once, without flushing.
    Cancel,
}

/// Settings of the runtime (not of the job's logic).
#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    /// Records per batch sent between tasks.
    pub batch_size: usize,
    /// Batches a channel holds before its producer waits (backpressure).
    pub channel_capacity: usize,
    /// How often (ms of processing time) a busy source emits a watermark.
    pub watermark_interval_ms: i64,
    /// Processing-time clock; `None` reads the system clock at start.
    pub clock: Option<Clock>,
    /// Where tasks log.
    pub log: slog::Logger,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            batch_size: 1024,
            channel_capacity: 8,
            watermark_interval_ms: 200,
            clock: None,
            log: slog::Logger::root(slog::Discard, slog::o!()),
        }
    }
}

/// The outcome of a finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The job's name.
    pub name: String,
    /// Whether it finished or was cancelled.
    pub cancelled: bool,
    /// Wall time from start to end.
    pub duration: Duration,
    /// Counters per vertex, in graph order.
    pub vertices: Vec<VertexSnapshot>,
    /// Records read by all sources.
    pub records_in: u64,
    /// Records written by all sinks.
    pub records_out: u64,
}

impl JobResult {
    /// Source records per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.records_in as f64 / secs
        } else {
            0.0
        }
    }
}

/// A job running in the background.
#[derive(Debug)]
pub struct JobHandle {
    control: JobController,
    done: tokio::task::JoinHandle<Result<JobResult, JobError>>,
}

/// Sends control requests to a running job; cheap to clone.
#[derive(Debug, Clone)]
pub struct JobController {
    tx: Arc<watch::Sender<JobControl>>,
}

impl JobController {
    /// Asks the job to stop at once.
    pub fn cancel(&self) {
        let _ = self.tx.send(JobControl::Cancel);
    }

    /// Asks the sources to stop, letting everything in flight finish (like end of input).
    pub fn drain(&self) {
        let _ = self.tx.send(JobControl::Drain);
    }
}

impl JobHandle {
    /// Asks the job to stop at once.
    pub fn cancel(&self) {
        self.control.cancel()
    }

    /// Asks the sources to stop, letting everything in flight finish (like end of input).
    pub fn drain(&self) {
        self.control.drain()
    }

    /// A controller that outlives `join`.
    pub fn controller(&self) -> JobController {
        self.control.clone()
    }

    /// Waits for the job to end.
    pub async fn join(self) -> Result<JobResult, JobError> {
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(JobError::TaskPanicked {
                task: "job driver".into(),
                message: e.to_string(),
            }),
        }
    }
}

/// Runs a job to its end.
pub async fn execute(graph: JobGraph, config: ExecutionConfig) -> Result<JobResult, JobError> {
    spawn(graph, config)?.join().await
}

/// Starts a job and returns a handle to control it.
pub fn spawn(mut graph: JobGraph, config: ExecutionConfig) -> Result<JobHandle, JobError> {
    graph.finalize()?;
    if config.batch_size == 0 || config.channel_capacity == 0 {
        return Err(JobError::InvalidGraph(
            "batch size and channel capacity must be at least 1".into(),
        ));
    }
    let clock = config.clock.unwrap_or_else(Clock::system);
    let (control_tx, control_rx) = watch::channel(JobControl::Run);
    let transport = LocalTransport::new(config.channel_capacity);
    let metrics: Vec<Arc<VertexMetrics>> =
        graph.vertices.iter().map(|_| VertexMetrics::new_shared()).collect();
    let log = config.log.new(slog::o!("job" => graph.name.clone()));
    let mut tasks = Vec::new();
    for chain in graph.chains() {
        for subtask in 0..chain.parallelism {
            tasks.push(build_task(
                &graph, &chain.vertices, subtask, &transport, &metrics, &control_rx, &config, clock, &log,
            )?);
        }
    }
    let started = clock.elapsed();
    let control_tx = Arc::new(control_tx);
    let control = JobController { tx: control_tx.clone() };
    let done = tokio::spawn(async move {
        let mut handles = Vec::new();
        for t in tasks {
            let name = t.name.clone();
            handles.push((name, tokio::spawn(t.run())));
        }
        let mut first_error: Option<JobError> = None;
        let mut cancelled = false;
        for (name, h) in handles {
            let r = match h.await {
                Ok(r) => r,
                Err(e) => Err(JobError::TaskPanicked {
                    task: name,
                    message: panic_message(e),
                }),
            };
            match r {
                Ok(TaskExit::Finished) => {}
                Ok(TaskExit::Cancelled) => cancelled = true,
                // After a cancel that was asked for, tasks find their channels closed by
                // neighbours that already stopped: that is the cancel, not a failure.
                Err(JobError::Transport { .. })
                    if first_error.is_none() && *control_tx.borrow() == JobControl::Cancel =>
                {
                    cancelled = true
                }
                Err(e) => {
                    let _ = control_tx.send(JobControl::Cancel);
                    // A broken channel is a symptom; keep the error of the task that caused it.
                    let better = match (&first_error, &e) {
                        (None, _) => true,
                        (Some(JobError::Transport { .. }), JobError::Transport { .. }) => false,
                        (Some(JobError::Transport { .. }), _) => true,
                        _ => false,
                    };
                    if better {
                        first_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let vertices: Vec<VertexSnapshot> = graph
            .vertices
            .iter()
            .zip(&metrics)
            .map(|(v, m)| m.snapshot(&v.name, v.parallelism))
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
        Ok(JobResult {
            name: graph.name.clone(),
            cancelled,
            duration: clock.elapsed() - started,
            vertices,
            records_in,
            records_out,
        })
    });
    Ok(JobHandle { control, done })
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "task was cancelled".into();
    }
    // madsim's JoinError cannot hand out the panic payload; its message names it.
    #[cfg(madsim)]
    {
        e.to_string()
    }
    #[cfg(not(madsim))]
    {
        let p = e.into_panic();
        if let Some(s) = p.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = p.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic".into()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_task(
    graph: &JobGraph,
    chain: &[usize],
    subtask: u32,
    transport: &LocalTransport,
    metrics: &[Arc<VertexMetrics>],
    control: &watch::Receiver<JobControl>,
    config: &ExecutionConfig,
    clock: Clock,
    log: &slog::Logger,
) -> Result<Task, JobError> {
    let head = chain[0];
    let tail = *chain.last().expect("a chain has at least its head");
    let parallelism = graph.vertices[head].parallelism;
    let names: Vec<&str> = chain.iter().map(|&v| graph.vertices[v].name.as_str()).collect();
    let task_name = format!("{} ({}/{})", names.join(" -> "), subtask + 1, parallelism);
    let task_log = log.new(slog::o!("task" => names.join(" -> "), "subtask" => subtask));
    let ctx_for = |v: usize| OperatorContext {
        vertex_name: graph.vertices[v].name.clone(),
        subtask,
        parallelism,
        max_parallelism: graph.max_parallelism,
        watermark: EventTime::MIN,
        clock,
        log: task_log.new(slog::o!("vertex" => graph.vertices[v].name.clone())),
        metrics: metrics[v].clone(),
    };
    let mut ops = Vec::new();
    let mut source = None;
    for &v in chain {
        match &graph.vertices[v].kind {
            VertexKind::Source(f) => {
                let s = f(subtask, parallelism).map_err(|e| JobError::TaskFailed {
                    task: task_name.clone(),
                    source: e,
                })?;
                source = Some(SourceHead {
                    source: s,
                    ctx: ctx_for(v),
                });
            }
            VertexKind::Operator(f) => ops.push((f(), ctx_for(v))),
        }
    }
    let wire = |e: sluice_transport::TransportError| JobError::InvalidGraph(e.to_string());
    let head = match source {
        Some(s) => Head::Source(s),
        None => {
            let mut inputs = Vec::new();
            for e in graph.in_edges(head) {
                let edge = &graph.edges[e];
                let up = graph.vertices[edge.source].parallelism;
                let senders: Vec<u32> = if edge.kind() == PartitionKind::Forward {
                    vec![subtask]
                } else {
                    (0..up).collect()
                };
                for from in senders {
                    let id = ChannelId { edge: e as u32, from, to: subtask };
                    inputs.push(transport.input(id).map_err(wire)?);
                }
            }
            Head::Inputs(InputGate::new(inputs))
        }
    };
    let mut edges = Vec::new();
    for e in graph.out_edges(tail) {
        let edge = &graph.edges[e];
        let down = graph.vertices[edge.target].parallelism;
        let targets: Vec<u32> = if edge.kind() == PartitionKind::Forward {
            vec![subtask]
        } else {
            (0..down).collect()
        };
        let mut channels = Vec::new();
        for &to in &targets {
            let id = ChannelId { edge: e as u32, from: subtask, to };
            channels.push(transport.output(id).map_err(wire)?);
        }
        edges.push(EdgeOutput {
            router: (edge.router())(RouterArgs {
                sender: subtask,
                targets: targets.len() as u32,
                batch_size: config.batch_size,
                max_parallelism: graph.max_parallelism,
            }),
            channels,
        });
    }
    Ok(Task {
        name: task_name,
        head,
        chain: ChainOps { ops },
        outputs: Outputs::new(edges),
        control: control.clone(),
        batch_size: config.batch_size,
        watermark_interval_ms: config.watermark_interval_ms,
        log: task_log,
    })
}
