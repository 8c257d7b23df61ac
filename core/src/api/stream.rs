//! `DataStream`: a stream of records of one type, and the transformations on it.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::api::{ConnectedStreams, JoinedStreams, KeyedStream, StreamEnv};
use crate::data::{Data, Key, Record};
use crate::graph::{Routing, VertexId, VertexKind};
use crate::operator::{factory_of, Operator};
use crate::operators::stateless::Stateless;
use crate::partition::{plain_router, PartitionKind};
use crate::sink::{Sink, SinkOperator, TransactionalSink, TwoPhaseCommitOperator};

/// A stream of `T` records. Transformations return new streams; the settings methods
/// (`name`, `uid`, `set_parallelism`, `disable_chaining`) apply to the operator that produced
/// this stream.
pub struct DataStream<T> {
    pub(crate) env: StreamEnv,
    /// The vertices whose output makes up this stream (more than one after `union`).
    pub(crate) ends: Vec<VertexId>,
    pub(crate) partition: Option<PartitionKind>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            ends: self.ends.clone(),
            partition: self.partition,
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for DataStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream").field("ends", &self.ends).finish()
    }
}

impl<T: Data> DataStream<T> {
    pub(crate) fn new(env: StreamEnv, ends: Vec<VertexId>) -> Self {
        DataStream {
            env,
            ends,
            partition: None,
            _t: PhantomData,
        }
    }

    /// The environment this stream belongs to.
    pub fn env(&self) -> &StreamEnv {
        &self.env
    }

    fn plain_routing(&self) -> Routing {
        let (kind, explicit) = match self.partition {
            Some(k) => (k, true),
            None => (PartitionKind::Forward, false),
        };
        Routing::Plain {
            kind,
            explicit,
            make: Arc::new(plain_router::<T>),
        }
    }

    /// Adds an operator fed by this stream with the stream's partitioning.
    pub(crate) fn connect_op<O: Operator<In = T> + Clone>(&self, name: &str, op: O) -> DataStream<O::Out> {
        let id = self.env.add_vertex(name, VertexKind::Operator(factory_of(op)));
        for &end in &self.ends {
            self.env.add_edge::<T>(end, id, self.plain_routing());
        }
        DataStream::new(self.env.clone(), vec![id])
    }

    /// Applies a custom [`Operator`].
    pub fn transform<O: Operator<In = T> + Clone>(&self, name: &str, op: O) -> DataStream<O::Out> {
        self.connect_op(name, op)
    }

    /// Transforms each record.
    pub fn map<O: Data>(&self, f: impl Fn(T) -> O + Clone + Send + Sync + 'static) -> DataStream<O> {
        self.connect_op(
            "Map",
            Stateless::new(move |r: Record<T>, out: &mut Vec<Record<O>>| out.push(Record::new(f(r.value), r.ts))),
        )
    }

    /// Keeps the records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.connect_op(
            "Filter",
            Stateless::new(move |r: Record<T>, out: &mut Vec<Record<T>>| {
                if f(&r.value) {
                    out.push(r)
                }
            }),
        )
    }

    /// Turns each record into zero or more records.
    pub fn flat_map<O: Data, I: IntoIterator<Item = O>>(
        &self,
        f: impl Fn(T) -> I + Clone + Send + Sync + 'static,
    ) -> DataStream<O> {
        self.connect_op(
            "FlatMap",
            Stateless::new(move |r: Record<T>, out: &mut Vec<Record<O>>| {
                let ts = r.ts;
                out.extend(f(r.value).into_iter().map(|v| Record::new(v, ts)))
            }),
        )
    }

    /// Partitions the stream by key: every record of a key goes to the same subtask, where
    /// keyed state and timers live.
    pub fn key_by<K: Key, F>(&self, key_of: F) -> KeyedStream<T, K, F>
    where
        F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        KeyedStream::new(self.clone(), key_of)
    }

    /// Merges streams of the same type into one.
    pub fn union(&self, others: &[DataStream<T>]) -> DataStream<T> {
        let mut ends = self.ends.clone();
        for o in others {
            assert!(o.env.same_env(&self.env), "union of streams from different StreamEnvs");
            ends.extend(&o.ends);
        }
        DataStream::new(self.env.clone(), ends)
    }

    /// Pairs this stream with another for a two-input operation (co-process).
    pub fn connect<U: Data>(&self, other: &DataStream<U>) -> ConnectedStreams<T, U> {
        ConnectedStreams::new(self.clone(), other.clone())
    }

    /// Starts a window join with another stream.
    pub fn join<U: Data>(&self, other: &DataStream<U>) -> JoinedStreams<T, U> {
        JoinedStreams::new(self.clone(), other.clone())
    }

    /// Sends records round-robin to the next operator's subtasks.
    pub fn rebalance(&self) -> DataStream<T> {
        let mut s = self.clone();
        s.partition = Some(PartitionKind::Rebalance);
        s
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self) -> DataStream<T> {
        let mut s = self.clone();
        s.partition = Some(PartitionKind::Broadcast);
        s
    }

    /// Sends records from subtask i to subtask i of the next operator (equal parallelism).
    pub fn forward(&self) -> DataStream<T> {
        let mut s = self.clone();
        s.partition = Some(PartitionKind::Forward);
        s
    }

    /// Writes the stream to a sink. Returns the sink's stream handle for its settings.
    pub fn sink_to<S: Sink<In = T>>(&self, sink: S, name: &str) -> DataStream<()> {
        let s = self.connect_op(name, SinkOperator::new(sink));
        self.env.update_vertex(s.ends[0], |v| v.sink = true);
        s
    }

    /// Writes the stream to a two-phase-commit sink: exactly once when the job checkpoints.
    pub fn sink_to_transactional<S: TransactionalSink<In = T>>(&self, sink: S, name: &str) -> DataStream<()> {
        let s = self.connect_op(name, TwoPhaseCommitOperator::new(sink));
        self.env.update_vertex(s.ends[0], |v| v.sink = true);
        s
    }

    fn single_end(&self, what: &str) -> VertexId {
        assert!(
            self.ends.len() == 1,
            "{what} applies to the operator that produced a stream, not to a union"
        );
        self.ends[0]
    }

    /// Names the operator (shown in plans, logs and metrics).
    pub fn name(self, name: &str) -> Self {
        let id = self.single_end("name");
        self.env.update_vertex(id, |v| v.name = name.to_string());
        self
    }

    /// Gives the operator a stable id, by which its state is found in savepoints.
    pub fn uid(self, uid: &str) -> Self {
        let id = self.single_end("uid");
        self.env.update_vertex(id, |v| v.uid = Some(uid.to_string()));
        self
    }

    /// Sets the operator's parallelism.
    pub fn set_parallelism(self, p: u32) -> Self {
        let id = self.single_end("set_parallelism");
        self.env.update_vertex(id, |v| v.parallelism = p);
        self
    }

    /// Keeps the operator in a task of its own (not chained with its neighbours).
    pub fn disable_chaining(self) -> Self {
        let id = self.single_end("disable_chaining");
        self.env.update_vertex(id, |v| v.chaining = false);
        self
    }
}
