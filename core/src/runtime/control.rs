//! The job-control signal (run / drain / cancel) that every task of an attempt watches.
//!
//! Like `tokio::sync::watch` but deterministic: tokio's watch spreads its waiters over eight
//! `Notify`s chosen by a thread-local random number that the simulator does not seed, so the
//! order in which tasks wake after a cancel differed between two runs of the same seed. This
//! one wakes waiters through a single `Notify`, in the order they started waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::JobControl;
use crate::sync::LockExt;

struct Shared {
    /// The value and how often it was set.
    value: Mutex<(JobControl, u64)>,
    changed: Notify,
    sender_gone: AtomicBool,
}

impl Shared {
    fn get(&self) -> (JobControl, u64) {
        *self.value.locked()
    }
}

/// Sets the signal.
pub(crate) struct ControlSender {
    shared: Arc<Shared>,
}

/// Reads the signal and waits for changes; cheap to clone.
#[derive(Clone)]
pub(crate) struct ControlReceiver {
    shared: Arc<Shared>,
    seen: u64,
}

impl std::fmt::Debug for ControlSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlSender({:?})", self.shared.get().0)
    }
}

impl std::fmt::Debug for ControlReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlReceiver({:?})", self.shared.get().0)
    }
}

/// The sender is gone: the value will not change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// A new signal starting at `initial`.
pub(crate) fn channel(initial: JobControl) -> (ControlSender, ControlReceiver) {
    let shared = Arc::new(Shared {
        value: Mutex::new((initial, 0)),
        changed: Notify::new(),
        sender_gone: AtomicBool::new(false),
    });
    (
        ControlSender { shared: shared.clone() },
        ControlReceiver { shared, seen: 0 },
    )
}

impl ControlSender {
    /// Sets the signal and wakes every waiter.
    pub(crate) fn send(&self, value: JobControl) {
        {
            let mut v = self.shared.value.locked();
            v.0 = value;
            v.1 += 1;
        }
        self.shared.changed.notify_waiters();
    }
}

impl Drop for ControlSender {
    fn drop(&mut self) {
        self.shared.sender_gone.store(true, Ordering::SeqCst);
        self.shared.changed.notify_waiters();
    }
}

/// The current value, as `*receiver.borrow()`.
pub(crate) struct ControlValue(JobControl);

impl std::ops::Deref for ControlValue {
    type Target = JobControl;
    fn deref(&self) -> &JobControl {
        &self.0
    }
}

impl ControlReceiver {
    /// The current value.
    pub(crate) fn borrow(&self) -> ControlValue {
        ControlValue(self.shared.get().0)
    }

    /// Waits until the value was set since this receiver last looked.
    pub(crate) async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change in between is not missed.
            notified.as_mut().enable();
            let (_, version) = self.shared.get();
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.sender_gone.load(Ordering::SeqCst) {
                return Err(Closed);
            }
            notified.await;
        }
    }

    /// Waits until the value satisfies `f`, and returns it.
    pub(crate) async fn wait_for(&mut self, f: impl Fn(&JobControl) -> bool) -> Result<JobControl, Closed> {
        loop {
            let (value, version) = self.shared.get();
            self.seen = version;
            if f(&value) {
                return Ok(value);
            }
            self.changed().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_see_changes_and_the_sender_going_away() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = channel(JobControl::Run);
            let mut rx2 = rx.clone();
            let waiter = tokio::spawn(async move { rx2.wait_for(|c| *c == JobControl::Cancel).await });
            tx.send(JobControl::Drain);
            rx.changed().await.unwrap();
            assert_eq!(*rx.borrow(), JobControl::Drain);
            tx.send(JobControl::Cancel);
            assert_eq!(waiter.await.unwrap(), Ok(JobControl::Cancel));
            drop(tx);
            rx.changed().await.unwrap();
            assert_eq!(rx.changed().await, Err(Closed));
        });
    }
}
