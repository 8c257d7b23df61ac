//! The tiered state store: state larger than memory, kept in immutable sorted runs whose
//! home is the checkpoint object store, read through a bounded block cache.
//!
//! - [`run`]: the run file format (blocks with checksums, a bloom filter, an index, and the
//!   key-group range of its keys in the footer).
//! - [`BlockCache`]: decoded blocks in memory, one byte budget per process, and optionally raw
//!   blocks on local disk below them ([`DiskCacheConfig`]).
//! - [`TieredTable`]: one subtask's table: a memory table flushed into runs, prefetch-then-read
//!   lookups, range scans, and compaction.
//!
//! Keys begin with their key group as two big-endian bytes ([`run::key_group_of`]), so the
//! runs a subtask needs after rescaling are those whose key-group range meets its own.

mod cache;
mod canonical;
mod disk;
mod error;
mod gauges;
mod manifest;
mod merge;
pub mod run;
mod table;

pub use cache::{BlockCache, BlockKey, CacheStats};
pub use canonical::to_canonical;
pub use disk::{DiskCacheConfig, DiskCacheError, MIN_DISK_CACHE};
pub use error::TieredError;
pub use gauges::{TableFigures, TableGauges};
pub use manifest::{Manifest, ManifestRun, ManifestState};
pub use table::{TableConfig, TieredTable};
