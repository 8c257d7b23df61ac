//! Per-key timers of a keyed operator, in event time and in processing time.

use std::collections::BTreeSet;

/// Timers ordered by time and then key, so they fire in the same order in every run.
#[derive(Debug)]
pub(crate) struct TimerService<K> {
    event: BTreeSet<(i64, K)>,
    processing: BTreeSet<(i64, K)>,
}

impl<K: Ord + Clone> Default for TimerService<K> {
    fn default() -> Self {
        TimerService {
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> TimerService<K> {
    pub(crate) fn register_event(&mut self, t: i64, key: &K) {
        self.event.insert((t, key.clone()));
    }

    pub(crate) fn delete_event(&mut self, t: i64, key: &K) {
        self.event.remove(&(t, key.clone()));
    }

    pub(crate) fn register_processing(&mut self, t: i64, key: &K) {
        self.processing.insert((t, key.clone()));
    }

    pub(crate) fn delete_processing(&mut self, t: i64, key: &K) {
        self.processing.remove(&(t, key.clone()));
    }

    /// Removes and returns the earliest event-time timer at or before `wm`.
    pub(crate) fn pop_event(&mut self, wm: i64) -> Option<(i64, K)> {
        if self.event.first().is_some_and(|(t, _)| *t <= wm) {
            return self.event.pop_first();
        }
        None
    }

    /// Removes and returns the earliest processing-time timer at or before `now`.
    pub(crate) fn pop_processing(&mut self, now: i64) -> Option<(i64, K)> {
        if self.processing.first().is_some_and(|(t, _)| *t <= now) {
            return self.processing.pop_first();
        }
        None
    }

    pub(crate) fn next_processing(&self) -> Option<i64> {
        self.processing.first().map(|(t, _)| *t)
    }
}
