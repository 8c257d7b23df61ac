//! The coordinator's REST API: JSON over HTTP (axum), a thin layer over [`Coordinator`]'s
//! own functions, with shapes close to Flink's.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /openapi.json` | this API as OpenAPI 3 (`docs/openapi.json`) |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | at least one worker is registered (503 otherwise) |
//! | `GET /overview` | workers, slots, jobs by status |
//! | `GET /config` | the coordinator's settings |
//! | `GET /workers` | registered workers and their slots |
//! | `GET /jobs` | every job: id, name, status, attempt |
//! | `POST /jobs` | submit `{"job", "parallelism", "options", "savepointPath", "allowNonRestoredState"}` |
//! | `GET /jobs/{id}` | one job |
//! | `PATCH /jobs/{id}` | cancel it |
//! | `GET /jobs/{id}/checkpoints` | checkpoint counts, the latest, and the settings |
//! | `GET /jobs/{id}/exceptions` | failures of the job's attempts, newest first |
//! | `POST /jobs/{id}/savepoints` | `{"targetDirectory", "cancelJob"}`: start a savepoint, answer its trigger id |
//! | `POST /jobs/{id}/stop` | `{"targetDirectory", "drain"}`: stop with a savepoint, answer its trigger id |
//! | `GET /jobs/{id}/savepoints/{trigger}` | the savepoint's status and location |
//!
//! Errors are JSON `{"errors": ["..."]}` with a 4xx status naming the problem: unknown job
//! (404), malformed body or bad option (400), wrong method (405), a job that has ended (409).

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
use sluice_core::cluster::{ClusterError, Coordinator, JobStatus};
use sluice_core::state::blob::BlobStore;

/// A savepoint started through the API.
#[derive(Debug, Clone)]
enum Trigger {
    InProgress,
    Completed { location: String, checkpoint: u64 },
    Failed(String),
}

#[derive(Clone)]
struct Api {
    coordinator: Coordinator,
    /// `(job, trigger id)` → state.
    triggers: Arc<Mutex<BTreeMap<(String, String), Trigger>>>,
    next_trigger: Arc<std::sync::atomic::AtomicU64>,
}

/// An error answer: status and message.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "errors": [self.1] }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, format!("malformed request body: {}", r.body_text()))
    }
}

fn rejected(e: ClusterError) -> ApiError {
    let msg = e.to_string();
    let status = if msg.starts_with("no job with id") {
        StatusCode::NOT_FOUND
    } else if msg.contains("has already ended") {
        StatusCode::CONFLICT
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError(status, msg)
}

fn job_json(j: &sluice_core::cluster::JobInfo) -> Value {
    json!({ "jid": j.id, "name": j.name, "state": j.status.as_str(), "attempt": j.attempt, "error": j.error })
}

/// The router of the API over `coordinator`.
pub fn router(coordinator: Coordinator) -> Router {
    let api = Api {
        coordinator,
        triggers: Arc::default(),
        next_trigger: Arc::default(),
    };
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route(
            "/openapi.json",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], include_str!("../../docs/openapi.json")) }),
        )
        .route("/readyz", get(readyz))
        .route("/overview", get(overview))
        .route("/config", get(config))
        .route("/workers", get(workers))
        .route("/jobs", get(jobs).post(submit))
        .route("/jobs/{id}", get(job).patch(cancel))
        .route("/jobs/{id}/checkpoints", get(checkpoints))
        .route("/jobs/{id}/exceptions", get(exceptions))
        .route("/jobs/{id}/savepoints", axum::routing::post(savepoint))
        .route("/jobs/{id}/stop", axum::routing::post(stop))
        .route("/jobs/{id}/savepoints/{trigger}", get(savepoint_status))
        .method_not_allowed_fallback(|| async { ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path".into()) })
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such path; see the API table in harness/src/rest.rs".into()) })
        .with_state(api)
}

async fn readyz(State(api): State<Api>) -> Response {
    let workers = api.coordinator.workers().len();
    let body = Json(json!({ "ready": workers > 0, "workers": workers }));
    if workers > 0 {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn overview(State(api): State<Api>) -> Json<Value> {
    let workers = api.coordinator.workers();
    let jobs = api.coordinator.jobs();
    let count = |s: &[JobStatus]| jobs.iter().filter(|j| s.contains(&j.status)).count();
    Json(json!({
        "workers": workers.len(),
        "slots-total": workers.iter().map(|w| w.slots).sum::<u32>(),
        "slots-available": workers.iter().map(|w| w.slots - w.used).sum::<u32>(),
        "jobs-running": count(&[JobStatus::Created, JobStatus::Running, JobStatus::Failing, JobStatus::Restarting, JobStatus::Cancelling]),
        "jobs-finished": count(&[JobStatus::Finished]),
        "jobs-cancelled": count(&[JobStatus::Canceled]),
        "jobs-failed": count(&[JobStatus::Failed]),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn config(State(api): State<Api>) -> Json<Value> {
    let c = api.coordinator.config();
    Json(json!({
        "heartbeat-interval-ms": c.heartbeat_interval.as_millis() as u64,
        "heartbeat-timeout-ms": c.heartbeat_timeout.as_millis() as u64,
        "slot-wait-ms": c.slot_wait.as_millis() as u64,
        "checkpoint-dir": c.checkpoint_dir,
    }))
}

async fn workers(State(api): State<Api>) -> Json<Value> {
    let w: Vec<Value> = api
        .coordinator
        .workers()
        .iter()
        .map(|w| json!({ "id": w.id, "data-address": w.data_address, "slots": w.slots, "slots-used": w.used }))
        .collect();
    Json(json!({ "workers": w }))
}

async fn jobs(State(api): State<Api>) -> Json<Value> {
    let j: Vec<Value> = api.coordinator.jobs().iter().map(job_json).collect();
    Json(json!({ "jobs": j }))
}

async fn job(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    api.coordinator
        .job(&id)
        .map(|j| Json(job_json(&j)))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job with id '{id}'")))
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
}

fn option_text(key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ApiError(StatusCode::BAD_REQUEST, format!("option '{key}' must be a string, number or boolean, not {other}"))),
    }
}

async fn submit(State(api): State<Api>, body: Result<Json<SubmitBody>, JsonRejection>) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let id = api.coordinator.submit(&b.job, &wire).map_err(rejected)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "jobid": id }))))
}

async fn checkpoints(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let c = api
        .coordinator
        .checkpoints(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job with id '{id}'")))?;
    Ok(Json(json!({
        "counts": { "triggered": c.triggered, "completed": c.completed, "failed": c.failed, "restarts": c.restarts },
        "latest": c.latest.map(|(id, duration, size, at)| json!({ "id": id, "duration-ms": duration, "state-size": size, "completed-at-ms": at })),
        "config": c.config.map(|(interval, timeout, pause, tolerable, retained)| json!({
            "interval-ms": interval, "timeout-ms": timeout, "min-pause-ms": pause,
            "tolerable-failed-checkpoints": tolerable, "retained-checkpoints": retained
        })),
    })))
}

async fn exceptions(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let list = api
        .coordinator
        .exceptions(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job with id '{id}'")))?;
    let entries: Vec<Value> = list
        .iter()
        .rev()
        .map(|e| json!({ "timestamp": e.timestamp_ms, "attempt": e.attempt, "exception": e.reason }))
        .collect();
    Ok(Json(json!({ "exceptionHistory": { "entries": entries } })))
}

async fn cancel(State(api): State<Api>, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.coordinator.cancel(&id).map_err(rejected)?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))))
}

/// `POST /jobs/{id}/savepoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SavepointBody {
    target_directory: String,
    #[serde(default)]
    cancel_job: bool,
}

/// `POST /jobs/{id}/stop`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StopBody {
    target_directory: String,
    #[serde(default)]
    drain: bool,
}

fn start_savepoint(api: &Api, id: &str, dir: String, stop: Option<bool>) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Checked now, so an unknown or ended job gets its 4xx at once.
    let job = api.coordinator.job(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job with id '{id}'")))?;
    if job.status.is_terminal() {
        return Err(ApiError(StatusCode::CONFLICT, format!("job {id} has already ended: {}", job.status)));
    }
    let n = api.next_trigger.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let trigger = format!("{n:016x}");
    let key = (id.to_string(), trigger.clone());
    api.triggers.lock().expect("trigger table lock").insert(key.clone(), Trigger::InProgress);
    let (api2, id2) = (api.clone(), id.to_string());
    tokio::spawn(async move {
        let outcome = match api2.coordinator.savepoint(&id2, &dir, stop).await {
            Ok((location, checkpoint)) => Trigger::Completed { location, checkpoint },
            Err(e) => Trigger::Failed(e.to_string()),
        };
        api2.triggers.lock().expect("trigger table lock").insert(key, outcome);
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "request-id": trigger }))))
}

/// A savepoint target must be a writable place: checked before the job is asked.
fn check_target(dir: &str) -> Result<(), ApiError> {
    if dir.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "targetDirectory is empty".into()));
    }
    let store: Result<Arc<dyn BlobStore>, String> = crate::settings::open_store(dir);
    store
        .map(|_| ())
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("savepoint directory {dir} is not usable: {e}")))
}

async fn savepoint(State(api): State<Api>, Path(id): Path<String>, body: Result<Json<SavepointBody>, JsonRejection>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    check_target(&b.target_directory)?;
    start_savepoint(&api, &id, b.target_directory, b.cancel_job.then_some(false))
}

async fn stop(State(api): State<Api>, Path(id): Path<String>, body: Result<Json<StopBody>, JsonRejection>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    check_target(&b.target_directory)?;
    start_savepoint(&api, &id, b.target_directory, Some(b.drain))
}

async fn savepoint_status(State(api): State<Api>, Path((id, trigger)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let t = api
        .triggers
        .lock()
        .expect("trigger table lock")
        .get(&(id.clone(), trigger.clone()))
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no savepoint request '{trigger}' for job '{id}'")))?;
    Ok(Json(match t {
        Trigger::InProgress => json!({ "status": { "id": "IN_PROGRESS" } }),
        Trigger::Completed { location, checkpoint } => {
            json!({ "status": { "id": "COMPLETED" }, "operation": { "location": location, "checkpoint": checkpoint } })
        }
        Trigger::Failed(cause) => json!({ "status": { "id": "COMPLETED" }, "operation": { "failure-cause": cause } }),
    }))
}
