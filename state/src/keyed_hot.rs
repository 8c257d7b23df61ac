//! The decoded values of the tiered store's recently written keys.
//!
//! A tiered value lives encoded (bincode) in the memory table or in runs. Decoding it and
//! encoding it again on every read-modify-write costs in proportion to the value, per record:
//! a window that holds the records it joins was decoded and re-encoded whole for each record
//! it took. Here a written value stays decoded, as the heap backend keeps it: it is encoded
//! into the table when the store flushes (before a snapshot; it stays decoded after, as a
//! clean copy) and when these values outgrow their budget (then all are written back and
//! dropped, between calls only: see [`HotValues::evict`]). A read-modify-write of a decoded
//! value only walks it to estimate its size.
//!
//! Only values of at least [`HOT_MIN_BYTES`] encoded are kept so: a small value (a counter, a
//! pair of numbers) decodes and encodes in less time than a box and a map entry take. A value
//! that is removed leaves at once, its deletion written to the table.
//!
//! Entries are keyed by the stored key (`[key group][state id][key]`), so one map serves every
//! state of the store; the value is the state's `Option<T>` (always `Some` between calls),
//! with the function that encodes it.

use std::any::Any;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::tiered::TieredTable;
use crate::StateError;

/// What one entry costs beyond its encoded value (the map slot, the box, the key's header),
/// and how much larger a decoded value is taken to be than its encoding (strings and vectors
/// carry a header and spare capacity each).
const ENTRY_OVERHEAD: usize = 96;
const DECODED_FACTOR: usize = 2;

/// Values smaller than this (encoded) go to the table as they are written.
pub(crate) const HOT_MIN_BYTES: usize = 64;

/// Encodes an entry's `Option<T>` (`None`: a deletion).
type Encode = fn(&dyn Any) -> bincode::Result<Option<Vec<u8>>>;

struct Hot {
    value: Box<dyn Any + Send + Sync>,
    /// Changed since it was last written to the table.
    dirty: bool,
    /// Estimated bytes held (see [`estimate`]).
    size: usize,
    encode: Encode,
}

/// Decoded values of a tiered store, by stored key (see the module docs).
pub(crate) struct HotValues {
    /// Looked up by key; iterated only to write back into the table, whose memory table is
    /// itself a hash map sorted when written out: the order shows nowhere.
    entries: FxHashMap<Box<[u8]>, Hot>,
    bytes: usize,
    budget: usize,
}

fn encode_as<T: Serialize + 'static>(v: &dyn Any) -> bincode::Result<Option<Vec<u8>>> {
    v.downcast_ref::<Option<T>>()
        .expect("an entry's encoder is made for the type it holds")
        .as_ref()
        .map(bincode::serialize)
        .transpose()
}

/// What [`HotValues::modify`] did to a value it holds.
pub(crate) enum Modified {
    /// Kept, changed or not.
    Kept,
    /// Removed by `f`: gone from here, the caller writes the deletion.
    Removed,
    /// `f` left a value that cannot be encoded (it stays, dirty): the task must fail.
    Unencodable(bincode::Error),
}

/// The bytes an entry of `key` holding a value of `encoded` bytes is taken to cost: scaled
/// for decoding, and the bookkeeping.
fn estimate(key: &[u8], encoded: usize) -> usize {
    key.len() + DECODED_FACTOR * encoded + ENTRY_OVERHEAD
}

impl HotValues {
    /// No values, holding up to about `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
        HotValues {
            entries: FxHashMap::default(),
            bytes: 0,
            budget,
        }
    }

    /// Whether `key` is here: reading it needs no table.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    /// The value of `key` if it is here.
    pub(crate) fn get<T: 'static>(&self, key: &[u8]) -> Option<&Option<T>> {
        self.entries.get(key).map(|h| {
            h.value
                .downcast_ref::<Option<T>>()
                .expect("a stored key names one state, of one type")
        })
    }

    /// Lets `f` change the value of `key` if it is here, and says what became of it; gives
    /// `f` back if not here.
    pub(crate) fn modify<T, R, F>(&mut self, key: &[u8], f: F) -> Result<(R, Modified), F>
    where
        T: Serialize + 'static,
        F: FnOnce(&mut Option<T>) -> R,
    {
        let Some(h) = self.entries.get_mut(key) else {
            return Err(f);
        };
        let v = h
            .value
            .downcast_mut::<Option<T>>()
            .expect("a stored key names one state, of one type");
        let r = f(v);
        h.dirty = true;
        if v.is_none() {
            self.forget(key);
            return Ok((r, Modified::Removed));
        }
        match bincode::serialized_size(v) {
            Ok(n) => {
                let size = estimate(key, n as usize);
                self.bytes = self.bytes - h.size + size;
                h.size = size;
                Ok((r, Modified::Kept))
            }
            Err(e) => Ok((r, Modified::Unencodable(e))),
        }
    }

    /// Keeps `v` (of `encoded` bytes) as the changed value of `key`.
    pub(crate) fn insert<T: Serialize + Send + Sync + 'static>(&mut self, key: &[u8], v: T, encoded: usize) {
        let size = estimate(key, encoded);
        self.bytes += size;
        if let Some(h) = self.entries.get_mut(key) {
            // Replaced in place: the stored key is not copied again.
            self.bytes -= h.size;
            h.value = Box::new(Some(v));
            h.size = size;
            h.dirty = true;
            h.encode = encode_as::<T>;
            return;
        }
        let hot = Hot {
            value: Box::new(Some(v)),
            dirty: true,
            size,
            encode: encode_as::<T>,
        };
        self.entries.insert(key.into(), hot);
    }

    /// Forgets `key` (the caller writes its newer value, or its deletion, to the table).
    pub(crate) fn forget(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.size;
        }
    }

    /// Estimated bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the values outgrew their budget.
    pub(crate) fn over_budget(&self) -> bool {
        self.bytes > self.budget
    }

    /// Whether some value changed since it was last written to the table.
    pub(crate) fn has_dirty(&self) -> bool {
        self.entries.values().any(|h| h.dirty)
    }

    /// Encodes every changed value into `table` (the values stay, unchanged since). A value
    /// that does not encode stops it: the task fails with that error.
    pub(crate) fn write_back(&mut self, table: &mut TieredTable) -> Result<(), StateError> {
        for (key, h) in self.entries.iter_mut().filter(|(_, h)| h.dirty) {
            match (h.encode)(h.value.as_ref()).map_err(StateError::encode)? {
                Some(bytes) => table.put_slice(key, bytes.into()),
                // Never between calls (`modify` drops a removed value); a deletion all the
                // same if it were.
                None => table.delete_slice(key),
            }
            h.dirty = false;
        }
        Ok(())
    }

    /// Writes every changed value back into `table` and drops them all. Only between calls
    /// (before the keys of the next call are fetched): a key read in a call was not fetched
    /// when it was here, and a clean value dropped in the middle of the call would be found
    /// in neither place.
    pub(crate) fn evict(&mut self, table: &mut TieredTable) -> Result<(), StateError> {
        self.write_back(table)?;
        self.entries.clear();
        self.bytes = 0;
        Ok(())
    }
}
