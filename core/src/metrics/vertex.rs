//! Totals the runtime keeps per vertex for the job result. Each subtask adds to them once
//! per batch, so they cost one atomic add per batch, not per record.

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
