//! The REST API of the coordinator and of `sluice run --rest-port`: JSON over HTTP (axum), a
//! thin layer over a [`Backend`] (the coordinator's own functions, or the embedded job's
//! controller), with shapes close to Flink's.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /openapi.json` | this API as OpenAPI 3 (`docs/openapi.json`) |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | at least one worker is registered (503 otherwise) |
//! | `GET /overview` | workers, slots, jobs by status; HA mode, leader and epoch |
//! | `GET /config` | the coordinator's settings |
//! | `GET /workers` | registered workers and their slots |
//! | `GET /jobs` | every job: id, name, status, attempt |
//! | `POST /jobs` | submit `{"job", "parallelism", "options", "savepointPath", "allowNonRestoredState"}` |
//! | `GET /metrics` | every metric in the Prometheus text format (with the `prometheus` reporter) |
//! | `GET /jobs/{id}` | one job, its vertices with parallelism and live figures |
//! | `GET /jobs/{id}/metrics` | the job's metrics as JSON (`?name=PREFIX` filters) |
//! | `PATCH /jobs/{id}` | cancel it |
//! | `GET /jobs/{id}/checkpoints` | checkpoint counts, the latest, and the settings |
//! | `GET /jobs/{id}/exceptions` | failures of the job's attempts, newest first |
//! | `POST /jobs/{id}/savepoints` | `{"targetDirectory", "cancelJob"}`: start a savepoint, answer its trigger id |
//! | `POST /jobs/{id}/stop` | `{"targetDirectory", "drain"}`: stop with a savepoint, answer its trigger id |
//! | `GET /jobs/{id}/savepoints/{trigger}` | the savepoint's status and location |
//!
//! Errors are JSON `{"errors": ["..."]}` with a 4xx status naming the problem: unknown job
//! (404), malformed body or bad option (400), wrong method or not in this mode (405), a job
//! that has ended (409), no or an unknown bearer token when `[rest] tokens-file` is set
//! (401), a read-only token changing something, a switched-off action or a path outside
//! `[security] allowed-paths` (403). See `docs/security.md`.

mod auth;
mod backend;
mod server;

pub use auth::RestSecurity;
pub use backend::{Backend, BackendError, EmbeddedJob, SavepointFuture};
pub use server::{serve, ServeLimits};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_core::cluster::{ClusterError, JobStatus, RefusalKind};
use sluice_core::metrics::{prometheus, vertex_summaries, CheckpointOutcome, MetricSample, MetricValue};
use sluice_core::sync::LockExt;

/// A savepoint started through the API.
#[derive(Debug, Clone)]
enum Trigger {
    InProgress,
    Completed { location: String, checkpoint: u64 },
    Failed(String),
}

#[derive(Clone)]
struct Api {
    backend: Arc<dyn Backend>,
    prometheus: bool,
    security: Arc<RestSecurity>,
    /// `(job, trigger id)` → state.
    triggers: Arc<Mutex<BTreeMap<(String, String), Trigger>>>,
    next_trigger: Arc<std::sync::atomic::AtomicU64>,
}

/// Savepoint requests remembered for `GET /jobs/{id}/savepoints/{trigger}`.
const MAX_TRIGGERS: usize = 1000;

/// An error answer: status and message.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "errors": [self.1] }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("malformed request body: {}", r.body_text()),
        )
    }
}

/// The HTTP status of a backend error, by variant.
pub fn status_of(e: &BackendError) -> StatusCode {
    match e {
        // The job name is in the request's body, not its path: an unknown one is a bad
        // request, not a missing resource (the CLI, which has no paths, says "not found").
        BackendError::Cluster(ClusterError::Build(_)) => StatusCode::BAD_REQUEST,
        BackendError::Cluster(c) => match c.kind() {
            RefusalKind::NotFound => StatusCode::NOT_FOUND,
            RefusalKind::Conflict => StatusCode::CONFLICT,
            RefusalKind::Invalid => StatusCode::BAD_REQUEST,
            RefusalKind::Unavailable | RefusalKind::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
            RefusalKind::Forbidden => StatusCode::FORBIDDEN,
            RefusalKind::Failed | RefusalKind::Unspecified => StatusCode::INTERNAL_SERVER_ERROR,
        },
        BackendError::NotThisJob { .. } => StatusCode::NOT_FOUND,
        BackendError::Ended { .. } => StatusCode::CONFLICT,
        BackendError::NotInThisMode(_) => StatusCode::METHOD_NOT_ALLOWED,
        BackendError::Target { .. } => StatusCode::BAD_REQUEST,
        BackendError::Job(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn rejected(e: BackendError) -> ApiError {
    ApiError(status_of(&e), e.to_string())
}

fn unknown_job(id: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no job with id '{id}'"))
}

fn job_json(j: &sluice_core::cluster::JobInfo) -> Value {
    let options: serde_json::Map<String, Value> = j.options.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({ "jid": j.id, "name": j.name, "state": j.status.as_str(), "attempt": j.attempt, "error": j.error,
        "options": options })
}

/// How the API is served.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// Serve `GET /metrics` in the Prometheus text format (the `prometheus` reporter).
    pub prometheus: bool,
    /// Tokens, switches, allowed paths.
    pub security: RestSecurity,
}

impl Default for RestOptions {
    fn default() -> Self {
        RestOptions {
            prometheus: true,
            security: RestSecurity::default(),
        }
    }
}

/// The router of the API over `backend`.
pub fn router(backend: Arc<dyn Backend>, options: RestOptions) -> Router {
    let security = Arc::new(options.security);
    let api = Api {
        backend,
        prometheus: options.prometheus,
        security: security.clone(),
        triggers: Arc::default(),
        next_trigger: Arc::default(),
    };
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    include_str!("../../../docs/openapi.json"),
                )
            }),
        )
        .route("/readyz", get(readyz))
        .route("/overview", get(overview))
        .route("/config", get(config))
        .route("/workers", get(workers))
        .route("/jobs", get(jobs).post(submit))
        .route("/metrics", get(metrics))
        .route("/jobs/{id}", get(job).patch(cancel))
        .route("/jobs/{id}/metrics", get(job_metrics))
        .route("/jobs/{id}/checkpoints", get(checkpoints))
        .route("/jobs/{id}/exceptions", get(exceptions))
        .route("/jobs/{id}/savepoints", axum::routing::post(savepoint))
        .route("/jobs/{id}/stop", axum::routing::post(stop))
        .route("/jobs/{id}/savepoints/{trigger}", get(savepoint_status))
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path".into())
        })
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such path; see docs/openapi.json (GET /jobs, /jobs/{id}, /overview, ...)".into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(api.clone(), standby_guard))
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(security, auth::authorize))
}

/// Refuses what a `[rest]` switch turns off.
fn switched_off(on: bool, what: &str, key: &str) -> Result<(), ApiError> {
    if on {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{what} through the REST API is turned off ([rest] {key} = false)"),
        ))
    }
}

async fn readyz(State(api): State<Api>) -> Response {
    if api.backend.mode() == "embedded" {
        // The embedded job runs in this process: ready while it has not ended.
        let running = api.backend.jobs().iter().any(|j| !j.status.is_terminal());
        let body = Json(json!({ "ready": running, "workers": 0 }));
        return if running {
            body.into_response()
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        };
    }
    let workers = api.backend.workers().len();
    let body = Json(json!({ "ready": workers > 0, "workers": workers }));
    if workers > 0 {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn overview(State(api): State<Api>) -> Json<Value> {
    let lead = api.backend.leadership().await;
    let workers = api.backend.workers();
    let jobs = api.backend.jobs();
    let count = |s: &[JobStatus]| jobs.iter().filter(|j| s.contains(&j.status)).count();
    Json(json!({
        "workers": workers.len(),
        "slots-total": workers.iter().map(|w| w.slots).sum::<u32>(),
        "slots-available": workers.iter().map(|w| w.slots.saturating_sub(w.used)).sum::<u32>(),
        "jobs-created": count(&[JobStatus::Created]),
        "jobs-running": count(&[JobStatus::Running]),
        "jobs-restarting": count(&[JobStatus::Failing, JobStatus::Restarting]),
        "jobs-cancelling": count(&[JobStatus::Cancelling]),
        "jobs-finished": count(&[JobStatus::Finished]),
        "jobs-cancelled": count(&[JobStatus::Canceled]),
        "jobs-failed": count(&[JobStatus::Failed]),
        "version": env!("CARGO_PKG_VERSION"),
        "mode": api.backend.mode(),
        "ha": lead.ha,
        "leading": lead.epoch.is_some(),
        "epoch": lead.epoch,
        "leader": lead.leader,
    }))
}

/// A standby coordinator knows no jobs or workers: everything about them is answered with
/// 503 and where the leader is, so a client or a load balancer moves on.
async fn standby_guard(
    State(api): State<Api>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let about_the_cluster = path.starts_with("/jobs") || path.starts_with("/workers") || path == "/readyz";
    // The leader answers at once; only a standby asks the HA store who leads.
    if about_the_cluster && !api.backend.leading() {
        let lead = api.backend.leadership().await;
        if lead.epoch.is_none() {
            let where_ = lead.leader.as_deref().map_or(
                "no leader is known (an election is under way, or etcd cannot be reached)".to_string(),
                |l| format!("the leader's control address is {l}"),
            );
            let body = json!({
                "errors": [format!("this coordinator is a standby; {where_}")],
                "leader": lead.leader,
            });
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
    }
    next.run(request).await
}

async fn config(State(api): State<Api>) -> Json<Value> {
    Json(api.backend.config())
}

async fn workers(State(api): State<Api>) -> Json<Value> {
    let w: Vec<Value> = api
        .backend
        .workers()
        .iter()
        .map(|w| json!({ "id": w.id, "data-address": w.data_address, "slots": w.slots, "slots-used": w.used }))
        .collect();
    Json(json!({ "workers": w }))
}

async fn jobs(State(api): State<Api>) -> Json<Value> {
    let j: Vec<Value> = api.backend.jobs().iter().map(job_json).collect();
    Json(json!({ "jobs": j }))
}

fn job_samples(api: &Api, id: &str) -> Vec<MetricSample> {
    api.backend.job_metrics(id).unwrap_or_default()
}

async fn job(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let j = api
        .backend
        .jobs()
        .into_iter()
        .find(|j| j.id == id)
        .ok_or_else(|| unknown_job(&id))?;
    let samples = job_samples(&api, &id);
    let vertices: Vec<Value> = vertex_summaries(&samples, &j.vertices)
        .into_iter()
        .map(|v| {
            json!({
                "name": v.name,
                "parallelism": v.parallelism,
                "metrics": {
                    "subtasks-reporting": v.subtasks_reporting,
                    "read-records": v.records_in,
                    "write-records": v.records_out,
                    "read-records-per-second": v.records_in_per_second,
                    "write-records-per-second": v.records_out_per_second,
                    "late-records-dropped": v.late_records_dropped,
                    "read-bytes": v.bytes_in,
                    "write-bytes": v.bytes_out,
                    "busy-ratio-max": v.busy_ratio_max,
                    "backpressured-ratio-max": v.backpressured_ratio_max,
                    "input-watermark": v.input_watermark_ms,
                }
            })
        })
        .collect();
    let mut body = job_json(&j);
    body["vertices"] = Value::Array(vertices);
    Ok(Json(body))
}

fn sample_json(s: &MetricSample) -> Value {
    let labels: serde_json::Map<String, Value> = s
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let number = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    let mut m = json!({ "name": s.name, "labels": labels });
    match &s.value {
        MetricValue::Counter(c) => {
            m["type"] = json!("counter");
            m["value"] = json!(c);
        }
        MetricValue::Gauge(g) => {
            m["type"] = json!("gauge");
            m["value"] = number(*g);
        }
        MetricValue::Meter { count, rate } => {
            m["type"] = json!("meter");
            m["value"] = json!(count);
            m["rate"] = number(*rate);
        }
        MetricValue::Histogram { count, sum, .. } => {
            m["type"] = json!("histogram");
            m["value"] = json!(count);
            m["sum"] = number(*sum);
            m["mean"] = number(s.value.as_f64());
        }
    }
    m
}

/// `GET /jobs/{id}/metrics?name=PREFIX`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsQuery {
    name: Option<String>,
}

async fn job_metrics(
    State(api): State<Api>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text())))?;
    if !api.backend.jobs().iter().any(|j| j.id == id) {
        return Err(unknown_job(&id));
    }
    let list: Vec<Value> = job_samples(&api, &id)
        .iter()
        .filter(|s| q.name.as_deref().is_none_or(|p| s.name.starts_with(p)))
        .map(sample_json)
        .collect();
    Ok(Json(json!({ "metrics": list })))
}

async fn metrics(State(api): State<Api>) -> Result<Response, ApiError> {
    if !api.prometheus {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "the prometheus reporter is off: add \"prometheus\" to [metrics] reporters in the configuration".into(),
        ));
    }
    let text = prometheus::render(&api.backend.metrics());
    Ok(([(axum::http::header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], text).into_response())
}

/// `POST /jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubmitBody {
    job: String,
    parallelism: Option<u32>,
    #[serde(default)]
    options: BTreeMap<String, Value>,
    savepoint_path: Option<String>,
    #[serde(default)]
    allow_non_restored_state: bool,
    /// The client's id for this submission: a retry with the same id gets the job the first
    /// try created.
    submission_id: Option<String>,
}

fn option_text(key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("option '{key}' must be a string, number or boolean, not {other}"),
        )),
    }
}

async fn submit(
    State(api): State<Api>,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    switched_off(api.security.submit_enabled, "submitting jobs", "submit-enabled")?;
    let Json(b) = body?;
    let mut options = Vec::new();
    if let Some(p) = b.parallelism {
        options.push(("parallelism".to_string(), p.to_string()));
    }
    for (k, v) in &b.options {
        if k == "parallelism" && b.parallelism.is_some() {
            return Err(ApiError(StatusCode::BAD_REQUEST, "parallelism is given twice".into()));
        }
        options.push((k.clone(), option_text(k, v)?));
    }
    if let Some(p) = &b.savepoint_path {
        options.push(("from-savepoint".into(), p.clone()));
    }
    if b.allow_non_restored_state {
        options.push(("allow-non-restored-state".into(), "true".into()));
    }
    let wire: Vec<sluice_core::cluster::WireOption> = options
        .into_iter()
        .map(|(key, value)| sluice_core::cluster::WireOption { key, value })
        .collect();
    let id = api
        .backend
        .submit(&b.job, &wire, b.submission_id.as_deref())
        .await
        .map_err(rejected)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "jobid": id }))))
}

async fn checkpoints(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let c = api.backend.checkpoints(&id).ok_or_else(|| unknown_job(&id))?;
    let history: Vec<Value> = c
        .history
        .iter()
        .rev()
        .map(|r| {
            let (status, failure) = match &r.outcome {
                CheckpointOutcome::Completed => ("COMPLETED", None),
                CheckpointOutcome::Failed(why) => ("FAILED", Some(why.clone())),
            };
            json!({
                "id": r.id, "status": status, "is_savepoint": r.savepoint, "trigger-timestamp": r.triggered_at_ms,
                "duration-ms": r.duration_ms, "state-size": r.state_size,
                "incremental-size": r.incremental_size, "alignment-ms": r.alignment_ms, "failure-message": failure,
            })
        })
        .collect();
    let (latest_alignment, latest_incremental) = (c.latest_alignment_ms, c.latest_incremental_size);
    Ok(Json(json!({
        "counts": { "triggered": c.triggered, "completed": c.completed, "failed": c.failed, "restarts": c.restarts },
        "latest": c.latest.map(|(id, duration, size, at)| json!({
            "id": id, "duration-ms": duration, "state-size": size, "incremental-size": latest_incremental, "completed-at-ms": at, "alignment-ms": latest_alignment
        })),
        "history": history,
        "config": c.config.map(|(interval, timeout, pause, tolerable, retained)| json!({
            "interval-ms": interval, "timeout-ms": timeout, "min-pause-ms": pause,
            "tolerable-failed-checkpoints": tolerable, "retained-checkpoints": retained
        })),
    })))
}

async fn exceptions(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let list = api.backend.exceptions(&id).ok_or_else(|| unknown_job(&id))?;
    let entries: Vec<Value> = list
        .iter()
        .rev()
        .map(|e| json!({ "timestamp": e.timestamp_ms, "attempt": e.attempt, "exception": e.reason }))
        .collect();
    Ok(Json(json!({ "exceptionHistory": { "entries": entries } })))
}

async fn cancel(State(api): State<Api>, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    switched_off(api.security.cancel_enabled, "cancelling jobs", "cancel-enabled")?;
    api.backend.cancel(&id).map_err(rejected)?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))))
}

/// `POST /jobs/{id}/savepoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SavepointBody {
    #[serde(default)]
    target_directory: String,
    #[serde(default)]
    cancel_job: bool,
}

/// `POST /jobs/{id}/stop`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StopBody {
    #[serde(default)]
    target_directory: String,
    #[serde(default)]
    drain: bool,
}

fn start_savepoint(
    api: &Api,
    id: &str,
    dir: String,
    stop: Option<bool>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Started (and checked) now, so an unknown or ended job gets its 4xx at once.
    let work = api.backend.savepoint(id, &dir, stop).map_err(rejected)?;
    let n = api.next_trigger.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let trigger = format!("{n:016x}");
    let key = (id.to_string(), trigger.clone());
    {
        let mut t = api.triggers.locked();
        // A bound on the table: the oldest finished requests go first (ids grow, so the
        // smallest id of a job is its oldest).
        while t.len() >= MAX_TRIGGERS {
            let oldest = t
                .iter()
                .filter(|(_, v)| !matches!(v, Trigger::InProgress))
                .min_by(|a, b| a.0 .1.cmp(&b.0 .1))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    t.remove(&k);
                }
                None => break,
            }
        }
        t.insert(key.clone(), Trigger::InProgress);
    }
    let api2 = api.clone();
    tokio::spawn(async move {
        let outcome = match work.await {
            Ok((location, checkpoint)) => Trigger::Completed { location, checkpoint },
            Err(e) => Trigger::Failed(e.to_string()),
        };
        api2.triggers.locked().insert(key, outcome);
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "request-id": trigger }))))
}

/// Where a savepoint of job `id` goes: the request's directory, else the default one; it
/// must be inside the allowed paths. Checked after the job (an unknown job is a 404, an ended
/// one a 409, whatever the target). Nothing is created here: the backend opens the target
/// only for a job that exists and runs.
fn savepoint_target(api: &Api, id: &str, given: String) -> Result<String, ApiError> {
    match api.backend.jobs().into_iter().find(|j| j.id == id) {
        None => return Err(unknown_job(id)),
        Some(j) if j.status.is_terminal() => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("job {id} has already ended: {}", j.status),
            ))
        }
        Some(_) => {}
    }
    let target = match (given.is_empty(), &api.security.savepoint_dir) {
        (false, _) => given,
        (true, Some(default)) => default.clone(),
        (true, None) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "targetDirectory is empty and no default is set ([security] savepoint-dir)".into(),
            ))
        }
    };
    api.security
        .paths
        .check("targetDirectory", &target)
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
    Ok(target)
}

async fn savepoint(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Result<Json<SavepointBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    if b.cancel_job {
        switched_off(api.security.cancel_enabled, "cancelling jobs", "cancel-enabled")?;
    }
    let target = savepoint_target(&api, &id, b.target_directory)?;
    start_savepoint(&api, &id, target, b.cancel_job.then_some(false))
}

async fn stop(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Result<Json<StopBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    switched_off(api.security.cancel_enabled, "stopping jobs", "cancel-enabled")?;
    let target = savepoint_target(&api, &id, b.target_directory)?;
    start_savepoint(&api, &id, target, Some(b.drain))
}

async fn savepoint_status(
    State(api): State<Api>,
    Path((id, trigger)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let t = api
        .triggers
        .locked()
        .get(&(id.clone(), trigger.clone()))
        .cloned()
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no savepoint request '{trigger}' for job '{id}'"),
            )
        })?;
    Ok(Json(match t {
        Trigger::InProgress => json!({ "status": { "id": "IN_PROGRESS" } }),
        Trigger::Completed { location, checkpoint } => {
            json!({ "status": { "id": "COMPLETED" }, "operation": { "location": location, "checkpoint": checkpoint } })
        }
        Trigger::Failed(cause) => json!({ "status": { "id": "COMPLETED" }, "operation": { "failure-cause": cause } }),
    }))
}

#[cfg(test)]
mod tests {
    //! The HTTP status of every error variant the backends return.
    use sluice_core::cluster::{ClusterError, JobStatus, RefusalKind};
    use sluice_core::error::{InvalidSetting, JobBuildError};
    use sluice_core::state::BlobError;
    use sluice_core::JobError;

    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused")
    }

    fn frame_error() -> ClusterError {
        ClusterError::Frame {
            what: "reading".into(),
            source: sluice_core::cluster::FrameError::UnknownType(99),
        }
    }

    #[test]
    fn every_cluster_error_variant_has_its_status() {
        let blob = || BlobError::NotFound("x".into());
        let cases: Vec<(ClusterError, StatusCode)> = vec![
            (
                ClusterError::Io {
                    what: "dial".into(),
                    source: io(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (frame_error(), StatusCode::INTERNAL_SERVER_ERROR),
            (
                ClusterError::UnknownJob {
                    id: "j".into(),
                    known: vec![],
                },
                StatusCode::NOT_FOUND,
            ),
            (
                ClusterError::JobEnded {
                    id: "j".into(),
                    status: JobStatus::Finished,
                },
                StatusCode::CONFLICT,
            ),
            (ClusterError::NotCheckpointing { id: "j".into() }, StatusCode::CONFLICT),
            (
                ClusterError::BadOption(InvalidSetting("--x: bad".into())),
                StatusCode::BAD_REQUEST,
            ),
            (
                ClusterError::Build(JobBuildError::UnknownJob {
                    name: "n".into(),
                    known: vec![],
                }),
                StatusCode::BAD_REQUEST,
            ),
            (
                ClusterError::SavepointTarget {
                    target: "/t".into(),
                    source: blob(),
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                ClusterError::SavepointFailed {
                    id: "j".into(),
                    reason: "r".into(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ClusterError::SavepointInterrupted { id: "j".into() },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ClusterError::Protocol {
                    peer: "p".into(),
                    what: "w".into(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (ClusterError::Config("c".into()), StatusCode::BAD_REQUEST),
            (ClusterError::Timeout("t".into()), StatusCode::SERVICE_UNAVAILABLE),
            (ClusterError::Busy("b".into()), StatusCode::SERVICE_UNAVAILABLE),
            (ClusterError::Forbidden("f".into()), StatusCode::FORBIDDEN),
            (
                ClusterError::Path(sluice_core::paths::PathRefused {
                    what: "--input".into(),
                    location: "/etc/passwd".into(),
                    why: "outside".into(),
                }),
                StatusCode::FORBIDDEN,
            ),
            (
                ClusterError::Tls(sluice_transport::tls::TlsError::Config("c".into())),
                StatusCode::BAD_REQUEST,
            ),
            (
                ClusterError::Tls(sluice_transport::tls::TlsError::Handshake {
                    peer: "p".into(),
                    source: io(),
                }),
                StatusCode::FORBIDDEN,
            ),
        ];
        for (e, status) in cases {
            let text = e.to_string();
            assert_eq!(status_of(&BackendError::Cluster(e)), status, "{text}");
        }
        // A refusal that came over the wire keeps the kind the coordinator gave it.
        for (kind, status) in [
            (RefusalKind::NotFound, StatusCode::NOT_FOUND),
            (RefusalKind::Conflict, StatusCode::CONFLICT),
            (RefusalKind::Invalid, StatusCode::BAD_REQUEST),
            (RefusalKind::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (RefusalKind::Failed, StatusCode::INTERNAL_SERVER_ERROR),
            (RefusalKind::Unspecified, StatusCode::INTERNAL_SERVER_ERROR),
            (RefusalKind::Forbidden, StatusCode::FORBIDDEN),
            (RefusalKind::NotLeader, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let e = ClusterError::Refused {
                kind,
                reason: "r".into(),
            };
            assert_eq!(status_of(&BackendError::Cluster(e)), status, "{kind:?}");
        }
    }

    #[test]
    fn every_backend_error_variant_has_its_status() {
        let cases: Vec<(BackendError, StatusCode)> = vec![
            (
                BackendError::NotThisJob {
                    id: "a".into(),
                    own: "b".into(),
                },
                StatusCode::NOT_FOUND,
            ),
            (
                BackendError::Ended {
                    id: "a".into(),
                    status: JobStatus::Canceled,
                },
                StatusCode::CONFLICT,
            ),
            (
                BackendError::NotInThisMode("embedded".into()),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                BackendError::Target {
                    target: "/t".into(),
                    source: BlobError::NotFound("t".into()),
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                BackendError::Job(JobError::Savepoint("failed".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e), status, "{e}");
        }
    }
}
