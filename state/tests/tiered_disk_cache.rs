//! The block cache's disk tier: blocks evicted from memory come back from local disk instead
//! of the object store, a damaged disk copy costs a fetch and never a wrong value, and a
//! tier that cannot be opened only turns into misses.

// foyer writes the disk tier from its own tasks: the test waits for them in real time.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_state::blob::{BlobStore, MemoryStore};
use sluice_state::tiered::{BlockCache, DiskCacheConfig, TableConfig, TieredTable, MIN_DISK_CACHE};

const KEYS: u32 = 6000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the test")
}

fn key(i: u32) -> Bytes {
    let mut k = vec![0, (i % 8) as u8];
    k.extend_from_slice(&i.to_be_bytes());
    Bytes::from(k)
}

fn value(i: u32) -> Bytes {
    Bytes::from(format!("{i:0>400}"))
}

/// A table over one run of `KEYS` entries (about 2.5 MB, more than the disk tier's own
/// memory), read through `cache`.
async fn table(cache: BlockCache) -> TieredTable {
    let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
    let config = TableConfig {
        block_size: 4096,
        memtable_bytes: 64 << 20,
        max_runs: 8,
        max_run_bytes: 64 << 20,
    };
    let mut t = TieredTable::new(store, "shared/op", "w", config, cache);
    for i in 0..KEYS {
        t.put(key(i), value(i));
    }
    t.flush().await.expect("the run is written");
    t
}

/// Reads every key and checks its value.
async fn read_all(t: &mut TieredTable) {
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(256) {
        let keys: Vec<Bytes> = chunk.iter().map(|&i| key(i)).collect();
        t.prefetch(&keys).await.expect("blocks are fetched");
        for &i in chunk {
            assert_eq!(t.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
        }
        t.release();
    }
}

/// Waits until foyer has written at least `bytes` to disk (it writes in the background).
fn wait_written(cache: &BlockCache, bytes: u64) {
    let start = Instant::now();
    while cache.stats().disk_written_bytes < bytes {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the disk tier wrote too little: {:?}",
            cache.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn evicted_blocks_come_back_from_disk_and_a_damaged_copy_costs_a_fetch_not_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(1).with_disk(DiskCacheConfig::claim(dir.path().to_owned(), MIN_DISK_CACHE).unwrap());
    rt().block_on(async {
        let mut t = table(cache.clone()).await;
        read_all(&mut t).await;
        let first = cache.stats();
        assert!(first.misses > 0, "{first:?}");
        wait_written(&cache, first.fetched_bytes);
        read_all(&mut t).await;
        // The second pass reads the same blocks: from disk, not from the store.
        let second = cache.stats();
        let (disk_hits, misses) = (second.disk_hits - first.disk_hits, second.misses - first.misses);
        assert!(
            disk_hits > 4 * misses && disk_hits * 2 > first.misses,
            "most blocks should come from disk the second time: {first:?} then {second:?}"
        );
        // Damage every cache file of the tier: reads stay right (foyer's checksum or the
        // block's own catches the damage), paid for with fetches.
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let path = f.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            for b in bytes.iter_mut().step_by(97) {
                *b ^= 0x5a;
            }
            std::fs::write(&path, bytes).unwrap();
        }
        read_all(&mut t).await;
        let third = cache.stats();
        eprintln!("first pass {first:?}\nsecond pass {second:?}\nafter damage {third:?}");
        assert!(
            third.misses > second.misses,
            "damaged copies were not refetched: {third:?}"
        );
    });
}

#[test]
fn a_disk_tier_that_cannot_be_opened_turns_into_misses() {
    let dir = tempfile::tempdir().unwrap();
    let claimed = DiskCacheConfig::claim(dir.path().join("cache"), MIN_DISK_CACHE).unwrap();
    // The directory goes, and a file takes its place, before the tier's first use.
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    std::fs::write(dir.path().join("cache"), b"x").unwrap();
    let cache = BlockCache::new(1).with_disk(claimed);
    rt().block_on(async {
        let mut t = table(cache.clone()).await;
        read_all(&mut t).await;
        read_all(&mut t).await;
    });
    let s = cache.stats();
    assert!(s.disk_errors >= 1 && s.disk_hits == 0, "{s:?}");
}

#[test]
fn a_directory_that_cannot_hold_the_tier_is_refused_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let err = |d: std::path::PathBuf, cap| DiskCacheConfig::claim(d, cap).unwrap_err().to_string();
    assert!(err(dir.path().into(), MIN_DISK_CACHE - 1).contains("at least"));
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(
        err(file.clone(), MIN_DISK_CACHE).contains("cannot create it"),
        "{}",
        err(file, MIN_DISK_CACHE)
    );
    let held = DiskCacheConfig::claim(dir.path().join("c"), MIN_DISK_CACHE).unwrap();
    assert!(err(dir.path().join("c"), MIN_DISK_CACHE).contains("in use by another process"));
    drop(held);
    DiskCacheConfig::claim(dir.path().join("c"), MIN_DISK_CACHE).expect("released with its last clone");
    assert!(err(dir.path().into(), usize::MAX / 2).contains("bytes free"));
}
