//! Per-key state tables of one keyed operator instance.

use std::any::{type_name, Any};
use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;

use rustc_hash::FxHashMap;

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

struct Table {
    name: String,
    type_name: &'static str,
    data: Box<dyn Any + Send>,
}

/// The keyed state of one operator instance: named tables, each holding one entry per key.
///
/// States are registered by name when the operator opens and used through typed handles, so a
/// lookup costs one type check and one hash probe. Keys are hashed with FxHash, which has no
/// random seed: iteration order is the same in every run.
///
/// ```
/// use sluice_state::KeyedStateStore;
/// let mut store = KeyedStateStore::<String>::new();
/// let count = store.value_state::<u64>("count").unwrap();
/// *store.value_mut_or_default(count, &"a".to_string()) += 2;
/// assert_eq!(store.value(count, &"a".to_string()), Some(&2));
/// ```
pub struct KeyedStateStore<K> {
    tables: Vec<Table>,
    by_name: BTreeMap<String, usize>,
    _k: PhantomData<fn() -> K>,
}

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
            _k: PhantomData,
        }
    }
}

type Values<K, V> = FxHashMap<K, V>;
type Lists<K, V> = FxHashMap<K, Vec<V>>;
type Maps<K, UK, UV> = FxHashMap<K, BTreeMap<UK, UV>>;

impl<K: Hash + Eq + Clone + Send + 'static> KeyedStateStore<K> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn register<T: Any + Send + Default>(&mut self, name: &str) -> Result<usize, StateError> {
        if let Some(&idx) = self.by_name.get(name) {
            let t = &self.tables[idx];
            // Registering again with the same type returns the same state: an operator that is
            // reopened after a restore finds the state it had.
            if t.data.is::<T>() {
                return Ok(idx);
            }
            return Err(StateError::TypeMismatch {
                name: name.to_string(),
                registered: t.type_name,
                requested: type_name::<T>(),
            });
        }
        let idx = self.tables.len();
        self.tables.push(Table {
            name: name.to_string(),
            type_name: type_name::<T>(),
            data: Box::new(T::default()),
        });
        self.by_name.insert(name.to_string(), idx);
        Ok(idx)
    }

    /// Registers (or finds) the value state called `name`.
    pub fn value_state<V: Send + 'static>(&mut self, name: &str) -> Result<ValueState<V>, StateError> {
        let idx = self.register::<Values<K, V>>(name)?;
        Ok(ValueState { idx, _v: PhantomData })
    }

    /// Registers (or finds) the list state called `name`.
    pub fn list_state<V: Send + 'static>(&mut self, name: &str) -> Result<ListState<V>, StateError> {
        let idx = self.register::<Lists<K, V>>(name)?;
        Ok(ListState { idx, _v: PhantomData })
    }

    /// Registers (or finds) the map state called `name`.
    pub fn map_state<UK: Ord + Send + 'static, UV: Send + 'static>(
        &mut self,
        name: &str,
    ) -> Result<MapState<UK, UV>, StateError> {
        let idx = self.register::<Maps<K, UK, UV>>(name)?;
        Ok(MapState { idx, _v: PhantomData })
    }

    fn table<T: Any>(&self, idx: usize) -> &T {
        let t = &self.tables[idx];
        t.data
            .downcast_ref::<T>()
            .unwrap_or_else(|| panic!("state handle used with another store: '{}'", t.name))
    }

    fn table_mut<T: Any>(&mut self, idx: usize) -> &mut T {
        let t = &mut self.tables[idx];
        let name = &t.name;
        t.data
            .downcast_mut::<T>()
            .unwrap_or_else(|| panic!("state handle used with another store: '{name}'"))
    }

    /// The value of `key`, if set.
    pub fn value<V: Send + 'static>(&self, s: ValueState<V>, key: &K) -> Option<&V> {
        self.table::<Values<K, V>>(s.idx).get(key)
    }

    /// Sets the value of `key`.
    pub fn set_value<V: Send + 'static>(&mut self, s: ValueState<V>, key: &K, v: V) {
        let t = self.table_mut::<Values<K, V>>(s.idx);
        match t.get_mut(key) {
            Some(slot) => *slot = v,
            None => {
                t.insert(key.clone(), v);
            }
        }
    }

    /// The value of `key` for in-place update, inserting `V::default()` first if unset.
    pub fn value_mut_or_default<V: Send + Default + 'static>(&mut self, s: ValueState<V>, key: &K) -> &mut V {
        let t = self.table_mut::<Values<K, V>>(s.idx);
        if !t.contains_key(key) {
            t.insert(key.clone(), V::default());
        }
        t.get_mut(key).expect("inserted just above")
    }

    /// Removes and returns the value of `key`.
    pub fn take_value<V: Send + 'static>(&mut self, s: ValueState<V>, key: &K) -> Option<V> {
        self.table_mut::<Values<K, V>>(s.idx).remove(key)
    }

    /// The list of `key` (empty if none).
    pub fn list<V: Send + 'static>(&self, s: ListState<V>, key: &K) -> &[V] {
        self.table::<Lists<K, V>>(s.idx)
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Appends to the list of `key`.
    pub fn list_add<V: Send + 'static>(&mut self, s: ListState<V>, key: &K, v: V) {
        let t = self.table_mut::<Lists<K, V>>(s.idx);
        match t.get_mut(key) {
            Some(l) => l.push(v),
            None => {
                t.insert(key.clone(), vec![v]);
            }
        }
    }

    /// Removes and returns the list of `key`.
    pub fn take_list<V: Send + 'static>(&mut self, s: ListState<V>, key: &K) -> Vec<V> {
        self.table_mut::<Lists<K, V>>(s.idx).remove(key).unwrap_or_default()
    }

    /// The map of `key`, if it has one.
    pub fn map<UK: Ord + Send + 'static, UV: Send + 'static>(
        &self,
        s: MapState<UK, UV>,
        key: &K,
    ) -> Option<&BTreeMap<UK, UV>> {
        self.table::<Maps<K, UK, UV>>(s.idx).get(key)
    }

    /// The map of `key` for update, created empty if absent.
    pub fn map_mut<UK: Ord + Send + 'static, UV: Send + 'static>(
        &mut self,
        s: MapState<UK, UV>,
        key: &K,
    ) -> &mut BTreeMap<UK, UV> {
        let t = self.table_mut::<Maps<K, UK, UV>>(s.idx);
        if !t.contains_key(key) {
            t.insert(key.clone(), BTreeMap::new());
        }
        t.get_mut(key).expect("inserted just above")
    }

    /// Removes the map of `key`.
    pub fn take_map<UK: Ord + Send + 'static, UV: Send + 'static>(
        &mut self,
        s: MapState<UK, UV>,
        key: &K,
    ) -> BTreeMap<UK, UV> {
        self.table_mut::<Maps<K, UK, UV>>(s.idx).remove(key).unwrap_or_default()
    }

    /// The names of the registered states, sorted.
    pub fn state_names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_isolated_per_key_and_name() {
        let mut s = KeyedStateStore::<u32>::new();
        let a = s.value_state::<i64>("a").unwrap();
        let b = s.value_state::<i64>("b").unwrap();
        s.set_value(a, &1, 10);
        s.set_value(b, &1, 20);
        s.set_value(a, &2, 30);
        assert_eq!(s.value(a, &1), Some(&10));
        assert_eq!(s.value(b, &1), Some(&20));
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
        let mut s = KeyedStateStore::<&'static str>::new();
        let m = s.map_state::<u32, u32>("m").unwrap();
        s.map_mut(m, &"k").insert(3, 30);
        s.map_mut(m, &"k").insert(1, 10);
        let keys: Vec<_> = s.map(m, &"k").unwrap().keys().copied().collect();
        assert_eq!(keys, [1, 3]);
        assert!(s.map(m, &"other").is_none());
    }
}
