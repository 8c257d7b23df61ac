//! The tiered mode of [`crate::KeyedStateStore`]: every state of the operator in one
//! [`TieredTable`], keyed `[key group u16][state id u32][key]` (big-endian prefix, bincode
//! key), values in bincode, as in the canonical state files.
//!
//! Written values of some size stay decoded in [`HotValues`] until a flush or their budget
//! writes them into the table: a read-modify-write of such a key costs no decoding or
//! encoding.
//!
//! The typed accessors stay synchronous and infallible. A read that fails (a key that was
//! not prefetched, a value that does not decode) records the failure and answers `None`; the
//! operator takes the failure with [`crate::KeyedStateStore::take_failure`] after each call and fails
//! the task before anything it emitted leaves it, so the attempt restarts from the last
//! checkpoint and no output is lost or duplicated.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::keyed_hot::{HotValues, Modified, HOT_MIN_BYTES};
use crate::tiered::{Manifest, ManifestRun, ManifestState, TieredError, TieredTable};
use crate::{key_group_for, KeyGroupRange, KeyedEntry, StateError, StateKey};

/// The tiered side of a keyed state store.
pub(crate) struct TieredKeyed {
    table: TieredTable,
    /// Written values of some size, decoded: newer than the table's copies (dirty) or equal
    /// to them (clean); read before the table.
    hot: HotValues,
    max_parallelism: u32,
    /// Runs named by restored manifests with the key groups to read from each, opened
    /// (metadata only) before the first read.
    pending: Vec<(String, (u32, u32))>,
    /// The key groups this subtask owns (all until a restore says otherwise).
    owned: (u32, u32),
    failure: OnceLock<StateError>,
    /// Why the last flush failed, until one succeeds: a snapshot then says why it could not
    /// be taken.
    flush_failure: Option<String>,
}

impl From<TieredError> for StateError {
    /// A damaged run stays damaged: it is `Corrupt` (a restart would read it again); the rest
    /// (a store that failed, a read not prefetched) is `Tiered`.
    fn from(e: TieredError) -> Self {
        match e {
            TieredError::Corrupt { .. } => StateError::Corrupt(e.to_string()),
            other => StateError::Tiered(other.to_string()),
        }
    }
}

fn encode_key(kg: u32, id: u32, key: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(6 + key.len());
    // Key groups are below 32768 (the max parallelism's bound), so two bytes hold them.
    b.put_u16(kg as u16);
    b.put_u32(id);
    b.put_slice(key);
    b.freeze()
}

/// Stored keys up to this long are encoded on the stack.
const INLINE_KEY: usize = 64;

/// [`encode_key`] of a typed key, on the stack when short: the per-record path allocates
/// nothing for a key the memory table already holds (the table copies a key only when it
/// is new to it).
struct StoredKey {
    len: usize,
    inline: [u8; INLINE_KEY],
    /// The key when longer than [`INLINE_KEY`] (else empty, never allocated).
    long: Vec<u8>,
}

impl StoredKey {
    fn encode<K: Serialize>(kg: u32, id: u32, key: &K) -> bincode::Result<Self> {
        let len = 6 + bincode::serialized_size(key)? as usize;
        let mut k = StoredKey {
            len,
            inline: [0; INLINE_KEY],
            long: Vec::new(),
        };
        let buf: &mut [u8] = if len <= INLINE_KEY {
            &mut k.inline[..len]
        } else {
            k.long.resize(len, 0);
            &mut k.long
        };
        // Key groups are below 32768 (the max parallelism's bound), so two bytes hold them.
        buf[..2].copy_from_slice(&(kg as u16).to_be_bytes());
        buf[2..6].copy_from_slice(&id.to_be_bytes());
        bincode::serialize_into(&mut buf[6..], key)?;
        Ok(k)
    }

    fn as_bytes(&self) -> &[u8] {
        if self.len <= INLINE_KEY {
            &self.inline[..self.len]
        } else {
            &self.long
        }
    }

    /// The same key in state `id`.
    fn set_state(&mut self, id: u32) {
        let buf: &mut [u8] = if self.len <= INLINE_KEY {
            &mut self.inline[..self.len]
        } else {
            &mut self.long
        };
        buf[2..6].copy_from_slice(&id.to_be_bytes());
    }
}

/// Lets `table`'s compaction drop keys outside `range`.
fn set_owned(table: &mut TieredTable, range: KeyGroupRange) {
    if range.is_empty() {
        return;
    }
    // `range.end` is inclusive and below 32768 (the max parallelism's bound): the next key
    // group's two-byte prefix bounds the owned keys.
    let after = ((range.end + 1) as u16).to_be_bytes();
    table.set_owned_range(encode_key(range.start, 0, &[]), Bytes::copy_from_slice(&after));
}

/// The id of state `name` in tiered keys: stable across runs and releases, so a restored
/// run's keys find their state (collisions are refused at registration).
pub(crate) fn state_id(name: &str) -> u32 {
    crate::stable_hash(name) as u32
}

impl TieredKeyed {
    pub(crate) fn new(mut table: TieredTable, max_parallelism: u32, owned: KeyGroupRange) -> Self {
        set_owned(&mut table, owned);
        // As much again as the memory table: together they bound what the store holds in
        // memory besides its cache and the runs' metadata.
        let hot = HotValues::new(table.memtable_budget());
        TieredKeyed {
            table,
            hot,
            max_parallelism,
            pending: Vec::new(),
            owned: (owned.start, owned.end),
            failure: OnceLock::new(),
            flush_failure: None,
        }
    }

    fn fail(&self, e: StateError) {
        // The first failure is the one to report; later ones follow from it.
        let _ = self.failure.set(e);
    }

    fn key_of<K: StateKey>(&self, id: u32, key: &K) -> Option<StoredKey> {
        match StoredKey::encode(key_group_for(key, self.max_parallelism).0, id, key) {
            Ok(k) => Some(k),
            Err(e) => {
                self.fail(StateError::encode(e));
                None
            }
        }
    }

    /// The value of `key` in state `id`: a copy.
    pub(crate) fn get<K: StateKey, T: DeserializeOwned + Clone + 'static>(&self, id: u32, key: &K) -> Option<T> {
        self.with(id, key, |v: Option<&T>| v.cloned())
    }

    /// Calls `f` with the value of `key` in state `id`, lent when it is decoded already.
    pub(crate) fn with<K: StateKey, T: DeserializeOwned + 'static, R>(
        &self,
        id: u32,
        key: &K,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> R {
        let Some(k) = self.key_of(id, key) else {
            return f(None);
        };
        match self.hot.get::<T>(k.as_bytes()) {
            Some(v) => f(v.as_ref()),
            None => f(self.get_at::<T>(k.as_bytes()).as_ref()),
        }
    }

    fn get_at<T: DeserializeOwned>(&self, k: &[u8]) -> Option<T> {
        let bytes = match self.table.get(k) {
            Ok(b) => b?,
            Err(e) => {
                self.fail(e.into());
                return None;
            }
        };
        match bincode::deserialize(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(StateError::Corrupt(format!("undecodable tiered state value: {e}")));
                None
            }
        }
    }

    /// Sets (`Some`) or deletes (`None`) the value of `key` in state `id`.
    pub(crate) fn put<K: StateKey, T: Serialize + Send + Sync + 'static>(
        &mut self,
        id: u32,
        key: &K,
        value: Option<T>,
    ) {
        if let Some(k) = self.key_of(id, key) {
            self.store_at(k.as_bytes(), value, true);
        }
    }

    /// Writes `value` of key `k` (`None`: deleted; `was_set`: the table may hold an older
    /// value): decoded among the hot values when large, encoded into the table when small.
    fn store_at<T: Serialize + Send + Sync + 'static>(&mut self, k: &[u8], value: Option<T>, was_set: bool) {
        let Some(v) = value else {
            self.hot.forget(k);
            if was_set {
                self.table.delete_slice(k);
            }
            return;
        };
        match bincode::serialize(&v) {
            Ok(bytes) if bytes.len() < HOT_MIN_BYTES => {
                self.hot.forget(k);
                self.table.put_slice(k, Bytes::from(bytes));
            }
            Ok(bytes) => self.hot.insert(k, v, bytes.len()),
            Err(e) => self.fail(StateError::encode(e)),
        }
    }

    /// Reads the value of `key` in state `id`, lets `f` change it (`None`: absent or
    /// removed) and writes back what changed (see [`Self::store_at`]): one key encoding and
    /// one lookup, and no decoding when the value is held decoded.
    pub(crate) fn modify<K: StateKey, T: DeserializeOwned + Serialize + Send + Sync + 'static, R>(
        &mut self,
        id: u32,
        key: &K,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> R {
        let Some(k) = self.key_of(id, key) else {
            // The failure is recorded and fails the task; `f` still gets to run.
            return f(&mut None);
        };
        let f = match self.hot.modify(k.as_bytes(), f) {
            Ok((r, done)) => {
                match done {
                    Modified::Kept => {}
                    Modified::Removed => self.table.delete_slice(k.as_bytes()),
                    Modified::Unencodable(e) => self.fail(StateError::encode(e)),
                }
                return r;
            }
            Err(f) => f,
        };
        let mut v: Option<T> = self.get_at(k.as_bytes());
        let was_set = v.is_some();
        let r = f(&mut v);
        // After a failed read the task fails: nothing it changed is kept.
        if (v.is_some() || was_set) && self.failure.get().is_none() {
            self.store_at(k.as_bytes(), v, was_set);
        }
        r
    }

    /// Removes `key` from state `id`, returning what it held.
    pub(crate) fn take<K: StateKey, T: DeserializeOwned + Serialize + Send + Sync + 'static>(
        &mut self,
        id: u32,
        key: &K,
    ) -> Option<T> {
        self.modify(id, key, Option::take)
    }

    pub(crate) fn take_failure(&mut self) -> Option<StateError> {
        self.failure.take()
    }

    /// Restores one canonical entry (from a savepoint or a heap checkpoint) into state `id`.
    pub(crate) fn restore_raw(&mut self, id: u32, e: &KeyedEntry<'_>, value: &[u8]) {
        let k = encode_key(e.key_group, id, e.key);
        self.hot.forget(&k);
        self.table.put(k, Bytes::copy_from_slice(value));
    }

    /// Fetches what reading `keys` in states `ids` needs, after opening restored runs.
    pub(crate) async fn prefetch<K: StateKey>(&mut self, ids: &[u32], keys: &[K]) -> Result<(), StateError> {
        self.open_pending().await?;
        let Some((&first_id, other_ids)) = ids.split_first() else {
            return Ok(());
        };
        if !self.table.has_runs() {
            // Every key is in the memory table or nowhere: nothing to fetch.
            return Ok(());
        }
        let mut wanted = Vec::new();
        for key in keys {
            // One encoding and one hash per key, whatever the number of states; only keys
            // the memory table does not hold are copied out to be fetched.
            let kg = key_group_for(key, self.max_parallelism).0;
            let mut k = StoredKey::encode(kg, first_id, key).map_err(StateError::encode)?;
            for &id in std::iter::once(&first_id).chain(other_ids) {
                k.set_state(id);
                if !self.hot.contains(k.as_bytes()) && !self.table.in_memory(k.as_bytes()) {
                    wanted.push(Bytes::copy_from_slice(k.as_bytes()));
                }
            }
        }
        self.table.prefetch(&wanted).await?;
        match self.take_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn open_pending(&mut self) -> Result<(), StateError> {
        if !self.pending.is_empty() {
            // Attached all or none; on failure they stay pending, so no snapshot can be taken
            // without them (it would name too few runs).
            self.table.attach(&self.pending).await?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Unpins what the last prefetch pinned.
    pub(crate) fn release(&mut self) {
        self.table.release();
    }

    /// Between calls: writes the decoded values into the memory table when over their
    /// budget, flushes the memory table when over its own and compacts when there are many
    /// runs. A failed write keeps everything as it was and is tried again on the next call;
    /// only a memory table grown to four times its budget meanwhile fails the task.
    pub(crate) async fn maintain(&mut self) -> Result<(), StateError> {
        // Decoded values over their budget go first: into the memory table (which may then
        // be flushed below), before this call's keys are fetched.
        if self.hot.over_budget() {
            self.hot.evict(&mut self.table)?;
        }
        self.table.gauges().set_decoded(self.hot.bytes());
        // Restored runs first: a flush or compaction without them would treat the table as
        // having no older runs (and drop deletions they still need).
        self.open_pending().await?;
        if self.table.needs_flush() {
            if let Err(e) = self.table.flush().await {
                if self.table.memtable_bytes() > 4 * self.table.memtable_budget() {
                    return Err(e.into());
                }
            }
        }
        if self.table.needs_compaction() {
            // Compaction only saves reads: when the store fails, the runs stay as they are;
            // a damaged run is reported.
            if let Err(e @ TieredError::Corrupt { .. }) = self.table.compact().await {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Writes the decoded values into the memory table and the memory table out, so that
    /// the runs hold everything (before a snapshot). The values stay decoded.
    pub(crate) async fn flush(&mut self) -> Result<(), StateError> {
        // A value that does not encode fails the task (its next check).
        if let Err(e) = self.hot.write_back(&mut self.table) {
            let why = e.to_string();
            self.fail(e);
            self.flush_failure = Some(why.clone());
            return Err(StateError::Tiered(why));
        }
        let flushed = match self.open_pending().await {
            Ok(()) => self.table.flush().await.map_err(StateError::from),
            Err(e) => Err(e),
        };
        self.flush_failure = flushed.as_ref().err().map(ToString::to_string);
        flushed.map(drop)
    }

    /// The manifest of the current runs; the memory table must be empty (flushed).
    pub(crate) fn manifest(&self, states: Vec<ManifestState>) -> Result<Manifest, StateError> {
        if self.table.memtable_bytes() > 0
            || self.hot.has_dirty()
            || !self.pending.is_empty()
            || self.flush_failure.is_some()
        {
            return Err(StateError::Tiered(match &self.flush_failure {
                Some(why) => format!("the state in memory could not be written out for this snapshot: {why}"),
                None => "a tiered snapshot was taken without writing out the state in memory first".into(),
            }));
        }
        Ok(Manifest {
            max_parallelism: self.max_parallelism,
            states,
            runs: self
                .table
                .run_metas()
                .map(|(r, visible)| ManifestRun {
                    file: r.file().to_owned(),
                    key_groups: r.key_groups(),
                    // Only what this subtask owns is current here, whatever the run holds.
                    visible: (visible.0.max(self.owned.0), visible.1.min(self.owned.1)),
                    size: r.size(),
                })
                .collect(),
        })
    }

    /// Takes the runs of `m` that meet key groups `range` (opened at the next prefetch).
    pub(crate) fn restore_manifest(&mut self, m: &Manifest, range: KeyGroupRange) -> Result<(), StateError> {
        if m.max_parallelism != self.max_parallelism {
            return Err(StateError::Tiered(format!(
                "the snapshot was written with max parallelism {}, the job has {}: change it through a savepoint",
                m.max_parallelism, self.max_parallelism
            )));
        }
        if range.is_empty() {
            return Ok(());
        }
        self.owned = (range.start, range.end);
        set_owned(&mut self.table, range);
        self.pending
            .extend(m.runs_for(range.start, range.end).map(|(r, v)| (r.file.clone(), v)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored key on the stack or (when long) on the heap is the key [`encode_key`] makes,
    /// in whichever state it is moved to.
    #[test]
    fn stored_keys_match_the_canonical_encoding_short_and_long() {
        for key in ["k".to_string(), "x".repeat(INLINE_KEY * 2)] {
            let plain = bincode::serialize(&key).unwrap();
            let mut k = StoredKey::encode(7, 1, &key).unwrap();
            assert_eq!(k.as_bytes(), &encode_key(7, 1, &plain)[..]);
            k.set_state(9);
            assert_eq!(k.as_bytes(), &encode_key(7, 9, &plain)[..]);
        }
        // The boundary: a key of exactly INLINE_KEY bytes stays on the stack.
        let edge = "y".repeat(INLINE_KEY - 6 - 8);
        let k = StoredKey::encode(0, 0, &edge).unwrap();
        assert!(k.long.is_empty() && k.as_bytes().len() == INLINE_KEY);
    }
}
