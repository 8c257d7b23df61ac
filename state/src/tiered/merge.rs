//! Compaction's merge: sorted runs read a block at a time and merged into new runs cut at
//! key-group boundaries, so that merging state far larger than memory holds one block per
//! input and one output run (about `max_run_bytes`) at a time, never the merged entries.
//!
//! A *sorted run* is one run, or several with disjoint, ascending key-group ranges (the
//! pieces one merge wrote): no key is in two of its runs, so it reads like one run.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::run::{key_group_of, Block};
use super::table::LiveRun;
use super::TieredError;
use crate::blob::BlobStore;

/// One entry: a key and its value, or a tombstone.
pub(super) type Entry = (Bytes, Option<Bytes>);

/// The sorted runs among `runs` (newest first): consecutive runs whose key-group ranges are
/// disjoint and ascending belong to one.
pub(super) fn sorted_runs(runs: &[LiveRun]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let continues = i > 0 && runs[i - 1].meta.key_groups().1 < run.meta.key_groups().0;
        match out.last_mut() {
            Some(last) if continues => last.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// Reads one sorted run's entries in key order, a block at a time, skipping the key groups
/// the table does not read from each run.
pub(super) struct Cursor<'a> {
    runs: &'a [LiveRun],
    run: usize,
    block: usize,
    current: Option<Arc<Block>>,
    pos: usize,
    /// Bytes of the blocks fetched so far.
    pub(super) fetched: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over the runs of one sorted run, in their key order.
    pub(super) fn new(runs: &'a [LiveRun]) -> Self {
        Cursor {
            runs,
            run: 0,
            block: 0,
            current: None,
            pos: 0,
            fetched: 0,
        }
    }

    /// The next entry, or `None` at the end. Blocks come straight from the store: a scan
    /// of whole runs must not evict the blocks that reads are using.
    pub(super) async fn next(&mut self, store: &dyn BlobStore) -> Result<Option<Entry>, TieredError> {
        loop {
            if let Some(block) = &self.current {
                if let Some((k, v)) = block.entries().get(self.pos) {
                    self.pos += 1;
                    if self.runs[self.run].sees(k) {
                        return Ok(Some((k.clone(), v.clone())));
                    }
                    continue;
                }
                self.current = None;
                self.block += 1;
            }
            let Some(run) = self.runs.get(self.run) else {
                return Ok(None);
            };
            if self.block >= run.meta.block_count() {
                self.run += 1;
                self.block = 0;
                continue;
            }
            let block = run.meta.fetch_block(store, self.block).await?;
            self.fetched += block.size();
            self.current = Some(block);
            self.pos = 0;
        }
    }
}

/// Where merged entries go.
pub(super) trait Emit {
    /// Takes the next entry (keys strictly ascending).
    async fn emit(&mut self, key: Bytes, value: Option<Bytes>) -> Result<(), TieredError>;
}

/// Merges `cursors` (sorted runs, newest first) into `out`: the newest entry of each key
/// wins. Returns the bytes of the blocks read.
pub(super) async fn merge(
    store: &dyn BlobStore,
    mut cursors: Vec<Cursor<'_>>,
    out: &mut impl Emit,
) -> Result<usize, TieredError> {
    let mut heads: Vec<Option<Entry>> = Vec::with_capacity(cursors.len());
    for c in &mut cursors {
        heads.push(c.next(store).await?);
    }
    while let Some(i) = newest_smallest(&heads) {
        let (key, value) = heads[i].take().expect("the smallest head exists");
        for j in 0..cursors.len() {
            // Older copies of the key are shadowed: skipped.
            if j == i || heads[j].as_ref().is_some_and(|(k, _)| *k == key) {
                heads[j] = cursors[j].next(store).await?;
            }
        }
        out.emit(key, value).await?;
    }
    Ok(cursors.iter().map(|c| c.fetched).sum())
}

/// The cursor whose head has the smallest key; among equal keys the newest (lowest index).
fn newest_smallest(heads: &[Option<Entry>]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, h) in heads.iter().enumerate() {
        let Some((k, _)) = h else { continue };
        match best {
            Some(b) if heads[b].as_ref().is_some_and(|(bk, _)| bk <= k) => {}
            _ => best = Some(i),
        }
    }
    best
}

/// Whether `key` is in another key group than `last`: where an output run may be cut.
pub(super) fn new_key_group(last: Option<&Bytes>, key: &[u8]) -> bool {
    last.is_none_or(|l| key_group_of(l) != key_group_of(key))
}
