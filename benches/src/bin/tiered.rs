//! Tiered state benchmark: a keyed job holding the latest value of N keys (a reduce), on the
//! tiered backend or the heap.
//!
//! ```text
//! cargo run --release -p sluice-benches --bin tiered -- incremental [--keys 10000000] [--backend tiered]
//! cargo run --release -p sluice-benches --bin tiered -- large [--keys 30000000] [--cache 128] [--disk-cache 0] [--backend tiered]
//! cargo run --release -p sluice-benches --bin tiered -- recovery [--keys 10000000] [--value-bytes 200] [--backend tiered]
//! ```
//!
//! - `incremental`: loads N keys (checkpointing every 2 s), stops, resumes from the latest
//!   checkpoint and updates 1% of the keys (spread over the whole key space) between each two
//!   checkpoints; prints each checkpoint's full and incremental size and duration.
//! - `large`: loads N keys under a block cache of `--cache` MiB (and a disk tier of
//!   `--disk-cache` MiB) and prints the state's size (the latest checkpoint's) and the
//!   process's peak resident memory (run each backend in its own process: the peak is the
//!   process's).
//! - `recovery`: loads N keys with values of `--value-bytes`, stops after a checkpoint, and
//!   times a restart from it to the first record out of the reduce (lazy restore against a
//!   full load).
//!
//! Parallelism 2; checkpoints on local disk in a temporary directory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use sluice_benches::peak_rss_kib;
use sluice_core::checkpoint::CheckpointConfig;
use sluice_core::connectors::{DiscardSink, GeneratorSource};
use sluice_core::metrics::CheckpointOutcome;
use sluice_core::state::blob::LocalFsStore;
use sluice_core::state::tiered::DiskCacheConfig;
use sluice_core::state_backend::{StateBackendConfig, TieredSettings};
use sluice_core::{ExecutionConfig, JobHandle, StreamEnv, WatermarkStrategy};

/// What one run of the job is.
#[derive(Clone)]
struct Shape {
    keys: u64,
    /// Keys updated per pass after the load (0: none).
    churn: u64,
    value_bytes: usize,
    /// Records per second after the load (`None`: unpaced).
    rate: Option<u64>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> anyhow::Result<u64> {
    Ok(arg(args, name).map(|s| s.parse()).transpose()?.unwrap_or(default))
}

/// Record `i`: key `i` while loading, then the churn keys round and round, spread evenly
/// over the key space (so every key group changes a little).
fn key_of(shape: &Shape, i: u64) -> u64 {
    if i < shape.keys || shape.churn == 0 {
        i % shape.keys
    } else {
        ((i - shape.keys) % shape.churn) * (shape.keys / shape.churn)
    }
}

fn job(shape: &Shape, seen: Arc<AtomicU64>) -> StreamEnv {
    let env = StreamEnv::new("tiered-bench");
    env.set_parallelism(2);
    let s = shape.clone();
    let mut source = GeneratorSource::new(1, None, move |i, _| {
        (key_of(&s, i), vec![(i % 251) as u8; s.value_bytes])
    });
    if let Some(rate) = shape.rate {
        source = source.with_records_per_second(rate);
    }
    env.from_source(source, WatermarkStrategy::no_watermarks(), "keys")
        .uid("keys")
        .key_by(|r: &(u64, Vec<u8>)| r.0)
        .reduce(|_, latest: (u64, Vec<u8>)| latest)
        .uid("latest")
        .map(move |r| {
            seen.fetch_add(1, Ordering::Relaxed);
            r.0
        })
        .sink_to(DiscardSink::default(), "discard");
    env
}

/// The job's configuration: checkpoints under `ck/ck`; a tiered backend with `cache_mib` of
/// memory and `disk_mib` of disk tier under `ck/cache` (0: none).
fn config(
    ck: &std::path::Path,
    backend: &str,
    (cache_mib, disk_mib): (usize, usize),
    interval: Duration,
) -> anyhow::Result<ExecutionConfig> {
    let mut checkpoints = CheckpointConfig::new(interval, Arc::new(LocalFsStore::new(ck.join("ck"))?));
    checkpoints.timeout = Duration::from_secs(600);
    let state_backend = match backend {
        "heap" => StateBackendConfig::Heap,
        "tiered" if disk_mib > 0 => {
            let disk = DiskCacheConfig::claim(ck.join("cache"), disk_mib << 20)?;
            StateBackendConfig::Tiered(TieredSettings::new(cache_mib << 20).with_disk(disk))
        }
        "tiered" => StateBackendConfig::Tiered(TieredSettings::new(cache_mib << 20)),
        other => anyhow::bail!("--backend must be heap or tiered, got {other}"),
    };
    Ok(ExecutionConfig {
        checkpointing: Some(checkpoints),
        state_backend,
        ..ExecutionConfig::default()
    })
}

/// Waits until `seen` reaches `n`, then until `more` checkpoints complete.
async fn wait_for(handle: &JobHandle, seen: &AtomicU64, n: u64, more: u64) {
    while seen.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = handle.checkpoint_stats();
    let base = stats.completed.load(Ordering::Relaxed);
    while stats.completed.load(Ordering::Relaxed) < base + more {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loads every key, waits for a checkpoint taken after the load, and cancels; returns the
/// load time and the full size of the last checkpoint.
async fn load(shape: &Shape, config: ExecutionConfig) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let seen = Arc::new(AtomicU64::new(0));
    let handle = job(
        &Shape {
            rate: None,
            ..shape.clone()
        },
        seen.clone(),
    )
    .spawn(config)?;
    // The two source subtasks run independently (even and odd records): 5% more records
    // than keys, so the slower one has reached its last key too. Two checkpoints: the first
    // may have begun before the last key arrived.
    wait_for(&handle, &seen, shape.keys + shape.keys / 20, 2).await;
    let took = start.elapsed();
    let size = handle.checkpoint_stats().latest_size.load(Ordering::Relaxed);
    handle.cancel();
    let _ = handle.join().await;
    Ok((took, size))
}

fn incremental(args: &[String], rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let keys = num(args, "--keys", 10_000_000)?;
    let backend = arg(args, "--backend").unwrap_or_else(|| "tiered".into());
    let interval = Duration::from_secs(2);
    let churn = keys / 100;
    let shape = Shape {
        keys,
        churn,
        value_bytes: 8,
        // 1% of the keys per checkpoint interval.
        rate: Some(churn / interval.as_secs()),
    };
    let tmp = tempfile::tempdir()?;
    let (loaded, _) = rt.block_on(load(&shape, config(tmp.path(), &backend, (256, 0), interval)?))?;
    println!("{backend}: loaded {keys} keys in {:.1} s", loaded.as_secs_f64());
    let history = rt.block_on(async {
        let handle =
            job(&shape, Arc::new(AtomicU64::new(0))).spawn(config(tmp.path(), &backend, (256, 0), interval)?)?;
        let stats = handle.checkpoint_stats();
        while stats.completed.load(Ordering::Relaxed) < 6 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        handle.cancel();
        let _ = handle.join().await;
        anyhow::Ok(stats.history())
    })?;
    println!("| checkpoint | full size | incremental size | incremental / full | duration |");
    println!("|---|---|---|---|---|");
    for r in history.iter().filter(|r| r.outcome == CheckpointOutcome::Completed) {
        println!(
            "| {} | {:.1} MB | {:.2} MB | {:.2}% | {} ms |",
            r.id,
            r.state_size as f64 / 1e6,
            r.incremental_size as f64 / 1e6,
            100.0 * r.incremental_size as f64 / r.state_size.max(1) as f64,
            r.duration_ms
        );
    }
    Ok(())
}

fn large(args: &[String], rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let keys = num(args, "--keys", 30_000_000)?;
    let cache = num(args, "--cache", 128)? as usize;
    let disk = num(args, "--disk-cache", 0)? as usize;
    let backend = arg(args, "--backend").unwrap_or_else(|| "tiered".into());
    let shape = Shape {
        keys,
        churn: 0,
        value_bytes: 64,
        rate: None,
    };
    let tmp = tempfile::tempdir()?;
    let (took, size) = rt.block_on(load(
        &shape,
        config(tmp.path(), &backend, (cache, disk), Duration::from_secs(10))?,
    ))?;
    println!("| backend | keys | cache (memory, disk) | load time | state (latest checkpoint) | peak RSS |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {backend} | {keys} | {cache} MiB, {disk} MiB | {:.1} s | {:.2} GB | {:.2} GB |",
        took.as_secs_f64(),
        size as f64 / 1e9,
        peak_rss_kib().unwrap_or(0) as f64 * 1024.0 / 1e9
    );
    Ok(())
}

fn recovery(args: &[String], rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let keys = num(args, "--keys", 10_000_000)?;
    let value_bytes = num(args, "--value-bytes", 200)? as usize;
    let backend = arg(args, "--backend").unwrap_or_else(|| "tiered".into());
    // After the load, one record per key group-spread key: what comes out first measures
    // how soon the restored job processes.
    let shape = Shape {
        keys,
        churn: keys / 100,
        value_bytes,
        rate: None,
    };
    let tmp = tempfile::tempdir()?;
    let interval = Duration::from_secs(10);
    let (loaded, on_disk) = rt.block_on(load(&shape, config(tmp.path(), &backend, (256, 0), interval)?))?;
    let first = rt.block_on(async {
        let seen = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let handle = job(&shape, seen.clone()).spawn(config(tmp.path(), &backend, (256, 0), interval)?)?;
        while seen.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = start.elapsed();
        handle.cancel();
        let _ = handle.join().await;
        anyhow::Ok(took)
    })?;
    println!("| backend | keys | state (latest checkpoint) | load time | restart to first output |");
    println!("|---|---|---|---|---|");
    println!(
        "| {backend} | {keys} | {:.2} GB | {:.1} s | {:.2} s |",
        on_disk as f64 / 1e9,
        loaded.as_secs_f64(),
        first.as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.get(1).map(String::as_str) {
        Some("incremental") => incremental(&args, &rt),
        Some("large") => large(&args, &rt),
        Some("recovery") => recovery(&args, &rt),
        _ => anyhow::bail!("usage: tiered incremental|large|recovery [--keys N] [--backend heap|tiered] ..."),
    }
}
