//! The window operator's timers, one per `(time, key, window)`: a window's firing (at its
//! last timestamp) and its cleanup (after the allowed lateness) are both timers.
//!
//! With heap state the timers are derived from the windows on restore and never stored. With
//! tiered state the windows are read lazily (a restore must not read them all), so the timers
//! are kept by key as well, in a copy-on-write map that a snapshot freezes in constant time
//! and stores beside the tiered manifest (as `functions::timers` does for process functions).
//! Unlike the window contents, the stored timers are written whole by every checkpoint.

use std::collections::BTreeSet;

use sluice_state::{CowMap, KeyedEntry, StateError, StateWriter};

use crate::data::Key;
use crate::window::TimeWindow;

/// The state table the timers are stored under (tiered state).
pub(crate) const WINDOW_TIMERS_TABLE: &str = "__window_timers";

/// A key's stored timers.
type TimersOfKey = Vec<(i64, TimeWindow)>;

/// When window `w` is dropped, given the allowed lateness.
pub(crate) fn cleanup_time(w: &TimeWindow, allowed_lateness_ms: i64) -> i64 {
    w.max_timestamp().saturating_add(allowed_lateness_ms)
}

pub(crate) struct WindowTimers<K> {
    /// Firing order: time, then key, then window (the same in every run).
    index: BTreeSet<(i64, K, TimeWindow)>,
    /// Tiered state only: the timers by key, what a snapshot stores.
    by_key: Option<CowMap<K, TimersOfKey>>,
}

impl<K: Key> WindowTimers<K> {
    pub(crate) fn new() -> Self {
        WindowTimers {
            index: BTreeSet::new(),
            by_key: None,
        }
    }

    /// Keeps the timers by key too, so that snapshots store them (tiered state).
    pub(crate) fn store_in_snapshots(&mut self) {
        self.by_key.get_or_insert_with(CowMap::new);
    }

    pub(crate) fn add(&mut self, t: i64, key: &K, w: TimeWindow) {
        if self.index.insert((t, key.clone(), w)) {
            if let Some(by_key) = &mut self.by_key {
                by_key.get_or_insert_with(key, Vec::new).push((t, w));
            }
        }
    }

    /// The earliest timer at or before `wm`, left in place.
    pub(crate) fn peek(&self, wm: i64) -> Option<&(i64, K, TimeWindow)> {
        self.index.first().filter(|(t, _, _)| *t <= wm)
    }

    /// Removes and returns the earliest timer at or before `wm`.
    pub(crate) fn pop(&mut self, wm: i64) -> Option<(i64, K, TimeWindow)> {
        self.peek(wm)?;
        let (t, key, w) = self.index.pop_first()?;
        if let Some(by_key) = &mut self.by_key {
            let now_empty = by_key.get_mut(&key).is_some_and(|list| {
                list.retain(|&(lt, lw)| !(lt == t && lw == w));
                list.is_empty()
            });
            if now_empty {
                by_key.remove(&key);
            }
        }
        Some((t, key, w))
    }

    /// The keys of the timers due at `wm`, in firing order, without firing them (what tiered
    /// state fetches before they fire).
    pub(crate) fn due_keys(&self, wm: i64) -> impl Iterator<Item = &K> {
        self.index
            .iter()
            .take_while(move |(t, _, _)| *t <= wm)
            .map(|(_, k, _)| k)
    }

    /// Freezes the stored timers (tiered state; `None` with heap state, which derives them);
    /// the returned closure writes them.
    pub(crate) fn freeze(
        &mut self,
    ) -> Option<impl FnOnce(&mut StateWriter) -> Result<(), StateError> + Send + 'static> {
        let frozen = self.by_key.as_mut()?.freeze();
        Some(move |w: &mut StateWriter| {
            let table = w.typed_table(WINDOW_TIMERS_TABLE, &timer_types::<K>());
            for (k, timers) in frozen.iter() {
                w.write_keyed(table, k, timers)?;
            }
            Ok(())
        })
    }

    /// Restores the stored timers of one key, if `e` is a timer entry. Cleanup times follow
    /// the allowed lateness of now (`lateness_ms`), not of when they were stored: a job may
    /// resume with another, and a window whose cleanup time matches no timer would never go.
    pub(crate) fn restore_entry(&mut self, e: &KeyedEntry<'_>, lateness_ms: i64) -> Result<bool, StateError> {
        if e.table != WINDOW_TIMERS_TABLE {
            return Ok(false);
        }
        sluice_state::check_types(e.table, e.types, &timer_types::<K>())?;
        let key: K = bincode::deserialize(e.key)
            .map_err(|err| StateError::Corrupt(format!("undecodable window timer key: {err}")))?;
        let timers: TimersOfKey = bincode::deserialize(e.value)
            .map_err(|err| StateError::Corrupt(format!("undecodable window timers: {err}")))?;
        for (t, w) in timers {
            if t == w.max_timestamp() {
                self.add(t, &key, w);
            }
            // Every stored window gets its cleanup (the same timer as its firing without
            // allowed lateness).
            self.add(cleanup_time(&w, lateness_ms), &key, w);
        }
        Ok(true)
    }
}

/// The `key => value` types of the timer table, checked on restore.
fn timer_types<K>() -> String {
    format!("{} => Vec<(i64, TimeWindow)>", std::any::type_name::<K>())
}

#[cfg(test)]
mod tests {
    use sluice_state::{KeyGroupRange, RestoredState};

    use super::*;

    fn w(start: i64) -> TimeWindow {
        TimeWindow { start, end: start + 10 }
    }

    /// Stores `timers` as a snapshot does and restores them with `lateness`.
    fn round_trip(timers: &mut WindowTimers<u64>, lateness: i64) -> WindowTimers<u64> {
        let mut out = StateWriter::new(4);
        timers.freeze().expect("kept by key")(&mut out).unwrap();
        let bytes = out.finish().unwrap();
        let mut r = RestoredState::empty();
        r.add_file("f", &bytes, KeyGroupRange { start: 0, end: 3 }).unwrap();
        let mut back = WindowTimers::new();
        r.for_each_keyed(|e| back.restore_entry(&e, lateness).map(|known| assert!(known)))
            .unwrap();
        back
    }

    fn drain(t: &mut WindowTimers<u64>) -> Vec<(i64, u64, TimeWindow)> {
        std::iter::from_fn(|| t.pop(i64::MAX)).collect()
    }

    #[test]
    fn timers_fire_in_order_and_only_kept_ones_are_stored() {
        let mut t = WindowTimers::new();
        t.store_in_snapshots();
        t.add(9, &2, w(0));
        t.add(9, &1, w(0));
        t.add(19, &1, w(10));
        t.add(9, &1, w(0)); // twice: one timer
        assert_eq!(t.due_keys(9).collect::<Vec<_>>(), [&1, &2]);
        assert_eq!(t.pop(9), Some((9, 1, w(0))));
        assert!(t.peek(8).is_none() && t.pop(8).is_none());
        // What fired is gone from the stored copy too.
        let mut back = round_trip(&mut t, 0);
        assert_eq!(drain(&mut back), [(9, 2, w(0)), (19, 1, w(10))]);
    }

    #[test]
    fn restored_cleanup_follows_the_allowed_lateness_of_now() {
        let mut t = WindowTimers::new();
        t.store_in_snapshots();
        // Stored with a lateness of 5: w(0) not fired yet, w(10) fired (cleanup only).
        t.add(9, &1, w(0));
        t.add(14, &1, w(0));
        t.add(24, &1, w(10));
        let mut back = round_trip(&mut t, 100);
        assert_eq!(drain(&mut back), [(9, 1, w(0)), (109, 1, w(0)), (119, 1, w(10))]);
        // Without lateness, a window's cleanup is its firing: one timer each.
        let mut back = round_trip(&mut t, 0);
        assert_eq!(drain(&mut back), [(9, 1, w(0)), (19, 1, w(10))]);
    }

    #[test]
    fn heap_state_stores_no_timers() {
        let mut t: WindowTimers<u64> = WindowTimers::new();
        t.add(9, &1, w(0));
        assert!(t.freeze().is_none());
    }
}
