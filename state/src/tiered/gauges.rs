//! What one table holds and has done, readable from other threads (the metric registry)
//! while the table's task owns the table.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live figures of one [`super::TieredTable`], shared with whoever reports them.
#[derive(Debug, Default)]
pub struct TableGauges {
    memtable_bytes: AtomicU64,
    decoded_bytes: AtomicU64,
    runs: AtomicU64,
    run_bytes: AtomicU64,
    backlog: AtomicU64,
    store_read_bytes: AtomicU64,
}

/// A copy of a table's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableFigures {
    /// Bytes held by the memory table (keys, values and bookkeeping).
    pub memtable_bytes: u64,
    /// Estimated bytes of the decoded values not yet written to the memory table (the keyed
    /// store's written values of some size).
    pub decoded_bytes: u64,
    /// Live runs.
    pub runs: u64,
    /// Bytes of the live runs in the object store.
    pub run_bytes: u64,
    /// Sorted runs beyond the compaction trigger: how far compaction is behind.
    pub compaction_backlog: u64,
    /// Bytes this table read from the object store (blocks missed in the cache, and
    /// compaction's reads).
    pub store_read_bytes: u64,
}

impl TableGauges {
    /// The figures now.
    pub fn figures(&self) -> TableFigures {
        TableFigures {
            memtable_bytes: self.memtable_bytes.load(Ordering::Relaxed),
            decoded_bytes: self.decoded_bytes.load(Ordering::Relaxed),
            runs: self.runs.load(Ordering::Relaxed),
            run_bytes: self.run_bytes.load(Ordering::Relaxed),
            compaction_backlog: self.backlog.load(Ordering::Relaxed),
            store_read_bytes: self.store_read_bytes.load(Ordering::Relaxed),
        }
    }

    pub(super) fn set_memtable(&self, bytes: usize) {
        self.memtable_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_decoded(&self, bytes: usize) {
        self.decoded_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// The runs changed: `sizes` of the live runs, making `sorted` sorted runs, against a
    /// trigger of `max_runs`.
    pub(super) fn set_runs(&self, sizes: impl Iterator<Item = u64>, sorted: usize, max_runs: usize) {
        let (mut n, mut bytes) = (0u64, 0u64);
        for s in sizes {
            n += 1;
            bytes += s;
        }
        self.runs.store(n, Ordering::Relaxed);
        self.run_bytes.store(bytes, Ordering::Relaxed);
        self.backlog
            .store((sorted as u64).saturating_sub(max_runs as u64), Ordering::Relaxed);
    }

    pub(super) fn read_from_store(&self, bytes: usize) {
        self.store_read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}
