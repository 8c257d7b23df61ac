//! The memory tier of the block cache: decoded blocks of run files, bounded in bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Decoded blocks shared by every tiered store of a process (one budget for all of them),
/// evicted least-recently-used. Cheap to clone: clones share the cache and its counters.
#[derive(Clone)]
pub struct BlockCache {
    inner: foyer::Cache<BlockKey, Arc<Block>>,
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
    /// Lookups that had to fetch the block from the object store.
    pub misses: u64,
    /// Bytes fetched from the object store on misses.
    pub fetched_bytes: u64,
    /// Bytes held now.
    pub usage: u64,
    /// The budget in bytes.
    pub capacity: u64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache").field("stats", &self.stats()).finish()
    }
}

impl BlockCache {
    /// A cache holding at most about `capacity` bytes of blocks.
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
            stats: Arc::default(),
        }
    }

    /// The block under `key`, counting a hit or a miss.
    pub fn get(&self, key: &BlockKey) -> Option<Arc<Block>> {
        match self.inner.get(key) {
            Some(entry) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Some(Arc::clone(entry.value()))
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps a block just fetched from the object store.
    pub fn insert(&self, key: BlockKey, block: Arc<Block>) {
        self.stats
            .fetched_bytes
            .fetch_add(block.size() as u64, Ordering::Relaxed);
        self.inner.insert(key, block);
    }

    /// Counters and usage.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.stats.hits.load(Ordering::Relaxed),
            misses: self.stats.misses.load(Ordering::Relaxed),
            fetched_bytes: self.stats.fetched_bytes.load(Ordering::Relaxed),
            usage: self.inner.usage() as u64,
            capacity: self.inner.capacity() as u64,
        }
    }
}
