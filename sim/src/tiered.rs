//! Tiered state under object-store faults: a keyed count and a sliding-window count keep
//! their state (the count per key, the windows' contents per key) in runs in a store
//! that fails and delays puts and gets, commits some puts it reports as failed, and fails
//! deletes; a block cache far too small for the state sends reads to the store. A watcher
//! checks throughout that no run a completed checkpoint names is ever missing (the
//! shared-file deletion oracle).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, CheckpointMetadata, RestartStrategy};
use sluice_core::connectors::{TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{FaultConfig, MemoryStore};
use sluice_core::state::tiered::TableConfig;
use sluice_core::state_backend::{StateBackendConfig, TieredSettings};
use sluice_core::{ExecutionConfig, StreamEnv};

use crate::keyed_count::KeyedCount;
use crate::windowed_count::WindowedCount;

/// Runs no completed checkpoint could do without, seen missing by the watcher.
#[derive(Default)]
struct Oracle {
    missing: AtomicU64,
    checks: AtomicU64,
}

/// The paths of the completed checkpoints' `_metadata` in `store`.
fn metadata_paths(store: &MemoryStore) -> Vec<String> {
    store
        .paths()
        .into_iter()
        .filter(|p| p.ends_with("/_metadata"))
        .collect()
}

/// Checks that the runs of the retained checkpoints (the newest `retained` with a
/// `_metadata`: an older one whose deletion failed is no longer the job's) exist. A run found
/// missing counts only if the checkpoint was still there afterwards (a subsumed one is
/// deleted metadata first).
fn check_runs(store: &MemoryStore, oracle: &Oracle, retained: usize) {
    let paths: BTreeSet<String> = store.paths().into_iter().collect();
    let all = metadata_paths(store);
    for meta_path in all.iter().skip(all.len().saturating_sub(retained)) {
        let Some(bytes) = store.peek(meta_path) else { continue };
        let Ok(meta) = CheckpointMetadata::decode(meta_path, &bytes) else {
            continue;
        };
        let gone: Vec<_> = meta
            .shared_files()
            .into_iter()
            .filter(|f| !paths.contains(&f.path))
            .collect();
        if !gone.is_empty() && store.peek(meta_path).is_some() {
            eprintln!("{meta_path} names runs that are gone: {gone:?}");
            oracle.missing.fetch_add(gone.len() as u64, Ordering::Relaxed);
        }
        oracle.checks.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one run of the tiered workload showed.
#[derive(Debug, Clone)]
pub struct TieredRun {
    /// Why the job did not finish, if it did not.
    pub error: Option<String>,
    /// The job finished with exactly the failure-free output committed.
    pub exact: bool,
    /// Runs a completed checkpoint named that were seen missing.
    pub missing: u64,
    /// Checkpoints whose runs the watcher checked.
    pub checks: u64,
    /// Checkpoints completed (in the last attempt).
    pub checkpoints: u64,
    /// Restarts of the job.
    pub restarts: u32,
    /// Faults the store injected.
    pub store_faults: u64,
}

impl std::fmt::Display for TieredRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exact {} checkpoints {} restarts {} store faults {} run checks {} missing {}{}",
            self.exact,
            self.checkpoints,
            self.restarts,
            self.store_faults,
            self.checks,
            self.missing,
            self.error.as_ref().map(|e| format!(" error: {e}")).unwrap_or_default()
        )
    }
}

/// One run of the workload on `seed`, with a store that fails; `broken_gc` deletes a
/// subsumed checkpoint's runs even when a retained checkpoint names them too (the variant
/// the oracle must catch).
pub async fn run(broken_gc: bool, seed: u64) -> TieredRun {
    run_with(broken_gc, seed, true).await
}

/// [`run`], with a store that never fails or delays when `faults` is false: then every
/// checkpoint completes and shares runs with the one before it, so a broken deletion shows
/// on every seed (with faults it can hide: a failed delete keeps what it should not have
/// deleted, and failing checkpoints leave few to compare).
pub async fn run_with(broken_gc: bool, seed: u64, faults: bool) -> TieredRun {
    let draw = |max: f64| (madsim::rand::random::<u32>() % 1000) as f64 / 1000.0 * max;
    let rate = |max: f64| if faults { draw(max) } else { 0.0 };
    let store = Arc::new(MemoryStore::with_faults(FaultConfig {
        seed,
        put_error_rate: rate(0.1),
        put_ambiguous_rate: rate(0.05),
        get_error_rate: rate(0.02),
        list_error_rate: 0.0,
        delete_error_rate: rate(0.2),
        max_latency_ms: if faults { madsim::rand::random::<u64>() % 20 } else { 0 },
    }));
    let sink_store = TransactionalStore::new();
    // A calm run is paced four times slower: more checkpoints complete before the end (a
    // finished job's last checkpoints go with it, and the oracle must see one subsumed).
    let pace = if faults { 1 } else { 4 };
    let workload = KeyedCount {
        records: 6_000,
        keys: 1_500,
        seed,
        records_per_second: 5_000 / pace,
    };
    // Window contents live in the tiered table too: a sliding-window count beside it.
    let window_store = TransactionalStore::new();
    let windows = WindowedCount {
        records: 1_500,
        keys: 100,
        seed: seed ^ 0x5eed,
        records_per_second: 1_250 / pace,
    };
    let env = StreamEnv::new("sim-tiered");
    env.set_parallelism(2);
    workload.build(&env, TransactionalStoreSink::new(sink_store.clone()));
    windows.build(&env, TransactionalStoreSink::new(window_store.clone()));
    let mut cfg = CheckpointConfig::new(Duration::from_millis(40), store.clone());
    cfg.tolerable_failures = 5;
    cfg.timeout = Duration::from_secs(2);
    // With a calm store, one retained checkpoint: every completed checkpoint after the first
    // subsumes one (few complete in a run: each waits for the data ahead of its barrier).
    cfg.retained = if faults { 1 + (seed % 2) as u32 } else { 1 };
    let retained = cfg.retained as usize;
    cfg.broken_gc = broken_gc;
    // Small blocks and a cache far smaller than the state: reads reach the store on every
    // seed. Two regimes by seed: a memory table that holds all state (one run per
    // checkpoint, runs shared by consecutive checkpoints until compacted), and a tiny one
    // (flushes and compactions between checkpoints).
    let shared_regime = (seed >> 1) % 2 == 0;
    let mut tiered = TieredSettings::new(4 << 10);
    tiered.table = TableConfig {
        block_size: 256,
        memtable_bytes: if shared_regime { 256 << 10 } else { 2 << 10 },
        max_runs: if shared_regime { 6 } else { 3 },
        // Small: merges write several runs, cut at key groups, under the store's faults.
        max_run_bytes: 2 << 10,
    };
    let config = ExecutionConfig {
        batch_size: 32,
        channel_capacity: 2,
        checkpointing: Some(cfg),
        restart: Some(RestartStrategy::FixedDelay {
            attempts: 1000,
            delay: Duration::from_millis(20),
        }),
        clock: Some(sluice_core::Clock::starting_at(1_700_000_000_000)),
        state_backend: StateBackendConfig::Tiered(tiered),
        ..ExecutionConfig::default()
    };
    let oracle = Arc::new(Oracle::default());
    let watcher = {
        let (store, oracle) = (store.clone(), oracle.clone());
        tokio::spawn(async move {
            loop {
                check_runs(&store, &oracle, retained);
                tokio::time::sleep(Duration::from_millis(7)).await;
            }
        })
    };
    // Harsh seeds restart the job a hundred times (failed gets and flushes): give them time.
    let result = tokio::time::timeout(Duration::from_secs(1800), env.execute(config)).await;
    watcher.abort();
    check_runs(&store, &oracle, retained);
    let exact = matches!(&result, Ok(Ok(_)))
        && workload.check(&sink_store.committed()).is_clean()
        && windows.check(&window_store.committed()).is_clean();
    let (checkpoints, restarts) = match &result {
        Ok(Ok(r)) => (r.checkpoints_completed, r.restarts),
        _ => (0, 0),
    };
    let error = match &result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no end within 30 simulated minutes".into()),
    };
    TieredRun {
        error,
        exact,
        missing: oracle.missing.load(Ordering::Relaxed),
        checks: oracle.checks.load(Ordering::Relaxed),
        checkpoints,
        restarts,
        store_faults: store.injected_faults(),
    }
}
