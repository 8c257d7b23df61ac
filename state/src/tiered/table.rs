//! One subtask's tiered key/value table: a memory table over immutable runs in an object
//! store, read through a block cache.
//!
//! Writes go to the memory table. [`TieredTable::flush`] turns it into a new run file, stored
//! with create-if-absent under a name no other writer uses; the object store is the runs'
//! only home, so a table is restored from the list of its runs alone
//! ([`TieredTable::open`]: metadata first, blocks when read). Reads are synchronous, because
//! operators are: [`TieredTable::prefetch`] first fetches (asynchronously) every block the
//! given keys can be in and pins it until [`TieredTable::release`]; [`TieredTable::get`] then
//! never waits, and reading an unfetched key is an error, not a stall.
//!
//! Runs are never deleted here: a run stays in the object store for as long as a retained
//! checkpoint names it, which only the checkpoint coordinator knows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::cache::{BlockCache, BlockKey};
use super::gauges::TableGauges;
use super::merge::{merge, new_key_group, sorted_runs, Cursor, Emit};
use rustc_hash::FxHashMap;

use super::run::{key_group_of, key_hash, retried, Block, RunMeta, RunWriter};
use super::TieredError;
use crate::blob::{BlobError, BlobStore};

/// Sizes of a tiered table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Target size of a run's blocks (the unit fetched and cached).
    pub block_size: usize,
    /// Memory-table bytes after which the caller should flush.
    pub memtable_bytes: usize,
    /// Sorted runs after which the caller should compact.
    pub max_runs: usize,
    /// Size after which compaction starts another output run (at the next key group), so
    /// that a merge holds about this much of its output in memory, not all of it.
    pub max_run_bytes: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            block_size: 16 * 1024,
            memtable_bytes: 16 << 20,
            max_runs: 8,
            max_run_bytes: 64 << 20,
        }
    }
}

/// A run of the table, and the key groups the table reads from it.
///
/// After a rescale a run can hold keys that another subtask owned and went on changing (and
/// even keys that were stale when the run was restored before): only the key groups its
/// snapshot's owner owned are current in it. Reads, scans and compaction ignore the rest.
#[derive(Debug, Clone)]
pub(super) struct LiveRun {
    pub(super) meta: Arc<RunMeta>,
    /// Key groups (inclusive) this table reads from the run.
    pub(super) visible: (u32, u32),
}

/// Every key group: the range of a run this table wrote.
const ALL_KEY_GROUPS: (u32, u32) = (0, u32::MAX);

impl LiveRun {
    pub(super) fn sees(&self, key: &[u8]) -> bool {
        key_group_of(key).is_some_and(|kg| kg >= self.visible.0 && kg <= self.visible.1)
    }

    fn block_for(&self, key: &[u8], hash: u64) -> Option<usize> {
        if self.sees(key) {
            self.meta.block_for_hashed(key, hash)
        } else {
            None
        }
    }
}

/// Block fetches one prefetch keeps in flight.
const FETCHES_IN_FLIGHT: usize = 32;

/// A memory-table entry costs its key and value plus this much bookkeeping.
const ENTRY_OVERHEAD: usize = 48;

/// One subtask's table (see the module docs).
pub struct TieredTable {
    store: Arc<dyn BlobStore>,
    /// Where this writer's runs go: `<dir>/<writer>-<seq>.run`.
    dir: String,
    writer: String,
    seq: u64,
    config: TableConfig,
    /// Hashed for lookups in constant time; sorted when written out or scanned, so no file
    /// or result depends on the hash order.
    memtable: FxHashMap<Bytes, Option<Bytes>>,
    mem_bytes: usize,
    /// Newest first: the first run holding a key has its current entry.
    runs: Vec<LiveRun>,
    cache: BlockCache,
    /// Blocks prefetched for the current call, by run position and block; only looked up,
    /// never iterated (so the hash map's order shows nowhere).
    pinned: FxHashMap<(usize, u32), Arc<Block>>,
    /// The keys this table's owner reads (`[from, to)`); compaction drops the others, which
    /// runs restored after a rescale bring along.
    owned: Option<(Bytes, Bytes)>,
    gauges: Arc<TableGauges>,
}

impl std::fmt::Debug for TieredTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredTable")
            .field("dir", &self.dir)
            .field("writer", &self.writer)
            .field("memtable_entries", &self.memtable.len())
            .field("runs", &self.runs.len())
            .finish()
    }
}

impl TieredTable {
    /// An empty table writing runs under `dir`, named after `writer` (a name no other writer
    /// of the same directory uses, e.g. the execution attempt and subtask).
    pub fn new(store: Arc<dyn BlobStore>, dir: &str, writer: &str, config: TableConfig, cache: BlockCache) -> Self {
        TieredTable {
            store,
            dir: dir.to_owned(),
            writer: writer.to_owned(),
            seq: 0,
            config,
            memtable: FxHashMap::default(),
            mem_bytes: 0,
            runs: Vec::new(),
            cache,
            pinned: FxHashMap::default(),
            owned: None,
            gauges: Arc::default(),
        }
    }

    /// Only keys in `[from, to)` are read from now on: compaction may drop the rest.
    pub fn set_owned_range(&mut self, from: Bytes, to: Bytes) {
        self.owned = Some((from, to));
    }

    /// Adds existing runs as the oldest ones (restoring: a manifest's runs, newest first),
    /// each with the key groups (inclusive) to read from it. Reads each run's index and bloom
    /// filter, no block.
    pub async fn attach(&mut self, runs: &[(String, (u32, u32))]) -> Result<(), TieredError> {
        // All or none: a table missing one of its runs would answer wrongly for its keys.
        let mut opened = Vec::with_capacity(runs.len());
        for (file, visible) in runs {
            let meta = Arc::new(RunMeta::open(&*self.store, file).await?);
            opened.push(LiveRun {
                meta,
                visible: *visible,
            });
        }
        self.runs.extend(opened);
        self.publish_runs();
        Ok(())
    }

    /// The live runs, newest first, each with the key groups read from it.
    pub fn run_metas(&self) -> impl Iterator<Item = (&RunMeta, (u32, u32))> {
        self.runs.iter().map(|r| (&*r.meta, r.visible))
    }

    /// A table over existing `runs` (newest first, as [`Self::runs`] lists them): reads each
    /// run's index and bloom filter, no block.
    pub async fn open(
        store: Arc<dyn BlobStore>,
        dir: &str,
        writer: &str,
        config: TableConfig,
        cache: BlockCache,
        runs: &[String],
    ) -> Result<Self, TieredError> {
        let mut t = Self::new(store, dir, writer, config, cache);
        let all: Vec<_> = runs.iter().map(|f| (f.clone(), ALL_KEY_GROUPS)).collect();
        t.attach(&all).await?;
        Ok(t)
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Bytes, value: Bytes) {
        self.write(WriteKey::Owned(key), Some(value));
    }

    /// Sets `key` to `value`, copying the key only if the memory table does not hold it yet.
    pub fn put_slice(&mut self, key: &[u8], value: Bytes) {
        self.write(WriteKey::Borrowed(key), Some(value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: Bytes) {
        self.delete_key(WriteKey::Owned(key));
    }

    /// Deletes `key`, copying it only if the memory table does not hold it yet.
    pub fn delete_slice(&mut self, key: &[u8]) {
        self.delete_key(WriteKey::Borrowed(key));
    }

    fn delete_key(&mut self, key: WriteKey<'_>) {
        // Nothing older can hold the key: no tombstone needed.
        if self.runs.is_empty() {
            if let Some(old) = self.memtable.remove(key.as_slice()) {
                self.mem_bytes -= entry_size(key.as_slice(), &old);
                self.gauges.set_memtable(self.mem_bytes);
            }
            return;
        }
        self.write(key, None);
    }

    fn write(&mut self, key: WriteKey<'_>, value: Option<Bytes>) {
        let size = entry_size(key.as_slice(), &value);
        // An update in place keeps the stored key: no copy, one lookup.
        if let Some(slot) = self.memtable.get_mut(key.as_slice()) {
            let old = std::mem::replace(slot, value);
            self.mem_bytes -= entry_size(key.as_slice(), &old);
        } else {
            self.memtable.insert(key.into_bytes(), value);
        }
        self.mem_bytes += size;
        self.gauges.set_memtable(self.mem_bytes);
    }

    /// Whether the memory table holds `key` (set or deleted): reading it needs no fetch.
    pub fn in_memory(&self, key: &[u8]) -> bool {
        self.memtable.contains_key(key)
    }

    /// Whether the memory table has outgrown its budget.
    pub fn needs_flush(&self) -> bool {
        self.mem_bytes >= self.config.memtable_bytes
    }

    /// Whether there are enough sorted runs to compact.
    pub fn needs_compaction(&self) -> bool {
        sorted_runs(&self.runs).len() > self.config.max_runs
    }

    /// Bytes held by the memory table.
    pub fn memtable_bytes(&self) -> usize {
        self.mem_bytes
    }

    /// The memory table's budget in bytes.
    pub fn memtable_budget(&self) -> usize {
        self.config.memtable_bytes
    }

    /// The live runs, newest first: what a checkpoint's manifest names.
    pub fn runs(&self) -> Vec<String> {
        self.runs.iter().map(|r| r.meta.file().to_owned()).collect()
    }

    /// Whether the table has runs (else every key is in the memory table or nowhere).
    pub fn has_runs(&self) -> bool {
        !self.runs.is_empty()
    }

    /// The block cache this table reads through.
    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }

    /// The table's live figures, for metrics (clones share them).
    pub fn gauges(&self) -> Arc<TableGauges> {
        Arc::clone(&self.gauges)
    }

    fn publish_runs(&self) {
        self.gauges.set_runs(
            self.runs.iter().map(|r| r.meta.size()),
            sorted_runs(&self.runs).len(),
            self.config.max_runs,
        );
        self.gauges.set_memtable(self.mem_bytes);
    }
}

fn entry_size(key: &[u8], value: &Option<Bytes>) -> usize {
    key.len() + value.as_ref().map_or(0, Bytes::len) + ENTRY_OVERHEAD
}

/// A key being written: owned already, or borrowed and copied only if the memory table
/// does not hold it yet.
enum WriteKey<'a> {
    Owned(Bytes),
    Borrowed(&'a [u8]),
}

impl WriteKey<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            WriteKey::Owned(k) => k,
            WriteKey::Borrowed(k) => k,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            WriteKey::Owned(k) => k,
            WriteKey::Borrowed(k) => Bytes::copy_from_slice(k),
        }
    }
}

/// Reads.
impl TieredTable {
    /// Fetches and pins every block that `keys` can be in, so that [`Self::get`] of those
    /// keys does not wait. Run by run, newest first (a key found in a run needs nothing of
    /// older ones), each run's blocks fetched several at once: a store far away is waited
    /// for about once per run, not once per block.
    pub async fn prefetch(&mut self, keys: &[Bytes]) -> Result<(), TieredError> {
        let mut pending: Vec<(&[u8], u64)> = keys
            .iter()
            .map(|k| k.as_ref())
            .filter(|k| !self.memtable.contains_key(*k))
            .map(|k| (k, key_hash(k)))
            .collect();
        for i in 0..self.runs.len() {
            if pending.is_empty() {
                break;
            }
            let wanted: BTreeSet<u32> = pending
                .iter()
                .filter_map(|&(k, h)| self.runs[i].block_for(k, h))
                .map(|b| b as u32)
                .filter(|&b| !self.pinned.contains_key(&(i, b)))
                .collect();
            self.pin_all(i, wanted).await?;
            let (run, pinned) = (&self.runs[i], &self.pinned);
            pending.retain(|&(k, h)| {
                run.block_for(k, h)
                    .and_then(|b| pinned.get(&(i, b as u32)))
                    .is_none_or(|block| block.get(k).is_none())
            });
        }
        Ok(())
    }

    /// Fetches blocks `wanted` of the run at position `run`, [`FETCHES_IN_FLIGHT`] at a time,
    /// and pins them.
    async fn pin_all(&mut self, run: usize, wanted: BTreeSet<u32>) -> Result<(), TieredError> {
        let meta = Arc::clone(&self.runs[run].meta);
        let this = &*self;
        let fetched: Vec<(u32, Arc<Block>)> = futures::stream::iter(wanted)
            .map(|b| {
                let meta = &meta;
                async move { this.cached_block(meta, b as usize).await.map(|block| (b, block)) }
            })
            .buffered(FETCHES_IN_FLIGHT)
            .try_collect()
            .await?;
        for (b, block) in fetched {
            self.pinned.insert((run, b), block);
        }
        Ok(())
    }

    /// Releases the blocks pinned by [`Self::prefetch`] (they stay in the cache while it has
    /// room).
    pub fn release(&mut self) {
        self.pinned.clear();
    }

    /// The value of `key`. Keys not in the memory table must have been prefetched.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, TieredError> {
        if let Some(v) = self.memtable.get(key) {
            return Ok(v.clone());
        }
        let hash = key_hash(key);
        for (i, run) in self.runs.iter().enumerate() {
            let Some(b) = run.block_for(key, hash) else { continue };
            let block = self
                .pinned
                .get(&(i, b as u32))
                .ok_or_else(|| TieredError::NotPrefetched {
                    file: run.meta.file().to_owned(),
                    block: b,
                })?;
            if let Some(entry) = block.get(key) {
                return Ok(entry.cloned());
            }
        }
        Ok(None)
    }

    /// Every live entry with a key in `[from, to)`, in key order (the memory table and all
    /// runs merged, newest first wins, deletions applied). Reads blocks through the cache
    /// without pinning them: for savepoints, rescaling and tests, not per-record reads.
    pub async fn scan(&self, from: &[u8], to: &[u8]) -> Result<Vec<(Bytes, Bytes)>, TieredError> {
        let mut merged: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        // Oldest first, so that newer entries overwrite older ones.
        for run in self.runs.iter().rev() {
            for b in run.meta.blocks_in(from, to) {
                let block = self.cached_block(&run.meta, b).await?;
                for (k, v) in block.entries() {
                    if k.as_ref() >= from && k.as_ref() < to && run.sees(k) {
                        merged.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        for (k, v) in &self.memtable {
            if k.as_ref() >= from && k.as_ref() < to {
                merged.insert(k.clone(), v.clone());
            }
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    async fn cached_block(&self, run: &RunMeta, b: usize) -> Result<Arc<Block>, TieredError> {
        let key = BlockKey {
            file: Arc::clone(run.file_arc()),
            run: run.identity(),
            block: b as u32,
        };
        if let Some(block) = self.cache.get(&key) {
            return Ok(block);
        }
        if let Some(block) = self.cache.get_from_disk(&key).await {
            return Ok(block);
        }
        let raw = run.fetch_raw_block(&*self.store, b).await?;
        self.gauges.read_from_store(raw.len());
        let block = Arc::new(Block::decode(run.file(), b, raw.clone())?);
        self.cache.insert(key, Arc::clone(&block), raw).await;
        Ok(block)
    }
}

/// Flushes and compaction.
impl TieredTable {
    /// Writes the memory table to a new run (the newest) and empties it. Returns the run's
    /// file, or `None` when the memory table was empty.
    pub async fn flush(&mut self) -> Result<Option<String>, TieredError> {
        // Pins are by run position, which a new run shifts: reads prefetch again.
        self.pinned.clear();
        let mut entries: Vec<(Bytes, Option<Bytes>)> = std::mem::take(&mut self.memtable).into_iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let old_bytes = std::mem::take(&mut self.mem_bytes);
        // Without older runs a tombstone shadows nothing: leave it out.
        let keep_tombstones = !self.runs.is_empty();
        let written = self
            .write_run(
                entries
                    .iter()
                    .filter(|(_, v)| keep_tombstones || v.is_some())
                    .map(|(k, v)| (k, v)),
            )
            .await;
        match written {
            Ok(Some(meta)) => {
                let file = meta.file().to_owned();
                self.runs.insert(
                    0,
                    LiveRun {
                        meta,
                        visible: ALL_KEY_GROUPS,
                    },
                );
                self.publish_runs();
                Ok(Some(file))
            }
            Ok(None) => {
                self.gauges.set_memtable(0);
                Ok(None)
            }
            Err(e) => {
                // Nothing is lost: the entries go back and a later flush tries again.
                self.memtable = entries.into_iter().collect();
                self.mem_bytes = old_bytes;
                Err(e)
            }
        }
    }

    /// Merges the newest sorted runs into one (newest entry of each key wins), choosing
    /// them so that sorted-run sizes grow geometrically from newest to oldest: each entry is
    /// rewritten a logarithmic number of times, not once per compaction. When the oldest
    /// takes part, deletions are applied and dropped (nothing older is left for them to
    /// shadow). The merge streams: one block per input and one output run of about
    /// `max_run_bytes` in memory. The old runs stay in the object store until no checkpoint
    /// names them. Returns the newest run afterwards.
    pub async fn compact(&mut self) -> Result<Option<String>, TieredError> {
        let groups = sorted_runs(&self.runs);
        if groups.len() < 2 {
            return Ok(None);
        }
        self.pinned.clear();
        let take = self.runs_to_merge(&groups);
        let bottom = take == groups.len();
        let merging: Vec<LiveRun> = self.runs[..groups[take - 1].end].to_vec();
        let store = Arc::clone(&self.store);
        let cursors = groups[..take]
            .iter()
            .map(|g| Cursor::new(&merging[g.clone()]))
            .collect();
        let mut out = Pieces {
            table: self,
            writer: None,
            last: None,
            bottom,
            written: Vec::new(),
        };
        let merged = merge(&*store, cursors, &mut out).await;
        let written = match merged {
            Ok(read) => out.finish().await.map(|w| (read, w)),
            Err(e) => Err(e),
        };
        let (read, written) = match written {
            Ok(w) => w,
            Err(e) => {
                out.abandon().await;
                return Err(e);
            }
        };
        self.gauges.read_from_store(read);
        let older = self.runs.split_off(merging.len());
        self.runs = written
            .into_iter()
            .map(|meta| LiveRun {
                meta,
                visible: ALL_KEY_GROUPS,
            })
            .chain(older)
            .collect();
        self.publish_runs();
        Ok(self.runs.first().map(|r| r.meta.file().to_owned()))
    }

    /// How many of the newest sorted runs (`groups`) to merge: the shortest prefix (at
    /// least two) whose total size stays below half the next older one's, else all.
    fn runs_to_merge(&self, groups: &[std::ops::Range<usize>]) -> usize {
        let size = |g: &std::ops::Range<usize>| -> u64 { self.runs[g.clone()].iter().map(|r| r.meta.size()).sum() };
        let mut total = 0;
        for (i, g) in groups.iter().enumerate() {
            total += size(g);
            if let Some(next) = groups.get(i + 1) {
                if i >= 1 && total * 2 < size(next) {
                    return i + 1;
                }
            }
        }
        groups.len()
    }

    /// Writes `entries` (in key order) as a new run file.
    async fn write_run<'e>(
        &mut self,
        entries: impl Iterator<Item = (&'e Bytes, &'e Option<Bytes>)>,
    ) -> Result<Option<Arc<RunMeta>>, TieredError> {
        let mut w = RunWriter::new(self.config.block_size);
        for (k, v) in entries {
            w.add(k, v.as_deref())?;
        }
        let Some((bytes, _summary)) = w.finish() else {
            return Ok(None);
        };
        self.store_run(bytes).await.map(Some)
    }

    /// Stores a finished run under a new name of this writer's.
    async fn store_run(&mut self, bytes: Bytes) -> Result<Arc<RunMeta>, TieredError> {
        // A name taken by another writer (e.g. the same attempt number under another leader)
        // is skipped, never overwritten or adopted; a bounded number of tries.
        for _ in 0..MAX_NAME_TRIES {
            self.seq += 1;
            let file = format!("{}/{}-{:08}.run", self.dir, self.writer, self.seq);
            if put_exactly(&*self.store, &file, bytes.clone()).await? {
                return Ok(Arc::new(RunMeta::from_bytes(&file, &bytes)?));
            }
        }
        Err(TieredError::BadInput(format!(
            "{MAX_NAME_TRIES} run names under '{}/{}-' are all taken by other writers",
            self.dir, self.writer
        )))
    }
}

/// Where a compaction's merge writes: runs cut at a key-group boundary once they reach
/// `max_run_bytes`, each stored as soon as it is cut.
struct Pieces<'t> {
    table: &'t mut TieredTable,
    writer: Option<RunWriter>,
    last: Option<Bytes>,
    /// Deletions are dropped (the merge includes the oldest sorted run).
    bottom: bool,
    written: Vec<Arc<RunMeta>>,
}

impl Emit for Pieces<'_> {
    async fn emit(&mut self, key: Bytes, value: Option<Bytes>) -> Result<(), TieredError> {
        let owned = self.table.owned.as_ref();
        if (value.is_none() && self.bottom) || owned.is_some_and(|(from, to)| key < from || key >= to) {
            return Ok(());
        }
        let full = self
            .writer
            .as_ref()
            .is_some_and(|w| w.len() >= self.table.config.max_run_bytes);
        if full && new_key_group(self.last.as_ref(), &key) {
            self.cut().await?;
        }
        let block_size = self.table.config.block_size;
        let w = self.writer.get_or_insert_with(|| RunWriter::new(block_size));
        w.add(&key, value.as_deref())?;
        self.last = Some(key);
        Ok(())
    }
}

impl Pieces<'_> {
    async fn cut(&mut self) -> Result<(), TieredError> {
        if let Some((bytes, _)) = self.writer.take().and_then(RunWriter::finish) {
            let meta = self.table.store_run(bytes).await?;
            self.written.push(meta);
        }
        Ok(())
    }

    /// The runs written, in key order.
    async fn finish(&mut self) -> Result<Vec<Arc<RunMeta>>, TieredError> {
        self.cut().await?;
        Ok(std::mem::take(&mut self.written))
    }

    /// The merge failed: the runs it stored are named by nothing, and go (best effort; one
    /// left behind is an orphan, never read).
    async fn abandon(&mut self) {
        for meta in self.written.drain(..) {
            let _ = self.table.store.delete(meta.file()).await;
        }
    }
}

/// Names tried for one run before giving up.
const MAX_NAME_TRIES: u32 = 64;

/// Stores `bytes` at `file` with create-if-absent; `false` if another writer's file is there.
/// An object with the same bytes is ours (an earlier try whose success was not reported).
async fn put_exactly(store: &dyn BlobStore, file: &str, bytes: Bytes) -> Result<bool, TieredError> {
    // A retried put that finds the object is told apart below: our earlier try landed.
    match retried(file, || store.put_if_absent(file, bytes.clone())).await {
        Ok(()) => Ok(true),
        Err(TieredError::Store {
            source: BlobError::AlreadyExists(_),
            ..
        }) => {
            let there = retried(file, || store.get(file)).await?;
            Ok(there == bytes)
        }
        Err(e) => Err(e),
    }
}
