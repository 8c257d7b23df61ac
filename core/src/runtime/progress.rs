//! What an embedded job's controller can tell about it while it runs: status, attempt,
//! failures, vertices and metrics (what the REST API of `sluice run` serves).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::metrics::{CheckpointStats, MetricRegistry, MetricSample};
use crate::status::JobStatus;
use crate::sync::LockExt;

/// How many failures a job remembers.
pub const MAX_EXCEPTIONS: usize = 100;

/// A failure of one of a job's attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobException {
    /// When it happened, ms since the epoch.
    pub timestamp_ms: i64,
    /// The attempt that failed.
    pub attempt: u32,
    /// What happened (the task and its error, or the lost worker).
    pub reason: String,
}

/// Failures of a job's attempts, oldest first, the last [`MAX_EXCEPTIONS`].
#[derive(Debug, Default, Clone)]
pub struct ExceptionHistory(VecDeque<JobException>);

impl ExceptionHistory {
    /// Adds a failure, forgetting the oldest beyond the bound.
    pub fn push(&mut self, e: JobException) {
        if self.0.len() == MAX_EXCEPTIONS {
            self.0.pop_front();
        }
        self.0.push_back(e);
    }

    /// The failures, oldest first.
    pub fn to_vec(&self) -> Vec<JobException> {
        self.0.iter().cloned().collect()
    }
}

/// Shared by a running job and its controllers.
#[derive(Debug)]
pub(crate) struct JobProgress {
    pub(crate) status: Mutex<JobStatus>,
    pub(crate) attempt: AtomicU32,
    pub(crate) exceptions: Mutex<ExceptionHistory>,
    pub(crate) vertices: Vec<(String, u32)>,
    /// A stop-with-savepoint ended the job: it finished (as in Flink), not cancelled.
    pub(crate) stopped_with_savepoint: std::sync::atomic::AtomicBool,
    pub(crate) stats: Arc<CheckpointStats>,
    pub(crate) metrics: MetricRegistry,
    /// Every metric as the last attempt left it (its task metrics leave the registry with
    /// it): what the job's figures are once it ended.
    pub(crate) last_attempt_figures: Arc<Mutex<Option<Vec<MetricSample>>>>,
}

impl JobProgress {
    pub(crate) fn set_status(&self, s: JobStatus) {
        let mut cur = self.status.locked();
        // An ended job stays ended.
        if !cur.is_terminal() {
            *cur = s;
        }
    }

    pub(crate) fn status(&self) -> JobStatus {
        *self.status.locked()
    }

    pub(crate) fn record_failure(&self, timestamp_ms: i64, reason: String) {
        let attempt = self.attempt.load(Ordering::Relaxed);
        self.exceptions.locked().push(JobException {
            timestamp_ms,
            attempt,
            reason,
        });
    }
}
