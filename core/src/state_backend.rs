//! Where keyed state lives: on the heap (the default), or tiered: in sorted runs stored in
//! the job's checkpoint store and read through a bounded block cache, so state can be far
//! larger than memory and a checkpoint stores only the runs written since the last one.

use std::sync::Arc;

use sluice_state::blob::BlobStore;
use sluice_state::tiered::{BlockCache, TableConfig, TableGauges, TieredTable};

use crate::checkpoint::storage::path_segment;
use crate::metrics::MetricGroup;

/// The state backend a job runs with ([`crate::ExecutionConfig::state_backend`]).
#[derive(Debug, Clone, Default)]
pub enum StateBackendConfig {
    /// Keyed state in memory, snapshotted whole on every checkpoint.
    #[default]
    Heap,
    /// Keyed state in runs in the checkpoint store, read through a block cache.
    Tiered(TieredSettings),
}

/// The state backend a job asks for by name (`--state-backend heap|tiered`); a cluster
/// worker supplies the cache of a tiered one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// [`StateBackendConfig::Heap`].
    Heap,
    /// [`StateBackendConfig::Tiered`].
    Tiered,
}

impl BackendKind {
    /// The backend called `name`.
    pub fn parse(name: &str) -> Result<Self, crate::error::InvalidSetting> {
        match name {
            "heap" => Ok(BackendKind::Heap),
            "tiered" => Ok(BackendKind::Tiered),
            other => {
                // Shown quoted (escapes included) and cut short: it may come off the network.
                let shown: String = other.chars().take(32).collect();
                Err(crate::error::InvalidSetting(format!(
                    "{shown:?} is not a state backend: heap or tiered"
                )))
            }
        }
    }

    /// The backend's name, as [`Self::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Heap => "heap",
            BackendKind::Tiered => "tiered",
        }
    }
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

    /// Registers the block cache's metrics in `group` (the process's: one cache serves every
    /// job of the process).
    pub fn register_metrics(&self, group: &MetricGroup) {
        register_cache(group, &self.cache);
    }

    /// The same settings with a disk tier below the cache's memory.
    pub fn with_disk(mut self, disk: sluice_state::tiered::DiskCacheConfig) -> Self {
        self.cache = self.cache.with_disk(disk);
        self
    }
}

impl StateBackendConfig {
    /// Registers the process's state metrics in `group`: the block cache's, for the tiered
    /// backend (one cache serves every job of the process); nothing for the heap.
    pub fn register_metrics(&self, group: &MetricGroup) {
        if let StateBackendConfig::Tiered(settings) = self {
            settings.register_metrics(group);
        }
    }
}

/// The block cache's hits, misses, hit ratio, bytes fetched from the object store and
/// occupancy.
fn register_cache(group: &MetricGroup, cache: &BlockCache) {
    type Read = fn(&sluice_state::tiered::CacheStats) -> u64;
    let counters: [(&str, &str, Read); 7] = [
        (
            "state_cache_hits",
            "block lookups answered from the state cache's memory",
            |s| s.hits,
        ),
        (
            "state_cache_disk_hits",
            "block lookups answered from the state cache's disk tier",
            |s| s.disk_hits,
        ),
        (
            "state_cache_misses",
            "block lookups the state cache missed (fetched from the object store)",
            |s| s.misses,
        ),
        (
            "state_cache_disk_written_bytes",
            "bytes the state cache's disk tier wrote",
            |s| s.disk_written_bytes,
        ),
        (
            "state_cache_disk_read_bytes",
            "bytes the state cache's disk tier read",
            |s| s.disk_read_bytes,
        ),
        (
            "state_cache_disk_errors",
            "failures of the state cache's disk tier (each cost a fetch from the object store)",
            |s| s.disk_errors,
        ),
        (
            "state_store_fetched_bytes",
            "bytes of state blocks fetched from the object store on cache misses",
            |s| s.fetched_bytes,
        ),
    ];
    for (name, help, read) in counters {
        let c = cache.clone();
        group.counter_fn(name, help, move || read(&c.stats()));
    }
    let c = cache.clone();
    group.gauge_fn(
        "state_cache_hit_ratio",
        "share of block lookups answered from the state cache's memory (none before the first lookup)",
        move || {
            let s = c.stats();
            let lookups = s.hits + s.disk_hits + s.misses;
            (lookups > 0).then(|| s.hits as f64 / lookups as f64)
        },
    );
    let c = cache.clone();
    group.gauge_fn(
        "state_cache_disk_hit_ratio",
        "share of the lookups memory missed that the disk tier answered (none without a disk tier)",
        move || {
            let s = c.stats();
            let lookups = s.disk_hits + s.misses;
            (s.disk_capacity > 0 && lookups > 0).then(|| s.disk_hits as f64 / lookups as f64)
        },
    );
    let c = cache.clone();
    group.gauge_fn("state_cache_bytes", "bytes held by the state cache", move || {
        Some(c.stats().usage as f64)
    });
    let c = cache.clone();
    group.gauge_fn(
        "state_cache_capacity_bytes",
        "the state cache's budget in bytes",
        move || Some(c.stats().capacity as f64),
    );
}

/// Registers one tiered table's figures in `group` (its operator's scope).
pub(crate) fn register_table(group: &MetricGroup, gauges: Arc<TableGauges>) {
    type Read = fn(&sluice_state::tiered::TableFigures) -> u64;
    let figures: [(&str, &str, Read); 5] = [
        (
            "state_memtable_bytes",
            "bytes held by the tiered state's memory table",
            |f| f.memtable_bytes,
        ),
        (
            "state_decoded_bytes",
            "estimated bytes of the tiered state's written values kept decoded (not yet in the memory table)",
            |f| f.decoded_bytes,
        ),
        ("state_runs", "live runs of the tiered state", |f| f.runs),
        ("state_run_bytes", "bytes of the tiered state's live runs", |f| {
            f.run_bytes
        }),
        (
            "state_compaction_backlog_runs",
            "runs beyond the compaction trigger (how far compaction is behind)",
            |f| f.compaction_backlog,
        ),
    ];
    for (name, help, read) in figures {
        let g = Arc::clone(&gauges);
        group.gauge_fn(name, help, move || Some(read(&g.figures()) as f64));
    }
    group.counter_fn(
        "state_store_read_bytes",
        "bytes of tiered state this operator read from the object store (cache misses and compaction)",
        move || gauges.figures().store_read_bytes,
    );
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
