//! Per-key timers of a keyed operator, in event time and in processing time.
//!
//! Two ordered indexes decide firing order (time, then key, so it is the same in every run);
//! a copy-on-write map from key to its timers is what a snapshot freezes, so the synchronous
//! part of a snapshot does not grow with the number of timers. The indexes are rebuilt from
//! the map on restore.

use std::collections::BTreeSet;

use sluice_state::{CowMap, KeyedEntry, StateError, StateKey, StateWriter};

/// The state table timers are stored under.
pub(crate) const TIMERS_TABLE: &str = "__timers";

#[derive(Debug)]
pub(crate) struct TimerService<K> {
    event: BTreeSet<(i64, K)>,
    processing: BTreeSet<(i64, K)>,
    /// Per key: `(time, is_event_time)`.
    by_key: CowMap<K, Vec<(i64, bool)>>,
    /// The timer table's `key => value` types (made once, checked per restored entry).
    signature: String,
}

impl<K: StateKey + Ord> Default for TimerService<K> {
    fn default() -> Self {
        TimerService {
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
            by_key: CowMap::new(),
            signature: timer_types::<K>(),
        }
    }
}

impl<K: StateKey + Ord> TimerService<K> {
    fn add(&mut self, t: i64, key: &K, event: bool) {
        let index = if event { &mut self.event } else { &mut self.processing };
        if index.insert((t, key.clone())) {
            self.by_key.get_or_insert_with(key, Vec::new).push((t, event));
        }
    }

    fn forget(&mut self, t: i64, key: &K, event: bool) {
        let now_empty = match self.by_key.get_mut(key) {
            Some(list) => {
                list.retain(|&(lt, le)| !(lt == t && le == event));
                list.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.by_key.remove(key);
        }
    }

    pub(crate) fn register_event(&mut self, t: i64, key: &K) {
        self.add(t, key, true)
    }

    pub(crate) fn delete_event(&mut self, t: i64, key: &K) {
        if self.event.remove(&(t, key.clone())) {
            self.forget(t, key, true);
        }
    }

    pub(crate) fn register_processing(&mut self, t: i64, key: &K) {
        self.add(t, key, false)
    }

    pub(crate) fn delete_processing(&mut self, t: i64, key: &K) {
        if self.processing.remove(&(t, key.clone())) {
            self.forget(t, key, false);
        }
    }

    /// The earliest event-time timer at or before `wm`, left in place.
    pub(crate) fn peek_event(&self, wm: i64) -> Option<(i64, &K)> {
        self.event.first().filter(|(t, _)| *t <= wm).map(|(t, k)| (*t, k))
    }

    /// The earliest processing-time timer at or before `now`, left in place.
    pub(crate) fn peek_processing(&self, now: i64) -> Option<(i64, &K)> {
        self.processing.first().filter(|(t, _)| *t <= now).map(|(t, k)| (*t, k))
    }

    /// Removes and returns the earliest event-time timer at or before `wm`.
    pub(crate) fn pop_event(&mut self, wm: i64) -> Option<(i64, K)> {
        if self.event.first().is_some_and(|(t, _)| *t <= wm) {
            let (t, k) = self.event.pop_first()?;
            self.forget(t, &k, true);
            return Some((t, k));
        }
        None
    }

    /// Removes and returns the earliest processing-time timer at or before `now`.
    pub(crate) fn pop_processing(&mut self, now: i64) -> Option<(i64, K)> {
        if self.processing.first().is_some_and(|(t, _)| *t <= now) {
            let (t, k) = self.processing.pop_first()?;
            self.forget(t, &k, false);
            return Some((t, k));
        }
        None
    }

    /// The keys of the event-time timers due at watermark `wm`, without firing them (what
    /// tiered state fetches before they fire).
    pub(crate) fn due_event_keys(&self, wm: i64) -> impl Iterator<Item = &K> {
        self.event.iter().take_while(move |(t, _)| *t <= wm).map(|(_, k)| k)
    }

    /// The keys of the processing-time timers due at `now`, without firing them.
    pub(crate) fn due_processing_keys(&self, now: i64) -> impl Iterator<Item = &K> {
        self.processing
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, k)| k)
    }

    pub(crate) fn next_processing(&self) -> Option<i64> {
        self.processing.first().map(|(t, _)| *t)
    }

    /// Freezes the timers; the returned closure writes them.
    pub(crate) fn freeze(&mut self) -> impl FnOnce(&mut StateWriter) -> Result<(), StateError> + Send + 'static {
        let frozen = self.by_key.freeze();
        let signature = self.signature.clone();
        move |w: &mut StateWriter| {
            let table = w.typed_table(TIMERS_TABLE, &signature);
            for (k, timers) in frozen.iter() {
                w.write_keyed(table, k, timers)?;
            }
            Ok(())
        }
    }

    /// Restores the timers of one key, if `e` is a timer entry.
    pub(crate) fn restore_entry(&mut self, e: &KeyedEntry<'_>) -> Result<bool, StateError> {
        if e.table != TIMERS_TABLE {
            return Ok(false);
        }
        sluice_state::check_types(e.table, e.types, &self.signature)?;
        let key: K =
            bincode::deserialize(e.key).map_err(|err| StateError::Corrupt(format!("undecodable timer key: {err}")))?;
        let timers: Vec<(i64, bool)> =
            bincode::deserialize(e.value).map_err(|err| StateError::Corrupt(format!("undecodable timers: {err}")))?;
        for (t, event) in timers {
            self.add(t, &key, event);
        }
        Ok(true)
    }
}

/// The `key => value` types of the timer table, checked on restore.
fn timer_types<K>() -> String {
    format!("{} => Vec<(i64, bool)>", std::any::type_name::<K>())
}
