//! The cluster-in-a-box: the real coordinator, workers and TCP transport of `sluice-core` as
//! madsim nodes with their own IP addresses, next to simulated twins of the outside world (a
//! checkpoint store with injectable failures and latency, a transactional sink whose commits
//! fail), and a fault plan drawn from the seed.
//!
//! [`run_keyed_count`] builds a cluster, submits the keyed-count workload through the client
//! API, injects faults for a while (worker kills and restarts, partitions between any two
//! nodes, latency changes; storage and commit faults throughout), stops the faults and waits a
//! bounded simulated time for the job to finish (liveness), then checks the committed output
//! against the oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use sluice_core::cluster::tls::{issue_ca, ClusterTls, Identity, Validity};
use sluice_core::cluster::{
    list_jobs, submit_job, Coordinator, CoordinatorConfig, JobRegistry, JobStatus, StoreOpener, Target, Worker,
    WorkerConfig,
};
use sluice_core::connectors::{TransactionalStore, TransactionalStoreSink};
use sluice_core::error::{InvalidSetting, JobBuildError};
use sluice_core::state::blob::{BlobStore, FaultConfig, MemoryStore};
use sluice_core::{ExecutionConfig, JobGraph, StreamEnv};

use crate::broken_sink::EagerCommitSink;
use crate::keyed_count::{KeyedCount, Violations};
use sluice_core::sync::LockExt;

/// Which two-phase-commit protocol the sink follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkProtocol {
    /// Commit when the checkpoint completes (correct).
    Correct,
    /// Commit at pre-commit, before the checkpoint completes (deliberately broken).
    EagerCommit,
}

/// A cluster and its workload.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Distinguishes clusters built one after another in one simulation: their nodes get
    /// addresses `10.<subnet>.0.x`.
    pub subnet: u8,
    /// Workers.
    pub workers: usize,
    /// Slots per worker.
    pub slots: u32,
    /// The job's parallelism.
    pub parallelism: u32,
    /// Checkpoint interval.
    pub checkpoint_interval: Duration,
    /// The workload.
    pub workload: KeyedCount,
    /// The sink's protocol.
    pub sink: SinkProtocol,
    /// The faults.
    pub faults: FaultPlan,
    /// What the job does when its latest checkpoint cannot be restored (the
    /// `on-unusable-checkpoint` option: `fail`, `fall-back` or `start-fresh`).
    pub on_unusable: &'static str,
    /// Mutual TLS on every connection (the same rustls code as the daemons), with a CA and
    /// certificates made in the simulation: the coordinator checks each registration and
    /// request against the certificate, workers each data connection.
    pub tls: bool,
    /// An impostor node with a certificate of its own (needs `tls`) that tries to register
    /// as worker 0 and to speak about tasks that are not its own (see [`crate::impostor`]).
    pub impostor: bool,
    /// The deliberately broken variant: the coordinator takes registrations at their word
    /// (the checker must see the impostor's damage).
    pub trust_claimed_identities: bool,
    /// Standby coordinators elected over an etcd twin; `None` runs one standalone coordinator.
    pub ha: Option<HaSpec>,
}

/// High availability in a simulated cluster.
#[derive(Debug, Clone)]
pub struct HaSpec {
    /// Coordinators (one leads, the others stand by).
    pub coordinators: usize,
    /// Their lease TTL.
    pub lease_ttl: Duration,
    /// The deliberately broken variant: leaders ignore a lost lease and write unfenced.
    pub unfenced: bool,
}

/// Fault rates of one run (a "swarm": drawn per seed rather than one fixed profile).
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Ticks of 200 ms of simulated time during which faults strike.
    pub ticks: u32,
    /// Chance per tick of killing a worker (restarted after 0.2–3.2 s).
    pub kill_per_tick: f64,
    /// Chance per tick of cutting the link between two nodes (healed after 0.1–4.1 s).
    pub partition_per_tick: f64,
    /// Chance per tick of changing the network latency.
    pub latency_per_tick: f64,
    /// Highest one-way latency, ms.
    pub max_latency_ms: u64,
    /// Checkpoint store faults.
    pub store: FaultConfig,
    /// Sink commits that fail, from the start.
    pub failing_commits: u32,
    /// Chance per tick of bit rot: one bit of a random object in the checkpoint store flips
    /// (a disk or object store that returns other bytes than were written).
    pub rot_per_tick: f64,
    /// With HA: chance per tick of killing a coordinator (restarted after 0.2–3.2 s).
    pub coordinator_kill_per_tick: f64,
    /// With HA: chance per tick of pausing a coordinator for 0.5–5.5 s (it wakes a zombie).
    pub pause_per_tick: f64,
    /// With HA: chance per tick of cutting a coordinator from etcd only for 0.5–5.5 s (split
    /// brain: it still reaches the workers).
    pub etcd_cut_per_tick: f64,
    /// With HA: at this tick, cut whichever coordinator leads from etcd for 3 lease TTLs.
    pub split_brain_at: Option<u32>,
    /// With HA: chance per tick of etcd becoming unreachable for everyone for 0.5–5.5 s.
    pub etcd_outage_per_tick: f64,
    /// With HA: share of etcd requests that time out without being applied (the twin's
    /// `timeout_rate`), throughout.
    pub etcd_timeout_rate: f32,
}

impl FaultPlan {
    /// Draws a swarm of fault rates from the simulation's seeded RNG.
    pub fn draw(seed: u64) -> Self {
        let draw = |max: f64| (madsim::rand::random::<u32>() % 1000) as f64 / 1000.0 * max;
        FaultPlan {
            ticks: 50,
            kill_per_tick: draw(0.08),
            partition_per_tick: draw(0.08),
            latency_per_tick: 0.1,
            max_latency_ms: 1 + madsim::rand::random::<u64>() % 20,
            store: FaultConfig {
                seed,
                put_error_rate: draw(0.05),
                put_ambiguous_rate: draw(0.03),
                get_error_rate: 0.0,
                list_error_rate: 0.0,
                delete_error_rate: draw(0.1),
                max_latency_ms: madsim::rand::random::<u64>() % 20,
            },
            failing_commits: madsim::rand::random::<u32>() % 3,
            // One seed in three: a store that rots stops most jobs (by design), so most
            // seeds keep showing that the job finishes under the other faults.
            rot_per_tick: if madsim::rand::random::<u32>() % 3 == 0 {
                draw(0.1)
            } else {
                0.0
            },
            coordinator_kill_per_tick: 0.0,
            pause_per_tick: 0.0,
            etcd_cut_per_tick: 0.0,
            split_brain_at: None,
            etcd_outage_per_tick: 0.0,
            etcd_timeout_rate: 0.0,
        }
    }

    /// The draw without worker kills, partitions, bit rot or failing commits (store faults
    /// stay): whatever goes wrong in a checker's run is the broken variant's doing.
    pub fn quiet(seed: u64) -> Self {
        FaultPlan {
            kill_per_tick: 0.0,
            partition_per_tick: 0.0,
            rot_per_tick: 0.0,
            failing_commits: 0,
            ..FaultPlan::draw(seed)
        }
    }

    /// A swarm for an HA cluster: the rates of [`FaultPlan::draw`] plus coordinator kills,
    /// pauses and cuts from etcd.
    pub fn draw_ha(seed: u64) -> Self {
        let draw = |max: f64| (madsim::rand::random::<u32>() % 1000) as f64 / 1000.0 * max;
        FaultPlan {
            coordinator_kill_per_tick: draw(0.05),
            pause_per_tick: draw(0.05),
            etcd_cut_per_tick: draw(0.05),
            etcd_outage_per_tick: draw(0.02),
            etcd_timeout_rate: draw(0.02) as f32,
            ..FaultPlan::draw(seed)
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Default)]
pub struct ClusterRun {
    /// The job's final status (RUNNING if it did not end within the liveness bound).
    pub status: Option<JobStatus>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The committed output against the oracle.
    pub violations: Violations,
    /// Workers killed.
    pub kills: u32,
    /// Links cut.
    pub partitions: u32,
    /// Latency changes.
    pub latency_changes: u32,
    /// Store requests that failed or were slow by injection.
    pub store_faults: u64,
    /// Stored objects whose bytes were flipped.
    pub rotted: u32,
    /// Execution attempts after the first.
    pub failovers: u32,
    /// What the impostor tried and got, if there was one.
    pub impostor: Option<crate::impostor::ImpostorReport>,
    /// With HA: coordinators killed, paused, and cut from etcd.
    pub coordinator_faults: (u32, u32, u32),
    /// With HA: times etcd was unreachable for everyone.
    pub etcd_outages: u32,
    /// Simulated time the run took, ms (a fingerprint for comparing two runs of a seed).
    pub sim_ms: u64,
    /// With HA: the epochs that wrote to etcd, in order.
    pub epochs: Vec<u64>,
    /// With HA: writes of an older epoch sent after a newer epoch's write succeeded (must be
    /// none), with the newer epoch.
    pub stale_writes: Vec<(crate::ha::WriteRecord, u64)>,
}

impl ClusterRun {
    /// The suites' oracle: the job finished with the exact output; or bit rot made its latest
    /// checkpoint unusable and it stopped saying so, having written nothing twice or wrong
    /// (what it did not get to is missing).
    pub fn assert_exact_or_stopped_on_rot(&self, seed: u64) {
        let v = &self.violations;
        if self.rotted > 0 && self.status == Some(JobStatus::Failed) {
            let error = self.error.clone().unwrap_or_default();
            assert!(
                error.contains("cannot be restored"),
                "seed {seed}: the job failed, but not on the rotted checkpoint: {error}"
            );
            assert!(
                v.duplicated == 0 && v.spurious == 0,
                "seed {seed}: {v:?} after {} failovers",
                self.failovers
            );
            return;
        }
        assert_eq!(
            self.status,
            Some(JobStatus::Finished),
            "seed {seed}: the job did not finish: {:?}",
            self.error
        );
        assert!(v.is_clean(), "seed {seed}: {v:?} after {} failovers", self.failovers);
    }
}

impl std::fmt::Display for ClusterRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "injected kills {} partitions {} latency changes {} store faults {} rotted {}; failovers {}; status {}; violations {:?}{}",
            self.kills,
            self.partitions,
            self.latency_changes,
            self.store_faults,
            self.rotted,
            self.failovers,
            self.status.map_or("none".into(), |s| s.to_string()),
            self.violations,
            self.impostor.map_or(String::new(), |i| format!(
                "; impostor refused {} accepted {} deployments {} spoofed frames {}",
                i.refused, i.accepted_as_victim, i.deployments, i.spoofed_frames
            ))
        )?;
        if !self.epochs.is_empty() {
            let (k, p, c) = self.coordinator_faults;
            write!(
                f,
                "; ha coordinator kills {k} pauses {p} etcd cuts {c} etcd outages {} epochs {} stale writes {}; sim time {} ms",
                self.etcd_outages,
                self.epochs.len(),
                self.stale_writes.len(),
                self.sim_ms
            )?;
        }
        Ok(())
    }
}

struct SimJobs {
    workload: KeyedCount,
    sink: TransactionalStore<(u64, u64)>,
    protocol: SinkProtocol,
}

impl JobRegistry for SimJobs {
    fn build(&self, name: &str, options: &BTreeMap<String, String>) -> Result<JobGraph, JobBuildError> {
        if name != "keyed-count" {
            return Err(JobBuildError::UnknownJob {
                name: name.to_string(),
                known: vec!["keyed-count".into()],
            });
        }
        let parallelism = options.get("parallelism").map_or(Ok(1), |p| {
            p.parse::<u32>()
                .map_err(|e| InvalidSetting(format!("--parallelism {p}: {e}")))
        })?;
        let env = StreamEnv::new(name);
        env.set_parallelism(parallelism);
        match self.protocol {
            SinkProtocol::Correct => self
                .workload
                .build(&env, TransactionalStoreSink::new(self.sink.clone())),
            SinkProtocol::EagerCommit => self.workload.build(&env, EagerCommitSink::new(self.sink.clone())),
        }
        Ok(env.build()?)
    }
}

/// A logger for simulated nodes: silent, or to stderr with `SIM_LOG=1`.
pub fn sim_logger() -> slog::Logger {
    if std::env::var_os("SIM_LOG").is_some() {
        use slog::Drain;
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        return slog::Logger::root(drain, slog::o!());
    }
    slog::Logger::root(slog::Discard, slog::o!())
}

fn chance(p: f64) -> bool {
    (madsim::rand::random::<u32>() % 10_000) as f64 / 10_000.0 < p
}

/// The simulated outside world a cluster runs against and the coordinator's address.
struct World {
    /// Every coordinator's control address, comma-separated (as workers and clients take it).
    coordinator_addr: String,
    /// The etcd twin's address, with HA.
    etcd: Option<SocketAddr>,
    /// Every coordinator's successful etcd writes.
    writes: crate::ha::WriteLog,
    store: Arc<MemoryStore>,
    sink: TransactionalStore<(u64, u64)>,
    registry: Arc<dyn JobRegistry>,
    opener: StoreOpener,
    /// Each coordinator's latest incarnation (its node re-runs its `init` on a restart).
    coordinators: Vec<Arc<Mutex<Option<Coordinator>>>>,
    /// Standbys and etcd, if any.
    ha: Option<HaSpec>,
    /// Certificates, if the spec asks for TLS.
    tls: Option<SimTls>,
    /// The broken variant (see [`ClusterSpec::trust_claimed_identities`]).
    trust_claimed_identities: bool,
}

/// Every node's TLS, of one CA made for the run.
#[derive(Clone)]
struct SimTls {
    coordinator: ClusterTls,
    workers: Vec<ClusterTls>,
    admin: ClusterTls,
    impostor: ClusterTls,
}

impl SimTls {
    /// Certificates valid from 1975 to 4096: the simulated wall clock starts in another year.
    fn new(workers: usize) -> Self {
        use sluice_core::cluster::tls::{load_certs_pem, load_key_pem};
        let ca = issue_ca("sim CA", Validity::Forever).expect("a CA");
        let roots = load_certs_pem(&ca.ca.cert_pem).expect("the CA's PEM");
        let node = |who: Identity| {
            let c = ca.issue_node(&who, Validity::Forever).expect("a node certificate");
            let chain = load_certs_pem(&c.cert_pem).expect("its PEM");
            ClusterTls::new(&roots, chain, load_key_pem(&c.key_pem).expect("its key")).expect("valid TLS settings")
        };
        SimTls {
            coordinator: node(Identity::Coordinator),
            workers: (0..workers)
                .map(|i| node(Identity::Worker(format!("worker-{i}"))))
                .collect(),
            admin: node(Identity::Admin("sim".into())),
            impostor: node(Identity::Worker("impostor".into())),
        }
    }
}

fn ip(subnet: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, subnet, 0, host))
}

impl World {
    fn new(spec: &ClusterSpec) -> Self {
        let store = Arc::new(MemoryStore::with_faults(spec.faults.store.clone()));
        let sink = TransactionalStore::new();
        sink.fail_next_commits(spec.faults.failing_commits);
        let registry: Arc<dyn JobRegistry> = Arc::new(SimJobs {
            workload: spec.workload.clone(),
            sink: sink.clone(),
            protocol: spec.sink,
        });
        let shared_store: Arc<dyn BlobStore> = store.clone();
        let n = spec.ha.as_ref().map_or(1, |h| h.coordinators);
        World {
            coordinator_addr: (0..n)
                .map(|i| format!("{}:6123", ip(spec.subnet, 1 + i as u8)))
                .collect::<Vec<_>>()
                .join(","),
            etcd: spec
                .ha
                .as_ref()
                .map(|_| SocketAddr::new(ip(spec.subnet, 50), crate::ha::ETCD_PORT)),
            writes: Arc::default(),
            store,
            sink,
            registry,
            opener: Arc::new(move |_: &str| Ok(shared_store.clone())),
            coordinators: (0..n).map(|_| Arc::default()).collect(),
            ha: spec.ha.clone(),
            tls: spec.tls.then(|| SimTls::new(spec.workers)),
            trust_claimed_identities: spec.trust_claimed_identities,
        }
    }

    /// The etcd twin's node (never killed: the twin keeps its data in memory only).
    fn start_etcd(&self, handle: &Handle, subnet: u8, timeout_rate: f32) -> Option<NodeId> {
        let addr = self.etcd?;
        let node = handle
            .create_node()
            .name(format!("etcd-{subnet}"))
            .ip(addr.ip())
            .init(move || async move {
                let _ = etcd_client::SimServer::builder()
                    .timeout_rate(timeout_rate)
                    .serve(addr)
                    .await;
            })
            .build();
        Some(node.id())
    }

    /// Coordinator `i`'s node; it serves from its `init`, so a restart brings it back. Under
    /// HA it campaigns, and campaigns again on a fresh coordinator after being deposed.
    fn start_coordinator(&self, handle: &Handle, subnet: u8, i: usize) -> NodeId {
        let (registry, opener, slot) = (self.registry.clone(), self.opener.clone(), self.coordinators[i].clone());
        let addr = format!("{}:6123", ip(subnet, 1 + i as u8));
        let tls = self.tls.as_ref().map(|t| t.coordinator.clone());
        let trust = self.trust_claimed_identities;
        let (etcd, ha, writes) = (self.etcd, self.ha.clone(), self.writes.clone());
        handle
            .create_node()
            .name(format!("coordinator-{subnet}-{i}"))
            .ip(ip(subnet, 1 + i as u8))
            .init(move || {
                let (registry, opener, slot, addr) = (registry.clone(), opener.clone(), slot.clone(), addr.clone());
                let (tls, ha, writes) = (tls.clone(), ha.clone(), writes.clone());
                async move {
                    let mut cfg = CoordinatorConfig::new(sim_logger());
                    cfg.tls = tls;
                    cfg.trust_claimed_identities = trust;
                    cfg.heartbeat_interval = Duration::from_millis(200);
                    cfg.heartbeat_timeout = Duration::from_secs(2);
                    cfg.slot_wait = Duration::from_secs(120);
                    cfg.checkpoint_dir = Some("sim-store".into());
                    loop {
                        if let (Some(h), Some(etcd)) = (&ha, etcd) {
                            let backend =
                                crate::ha::AuditedHa::connect(etcd, h.lease_ttl, h.unfenced, writes.clone()).await;
                            cfg.ha = Some(Arc::new(backend));
                        }
                        let c = Coordinator::new(cfg.clone(), registry.clone(), opener.clone())
                            .expect("valid coordinator settings");
                        *slot.locked() = Some(c.clone());
                        // A deposed term's listener may linger for a moment.
                        let listener = loop {
                            match tokio::net::TcpListener::bind(&addr).await {
                                Ok(l) => break l,
                                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                            }
                        };
                        match c.serve(listener).await {
                            Ok(()) => return,
                            // Deposed, or etcd could not be reached: a fresh term.
                            Err(e) => {
                                assert!(ha.is_some(), "the standalone coordinator stopped serving: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            })
            .build()
            .id()
    }

    /// Worker `i`'s node; it registers from its `init`, so a restart brings it back.
    fn start_worker(&self, handle: &Handle, spec: &ClusterSpec, i: usize) -> NodeId {
        let (registry, opener, addr, slots) = (
            self.registry.clone(),
            self.opener.clone(),
            self.coordinator_addr.clone(),
            spec.slots,
        );
        let data = format!("{}:7000", ip(spec.subnet, 10 + i as u8));
        let tls = self.tls.as_ref().map(|t| t.workers[i].clone());
        handle
            .create_node()
            .name(format!("worker-{}-{i}", spec.subnet))
            .ip(ip(spec.subnet, 10 + i as u8))
            .init(move || {
                let (registry, opener, addr, data) = (registry.clone(), opener.clone(), addr.clone(), data.clone());
                let tls = tls.clone();
                async move {
                    let exec = ExecutionConfig {
                        batch_size: 32,
                        channel_capacity: 2,
                        log: sim_logger(),
                        ..ExecutionConfig::default()
                    };
                    let mut cfg = WorkerConfig::new(addr, slots, exec);
                    cfg.id = Some(format!("worker-{i}"));
                    cfg.tls = tls;
                    cfg.max_backoff = Duration::from_millis(500);
                    cfg.connect_timeout = Duration::from_secs(5);
                    // A restarted node may find its old socket not yet released.
                    let w = loop {
                        match Worker::bind(cfg.clone(), &data, registry.clone(), opener.clone()).await {
                            Ok(w) => break w,
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    };
                    // Runs until the node is killed.
                    let _ = w.run().await;
                }
            })
            .build()
            .id()
    }
}

/// Submits the keyed count from the client node (retrying until the coordinator listens);
/// returns the job id.
async fn submit(
    client: &madsim::runtime::NodeHandle,
    addr: &str,
    tls: Option<ClusterTls>,
    spec: &ClusterSpec,
) -> String {
    let options: Vec<(String, String)> = vec![
        ("parallelism".into(), spec.parallelism.to_string()),
        (
            "checkpoint-interval".into(),
            format!("{}ms", spec.checkpoint_interval.as_millis()),
        ),
        ("checkpoint-timeout".into(), "2s".into()),
        ("on-unusable-checkpoint".into(), spec.on_unusable.into()),
        ("tolerable-failed-checkpoints".into(), "3".into()),
        (
            "restart-strategy".into(),
            "fixed-delay:attempts=10000,delay=50ms".into(),
        ),
    ];
    let addr = addr.to_string();
    client
        .spawn(async move {
            loop {
                let to = Target {
                    addr: &addr,
                    tls: tls.as_ref(),
                };
                // One submission id for every try: a try whose answer was lost (its leader
                // deposed) must not leave a second job behind the retry.
                match submit_job(to, "keyed-count", &options, "sim-keyed-count").await {
                    Ok(id) => return id,
                    // The coordinator may not listen yet.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
        .expect("the client submits the job")
}

/// Flips one random bit of one random object of `store`; whether there was one.
fn rot(store: &MemoryStore) -> bool {
    let paths = store.paths();
    if paths.is_empty() {
        return false;
    }
    let path = &paths[madsim::rand::random::<usize>() % paths.len()];
    let (at, bit) = (madsim::rand::random::<usize>(), madsim::rand::random::<u32>() % 8);
    store
        .corrupt(path, |bytes| {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] ^= 1 << bit;
            }
        })
        .is_ok()
}

/// The fault phase: `plan.ticks` ticks of worker kills, cut links, latency changes and bit
/// rot in `store`; returns once every downed node is back and every link healed.
async fn inject_faults(plan: &FaultPlan, nodes: &Nodes, world: &World, run: &mut ClusterRun) {
    let (workers, store) = (&nodes.workers[..], &*world.store);
    let handle = Handle::current();
    let net = NetSim::current();
    let mut healing = Vec::new();
    let down: Arc<Mutex<BTreeSet<NodeId>>> = Arc::default();
    for tick in 0..plan.ticks {
        coordinator_faults(plan, tick, nodes, world, &down, &mut healing, run);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if chance(plan.kill_per_tick) {
            let w = workers[madsim::rand::random::<usize>() % workers.len()];
            if down.locked().insert(w) {
                handle.kill(w);
                run.kills += 1;
                let downtime = Duration::from_millis(200 + madsim::rand::random::<u64>() % 3000);
                let (h, down) = (handle.clone(), down.clone());
                healing.push(tokio::spawn(async move {
                    tokio::time::sleep(downtime).await;
                    h.restart(w);
                    down.locked().remove(&w);
                }));
            }
        }
        if chance(plan.partition_per_tick) {
            let mut all = workers.to_vec();
            all.extend(&nodes.coordinators);
            let a = all[madsim::rand::random::<usize>() % all.len()];
            let b = all[madsim::rand::random::<usize>() % all.len()];
            if a != b {
                net.clog_link(a, b);
                net.clog_link(b, a);
                run.partitions += 1;
                let cut = Duration::from_millis(100 + madsim::rand::random::<u64>() % 4000);
                let net = NetSim::current();
                healing.push(tokio::spawn(async move {
                    tokio::time::sleep(cut).await;
                    net.unclog_link(a, b);
                    net.unclog_link(b, a);
                }));
            }
        }
        if chance(plan.rot_per_tick) && rot(store) {
            run.rotted += 1;
        }
        if chance(plan.latency_per_tick) {
            let max = 1 + madsim::rand::random::<u64>() % plan.max_latency_ms.max(1);
            net.update_config(|c| c.send_latency = Duration::from_millis(1)..Duration::from_millis(1 + max));
            run.latency_changes += 1;
        }
    }
    for h in healing {
        h.await.expect("healing task");
    }
    net.update_config(|c| c.send_latency = Duration::from_millis(1)..Duration::from_millis(10));
}

/// The simulated nodes of a cluster.
struct Nodes {
    workers: Vec<NodeId>,
    coordinators: Vec<NodeId>,
    etcd: Option<NodeId>,
}

/// Kills (restarted later) or pauses (resumed later) node `n` for `for_ms`, unless it is down.
fn take_down(
    n: NodeId,
    pause: bool,
    for_ms: u64,
    down: &Arc<Mutex<BTreeSet<NodeId>>>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !down.locked().insert(n) {
        return None;
    }
    let handle = Handle::current();
    if pause {
        handle.pause(n);
    } else {
        handle.kill(n);
    }
    let down = down.clone();
    Some(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(for_ms)).await;
        if pause {
            handle.resume(n);
        } else {
            handle.restart(n);
        }
        down.locked().remove(&n);
    }))
}

/// Cuts coordinator `c` from etcd (both ways) for `for_ms`.
fn cut_from_etcd(c: NodeId, etcd: NodeId, for_ms: u64) -> tokio::task::JoinHandle<()> {
    let net = NetSim::current();
    net.clog_link(c, etcd);
    net.clog_link(etcd, c);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(for_ms)).await;
        net.unclog_link(c, etcd);
        net.unclog_link(etcd, c);
    })
}

/// This tick's faults of the coordinators and etcd (HA only).
fn coordinator_faults(
    plan: &FaultPlan,
    tick: u32,
    nodes: &Nodes,
    world: &World,
    down: &Arc<Mutex<BTreeSet<NodeId>>>,
    healing: &mut Vec<tokio::task::JoinHandle<()>>,
    run: &mut ClusterRun,
) {
    let (Some(etcd), Some(ha)) = (nodes.etcd, world.ha.as_ref()) else {
        return;
    };
    let cs = &nodes.coordinators;
    let pick = || cs[madsim::rand::random::<usize>() % cs.len()];
    let span = || 500 + madsim::rand::random::<u64>() % 5000;
    if chance(plan.coordinator_kill_per_tick) {
        if let Some(h) = take_down(pick(), false, 200 + madsim::rand::random::<u64>() % 3000, down) {
            healing.push(h);
            run.coordinator_faults.0 += 1;
        }
    }
    if chance(plan.pause_per_tick) {
        if let Some(h) = take_down(pick(), true, span(), down) {
            healing.push(h);
            run.coordinator_faults.1 += 1;
        }
    }
    if chance(plan.etcd_cut_per_tick) {
        healing.push(cut_from_etcd(pick(), etcd, span()));
        run.coordinator_faults.2 += 1;
    }
    if chance(plan.etcd_outage_per_tick) {
        let net = NetSim::current();
        net.clog_node(etcd);
        let for_ms = span();
        healing.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(for_ms)).await;
            NetSim::current().unclog_node(etcd);
        }));
        run.etcd_outages += 1;
    }
    if plan.split_brain_at == Some(tick) {
        // The leader keeps its workers but loses etcd for longer than its lease.
        let leader = world
            .coordinators
            .iter()
            .position(|c| c.locked().as_ref().is_some_and(|c| c.leads().is_some()));
        if let Some(i) = leader {
            healing.push(cut_from_etcd(cs[i], etcd, 3 * ha.lease_ttl.as_millis() as u64));
            run.coordinator_faults.2 += 1;
        }
    }
}

/// The liveness phase: polls the job from the client node until it ends, at most `bound` of
/// simulated time; returns its final status and error.
async fn await_end(
    client: &madsim::runtime::NodeHandle,
    (addr, tls): (&str, Option<ClusterTls>),
    job: &str,
    bound: Duration,
) -> (JobStatus, Option<String>) {
    let (job, addr) = (job.to_string(), addr.to_string());
    client
        .spawn(async move {
            let deadline = tokio::time::Instant::now() + bound;
            loop {
                let to = Target {
                    addr: &addr,
                    tls: tls.as_ref(),
                };
                if let Ok(jobs) = list_jobs(to).await {
                    if let Some(j) = jobs.iter().find(|j| j.id == job).filter(|j| j.status.is_terminal()) {
                        // One submission, one job: a retried submission that created a
                        // second (its first answer lost to a failover) writes twice.
                        if jobs.len() != 1 {
                            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
                            return (
                                JobStatus::Failed,
                                Some(format!("one submission left {} jobs: {ids:?}", jobs.len())),
                            );
                        }
                        return (j.status, j.error.clone());
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    return (
                        JobStatus::Running,
                        Some(format!(
                            "did not finish within {} s of simulated time after faults stopped",
                            bound.as_secs()
                        )),
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the client polls")
}

/// Starts the impostor's node if the spec has one; it acts while the faults do.
fn start_impostor(
    handle: &Handle,
    world: &World,
    spec: &ClusterSpec,
    job: &str,
) -> Option<(NodeId, Arc<Mutex<crate::impostor::ImpostorReport>>)> {
    let tls = world.tls.as_ref().filter(|_| spec.impostor)?.impostor.clone();
    let node = handle
        .create_node()
        .name(format!("impostor-{}", spec.subnet))
        .ip(ip(spec.subnet, 98))
        .build();
    let report = Arc::new(Mutex::new(crate::impostor::ImpostorReport::default()));
    let plan = crate::impostor::Plan {
        coordinator: world.coordinator_addr.split(',').next().unwrap_or_default().to_string(),
        tls,
        own_id: "impostor".into(),
        victim: "worker-0".into(),
        job: job.to_string(),
        until: tokio::time::Instant::now() + Duration::from_millis(200) * spec.faults.ticks,
    };
    node.spawn(crate::impostor::run(plan, report.clone()));
    Some((node.id(), report))
}

/// Builds the cluster of `spec`, runs the keyed count on it under its fault plan, and checks
/// the result. Must run inside a madsim runtime.
pub async fn run_keyed_count(spec: ClusterSpec) -> ClusterRun {
    let started = tokio::time::Instant::now();
    let handle = Handle::current();
    let world = World::new(&spec);
    let etcd = world.start_etcd(&handle, spec.subnet, spec.faults.etcd_timeout_rate);
    let coordinators: Vec<NodeId> = (0..world.coordinators.len())
        .map(|i| world.start_coordinator(&handle, spec.subnet, i))
        .collect();
    let workers: Vec<NodeId> = (0..spec.workers)
        .map(|i| world.start_worker(&handle, &spec, i))
        .collect();
    let client = handle
        .create_node()
        .name(format!("client-{}", spec.subnet))
        .ip(ip(spec.subnet, 99))
        .build();
    let admin = world.tls.as_ref().map(|t| t.admin.clone());
    let job = submit(&client, &world.coordinator_addr, admin.clone(), &spec).await;
    let mut run = ClusterRun::default();
    let impostor = start_impostor(&handle, &world, &spec, &job);
    let nodes = Nodes {
        workers,
        coordinators,
        etcd,
    };
    inject_faults(&spec.faults, &nodes, &world, &mut run).await;
    // Liveness: the faults have stopped (downed nodes are back, links healed).
    // The broken HA variant need not be live (its audit is what is checked): a shorter bound
    // keeps the checker's seeds within the simulation's time limit.
    let bound = if spec.ha.as_ref().is_some_and(|h| h.unfenced) {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(300)
    };
    let (status, error) = await_end(&client, (&world.coordinator_addr, admin), &job, bound).await;
    run.status = Some(status);
    run.error = error;
    run.failovers = world
        .coordinators
        .iter()
        .filter_map(|c| c.locked().as_ref().and_then(|c| c.job(&job)))
        .map(|j| j.attempt)
        .max()
        .unwrap_or(0);
    run.store_faults = world.store.injected_faults();
    run.violations = spec.workload.check(&world.sink.committed());
    run.sim_ms = started.elapsed().as_millis() as u64;
    if world.ha.is_some() {
        let writes = world.writes.locked().clone();
        run.epochs = writes
            .iter()
            .map(|w| w.epoch)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        run.stale_writes = crate::ha::stale_writes(&writes);
    }
    if let Some((node, report)) = impostor {
        handle.kill(node);
        run.impostor = Some(*report.locked());
    }
    // This cluster is done: its nodes stop, so the next one in the same simulation runs alone.
    for n in nodes.workers.iter().chain(&nodes.coordinators).chain(&nodes.etcd) {
        handle.kill(*n);
    }
    run
}
