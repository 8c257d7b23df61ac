//! The block cache: decoded blocks of run files in memory, bounded in bytes, and optionally
//! raw blocks on local disk ([`DiskCacheConfig`]) below it; misses are fetched from the
//! object store, the runs' home.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::disk::{DiskCacheConfig, DiskTier};
use super::run::Block;

/// Names one block: its run file (path, and the run's identity in case a path is ever used
/// for two runs) and its index in the file. Run files are immutable, so a block's key names
/// the same bytes for as long as it exists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockKey {
    /// The run file's object path.
    pub file: Arc<str>,
    /// The run's size and footer checksum ([`super::run::RunMeta::identity`]).
    pub run: (u64, u32),
    /// The block's index in the file.
    pub block: u32,
}

/// Blocks shared by every tiered store of a process (one budget for all of them), evicted
/// least-recently-used. Cheap to clone: clones share the cache and its counters.
#[derive(Clone)]
pub struct BlockCache {
    inner: foyer::Cache<BlockKey, Arc<Block>>,
    disk: Option<Arc<DiskTier>>,
    stats: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetched_bytes: AtomicU64,
}

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups answered from the disk tier.
    pub disk_hits: u64,
    /// Lookups that had to fetch the block from the object store.
    pub misses: u64,
    /// Bytes fetched from the object store on misses.
    pub fetched_bytes: u64,
    /// Bytes held in memory now.
    pub usage: u64,
    /// The memory budget in bytes.
    pub capacity: u64,
    /// The disk tier's budget in bytes (0: no disk tier).
    pub disk_capacity: u64,
    /// Bytes the disk tier wrote so far.
    pub disk_written_bytes: u64,
    /// Bytes the disk tier read so far.
    pub disk_read_bytes: u64,
    /// Failures of the disk tier (it could not be opened, a read failed, a block read back
    /// failed the run's checksum): each cost a fetch from the object store, never a wrong
    /// value. A copy that fails foyer's own checksum is a plain miss.
    pub disk_errors: u64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache").field("stats", &self.stats()).finish()
    }
}

impl BlockCache {
    /// A cache holding at most about `capacity` bytes of blocks in memory.
    pub fn new(capacity: usize) -> Self {
        let inner = foyer::CacheBuilder::new(capacity.max(1))
            // Few shards: each shard gets an equal part of the budget, and a small budget split
            // many ways would hold too few blocks per shard.
            .with_shards(4)
            .with_eviction_config(foyer::LruConfig::default())
            .with_weighter(|k: &BlockKey, b: &Arc<Block>| b.size() + k.file.len() + 64)
            .build();
        BlockCache {
            inner,
            disk: None,
            stats: Arc::default(),
        }
    }

    /// The same cache with a disk tier below the memory one, opened on first use. The caller
    /// checks the directory first (it must be writable and have room): a tier that cannot be
    /// opened then only counts errors and every miss goes to the object store.
    pub fn with_disk(mut self, config: DiskCacheConfig) -> Self {
        self.disk = Some(Arc::new(DiskTier::new(config)));
        self
    }

    /// The disk tier's settings, if it has one.
    pub fn disk(&self) -> Option<&DiskCacheConfig> {
        self.disk.as_deref().map(DiskTier::config)
    }

    /// The block under `key` if memory holds it, counting a hit.
    pub fn get(&self, key: &BlockKey) -> Option<Arc<Block>> {
        let entry = self.inner.get(key)?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(entry.value()))
    }

    /// The block under `key` from the disk tier (then kept in memory too), checked against
    /// its checksum; `None` (a miss: the caller fetches the block from the object store)
    /// when there is no disk tier, it lacks the block, or the copy is damaged (then
    /// forgotten).
    pub async fn get_from_disk(&self, key: &BlockKey) -> Option<Arc<Block>> {
        let found = match &self.disk {
            Some(disk) => Self::read_disk(disk, key).await,
            None => None,
        };
        match found {
            Some(block) => {
                self.inner.insert(key.clone(), Arc::clone(&block));
                Some(block)
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn read_disk(disk: &DiskTier, key: &BlockKey) -> Option<Arc<Block>> {
        let raw = disk.get(key).await?;
        match Block::decode(&key.file, key.block as usize, raw) {
            Ok(block) => {
                disk.hits.fetch_add(1, Ordering::Relaxed);
                Some(Arc::new(block))
            }
            Err(_) => {
                disk.damaged(key).await;
                None
            }
        }
    }

    /// Keeps a block just fetched from the object store after a miss (`raw`: as stored, for
    /// the disk tier).
    pub async fn insert(&self, key: BlockKey, block: Arc<Block>, raw: Bytes) {
        self.stats.fetched_bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
        self.inner.insert(key.clone(), block);
        if let Some(disk) = &self.disk {
            disk.insert(key, raw).await;
        }
    }

    /// Counters and usage.
    pub fn stats(&self) -> CacheStats {
        let disk = self.disk.as_deref();
        let (disk_written_bytes, disk_read_bytes) = disk.map_or((0, 0), DiskTier::io);
        CacheStats {
            hits: self.stats.hits.load(Ordering::Relaxed),
            disk_hits: disk.map_or(0, |d| d.hits.load(Ordering::Relaxed)),
            misses: self.stats.misses.load(Ordering::Relaxed),
            fetched_bytes: self.stats.fetched_bytes.load(Ordering::Relaxed),
            usage: self.inner.usage() as u64,
            capacity: self.inner.capacity() as u64,
            disk_capacity: disk.map_or(0, |d| d.config().capacity() as u64),
            disk_written_bytes,
            disk_read_bytes,
            disk_errors: disk.map_or(0, |d| d.errors.load(Ordering::Relaxed)),
        }
    }
}
