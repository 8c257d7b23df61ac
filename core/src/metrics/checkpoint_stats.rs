//! Checkpoint counters and history of a job, read by the REST API and the metric registry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::registry::{exponential_buckets, Histogram, MetricGroup};
use crate::sync::LockExt;

/// How many checkpoints the history keeps (newest last).
pub const HISTORY_LEN: usize = 16;

/// How a checkpoint in the history ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointOutcome {
    /// Stored and committed.
    Completed,
    /// Declined, timed out or not stored; the reason.
    Failed(String),
}

/// One checkpoint of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Its id.
    pub id: u64,
    /// Whether it was taken for a savepoint.
    pub savepoint: bool,
    /// Trigger time, ms since the epoch.
    pub triggered_at_ms: i64,
    /// From trigger to completion or failure, in ms.
    pub duration_ms: u64,
    /// State size in bytes: every file it needs (0 if it failed).
    pub state_size: u64,
    /// Bytes it added to what the checkpoint before it had stored (its own files and the
    /// shared files new since); equal to `state_size` without the tiered backend.
    pub incremental_size: u64,
    /// The longest barrier alignment of any task, in ms.
    pub alignment_ms: u64,
    /// How it ended.
    pub outcome: CheckpointOutcome,
}

/// Checkpoint counters of a job.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// Checkpoints triggered.
    pub triggered: AtomicU64,
    /// Checkpoints completed.
    pub completed: AtomicU64,
    /// Checkpoints failed (declined, timed out or not stored).
    pub failed: AtomicU64,
    /// Id of the latest completed checkpoint (0: none).
    pub latest_id: AtomicU64,
    /// Duration of the latest completed checkpoint in ms.
    pub latest_duration_ms: AtomicU64,
    /// State size of the latest completed checkpoint in bytes (everything it needs).
    pub latest_size: AtomicU64,
    /// Bytes the latest completed checkpoint added to the one before it.
    pub latest_incremental_size: AtomicU64,
    /// Completion time of the latest completed checkpoint, ms since the epoch.
    pub latest_completed_at_ms: AtomicI64,
    /// Restarts of the job.
    pub restarts: AtomicU64,
    /// Longest alignment in the latest completed checkpoint, in ms.
    pub latest_alignment_ms: AtomicU64,
    history: Mutex<VecDeque<CheckpointRecord>>,
    /// Durations of completed checkpoints, once registered.
    durations: std::sync::OnceLock<Histogram>,
}

impl CheckpointStats {
    /// Checkpoint `id` completed: `sizes` are its full and incremental sizes in bytes.
    pub(crate) fn record_completed(&self, id: u64, duration: std::time::Duration, sizes: (u64, u64), at_ms: i64) {
        let (size, incremental) = sizes;
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.latest_id.store(id, Ordering::Relaxed);
        self.latest_duration_ms
            .store(duration.as_millis() as u64, Ordering::Relaxed);
        self.latest_size.store(size, Ordering::Relaxed);
        self.latest_incremental_size.store(incremental, Ordering::Relaxed);
        self.latest_completed_at_ms.store(at_ms, Ordering::Relaxed);
    }
}

impl CheckpointStats {
    /// Adds a checkpoint to the history, dropping the oldest beyond [`HISTORY_LEN`].
    pub(crate) fn record(&self, r: CheckpointRecord) {
        if r.outcome == CheckpointOutcome::Completed {
            self.latest_alignment_ms.store(r.alignment_ms, Ordering::Relaxed);
            if let Some(h) = self.durations.get() {
                h.observe(r.duration_ms as f64 / 1000.0);
            }
        }
        let mut h = self.history.locked();
        h.push_back(r);
        while h.len() > HISTORY_LEN {
            h.pop_front();
        }
    }

    /// The recent checkpoints, oldest first.
    pub fn history(&self) -> Vec<CheckpointRecord> {
        self.history.locked().iter().cloned().collect()
    }

    /// Registers the job's checkpoint metrics in `group` (read from these counters).
    pub fn register(self: &Arc<Self>, group: &MetricGroup) {
        type Field = fn(&CheckpointStats) -> &AtomicU64;
        let counters: [(&str, &str, Field); 4] = [
            ("checkpoints_triggered", "checkpoints triggered", |s| &s.triggered),
            ("checkpoints_completed", "checkpoints completed", |s| &s.completed),
            (
                "checkpoints_failed",
                "checkpoints failed (declined, timed out or not stored)",
                |s| &s.failed,
            ),
            ("job_restarts", "restarts of the job after failures", |s| &s.restarts),
        ];
        for (name, help, field) in counters {
            let s = self.clone();
            group.counter_fn(name, help, move || field(&s).load(Ordering::Relaxed));
        }
        let h = group.histogram(
            "checkpoint_duration_seconds",
            "durations of completed checkpoints",
            exponential_buckets(0.01, 4.0, 8),
        );
        // A second registration (the same job again) keeps the first histogram.
        let _ = self.durations.set(h);
        let s = self.clone();
        group.gauge_fn(
            "last_checkpoint_duration_seconds",
            "duration of the latest completed checkpoint",
            move || {
                (s.completed.load(Ordering::Relaxed) > 0)
                    .then(|| s.latest_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0)
            },
        );
        let s = self.clone();
        group.gauge_fn(
            "last_checkpoint_size_bytes",
            "state size of the latest completed checkpoint (every file it needs)",
            move || (s.completed.load(Ordering::Relaxed) > 0).then(|| s.latest_size.load(Ordering::Relaxed) as f64),
        );
        let s = self.clone();
        group.gauge_fn(
            "last_checkpoint_incremental_size_bytes",
            "bytes the latest completed checkpoint added to the one before it (the tiered backend's new runs and every other file)",
            move || {
                (s.completed.load(Ordering::Relaxed) > 0)
                    .then(|| s.latest_incremental_size.load(Ordering::Relaxed) as f64)
            },
        );
        let s = self.clone();
        group.gauge_fn(
            "last_checkpoint_alignment_seconds",
            "longest barrier alignment of any task in the latest completed checkpoint",
            move || {
                (s.completed.load(Ordering::Relaxed) > 0)
                    .then(|| s.latest_alignment_ms.load(Ordering::Relaxed) as f64 / 1000.0)
            },
        );
        let s = self.clone();
        group.gauge_fn(
            "last_checkpoint_id",
            "id of the latest completed checkpoint",
            move || (s.completed.load(Ordering::Relaxed) > 0).then(|| s.latest_id.load(Ordering::Relaxed) as f64),
        );
    }
}
