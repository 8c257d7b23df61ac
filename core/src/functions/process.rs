//! Keyed process functions: per-record logic with keyed state and timers.

use std::collections::BTreeMap;

use sluice_state::{KeyedStateStore, ListState, MapState, StateValue, ValueState};

use crate::data::{Data, Either, EventTime, Key, Record};
use crate::error::OperatorError;
use crate::functions::TimerService;
use crate::metrics::MetricGroup;

/// Which clock a timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fires when the watermark passes the timer.
    EventTime,
    /// Fires when the wall clock passes the timer.
    ProcessingTime,
}

/// Where a function emits its results.
pub struct Collector<'a, O> {
    pub(crate) out: &'a mut Vec<Record<O>>,
    pub(crate) ts: EventTime,
}

impl<O> Collector<'_, O> {
    /// Emits a record with the timestamp of the input (or of the timer that fired).
    pub fn collect(&mut self, value: O) {
        self.out.push(Record::new(value, self.ts));
    }

    /// Emits a record with an explicit event time.
    pub fn collect_at(&mut self, value: O, ts: EventTime) {
        self.out.push(Record::new(value, ts));
    }
}

/// What a keyed function can reach while it handles one record or timer: the current key, its
/// state, timers and time.
pub struct KeyedContext<'a, K> {
    pub(crate) key: &'a K,
    pub(crate) ts: EventTime,
    pub(crate) watermark: EventTime,
    pub(crate) now_ms: i64,
    pub(crate) state: &'a mut KeyedStateStore<K>,
    pub(crate) timers: &'a mut TimerService<K>,
}

impl<K: Key> KeyedContext<'_, K> {
    /// The key being processed.
    pub fn key(&self) -> &K {
        self.key
    }
    /// The event time of the record (or of the timer that fired).
    pub fn timestamp(&self) -> EventTime {
        self.ts
    }
    /// The operator's current watermark.
    pub fn current_watermark(&self) -> EventTime {
        self.watermark
    }
    /// Processing time in ms since the epoch.
    pub fn current_processing_time(&self) -> i64 {
        self.now_ms
    }
    /// The current key's value in `s`: a copy (state may live in a cache or object storage,
    /// so reads hand out values, not references into the store).
    pub fn value<V: StateValue>(&self, s: ValueState<V>) -> Option<V> {
        self.state.value(s, self.key)
    }
    /// Calls `f` with the current key's value in `s` without copying it.
    pub fn with_value<V: StateValue, R>(&self, s: ValueState<V>, f: impl FnOnce(Option<&V>) -> R) -> R {
        self.state.with_value(s, self.key, f)
    }
    /// Sets the current key's value in `s`.
    pub fn set_value<V: StateValue>(&mut self, s: ValueState<V>, v: V) {
        self.state.set_value(s, self.key, v)
    }
    /// Clears the current key's value in `s`, returning it.
    pub fn take_value<V: StateValue>(&mut self, s: ValueState<V>) -> Option<V> {
        self.state.take_value(s, self.key)
    }
    /// Updates the current key's value in `s` in place (from `V::default()` if unset) and
    /// returns what `f` returns.
    pub fn update_value<V: StateValue + Default, R>(&mut self, s: ValueState<V>, f: impl FnOnce(&mut V) -> R) -> R {
        self.state.update_value(s, self.key, f)
    }
    /// The current key's list in `s`: a copy.
    pub fn list<V: StateValue>(&self, s: ListState<V>) -> Vec<V> {
        self.state.list(s, self.key)
    }
    /// Calls `f` with the current key's list in `s` without copying it.
    pub fn with_list<V: StateValue, R>(&self, s: ListState<V>, f: impl FnOnce(&[V]) -> R) -> R {
        self.state.with_list(s, self.key, f)
    }
    /// Appends to the current key's list in `s`.
    pub fn list_add<V: StateValue>(&mut self, s: ListState<V>, v: V) {
        self.state.list_add(s, self.key, v)
    }
    /// Clears the current key's list in `s`, returning it.
    pub fn take_list<V: StateValue>(&mut self, s: ListState<V>) -> Vec<V> {
        self.state.take_list(s, self.key)
    }
    /// The value under `user_key` in the current key's map in `s`: a copy.
    pub fn map_get<UK: StateValue + Ord, UV: StateValue>(&self, s: MapState<UK, UV>, user_key: &UK) -> Option<UV> {
        self.state.map_get(s, self.key, user_key)
    }
    /// Calls `f` with the current key's map in `s`, if any, without copying it.
    pub fn with_map<UK: StateValue + Ord, UV: StateValue, R>(
        &self,
        s: MapState<UK, UV>,
        f: impl FnOnce(Option<&BTreeMap<UK, UV>>) -> R,
    ) -> R {
        self.state.with_map(s, self.key, f)
    }
    /// Updates the current key's map in `s` in place and returns what `f` returns; a map
    /// left empty is removed.
    pub fn update_map<UK: StateValue + Ord, UV: StateValue, R>(
        &mut self,
        s: MapState<UK, UV>,
        f: impl FnOnce(&mut BTreeMap<UK, UV>) -> R,
    ) -> R {
        self.state.update_map(s, self.key, f)
    }
    /// Clears the current key's map in `s`, returning it.
    pub fn take_map<UK: StateValue + Ord, UV: StateValue>(&mut self, s: MapState<UK, UV>) -> BTreeMap<UK, UV> {
        self.state.take_map(s, self.key)
    }
    /// Calls `on_timer` for this key when the watermark reaches `t`.
    pub fn register_event_time_timer(&mut self, t: i64) {
        self.timers.register_event(t, self.key)
    }
    /// Removes an event-time timer of this key.
    pub fn delete_event_time_timer(&mut self, t: i64) {
        self.timers.delete_event(t, self.key)
    }
    /// Calls `on_timer` for this key when processing time reaches `t`.
    pub fn register_processing_time_timer(&mut self, t: i64) {
        self.timers.register_processing(t, self.key)
    }
    /// Removes a processing-time timer of this key.
    pub fn delete_processing_time_timer(&mut self, t: i64) {
        self.timers.delete_processing(t, self.key)
    }
}

/// Per-record logic on a keyed stream, with keyed state and timers (Flink's
/// `KeyedProcessFunction`). Register state in [`KeyedProcessFunction::open`] and keep the
/// handles in the function.
///
/// The function is cloned once per parallel subtask before it opens.
pub trait KeyedProcessFunction: Clone + Send + Sync + 'static {
    /// Key type.
    type Key: Key;
    /// Record type in.
    type In: Data;
    /// Record type out.
    type Out: Data;

    /// Registers state (called once per subtask before any record).
    fn open(&mut self, _state: &mut KeyedStateStore<Self::Key>) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Registers the function's own metrics in its operator's scope (called once per subtask,
    /// before `open`); keep the handles in the function.
    fn register_metrics(&mut self, _metrics: &MetricGroup) {}

    /// Handles one record of the current key.
    fn process_element(
        &mut self,
        value: Self::In,
        ctx: &mut KeyedContext<'_, Self::Key>,
        out: &mut Collector<'_, Self::Out>,
    ) -> Result<(), OperatorError>;

    /// A timer of the current key fired at `timestamp`.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _domain: TimeDomain,
        _ctx: &mut KeyedContext<'_, Self::Key>,
        _out: &mut Collector<'_, Self::Out>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// Per-record logic over two keyed streams that share a key type (Flink's
/// `KeyedCoProcessFunction`): state and timers are shared by both inputs of a key, which is how
/// joins and enrichment are built.
pub trait KeyedCoProcessFunction: Clone + Send + Sync + 'static {
    /// Key type shared by both inputs.
    type Key: Key;
    /// First input.
    type In1: Data;
    /// Second input.
    type In2: Data;
    /// Record type out.
    type Out: Data;

    /// Registers state.
    fn open(&mut self, _state: &mut KeyedStateStore<Self::Key>) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Registers the function's own metrics in its operator's scope (before `open`).
    fn register_metrics(&mut self, _metrics: &MetricGroup) {}
    /// Handles a record of the first input.
    fn process_element1(
        &mut self,
        value: Self::In1,
        ctx: &mut KeyedContext<'_, Self::Key>,
        out: &mut Collector<'_, Self::Out>,
    ) -> Result<(), OperatorError>;
    /// Handles a record of the second input.
    fn process_element2(
        &mut self,
        value: Self::In2,
        ctx: &mut KeyedContext<'_, Self::Key>,
        out: &mut Collector<'_, Self::Out>,
    ) -> Result<(), OperatorError>;
    /// A timer fired.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _domain: TimeDomain,
        _ctx: &mut KeyedContext<'_, Self::Key>,
        _out: &mut Collector<'_, Self::Out>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// Runs a co-process function as a process function over `Either<In1, In2>`.
#[derive(Clone)]
pub(crate) struct CoProcessAdapter<F>(pub(crate) F);

impl<F: KeyedCoProcessFunction> KeyedProcessFunction for CoProcessAdapter<F> {
    type Key = F::Key;
    type In = Either<F::In1, F::In2>;
    type Out = F::Out;

    fn open(&mut self, state: &mut KeyedStateStore<F::Key>) -> Result<(), OperatorError> {
        self.0.open(state)
    }
    fn register_metrics(&mut self, metrics: &MetricGroup) {
        self.0.register_metrics(metrics)
    }
    fn process_element(
        &mut self,
        value: Self::In,
        ctx: &mut KeyedContext<'_, F::Key>,
        out: &mut Collector<'_, F::Out>,
    ) -> Result<(), OperatorError> {
        match value {
            Either::Left(a) => self.0.process_element1(a, ctx, out),
            Either::Right(b) => self.0.process_element2(b, ctx, out),
        }
    }
    fn on_timer(
        &mut self,
        t: i64,
        d: TimeDomain,
        ctx: &mut KeyedContext<'_, F::Key>,
        out: &mut Collector<'_, F::Out>,
    ) -> Result<(), OperatorError> {
        self.0.on_timer(t, d, ctx, out)
    }
}
