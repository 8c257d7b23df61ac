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
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    let err = |d: std::path::PathBuf, cap| DiskCacheConfig::claim(d, cap).unwrap_err().to_string();
    assert!(err(dir("a"), MIN_DISK_CACHE - 1).contains("at least 64MiB"));
    std::fs::write(dir("file"), b"x").unwrap();
    assert!(err(dir("file"), MIN_DISK_CACHE).contains("is not a directory"));
    assert!(err("/".into(), MIN_DISK_CACHE).contains("root"));
    assert!(err("".into(), MIN_DISK_CACHE).contains("empty path"));
    // Anyone who can write in it could plant links for the cache's files to follow.
    std::fs::create_dir(dir("open")).unwrap();
    std::fs::set_permissions(dir("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(err(dir("open"), MIN_DISK_CACHE).contains("other users may write in it"));
    // Someone else's files: refused, left alone.
    std::fs::create_dir(dir("used")).unwrap();
    std::fs::write(dir("used").join("notes.txt"), b"mine").unwrap();
    assert!(err(dir("used"), MIN_DISK_CACHE).contains("'notes.txt', which is no cache file"));
    assert!(dir("used").join("notes.txt").exists());
    assert!(
        !dir("used").join("LOCK").exists(),
        "a LOCK file was left in someone else's directory"
    );
    // A LOCK that is a link is not followed.
    std::fs::create_dir(dir("linked")).unwrap();
    std::os::unix::fs::symlink(dir("file"), dir("linked").join("LOCK")).unwrap();
    assert!(err(dir("linked"), MIN_DISK_CACHE).contains("cannot write its LOCK file"));
    // One claim at a time; an earlier process's cache files are deleted.
    let held = DiskCacheConfig::claim(dir("c"), MIN_DISK_CACHE).unwrap();
    assert!(err(dir("c"), MIN_DISK_CACHE).contains("in use by another process"));
    drop(held);
    std::fs::write(dir("c").join("foyer-storage-direct-fs-00000000"), b"old").unwrap();
    DiskCacheConfig::claim(dir("c"), MIN_DISK_CACHE).expect("released with its last clone");
    assert!(!dir("c").join("foyer-storage-direct-fs-00000000").exists());
    assert!(err(dir("c"), usize::MAX / 2).contains("bytes free"));
}
