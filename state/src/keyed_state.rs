//! Per-key state tables of one keyed operator instance.

use std::any::{type_name, Any};
use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cow_map::{CowMap, FrozenMap};
use crate::keyed_tiered::{state_id, TieredKeyed};
use crate::snapshot::{KeyedEntry, StateWriter};
use crate::tiered::{Manifest, ManifestState, TieredTable};
use crate::StateError;

/// Handle to a value state: one optional `V` per key. Obtained from
/// [`KeyedStateStore::value_state`]; cheap to copy.
pub struct ValueState<V> {
    idx: usize,
    _v: PhantomData<fn() -> V>,
}

/// Handle to a list state: a list of `V` per key.
pub struct ListState<V> {
    idx: usize,
    _v: PhantomData<fn() -> V>,
}

/// Handle to a map state: a sorted map from `UK` to `UV` per key.
pub struct MapState<UK, UV> {
    idx: usize,
    _v: PhantomData<fn() -> (UK, UV)>,
}

macro_rules! copy_handle {
    ($t:ident < $($p:ident),* >) => {
        impl<$($p),*> Clone for $t<$($p),*> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),*> Copy for $t<$($p),*> {}
        impl<$($p),*> std::fmt::Debug for $t<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}#{}", stringify!($t), self.idx)
            }
        }
    };
}
copy_handle!(ValueState<V>);
copy_handle!(ListState<V>);
copy_handle!(MapState<UK, UV>);

/// What keys of keyed state need: hashable (key groups), cloneable, shareable with the
/// background snapshot writer, and serializable.
pub trait StateKey: Hash + Eq + Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Hash + Eq + Clone + Send + Sync + Serialize + DeserializeOwned + 'static> StateKey for T {}

/// What values of keyed state need: cloneable (copy-on-write while a snapshot is written),
/// shareable with the snapshot writer, and serializable.
pub trait StateValue: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> StateValue for T {}

/// A table of one state: one entry per key.
trait Table<K>: Send {
    fn freeze(&mut self) -> Box<dyn FrozenTable>;
    fn restore(&mut self, key: K, value: &[u8]) -> Result<(), StateError>;
    /// Checks that `value` decodes as this table's values (what `restore` would check).
    fn check(&self, value: &[u8]) -> Result<(), StateError>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A frozen table, written out in the background.
trait FrozenTable: Send {
    fn write(&self, table: u16, w: &mut StateWriter) -> Result<(), StateError>;
}

struct TypedTable<K, V>(CowMap<K, V>);

impl<K: StateKey, V: StateValue> Table<K> for TypedTable<K, V> {
    fn freeze(&mut self) -> Box<dyn FrozenTable> {
        Box::new(FrozenTyped(self.0.freeze()))
    }
    fn restore(&mut self, key: K, value: &[u8]) -> Result<(), StateError> {
        let v: V = bincode::deserialize(value)
            .map_err(|e| StateError::Corrupt(format!("undecodable {}: {e}", type_name::<V>())))?;
        self.0.insert(key, v);
        Ok(())
    }
    fn check(&self, value: &[u8]) -> Result<(), StateError> {
        bincode::deserialize::<V>(value)
            .map(drop)
            .map_err(|e| StateError::Corrupt(format!("undecodable {}: {e}", type_name::<V>())))
    }
    fn as_any(&self) -> &dyn Any {
        &self.0
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        &mut self.0
    }
}

struct FrozenTyped<K, V>(FrozenMap<K, V>);

impl<K: StateKey, V: StateValue> FrozenTable for FrozenTyped<K, V> {
    fn write(&self, table: u16, w: &mut StateWriter) -> Result<(), StateError> {
        for (k, v) in self.0.iter() {
            w.write_keyed(table, k, v)?;
        }
        Ok(())
    }
}

struct Slot<K> {
    name: String,
    type_name: &'static str,
    /// `key type => value type`, written with the table and checked on restore (made once
    /// here, not per restored entry).
    signature: String,
    /// The id its keys carry in the tiered backend.
    id: u32,
    table: Box<dyn Table<K>>,
}

/// The frozen state of a [`KeyedStateStore`]: taken in constant time, written out later.
pub struct KeyedSnapshot {
    tables: Vec<(String, String, Box<dyn FrozenTable>)>,
    /// The tiered backend's manifest (or why there is none), written as operator state.
    manifest: Option<Result<Vec<u8>, String>>,
}

impl std::fmt::Debug for KeyedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedSnapshot")
            .field("tables", &self.tables.len())
            .finish()
    }
}

impl KeyedSnapshot {
    /// Serializes every table into `w`, each entry into its key's key group.
    pub fn write(&self, w: &mut StateWriter) -> Result<(), StateError> {
        match &self.manifest {
            Some(Ok(m)) => w.add_operator_state_raw(m.clone()),
            Some(Err(e)) => return Err(StateError::Tiered(e.clone())),
            None => {}
        }
        for (name, types, t) in &self.tables {
            let id = w.typed_table(name, types);
            t.write(id, w)?;
        }
        Ok(())
    }
}

/// The keyed state of one operator instance: named tables, each holding one entry per key.
///
/// States are registered by name when the operator opens and used through typed handles, so a
/// lookup costs one type check and one hash probe. Keys are hashed with FxHash, which has no
/// random seed: iteration order is the same in every run. Tables are [`CowMap`]s, so
/// [`KeyedStateStore::freeze`] takes a snapshot in constant time.
///
/// ```
/// use sluice_state::KeyedStateStore;
/// let mut store = KeyedStateStore::<String>::new();
/// let count = store.value_state::<u64>("count").unwrap();
/// store.update_value(count, &"a".to_string(), |c| *c += 2);
/// assert_eq!(store.value(count, &"a".to_string()), Some(2));
/// ```
pub struct KeyedStateStore<K> {
    tables: Vec<Slot<K>>,
    by_name: BTreeMap<String, usize>,
    /// State migrations by state name: the types they convert from, and the conversion of one
    /// encoded value.
    migrations: BTreeMap<String, (String, Migration)>,
    /// Set when the states live in a tiered table instead of the heap tables.
    tiered: Option<Box<TieredKeyed>>,
}

/// Converts one encoded value of an old state type into the encoding of the new one.
type Migration = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, StateError> + Send>;

impl<K> std::fmt::Debug for KeyedStateStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStateStore")
            .field("states", &self.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<K> Default for KeyedStateStore<K> {
    fn default() -> Self {
        KeyedStateStore {
            tables: Vec::new(),
            by_name: BTreeMap::new(),
            migrations: BTreeMap::new(),
            tiered: None,
        }
    }
}

/// The tiered id of the state behind handle `idx`, checking (as the heap tables' downcast
/// does) that the handle's type is the state's: a handle of another store must not read some
/// other state.
fn tiered_id<K, T: Any>(tables: &[Slot<K>], idx: usize) -> u32 {
    let t = &tables[idx];
    assert!(
        t.table.as_any().is::<T>(),
        "state handle used with another store: '{}'",
        t.name
    );
    t.id
}

type Values<K, V> = CowMap<K, V>;
type Lists<K, V> = CowMap<K, Vec<V>>;
type Maps<K, UK, UV> = CowMap<K, BTreeMap<UK, UV>>;

impl<K: StateKey> KeyedStateStore<K> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn register<V: StateValue>(&mut self, name: &str) -> Result<usize, StateError> {
        if let Some(&idx) = self.by_name.get(name) {
            let t = &self.tables[idx];
            // Registering again with the same type returns the same state: an operator that is
            // reopened after a restore finds the state it had.
            if t.table.as_any().is::<CowMap<K, V>>() {
                return Ok(idx);
            }
            return Err(StateError::TypeMismatch {
                name: name.to_string(),
                registered: t.type_name,
                requested: type_name::<V>(),
            });
        }
        let id = state_id(name);
        if let Some(other) = self.tables.iter().find(|t| t.id == id) {
            return Err(StateError::Tiered(format!(
                "states '{}' and '{name}' have the same id in tiered keys: rename one of them",
                other.name
            )));
        }
        let idx = self.tables.len();
        self.tables.push(Slot {
            name: name.to_string(),
            type_name: type_name::<V>(),
            signature: format!("{} => {}", type_name::<K>(), type_name::<V>()),
            id,
            table: Box::new(TypedTable::<K, V>(CowMap::new())),
        });
        self.by_name.insert(name.to_string(), idx);
        Ok(idx)
    }

    /// Registers (or finds) the value state called `name`.
    pub fn value_state<V: StateValue>(&mut self, name: &str) -> Result<ValueState<V>, StateError> {
        let idx = self.register::<V>(name)?;
        Ok(ValueState { idx, _v: PhantomData })
    }

    /// Registers (or finds) the list state called `name`.
    pub fn list_state<V: StateValue>(&mut self, name: &str) -> Result<ListState<V>, StateError> {
        let idx = self.register::<Vec<V>>(name)?;
        Ok(ListState { idx, _v: PhantomData })
    }

    /// Registers (or finds) the map state called `name`.
    pub fn map_state<UK: StateValue + Ord, UV: StateValue>(
        &mut self,
        name: &str,
    ) -> Result<MapState<UK, UV>, StateError> {
        let idx = self.register::<BTreeMap<UK, UV>>(name)?;
        Ok(MapState { idx, _v: PhantomData })
    }

    fn table<T: Any>(&self, idx: usize) -> &T {
        let t = &self.tables[idx];
        t.table
            .as_any()
            .downcast_ref::<T>()
            .unwrap_or_else(|| panic!("state handle used with another store: '{}'", t.name))
    }

    fn table_mut<T: Any>(&mut self, idx: usize) -> &mut T {
        let t = &mut self.tables[idx];
        let name = &t.name;
        t.table
            .as_any_mut()
            .downcast_mut::<T>()
            .unwrap_or_else(|| panic!("state handle used with another store: '{name}'"))
    }

    /// The value of `key`, if set: a copy, as a backend that reads from a cache or from
    /// object storage hands out (use [`Self::with_value`] to look without copying).
    pub fn value<V: StateValue>(&self, s: ValueState<V>, key: &K) -> Option<V> {
        if let Some(t) = &self.tiered {
            return t.get(tiered_id::<K, Values<K, V>>(&self.tables, s.idx), key);
        }
        self.table::<Values<K, V>>(s.idx).get(key).cloned()
    }

    /// Calls `f` with the value of `key`, if set, and returns what it returns. Reading through
    /// a closure lets the heap backend lend its own copy and a tiered one a decoded one.
    pub fn with_value<V: StateValue, R>(&self, s: ValueState<V>, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        if let Some(t) = &self.tiered {
            return t.with(tiered_id::<K, Values<K, V>>(&self.tables, s.idx), key, f);
        }
        f(self.table::<Values<K, V>>(s.idx).get(key))
    }

    /// Sets the value of `key`.
    pub fn set_value<V: StateValue>(&mut self, s: ValueState<V>, key: &K, v: V) {
        if let Some(t) = &mut self.tiered {
            return t.put(tiered_id::<K, Values<K, V>>(&self.tables, s.idx), key, Some(v));
        }
        let t = self.table_mut::<Values<K, V>>(s.idx);
        match t.get_mut(key) {
            Some(slot) => *slot = v,
            None => t.insert(key.clone(), v),
        }
    }

    /// Updates the value of `key` in place, starting from `V::default()` if unset, and returns
    /// what `f` returns: one lookup, the way counters and aggregates are kept.
    pub fn update_value<V: StateValue + Default, R>(
        &mut self,
        s: ValueState<V>,
        key: &K,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        if let Some(t) = &mut self.tiered {
            return t.modify(
                tiered_id::<K, Values<K, V>>(&self.tables, s.idx),
                key,
                |v: &mut Option<V>| f(v.get_or_insert_with(V::default)),
            );
        }
        f(self
            .table_mut::<Values<K, V>>(s.idx)
            .get_or_insert_with(key, V::default))
    }

    /// Removes and returns the value of `key`.
    pub fn take_value<V: StateValue>(&mut self, s: ValueState<V>, key: &K) -> Option<V> {
        if let Some(t) = &mut self.tiered {
            return t.take(tiered_id::<K, Values<K, V>>(&self.tables, s.idx), key);
        }
        self.table_mut::<Values<K, V>>(s.idx).remove(key)
    }

    /// Lets `f` change the value of `key` (`None`: unset; setting it to `None` removes it)
    /// and returns what `f` returns: one key lookup for a read followed by a write.
    pub fn modify_value<V: StateValue, R>(
        &mut self,
        s: ValueState<V>,
        key: &K,
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> R {
        if let Some(t) = &mut self.tiered {
            return t.modify(tiered_id::<K, Values<K, V>>(&self.tables, s.idx), key, f);
        }
        let t = self.table_mut::<Values<K, V>>(s.idx);
        let mut v = t.remove(key);
        let r = f(&mut v);
        if let Some(v) = v {
            t.insert(key.clone(), v);
        }
        r
    }

    /// The list of `key` (empty if none): a copy (see [`Self::with_list`]).
    pub fn list<V: StateValue>(&self, s: ListState<V>, key: &K) -> Vec<V> {
        self.with_list(s, key, <[V]>::to_vec)
    }

    /// Calls `f` with the list of `key` (empty if none) and returns what it returns.
    pub fn with_list<V: StateValue, R>(&self, s: ListState<V>, key: &K, f: impl FnOnce(&[V]) -> R) -> R {
        if let Some(t) = &self.tiered {
            let id = tiered_id::<K, Lists<K, V>>(&self.tables, s.idx);
            return t.with(id, key, |l: Option<&Vec<V>>| f(l.map(Vec::as_slice).unwrap_or(&[])));
        }
        f(self
            .table::<Lists<K, V>>(s.idx)
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or(&[]))
    }

    /// Appends to the list of `key`.
    pub fn list_add<V: StateValue>(&mut self, s: ListState<V>, key: &K, v: V) {
        if let Some(t) = &mut self.tiered {
            return t.modify(
                tiered_id::<K, Lists<K, V>>(&self.tables, s.idx),
                key,
                |l: &mut Option<Vec<V>>| l.get_or_insert_with(Vec::new).push(v),
            );
        }
        self.table_mut::<Lists<K, V>>(s.idx)
            .get_or_insert_with(key, Vec::new)
            .push(v);
    }

    /// Removes and returns the list of `key`.
    pub fn take_list<V: StateValue>(&mut self, s: ListState<V>, key: &K) -> Vec<V> {
        if let Some(t) = &mut self.tiered {
            return t
                .take(tiered_id::<K, Lists<K, V>>(&self.tables, s.idx), key)
                .unwrap_or_default();
        }
        self.table_mut::<Lists<K, V>>(s.idx).remove(key).unwrap_or_default()
    }

    /// The value under `user_key` in the map of `key`: a copy.
    pub fn map_get<UK: StateValue + Ord, UV: StateValue>(
        &self,
        s: MapState<UK, UV>,
        key: &K,
        user_key: &UK,
    ) -> Option<UV> {
        self.with_map(s, key, |m| m.and_then(|m| m.get(user_key)).cloned())
    }

    /// Calls `f` with the map of `key`, if it has one, and returns what it returns.
    pub fn with_map<UK: StateValue + Ord, UV: StateValue, R>(
        &self,
        s: MapState<UK, UV>,
        key: &K,
        f: impl FnOnce(Option<&BTreeMap<UK, UV>>) -> R,
    ) -> R {
        if let Some(t) = &self.tiered {
            return t.with(tiered_id::<K, Maps<K, UK, UV>>(&self.tables, s.idx), key, f);
        }
        f(self.table::<Maps<K, UK, UV>>(s.idx).get(key))
    }

    /// Updates the map of `key` in place (starting empty if it has none) and returns what `f`
    /// returns. A map left empty is removed, so an emptied key holds no state.
    pub fn update_map<UK: StateValue + Ord, UV: StateValue, R>(
        &mut self,
        s: MapState<UK, UV>,
        key: &K,
        f: impl FnOnce(&mut BTreeMap<UK, UV>) -> R,
    ) -> R {
        if let Some(t) = &mut self.tiered {
            return t.modify(
                tiered_id::<K, Maps<K, UK, UV>>(&self.tables, s.idx),
                key,
                |m: &mut Option<BTreeMap<UK, UV>>| {
                    let map = m.get_or_insert_with(BTreeMap::new);
                    let r = f(map);
                    if map.is_empty() {
                        *m = None;
                    }
                    r
                },
            );
        }
        let t = self.table_mut::<Maps<K, UK, UV>>(s.idx);
        let m = t.get_or_insert_with(key, BTreeMap::new);
        let r = f(m);
        if m.is_empty() {
            t.remove(key);
        }
        r
    }

    /// Removes the map of `key`.
    pub fn take_map<UK: StateValue + Ord, UV: StateValue>(&mut self, s: MapState<UK, UV>, key: &K) -> BTreeMap<UK, UV> {
        if let Some(t) = &mut self.tiered {
            return t
                .take(tiered_id::<K, Maps<K, UK, UV>>(&self.tables, s.idx), key)
                .unwrap_or_default();
        }
        self.table_mut::<Maps<K, UK, UV>>(s.idx).remove(key).unwrap_or_default()
    }

    /// The names of the registered states, sorted.
    pub fn state_names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Declares a state migration: state `name` saved with table values of type `Old` (the
    /// value of a value state, `Vec<V>` of a list state, `BTreeMap<UK, UV>` of a map state) is
    /// restored by converting each value with `f`. Without one, restoring state saved with
    /// another type is refused. Call it in `open`, next to registering the state with its new
    /// type.
    pub fn migrate_state<Old: StateValue, New: StateValue>(
        &mut self,
        name: &str,
        f: impl Fn(Old) -> New + Send + 'static,
    ) {
        let from = format!("{} => {}", type_name::<K>(), type_name::<Old>());
        let state = name.to_string();
        let convert: Migration = Box::new(move |bytes: &[u8]| {
            let old: Old = bincode::deserialize(bytes).map_err(|e| {
                StateError::Corrupt(format!(
                    "migrating state '{state}': undecodable {}: {e}",
                    type_name::<Old>()
                ))
            })?;
            bincode::serialize(&f(old)).map_err(StateError::encode)
        });
        self.migrations.insert(name.to_string(), (from, convert));
    }

    /// Freezes every table for a snapshot (constant time per table).
    pub fn freeze(&mut self) -> KeyedSnapshot {
        if let Some(t) = &self.tiered {
            let states = self
                .tables
                .iter()
                .map(|s| ManifestState {
                    name: s.name.clone(),
                    id: s.id,
                    types: s.signature.clone(),
                })
                .collect();
            let manifest = t
                .manifest(states)
                .and_then(|m| m.encode().map_err(StateError::from))
                .map_err(|e| match e {
                    // Wrapped again when written: the message alone.
                    StateError::Tiered(why) => why,
                    other => other.to_string(),
                });
            return KeyedSnapshot {
                tables: Vec::new(),
                manifest: Some(manifest),
            };
        }
        KeyedSnapshot {
            tables: self
                .tables
                .iter_mut()
                .map(|s| (s.name.clone(), s.signature.clone(), s.table.freeze()))
                .collect(),
            manifest: None,
        }
    }

    /// Restores one entry if it belongs to a registered table; returns whether it did.
    pub fn restore_entry(&mut self, e: &KeyedEntry<'_>) -> Result<bool, StateError> {
        let Some(&idx) = self.by_name.get(e.table) else {
            return Ok(false);
        };
        let key: K = bincode::deserialize(e.key)
            .map_err(|err| StateError::Corrupt(format!("undecodable key in state '{}': {err}", e.table)))?;
        let slot = &mut self.tables[idx];
        match self.migrations.get(e.table) {
            // A file without types (format version 1) cannot say whether it needs the
            // migration: its values are taken as they are, as before types were recorded.
            Some((from, convert)) if !e.types.is_empty() && e.types == from && e.types != slot.signature => {
                let value = convert(e.value)?;
                match &mut self.tiered {
                    Some(t) => {
                        slot.table.check(&value)?;
                        t.restore_raw(slot.id, e, &value);
                    }
                    None => slot.table.restore(key, &value)?,
                }
            }
            _ => {
                crate::snapshot::check_types(e.table, e.types, &slot.signature)?;
                match &mut self.tiered {
                    Some(t) => {
                        slot.table.check(e.value)?;
                        t.restore_raw(slot.id, e, e.value);
                    }
                    None => slot.table.restore(key, e.value)?,
                }
            }
        }
        Ok(true)
    }
}

/// The tiered backend: state in a [`TieredTable`] (runs in the checkpoint store, read
/// through a block cache) instead of heap tables. Reads of keys not in memory must be
/// prefetched first ([`Self::prefetch`]).
impl<K: StateKey> KeyedStateStore<K> {
    /// Keeps every state in `table` from now on. Call it before any state is written or
    /// restored (an operator's `open`).
    /// `owned` is the subtask's key-group range: only its entries are current in what the
    /// subtask's snapshots name.
    pub fn use_tiered(&mut self, table: TieredTable, max_parallelism: u32, owned: crate::KeyGroupRange) {
        self.tiered = Some(Box::new(TieredKeyed::new(table, max_parallelism, owned)));
    }

    /// Whether the states are tiered.
    pub fn is_tiered(&self) -> bool {
        self.tiered.is_some()
    }

    /// Fetches what reading the state of `keys` needs (every registered state of each key);
    /// nothing to do on the heap.
    pub async fn prefetch(&mut self, keys: &[K]) -> Result<(), StateError> {
        let Some(t) = &mut self.tiered else { return Ok(()) };
        let ids: Vec<u32> = self.tables.iter().map(|s| s.id).collect();
        t.prefetch(&ids, keys).await
    }

    /// Unpins what the last prefetch pinned.
    pub fn release(&mut self) {
        if let Some(t) = &mut self.tiered {
            t.release();
        }
    }

    /// Flushes or compacts when the memory table or the number of runs is over its budget.
    pub async fn maintain(&mut self) -> Result<(), StateError> {
        match &mut self.tiered {
            Some(t) => t.maintain().await,
            None => Ok(()),
        }
    }

    /// Writes everything in memory to runs: what a snapshot of a tiered store needs first.
    pub async fn flush(&mut self) -> Result<(), StateError> {
        match &mut self.tiered {
            Some(t) => t.flush().await,
            None => Ok(()),
        }
    }

    /// The first failure of a tiered read or write since the last call (reads answer `None`
    /// after one): the operator fails its task with it, before its output leaves.
    pub fn take_failure(&mut self) -> Option<StateError> {
        self.tiered.as_mut().and_then(|t| t.take_failure())
    }

    /// Restores from an operator-state element if it is a tiered manifest (returns whether it
    /// was): checks the states' types and takes the runs that meet key groups `range`.
    pub fn restore_manifest(
        &mut self,
        file: &str,
        bytes: &[u8],
        range: crate::KeyGroupRange,
    ) -> Result<bool, StateError> {
        if !Manifest::is_manifest(bytes) {
            return Ok(false);
        }
        let m = Manifest::decode(file, bytes)?;
        for st in &m.states {
            let Some(&idx) = self.by_name.get(&st.name) else {
                return Err(StateError::UnknownState(st.name.clone()));
            };
            let slot = &self.tables[idx];
            crate::snapshot::check_types(&st.name, &st.types, &slot.signature)?;
            if st.id != slot.id {
                return Err(StateError::Tiered(format!(
                    "state '{}' has id {} in the snapshot, {} now",
                    st.name, st.id, slot.id
                )));
            }
        }
        let Some(t) = &mut self.tiered else {
            return Err(StateError::Tiered(
                "the snapshot keeps this operator's state in tiered runs, but the job uses the heap backend: restore it with --state-backend tiered, or take a savepoint with the tiered backend and start the heap job from it".into(),
            ));
        };
        t.restore_manifest(&m, range)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved_u32_counts() -> crate::RestoredState {
        let mut old = KeyedStateStore::<u32>::new();
        let count = old.value_state::<u32>("count").unwrap();
        for k in 0..10u32 {
            old.set_value(count, &k, k + 1);
        }
        let mut w = crate::StateWriter::new(128);
        old.freeze().write(&mut w).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = crate::RestoredState::empty();
        r.add_file("t.state", &bytes, crate::KeyGroupRange::for_subtask(128, 1, 0))
            .unwrap();
        r
    }

    #[test]
    fn a_changed_state_type_is_refused_unless_migrated() {
        let r = saved_u32_counts();
        let mut plain = KeyedStateStore::<u32>::new();
        plain.value_state::<u64>("count").unwrap();
        let err = r
            .for_each_keyed(|e| plain.restore_entry(&e).map(|_| ()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state 'count'") && err.contains("u32 => u32") && err.contains("u32 => u64"),
            "{err}"
        );

        let mut migrated = KeyedStateStore::<u32>::new();
        let count = migrated.value_state::<u64>("count").unwrap();
        migrated.migrate_state::<u32, u64>("count", |v| u64::from(v) * 1000);
        r.for_each_keyed(|e| migrated.restore_entry(&e).map(|_| ())).unwrap();
        for k in 0..10u32 {
            assert_eq!(migrated.value(count, &k), Some(u64::from(k + 1) * 1000));
        }
    }

    #[test]
    fn states_are_isolated_per_key_and_name() {
        let mut s = KeyedStateStore::<u32>::new();
        let a = s.value_state::<i64>("a").unwrap();
        let b = s.value_state::<i64>("b").unwrap();
        s.set_value(a, &1, 10);
        s.set_value(b, &1, 20);
        s.set_value(a, &2, 30);
        assert_eq!(s.value(a, &1), Some(10));
        assert_eq!(s.value(b, &1), Some(20));
        assert_eq!(s.value(b, &2), None);
        assert_eq!(s.take_value(a, &1), Some(10));
        assert_eq!(s.value(a, &1), None);
    }

    #[test]
    fn re_registering_same_type_returns_same_state_and_other_type_is_refused() {
        let mut s = KeyedStateStore::<u32>::new();
        let a = s.list_state::<String>("l").unwrap();
        s.list_add(a, &7, "x".into());
        let again = s.list_state::<String>("l").unwrap();
        assert_eq!(s.list(again, &7), ["x".to_string()]);
        let err = s.value_state::<u8>("l").unwrap_err();
        assert!(err.to_string().contains("state 'l' has type"), "{err}");
    }

    #[test]
    fn map_state_keeps_entries_sorted() {
        let mut s = KeyedStateStore::<String>::new();
        let m = s.map_state::<u32, u32>("m").unwrap();
        let k = "k".to_string();
        s.update_map(m, &k, |m| m.insert(3, 30));
        s.update_map(m, &k, |m| m.insert(1, 10));
        let keys: Vec<_> = s.with_map(m, &k, |m| m.unwrap().keys().copied().collect());
        assert_eq!(keys, [1, 3]);
        assert_eq!(s.map_get(m, &k, &3), Some(30));
        assert!(s.with_map(m, &"other".to_string(), |m| m.is_none()));
        s.update_map(m, &k, |m| m.clear());
        assert!(s.with_map(m, &k, |m| m.is_none()), "an emptied map holds no state");
    }

    #[test]
    fn snapshot_restores_into_a_fresh_store_and_ignores_later_writes() {
        let mut s = KeyedStateStore::<u32>::new();
        let v = s.value_state::<String>("v").unwrap();
        let l = s.list_state::<u8>("l").unwrap();
        for k in 0..50u32 {
            s.set_value(v, &k, format!("v{k}"));
            s.list_add(l, &k, k as u8);
        }
        let snap = s.freeze();
        s.set_value(v, &1, "changed".into());
        s.list_add(l, &1, 99);
        let mut w = crate::StateWriter::new(16);
        snap.write(&mut w).unwrap();
        let bytes = w.finish().unwrap();
        let mut restored = KeyedStateStore::<u32>::new();
        let v2 = restored.value_state::<String>("v").unwrap();
        let l2 = restored.list_state::<u8>("l").unwrap();
        let mut r = crate::RestoredState::empty();
        r.add_file("t", &bytes, crate::KeyGroupRange::for_subtask(16, 1, 0))
            .unwrap();
        r.for_each_keyed(|e| {
            assert!(restored.restore_entry(&e)?, "table {} is registered", e.table);
            Ok(())
        })
        .unwrap();
        for k in 0..50u32 {
            assert_eq!(restored.value(v2, &k), Some(format!("v{k}")));
            assert_eq!(restored.list(l2, &k), [k as u8]);
        }
    }
}
