//! Where keyed state lives: on the heap (the default), or tiered: in sorted runs stored in
//! the job's checkpoint store and read through a bounded block cache, so state can be far
//! larger than memory and a checkpoint stores only the runs written since the last one.

use std::sync::Arc;

use sluice_state::blob::BlobStore;
use sluice_state::tiered::{BlockCache, TableConfig, TieredTable};

use crate::checkpoint::storage::path_segment;

/// The state backend a job runs with ([`crate::ExecutionConfig::state_backend`]).
#[derive(Debug, Clone, Default)]
pub enum StateBackendConfig {
    /// Keyed state in memory, snapshotted whole on every checkpoint.
    #[default]
    Heap,
    /// Keyed state in runs in the checkpoint store, read through a block cache.
    Tiered(TieredSettings),
}

/// The tiered backend's settings: one block cache shared by every operator of the process.
#[derive(Debug, Clone)]
pub struct TieredSettings {
    /// The block cache (clones share it).
    pub cache: BlockCache,
    /// Block size, memory-table budget and compaction trigger of each operator's table.
    pub table: TableConfig,
}

impl TieredSettings {
    /// Settings with a block cache of `cache_memory` bytes and default table sizes.
    pub fn new(cache_memory: usize) -> Self {
        TieredSettings {
            cache: BlockCache::new(cache_memory),
            table: TableConfig::default(),
        }
    }
}

/// Where one operator subtask's keyed state lives ([`crate::operator::OperatorContext`]).
#[derive(Debug, Clone, Default)]
pub enum StateBackend {
    /// On the heap.
    #[default]
    Heap,
    /// In a tiered table.
    Tiered(TieredEnv),
}

/// What a tiered operator subtask needs to make its table.
#[derive(Debug, Clone)]
pub struct TieredEnv {
    /// The checkpoint store: the runs' home.
    pub store: Arc<dyn BlobStore>,
    /// The directory of the operator's runs, shared by its checkpoints:
    /// `<job>/shared/<operator>`.
    pub dir: String,
    /// Tells this subtask's runs apart from every other writer's: `a<attempt>-s<subtask>`.
    pub writer: String,
    /// The process's block cache.
    pub cache: BlockCache,
    /// Table sizes.
    pub table: TableConfig,
}

impl TieredEnv {
    /// The environment of subtask `subtask` of operator `operator_key` in attempt `attempt`
    /// of job directory `job_dir`.
    pub(crate) fn new(
        settings: &TieredSettings,
        store: Arc<dyn BlobStore>,
        job_dir: &str,
        operator_key: &str,
        attempt: u32,
        subtask: u32,
    ) -> Self {
        TieredEnv {
            store,
            dir: format!("{job_dir}/shared/{}", path_segment(operator_key)),
            writer: format!("a{attempt}-s{subtask}"),
            cache: settings.cache.clone(),
            table: settings.table,
        }
    }

    /// A new, empty table for the subtask.
    pub fn table(&self) -> TieredTable {
        TieredTable::new(
            Arc::clone(&self.store),
            &self.dir,
            &self.writer,
            self.table,
            self.cache.clone(),
        )
    }
}
