//! Savepoint benchmark: a job whose keyed state holds N keys (a rolling count per key), the
//! size and time of a savepoint of it, and the time to restore that savepoint at another
//! parallelism.
//!
//! ```text
//! cargo run --release -p sluice-benches --bin savepoint -- [--keys 1000000,10000000] [--parallelism 2] [--restore-parallelism 3]
//! ```
//!
//! The savepoint is taken with stop-with-savepoint (draining: the final checkpoint is the
//! savepoint) once every key has been seen; its time runs from the request to the answer. The
//! restore runs the same job from the savepoint with a source that has nothing left to read,
//! so its time is what restoring costs: reading and checking the files, rebuilding the keyed
//! state of each subtask's key groups, and ending.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::CheckpointConfig;
use sluice_core::connectors::{DiscardSink, GeneratorSource};
use sluice_core::state::blob::{BlobStore, LocalFsStore};
use sluice_core::{ExecutionConfig, SavepointRestore, StreamEnv, WatermarkStrategy};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn job(keys: u64, parallelism: u32, count: Option<u64>, seen: Arc<AtomicU64>) -> StreamEnv {
    let env = StreamEnv::new("savepoint-bench");
    env.set_parallelism(parallelism);
    env.from_source(
        GeneratorSource::new(1, count, move |i, _| (i % keys, 1u64)),
        WatermarkStrategy::no_watermarks(),
        "keys",
    )
    .uid("keys")
    .key_by(|r: &(u64, u64)| r.0)
    .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
    .uid("count")
    .map(move |r| {
        seen.fetch_add(1, Ordering::Relaxed);
        r
    })
    .sink_to(DiscardSink::default(), "discard");
    env
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let p = e.path();
        total += if p.is_dir() {
            dir_bytes(&p)
        } else {
            e.metadata().map_or(0, |m| m.len())
        };
    }
    total
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let keys: Vec<u64> = arg(&args, "--keys")
        .unwrap_or_else(|| "1000000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let p: u32 = arg(&args, "--parallelism").map(|s| s.parse()).transpose()?.unwrap_or(2);
    let p2: u32 = arg(&args, "--restore-parallelism")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("| keys | state on disk | savepoint time | restore time (parallelism {p} -> {p2}) |");
    println!("|---|---|---|---|");
    for n in keys {
        let tmp = tempfile::tempdir()?;
        let ck: Arc<dyn BlobStore> = Arc::new(LocalFsStore::new(tmp.path().join("ck"))?);
        let sp_root = tmp.path().join("sp");
        let target: Arc<dyn BlobStore> = Arc::new(LocalFsStore::new(&sp_root)?);
        let seen = Arc::new(AtomicU64::new(0));
        let (name, took) = rt.block_on(async {
            // Checkpoints only when asked (the savepoint): an interval longer than the run.
            let mut checkpoints = CheckpointConfig::new(Duration::from_secs(3600), ck);
            checkpoints.timeout = Duration::from_secs(7200);
            let config = ExecutionConfig {
                checkpointing: Some(checkpoints),
                ..ExecutionConfig::default()
            };
            let handle = job(n, p, None, seen.clone()).spawn(config)?;
            while seen.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let start = tokio::time::Instant::now();
            let info = handle.controller().stop_with_savepoint(target, true).await?;
            let took = start.elapsed();
            handle.join().await?;
            anyhow::Ok((info.name, took))
        })?;
        let sp = sp_root.join(&name);
        let bytes = dir_bytes(&sp);
        let restore = rt.block_on(async {
            let config = ExecutionConfig {
                from_savepoint: Some(SavepointRestore {
                    store: Arc::new(LocalFsStore::new(&sp)?),
                    allow_non_restored_state: false,
                    uid_mapping: Default::default(),
                }),
                ..ExecutionConfig::default()
            };
            let start = tokio::time::Instant::now();
            job(n, p2, Some(0), Arc::new(AtomicU64::new(0))).execute(config).await?;
            anyhow::Ok(start.elapsed())
        })?;
        println!(
            "| {n} | {:.1} MB ({:.1} bytes/key) | {:.2} s | {:.2} s |",
            bytes as f64 / 1e6,
            bytes as f64 / n as f64,
            took.as_secs_f64(),
            restore.as_secs_f64()
        );
    }
    Ok(())
}
