//! Backpressure across the network in cluster mode, with bounded memory.
//!
//! A coordinator and two workers run in this process over real TCP on 127.0.0.1. One job holds
//! two independent keyed pipelines at parallelism 2, so subtask 0 runs on one worker and
//! subtask 1 on the other and every keyed exchange crosses the workers' data connections:
//!
//! - pipeline A: an endless, unpaced generator → key_by → reduce → a sink whose subtask 1 is slow
//!   (it sleeps 50 ms per batch, like a sink blocked on an outside system);
//! - pipeline B: a bounded generator of 200 000 records → key_by → reduce → a normal sink.
//!
//! Credits make A's slow sink subtask hold back A's producers on both workers: A's sources
//! can only run ahead of A's sinks by the buffers of the channels between them, and resident
//! memory stays flat, however long the job runs. B shares the same TCP connections and still
//! delivers all its records, while A crawls.

// Real sockets and real time: this test runs outside the simulator.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::cluster::{Coordinator, CoordinatorConfig, JobRegistry, JobStatus, StoreOpener, Worker, WorkerConfig};
use sluice_core::connectors::GeneratorSource;
use sluice_core::error::JobBuildError;
use sluice_core::error::OperatorError;
use sluice_core::state::BlobError;
use sluice_core::{ExecutionConfig, JobGraph, Record, Sink, SinkWriter, StreamEnv, WatermarkStrategy};

type Rec = (u64, String);

#[derive(Default)]
struct Counters {
    a_produced: AtomicU64,
    a_sunk: AtomicU64,
    b_sunk: AtomicU64,
}

struct CountingSink {
    counter: Arc<Counters>,
    pipeline_a: bool,
}

struct CountingWriter {
    counter: Arc<Counters>,
    pipeline_a: bool,
    slow: bool,
}

impl Sink for CountingSink {
    type In = Rec;
    type Writer = CountingWriter;
    fn writer(&self, subtask: u32, _parallelism: u32) -> Result<CountingWriter, OperatorError> {
        Ok(CountingWriter {
            counter: self.counter.clone(),
            pipeline_a: self.pipeline_a,
            slow: self.pipeline_a && subtask == 1,
        })
    }
}

impl SinkWriter for CountingWriter {
    type In = Rec;
    fn write(&mut self, batch: Vec<Record<Rec>>) -> Result<(), OperatorError> {
        if self.slow {
            std::thread::sleep(Duration::from_millis(50));
        }
        let c = if self.pipeline_a {
            &self.counter.a_sunk
        } else {
            &self.counter.b_sunk
        };
        c.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
}

const B_RECORDS: u64 = 200_000;

struct TwoPipelines(Arc<Counters>);

impl JobRegistry for TwoPipelines {
    fn build(&self, name: &str, _options: &BTreeMap<String, String>) -> Result<JobGraph, JobBuildError> {
        if name != "two-pipelines" {
            return Err(JobBuildError::UnknownJob {
                name: name.to_string(),
                known: vec!["two-pipelines".into()],
            });
        }
        let env = StreamEnv::new(name);
        env.set_parallelism(2);
        let counters = self.0.clone();
        let payload = "x".repeat(200);
        env.from_source(
            GeneratorSource::new(1, None, move |i, _| {
                counters.a_produced.fetch_add(1, Ordering::Relaxed);
                (i % 1000, payload.clone())
            }),
            WatermarkStrategy::no_watermarks(),
            "endless",
        )
        .key_by(|r: &Rec| r.0)
        .reduce(|_, latest: Rec| latest)
        .sink_to(
            CountingSink {
                counter: self.0.clone(),
                pipeline_a: true,
            },
            "slow sink",
        );
        env.from_source(
            GeneratorSource::new(2, Some(B_RECORDS), |i, _| (i % 1000, String::new())),
            WatermarkStrategy::no_watermarks(),
            "bounded",
        )
        .key_by(|r: &Rec| r.0)
        .reduce(|_, latest: Rec| latest)
        .sink_to(
            CountingSink {
                counter: self.0.clone(),
                pipeline_a: false,
            },
            "normal sink",
        );
        Ok(env.build()?)
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn no_store() -> StoreOpener {
    Arc::new(|location: &str| {
        Err(BlobError::InvalidPath {
            path: location.to_string(),
            reason: "this test takes no checkpoints",
        })
    })
}

#[test]
fn a_slow_sink_backpressures_across_the_network_with_bounded_memory() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(6)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let counters = Arc::new(Counters::default());
        let registry: Arc<dyn JobRegistry> = Arc::new(TwoPipelines(counters.clone()));
        let coordinator = Coordinator::new(CoordinatorConfig::new(log.clone()), registry.clone(), no_store()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serve = coordinator.clone();
        tokio::spawn(async move { serve.serve(listener).await });
        for id in ["w1", "w2"] {
            let mut cfg = WorkerConfig::new(
                addr.clone(),
                1,
                ExecutionConfig {
                    log: log.clone(),
                    ..ExecutionConfig::default()
                },
            );
            cfg.id = Some(id.to_string());
            let w = Worker::bind(cfg, "127.0.0.1:0", registry.clone(), no_store())
                .await
                .unwrap();
            tokio::spawn(w.run());
        }
        while coordinator.workers().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let job = coordinator.submit("two-pipelines", &[], None).await.unwrap();

        // B delivers everything although it shares the connections with A's stalled channels.
        let start = Instant::now();
        while counters.b_sunk.load(Ordering::Relaxed) < B_RECORDS {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "pipeline B stalled at {}",
                counters.b_sunk.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(coordinator.job(&job).unwrap().status, JobStatus::Running);
        let rss_start = rss_bytes();
        let mut worst_ahead = 0u64;
        let mut rss_peak = rss_start;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let ahead = counters.a_produced.load(Ordering::Relaxed) - counters.a_sunk.load(Ordering::Relaxed);
            worst_ahead = worst_ahead.max(ahead);
            rss_peak = rss_peak.max(rss_bytes());
        }
        let produced = counters.a_produced.load(Ordering::Relaxed);
        let sunk = counters.a_sunk.load(Ordering::Relaxed);
        eprintln!(
            "A produced {produced}, sunk {sunk}, at most {worst_ahead} in flight; B sunk {}; RSS {} MiB -> peak {} MiB",
            counters.b_sunk.load(Ordering::Relaxed),
            rss_start >> 20,
            rss_peak >> 20
        );
        // Bound: per channel at most 8 batches queued at the sender plus 8 credited at the
        // receiver (remote) or 8 in the queue (local), of up to 1024 records, over 4 channels,
        // plus the batches being built and processed: well under 200 000 records.
        assert!(
            worst_ahead < 200_000,
            "A's sources ran {worst_ahead} records ahead of its sinks"
        );
        assert!(sunk > 0, "A still moves, at the slow sink's pace");
        // An unpaced generator makes millions of records a second; with backpressure A
        // produces about what its slow sink takes.
        assert!(
            produced < 2_000_000,
            "A's sources were not held back: {produced} records"
        );
        assert!(
            rss_peak < rss_start + (64 << 20),
            "resident memory grew from {} MiB to {} MiB",
            rss_start >> 20,
            rss_peak >> 20
        );
        coordinator.cancel(&job).unwrap();
        let start = Instant::now();
        while coordinator.job(&job).unwrap().status != JobStatus::Canceled {
            assert!(start.elapsed() < Duration::from_secs(10), "cancel did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
