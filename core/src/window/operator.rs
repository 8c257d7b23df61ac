//! The keyed event-time window operator.
//!
//! Each key keeps its open windows with their contents. A window fires when the watermark
//! reaches its last timestamp, and is dropped once the watermark passes it by the allowed
//! lateness. Records that arrive for a window that was already dropped are late: they are
//! counted (`late_records_dropped`) and discarded. Records that arrive after a window fired but
//! within the allowed lateness update it and fire it again, as in Flink.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_state::{CowMap, RestoredState, StateError};

use crate::data::{Key, Record};
use crate::error::OperatorError;
use crate::operator::{AsyncSnapshot, Operator, OperatorContext};
use crate::operators::restore_keyed;
use crate::window::{TimeWindow, WindowAssigner, WindowLogic};

/// The state table windows are stored under.
const WINDOWS_TABLE: &str = "windows";

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
    windows: CowMap<K, BTreeMap<TimeWindow, Slot<L::Acc>>>,
    /// (time, key, window): both firing (at the window's last timestamp) and cleanup (after
    /// the allowed lateness) are entries here.
    timers: BTreeSet<(i64, K, TimeWindow)>,
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
            windows: CowMap::new(),
            timers: BTreeSet::new(),
        }
    }

    fn cleanup_time(&self, w: &TimeWindow) -> i64 {
        w.max_timestamp().saturating_add(self.allowed_lateness_ms)
    }

    fn is_late(&self, w: &TimeWindow, wm: i64) -> bool {
        self.cleanup_time(w) <= wm
    }

    fn register(&mut self, key: &K, w: TimeWindow) {
        self.timers.insert((w.max_timestamp(), key.clone(), w));
        if self.allowed_lateness_ms > 0 {
            self.timers.insert((self.cleanup_time(&w), key.clone(), w));
        }
    }

    /// Adds `v` to window `w` of `key`; fires it at once if the watermark already passed it.
    fn add_to(&mut self, key: &K, w: TimeWindow, v: L::In, wm: i64, out: &mut Vec<Record<L::Out>>) {
        let per_key = self.windows.get_or_insert_with(key, BTreeMap::new);
        let fresh = !per_key.contains_key(&w);
        let slot = per_key.entry(w).or_insert_with(|| Slot {
            acc: self.logic.create(),
            fired: false,
        });
        self.logic.add(&mut slot.acc, v);
        if w.max_timestamp() <= wm {
            self.logic.emit(key, w, &slot.acc, out);
            slot.fired = true;
        }
        if fresh {
            self.register(key, w);
        }
    }

    fn add_session(&mut self, key: &K, own: TimeWindow, v: L::In, wm: i64, out: &mut Vec<Record<L::Out>>) -> bool {
        let overlapping: Vec<TimeWindow> = match self.windows.get(key) {
            Some(per_key) => per_key.keys().filter(|w| w.intersects(&own)).copied().collect(),
            None => Vec::new(),
        };
        let merged = overlapping.iter().fold(own, |m, w| m.cover(w));
        if self.cleanup_time(&merged) <= wm {
            return false;
        }
        let per_key = self.windows.get_or_insert_with(key, BTreeMap::new);
        let mut acc = self.logic.create();
        for w in &overlapping {
            let old = per_key.remove(w).expect("listed just above");
            acc = self.logic.merge(acc, old.acc);
        }
        self.logic.add(&mut acc, v);
        let fired = merged.max_timestamp() <= wm;
        if fired {
            self.logic.emit(key, merged, &acc, out);
        }
        per_key.insert(merged, Slot { acc, fired });
        // Timers of the windows that merged away stay queued; they find no window and do
        // nothing, which is cheaper than finding and removing them.
        self.register(key, merged);
        true
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

    fn snapshot_state(&mut self, _id: u64, _ctx: &mut OperatorContext) -> Result<Option<AsyncSnapshot>, OperatorError> {
        let frozen = self.windows.freeze();
        Ok(Some(Box::new(move |w| {
            let table = w.typed_table(WINDOWS_TABLE, &window_types::<K, L::Acc>());
            for (k, windows) in frozen.iter() {
                w.write_keyed(table, k, windows)?;
            }
            Ok(())
        })))
    }

    fn restore_state(&mut self, state: &RestoredState, _ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        let mut restored: Vec<(K, WindowsOf<L::Acc>)> = Vec::new();
        let declared = window_types::<K, L::Acc>();
        restore_keyed(state, |e| {
            if e.table != WINDOWS_TABLE {
                return Ok(false);
            }
            sluice_state::check_types(e.table, e.types, &declared)?;
            let key: K = bincode::deserialize(e.key)
                .map_err(|err| StateError::Corrupt(format!("undecodable window key: {err}")))?;
            let windows = bincode::deserialize(e.value)
                .map_err(|err| StateError::Corrupt(format!("undecodable window contents: {err}")))?;
            restored.push((key, windows));
            Ok(true)
        })?;
        for (key, windows) in restored {
            // Timers are derived from the windows: a window that fired before the checkpoint
            // waits only for its cleanup.
            for (w, slot) in &windows {
                if !slot.fired {
                    self.timers.insert((w.max_timestamp(), key.clone(), *w));
                }
                if self.allowed_lateness_ms > 0 || slot.fired {
                    self.timers.insert((self.cleanup_time(w), key.clone(), *w));
                }
            }
            self.windows.insert(key, windows);
        }
        Ok(())
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
            let (&last, rest) = assigned.split_last().expect("checked non-empty above");
            for &w in rest {
                self.add_to(&key, w, r.value.clone(), wm, out);
            }
            self.add_to(&key, last, r.value, wm, out);
        }
        if late > 0 {
            ctx.count_late_records(late);
        }
        Ok(())
    }

    fn on_watermark(&mut self, ctx: &mut OperatorContext, out: &mut Vec<Record<L::Out>>) -> Result<(), OperatorError> {
        let wm = ctx.watermark.0;
        while self.timers.first().is_some_and(|(t, _, _)| *t <= wm) {
            let (t, key, w) = self.timers.pop_first().expect("checked non-empty");
            let Some(per_key) = self.windows.get_mut(&key) else {
                continue;
            };
            let Some(slot) = per_key.get_mut(&w) else {
                continue;
            };
            if t == w.max_timestamp() && !slot.fired {
                self.logic.emit(&key, w, &slot.acc, out);
                slot.fired = true;
            }
            if t == w.max_timestamp().saturating_add(self.allowed_lateness_ms) {
                per_key.remove(&w);
                if per_key.is_empty() {
                    self.windows.remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// The `key => value` types of the window table, checked on restore.
fn window_types<K, A>() -> String {
    format!(
        "{} => {}",
        std::any::type_name::<K>(),
        std::any::type_name::<WindowsOf<A>>()
    )
}
