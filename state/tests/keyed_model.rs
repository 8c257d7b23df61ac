//! Keyed state against a model: random sequences of reads, writes, updates and removals on
//! value, list and map states, with snapshots taken (and later restored into a fresh store)
//! at random points, must agree with plain `BTreeMap`s operation by operation. Both backends
//! are held to the same model: the heap tables, and the tiered table (runs in an object store
//! read through a small cache, keys prefetched before every operation as operators do).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sluice_state::blob::{BlobStore, MemoryStore};
use sluice_state::tiered::{BlockCache, TableConfig, TieredTable};
use sluice_state::{KeyGroupRange, KeyedStateStore, ListState, MapState, RestoredState, StateWriter, ValueState};

const MAX_PARALLELISM: u32 = 16;

#[derive(Debug, Clone)]
enum Op {
    Set(u8, i32),
    Add(u8, i32),
    TakeValue(u8),
    Push(u8, i32),
    TakeList(u8),
    Put(u8, u8, i32),
    RemoveEntry(u8, u8),
    TakeMap(u8),
    /// `modify_value`: 0 removes, 1 adds the value (setting it if unset), 2 only reads.
    Modify(u8, u8, i32),
    Snapshot,
    /// The end of a batch: the next operations are prepared (every key fetched, the decoded
    /// values over their budget written back), as an operator's next call is.
    Batch,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..8;
    prop_oneof![
        (key.clone(), any::<i32>()).prop_map(|(k, v)| Op::Set(k, v)),
        (key.clone(), -5i32..5).prop_map(|(k, v)| Op::Add(k, v)),
        key.clone().prop_map(Op::TakeValue),
        (key.clone(), any::<i32>()).prop_map(|(k, v)| Op::Push(k, v)),
        key.clone().prop_map(Op::TakeList),
        (key.clone(), 0u8..4, any::<i32>()).prop_map(|(k, u, v)| Op::Put(k, u, v)),
        (key.clone(), 0u8..4).prop_map(|(k, u)| Op::RemoveEntry(k, u)),
        key.clone().prop_map(Op::TakeMap),
        (key, 0u8..3, -5i32..5).prop_map(|(k, how, v)| Op::Modify(k, how, v)),
        Just(Op::Snapshot),
        Just(Op::Batch),
    ]
}

/// The model: what each state should hold per key.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    values: BTreeMap<u8, i32>,
    lists: BTreeMap<u8, Vec<i32>>,
    maps: BTreeMap<u8, BTreeMap<u8, i32>>,
}

/// A list element wide enough that a list of two is among the tiered store's decoded values
/// (those of 64 encoded bytes or more) and a list of one is not: both paths are taken.
type Wide = (i32, u64, u64, u64);

fn wide(v: i32) -> Wide {
    (v, v as u64, u64::MAX, 7)
}

fn narrow(l: Vec<Wide>) -> Vec<i32> {
    l.into_iter()
        .map(|w| {
            assert_eq!(w, wide(w.0), "a list element comes back whole");
            w.0
        })
        .collect()
}

/// A value that is wide (80 bytes of padding) when even and narrow when odd: values move
/// between the tiered store's decoded values and its table as they change.
type Val = (i32, Vec<u8>);

fn val(v: i32) -> Val {
    (v, if v % 2 == 0 { vec![0xa5; 80] } else { Vec::new() })
}

fn unval(x: Val) -> i32 {
    assert_eq!(x, val(x.0), "a value comes back whole");
    x.0
}

struct Handles {
    value: ValueState<Val>,
    list: ListState<Wide>,
    map: MapState<u8, i32>,
}

fn open(store: &mut KeyedStateStore<u8>) -> Handles {
    Handles {
        value: store.value_state("v").expect("fresh store"),
        list: store.list_state("l").expect("fresh store"),
        map: store.map_state("m").expect("fresh store"),
    }
}

/// Applies `op` to the store and the model, checking what the store returns.
fn apply(store: &mut KeyedStateStore<u8>, h: &Handles, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match *op {
        Op::Set(k, v) => {
            store.set_value(h.value, &k, val(v));
            m.values.insert(k, v);
        }
        Op::Add(k, d) => {
            let got = store.update_value(h.value, &k, |c| {
                *c = val(c.0.wrapping_add(d));
                c.0
            });
            let want = m.values.entry(k).or_default();
            *want = want.wrapping_add(d);
            prop_assert_eq!(got, *want);
        }
        Op::TakeValue(k) => prop_assert_eq!(store.take_value(h.value, &k).map(unval), m.values.remove(&k)),
        Op::Push(k, v) => {
            store.list_add(h.list, &k, wide(v));
            m.lists.entry(k).or_default().push(v);
        }
        Op::TakeList(k) => prop_assert_eq!(
            narrow(store.take_list(h.list, &k)),
            m.lists.remove(&k).unwrap_or_default()
        ),
        Op::Put(k, u, v) => {
            let old = store.update_map(h.map, &k, |mm| mm.insert(u, v));
            prop_assert_eq!(old, m.maps.entry(k).or_default().insert(u, v));
        }
        Op::RemoveEntry(k, u) => {
            let old = store.update_map(h.map, &k, |mm| mm.remove(&u));
            let entry = m.maps.entry(k).or_default();
            prop_assert_eq!(old, entry.remove(&u));
            if entry.is_empty() {
                m.maps.remove(&k);
            }
        }
        Op::TakeMap(k) => prop_assert_eq!(store.take_map(h.map, &k), m.maps.remove(&k).unwrap_or_default()),
        Op::Modify(k, how, d) => {
            let change = |v: &mut Option<i32>| {
                let seen = *v;
                match how {
                    0 => *v = None,
                    1 => *v = Some(v.unwrap_or(0).wrapping_add(d)),
                    _ => {}
                }
                seen
            };
            let seen = store.modify_value(h.value, &k, |v: &mut Option<Val>| {
                let mut x = v.take().map(unval);
                let seen = change(&mut x);
                *v = x.map(val);
                seen
            });
            let mut want = m.values.get(&k).copied();
            prop_assert_eq!(seen, change(&mut want));
            match want {
                Some(v) => m.values.insert(k, v),
                None => m.values.remove(&k),
            };
        }
        Op::Snapshot | Op::Batch => unreachable!("snapshots and batches are the caller's"),
    }
    Ok(())
}

/// Reads every key of every state through both the copying and the lending reads.
fn read_all(store: &KeyedStateStore<u8>, h: &Handles) -> Model {
    let mut m = Model::default();
    for k in 0..8u8 {
        let v = store.value(h.value, &k);
        assert_eq!(v, store.with_value(h.value, &k, |x| x.cloned()));
        let v = v.map(unval);
        if let Some(v) = v {
            m.values.insert(k, v);
        }
        let l = store.list(h.list, &k);
        assert_eq!(l, store.with_list(h.list, &k, <[Wide]>::to_vec));
        let l = narrow(l);
        if !l.is_empty() {
            m.lists.insert(k, l);
        }
        if let Some(mm) = store.with_map(h.map, &k, |x| x.cloned()) {
            for (u, v) in &mm {
                assert_eq!(store.map_get(h.map, &k, u), Some(*v));
            }
            assert!(!mm.is_empty(), "an emptied map is removed");
            m.maps.insert(k, mm);
        }
    }
    m
}

/// Writes a frozen snapshot out and restores it into a fresh store (tiered if `tiered` is
/// given: the store the runs are in).
fn restore(
    snapshot: &sluice_state::KeyedSnapshot,
    tiered: Option<&Arc<dyn BlobStore>>,
) -> (KeyedStateStore<u8>, Handles) {
    let mut w = StateWriter::new(MAX_PARALLELISM);
    snapshot.write(&mut w).expect("in-memory write");
    let bytes = w.finish().expect("in-memory write");
    let mut r = RestoredState::empty();
    r.add_file("model.state", &bytes, KeyGroupRange::for_subtask(MAX_PARALLELISM, 1, 0))
        .expect("a file just written reads back");
    let mut fresh = KeyedStateStore::new();
    if let Some(store) = tiered {
        fresh.use_tiered(
            table(store, "restored"),
            MAX_PARALLELISM,
            KeyGroupRange::for_subtask(MAX_PARALLELISM, 1, 0),
        );
    }
    let h = open(&mut fresh);
    let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, 1, 0);
    for op in r.operator_state() {
        assert!(
            fresh.restore_manifest("model.state", op, range).unwrap(),
            "only manifests are operator state"
        );
    }
    r.for_each_keyed(|e| fresh.restore_entry(&e).map(|_| ()))
        .expect("a file just written restores");
    (fresh, h)
}

/// A memory table of this many bytes holds the model's keys, and the decoded values (as much
/// again) all the wide ones: they are written back when the store flushes and stay.
const ROOMY: usize = 8192;

/// A memory table this small is flushed at almost every batch, and every decoded value is
/// written back and dropped before the next batch.
const TIGHT: usize = 160;

/// Three or four decoded values fit: a batch that writes more goes over the budget while
/// others, clean since the last snapshot, are held (and were not fetched for the batch).
const SOME: usize = 1024;

fn table(store: &Arc<dyn BlobStore>, writer: &str) -> TieredTable {
    table_of(store, writer, ROOMY)
}

fn table_of(store: &Arc<dyn BlobStore>, writer: &str, memtable_bytes: usize) -> TieredTable {
    let config = TableConfig {
        block_size: 96,
        memtable_bytes,
        max_runs: 3,
        max_run_bytes: 512,
    };
    TieredTable::new(Arc::clone(store), "shared/model", writer, config, BlockCache::new(1024))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test")
}

/// Prefetches every key the model uses (what an operator does before each call).
fn prefetch_all(store: &mut KeyedStateStore<u8>) {
    store.release();
    rt().block_on(async {
        store.maintain().await.unwrap();
        store.prefetch(&(0..8u8).collect::<Vec<_>>()).await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn keyed_state_agrees_with_the_model(
        ops in prop::collection::vec(op(), 1..120),
        tiered in any::<bool>(),
        budget in prop::sample::select(vec![TIGHT, SOME, ROOMY]),
    ) {
        let blobs: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let mut store = KeyedStateStore::new();
        if tiered {
            let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, 1, 0);
            store.use_tiered(table_of(&blobs, "w", budget), MAX_PARALLELISM, range);
        }
        let h = open(&mut store);
        let mut model = Model::default();
        // Snapshots are frozen when taken and written only at the end, so later writes must
        // not leak into them (the copy-on-write contract a background upload relies on; the
        // tiered store's runs are immutable, so its manifest cannot see later writes either).
        let mut snapshots = Vec::new();
        // Several operations per batch, keys fetched before each batch only: a value must not
        // leave memory in the middle of a batch.
        prefetch_all(&mut store);
        for op in &ops {
            match op {
                Op::Snapshot => {
                    rt().block_on(store.flush()).unwrap();
                    snapshots.push((store.freeze(), model.clone()));
                    prefetch_all(&mut store);
                }
                Op::Batch => prefetch_all(&mut store),
                op => apply(&mut store, &h, &mut model, op)?,
            }
            prop_assert!(store.take_failure().is_none(), "after {:?}", op);
        }
        prefetch_all(&mut store);
        prop_assert_eq!(read_all(&store, &h), model);
        prop_assert!(store.take_failure().is_none());
        for (snap, at_snapshot) in &snapshots {
            let (mut restored, rh) = restore(snap, tiered.then_some(&blobs));
            prefetch_all(&mut restored);
            prop_assert_eq!(read_all(&restored, &rh), at_snapshot.clone());
            prop_assert!(restored.take_failure().is_none());
        }
    }
}

/// One subtask of a tiered operator at `parallelism`, restored from `snapshots` (the state
/// files of the previous layout).
fn tiered_subtask(
    blobs: &Arc<dyn BlobStore>,
    parallelism: u32,
    index: u32,
    snapshots: &[Vec<u8>],
) -> (KeyedStateStore<u8>, ValueState<i32>) {
    let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, parallelism, index);
    let mut s = KeyedStateStore::new();
    s.use_tiered(table(blobs, &format!("p{parallelism}-{index}")), MAX_PARALLELISM, range);
    let v = s.value_state::<i32>("v").unwrap();
    let mut r = RestoredState::empty();
    for (i, bytes) in snapshots.iter().enumerate() {
        r.add_file(&format!("{i}.state"), bytes, range).unwrap();
    }
    for op in r.operator_state() {
        assert!(s.restore_manifest("x.state", op, range).unwrap());
    }
    (s, v)
}

fn snapshot_bytes(s: &mut KeyedStateStore<u8>) -> Vec<u8> {
    rt().block_on(s.flush()).unwrap();
    let mut w = StateWriter::new(MAX_PARALLELISM);
    s.freeze().write(&mut w).unwrap();
    w.finish().unwrap()
}

fn owner(key: u8, parallelism: u32) -> u32 {
    sluice_state::key_group_for(&key, MAX_PARALLELISM).subtask(MAX_PARALLELISM, parallelism)
}

/// Scaling out and back in: a run restored by both new subtasks holds stale copies of the
/// keys the other one goes on changing; only the owner's entries may be read back.
#[test]
fn rescaled_tiered_state_reads_only_current_entries() {
    let blobs: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
    let (a, b) = (0..=255u8)
        .find_map(|a| {
            let b = (0..=255u8).find(|&b| owner(a, 2) == 0 && owner(b, 2) == 1)?;
            Some((a, b))
        })
        .expect("keys of both halves exist");
    let (mut one, v) = tiered_subtask(&blobs, 1, 0, &[]);
    one.set_value(v, &a, 1);
    one.set_value(v, &b, 1);
    let s1 = snapshot_bytes(&mut one);

    let (mut left, lv) = tiered_subtask(&blobs, 2, 0, std::slice::from_ref(&s1));
    let (mut right, rv) = tiered_subtask(&blobs, 2, 1, std::slice::from_ref(&s1));
    prefetch_all(&mut right);
    assert_eq!(right.value(rv, &b), Some(1));
    right.set_value(rv, &b, 2);
    prefetch_all(&mut left);
    left.set_value(lv, &a, 3);
    let s2 = vec![snapshot_bytes(&mut left), snapshot_bytes(&mut right)];

    for order in [s2.clone(), s2.iter().rev().cloned().collect()] {
        let (mut merged, mv) = tiered_subtask(&blobs, 1, 0, &order);
        prefetch_all(&mut merged);
        assert_eq!(merged.value(mv, &a), Some(3), "left's change");
        assert_eq!(
            merged.value(mv, &b),
            Some(2),
            "right's change, not the stale copy in the shared run"
        );
        assert!(merged.take_failure().is_none());
        // And the merged subtask's own snapshot keeps it so.
        let s3 = snapshot_bytes(&mut merged);
        let (mut again, av) = tiered_subtask(&blobs, 2, 1, &[s3]);
        prefetch_all(&mut again);
        assert_eq!(again.value(av, &b), Some(2));
    }
}
