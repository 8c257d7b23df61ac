//! The coordinator's metrics: its own (workers, slots, jobs by status, uptime), each job's
//! checkpoint and restart figures, and the latest report of every worker.

use std::sync::{Arc, Weak};

use super::table::Shared;
use super::JobStatus;
use crate::metrics::{CheckpointStats, ScopeGuard};

/// Registers the process-scope metrics; they read the coordinator's state when read.
pub(crate) fn register_process_metrics(shared: &Arc<Shared>) {
    let root = shared.metrics.root();
    let started = tokio::time::Instant::now();
    root.gauge_fn(
        "coordinator_uptime_seconds",
        "time since the coordinator started",
        move || Some(started.elapsed().as_secs_f64()),
    );
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let w = weak.clone();
    root.gauge_fn("coordinator_workers", "registered workers", move || {
        Some(w.upgrade()?.lock().workers.len() as f64)
    });
    let w = weak.clone();
    root.gauge_fn(
        "coordinator_slots",
        "task slots offered by registered workers",
        move || Some(w.upgrade()?.lock().workers.values().map(|x| x.slots as f64).sum()),
    );
    let w = weak.clone();
    root.gauge_fn("coordinator_slots_available", "task slots not in use", move || {
        Some(
            w.upgrade()?
                .lock()
                .workers
                .values()
                .map(|x| x.slots.saturating_sub(x.used) as f64)
                .sum(),
        )
    });
    for status in JobStatus::ALL {
        let w = weak.clone();
        root.group("status", status.as_str())
            .gauge_fn("coordinator_jobs", "jobs by status", move || {
                Some(w.upgrade()?.lock().jobs.values().filter(|j| j.status == status).count() as f64)
            });
    }
}

/// Registers job `id`'s metrics: checkpoints, restarts, status and uptime; they leave the
/// registry when the returned guard is dropped (when the job ends).
pub(crate) fn register_job_metrics(
    shared: &Arc<Shared>,
    id: &str,
    name: &str,
    stats: &Arc<CheckpointStats>,
) -> ScopeGuard {
    let group = shared.metrics.scope(&[("job_id", id), ("job_name", name)]);
    stats.register(&group);
    let started = tokio::time::Instant::now();
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let job = id.to_string();
    group.gauge_fn(
        "job_uptime_seconds",
        "time since the job was submitted, while it runs",
        move || {
            let sh = weak.upgrade()?;
            let st = sh.lock();
            let j = st.jobs.get(&job)?;
            (!j.status.is_terminal()).then(|| started.elapsed().as_secs_f64())
        },
    );
    group.guard()
}
