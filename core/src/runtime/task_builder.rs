//! Building the tasks of an attempt: which tasks a graph has, and how one of them is put
//! together (its chained operators restored from a checkpoint, its input gate and outputs on
//! a transport). The embedded runtime builds every task of a job this way; a worker builds the
//! tasks placed on it.

use std::sync::Arc;

use sluice_transport::{ChannelId, Transport, TransportError};

use crate::checkpoint::LoadedCheckpoint;
use crate::clock::Clock;
use crate::data::EventTime;
use crate::error::{JobError, OperatorError};
use crate::graph::{JobGraph, VertexKind};
use crate::metrics::task::{OperatorMetrics, TaskMetrics};
use crate::metrics::{MetricGroup, VertexMetrics};
use crate::operator::{ErasedOperator, OperatorContext};
use crate::partition::{PartitionKind, RouterArgs};
use crate::runtime::chain::ChainOps;
use crate::runtime::control::ControlReceiver;
use crate::runtime::input_gate::InputGate;
use crate::runtime::outputs::{EdgeOutput, Outputs};
use crate::runtime::restore;
use crate::runtime::task::{CheckpointLink, Head, SourceHead, Task};
use crate::runtime::ExecutionConfig;
use crate::source::ErasedSource;
use crate::state_backend::{StateBackend, StateBackendConfig, TieredEnv};

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

/// The name of task `spec` as logs and errors show it: `a -> b (2/4)`.
pub(crate) fn task_name(graph: &JobGraph, spec: &TaskSpec) -> String {
    let names: Vec<&str> = spec.chain.iter().map(|&v| graph.vertices[v].name.as_str()).collect();
    let parallelism = graph.vertices[spec.chain[0]].parallelism;
    format!("{} ({}/{})", names.join(" -> "), spec.subtask + 1, parallelism)
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
    /// The job's checkpoint storage, if it checkpoints (where tiered state keeps its runs).
    pub(crate) storage: Option<&'a crate::checkpoint::CheckpointStorage>,
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
    let b = TaskBuilder::new(at, spec, metrics, restored);
    let (source, ops, op_keys) = b.chain()?;
    if let Some(l) = link.as_mut() {
        l.op_keys = op_keys;
    }
    let head = match source {
        Some(s) => Head::Source(s),
        None => Head::Inputs(b.inputs(transport)?),
    };
    let outputs = b.outputs(transport)?;
    Ok(Task::new(
        b.name,
        spec.subtask,
        head,
        ChainOps { ops },
        outputs,
        at.control_rx.clone(),
        at.config.batch_size,
        at.config.watermark_interval_ms,
        b.log,
        link,
        b.task_metrics,
    ))
}

type ChainParts = (
    Option<SourceHead>,
    Vec<(Box<dyn ErasedOperator>, OperatorContext)>,
    Vec<String>,
);

/// The parts of one task while it is put together.
struct TaskBuilder<'a> {
    at: &'a TaskEnv<'a>,
    spec: &'a TaskSpec,
    restored: Option<&'a LoadedCheckpoint>,
    vertex_metrics: &'a [Arc<VertexMetrics>],
    name: String,
    log: slog::Logger,
    group: MetricGroup,
    task_metrics: TaskMetrics,
}

impl<'a> TaskBuilder<'a> {
    fn new(
        at: &'a TaskEnv<'a>,
        spec: &'a TaskSpec,
        vertex_metrics: &'a [Arc<VertexMetrics>],
        restored: Option<&'a LoadedCheckpoint>,
    ) -> Self {
        let names: Vec<&str> = spec.chain.iter().map(|&v| at.graph.vertices[v].name.as_str()).collect();
        let chain = names.join(" -> ");
        let log = at.log.new(slog::o!("task" => chain.clone(), "subtask" => spec.subtask));
        let group = at
            .metrics
            .group("task", &chain)
            .group("subtask", &spec.subtask.to_string());
        let task_metrics = TaskMetrics::register(group.clone());
        TaskBuilder {
            at,
            spec,
            restored,
            vertex_metrics,
            name: task_name(at.graph, spec),
            log,
            group,
            task_metrics,
        }
    }

    fn parallelism(&self) -> u32 {
        self.at.graph.vertices[self.spec.chain[0]].parallelism
    }

    fn ctx_for(&self, v: usize) -> OperatorContext {
        let graph = self.at.graph;
        OperatorContext {
            vertex_name: graph.vertices[v].name.clone(),
            subtask: self.spec.subtask,
            parallelism: self.parallelism(),
            max_parallelism: graph.max_parallelism,
            watermark: EventTime::MIN,
            clock: self.at.clock,
            log: self.log.new(slog::o!("vertex" => graph.vertices[v].name.clone())),
            attempt: self.at.attempt,
            checkpointing: self.at.checkpointing,
            state_backend: StateBackend::Heap,
            metrics: Arc::new(OperatorMetrics::register(
                self.group.group("operator", &graph.vertices[v].name),
                self.vertex_metrics[v].clone(),
            )),
        }
    }

    /// Where the keyed state of operator `key` lives in this subtask.
    fn state_backend(&self, key: &str) -> Result<StateBackend, JobError> {
        let StateBackendConfig::Tiered(settings) = &self.at.config.state_backend else {
            return Ok(StateBackend::Heap);
        };
        let Some(storage) = self.at.storage else {
            return Err(self.failed(OperatorError::Unrecoverable(format!(
                "operator '{key}': the tiered state backend keeps its runs in the checkpoint storage, and this job takes no checkpoints: give it a checkpoint interval, or run it where the heap backend is configured"
            ))));
        };
        Ok(StateBackend::Tiered(TieredEnv::new(
            settings,
            Arc::clone(storage.store()),
            storage.job_dir(),
            key,
            self.at.attempt,
            self.spec.subtask,
        )))
    }

    fn failed(&self, source: OperatorError) -> JobError {
        JobError::TaskFailed {
            task: self.name.clone(),
            source,
        }
    }

    /// A restore problem that a restart would not fix: refused at once.
    fn restore_err(&self, reason: String) -> JobError {
        JobError::Restore {
            checkpoint: self.restored.map_or(0, |c| c.metadata.checkpoint_id),
            reason: format!("task {}: {reason}", self.name),
        }
    }

    /// The chained operators, opened and restored, and the source if the chain starts with one.
    fn chain(&self) -> Result<ChainParts, JobError> {
        let graph = self.at.graph;
        let (mut source, mut ops, mut keys) = (None, Vec::new(), Vec::new());
        for &v in &self.spec.chain {
            let key = restore::operator_key(graph, v);
            let state = match self.restored {
                Some(ck) => {
                    restore::restored_for(ck, &key, self.spec.subtask, self.parallelism(), graph.max_parallelism)
                        .map_err(|r| self.restore_err(r))?
                }
                None => sluice_state::RestoredState::empty(),
            };
            match &graph.vertices[v].kind {
                VertexKind::Source(f) => {
                    let mut s = f(self.spec.subtask, self.parallelism()).map_err(|e| self.failed(e))?;
                    self.restore_source(s.as_mut(), &key, &state)?;
                    source = Some(SourceHead {
                        source: s,
                        ctx: self.ctx_for(v),
                        key,
                    });
                }
                VertexKind::Operator(f) => {
                    let mut op = f();
                    let mut ctx = self.ctx_for(v);
                    ctx.state_backend = self.state_backend(&key)?;
                    op.open(&mut ctx).map_err(|e| self.failed(e))?;
                    op.restore_state(&state, &mut ctx).map_err(|e| match e {
                        // A changed state type stays changed after a restart: refuse at once.
                        OperatorError::State(se @ sluice_state::StateError::TypeChanged { .. }) => {
                            self.restore_err(format!("operator '{key}': {se}"))
                        }
                        // The restored state does not fit this operator (a sink's other output).
                        OperatorError::Unrecoverable(why) => self.restore_err(why),
                        other => self.failed(other),
                    })?;
                    ops.push((op, ctx));
                    keys.push(key);
                }
            }
        }
        Ok((source, ops, keys))
    }

    /// Puts a source back at its checkpointed position; after a rescale every new subtask
    /// sees the positions of all old ones.
    fn restore_source(
        &self,
        s: &mut dyn ErasedSource,
        key: &str,
        state: &sluice_state::RestoredState,
    ) -> Result<(), JobError> {
        let old = self
            .restored
            .and_then(|ck| ck.metadata.operators.iter().find(|o| o.key == key).map(|op| (ck, op)));
        match old {
            Some((ck, op)) if op.parallelism != self.parallelism() => {
                let mut states = Vec::with_capacity(op.files.len());
                for (i, f) in op.files.iter().enumerate() {
                    let file = ck
                        .files
                        .get(&f.path)
                        .ok_or_else(|| self.restore_err(format!("state file '{}' was not loaded", f.path)))?;
                    match file.operator_state().first().cloned() {
                        Some(p) if f.subtask == i as u32 => states.push(p),
                        _ => {
                            return Err(self.restore_err(format!(
                                "source '{key}' ran at parallelism {} but subtask {i}'s position is missing",
                                op.parallelism
                            )))
                        }
                    }
                }
                if states.len() != op.parallelism as usize {
                    return Err(self.restore_err(format!(
                        "source '{key}' ran at parallelism {} but {} positions were stored",
                        op.parallelism,
                        states.len()
                    )));
                }
                // A source that cannot be rescaled will not be after a restart either.
                s.restore_rescaled(op.parallelism, &states)
                    .map_err(|e| self.restore_err(e.to_string()))
            }
            _ => match state.operator_state().next() {
                Some(pos) => s.restore(pos).map_err(|e| self.failed(e)),
                None => Ok(()),
            },
        }
    }

    /// The input gate over every channel into the head of the chain.
    fn inputs(&self, transport: &dyn Transport) -> Result<InputGate, JobError> {
        let graph = self.at.graph;
        let head = self.spec.chain[0];
        let mut inputs = Vec::new();
        for e in graph.in_edges(head) {
            let edge = &graph.edges[e];
            let up = graph.vertices[edge.source].parallelism;
            let senders: Vec<u32> = if edge.kind() == PartitionKind::Forward {
                vec![self.spec.subtask]
            } else {
                (0..up).collect()
            };
            for from in senders {
                let id = ChannelId {
                    edge: e as u32,
                    from,
                    to: self.spec.subtask,
                };
                inputs.push((transport.input(id).map_err(wiring)?, edge.codec.clone()));
            }
        }
        Ok(InputGate::new(inputs, self.task_metrics.bytes_in.clone()))
    }

    /// The outputs of the tail of the chain: one router per edge over its channels.
    fn outputs(&self, transport: &dyn Transport) -> Result<Outputs, JobError> {
        let graph = self.at.graph;
        let tail = *self.spec.chain.last().expect("a chain has at least its head");
        let mut edges = Vec::new();
        for e in graph.out_edges(tail) {
            let edge = &graph.edges[e];
            let down = graph.vertices[edge.target].parallelism;
            let targets: Vec<u32> = if edge.kind() == PartitionKind::Forward {
                vec![self.spec.subtask]
            } else {
                (0..down).collect()
            };
            let mut channels = Vec::new();
            for &to in &targets {
                let id = ChannelId {
                    edge: e as u32,
                    from: self.spec.subtask,
                    to,
                };
                let ch = transport.output(id).map_err(wiring)?;
                let target = &graph.vertices[edge.target].name;
                self.task_metrics
                    .group()
                    .group("channel", &format!("{target} ({}/{down})", to + 1))
                    .gauge_fn(
                        "task_output_buffer_usage",
                        "share of the output channel's queue in use",
                        ch.usage_probe(),
                    );
                channels.push(ch);
            }
            edges.push(EdgeOutput {
                codec: edge.codec.clone(),
                router: (edge.router())(RouterArgs {
                    sender: self.spec.subtask,
                    targets: targets.len() as u32,
                    batch_size: self.at.config.batch_size,
                    max_parallelism: graph.max_parallelism,
                }),
                channels,
            });
        }
        Ok(Outputs::new(edges, self.task_metrics.clone()))
    }
}

/// A channel the transport cannot wire: a bug in the graph or the transport, not a failure a
/// restart would fix.
fn wiring(e: TransportError) -> JobError {
    JobError::InvalidGraph(e.to_string())
}
