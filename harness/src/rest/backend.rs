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
use sluice_core::state::blob::BlobStore;
use sluice_core::JobController;

/// A future the backend returns for a savepoint: its location and checkpoint id.
pub type SavepointFuture = Pin<Box<dyn Future<Output = Result<(String, u64), String>> + Send>>;

/// Why a request was refused: the HTTP status follows from the kind.
#[derive(Debug)]
pub enum Refusal {
    /// No such job (404).
    UnknownJob(String),
    /// The job has ended (409).
    Ended(String),
    /// Bad request (400).
    Bad(String),
    /// Not possible in this mode (405).
    NotInThisMode(String),
}

impl From<ClusterError> for Refusal {
    fn from(e: ClusterError) -> Self {
        let msg = e.to_string();
        if msg.starts_with("no job with id") {
            Refusal::UnknownJob(msg)
        } else if msg.contains("has already ended") {
            Refusal::Ended(msg)
        } else {
            Refusal::Bad(msg)
        }
    }
}

/// The operations behind the REST API.
pub trait Backend: Send + Sync + 'static {
    /// `cluster` or `embedded`.
    fn mode(&self) -> &'static str;
    /// Registered workers (embedded mode: none).
    fn workers(&self) -> Vec<WorkerInfo>;
    /// Every job.
    fn jobs(&self) -> Vec<JobInfo>;
    /// Submits a job from the registry.
    fn submit(&self, name: &str, options: &[WireOption]) -> Result<String, Refusal>;
    /// Cancels a job.
    fn cancel(&self, id: &str) -> Result<(), Refusal>;
    /// Checkpoint counters, history and settings of a job.
    fn checkpoints(&self, id: &str) -> Option<CheckpointOverview>;
    /// A job's failures, oldest first.
    fn exceptions(&self, id: &str) -> Option<Vec<JobException>>;
    /// Starts a savepoint into `target` (`stop`: with drain or not); checks synchronously
    /// that the job exists and runs.
    fn savepoint(&self, id: &str, target: &str, stop: Option<bool>) -> Result<SavepointFuture, Refusal>;
    /// Every metric of the process (and, in cluster mode, of the workers).
    fn metrics(&self) -> Vec<MetricSample>;
    /// The settings, as JSON.
    fn config(&self) -> Value;
}

impl Backend for Coordinator {
    fn mode(&self) -> &'static str {
        "cluster"
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        Coordinator::workers(self)
    }

    fn jobs(&self) -> Vec<JobInfo> {
        Coordinator::jobs(self)
    }

    fn submit(&self, name: &str, options: &[WireOption]) -> Result<String, Refusal> {
        Ok(Coordinator::submit(self, name, options)?)
    }

    fn cancel(&self, id: &str) -> Result<(), Refusal> {
        Ok(Coordinator::cancel(self, id)?)
    }

    fn checkpoints(&self, id: &str) -> Option<CheckpointOverview> {
        Coordinator::checkpoints(self, id)
    }

    fn exceptions(&self, id: &str) -> Option<Vec<JobException>> {
        Coordinator::exceptions(self, id)
    }

    fn savepoint(&self, id: &str, target: &str, stop: Option<bool>) -> Result<SavepointFuture, Refusal> {
        let job = self
            .job(id)
            .ok_or_else(|| Refusal::UnknownJob(format!("no job with id '{id}'")))?;
        if job.status.is_terminal() {
            return Err(Refusal::Ended(format!("job {id} has already ended: {}", job.status)));
        }
        let (this, id, target) = (self.clone(), id.to_string(), target.to_string());
        Ok(Box::pin(async move {
            this.savepoint(&id, &target, stop).await.map_err(|e| e.to_string())
        }))
    }

    fn metrics(&self) -> Vec<MetricSample> {
        Coordinator::metrics(self)
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
    pub open_store: fn(&str) -> Result<Arc<dyn BlobStore>, String>,
}

impl EmbeddedJob {
    fn check(&self, id: &str) -> Result<(), Refusal> {
        if id == self.id {
            Ok(())
        } else {
            Err(Refusal::UnknownJob(format!(
                "no job with id '{id}' (this embedded run's job is '{}')",
                self.id
            )))
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
        }]
    }

    fn submit(&self, _name: &str, _options: &[WireOption]) -> Result<String, Refusal> {
        Err(Refusal::NotInThisMode(
            "an embedded run has one job: submit jobs to a coordinator (sluice coordinator)".into(),
        ))
    }

    fn cancel(&self, id: &str) -> Result<(), Refusal> {
        self.check(id)?;
        let status = self.controller.status();
        if status.is_terminal() {
            return Err(Refusal::Ended(format!("job {id} has already ended: {status}")));
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

    fn savepoint(&self, id: &str, target: &str, stop: Option<bool>) -> Result<SavepointFuture, Refusal> {
        self.check(id)?;
        let status = self.controller.status();
        if status.is_terminal() {
            return Err(Refusal::Ended(format!("job {id} has already ended: {status}")));
        }
        let store = (self.open_store)(target)
            .map_err(|e| Refusal::Bad(format!("savepoint directory {target} is not usable: {e}")))?;
        let (controller, target) = (self.controller.clone(), target.trim_end_matches('/').to_string());
        Ok(Box::pin(async move {
            let info = match stop {
                None => controller.savepoint(store).await,
                Some(drain) => controller.stop_with_savepoint(store, drain).await,
            }
            .map_err(|e| e.to_string())?;
            Ok((format!("{target}/{}", info.name), info.checkpoint_id))
        }))
    }

    fn metrics(&self) -> Vec<MetricSample> {
        // The runner registers the job's metrics with its id, so they carry `job_id`.
        self.controller.metrics().snapshot()
    }

    fn config(&self) -> Value {
        self.config.clone()
    }
}
