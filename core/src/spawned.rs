//! Ownership of spawned tokio tasks: a background task that must not outlive its owner, and a
//! task whose panic must be reported because nobody else would notice it.
//!
//! Both matter for exactly-once: a task of an ended attempt that keeps running (an upload, a
//! checkpoint coordinator, a frame forwarder) can write for a stale attempt, and a task that
//! panics without reporting leaves its peers waiting on channels it never closes.

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::sync::LockExt;

/// Aborts the spawned task when dropped: whatever holds it decides how long the task lives.
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Whether the task has ended (or was aborted).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// The handle, to await the task's result.
    pub fn handle(&mut self) -> &mut tokio::task::JoinHandle<T> {
        &mut self.0
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Background tasks spawned for one owner that must stop with it, and be seen to have stopped
/// (a task's checkpoint uploads: the attempt has not ended while one can still write). Clones
/// share the set; when the last clone goes, whatever still runs is aborted.
#[derive(Clone, Default)]
pub struct BackgroundTasks(Arc<BackgroundInner>);

#[derive(Default)]
struct BackgroundInner(Mutex<Vec<tokio::task::JoinHandle<()>>>);

impl BackgroundTasks {
    /// Spawns `task` into the set (forgetting the ones that have ended).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        let mut all = self.0 .0.locked();
        all.retain(|h| !h.is_finished());
        all.push(handle);
    }

    /// Aborts every task of the set and waits until each is gone (an abort takes effect at
    /// the task's next await, so a write under way completes first).
    pub async fn stop(&self) {
        let all = std::mem::take(&mut *self.0 .0.locked());
        for h in &all {
            h.abort();
        }
        for h in all {
            let _ = h.await;
        }
    }
}

impl Drop for BackgroundInner {
    fn drop(&mut self) {
        for h in self.0.get_mut().unwrap_or_else(|p| p.into_inner()).iter() {
            h.abort();
        }
    }
}

/// Calls `report` if the thread unwinds while the guard is armed: put one at the top of a
/// spawned task and [`PanicGuard::disarm`] it when the task returns normally.
pub struct PanicGuard<F: FnOnce()> {
    report: Option<F>,
}

impl<F: FnOnce()> PanicGuard<F> {
    /// An armed guard that runs `report` on a panic.
    pub fn new(report: F) -> Self {
        PanicGuard { report: Some(report) }
    }

    /// The task returned normally: nothing to report.
    pub fn disarm(mut self) {
        self.report = None;
    }
}

impl<F: FnOnce()> Drop for PanicGuard<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(report) = self.report.take() {
                report();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_panic_is_reported_once_and_a_normal_return_is_not() {
        let reported = Arc::new(AtomicBool::new(false));
        let r = reported.clone();
        let caught = std::panic::catch_unwind(move || {
            let _guard = PanicGuard::new(move || r.store(true, Ordering::SeqCst));
            panic!("boom");
        });
        assert!(caught.is_err());
        assert!(reported.load(Ordering::SeqCst));
        let quiet = Arc::new(AtomicBool::new(false));
        let q = quiet.clone();
        PanicGuard::new(move || q.store(true, Ordering::SeqCst)).disarm();
        assert!(!quiet.load(Ordering::SeqCst));
    }

    #[test]
    fn dropping_the_holder_aborts_the_task() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = AbortOnDrop(tokio::spawn(std::future::pending::<()>()));
            let handle = tokio::spawn(async {});
            handle.await.unwrap();
            drop(h);
            tokio::task::yield_now().await;
        });
    }

    #[test]
    fn stopping_background_tasks_waits_until_they_are_gone() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let set = BackgroundTasks::default();
            let alive = Arc::new(());
            for _ in 0..3 {
                let held = alive.clone();
                set.spawn(async move {
                    let _held = held;
                    std::future::pending::<()>().await;
                });
            }
            tokio::task::yield_now().await;
            assert_eq!(Arc::strong_count(&alive), 4);
            set.clone().stop().await;
            // Every task's future was dropped before stop returned.
            assert_eq!(Arc::strong_count(&alive), 1);
        });
    }
}
