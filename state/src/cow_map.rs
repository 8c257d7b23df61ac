//! A hash map whose snapshot is taken in constant time and serialized while the map keeps
//! changing.
//!
//! The map keeps its entries in a `base` table behind an `Arc`. A snapshot freezes the base by
//! cloning the `Arc` (no entry is copied). While a snapshot holds the base, writes go to a
//! `delta` table instead (copy-on-write per entry: an entry updated in place is copied from
//! the base first). When the snapshot is dropped, the next write folds the delta back into the
//! base. So the synchronous cost of a snapshot does not grow with the size of the state, and
//! the cost of the copy-on-write is proportional to what changes while a snapshot is written.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// A frozen, shareable version of a [`CowMap`].
pub type FrozenMap<K, V> = Arc<FxHashMap<K, V>>;

/// A hash map with constant-time snapshots (see the module docs).
#[derive(Debug)]
pub struct CowMap<K, V> {
    base: Arc<FxHashMap<K, V>>,
    /// Changes made while `base` was shared; `None` marks a deleted entry.
    delta: FxHashMap<K, Option<V>>,
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            base: Arc::new(FxHashMap::default()),
            delta: FxHashMap::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The base table for direct writes, if no snapshot shares it; folds a pending delta in
    /// first.
    #[inline]
    fn writable_base(&mut self) -> Option<&mut FxHashMap<K, V>> {
        let base = Arc::get_mut(&mut self.base)?;
        if !self.delta.is_empty() {
            for (k, v) in self.delta.drain() {
                match v {
                    Some(v) => {
                        base.insert(k, v);
                    }
                    None => {
                        base.remove(&k);
                    }
                }
            }
        }
        Some(base)
    }

    /// The value of `key`.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.delta.is_empty() {
            if let Some(v) = self.delta.get(key) {
                return v.as_ref();
            }
        }
        self.base.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets the value of `key`.
    #[inline]
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(base) = self.writable_base() {
            base.insert(key, value);
        } else {
            self.delta.insert(key, Some(value));
        }
    }

    /// Removes and returns the value of `key`.
    #[inline]
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(base) = self.writable_base() {
            return base.remove(key);
        }
        let old = self.get(key).cloned();
        if old.is_some() {
            self.delta.insert(key.to_owned(), None);
        }
        old
    }

    /// The value of `key` for update in place (copied out of a shared base first).
    #[inline]
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if Arc::get_mut(&mut self.base).is_some() {
            return self.writable_base().and_then(|b| b.get_mut(key));
        }
        if !self.delta.contains_key(key) {
            let v = self.base.get(key)?.clone();
            self.delta.insert(key.to_owned(), Some(v));
        }
        self.delta.get_mut(key).and_then(Option::as_mut)
    }

    /// The value of `key` for update, inserting `make()` if absent.
    #[inline]
    pub fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        if !self.contains_key(key) {
            self.insert(key.clone(), make());
        }
        self.get_mut(key).expect("present: checked or inserted just above")
    }

    /// Freezes the current contents for a snapshot, in time independent of the map's size
    /// (only a delta left over from an earlier snapshot that is still being written is copied).
    pub fn freeze(&mut self) -> FrozenMap<K, V> {
        if !self.delta.is_empty() && self.writable_base().is_none() {
            // An earlier snapshot still holds the base: build a new base from it and the
            // delta. This copies the map, but only when snapshots overlap.
            let mut fresh: FxHashMap<K, V> = (*self.base).clone();
            for (k, v) in self.delta.drain() {
                match v {
                    Some(v) => {
                        fresh.insert(k, v);
                    }
                    None => {
                        fresh.remove(&k);
                    }
                }
            }
            self.base = Arc::new(fresh);
        }
        self.base.clone()
    }

    /// The number of keys with a value.
    pub fn len(&self) -> usize {
        if self.delta.is_empty() {
            return self.base.len();
        }
        let mut n = self.base.len();
        for (k, v) in &self.delta {
            match (self.base.contains_key(k), v.is_some()) {
                (true, false) => n -= 1,
                (false, true) => n += 1,
                _ => {}
            }
        }
        n
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.base = Arc::new(FxHashMap::default());
        self.delta.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn snapshot_is_unaffected_by_later_writes() {
        let mut m = CowMap::new();
        m.insert(1, "a".to_string());
        m.insert(2, "b".to_string());
        let snap = m.freeze();
        m.insert(1, "x".to_string());
        m.get_mut(&2).unwrap().push('!');
        m.remove(&1);
        m.insert(3, "c".to_string());
        assert_eq!(snap.get(&1).map(String::as_str), Some("a"));
        assert_eq!(snap.get(&2).map(String::as_str), Some("b"));
        assert_eq!(snap.len(), 2);
        assert_eq!(m.get(&1), None);
        assert_eq!(m.get(&2).map(String::as_str), Some("b!"));
        assert_eq!(m.len(), 2);
        drop(snap);
        m.insert(4, "d".to_string());
        assert!(m.delta.is_empty(), "the delta folds back once the snapshot is gone");
        assert_eq!(m.len(), 3);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Update(u8),
        Freeze,
        DropSnapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k % 16, v)),
            any::<u8>().prop_map(|k| Op::Remove(k % 16)),
            any::<u8>().prop_map(|k| Op::Update(k % 16)),
            Just(Op::Freeze),
            Just(Op::DropSnapshot),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap_and_snapshots_stay_frozen(ops in proptest::collection::vec(op(), 0..200)) {
            let mut m = CowMap::new();
            let mut model: BTreeMap<u8, u32> = BTreeMap::new();
            let mut snaps: Vec<(FrozenMap<u8, u32>, BTreeMap<u8, u32>)> = Vec::new();
            for o in ops {
                match o {
                    Op::Insert(k, v) => { m.insert(k, v); model.insert(k, v); }
                    Op::Remove(k) => { prop_assert_eq!(m.remove(&k), model.remove(&k)); }
                    Op::Update(k) => {
                        if let Some(v) = m.get_mut(&k) { *v = v.wrapping_add(1); }
                        if let Some(v) = model.get_mut(&k) { *v = v.wrapping_add(1); }
                    }
                    Op::Freeze => snaps.push((m.freeze(), model.clone())),
                    Op::DropSnapshot => { if !snaps.is_empty() { snaps.remove(0); } }
                }
                prop_assert_eq!(m.len(), model.len());
                for k in 0..16u8 { prop_assert_eq!(m.get(&k), model.get(&k)); }
                for (frozen, expected) in &snaps {
                    let got: BTreeMap<u8, u32> = frozen.iter().map(|(k, v)| (*k, *v)).collect();
                    prop_assert_eq!(&got, expected);
                }
            }
        }
    }
}
