//! Keyed streams and their windows.

use std::marker::PhantomData;
use std::time::Duration;

use crate::api::DataStream;
use crate::data::{Data, Key};
use crate::functions::{AggregateFunction, KeyedProcessFunction};
use crate::graph::{Routing, VertexKind};
use crate::operator::{factory_of, Operator};
use crate::operators::keyed_process::KeyedProcess;
use crate::operators::keyed_reduce::KeyedReduce;
use crate::partition::hash_router;
use crate::window::{AggregateLogic, ProcessLogic, TimeWindow, WindowAssigner, WindowLogic, WindowOperator};

/// A stream partitioned by key (see [`DataStream::key_by`]).
pub struct KeyedStream<T, K, F> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key_of: F,
    _k: PhantomData<fn() -> K>,
}

impl<T, K, F: Clone> Clone for KeyedStream<T, K, F> {
    fn clone(&self) -> Self {
        KeyedStream {
            stream: self.stream.clone(),
            key_of: self.key_of.clone(),
            _k: PhantomData,
        }
    }
}

impl<T, K, F> std::fmt::Debug for KeyedStream<T, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream").finish_non_exhaustive()
    }
}

impl<T, K, F> KeyedStream<T, K, F>
where
    T: Data,
    K: Key,
    F: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(stream: DataStream<T>, key_of: F) -> Self {
        KeyedStream {
            stream,
            key_of,
            _k: PhantomData,
        }
    }

    /// Adds a keyed operator fed through a hash partitioning on the key.
    pub(crate) fn keyed_op<O: Operator<In = T> + Clone>(&self, name: &str, op: O) -> DataStream<O::Out> {
        let env = &self.stream.env;
        let id = env.add_vertex(name, VertexKind::Operator(factory_of(op)));
        for &end in &self.stream.ends {
            env.add_edge::<T>(end, id, Routing::Hash(hash_router::<T, K>(self.key_of.clone())));
        }
        DataStream::new(env.clone(), vec![id])
    }

    /// Rolling reduce: emits the key's new aggregate for every record.
    pub fn reduce(&self, f: impl FnMut(T, T) -> T + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.keyed_op("Reduce", KeyedReduce::new(self.key_of.clone(), f))
    }

    /// Runs a [`KeyedProcessFunction`] with keyed state and timers.
    pub fn process<P>(&self, f: P) -> DataStream<P::Out>
    where
        P: KeyedProcessFunction<Key = K, In = T>,
    {
        self.keyed_op("KeyedProcess", KeyedProcess::new(f, self.key_of.clone()))
    }

    /// Groups the keyed stream into event-time windows.
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream<T, K, F> {
        WindowedStream {
            keyed: self.clone(),
            assigner,
            allowed_lateness_ms: 0,
        }
    }
}

/// A keyed stream grouped into windows; finish it with a window function.
pub struct WindowedStream<T, K, F> {
    keyed: KeyedStream<T, K, F>,
    assigner: WindowAssigner,
    allowed_lateness_ms: i64,
}

impl<T, K, F> std::fmt::Debug for WindowedStream<T, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedStream")
            .field("assigner", &self.assigner)
            .field("allowed_lateness_ms", &self.allowed_lateness_ms)
            .finish()
    }
}

impl<T, K, F> WindowedStream<T, K, F>
where
    T: Data,
    K: Key,
    F: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    /// Keeps windows open for `lateness` after they fire: late records within it update and
    /// re-fire the window; later ones are dropped and counted.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness_ms = lateness.as_millis() as i64;
        self
    }

    fn apply<L: WindowLogic<K, In = T>>(&self, name: &str, logic: L) -> DataStream<L::Out> {
        if let Err(e) = self.assigner.validate() {
            self.keyed.stream.env.record_error(format!("operator '{name}': {e}"));
        }
        self.keyed.keyed_op(
            name,
            WindowOperator::new(
                self.assigner,
                self.allowed_lateness_ms,
                logic,
                self.keyed.key_of.clone(),
            ),
        )
    }

    /// Aggregates each window incrementally with `agg` and emits its result.
    pub fn aggregate<A: AggregateFunction<In = T>>(&self, agg: A) -> DataStream<A::Out> {
        self.aggregate_with(agg, |_k: &K, _w: TimeWindow, r: A::Out| r)
    }

    /// Aggregates incrementally and builds the output from the key, the window and the result.
    pub fn aggregate_with<A, O, G>(&self, agg: A, f: G) -> DataStream<O>
    where
        A: AggregateFunction<In = T>,
        O: Data,
        G: Fn(&K, TimeWindow, A::Out) -> O + Clone + Send + Sync + 'static,
    {
        self.apply(
            "WindowAggregate",
            AggregateLogic {
                agg,
                f,
                _o: PhantomData,
            },
        )
    }

    /// Reduces each window's records with `f` and emits the result.
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.aggregate(ReduceAgg { f, _t: PhantomData })
    }

    /// Hands all records of a window to `f` when it fires (keeps every record in state).
    pub fn process<O: Data>(
        &self,
        f: impl FnMut(&K, TimeWindow, &[T], &mut Vec<O>) + Clone + Send + Sync + 'static,
    ) -> DataStream<O> {
        self.apply("WindowProcess", ProcessLogic { f, _t: PhantomData })
    }
}

/// A reduce function as an aggregate (accumulator: the reduced value so far).
struct ReduceAgg<T, F> {
    f: F,
    _t: PhantomData<fn() -> T>,
}

impl<T, F: Clone> Clone for ReduceAgg<T, F> {
    fn clone(&self) -> Self {
        ReduceAgg {
            f: self.f.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Data, F: Fn(T, T) -> T + Clone + Send + Sync + 'static> AggregateFunction for ReduceAgg<T, F> {
    type In = T;
    type Acc = Option<T>;
    type Out = T;
    fn create_accumulator(&self) -> Option<T> {
        None
    }
    fn add(&self, acc: &mut Option<T>, v: T) {
        *acc = Some(match acc.take() {
            Some(a) => (self.f)(a, v),
            None => v,
        });
    }
    fn get_result(&self, acc: &Option<T>) -> T {
        acc.clone().expect("a window fires only after a record was added")
    }
    fn merge(&self, a: Option<T>, b: Option<T>) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some((self.f)(a, b)),
            (a, None) => a,
            (None, b) => b,
        }
    }
}
