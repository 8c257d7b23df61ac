//! One execution attempt of a job: build every task (restoring its state), run them with the
//! checkpoint coordinator, and tear all of them down when the attempt ends.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use sluice_transport::net::{ConnectionConfig, TcpLoopbackTransport};
use sluice_transport::{ChannelId, LocalTransport, Transport};
use tokio::sync::mpsc;

use crate::checkpoint::coordinator::{Coordinator, OperatorInfo, SavepointRequests, StopHook, TaskRef};
use crate::checkpoint::{CheckpointStorage, LoadedCheckpoint};
use crate::clock::Clock;
use crate::data::EventTime;
use crate::error::{JobError, OperatorError};
use crate::graph::{JobGraph, VertexKind};
use crate::metrics::task::{OperatorMetrics, TaskMetrics};
use crate::metrics::{CheckpointStats, MetricGroup, VertexMetrics};
use crate::operator::OperatorContext;
use crate::partition::{PartitionKind, RouterArgs};
use crate::runtime::chain::ChainOps;
use crate::runtime::control::ControlReceiver;
use crate::runtime::input_gate::InputGate;
use crate::runtime::outputs::{EdgeOutput, Outputs};
use crate::runtime::restore;
use crate::runtime::task::{CheckpointLink, Head, SourceHead, Task, TaskExit};
use crate::runtime::{ExecutionConfig, JobControl};

/// One execution attempt: all tasks of the job, and the checkpoint coordinator.
pub(crate) struct Attempt<'a> {
    pub(crate) graph: Arc<JobGraph>,
    pub(crate) config: &'a ExecutionConfig,
    pub(crate) attempt: u32,
    pub(crate) clock: Clock,
    pub(crate) log: slog::Logger,
    pub(crate) control_rx: ControlReceiver,
    pub(crate) storage: Option<CheckpointStorage>,
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) retained: VecDeque<u64>,
    pub(crate) stats: Arc<CheckpointStats>,
    pub(crate) savepoints: Option<SavepointRequests>,
    pub(crate) stop: StopHook,
    /// The job's metric scope (job id and name).
    pub(crate) metrics: MetricGroup,
}

/// Reports a task that panicked (see `Attempt::run`).
struct PanicReport {
    tx: mpsc::Sender<Done>,
    task: String,
    armed: bool,
}

impl PanicReport {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PanicReport {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            let _ = self.tx.try_send(Done::Task(Err(JobError::TaskPanicked {
                task: self.task.clone(),
                message: "panicked".into(),
            })));
        }
    }
}

enum Done {
    Task(Result<TaskExit, JobError>),
    Coordinator(Result<(), JobError>),
}

impl Attempt<'_> {
    pub(crate) async fn run(
        self,
        restored: Option<&LoadedCheckpoint>,
    ) -> Result<(TaskExit, Vec<Arc<VertexMetrics>>), JobError> {
        let graph = &self.graph;
        let transport: Box<dyn Transport> = if self.config.shuffle_over_tcp {
            // Every channel that is not a forward edge crosses a real TCP connection.
            let crossing: std::collections::BTreeSet<u32> = (0..graph.edges.len())
                .filter(|&e| graph.edges[e].kind() != PartitionKind::Forward)
                .map(|e| e as u32)
                .collect();
            let cap = self.config.channel_capacity;
            let net = ConnectionConfig {
                credits_per_channel: cap as u32,
                queue_per_channel: cap,
                frames_per_pass: 64,
            };
            Box::new(
                TcpLoopbackTransport::connect(
                    cap,
                    net,
                    self.attempt,
                    move |id| crossing.contains(&id.edge),
                    self.log.clone(),
                )
                .await
                .map_err(|e| JobError::InvalidGraph(e.to_string()))?,
            )
        } else {
            Box::new(LocalTransport::new(self.config.channel_capacity))
        };
        let metrics: Vec<Arc<VertexMetrics>> = graph.vertices.iter().map(|_| VertexMetrics::new_shared()).collect();
        // The attempt's task metrics leave the registry with it.
        let scope = self.metrics.child_scope();
        let _unregister = scope.guard();
        let (events_tx, events_rx) = mpsc::channel(1024);
        let mut tasks = Vec::new();
        let mut task_refs = Vec::new();
        let env = TaskEnv {
            graph,
            config: self.config,
            attempt: self.attempt,
            clock: self.clock,
            log: &self.log,
            control_rx: &self.control_rx,
            checkpointing: self.storage.is_some(),
            metrics: &scope,
        };
        for (index, spec) in task_specs(graph).into_iter().enumerate() {
            let link = match &self.storage {
                Some(st) => {
                    let (tx, rx) = mpsc::channel(64);
                    task_refs.push(TaskRef {
                        commands: tx,
                        is_source: spec.is_source,
                    });
                    Some(CheckpointLink::new(
                        index,
                        rx,
                        events_tx.clone(),
                        st.clone(),
                        graph.max_parallelism,
                        restored,
                    ))
                }
                None => None,
            };
            tasks.push(build_task(&env, &spec, transport.as_ref(), &metrics, link, restored)?);
        }
        drop(events_tx);
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(tasks.len() + 1);
        let mut handles = Vec::new();
        let total = tasks.len();
        for t in tasks {
            let tx = done_tx.clone();
            handles.push(tokio::spawn(async move {
                // A panic unwinds through the guard, which reports it: the other tasks may be
                // waiting on channels that a panicked task never closes (over the network).
                let guard = PanicReport {
                    tx: tx.clone(),
                    task: t.name.clone(),
                    armed: true,
                };
                let r = t.run().await;
                guard.disarm();
                let _ = tx.send(Done::Task(r)).await;
            }));
        }
        if let (Some(storage), Some(cfg)) = (&self.storage, &self.config.checkpointing) {
            let coordinator = Coordinator {
                config: cfg.clone(),
                storage: storage.clone(),
                clock: self.clock,
                log: self.log.new(slog::o!("component" => "checkpoint-coordinator")),
                job_name: graph.name.clone(),
                max_parallelism: graph.max_parallelism,
                operators: (0..graph.vertices.len())
                    .map(|v| OperatorInfo {
                        key: restore::operator_key(graph, v),
                        name: graph.vertices[v].name.clone(),
                        parallelism: graph.vertices[v].parallelism,
                    })
                    .collect(),
                tasks: task_refs,
                events: events_rx,
                next_id: self.next_id.clone(),
                retained: self.retained.clone(),
                stats: self.stats.clone(),
                savepoints: self.savepoints.clone(),
                stop: self.stop.clone(),
            };
            let tx = done_tx.clone();
            handles.push(tokio::spawn(async move {
                let mut coordinator = coordinator;
                let r = coordinator.run().await;
                let _ = tx.send(Done::Coordinator(r)).await;
                // The tasks' command channels close only now: a failing coordinator's error is
                // queued before any task can notice it is gone.
                drop(coordinator);
            }));
        }
        drop(done_tx);
        let mut first_error: Option<JobError> = None;
        let mut cancelled = false;
        let mut finished = 0usize;
        while finished < total {
            let Some(done) = done_rx.recv().await else {
                // A task panicked (it never reported): find out which.
                break;
            };
            match done {
                Done::Coordinator(Ok(())) => {}
                Done::Coordinator(Err(e)) | Done::Task(Err(e @ JobError::CheckpointsFailing { .. })) => {
                    first_error.get_or_insert(e);
                    break;
                }
                Done::Task(Ok(TaskExit::Finished)) => finished += 1,
                Done::Task(Ok(TaskExit::Cancelled)) => {
                    finished += 1;
                    cancelled = true;
                }
                // After a cancel that was asked for, tasks find their channels closed by
                // neighbours that already stopped: that is the cancel, not a failure.
                Done::Task(Err(JobError::Transport { .. })) if *self.control_rx.borrow() == JobControl::Cancel => {
                    finished += 1;
                    cancelled = true;
                }
                Done::Task(Err(e)) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        let all_done = finished == total && first_error.is_none();
        // Stop everything of this attempt before the next one starts: no task may run for a
        // stale attempt.
        for h in &handles {
            h.abort();
        }
        let mut panicked = None;
        for h in handles {
            if let Err(e) = h.await {
                if !e.is_cancelled() {
                    panicked.get_or_insert(panic_message(e));
                }
            }
        }
        if let Some(e) = first_error {
            // Prefer the panic's own message over the guard's report.
            return Err(match (e, panicked) {
                (JobError::TaskPanicked { task, .. }, Some(message)) => JobError::TaskPanicked { task, message },
                (e, _) => e,
            });
        }
        if let Some(message) = panicked {
            return Err(JobError::TaskPanicked {
                task: "a task".into(),
                message,
            });
        }
        if !all_done {
            return Err(JobError::TaskPanicked {
                task: "a task".into(),
                message: "ended without reporting".into(),
            });
        }
        Ok((
            if cancelled {
                TaskExit::Cancelled
            } else {
                TaskExit::Finished
            },
            metrics,
        ))
    }
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

/// One task of an attempt: a subtask of a chain. Tasks are numbered in the order
/// [`task_specs`] lists them, the same in every process that builds the same graph.
#[derive(Debug, Clone)]
pub(crate) struct TaskSpec {
    /// The chain's vertices, head first.
    pub(crate) chain: Vec<usize>,
    pub(crate) subtask: u32,
    pub(crate) is_source: bool,
}

/// Every task of `graph`: chains in the order of their heads, subtasks within a chain.
pub(crate) fn task_specs(graph: &JobGraph) -> Vec<TaskSpec> {
    let mut specs = Vec::new();
    for chain in graph.chains() {
        for subtask in 0..chain.parallelism {
            specs.push(TaskSpec {
                is_source: matches!(graph.vertices[chain.vertices[0]].kind, VertexKind::Source(_)),
                chain: chain.vertices.clone(),
                subtask,
            });
        }
    }
    specs
}

/// What every task of one attempt shares, in whichever process it runs.
pub(crate) struct TaskEnv<'a> {
    pub(crate) graph: &'a JobGraph,
    pub(crate) config: &'a ExecutionConfig,
    pub(crate) attempt: u32,
    pub(crate) clock: Clock,
    pub(crate) log: &'a slog::Logger,
    pub(crate) control_rx: &'a ControlReceiver,
    pub(crate) checkpointing: bool,
    /// The attempt's metric scope (job labels).
    pub(crate) metrics: &'a MetricGroup,
}

/// Builds one task: its operators (restored from `restored`), its input and output channels.
pub(crate) fn build_task(
    at: &TaskEnv<'_>,
    spec: &TaskSpec,
    transport: &dyn Transport,
    metrics: &[Arc<VertexMetrics>],
    mut link: Option<CheckpointLink>,
    restored: Option<&LoadedCheckpoint>,
) -> Result<Task, JobError> {
    let chain = &spec.chain[..];
    let subtask = spec.subtask;
    let graph = at.graph;
    let config = at.config;
    let head = chain[0];
    let tail = *chain.last().expect("a chain has at least its head");
    let parallelism = graph.vertices[head].parallelism;
    let names: Vec<&str> = chain.iter().map(|&v| graph.vertices[v].name.as_str()).collect();
    let task_name = format!("{} ({}/{})", names.join(" -> "), subtask + 1, parallelism);
    let task_log = at.log.new(slog::o!("task" => names.join(" -> "), "subtask" => subtask));
    let task_group = at
        .metrics
        .group("task", &names.join(" -> "))
        .group("subtask", &subtask.to_string());
    let task_metrics = TaskMetrics::register(task_group.clone());
    let ctx_for = |v: usize| OperatorContext {
        vertex_name: graph.vertices[v].name.clone(),
        subtask,
        parallelism,
        max_parallelism: graph.max_parallelism,
        watermark: EventTime::MIN,
        clock: at.clock,
        log: task_log.new(slog::o!("vertex" => graph.vertices[v].name.clone())),
        attempt: at.attempt,
        checkpointing: at.checkpointing,
        metrics: Arc::new(OperatorMetrics::register(
            task_group.group("operator", &graph.vertices[v].name),
            metrics[v].clone(),
        )),
    };
    let failed = |e| JobError::TaskFailed {
        task: task_name.clone(),
        source: e,
    };
    let restore_err = |reason: String| JobError::Restore {
        checkpoint: restored.map_or(0, |c| c.metadata.checkpoint_id),
        reason: format!("task {task_name}: {reason}"),
    };
    let mut ops = Vec::new();
    let mut op_keys = Vec::new();
    let mut source = None;
    for &v in chain {
        let key = restore::operator_key(graph, v);
        let state = match restored {
            Some(ck) => {
                restore::restored_for(ck, &key, subtask, parallelism, graph.max_parallelism).map_err(restore_err)?
            }
            None => sluice_state::RestoredState::empty(),
        };
        match &graph.vertices[v].kind {
            VertexKind::Source(f) => {
                let mut s = f(subtask, parallelism).map_err(failed)?;
                let old = restored.and_then(|ck| ck.metadata.operators.iter().find(|o| o.key == key));
                match old {
                    Some(op) if op.parallelism != parallelism => {
                        // Rescaled: every new subtask sees the positions of all old ones.
                        let ck = restored.expect("an operator's old state comes from a restored checkpoint");
                        let mut states = Vec::with_capacity(op.files.len());
                        for (i, f) in op.files.iter().enumerate() {
                            let file = ck
                                .files
                                .get(&f.path)
                                .ok_or_else(|| restore_err(format!("state file '{}' was not loaded", f.path)))?;
                            let pos = file.operator_state().first().cloned();
                            match pos {
                                Some(p) if f.subtask == i as u32 => states.push(p),
                                _ => {
                                    return Err(restore_err(format!(
                                        "source '{key}' ran at parallelism {} but subtask {i}'s position is missing",
                                        op.parallelism
                                    )))
                                }
                            }
                        }
                        if states.len() != op.parallelism as usize {
                            return Err(restore_err(format!(
                                "source '{key}' ran at parallelism {} but {} positions were stored",
                                op.parallelism,
                                states.len()
                            )));
                        }
                        // A source that cannot be rescaled will not be after a restart either.
                        s.restore_rescaled(op.parallelism, &states)
                            .map_err(|e| restore_err(e.to_string()))?;
                    }
                    _ => {
                        if let Some(pos) = state.operator_state().next() {
                            s.restore(pos).map_err(failed)?;
                        }
                    }
                }
                source = Some(SourceHead {
                    source: s,
                    ctx: ctx_for(v),
                    key,
                });
            }
            VertexKind::Operator(f) => {
                let mut op = f();
                let mut ctx = ctx_for(v);
                op.open(&mut ctx).map_err(failed)?;
                op.restore_state(&state, &mut ctx).map_err(|e| match e {
                    // A changed state type stays changed after a restart: refuse at once.
                    OperatorError::State(se @ sluice_state::StateError::TypeChanged { .. }) => {
                        restore_err(format!("operator '{key}': {se}"))
                    }
                    other => failed(other),
                })?;
                ops.push((op, ctx));
                op_keys.push(key);
            }
        }
    }
    if let Some(l) = link.as_mut() {
        l.op_keys = op_keys;
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
                    let id = ChannelId {
                        edge: e as u32,
                        from,
                        to: subtask,
                    };
                    inputs.push((transport.input(id).map_err(wire)?, edge.codec.clone()));
                }
            }
            Head::Inputs(InputGate::new(inputs, task_metrics.bytes_in.clone()))
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
            let id = ChannelId {
                edge: e as u32,
                from: subtask,
                to,
            };
            let ch = transport.output(id).map_err(wire)?;
            let usage = ch.usage_probe();
            let target = &graph.vertices[edge.target].name;
            task_metrics
                .group()
                .group("channel", &format!("{target} ({}/{down})", to + 1))
                .gauge_fn(
                    "task_output_buffer_usage",
                    "share of the output channel's queue in use",
                    usage,
                );
            channels.push(ch);
        }
        edges.push(EdgeOutput {
            codec: edge.codec.clone(),
            router: (edge.router())(RouterArgs {
                sender: subtask,
                targets: targets.len() as u32,
                batch_size: config.batch_size,
                max_parallelism: graph.max_parallelism,
            }),
            channels,
        });
    }
    Ok(Task::new(
        task_name,
        subtask,
        head,
        ChainOps { ops },
        Outputs::new(edges, task_metrics.clone()),
        at.control_rx.clone(),
        config.batch_size,
        config.watermark_interval_ms,
        task_log,
        link,
        task_metrics,
    ))
}
