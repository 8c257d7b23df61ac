//! The whole cluster under madsim: the real coordinator, workers and TCP transport run as
//! simulated nodes with their own IP addresses, next to simulated twins of the outside world
//! (a checkpoint store that fails and is slow, a transactional sink whose commits fail).
//!
//! Per seed a swarm of fault rates is drawn (as TigerBeetle's VOPR does): during a fault phase
//! workers are killed and restarted after a random downtime, links between any two nodes
//! (worker–worker and worker–coordinator) are cut and healed, network latency varies, store
//! requests fail or answer ambiguously, sink commits fail. Then faults stop and the job must
//! finish within a bound of simulated time (liveness), and its committed output must equal the
//! failure-free result exactly: no loss, no duplicate, nothing from an aborted attempt.
//!
//! Each run prints one summary line: faults injected by kind, failovers, violations.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::Handle;
use sluice_core::cluster::{list_jobs, submit_job, Coordinator, CoordinatorConfig, JobRegistry, JobStatus, StoreOpener, Worker, WorkerConfig};
use sluice_core::connectors::{TransactionalStore, TransactionalStoreSink};
use sluice_core::state::blob::{BlobStore, FaultConfig, MemoryStore};
use sluice_core::{ExecutionConfig, JobGraph, StreamEnv};
use sluice_sim::keyed_count::KeyedCount;

const WORKERS: usize = 3;
const COORDINATOR: &str = "10.0.0.1:6123";

struct SimJobs {
    workload: KeyedCount,
    sink: TransactionalStore<(u64, u64)>,
}

impl JobRegistry for SimJobs {
    fn build(&self, name: &str, options: &BTreeMap<String, String>) -> Result<JobGraph, String> {
        if name != "keyed-count" {
            return Err(format!("unknown job '{name}'; known jobs: keyed-count"));
        }
        let parallelism = options.get("parallelism").map_or(Ok(1), |p| p.parse::<u32>().map_err(|e| e.to_string()))?;
        let env = StreamEnv::new(name);
        env.set_parallelism(parallelism);
        self.workload.build(&env, TransactionalStoreSink::new(self.sink.clone()));
        env.build().map_err(|e| e.to_string())
    }
}

fn quiet() -> slog::Logger {
    if std::env::var_os("SIM_LOG").is_some() {
        use slog::Drain;
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        return slog::Logger::root(drain, slog::o!());
    }
    slog::Logger::root(slog::Discard, slog::o!())
}

fn worker_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + i as u8))
}

/// Fault rates of one seed.
#[derive(Debug)]
struct Swarm {
    kill_per_tick: f64,
    partition_per_tick: f64,
    max_latency_ms: u64,
}

#[derive(Debug, Default)]
struct Injected {
    kills: u32,
    partitions: u32,
    latency_changes: u32,
}

fn chance(p: f64) -> bool {
    (madsim::rand::random::<u32>() % 10_000) as f64 / 10_000.0 < p
}

fn draw(max: f64) -> f64 {
    (madsim::rand::random::<u32>() % 1000) as f64 / 1000.0 * max
}

#[madsim::test]
async fn cluster_output_is_exact_under_kills_partitions_and_storage_faults() {
    let handle = Handle::current();
    let seed = handle.seed();
    let swarm = Swarm {
        kill_per_tick: draw(0.08),
        partition_per_tick: draw(0.08),
        max_latency_ms: 1 + madsim::rand::random::<u64>() % 20,
    };
    let store = Arc::new(MemoryStore::with_faults(FaultConfig {
        seed,
        put_error_rate: draw(0.05),
        put_ambiguous_rate: draw(0.03),
        get_error_rate: 0.0,
        list_error_rate: 0.0,
        delete_error_rate: draw(0.1),
        max_latency_ms: madsim::rand::random::<u64>() % 20,
    }));
    let sink = TransactionalStore::new();
    sink.fail_next_commits(madsim::rand::random::<u32>() % 3);
    let workload = KeyedCount { records: 4_000, keys: 13, seed, records_per_second: 1_000 };
    let registry: Arc<dyn JobRegistry> = Arc::new(SimJobs { workload, sink: sink.clone() });
    let shared_store: Arc<dyn BlobStore> = store.clone();
    let opener: StoreOpener = Arc::new(move |_: &str| Ok(shared_store.clone()));

    // The coordinator; its handle is kept for the summary (failovers).
    let coordinator_slot: Arc<Mutex<Option<Coordinator>>> = Arc::default();
    {
        let (registry, opener, slot) = (registry.clone(), opener.clone(), coordinator_slot.clone());
        handle
            .create_node()
            .name("coordinator")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
            .init(move || {
                let (registry, opener, slot) = (registry.clone(), opener.clone(), slot.clone());
                async move {
                    let mut cfg = CoordinatorConfig::new(quiet());
                    cfg.heartbeat_interval = Duration::from_millis(200);
                    cfg.heartbeat_timeout = Duration::from_secs(2);
                    cfg.slot_wait = Duration::from_secs(120);
                    cfg.checkpoint_dir = Some("sim-store".into());
                    let c = Coordinator::new(cfg, registry, opener).expect("valid coordinator settings");
                    *slot.lock().unwrap() = Some(c.clone());
                    let listener = tokio::net::TcpListener::bind(COORDINATOR).await.expect("bind the coordinator");
                    c.serve(listener).await.expect("the coordinator serves");
                }
            })
            .build();
    }
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let (registry, opener) = (registry.clone(), opener.clone());
        let node = handle
            .create_node()
            .name(format!("worker-{i}"))
            .ip(worker_ip(i))
            .init(move || {
                let (registry, opener) = (registry.clone(), opener.clone());
                async move {
                    let exec = ExecutionConfig {
                        batch_size: 32,
                        channel_capacity: 2,
                        log: quiet(),
                        ..ExecutionConfig::default()
                    };
                    let mut cfg = WorkerConfig::new(COORDINATOR, 2, exec);
                    cfg.id = Some(format!("worker-{i}"));
                    cfg.max_backoff = Duration::from_millis(500);
                    cfg.connect_timeout = Duration::from_secs(5);
                    // A restarted node may find its old socket not yet released.
                    let w = loop {
                        match Worker::bind(cfg.clone(), &format!("{}:7000", worker_ip(i)), registry.clone(), opener.clone()).await {
                            Ok(w) => break w,
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    };
                    // Runs until the node is killed.
                    let _ = w.run().await;
                }
            })
            .build();
        workers.push(node.id());
    }
    let client = handle.create_node().name("client").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99))).build();
    let coordinator_id = handle.get_node("coordinator").expect("created above").id();

    let job = client
        .spawn(async move {
            // Workers may still be registering: the job waits for slots.
            let options: Vec<(String, String)> = [
                ("parallelism", "3"),
                ("checkpoint-interval", "100ms"),
                ("checkpoint-timeout", "2s"),
                ("tolerable-failed-checkpoints", "3"),
                ("restart-strategy", "fixed-delay:attempts=10000,delay=50ms"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            loop {
                match submit_job(COORDINATOR, "keyed-count", &options).await {
                    Ok(id) => return id,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
        .expect("the client submits the job");

    // Fault phase.
    let net = NetSim::current();
    let mut injected = Injected::default();
    let mut healing = Vec::new();
    // Workers that are down now (not killed again until restarted).
    let down: Arc<Mutex<std::collections::BTreeSet<madsim::task::NodeId>>> = Arc::default();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if chance(swarm.kill_per_tick) {
            let w = workers[madsim::rand::random::<usize>() % WORKERS];
            if !down.lock().unwrap().insert(w) {
                continue;
            }
            handle.kill(w);
            injected.kills += 1;
            let downtime = Duration::from_millis(200 + madsim::rand::random::<u64>() % 3000);
            let (h, down) = (handle.clone(), down.clone());
            healing.push(tokio::spawn(async move {
                tokio::time::sleep(downtime).await;
                h.restart(w);
                down.lock().unwrap().remove(&w);
            }));
        }
        if chance(swarm.partition_per_tick) {
            // Any two of the coordinator and the workers.
            let mut nodes = workers.clone();
            nodes.push(coordinator_id);
            let a = nodes[madsim::rand::random::<usize>() % nodes.len()];
            let b = nodes[madsim::rand::random::<usize>() % nodes.len()];
            if a != b {
                net.clog_link(a, b);
                net.clog_link(b, a);
                injected.partitions += 1;
                let cut = Duration::from_millis(100 + madsim::rand::random::<u64>() % 4000);
                let net = NetSim::current();
                healing.push(tokio::spawn(async move {
                    tokio::time::sleep(cut).await;
                    net.unclog_link(a, b);
                    net.unclog_link(b, a);
                }));
            }
        }
        if chance(0.1) {
            let max = 1 + madsim::rand::random::<u64>() % swarm.max_latency_ms;
            net.update_config(|c| c.send_latency = Duration::from_millis(1)..Duration::from_millis(1 + max));
            injected.latency_changes += 1;
        }
    }
    // Liveness phase: faults stop (downed workers come back, links heal), the job must finish.
    for h in healing {
        h.await.expect("healing task");
    }
    net.update_config(|c| c.send_latency = Duration::from_millis(1)..Duration::from_millis(10));
    let status = client
        .spawn({
            let job = job.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
                loop {
                    if let Ok(jobs) = list_jobs(COORDINATOR).await {
                        if let Some(j) = jobs.iter().find(|j| j.id == job).filter(|j| j.status.is_terminal()) {
                            return (j.status, j.error.clone());
                        }
                    }
                    if tokio::time::Instant::now() > deadline {
                        return (JobStatus::Running, Some("did not finish within 300 s of simulated time after faults stopped".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .await
        .expect("the client polls");
    let failovers = coordinator_slot
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|c| c.job(&job))
        .map_or(0, |j| j.attempt);
    let violations = workload.check(&sink.committed());
    println!(
        "seed {seed}: swarm {swarm:?}; injected kills {} partitions {} latency changes {} store faults {}; failovers {failovers}; status {}; violations {violations:?}",
        injected.kills,
        injected.partitions,
        injected.latency_changes,
        store.injected_faults(),
        status.0
    );
    assert_eq!(status.0, JobStatus::Finished, "seed {seed}: the job did not finish: {:?}", status.1);
    assert!(violations.is_clean(), "seed {seed}: {violations:?} after {failovers} failovers");
}
