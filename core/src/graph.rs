//! The job graph: vertices (sources and operators) and the edges between them, and the plan of
//! which vertices run chained together in one task.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::codec::BatchCodec;
use crate::error::JobError;
use crate::operator::OperatorFactory;
use crate::partition::{PartitionKind, RouterFactory};
use crate::source::SourceFactory;

/// Index of a vertex in its job graph.
pub type VertexId = usize;

pub(crate) enum VertexKind {
    Source(SourceFactory),
    Operator(OperatorFactory),
}

pub(crate) struct Vertex {
    pub(crate) name: String,
    pub(crate) uid: Option<String>,
    pub(crate) parallelism: u32,
    pub(crate) chaining: bool,
    /// Whether the vertex is a sink (the only vertices allowed to have no consumers).
    pub(crate) sink: bool,
    pub(crate) kind: VertexKind,
}

/// How the router of an edge is chosen.
pub(crate) enum Routing {
    /// A non-keyed partitioning. `explicit` is false when the API chose it by default, in
    /// which case forward becomes rebalance if the two sides end up with different parallelism.
    Plain {
        kind: PartitionKind,
        explicit: bool,
        make: Arc<dyn Fn(PartitionKind) -> RouterFactory + Send + Sync>,
    },
    /// By key group.
    Hash(RouterFactory),
}

pub(crate) struct Edge {
    pub(crate) source: VertexId,
    pub(crate) target: VertexId,
    pub(crate) routing: Routing,
    /// Encodes the edge's batches when they cross the network.
    pub(crate) codec: Arc<dyn BatchCodec>,
}

impl Edge {
    pub(crate) fn kind(&self) -> PartitionKind {
        match &self.routing {
            Routing::Plain { kind, .. } => *kind,
            Routing::Hash(_) => PartitionKind::Hash,
        }
    }

    pub(crate) fn router(&self) -> RouterFactory {
        match &self.routing {
            Routing::Plain { kind, make, .. } => make(*kind),
            Routing::Hash(f) => f.clone(),
        }
    }
}

/// A job ready to run: the dataflow graph built by a [`crate::StreamEnv`].
pub struct JobGraph {
    pub(crate) name: String,
    pub(crate) max_parallelism: u32,
    pub(crate) vertices: Vec<Vertex>,
    pub(crate) edges: Vec<Edge>,
}

/// A chain: vertices that run one after another in the same task, with no channel between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) vertices: Vec<VertexId>,
    pub(crate) parallelism: u32,
}

impl JobGraph {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Checks the graph and fixes default partitionings: a default forward edge between
    /// vertices of different parallelism becomes rebalance, as in Flink.
    pub(crate) fn finalize(&mut self) -> Result<(), JobError> {
        if self.vertices.is_empty() {
            return Err(JobError::InvalidGraph("the job has no sources".into()));
        }
        let mut uids = std::collections::BTreeSet::new();
        for v in &self.vertices {
            if v.parallelism == 0 || v.parallelism > self.max_parallelism {
                return Err(JobError::InvalidGraph(format!(
                    "vertex '{}' has parallelism {}, which must be between 1 and the max parallelism {}",
                    v.name, v.parallelism, self.max_parallelism
                )));
            }
            if let Some(uid) = &v.uid {
                if !uids.insert(uid.clone()) {
                    return Err(JobError::InvalidGraph(format!(
                        "uid '{uid}' is used by more than one operator"
                    )));
                }
            }
        }
        for i in 0..self.edges.len() {
            let (s, t) = (self.edges[i].source, self.edges[i].target);
            let same = self.vertices[s].parallelism == self.vertices[t].parallelism;
            if let Routing::Plain { kind, explicit, .. } = &mut self.edges[i].routing {
                if *kind == PartitionKind::Forward && !same {
                    if *explicit {
                        return Err(JobError::InvalidGraph(format!(
                            "forward edge from '{}' (parallelism {}) to '{}' (parallelism {}) needs equal parallelism",
                            self.vertices[s].name,
                            self.vertices[s].parallelism,
                            self.vertices[t].name,
                            self.vertices[t].parallelism
                        )));
                    }
                    *kind = PartitionKind::Rebalance;
                }
            }
        }
        for v in 0..self.vertices.len() {
            if self.out_edges(v).is_empty() && !self.vertices[v].sink {
                return Err(JobError::InvalidGraph(format!(
                    "the output of '{}' goes nowhere: end the stream in a sink",
                    self.vertices[v].name
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn in_edges(&self, v: VertexId) -> Vec<usize> {
        (0..self.edges.len()).filter(|&e| self.edges[e].target == v).collect()
    }

    pub(crate) fn out_edges(&self, v: VertexId) -> Vec<usize> {
        (0..self.edges.len()).filter(|&e| self.edges[e].source == v).collect()
    }

    /// Whether `v` runs in the same task as its only upstream vertex.
    fn chains_to_upstream(&self, v: VertexId) -> bool {
        let ins = self.in_edges(v);
        if ins.len() != 1 || matches!(self.vertices[v].kind, VertexKind::Source(_)) {
            return false;
        }
        let e = &self.edges[ins[0]];
        let u = e.source;
        e.kind() == PartitionKind::Forward
            && self.vertices[u].parallelism == self.vertices[v].parallelism
            && self.out_edges(u).len() == 1
            && self.vertices[u].chaining
            && self.vertices[v].chaining
    }

    /// Splits the graph into chains, in vertex order of their heads.
    pub(crate) fn chains(&self) -> Vec<Chain> {
        let mut chains = Vec::new();
        for head in 0..self.vertices.len() {
            if self.chains_to_upstream(head) {
                continue;
            }
            let mut vs = vec![head];
            let mut cur = head;
            loop {
                let outs = self.out_edges(cur);
                if outs.len() != 1 {
                    break;
                }
                let next = self.edges[outs[0]].target;
                if !self.chains_to_upstream(next) {
                    break;
                }
                vs.push(next);
                cur = next;
            }
            chains.push(Chain {
                parallelism: self.vertices[head].parallelism,
                vertices: vs,
            });
        }
        chains
    }

    /// A readable plan: tasks with their chained operators and the edges between them.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "job '{}' (max parallelism {})", self.name, self.max_parallelism);
        for chain in self.chains() {
            let names: Vec<String> = chain
                .vertices
                .iter()
                .map(|&v| match &self.vertices[v].uid {
                    Some(uid) => format!("{} [uid={uid}]", self.vertices[v].name),
                    None => self.vertices[v].name.clone(),
                })
                .collect();
            let _ = writeln!(s, "  task x{}: {}", chain.parallelism, names.join(" -> "));
            let tail = *chain.vertices.last().expect("a chain has at least its head");
            for e in self.out_edges(tail) {
                let edge = &self.edges[e];
                let _ = writeln!(s, "    --{}--> {}", edge.kind().name(), self.vertices[edge.target].name);
            }
        }
        s
    }
}
