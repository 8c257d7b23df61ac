//! The snapshot of one operator subtask: keyed state grouped by key group, plus operator (list)
//! state, in a versioned, checksummed binary file.
//!
//! File layout (all integers little-endian):
//!
//! ```text
//! magic  "SLCSTATE"            8 bytes
//! format version               u16   (STATE_FORMAT_VERSION)
//! body length                  u64
//! body                         bincode of StateFile
//! crc32 of everything above    u32
//! ```
//!
//! Inside the body, each key group's bytes are a sequence of entries
//! `[table u16][key len u32][key][value len u32][value]`, with keys and values in bincode.
//! A reader keeps only the key groups of its own range, which is how keyed state is
//! redistributed when the parallelism changes.

use std::collections::BTreeMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::key_group::{key_group_for, KeyGroupRange};
use crate::StateError;

/// The version of the state file format written by this build (it also reads version 1,
/// which had no state types).
pub const STATE_FORMAT_VERSION: u16 = 2;
const MAGIC: &[u8; 8] = b"SLCSTATE";

/// The decoded contents of one state file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    tables: Vec<String>,
    key_groups: Vec<(u32, Vec<u8>)>,
    operator: Vec<Vec<u8>>,
    /// The type of each table's keys and values (`key type => value type`), "" if unknown.
    /// A restore compares it with what the job declares, so a changed state type is refused
    /// instead of decoded wrongly (bincode is not self-describing).
    types: Vec<String>,
}

/// Version 1 of the body, without types.
#[derive(Deserialize)]
struct StateFileV1 {
    tables: Vec<String>,
    key_groups: Vec<(u32, Vec<u8>)>,
    operator: Vec<Vec<u8>>,
}

impl StateFile {
    /// Decodes and checks a state file; `name` (its path) appears in errors.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<StateFile, StateError> {
        decode(name, bytes)
    }

    /// The elements of operator list state in this file.
    pub fn operator_state(&self) -> &[Vec<u8>] {
        &self.operator
    }

    /// The key groups this file holds state for.
    pub fn key_groups(&self) -> impl Iterator<Item = u32> + '_ {
        self.key_groups.iter().map(|(kg, _)| *kg)
    }
}

/// Collects the state of one operator subtask while it is serialized.
#[derive(Debug)]
pub struct StateWriter {
    max_parallelism: u32,
    tables: Vec<String>,
    types: Vec<String>,
    groups: BTreeMap<u32, Vec<u8>>,
    operator: Vec<Vec<u8>>,
}

impl StateWriter {
    /// A writer for a job with `max_parallelism` key groups.
    pub fn new(max_parallelism: u32) -> Self {
        StateWriter {
            max_parallelism,
            tables: Vec::new(),
            types: Vec::new(),
            groups: BTreeMap::new(),
            operator: Vec::new(),
        }
    }

    /// The id of state table `name` in this file (registering it on first use).
    pub fn table(&mut self, name: &str) -> u16 {
        self.typed_table(name, "")
    }

    /// The id of state table `name` whose entries have type `types` (`key type => value
    /// type`), checked when the state is restored.
    pub fn typed_table(&mut self, name: &str, types: &str) -> u16 {
        if let Some(i) = self.tables.iter().position(|t| t == name) {
            return i as u16;
        }
        assert!(
            self.tables.len() < u16::MAX as usize,
            "too many state tables in one operator"
        );
        self.tables.push(name.to_string());
        self.types.push(types.to_string());
        (self.tables.len() - 1) as u16
    }

    /// Writes one keyed entry into the key group of `key`.
    pub fn write_keyed<K: Serialize + Hash + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        table: u16,
        key: &K,
        value: &V,
    ) -> Result<(), StateError> {
        let kg = key_group_for(key, self.max_parallelism);
        let buf = self.groups.entry(kg.0).or_default();
        buf.extend_from_slice(&table.to_le_bytes());
        write_framed(buf, key)?;
        write_framed(buf, value)?;
        Ok(())
    }

    /// Writes one keyed entry already encoded, into key group `key_group` (converting state
    /// kept elsewhere, e.g. in tiered runs, into this canonical form).
    pub fn write_keyed_raw(&mut self, table: u16, key_group: u32, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let too_big = |what: &str, n: usize| StateError::Encode(format!("a state {what} of {n} bytes is too large"));
        let key_len = u32::try_from(key.len()).map_err(|_| too_big("key", key.len()))?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_big("value", value.len()))?;
        let buf = self.groups.entry(key_group).or_default();
        buf.extend_from_slice(&table.to_le_bytes());
        buf.extend_from_slice(&key_len.to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(&value_len.to_le_bytes());
        buf.extend_from_slice(value);
        Ok(())
    }

    /// The max parallelism (number of key groups) this writer files entries under.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Adds one element of operator (non-keyed) list state.
    pub fn add_operator_state<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), StateError> {
        self.operator
            .push(bincode::serialize(value).map_err(StateError::encode)?);
        Ok(())
    }

    /// Adds one element of operator list state that is already encoded.
    pub fn add_operator_state_raw(&mut self, bytes: Vec<u8>) {
        self.operator.push(bytes);
    }

    /// The operator state elements added so far.
    pub fn operator_state(&self) -> &[Vec<u8>] {
        &self.operator
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.operator.is_empty()
    }

    /// Encodes the file (header, body, checksum).
    pub fn finish(self) -> Result<Vec<u8>, StateError> {
        let body = StateFile {
            tables: self.tables,
            key_groups: self.groups.into_iter().collect(),
            operator: self.operator,
            types: self.types,
        };
        let body = bincode::serialize(&body).map_err(StateError::encode)?;
        let mut out = Vec::with_capacity(body.len() + 22);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

fn write_framed<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), StateError> {
    let len_at = buf.len();
    buf.extend_from_slice(&[0u8; 4]);
    bincode::serialize_into(&mut *buf, v).map_err(StateError::encode)?;
    let len = (buf.len() - len_at - 4) as u32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// One keyed entry read back from a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct KeyedEntry<'a> {
    /// The state table's name.
    pub table: &'a str,
    /// The table's `key type => value type` as written, "" if the file does not say.
    pub types: &'a str,
    /// The key, in bincode.
    pub key: &'a [u8],
    /// The value, in bincode.
    pub value: &'a [u8],
    /// The key group the entry was written in.
    pub key_group: u32,
}

/// What one operator subtask restores: the keyed state of its key-group range, taken from
/// any number of state files of the operator, and its share of operator list state.
#[derive(Debug, Default, Clone)]
pub struct RestoredState {
    files: Vec<std::sync::Arc<StateFile>>,
    range: Option<KeyGroupRange>,
    operator: Vec<Vec<u8>>,
}

impl RestoredState {
    /// Nothing to restore.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Keyed state from `files`, restricted to `range`, and the given operator state.
    pub fn new(files: Vec<std::sync::Arc<StateFile>>, range: KeyGroupRange, operator: Vec<Vec<u8>>) -> Self {
        RestoredState {
            files,
            range: Some(range),
            operator,
        }
    }

    /// Decodes and checks `bytes` (named `name` in errors) and adds its keyed state and its
    /// operator state; keyed entries outside `range` will be skipped.
    pub fn add_file(&mut self, name: &str, bytes: &[u8], range: KeyGroupRange) -> Result<(), StateError> {
        self.range = Some(range);
        let f = decode(name, bytes)?;
        self.operator.extend(f.operator.iter().cloned());
        self.files.push(std::sync::Arc::new(f));
        Ok(())
    }

    /// Whether there is nothing to restore.
    pub fn is_empty(&self) -> bool {
        self.operator.is_empty() && self.files.iter().all(|f| f.key_groups.is_empty())
    }

    /// Calls `f` for every keyed entry in the range.
    pub fn for_each_keyed(
        &self,
        mut f: impl FnMut(KeyedEntry<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        for file in &self.files {
            for (kg, bytes) in &file.key_groups {
                if let Some(r) = self.range {
                    if !r.contains(crate::KeyGroup(*kg)) {
                        continue;
                    }
                }
                let mut rest: &[u8] = bytes;
                while !rest.is_empty() {
                    let (table, key, value, tail) = read_entry(rest)?;
                    let types = file.types.get(table as usize).map_or("", String::as_str);
                    let table = file.tables.get(table as usize).ok_or_else(|| {
                        StateError::Corrupt(format!(
                            "entry names state table #{table}, which the file does not list"
                        ))
                    })?;
                    f(KeyedEntry {
                        table,
                        types,
                        key,
                        value,
                        key_group: *kg,
                    })?;
                    rest = tail;
                }
            }
        }
        Ok(())
    }

    /// The elements of operator list state given to this subtask.
    pub fn operator_state(&self) -> impl Iterator<Item = &[u8]> {
        self.operator.iter().map(Vec::as_slice)
    }
}

/// `(table, key, value, rest)` of the entry at the start of a key group's bytes.
type EntryParts<'a> = (u16, &'a [u8], &'a [u8], &'a [u8]);

fn read_entry(b: &[u8]) -> Result<EntryParts<'_>, StateError> {
    let short = || StateError::Corrupt("keyed state entry is cut short".into());
    if b.len() < 2 {
        return Err(short());
    }
    let table = u16::from_le_bytes([b[0], b[1]]);
    let (key, rest) = read_framed(&b[2..]).ok_or_else(short)?;
    let (value, rest) = read_framed(rest).ok_or_else(short)?;
    Ok((table, key, value, rest))
}

fn read_framed(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let data = b.get(4..4 + len)?;
    Some((data, &b[4 + len..]))
}

fn decode(name: &str, bytes: &[u8]) -> Result<StateFile, StateError> {
    let bad = |what: String| StateError::Corrupt(format!("state file '{name}': {what}"));
    if bytes.len() < 22 {
        return Err(bad(format!(
            "truncated: {} bytes is shorter than the header",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(bad("not a Sluice state file (bad magic)".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != STATE_FORMAT_VERSION && version != 1 {
        return Err(bad(format!(
            "format version {version} is not supported (this build reads version {STATE_FORMAT_VERSION})"
        )));
    }
    let body_len = u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes")) as usize;
    let expected = 18usize.checked_add(body_len).and_then(|n| n.checked_add(4));
    if expected != Some(bytes.len()) {
        return Err(bad(format!(
            "truncated or padded: header says {} body bytes, file has {} bytes",
            body_len,
            bytes.len()
        )));
    }
    let crc_at = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[crc_at..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..crc_at]) != stored {
        return Err(bad("checksum mismatch: the file is corrupt".into()));
    }
    let body = &bytes[18..crc_at];
    if version == 1 {
        let v1: StateFileV1 = bincode::deserialize(body).map_err(|e| bad(format!("undecodable body: {e}")))?;
        let types = vec![String::new(); v1.tables.len()];
        return Ok(StateFile {
            tables: v1.tables,
            key_groups: v1.key_groups,
            operator: v1.operator,
            types,
        });
    }
    bincode::deserialize(body).map_err(|e| bad(format!("undecodable body: {e}")))
}

/// Checks that state table `table` was written with the types the job declares now.
pub fn check_types(table: &str, stored: &str, declared: &str) -> Result<(), StateError> {
    if stored.is_empty() || stored == declared {
        return Ok(());
    }
    Err(StateError::TypeChanged {
        state: table.to_string(),
        stored: stored.to_string(),
        declared: declared.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_format_version_1_still_decode_without_types() {
        #[derive(Serialize)]
        struct V1 {
            tables: Vec<String>,
            key_groups: Vec<(u32, Vec<u8>)>,
            operator: Vec<Vec<u8>>,
        }
        let body = bincode::serialize(&V1 {
            tables: vec!["count".into()],
            key_groups: vec![],
            operator: vec![vec![7]],
        })
        .unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let f = StateFile::decode("v1.state", &out).unwrap();
        assert_eq!(f.types, vec![String::new()]);
        assert_eq!(f.operator_state(), &[vec![7]]);
    }

    #[test]
    fn a_changed_type_is_named() {
        assert!(check_types("count", "", "u64 => u64").is_ok(), "unknown types pass");
        assert!(check_types("count", "u64 => u64", "u64 => u64").is_ok());
        let e = check_types("count", "u64 => u64", "u64 => i64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("state 'count'") && e.contains("u64 => i64"), "{e}");
    }

    fn sample() -> Vec<u8> {
        let mut w = StateWriter::new(8);
        let t = w.table("count");
        for k in 0..100u64 {
            w.write_keyed(t, &k, &(k * 10)).unwrap();
        }
        w.add_operator_state(&"offset-42").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_filters_by_key_group_range() {
        let bytes = sample();
        let mut all = BTreeMap::new();
        for i in 0..2 {
            let range = KeyGroupRange::for_subtask(8, 2, i);
            let mut r = RestoredState::empty();
            r.add_file("f", &bytes, range).unwrap();
            r.for_each_keyed(|e| {
                assert_eq!(e.table, "count");
                let k: u64 = bincode::deserialize(e.key).unwrap();
                let v: u64 = bincode::deserialize(e.value).unwrap();
                assert!(range.contains(key_group_for(&k, 8)));
                assert!(all.insert(k, v).is_none(), "key {k} restored twice");
                Ok(())
            })
            .unwrap();
            let ops: Vec<String> = r.operator_state().map(|b| bincode::deserialize(b).unwrap()).collect();
            assert_eq!(ops, ["offset-42"]);
        }
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|(k, v)| *v == k * 10));
    }

    #[test]
    fn corruption_truncation_and_versions_are_detected() {
        let good = sample();
        let range = KeyGroupRange::for_subtask(8, 1, 0);
        let err = |b: &[u8]| {
            RestoredState::empty()
                .add_file("chk-3/count-0", b, range)
                .unwrap_err()
                .to_string()
        };
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(err(&flipped).contains("checksum mismatch"), "{}", err(&flipped));
        assert!(err(&good[..good.len() - 10]).contains("truncated"));
        assert!(err(&good[..5]).contains("truncated"));
        let mut v2 = good.clone();
        v2[8] = 9;
        assert!(err(&v2).contains("format version 9"));
        assert!(err(b"hello world, not a state file").contains("bad magic"));
        assert!(err(&flipped).contains("chk-3/count-0"));
    }
}
