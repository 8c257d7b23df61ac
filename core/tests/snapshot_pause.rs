//! The synchronous part of a snapshot (`freeze`) does not grow with the size of the state.
//!
//! A `KeyedStateStore<u64>` with one value state, and a bare `CowMap<u64, u64>`, are filled
//! with 10_000 keys and with 10_000_000 keys (debug build: filling the large one takes a few
//! seconds). Each is frozen many times, rounds of the two sizes interleaved; every round
//! freezes, then writes a few keys (which must copy-on-write into the delta, as the snapshot
//! shares the base), drops the snapshot, and writes once more (which folds the delta back into
//! the base). The median freeze time of the large one must be within the same order of
//! magnitude as the small one's (< 10x + 50 µs): a freeze that copied the table would take
//! hundreds of milliseconds at 10M keys.
//!
//! Correctness of the copy-on-write is checked alongside: writes after a freeze (update, insert,
//! remove) leave the frozen snapshot unchanged, and after the snapshot is dropped the next
//! writes land in the live state and show in the next snapshot, with nothing lost from the
//! delta.

// Wall-clock timing of a synchronous call is what this test measures; it never runs under
// the simulator.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::state::{CowMap, KeyGroupRange, KeyedStateStore, RestoredState, StateFile, StateWriter, ValueState};

const SMALL: u64 = 10_000;
const LARGE: u64 = 10_000_000;
const ROUNDS: usize = 31;
const MAX_PARALLELISM: u32 = 128;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn assert_same_order(what: &str, small: Duration, large: Duration) {
    let bound = small * 10 + Duration::from_micros(50);
    eprintln!("{what}: median freeze {small:?} at {SMALL} keys, {large:?} at {LARGE} keys (bound {bound:?})");
    assert!(
        large < bound,
        "{what}: freezing {LARGE} keys took {large:?} (median), {SMALL} keys {small:?}: the synchronous part of a snapshot grows with the state"
    );
}

// ---------------------------------------------------------------------------------------------
// KeyedStateStore

fn keyed_store(n: u64) -> (KeyedStateStore<u64>, ValueState<u64>) {
    let mut store = KeyedStateStore::<u64>::new();
    let v = store.value_state::<u64>("v").expect("register value state");
    for k in 0..n {
        store.set_value(v, &k, k);
    }
    (store, v)
}

/// One round: freeze (timed), a few copy-on-write writes, drop the snapshot, one more write.
fn keyed_round(store: &mut KeyedStateStore<u64>, v: ValueState<u64>, n: u64, round: u64) -> Duration {
    let t = Instant::now();
    let snap = store.freeze();
    let took = t.elapsed();
    for i in 0..4 {
        let k = (round * 7919 + i * 104_729) % n;
        store.update_value(v, &k, |c| *c += 1);
    }
    drop(snap);
    store.set_value(v, &(round % n), round);
    took
}

/// The (key, value) pairs of table "v" in a snapshot, by writing it out and reading it back.
fn snapshot_contents(snap: &sluice_core::state::KeyedSnapshot) -> BTreeMap<u64, u64> {
    let mut w = StateWriter::new(MAX_PARALLELISM);
    snap.write(&mut w).expect("snapshot writes");
    let bytes = w.finish().expect("state file encodes");
    let file = StateFile::decode("test.state", &bytes).expect("state file decodes");
    let restored = RestoredState::new(
        vec![Arc::new(file)],
        KeyGroupRange::for_subtask(MAX_PARALLELISM, 1, 0),
        Vec::new(),
    );
    let mut out = BTreeMap::new();
    restored
        .for_each_keyed(|e| {
            assert_eq!(e.table, "v");
            let k: u64 = bincode_decode(e.key);
            let v: u64 = bincode_decode(e.value);
            assert!(out.insert(k, v).is_none(), "key {k} twice in one snapshot");
            Ok(())
        })
        .expect("entries decode");
    out
}

/// bincode encodes u64 as 8 little-endian bytes (fixed-int encoding, bincode 1 default).
fn bincode_decode(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("a u64 is 8 bytes in bincode"))
}

fn live_contents(
    store: &KeyedStateStore<u64>,
    v: ValueState<u64>,
    keys: impl Iterator<Item = u64>,
) -> BTreeMap<u64, u64> {
    keys.filter_map(|k| store.value(v, &k).map(|x| (k, x))).collect()
}

/// Median freeze time of a `KeyedStateStore` with 10_000 keys vs 10_000_000 keys.
#[test]
fn keyed_store_freeze_time_does_not_grow_from_10k_to_10m_keys() {
    let (mut small, sv) = keyed_store(SMALL);
    let (mut large, lv) = keyed_store(LARGE);
    let mut ts = Vec::new();
    let mut tl = Vec::new();
    for round in 0..ROUNDS as u64 {
        ts.push(keyed_round(&mut small, sv, SMALL, round));
        tl.push(keyed_round(&mut large, lv, LARGE, round));
    }
    // The writes of every round landed: key `round % n` holds `round` (for round < n).
    for round in 0..ROUNDS as u64 {
        assert_eq!(large.value(lv, &round), Some(round));
    }
    assert_same_order("KeyedStateStore", median(ts), median(tl));
}

/// Writes after a freeze leave the snapshot unchanged; after the snapshot is dropped, writes
/// go to the live state and the next snapshot has all of them.
#[test]
fn keyed_store_snapshot_is_isolated_from_later_writes() {
    let n = 1_000u64;
    let (mut store, v) = keyed_store(n);
    let before: BTreeMap<u64, u64> = (0..n).map(|k| (k, k)).collect();

    let snap = store.freeze();
    // Update in place, overwrite, remove, insert new keys: all copy-on-write.
    store.update_value(v, &1, |c| *c += 100);
    store.set_value(v, &2, 2_000);
    assert_eq!(store.take_value(v, &3), Some(3));
    store.set_value(v, &(n + 1), 42);
    store.update_value(v, &(n + 2), |c| *c += 7);
    assert_eq!(snapshot_contents(&snap), before, "the frozen snapshot saw later writes");

    let mut want = before.clone();
    want.insert(1, 101);
    want.insert(2, 2_000);
    want.remove(&3);
    want.insert(n + 1, 42);
    want.insert(n + 2, 7);
    assert_eq!(
        live_contents(&store, v, 0..n + 10),
        want,
        "live state while a snapshot is held"
    );

    drop(snap);
    // After the drop: more writes, straight to the base (the delta folds in first).
    store.update_value(v, &1, |c| *c += 1);
    assert_eq!(store.take_value(v, &4), Some(4));
    store.set_value(v, &(n + 3), 9);
    want.insert(1, 102);
    want.remove(&4);
    want.insert(n + 3, 9);
    assert_eq!(
        live_contents(&store, v, 0..n + 10),
        want,
        "live state after the snapshot was dropped"
    );

    let snap2 = store.freeze();
    assert_eq!(
        snapshot_contents(&snap2),
        want,
        "the next snapshot has every write, the delta's included"
    );
    store.set_value(v, &5, 555);
    assert_eq!(snapshot_contents(&snap2), want, "the second snapshot saw a later write");
    drop(snap2);
    want.insert(5, 555);
    assert_eq!(snapshot_contents(&store.freeze()), want);
}

// ---------------------------------------------------------------------------------------------
// CowMap

fn cow_map(n: u64) -> CowMap<u64, u64> {
    let mut m = CowMap::new();
    for k in 0..n {
        m.insert(k, k);
    }
    m
}

fn cow_round(m: &mut CowMap<u64, u64>, n: u64, round: u64) -> Duration {
    let t = Instant::now();
    let snap = m.freeze();
    let took = t.elapsed();
    for i in 0..4 {
        let k = (round * 7919 + i * 104_729) % n;
        *m.get_mut(&k).expect("every key below n is present") += 1;
    }
    m.insert(n + round, round);
    assert_eq!(snap.len() as u64, n + round, "the snapshot saw a later insert");
    drop(snap);
    m.insert(round % n, round);
    took
}

/// Median freeze time of a `CowMap` with 10_000 entries vs 10_000_000 entries.
#[test]
fn cow_map_freeze_time_does_not_grow_from_10k_to_10m_entries() {
    let mut small = cow_map(SMALL);
    let mut large = cow_map(LARGE);
    let mut ts = Vec::new();
    let mut tl = Vec::new();
    for round in 0..ROUNDS as u64 {
        ts.push(cow_round(&mut small, SMALL, round));
        tl.push(cow_round(&mut large, LARGE, round));
    }
    assert_eq!(large.len() as u64, LARGE + ROUNDS as u64);
    for round in 0..ROUNDS as u64 {
        assert_eq!(large.get(&round), Some(&round));
        assert_eq!(large.get(&(LARGE + round)), Some(&round));
    }
    let (small_median, large_median) = (median(ts), median(tl));
    assert_same_order("CowMap", small_median, large_median);
    // The bound discriminates: copying the large table (what a freeze without copy-on-write
    // would do) takes far longer than it allows.
    let snap = large.freeze();
    let t = Instant::now();
    let copy = (*snap).clone();
    let copy_took = t.elapsed();
    assert_eq!(copy.len(), snap.len());
    eprintln!("CowMap: copying {LARGE} entries took {copy_took:?}");
    assert!(
        copy_took > small_median * 10 + Duration::from_micros(50),
        "copy took only {copy_took:?}"
    );
}

/// The same isolation for a bare `CowMap`, on the 10M-entry map (spot checks) and a small one
/// (full comparison).
#[test]
fn cow_map_snapshot_is_isolated_from_later_writes() {
    let n = 1_000u64;
    let mut m = cow_map(n);
    let before: BTreeMap<u64, u64> = (0..n).map(|k| (k, k)).collect();
    let frozen = |s: &sluice_core::state::FrozenMap<u64, u64>| -> BTreeMap<u64, u64> {
        s.iter().map(|(k, v)| (*k, *v)).collect()
    };
    let live = |m: &CowMap<u64, u64>| -> BTreeMap<u64, u64> {
        (0..n + 10).filter_map(|k| m.get(&k).map(|v| (k, *v))).collect()
    };

    let snap = m.freeze();
    *m.get_mut(&1).unwrap() += 100;
    m.insert(2, 2_000);
    assert_eq!(m.remove(&3), Some(3));
    assert_eq!(m.remove(&3), None, "removed twice");
    m.insert(n + 1, 42);
    *m.get_or_insert_with(&(n + 2), || 0) += 7;
    assert_eq!(frozen(&snap), before, "the frozen map saw later writes");

    let mut want = before.clone();
    want.insert(1, 101);
    want.insert(2, 2_000);
    want.remove(&3);
    want.insert(n + 1, 42);
    want.insert(n + 2, 7);
    assert_eq!(live(&m), want);
    assert_eq!(m.len(), want.len());

    drop(snap);
    *m.get_mut(&1).unwrap() += 1;
    assert_eq!(m.remove(&4), Some(4));
    m.insert(n + 3, 9);
    want.insert(1, 102);
    want.remove(&4);
    want.insert(n + 3, 9);
    assert_eq!(live(&m), want);
    assert_eq!(m.len(), want.len());

    let snap2 = m.freeze();
    assert_eq!(
        frozen(&snap2),
        want,
        "the next snapshot has every write, the delta's included"
    );
    m.insert(5, 555);
    assert_eq!(frozen(&snap2), want);

    // Overlapping snapshots: a second freeze while the first is held.
    let snap3 = m.freeze();
    want.insert(5, 555);
    assert_eq!(frozen(&snap3), want);
    assert_eq!(snap2.get(&5), Some(&5), "the older snapshot is still unchanged");
    drop(snap2);
    drop(snap3);
    m.insert(6, 666);
    want.insert(6, 666);
    assert_eq!(frozen(&m.freeze()), want);

    // Spot checks on a big map: a write after freeze does not reach the snapshot.
    let mut big = cow_map(2_000_000);
    let s = big.freeze();
    big.insert(7, 0);
    big.remove(&8);
    assert_eq!((s.get(&7), s.get(&8), s.len()), (Some(&7), Some(&8), 2_000_000));
    assert_eq!((big.get(&7), big.get(&8), big.len()), (Some(&0), None, 1_999_999));
}
