//! A coordinator's settings.

use std::sync::Arc;
use std::time::Duration;

use sluice_transport::tls::ClusterTls;

use crate::clock::Clock;
use crate::ha::HaBackend;
use crate::paths::PathPolicy;

/// Settings of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How often workers send heartbeats (told to them at registration).
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// How long a job waits for enough free slots before it fails.
    pub slot_wait: Duration,
    /// Where jobs' checkpoints go (a location the workers can open too); `None` turns
    /// checkpointing off for every job.
    pub checkpoint_dir: Option<String>,
    /// Processing-time clock (job ids, checkpoint timestamps).
    pub clock: Clock,
    /// Connections the control port serves at once (workers and clients); more are closed
    /// at once.
    pub max_connections: usize,
    /// Ended jobs kept in the job table (their status, error and final figures); the oldest
    /// are forgotten beyond it.
    pub max_retained_jobs: usize,
    /// Jobs running or waiting for slots at once; more submissions are refused.
    pub max_active_jobs: usize,
    /// How long an ended attempt waits for its workers to confirm that its tasks and their
    /// uploads have stopped, before its slots are freed (and, if the job ended, its
    /// checkpoints deleted) anyway, with a warning.
    pub cancel_timeout: Duration,
    /// Mutual TLS on the control port (workers, clients) with this node's certificate; `None`
    /// accepts plain connections from anyone who reaches the port.
    pub tls: Option<ClusterTls>,
    /// Where job files, savepoint targets and savepoints to start from may be.
    pub paths: PathPolicy,
    /// Where savepoints go when a request names no directory (Flink's
    /// `state.savepoints.dir`).
    pub savepoint_dir: Option<String>,
    /// The simulation's deliberately broken variant: registrations and requests are taken
    /// at their word instead of being checked against the peer's certificate (the checker
    /// must then see an impostor's damage). Exists only in simulation builds.
    #[cfg(madsim)]
    #[doc(hidden)]
    pub trust_claimed_identities: bool,
    /// Leader election and the job store: `None` is standalone (this coordinator leads at
    /// once, its jobs live in memory); etcd for high availability.
    pub ha: Option<Arc<dyn HaBackend>>,
    /// The control address published when this coordinator leads (workers and clients of
    /// standbys are told it); `None` publishes the bound address.
    pub advertise_address: Option<String>,
    /// Where the coordinator logs.
    pub log: slog::Logger,
}

impl CoordinatorConfig {
    /// Defaults: heartbeats every 500 ms, lost after 10 s of silence, jobs wait 60 s for slots.
    pub fn new(log: slog::Logger) -> Self {
        CoordinatorConfig {
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(10),
            slot_wait: Duration::from_secs(60),
            checkpoint_dir: None,
            clock: Clock::system(),
            max_connections: 1024,
            max_retained_jobs: 1000,
            cancel_timeout: Duration::from_secs(30),
            max_active_jobs: 1024,
            tls: None,
            paths: PathPolicy::default(),
            savepoint_dir: None,
            #[cfg(madsim)]
            trust_claimed_identities: false,
            ha: None,
            advertise_address: None,
            log,
        }
    }
}
