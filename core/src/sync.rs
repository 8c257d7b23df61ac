//! Locks that outlive a panic.
//!
//! A `std::sync::Mutex` is poisoned when a thread panics while holding it. The locks of Sluice
//! guard tables (jobs, workers, deployments, connections, metrics) whose every critical
//! section is a single insert, remove or field update, so a panic elsewhere in a task cannot
//! leave them half-changed; treating poison as fatal would instead turn one panicking task
//! into a panic of every task that touches the table afterwards (the coordinator, the REST
//! API). So the guard is taken either way, and the panic is reported by the task that had it.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, taking the guard even if an earlier holder panicked.
pub trait LockExt<T> {
    /// The guard; see the module documentation for why poison is ignored.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_value() {
        let m = Mutex::new(1);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = m.lock().unwrap();
            panic!("poison it");
        }));
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
    }
}
