//! The server commands: `coordinator` and `worker`.

use std::sync::Arc;

use anyhow::Context as _;
use sluice_core::cluster::{Coordinator, CoordinatorConfig, Worker, WorkerConfig};
use sluice_core::metrics::MetricRegistry;

use super::cli::{duration_arg, runtime, stop_requested};
use super::client_cmds::FindLeader;
use super::AppRegistry;
use crate::cluster::store_opener;
use crate::config::Config;
use crate::rest::RestOptions;

#[derive(clap::Parser, Debug)]
pub(super) struct CoordinatorArgs {
    /// Address to accept workers and clients on (port 0 picks one; the address is printed).
    /// Default: [coordinator] bind, else 127.0.0.1:6123.
    #[arg(long)]
    bind: Option<String>,
    /// Where jobs' checkpoints go (a directory every worker can reach, or `s3://bucket/prefix`).
    #[arg(long)]
    checkpoint_dir: Option<String>,
    /// Serve the REST API here (port 0 picks one; the address is printed).
    #[arg(long)]
    rest_bind: Option<String>,
    /// How often workers send heartbeats (default 500ms).
    #[arg(long)]
    heartbeat_interval: Option<String>,
    /// A worker silent for this long is declared lost (default 10s).
    #[arg(long)]
    heartbeat_timeout: Option<String>,
    /// How long a job waits for enough free slots before it fails (default 60s).
    #[arg(long)]
    slot_wait: Option<String>,
    #[command(flatten)]
    ha: HaArgs,
    /// The control address workers and clients are told when this coordinator leads, if not
    /// the bound one (default: [coordinator] advertise-address).
    #[arg(long)]
    advertise_address: Option<String>,
}

/// High availability: standby coordinators elected over etcd (docs/high-availability.md).
#[derive(clap::Args, Debug)]
pub(super) struct HaArgs {
    /// `none` (one coordinator, jobs in memory) or `etcd` (default: [ha] mode).
    #[arg(long, value_name = "MODE")]
    ha: Option<String>,
    /// etcd members, comma-separated `http://host:port` (default: [ha] etcd-endpoints).
    #[arg(long, value_name = "URLS")]
    etcd_endpoints: Option<String>,
    /// The cluster's name in etcd: keys live under /sluice/<cluster-id>/ (default: [ha] cluster-id).
    #[arg(long)]
    cluster_id: Option<String>,
    /// How long leadership outlives a leader that stopped renewing it (default 10s).
    #[arg(long)]
    lease_ttl: Option<String>,
}

#[derive(clap::Parser, Debug)]
pub(super) struct WorkerArgs {
    /// The coordinator's address; with standbys, every coordinator's, comma-separated (default:
    /// [worker] coordinator).
    #[arg(long)]
    coordinator: Option<String>,
    /// Task slots offered (default 1).
    #[arg(long)]
    slots: Option<u32>,
    /// Address to accept data connections from other workers on (port 0 picks one; default
    /// 127.0.0.1:0).
    #[arg(long)]
    bind: Option<String>,
    /// The worker's id (default: its certificate's, else `worker-<data address>`).
    #[arg(long)]
    id: Option<String>,
    /// The data address to give peers, when the bound one is not it (bound to 0.0.0.0, or
    /// behind address translation). Default: [worker] advertise-address, else the bound one.
    #[arg(long)]
    advertise_address: Option<String>,
    #[command(flatten)]
    find: FindLeader,
    #[command(flatten)]
    state: super::run_cmd::StateArgs,
}

/// `coordinator`: serves until asked to stop; under HA campaigns again after losing the lead.
pub(super) fn coordinator(
    registry: &AppRegistry,
    args: CoordinatorArgs,
    file: Config,
    log: slog::Logger,
) -> anyhow::Result<()> {
    let (config, ha) = coordinator_config(&args, &file, &log)?;
    let c = &file.coordinator;
    let bind = args.bind.clone().unwrap_or_else(|| c.bind.clone());
    let wildcard = bind.starts_with("0.0.0.0:") || bind.starts_with("[::]:");
    if ha.mode() == "etcd" && wildcard && config.advertise_address.is_none() {
        return Err(crate::HarnessError::BadOption(format!(
            "--bind {bind} is a wildcard, which workers and clients cannot dial when this coordinator leads: set --advertise-address to the address they reach it at"
        ))
        .into());
    }
    let rest_bind = args.rest_bind.clone().or_else(|| c.rest_bind.clone());
    crate::security::warn_if_exposed(&log, "control", &bind, config.tls.is_some());
    let rest_security = crate::rest::RestSecurity::from_config(&file, log.clone())?;
    if let Some(r) = &rest_bind {
        rest_security.check_bind(r)?;
        crate::security::warn_if_exposed(&log, "REST", r, rest_security.authenticated());
    }
    let registry = registry.clone();
    runtime()?.block_on(async move {
        let (mut ports, addr) = bind_ports(&bind, rest_bind.as_deref(), &log, ha.mode()).await?;
        // Each term (under HA, each campaign) runs on a fresh coordinator: a deposed one has
        // stopped everything it ran and campaigns again with nothing left of its old state.
        loop {
            let mut config = config.clone();
            config.ha = ha.backend(&log).await?;
            let coordinator = Coordinator::new(config, Arc::new(registry.clone()), store_opener())?;
            let ended = serve_term(&coordinator, ports, &file, &rest_security, &log).await?;
            match ended {
                None => return Ok(()),
                Some(p) => {
                    slog::warn!(log, "campaigning again after losing the leadership");
                    ports = p.rebind(addr).await?;
                }
            }
        }
    })
}

/// The coordinator's settings from its flags and the configuration file, checked.
fn coordinator_config(
    args: &CoordinatorArgs,
    file: &Config,
    log: &slog::Logger,
) -> anyhow::Result<(CoordinatorConfig, crate::ha::HaChoice)> {
    let c = &file.coordinator;
    let mut config = CoordinatorConfig::new(log.clone());
    config.max_connections = c.max_connections;
    config.max_retained_jobs = c.max_retained_jobs;
    config.max_active_jobs = c.max_active_jobs;
    let flag_or_file =
        |flag: &Option<String>, file: &str, name: &str| duration_arg(name, flag.as_deref().unwrap_or(file));
    config.heartbeat_interval = flag_or_file(&args.heartbeat_interval, &c.heartbeat_interval, "heartbeat-interval")?;
    config.heartbeat_timeout = flag_or_file(&args.heartbeat_timeout, &c.heartbeat_timeout, "heartbeat-timeout")?;
    config.slot_wait = flag_or_file(&args.slot_wait, &c.slot_wait, "slot-wait")?;
    config.cancel_timeout = duration_arg("cancel-timeout", &c.cancel_timeout)?;
    config.checkpoint_dir = args.checkpoint_dir.clone().or_else(|| c.checkpoint_dir.clone());
    config.tls = crate::security::cluster_tls(file)?;
    config.paths = crate::security::path_policy(file)?;
    config.savepoint_dir = file.security.savepoint_dir.clone();
    config.advertise_address = args.advertise_address.clone().or_else(|| c.advertise_address.clone());
    let ha = crate::ha::settings(&args.ha.merged(&file.ha))?;
    if let Some(ttl) = ha.lease_ttl().filter(|ttl| config.heartbeat_timeout / 2 >= *ttl) {
        // Workers leave a silent coordinator after half the heartbeat timeout: that must come
        // before its lease can expire and a successor lead.
        return Err(crate::HarnessError::BadOption(format!(
            "--heartbeat-timeout {:?} must be less than twice --lease-ttl {ttl:?}: workers must leave a silent leader before a successor can be elected",
            config.heartbeat_timeout
        ))
        .into());
    }
    if ha.mode() == "etcd" && config.checkpoint_dir.is_none() {
        slog::warn!(log, "--ha etcd without --checkpoint-dir: a job taken over by a new leader starts again from the beginning (no exactly-once across failovers)");
    }
    Ok((config, ha))
}

/// Binds the control port and the REST port (if asked for) and says where they listen.
async fn bind_ports(
    bind: &str,
    rest_bind: Option<&str>,
    log: &slog::Logger,
    ha_mode: &str,
) -> anyhow::Result<(Ports, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the coordinator to {bind}"))?;
    let addr = listener.local_addr()?;
    crate::logging::announce(format_args!("coordinator listening on {addr}"));
    slog::info!(log, "coordinator listening"; "address" => addr.to_string(), "ha" => ha_mode);
    let rest = match rest_bind {
        None => None,
        Some(rest) => {
            let l = tokio::net::TcpListener::bind(rest)
                .await
                .with_context(|| format!("binding the REST API to {rest}"))?;
            let rest_addr = l.local_addr()?;
            crate::logging::announce(format_args!("rest api listening on {rest_addr}"));
            slog::info!(log, "REST API listening"; "address" => rest_addr.to_string());
            Some(Arc::new(l))
        }
    };
    Ok((
        Ports {
            control: listener,
            rest,
        },
        addr,
    ))
}

impl HaArgs {
    /// `[ha]` with the command line's values in place of the file's.
    fn merged(&self, file: &crate::config::HaSection) -> crate::config::HaSection {
        let mut s = file.clone();
        if let Some(m) = &self.ha {
            s.mode = m.clone();
        }
        if let Some(e) = &self.etcd_endpoints {
            s.etcd_endpoints = e
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(id) = &self.cluster_id {
            s.cluster_id = Some(id.clone());
        }
        if let Some(t) = &self.lease_ttl {
            s.lease_ttl = t.clone();
        }
        s
    }
}

/// The coordinator's listening ports, kept across terms.
struct Ports {
    control: tokio::net::TcpListener,
    rest: Option<Arc<tokio::net::TcpListener>>,
}

/// What a deposed term hands to the next one: the REST port (still bound); the control port
/// is bound again at its address (the coordinator's server owned its listener).
struct NextTerm {
    rest: Option<Arc<tokio::net::TcpListener>>,
}

impl NextTerm {
    async fn rebind(self, control: std::net::SocketAddr) -> anyhow::Result<Ports> {
        // The deposed term's listener closes as its tasks wind down: wait for the port.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(control).await {
                Ok(l) => break l,
                Err(e) if tries < 100 && e.kind() == std::io::ErrorKind::AddrInUse => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("binding the coordinator to {control} again")),
            }
        };
        Ok(Ports {
            control: listener,
            rest: self.rest,
        })
    }
}

/// Serves one coordinator until the process is asked to stop (`None`) or the coordinator is
/// deposed (the ports to serve the next term on).
async fn serve_term(
    coordinator: &Coordinator,
    ports: Ports,
    file: &Config,
    rest_security: &crate::rest::RestSecurity,
    log: &slog::Logger,
) -> anyhow::Result<Option<NextTerm>> {
    let source = coordinator.clone();
    let _reporters = crate::reporters::start(file, Arc::new(move || source.metrics()), log).await?;
    let rest_task = match &ports.rest {
        None => None,
        Some(l) => {
            let app = crate::rest::router(
                Arc::new(coordinator.clone()),
                RestOptions {
                    prometheus: file.reporter("prometheus"),
                    security: rest_security.clone(),
                },
            );
            let serving = crate::rest::serve(
                l.clone(),
                app,
                file.rest_limits(),
                rest_security.tls.clone(),
                log.clone(),
            );
            Some(sluice_core::spawned::AbortOnDrop(tokio::spawn(serving)))
        }
    };
    let served = tokio::select! {
        r = coordinator.serve(ports.control) => r,
        _ = stop_requested() => {
            slog::info!(log, "coordinator stopping");
            return Ok(None);
        }
    };
    match served {
        Err(sluice_core::cluster::ClusterError::Deposed) => {
            // The REST API of the next term serves the next coordinator.
            drop(rest_task);
            Ok(Some(NextTerm { rest: ports.rest }))
        }
        Err(e) => Err(e.into()),
        Ok(()) => Ok(None),
    }
}

/// `worker`: registers with the leader and runs what it deploys until asked to stop.
pub(super) fn worker(registry: &AppRegistry, args: WorkerArgs, file: Config, log: slog::Logger) -> anyhow::Result<()> {
    let jobs = Arc::new(registry.clone());
    let w = &file.worker;
    let registry = MetricRegistry::new();
    let state_cache = crate::settings::worker_state(&args.state.resolve_worker(&file)?)?;
    if file.state.backend != "heap" {
        slog::warn!(log, "[state] backend is not used by a worker: each job runs on the backend it was submitted with (sluice submit --state-backend, heap by default)";
            "backend" => &file.state.backend);
    }
    let execution = sluice_core::ExecutionConfig {
        log: log.clone(),
        metrics: Some(registry.clone()),
        ..sluice_core::ExecutionConfig::default()
    };
    // One block cache serves every tiered job the worker runs: its metrics are the process's.
    state_cache.register_metrics(&registry.root());
    let find = args.find.settings(&file)?;
    let coordinator = match (args.coordinator.clone().or_else(|| w.coordinator.clone()), &find) {
        (Some(c), _) => c,
        (None, Some(_)) => String::new(),
        (None, None) => {
            return Err(crate::HarnessError::BadOption(
                "the worker needs the coordinator's address: --coordinator HOST:PORT[,HOST:PORT...] ([worker] coordinator), or --etcd-endpoints with --cluster-id to look the leader up".into(),
            )
            .into())
        }
    };
    let mut config = WorkerConfig::new(coordinator, args.slots.unwrap_or(w.slots), execution);
    config.state_cache = Some(state_cache);
    config.id = args.id.clone().or_else(|| w.id.clone());
    config.max_data_connections = w.max_data_connections;
    config.connect_timeout = duration_arg("worker.connect-timeout", &w.connect_timeout)?;
    config.frame_timeout = duration_arg("worker.frame-timeout", &w.frame_timeout)?;
    config.tls = crate::security::cluster_tls(&file)?;
    config.paths = crate::security::path_policy(&file)?;
    config.advertise_address = args.advertise_address.clone().or_else(|| w.advertise_address.clone());
    let bind = args.bind.clone().unwrap_or_else(|| w.bind.clone());
    crate::security::warn_if_exposed(&log, "data", &bind, config.tls.is_some());
    runtime()?.block_on(async move {
        if let Some((endpoints, id)) = &find {
            let lookup = crate::ha::leader_lookup(endpoints, id, &log).await?;
            config.find_leader = Some(lookup);
        }
        let worker = Worker::bind(config, &bind, jobs, store_opener()).await?;
        crate::logging::announce(format_args!(
            "worker {} data address {}",
            worker.id(),
            worker.data_address()
        ));
        // Workers also send their metrics to the coordinator; these reporters push from here.
        let _reporters = crate::reporters::start(&file, Arc::new(move || registry.snapshot()), &log).await?;
        tokio::select! {
            r = worker.run() => r?,
            _ = stop_requested() => slog::info!(log, "worker stopping"),
        }
        Ok(())
    })
}
