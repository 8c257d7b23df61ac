//! The window operator's timers, one per `(time, key, window)`: a window's firing (at its
//! last timestamp) and its cleanup (after the allowed lateness) are both timers.
//!
//! With heap state the timers are derived from the windows on restore and never stored. With
//! tiered state the windows are read lazily (a restore must not read them all), so the timers
//! are kept by key as well, in a copy-on-write map that a snapshot freezes in constant time
//! and stores beside the tiered manifest (as `functions::timers` does for process functions).

use std::collections::BTreeSet;

use sluice_state::{CowMap, KeyedEntry, StateError, StateWriter};

use crate::data::Key;
use crate::window::TimeWindow;

/// The state table the timers are stored under (tiered state).
pub(crate) const WINDOW_TIMERS_TABLE: &str = "__window_timers";

/// A key's stored timers.
type TimersOfKey = Vec<(i64, TimeWindow)>;

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
        self.index.iter().take_while(move |(t, _, _)| *t <= wm).map(|(_, k, _)| k)
    }

    /// Freezes the stored timers (tiered state; `None` with heap state, which derives them);
    /// the returned closure writes them.
    pub(crate) fn freeze(&mut self) -> Option<impl FnOnce(&mut StateWriter) -> Result<(), StateError> + Send + 'static> {
        let frozen = self.by_key.as_mut()?.freeze();
        Some(move |w: &mut StateWriter| {
            let table = w.typed_table(WINDOW_TIMERS_TABLE, &timer_types::<K>());
            for (k, timers) in frozen.iter() {
                w.write_keyed(table, k, timers)?;
            }
            Ok(())
        })
    }

    /// Restores the stored timers of one key, if `e` is a timer entry.
    pub(crate) fn restore_entry(&mut self, e: &KeyedEntry<'_>) -> Result<bool, StateError> {
        if e.table != WINDOW_TIMERS_TABLE {
            return Ok(false);
        }
        sluice_state::check_types(e.table, e.types, &timer_types::<K>())?;
        let key: K = bincode::deserialize(e.key)
            .map_err(|err| StateError::Corrupt(format!("undecodable window timer key: {err}")))?;
        let timers: TimersOfKey = bincode::deserialize(e.value)
            .map_err(|err| StateError::Corrupt(format!("undecodable window timers: {err}")))?;
        for (t, w) in timers {
            self.add(t, &key, w);
        }
        Ok(true)
    }
}

/// The `key => value` types of the timer table, checked on restore.
fn timer_types<K>() -> String {
    format!("{} => Vec<(i64, TimeWindow)>", std::any::type_name::<K>())
}
