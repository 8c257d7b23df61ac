//! Counters the runtime keeps per vertex. Each subtask adds to them once per batch, so they
//! cost one atomic add per batch, not per record.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Live counters of one vertex (summed over its subtasks).
#[derive(Debug, Default)]
pub struct VertexMetrics {
    /// Records that entered the vertex.
    pub records_in: AtomicU64,
    /// Records that left the vertex (for a sink: records written).
    pub records_out: AtomicU64,
    /// Records dropped because they arrived after their window was cleaned up.
    pub late_records_dropped: AtomicU64,
    /// The smallest watermark seen by any subtask of the vertex (ms).
    pub current_watermark: AtomicI64,
}

impl VertexMetrics {
    pub(crate) fn new_shared() -> Arc<Self> {
        let m = VertexMetrics::default();
        m.current_watermark.store(i64::MIN, Ordering::Relaxed);
        Arc::new(m)
    }

    pub(crate) fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A point-in-time copy of one vertex's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexSnapshot {
    /// The vertex name.
    pub name: String,
    /// The vertex parallelism.
    pub parallelism: u32,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Late records dropped.
    pub late_records_dropped: u64,
}

impl VertexMetrics {
    pub(crate) fn snapshot(&self, name: &str, parallelism: u32) -> VertexSnapshot {
        VertexSnapshot {
            name: name.to_string(),
            parallelism,
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late_records_dropped: self.late_records_dropped.load(Ordering::Relaxed),
        }
    }
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
    /// State size of the latest completed checkpoint in bytes.
    pub latest_size: AtomicU64,
    /// Completion time of the latest completed checkpoint, ms since the epoch.
    pub latest_completed_at_ms: AtomicI64,
    /// Restarts of the job.
    pub restarts: AtomicU64,
}

impl CheckpointStats {
    pub(crate) fn record_completed(&self, id: u64, duration: std::time::Duration, size: u64, at_ms: i64) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.latest_id.store(id, Ordering::Relaxed);
        self.latest_duration_ms.store(duration.as_millis() as u64, Ordering::Relaxed);
        self.latest_size.store(size, Ordering::Relaxed);
        self.latest_completed_at_ms.store(at_ms, Ordering::Relaxed);
    }
}
