//! The running tasks of one attempt in this process: spawned together, each reporting how it
//! ended (a panic too, which would otherwise go unnoticed while its peers wait on channels it
//! never closes), and stopped together when the attempt ends.

use tokio::sync::mpsc;

use crate::error::JobError;
use crate::runtime::task::{Task, TaskExit};
use crate::spawned::{AbortOnDrop, BackgroundTasks, PanicGuard};

/// How one task ended: its number in the attempt and its result.
pub(crate) type TaskDone = (usize, Result<TaskExit, JobError>);

/// See the module documentation.
pub(crate) struct TaskSet {
    handles: Vec<AbortOnDrop<()>>,
    /// The tasks' checkpoint uploads: stopped after the tasks, so none writes afterwards.
    uploads: Vec<BackgroundTasks>,
    done: mpsc::UnboundedReceiver<TaskDone>,
}

impl TaskSet {
    /// Spawns `tasks` (numbered as the attempt numbers them).
    pub(crate) fn spawn(tasks: Vec<(usize, Task)>) -> Self {
        let (tx, done) = mpsc::unbounded_channel();
        let uploads = tasks.iter().map(|(_, t)| t.uploads.clone()).collect();
        let handles = tasks
            .into_iter()
            .map(|(n, task)| {
                let tx = tx.clone();
                let name = task.name.clone();
                AbortOnDrop(tokio::spawn(async move {
                    let report = tx.clone();
                    let guard = PanicGuard::new(move || {
                        let panicked = JobError::TaskPanicked {
                            task: name,
                            message: "panicked".into(),
                        };
                        let _ = report.send((n, Err(panicked)));
                    });
                    let r = task.run().await;
                    guard.disarm();
                    let _ = tx.send((n, r));
                }))
            })
            .collect();
        TaskSet { handles, uploads, done }
    }

    /// The next task to end; `None` once every task has reported.
    pub(crate) async fn next(&mut self) -> Option<TaskDone> {
        self.done.recv().await
    }

    /// Stops every task still running and their uploads, and waits until all are gone (no task
    /// may run on, or write, for an attempt that has ended); returns the message of a task
    /// that panicked, if one did.
    pub(crate) async fn stop(self) -> Option<String> {
        for h in &self.handles {
            h.0.abort();
        }
        let mut panicked = None;
        for mut h in self.handles {
            if let Err(e) = h.handle().await {
                if !e.is_cancelled() {
                    panicked.get_or_insert(panic_message(e));
                }
            }
        }
        for u in &self.uploads {
            u.stop().await;
        }
        panicked
    }
}

/// The message a task panicked with.
pub(crate) fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "task was cancelled".into();
    }
    // madsim's JoinError cannot hand out the panic payload; its message names it.
    #[cfg(madsim)]
    {
        e.to_string()
    }
    #[cfg(not(madsim))]
    {
        let p = e.into_panic();
        if let Some(s) = p.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = p.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic".into()
        }
    }
}
