//! The keyed event-time window operator.
//!
//! Each key keeps its open windows with their contents, as one value of keyed state (so they
//! live in whichever backend the job runs with). A window fires when the watermark reaches
//! its last timestamp, and is dropped once the watermark passes it by the allowed lateness.
//! Records that arrive for a window that was already dropped are late: they are counted
//! (`late_records_dropped`) and discarded. Records that arrive after a window fired but within
//! the allowed lateness update it and fire it again, as in Flink.
//!
//! With tiered state every call is prepared, as for process functions: the keys of the batch,
//! or of the timers about to fire (a chunk at a time), are fetched before the synchronous
//! call.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_state::{KeyedStateStore, RestoredState, StateError, ValueState};

use super::timers::{cleanup_time, WindowTimers};
use crate::data::{Key, Record};
use crate::error::OperatorError;
use crate::operator::{AsyncSnapshot, BoxFuture, Operator, OperatorContext, Prepare};
use crate::operators::{fetch_keys, flush_for_snapshot, restore_keyed, restore_manifests, use_backend};
use crate::window::{TimeWindow, WindowAssigner, WindowLogic};

/// The state the windows are stored under (its table in snapshots and savepoints).
const WINDOWS_TABLE: &str = "windows";

/// Timers whose keys one preparation fetches (tiered state).
const TIMER_CHUNK: usize = 4096;

/// The open windows of one key.
type WindowsOf<A> = BTreeMap<TimeWindow, Slot<A>>;

/// One open window: its contents, and whether it already fired (then it only waits for the
/// allowed lateness to pass, and must not fire again on restore).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot<A> {
    acc: A,
    fired: bool,
}

pub(crate) struct WindowOperator<K: Key, L: WindowLogic<K>, KF> {
    assigner: WindowAssigner,
    allowed_lateness_ms: i64,
    logic: L,
    key_of: KF,
    store: KeyedStateStore<K>,
    windows: Option<ValueState<WindowsOf<L::Acc>>>,
    timers: WindowTimers<K>,
    /// Tiered state: the keys whose timers the last preparation fetched (timers of other keys
    /// wait for the next one).
    prepared: BTreeSet<K>,
}

impl<K: Key, L: WindowLogic<K>, KF: Clone> Clone for WindowOperator<K, L, KF> {
    fn clone(&self) -> Self {
        WindowOperator::new(
            self.assigner,
            self.allowed_lateness_ms,
            self.logic.clone(),
            self.key_of.clone(),
        )
    }
}

impl<K: Key, L: WindowLogic<K>, KF> WindowOperator<K, L, KF> {
    pub(crate) fn new(assigner: WindowAssigner, allowed_lateness_ms: i64, logic: L, key_of: KF) -> Self {
        WindowOperator {
            assigner,
            allowed_lateness_ms,
            logic,
            key_of,
            store: KeyedStateStore::new(),
            windows: None,
            timers: WindowTimers::new(),
            prepared: BTreeSet::new(),
        }
    }

    fn windows(&self) -> ValueState<WindowsOf<L::Acc>> {
        self.windows.expect("registered when the operator opens")
    }

    fn is_late(&self, w: &TimeWindow, wm: i64) -> bool {
        cleanup_time(w, self.allowed_lateness_ms) <= wm
    }

    fn register(&mut self, key: &K, w: TimeWindow) {
        self.timers.add(w.max_timestamp(), key, w);
        if self.allowed_lateness_ms > 0 {
            self.timers.add(cleanup_time(&w, self.allowed_lateness_ms), key, w);
        }
    }

    /// Adds `v` to windows `ws` of `key` (one state access for all of them); fires each at
    /// once if the watermark already passed it.
    fn add_to(&mut self, key: &K, ws: &[TimeWindow], v: L::In, wm: i64, out: &mut Vec<Record<L::Out>>) {
        let h = self.windows();
        let logic = &mut self.logic;
        let fresh: Vec<TimeWindow> = self.store.update_value(h, key, |per_key| {
            let mut fresh = Vec::new();
            let (&last, rest) = ws.split_last().expect("called with at least one window");
            let mut add = |w: TimeWindow, v: L::In| {
                let slot = per_key.entry(w).or_insert_with(|| {
                    fresh.push(w);
                    Slot {
                        acc: logic.create(),
                        fired: false,
                    }
                });
                logic.add(&mut slot.acc, v);
                if w.max_timestamp() <= wm {
                    logic.emit(key, w, &slot.acc, out);
                    slot.fired = true;
                }
            };
            for &w in rest {
                add(w, v.clone());
            }
            add(last, v);
            fresh
        });
        for w in fresh {
            self.register(key, w);
        }
    }

    /// Adds `v` to the session window `own` of `key`, merged with the windows it overlaps
    /// (one state access); false if the merged window is already late.
    fn add_session(&mut self, key: &K, own: TimeWindow, v: L::In, wm: i64, out: &mut Vec<Record<L::Out>>) -> bool {
        let (h, lateness) = (self.windows(), self.allowed_lateness_ms);
        let logic = &mut self.logic;
        let merged = self.store.modify_value(h, key, |windows| {
            let overlapping: Vec<TimeWindow> = match windows {
                Some(per_key) => per_key.keys().filter(|w| w.intersects(&own)).copied().collect(),
                None => Vec::new(),
            };
            let merged = overlapping.iter().fold(own, |m, w| m.cover(w));
            if cleanup_time(&merged, lateness) <= wm {
                return None; // late: nothing changes
            }
            let per_key = windows.get_or_insert_with(WindowsOf::default);
            let mut acc = logic.create();
            for w in &overlapping {
                let old = per_key.remove(w).expect("listed just above");
                acc = logic.merge(acc, old.acc);
            }
            logic.add(&mut acc, v);
            let fired = merged.max_timestamp() <= wm;
            if fired {
                logic.emit(key, merged, &acc, out);
            }
            per_key.insert(merged, Slot { acc, fired });
            Some(merged)
        });
        let Some(merged) = merged else { return false };
        // Timers of the windows that merged away stay queued; they find no window and do
        // nothing, which is cheaper than finding and removing them.
        self.register(key, merged);
        true
    }

    /// Fires or drops window `w` of `key` for its timer at `t`.
    fn on_timer(&mut self, t: i64, key: &K, w: TimeWindow, out: &mut Vec<Record<L::Out>>) {
        let (h, lateness) = (self.windows(), self.allowed_lateness_ms);
        let logic = &mut self.logic;
        // In place (one lookup on the heap); the key's entry goes once its last window does.
        let now_empty = self.store.update_value(h, key, |per_key| {
            if let Some(slot) = per_key.get_mut(&w) {
                if t == w.max_timestamp() && !slot.fired {
                    logic.emit(key, w, &slot.acc, out);
                    slot.fired = true;
                }
                if t == cleanup_time(&w, lateness) {
                    per_key.remove(&w);
                }
            }
            per_key.is_empty()
        });
        if now_empty {
            self.store.take_value(h, key);
        }
    }

    /// A failed tiered read or write: the task fails before this call's output leaves.
    fn check_state(&mut self) -> Result<(), OperatorError> {
        match self.store.take_failure() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl<K, L, KF> WindowOperator<K, L, KF>
where
    K: Key,
    L: WindowLogic<K>,
    KF: Fn(&L::In) -> K + Send + 'static,
{
    async fn prepare_step(&mut self, step: Prepare<'_, L::In>, ctx: &OperatorContext) -> Result<(), OperatorError> {
        match step {
            Prepare::Batch(batch) => {
                let keys: Vec<K> = batch.iter().map(|r| (self.key_of)(&r.value)).collect();
                fetch_keys(&mut self.store, &keys).await?;
            }
            Prepare::Watermark => {
                // Windows fire chunk after chunk on a large watermark jump.
                self.prepared = self
                    .timers
                    .due_keys(ctx.watermark.0)
                    .take(TIMER_CHUNK)
                    .cloned()
                    .collect();
                let keys: Vec<K> = self.prepared.iter().cloned().collect();
                fetch_keys(&mut self.store, &keys).await?;
            }
            Prepare::Snapshot(_) => flush_for_snapshot(&mut self.store, &ctx.log).await,
            Prepare::ProcessingTime(_) => self.store.release(),
        }
        Ok(())
    }
}

/// Derives the timers of `key`'s restored `windows` (from a heap snapshot or a savepoint): a
/// window that fired before the snapshot waits only for its cleanup.
fn derive_timers<K: Key, A>(timers: &mut WindowTimers<K>, key: &K, windows: &WindowsOf<A>, lateness: i64) {
    for (w, slot) in windows {
        if !slot.fired {
            timers.add(w.max_timestamp(), key, *w);
        }
        if lateness > 0 || slot.fired {
            timers.add(cleanup_time(w, lateness), key, *w);
        }
    }
}

impl<K, L, KF> Operator for WindowOperator<K, L, KF>
where
    K: Key,
    L: WindowLogic<K>,
    KF: Fn(&L::In) -> K + Send + 'static,
{
    type In = L::In;
    type Out = L::Out;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        use_backend(&mut self.store, ctx);
        if self.store.is_tiered() {
            self.timers.store_in_snapshots();
        }
        self.windows = Some(self.store.value_state(WINDOWS_TABLE)?);
        Ok(())
    }

    fn wants_prepare(&self) -> bool {
        self.store.is_tiered()
    }

    fn prepare<'a>(
        &'a mut self,
        step: Prepare<'a, Self::In>,
        ctx: &'a mut OperatorContext,
    ) -> BoxFuture<'a, Result<(), OperatorError>> {
        Box::pin(self.prepare_step(step, ctx))
    }

    fn snapshot_state(&mut self, _id: u64, _ctx: &mut OperatorContext) -> Result<Option<AsyncSnapshot>, OperatorError> {
        let state = self.store.freeze();
        let timers = self.timers.freeze();
        Ok(Some(Box::new(move |w| {
            state.write(w)?;
            if let Some(timers) = timers {
                timers(w)?;
            }
            Ok(())
        })))
    }

    fn restore_state(&mut self, state: &RestoredState, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        restore_manifests(&mut self.store, state, ctx)?;
        let declared = window_types::<K, L::Acc>();
        let (h, lateness) = (self.windows(), self.allowed_lateness_ms);
        let (store, timers) = (&mut self.store, &mut self.timers);
        restore_keyed(state, |e| {
            if timers.restore_entry(e, lateness)? {
                return Ok(true);
            }
            if e.table != WINDOWS_TABLE {
                return Ok(false);
            }
            sluice_state::check_types(e.table, e.types, &declared)?;
            let key: K = bincode::deserialize(e.key)
                .map_err(|err| StateError::Corrupt(format!("undecodable window key: {err}")))?;
            let windows: WindowsOf<L::Acc> = bincode::deserialize(e.value)
                .map_err(|err| StateError::Corrupt(format!("undecodable window contents: {err}")))?;
            derive_timers(timers, &key, &windows, lateness);
            store.set_value(h, &key, windows);
            Ok(true)
        })?;
        self.check_state()
    }

    fn process(
        &mut self,
        batch: Vec<Record<L::In>>,
        ctx: &mut OperatorContext,
        out: &mut Vec<Record<L::Out>>,
    ) -> Result<(), OperatorError> {
        let wm = ctx.watermark.0;
        let mut late = 0u64;
        let mut assigned: Vec<TimeWindow> = Vec::new();
        for r in batch {
            if !r.ts.is_set() {
                return Err(OperatorError::MissingTimestamp(ctx.vertex_name.clone()));
            }
            let key = (self.key_of)(&r.value);
            let ts = r.ts.0;
            if self.assigner.is_merging() {
                let own = TimeWindow {
                    start: ts,
                    end: ts.saturating_add(match self.assigner {
                        WindowAssigner::Session { gap } => gap,
                        _ => unreachable!("only sessions merge"),
                    }),
                };
                if !self.add_session(&key, own, r.value, wm, out) {
                    late += 1;
                }
                continue;
            }
            assigned.clear();
            self.assigner.assign(ts, |w| assigned.push(w));
            if assigned.is_empty() {
                // Between sliding windows shorter than their slide: in no window, not late.
                continue;
            }
            assigned.retain(|w| !self.is_late(w, wm));
            if assigned.is_empty() {
                late += 1;
                continue;
            }
            self.add_to(&key, &assigned, r.value, wm, out);
        }
        if late > 0 {
            ctx.count_late_records(late);
        }
        self.check_state()
    }

    fn on_watermark(&mut self, ctx: &mut OperatorContext, out: &mut Vec<Record<L::Out>>) -> Result<(), OperatorError> {
        let wm = ctx.watermark.0;
        while let Some((_, key, _)) = self.timers.peek(wm) {
            if self.store.is_tiered() && !self.prepared.contains(key) {
                break; // fetched by the next preparation
            }
            let (t, key, w) = self.timers.pop(wm).expect("peeked just above");
            self.on_timer(t, &key, w, out);
        }
        self.check_state()
    }

    fn timers_left(&self, ctx: &OperatorContext) -> bool {
        self.store.is_tiered() && self.timers.peek(ctx.watermark.0).is_some()
    }
}

/// The `key => value` types of the window table, checked on restore (the same string the
/// keyed state store declares for the state, so heap snapshots and savepoints of either
/// backend restore).
fn window_types<K, A>() -> String {
    format!(
        "{} => {}",
        std::any::type_name::<K>(),
        std::any::type_name::<WindowsOf<A>>()
    )
}
