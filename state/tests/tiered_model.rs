//! The tiered table against a model: random puts, deletes, reads, flushes, compactions,
//! scans and reopenings (a lazy restore from the list of runs into a fresh table with a cold,
//! tiny cache, so reads reach the object store) must agree with a `BTreeMap` throughout.
//! And run files: damage is reported naming the file, never read as a wrong value.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_state::blob::{BlobStore, MemoryStore};
use sluice_state::tiered::run::{RunMeta, RunWriter};
use sluice_state::tiered::{BlockCache, TableConfig, TieredError, TieredTable};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test")
}

fn config() -> TableConfig {
    TableConfig {
        block_size: 128,
        memtable_bytes: 4096,
        max_runs: 3,
        // Merges write several runs (one per key group at most).
        max_run_bytes: 300,
    }
}

/// A key in key group `kg % 4`, so runs span several key groups.
fn key(kg: u8, k: u8) -> Bytes {
    Bytes::from(vec![0, kg % 4, b'k', k])
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8, Vec<u8>),
    Delete(u8, u8),
    Get(Vec<(u8, u8)>),
    Flush,
    Compact,
    Reopen,
    Scan(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let k = (0u8..4, 0u8..24);
    prop_oneof![
        6 => (k.clone(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|((g, k), v)| Op::Put(g, k, v)),
        2 => k.clone().prop_map(|(g, k)| Op::Delete(g, k)),
        4 => prop::collection::vec(k, 1..6).prop_map(Op::Get),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => (0u8..4, 0u8..4).prop_map(|(a, b)| Op::Scan(a.min(b), a.max(b) + 1)),
    ]
}

type Model = BTreeMap<Bytes, Bytes>;

async fn reopen(store: &Arc<dyn BlobStore>, t: &mut TieredTable, generation: &mut u32) -> Result<(), TieredError> {
    t.flush().await?;
    *generation += 1;
    let cold = BlockCache::new(512);
    *t = TieredTable::open(
        Arc::clone(store),
        "shared/op",
        &format!("w{generation}"),
        config(),
        cold,
        &t.runs(),
    )
    .await?;
    Ok(())
}

async fn check_get(t: &mut TieredTable, m: &Model, keys: &[(u8, u8)]) -> Result<(), TestCaseError> {
    let keys: Vec<Bytes> = keys.iter().map(|&(g, k)| key(g, k)).collect();
    t.prefetch(&keys).await.unwrap();
    for k in &keys {
        prop_assert_eq!(t.get(k).unwrap(), m.get(k).cloned(), "key {:?}", k);
    }
    t.release();
    Ok(())
}

/// The table's published figures match what it holds.
fn check_gauges(t: &TieredTable) -> Result<(), TestCaseError> {
    let f = t.gauges().figures();
    let runs = t.runs().len() as u64;
    prop_assert_eq!(f.memtable_bytes, t.memtable_bytes() as u64);
    prop_assert_eq!(f.runs, runs);
    prop_assert!(f.compaction_backlog <= runs.saturating_sub(config().max_runs as u64));
    prop_assert_eq!(f.compaction_backlog > 0, t.needs_compaction());
    prop_assert_eq!(f.run_bytes, t.run_metas().map(|(m, _)| m.size()).sum::<u64>());
    Ok(())
}

async fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
    let mut t = TieredTable::new(Arc::clone(&store), "shared/op", "w0", config(), BlockCache::new(512));
    let mut m = Model::new();
    let mut generation = 0;
    for op in ops {
        match op {
            Op::Put(g, k, v) => {
                t.put(key(g, k), Bytes::from(v.clone()));
                m.insert(key(g, k), Bytes::from(v));
            }
            Op::Delete(g, k) => {
                t.delete(key(g, k));
                m.remove(&key(g, k));
            }
            Op::Get(keys) => check_get(&mut t, &m, &keys).await?,
            Op::Flush => drop(t.flush().await.unwrap()),
            Op::Compact => drop(t.compact().await.unwrap()),
            Op::Reopen => reopen(&store, &mut t, &mut generation).await.unwrap(),
            Op::Scan(a, b) => {
                let got = t.scan(&[0, a], &[0, b]).await.unwrap();
                let want: Vec<_> = m
                    .range(Bytes::from(vec![0, a])..Bytes::from(vec![0, b]))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
        if t.needs_flush() {
            t.flush().await.unwrap();
        }
        if t.needs_compaction() {
            t.compact().await.unwrap();
        }
        check_gauges(&t)?;
    }
    let all = t.scan(&[0, 0], &[0xff, 0xff]).await.unwrap();
    prop_assert_eq!(all, m.into_iter().collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tiered_table_agrees_with_the_model(ops in prop::collection::vec(op(), 1..150)) {
        rt().block_on(run_ops(ops))?;
    }
}

/// A full merge of more than `max_run_bytes` writes several runs, cut between key groups
/// (each key group in one run), which then read as one sorted run: no further compaction is
/// due, and every key reads back.
#[test]
fn a_large_merge_writes_runs_cut_at_key_groups() {
    rt().block_on(async {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let mut t = TieredTable::new(Arc::clone(&store), "d", "w", config(), BlockCache::new(1 << 20));
        for round in 0..4u8 {
            for kg in 0..4 {
                for k in 0..24 {
                    t.put(key(kg, k), Bytes::from(vec![round; 20]));
                }
            }
            t.flush().await.unwrap();
        }
        t.compact().await.unwrap();
        let groups: Vec<(u32, u32)> = t.run_metas().map(|(m, _)| m.key_groups()).collect();
        assert!(
            groups.len() > 1,
            "one run of {} bytes",
            t.run_metas().map(|(m, _)| m.size()).sum::<u64>()
        );
        assert!(
            groups.windows(2).all(|w| w[0].1 < w[1].0),
            "runs overlap in key groups: {groups:?}"
        );
        assert!(!t.needs_compaction());
        let keys: Vec<Bytes> = (0..4).flat_map(|kg| (0..24).map(move |k| key(kg, k))).collect();
        t.prefetch(&keys).await.unwrap();
        for k in &keys {
            assert_eq!(t.get(k).unwrap(), Some(Bytes::from(vec![3u8; 20])));
        }
    });
}

#[test]
fn a_key_read_without_prefetch_is_an_error_not_a_stall() {
    rt().block_on(async {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let mut t = TieredTable::new(Arc::clone(&store), "d", "w", config(), BlockCache::new(1 << 20));
        t.put(key(1, 1), Bytes::from_static(b"v"));
        let file = t.flush().await.unwrap().expect("one entry makes a run");
        let err = t.get(&key(1, 1)).unwrap_err();
        assert!(matches!(err, TieredError::NotPrefetched { .. }), "{err}");
        assert!(err.to_string().contains(&file), "{err}");
        t.prefetch(&[key(1, 1)]).await.unwrap();
        assert_eq!(t.get(&key(1, 1)).unwrap(), Some(Bytes::from_static(b"v")));
        // A key the bloom filter or key range rules out needs no block at all.
        t.release();
        assert_eq!(t.get(&key(2, 200)).unwrap(), None);
    });
}

fn sample_run(n: u8) -> Bytes {
    let mut w = RunWriter::new(64);
    for i in 0..n {
        let v = vec![i; 10];
        w.add(&[0, i / 16, i], if i % 7 == 3 { None } else { Some(&v) })
            .unwrap();
    }
    w.finish().expect("entries were added").0
}

#[test]
fn every_flipped_byte_of_a_run_is_caught_naming_the_file() {
    let good = sample_run(100);
    let meta = RunMeta::from_bytes("r.run", &good).unwrap();
    assert_eq!(meta.entries(), 100);
    assert_eq!(meta.key_groups(), (0, 6));
    for pos in 0..good.len() {
        let mut bad = good.to_vec();
        bad[pos] ^= 0x10;
        let outcome = RunMeta::from_bytes("r.run", &bad).and_then(|m| {
            // The tail parsed: the damage must be in a block, and reading every block finds it.
            (0..m.block_count()).try_for_each(|b| {
                let range = m.block_range(b);
                let bytes = Bytes::copy_from_slice(&bad[range.start as usize..range.end as usize]);
                sluice_state::tiered::run::Block::decode("r.run", b, bytes).map(drop)
            })
        });
        let err = outcome.expect_err(&format!("flipping byte {pos} went unnoticed"));
        assert!(err.to_string().contains("'r.run' is corrupt"), "byte {pos}: {err}");
    }
}

#[test]
fn a_truncated_or_foreign_file_is_refused() {
    let good = sample_run(30);
    for len in [0, 10, good.len() / 2, good.len() - 1] {
        let err = RunMeta::from_bytes("r.run", &good[..len]).unwrap_err();
        assert!(err.to_string().contains("'r.run' is corrupt"), "{len}: {err}");
    }
    let err = RunMeta::from_bytes("x", &[0u8; 200]).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn a_writer_refuses_unordered_or_keyless_input() {
    let mut w = RunWriter::new(64);
    w.add(&[0, 1, 5], Some(b"a")).unwrap();
    assert!(matches!(w.add(&[0, 1, 5], Some(b"b")), Err(TieredError::BadInput(_))));
    assert!(matches!(w.add(&[0, 1, 4], Some(b"b")), Err(TieredError::BadInput(_))));
    assert!(matches!(w.add(&[9], Some(b"b")), Err(TieredError::BadInput(_))));
    assert!(RunWriter::new(64).finish().is_none(), "an empty run is no file");
}

#[test]
fn a_damaged_run_in_the_store_fails_the_restore_naming_it() {
    rt().block_on(async {
        let mem = Arc::new(MemoryStore::new());
        let store: Arc<dyn BlobStore> = mem.clone();
        let mut t = TieredTable::new(Arc::clone(&store), "d", "w", config(), BlockCache::new(1 << 20));
        for i in 0..50 {
            t.put(key(i, i), Bytes::from(vec![i; 20]));
        }
        let file = t.flush().await.unwrap().unwrap();
        mem.corrupt(&file, |b| b[5] ^= 1).unwrap();
        let mut again = TieredTable::open(
            Arc::clone(&store),
            "d",
            "w2",
            config(),
            BlockCache::new(1 << 20),
            std::slice::from_ref(&file),
        )
        .await
        .expect("the tail is intact: open reads no block");
        let err = again.prefetch(&[key(0, 0)]).await.unwrap_err();
        assert!(err.to_string().contains(&format!("'{file}' is corrupt")), "{err}");
        mem.corrupt(&file, |b| b.truncate(b.len() - 3)).unwrap();
        let err = TieredTable::open(
            store,
            "d",
            "w3",
            config(),
            BlockCache::new(1),
            std::slice::from_ref(&file),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(&file), "{err}");
    });
}
