//! How an embedded job ends: drained on one thread (no task may spin), cancelled while it
//! waits to restart (CANCELED, not FAILED).

// The watchdog thread is outside the runtime under test: a task that spins never yields, so
// a timeout inside the same runtime would never fire.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::RestartStrategy;
use sluice_core::connectors::{DiscardSink, GeneratorSource};
use sluice_core::error::OperatorError;
use sluice_core::{ExecutionConfig, JobStatus, StreamEnv, WatermarkStrategy};

/// Runs `f` on a fresh single-threaded runtime in its own thread; fails the test if it takes
/// longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

/// An endless, slow source, then a task of its own behind a rebalance (so it waits on its
/// input most of the time).
fn endless(env: &StreamEnv, seen: Arc<AtomicU64>) {
    env.from_source(
        GeneratorSource::new(1, None, |i, _| i).with_records_per_second(1000),
        WatermarkStrategy::for_monotonous_timestamps(),
        "numbers",
    )
    .rebalance()
    .map(move |x: u64| {
        seen.fetch_add(1, Ordering::Relaxed);
        x
    })
    .sink_to(DiscardSink::default(), "discard");
}

#[test]
fn a_drained_job_ends_on_a_single_thread() {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let result = within(Duration::from_secs(30), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let env = StreamEnv::new("drain");
            endless(&env, s);
            let handle = env.spawn(ExecutionConfig::default()).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            handle.drain();
            handle.join().await
        })
    });
    let r = result.expect("the job finishes after a drain");
    assert!(!r.cancelled);
    assert!(
        seen.load(Ordering::Relaxed) > 0 && r.records_out == r.records_in,
        "{r:?}"
    );
}

#[test]
fn a_cancel_while_waiting_to_restart_ends_the_job_canceled() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = StreamEnv::new("fails");
        env.from_source(
            GeneratorSource::new(1, Some(10), |i, _| i),
            WatermarkStrategy::for_monotonous_timestamps(),
            "numbers",
        )
        .flat_map(|_x: u64| -> Vec<u64> { panic!("{}", OperatorError::user("always fails")) })
        .sink_to(DiscardSink::default(), "discard");
        let config = ExecutionConfig {
            restart: Some(RestartStrategy::FixedDelay {
                attempts: 5,
                delay: Duration::from_secs(3600),
            }),
            ..ExecutionConfig::default()
        };
        let handle = env.spawn(config).unwrap();
        let controller = handle.controller();
        for _ in 0..500 {
            if controller.status() == JobStatus::Restarting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(controller.status(), JobStatus::Restarting);
        controller.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), handle.join())
            .await
            .expect("the cancel ends the restart wait")
            .expect("a cancelled job is not a failed one");
        assert!(r.cancelled);
        assert_eq!(controller.status(), JobStatus::Canceled);
        assert_eq!(controller.exceptions().len(), 1, "the one failure before the cancel");
    });
}

#[test]
fn a_stop_with_savepoint_while_waiting_to_restart_copies_the_latest_checkpoint() {
    use sluice_core::checkpoint::CheckpointConfig;
    use sluice_core::state::blob::{BlobStore, MemoryStore};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let b = broken.clone();
        let env = StreamEnv::new("breaks");
        env.from_source(
            GeneratorSource::new(1, None, |i, _| i).with_records_per_second(2000),
            WatermarkStrategy::for_monotonous_timestamps(),
            "numbers",
        )
        .uid("numbers")
        .map(move |x: u64| {
            assert!(!b.load(Ordering::SeqCst), "broken on purpose");
            x
        })
        .sink_to(DiscardSink::default(), "discard");
        let store = Arc::new(MemoryStore::new());
        let config = ExecutionConfig {
            checkpointing: Some(CheckpointConfig::new(Duration::from_millis(50), store.clone())),
            restart: Some(RestartStrategy::FixedDelay {
                attempts: 5,
                delay: Duration::from_secs(3600),
            }),
            ..ExecutionConfig::default()
        };
        let handle = env.spawn(config).unwrap();
        let controller = handle.controller();
        let stats = handle.checkpoint_stats();
        while stats.completed.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        broken.store(true, Ordering::SeqCst);
        for _ in 0..500 {
            if controller.status() == JobStatus::Restarting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(controller.status(), JobStatus::Restarting);
        let latest = stats.latest_id.load(Ordering::SeqCst);
        let target = Arc::new(MemoryStore::new());
        let info = tokio::time::timeout(
            Duration::from_secs(10),
            controller.stop_with_savepoint(target.clone(), false),
        )
        .await
        .expect("answered while the job waits to restart")
        .expect("the savepoint is taken");
        assert_eq!(info.checkpoint_id, latest, "a copy of the latest checkpoint");
        assert!(target.get(&format!("{}/_metadata", info.name)).await.is_ok());
        let r = tokio::time::timeout(Duration::from_secs(10), handle.join())
            .await
            .expect("the job stops")
            .expect("a stopped job is not a failed one");
        assert!(r.cancelled);
        assert_eq!(
            controller.status(),
            JobStatus::Finished,
            "stopped with a savepoint, as in Flink"
        );
    });
}
