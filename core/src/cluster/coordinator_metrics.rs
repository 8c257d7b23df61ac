//! The coordinator's metrics: its own (workers, slots, jobs by status, uptime), each job's
//! checkpoint and restart figures, and the latest report of every worker.

use std::sync::{Arc, Weak};

use super::coordinator::{Coordinator, Shared};
use super::JobStatus;
use crate::metrics::{CheckpointStats, MetricSample, ScopeGuard};

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

impl Coordinator {
    /// Every metric of the cluster: the coordinator's and the latest report of each worker
    /// (with a `worker` label), ordered by name then labels. Series of ended jobs are left
    /// out (a worker's last report may still carry them).
    pub fn metrics(&self) -> Vec<MetricSample> {
        let sh = self.shared();
        let mut all = sh.metrics.snapshot();
        {
            let st = sh.lock();
            let live = |s: &MetricSample| {
                s.label("job_id")
                    .is_none_or(|id| st.jobs.get(id).is_some_and(|j| j.ended.is_none()))
            };
            all.extend(st.worker_metrics.values().flatten().filter(|s| live(s)).cloned());
        }
        all.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        all
    }

    /// The metrics of job `id` (those with its `job_id` label): live while it runs, its
    /// final figures once it ended; `None` for an unknown job.
    pub fn job_metrics(&self, id: &str) -> Option<Vec<MetricSample>> {
        let ended = {
            let st = self.shared().lock();
            st.jobs.get(id)?.ended.as_ref().map(|(_, figures)| figures.clone())
        };
        Some(ended.unwrap_or_else(|| self.shared().live_job_samples(id)))
    }
}
