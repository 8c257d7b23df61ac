//! Ownership of spawned tokio tasks: a background task that must not outlive its owner, and a
//! task whose panic must be reported because nobody else would notice it.
//!
//! Both matter for exactly-once: a task of an ended attempt that keeps running (an upload, a
//! checkpoint coordinator, a frame forwarder) can write for a stale attempt, and a task that
//! panics without reporting leaves its peers waiting on channels it never closes.

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
}
