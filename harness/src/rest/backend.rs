//! What the REST API serves, behind one trait: a coordinator in cluster mode, or the one job
//! of `sluice run` in embedded mode. Handlers only translate HTTP to these calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};
use sluice_core::cluster::{
    CheckpointOverview, ClusterError, Coordinator, JobException, JobInfo, JobStatus, WireOption, WorkerInfo,
};
use sluice_core::metrics::MetricSample;
use sluice_core::state::blob::{BlobError, BlobStore, BoxFuture};
use sluice_core::{JobController, JobError};

/// A future the backend returns for a savepoint: its location and checkpoint id.
pub type SavepointFuture = Pin<Box<dyn Future<Output = Result<(String, u64), BackendError>> + Send>>;

/// Why the backend refused or failed a request; the REST layer picks the HTTP status by
/// variant (`rest::status_of`).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The coordinator refused or failed the request.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The embedded run has one job, and this id is not it.
    #[error("no job with id '{id}' (this embedded run's job is '{own}')")]
    NotThisJob {
        /// The id asked for.
        id: String,
        /// The run's job.
        own: String,
    },
    /// The embedded job has ended.
    #[error("job {id} has already ended: {status}")]
    Ended {
        /// The job.
        id: String,
        /// How it ended.
        status: JobStatus,
    },
    /// Not possible in this mode (an embedded run has one job: no submissions).
    #[error("{0}")]
    NotInThisMode(String),
    /// A savepoint target directory cannot be used.
    #[error("savepoint directory {target} is not usable: {source}")]
    Target {
        /// The directory.
        target: String,
        /// Why.
        #[source]
        source: BlobError,
    },
    /// The embedded job's savepoint failed.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Who leads the cluster, as `/overview` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// `none` (one coordinator) or `etcd`.
    pub ha: &'static str,
    /// This process's epoch while it leads; `None` on a standby.
    pub epoch: Option<u64>,
    /// The leader's control address as published (a standby's answer points there).
    pub leader: Option<String>,
}

/// The operations behind the REST API.
pub trait Backend: Send + Sync + 'static {
    /// `cluster` or `embedded`.
    fn mode(&self) -> &'static str;
    /// Whether this process leads, and who does.
    fn leadership(&self) -> BoxFuture<'_, Leadership>;
    /// Whether this process leads now (no request to the HA store).
    fn leading(&self) -> bool;
    /// Registered workers (embedded mode: none).
    fn workers(&self) -> Vec<WorkerInfo>;
    /// Every job.
    fn jobs(&self) -> Vec<JobInfo>;
    /// Submits a job from the registry (acknowledged once the cluster's job store holds it);
    /// a retry with the same `submission` id gets the job the first try created.
    fn submit<'a>(
        &'a self,
        name: &'a str,
        options: &'a [WireOption],
        submission: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, BackendError>>;
    /// Cancels a job.
    fn cancel(&self, id: &str) -> Result<(), BackendError>;
    /// Checkpoint counters, history and settings of a job.
    fn checkpoints(&self, id: &str) -> Option<CheckpointOverview>;
    /// A job's failures, oldest first.
    fn exceptions(&self, id: &str) -> Option<Vec<JobException>>;
    /// Starts a savepoint into `target` (`stop`: with drain or not); checks synchronously
    /// that the job exists and runs.
    fn savepoint(&self, id: &str, target: &str, stop: Option<bool>) -> Result<SavepointFuture, BackendError>;
    /// Every metric of the process (and, in cluster mode, of the workers), without the
    /// series of ended jobs.
    fn metrics(&self) -> Vec<MetricSample>;
    /// The metrics of one job: live while it runs, its final figures once it ended; `None`
    /// for an unknown job.
    fn job_metrics(&self, id: &str) -> Option<Vec<MetricSample>>;
    /// The settings, as JSON.
    fn config(&self) -> Value;
}

impl Backend for Coordinator {
    fn mode(&self) -> &'static str {
        "cluster"
    }

    fn leading(&self) -> bool {
        self.leads().is_some()
    }

    fn leadership(&self) -> BoxFuture<'_, Leadership> {
        Box::pin(async move {
            let epoch = self.leads();
            let ha = if self.ha_mode() == "standalone" { "none" } else { "etcd" };
            // A standalone coordinator leads itself; under HA ask who leads (a standby's
            // answers point there).
            let leader = if ha == "none" {
                None
            } else {
                self.leader_address().await
            };
            Leadership { ha, epoch, leader }
        })
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        Coordinator::workers(self)
    }

    fn jobs(&self) -> Vec<JobInfo> {
        Coordinator::jobs(self)
    }

    fn submit<'a>(
        &'a self,
        name: &'a str,
        options: &'a [WireOption],
        submission: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move { Ok(Coordinator::submit(self, name, options, submission).await?) })
    }

    fn cancel(&self, id: &str) -> Result<(), BackendError> {
        Ok(Coordinator::cancel(self, id)?)
    }

    fn checkpoints(&self, id: &str) -> Option<CheckpointOverview> {
        Coordinator::checkpoints(self, id)
    }

    fn exceptions(&self, id: &str) -> Option<Vec<JobException>> {
        Coordinator::exceptions(self, id)
    }

    fn savepoint(&self, id: &str, target: &str, stop: Option<bool>) -> Result<SavepointFuture, BackendError> {
        // Checked now, so an unknown, ended or non-checkpointing job gets its answer at once.
        Coordinator::check_savepoint(self, id)?;
        // Only for a job that exists and checkpoints: the target is created now, and a bad
        // one is the request's error at once rather than a failed trigger later.
        let target = self.savepoint_target(target)?;
        crate::settings::open_store(&target).map_err(|source| BackendError::Target {
            target: target.clone(),
            source,
        })?;
        let (this, id) = (self.clone(), id.to_string());
        Ok(Box::pin(async move { Ok(this.savepoint(&id, &target, stop).await?) }))
    }

    fn metrics(&self) -> Vec<MetricSample> {
        Coordinator::metrics(self)
    }

    fn job_metrics(&self, id: &str) -> Option<Vec<MetricSample>> {
        Coordinator::job_metrics(self, id)
    }

    fn config(&self) -> Value {
        let c = Coordinator::config(self);
        json!({
            "mode": "cluster",
            "heartbeat-interval-ms": c.heartbeat_interval.as_millis() as u64,
            "heartbeat-timeout-ms": c.heartbeat_timeout.as_millis() as u64,
            "slot-wait-ms": c.slot_wait.as_millis() as u64,
            "checkpoint-dir": c.checkpoint_dir,
        })
    }
}

/// The one job of `sluice run`, served by its REST API.
pub struct EmbeddedJob {
    /// The job's id (as `GET /jobs` lists it).
    pub id: String,
    /// The job's name.
    pub name: String,
    /// Its controller.
    pub controller: JobController,
    /// Checkpoint settings shown by `GET /jobs/{id}/checkpoints`.
    pub checkpoint_config: Option<(u64, u64, u64, u32, u32)>,
    /// Settings shown by `GET /config`.
    pub config: Value,
    /// Opens a savepoint target.
    pub open_store: fn(&str) -> Result<Arc<dyn BlobStore>, BlobError>,
}

impl EmbeddedJob {
    fn check(&self, id: &str) -> Result<(), BackendError> {
        if id == self.id {
            Ok(())
        } else {
            Err(BackendError::NotThisJob {
                id: id.to_string(),
                own: self.id.clone(),
            })
        }
    }
}

impl Backend for EmbeddedJob {
    fn mode(&self) -> &'static str {
        "embedded"
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        Vec::new()
    }

    fn jobs(&self) -> Vec<JobInfo> {
        vec![JobInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            status: self.controller.status(),
            error: self
                .controller
                .exceptions()
                .last()
                .filter(|_| self.controller.status() == JobStatus::Failed)
                .map(|e| e.reason.clone()),
            attempt: self.controller.attempt(),
            vertices: self.controller.vertices().to_vec(),
            options: Vec::new(),
        }]
    }

    fn leading(&self) -> bool {
        true
    }

    fn leadership(&self) -> BoxFuture<'_, Leadership> {
        Box::pin(async {
            Leadership {
                ha: "none",
                epoch: Some(1),
                leader: None,
            }
        })
    }

    fn submit<'a>(
        &'a self,
        _name: &'a str,
        _options: &'a [WireOption],
        _submission: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async {
            Err(BackendError::NotInThisMode(
                "an embedded run has one job: submit jobs to a coordinator (sluice coordinator)".into(),
            ))
        })
    }

    fn cancel(&self, id: &str) -> Result<(), BackendError> {
        self.check(id)?;
        let status = self.controller.status();
        if status.is_terminal() {
            return Err(BackendError::Ended {
                id: id.to_string(),
                status,
            });
        }
        self.controller.cancel();
        Ok(())
    }

    fn checkpoints(&self, id: &str) -> Option<CheckpointOverview> {
        self.check(id).ok()?;
        Some(CheckpointOverview::of(
            &self.controller.checkpoint_stats(),
            self.checkpoint_config,
        ))
    }

    fn exceptions(&self, id: &str) -> Option<Vec<JobException>> {
        self.check(id).ok()?;
        Some(self.controller.exceptions())
    }

    fn savepoint(&self, id: &str, target: &str, stop: Option<bool>) -> Result<SavepointFuture, BackendError> {
        self.check(id)?;
        let status = self.controller.status();
        if status.is_terminal() {
            return Err(BackendError::Ended {
                id: id.to_string(),
                status,
            });
        }
        let store = (self.open_store)(target).map_err(|source| BackendError::Target {
            target: target.to_string(),
            source,
        })?;
        let (controller, target) = (self.controller.clone(), target.trim_end_matches('/').to_string());
        Ok(Box::pin(async move {
            let info = match stop {
                None => controller.savepoint(store).await,
                Some(drain) => controller.stop_with_savepoint(store, drain).await,
            }?;
            Ok((format!("{target}/{}", info.name), info.checkpoint_id))
        }))
    }

    fn metrics(&self) -> Vec<MetricSample> {
        // The runner registers the job's metrics with its id, so they carry `job_id`.
        self.controller.metrics().snapshot()
    }

    fn job_metrics(&self, id: &str) -> Option<Vec<MetricSample>> {
        self.check(id).ok()?;
        Some(self.controller.final_or_live_metrics())
    }

    fn config(&self) -> Value {
        self.config.clone()
    }
}
