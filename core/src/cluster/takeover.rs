//! What a coordinator does when it becomes the leader: it takes over the jobs its
//! predecessors acknowledged. Jobs that ended stay ended (listed with their result); every
//! other job restarts under its own id, from its latest checkpoint in the HA store's ledger,
//! with an attempt number above any earlier leader's (so no worker or peer confuses the new
//! attempt's frames with a deposed leader's).

use std::sync::Arc;

use super::{submission, Coordinator};
use crate::cluster::table::JobEntry;
use crate::cluster::{ClusterError, JobStatus};
use crate::ha::{HaError, JobRecord};

/// Takes over every stored job; fails only if the store cannot be read (a job that cannot be
/// built any more is recorded as failed, naming why).
pub(crate) async fn take_over(c: &Coordinator) -> Result<(), ClusterError> {
    let sh = c.shared();
    let stored = sh.ha.read("jobs/").await?;
    let mut records = Vec::with_capacity(stored.len());
    for (key, bytes) in stored {
        let id = key.trim_start_matches("jobs/").to_string();
        // A record this build cannot read (damaged, or written by a newer version) stops the
        // takeover: leading without it would silently drop a job.
        records.push((id, JobRecord::decode(&key, &bytes).map_err(|e| unreadable(&key, e))?));
    }
    // In submission order, so jobs waiting for slots keep their turn.
    records.sort_by_key(|(_, r)| r.seq);
    drop_superseded(c, &mut records).await?;
    let (mut resumed, mut ended) = (0, 0);
    for (id, record) in records {
        if record.result.is_some() {
            list_ended(c, &id, &record);
            ended += 1;
        } else {
            resume(c, &id, record).await?;
            resumed += 1;
        }
    }
    slog::info!(sh.config.log, "took over the stored jobs"; "resumed" => resumed, "ended" => ended);
    if resumed + ended == 0 {
        slog::info!(
            sh.config.log,
            "the cluster has no stored jobs (a new cluster, or a mistyped --cluster-id?)"
        );
    }
    Ok(())
}

/// Removes (fenced) the records a retried submission superseded, before anything runs them.
async fn drop_superseded(c: &Coordinator, records: &mut Vec<(String, JobRecord)>) -> Result<(), ClusterError> {
    let superseded = submission::superseded(records);
    if superseded.is_empty() {
        return Ok(());
    }
    let sh = c.shared();
    for id in &superseded {
        slog::warn!(sh.config.log, "dropping a job record its client's retry superseded (the first try's outcome was unknown)"; "job" => id);
    }
    let keys = superseded.iter().map(|id| crate::ha::job_key(id)).collect();
    sh.ha.write(vec![], keys).await?;
    records.retain(|(id, _)| !superseded.contains(id));
    Ok(())
}

/// Lists an ended job as it ended.
fn list_ended(c: &Coordinator, id: &str, record: &JobRecord) {
    let sh = c.shared();
    let result = record.result.as_ref().expect("only ended jobs are listed as ended");
    let (tx, _) = tokio::sync::mpsc::unbounded_channel();
    let mut entry = JobEntry::new(&record.name, tx, None, Arc::default(), None, Vec::new());
    entry.status = result.status().unwrap_or(JobStatus::Failed);
    entry.error = result.error.clone();
    entry.attempt = record.attempt;
    entry.ended = Some((sh.config.clock.now_ms(), Vec::new()));
    entry.options = record.options.clone();
    entry.submission = record.submission.clone();
    if c.admit(entry, Some(id.to_string())).is_err() {
        slog::warn!(sh.config.log, "could not list an ended job"; "job" => id);
    }
}

/// Restarts a job that had not ended, or records why it cannot be. A coordinator configured
/// unlike the one that took the job (another checkpoint location, paths it does not allow)
/// refuses to lead rather than fail the job or restart it from scratch.
async fn resume(c: &Coordinator, id: &str, record: JobRecord) -> Result<(), ClusterError> {
    let sh = c.shared();
    same_checkpoint_dir(c, id, &record)?;
    let options = submission::wire_options(&record);
    if let Err(e) = c.check_paths(&record.name, &options) {
        return Err(HaError::Inconsistent(format!(
            "job {id}'s files are not allowed by this coordinator ({e}): every coordinator of a cluster needs the same [security] allowed-paths"
        ))
        .into());
    }
    let prepared = match c.prepare(&record.name, &options) {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("the new leader could not build the job again: {e}");
            slog::error!(sh.config.log, "failing a job taken over"; "job" => id, "error" => &reason);
            return fail(c, id, record, reason).await;
        }
    };
    let (mut entry, admission) = prepared.admission(&record.name);
    entry.options = record.options.clone();
    entry.submission = record.submission.clone();
    let (_, seq) = c.admit(entry, Some(id.to_string()))?;
    let first_attempt = record.attempt.saturating_add(1);
    slog::info!(sh.config.log, "resuming a job taken over"; "job" => id, "name" => &record.name, "attempt" => first_attempt);
    c.launch(id, &record.name, seq, prepared, admission, first_attempt);
    Ok(())
}

/// Refuses a coordinator whose checkpoint location is not the one job `id` was taken with.
fn same_checkpoint_dir(c: &Coordinator, id: &str, record: &JobRecord) -> Result<(), ClusterError> {
    let mine = &c.shared().config.checkpoint_dir;
    if record.checkpoint_dir == *mine {
        return Ok(());
    }
    let show = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".into());
    Err(HaError::Inconsistent(format!(
        "job {id}'s checkpoints are in {}, this coordinator's --checkpoint-dir is {}: every coordinator of a cluster needs the same",
        show(&record.checkpoint_dir),
        show(mine)
    ))
    .into())
}

/// Checks, before campaigning, that this coordinator could take the stored jobs over (the
/// same checkpoint location): a misconfigured standby stops at start, not at the failover
/// it was meant for. An unreachable store is left to the campaign.
pub(crate) async fn preflight(c: &Coordinator) -> Result<(), ClusterError> {
    let Ok(stored) = c.shared().ha.read("jobs/").await else {
        return Ok(());
    };
    for (key, bytes) in stored {
        let id = key.trim_start_matches("jobs/");
        let record = JobRecord::decode(&key, &bytes).map_err(|e| unreadable(&key, e))?;
        if record.result.is_none() {
            same_checkpoint_dir(c, id, &record)?;
        }
    }
    Ok(())
}

/// A record no coordinator can take over: every one refuses to lead while it is there.
fn unreadable(key: &str, e: HaError) -> ClusterError {
    HaError::Inconsistent(format!(
        "{e}; no coordinator leads while it is there: if it is not a Sluice job, delete {key} under the cluster's prefix (/sluice/<cluster-id>/)"
    ))
    .into()
}

/// Records job `id` as failed with `reason` (fenced) and lists it so.
async fn fail(c: &Coordinator, id: &str, mut record: JobRecord, reason: String) -> Result<(), ClusterError> {
    record.result = Some(crate::ha::JobResult {
        status: JobStatus::Failed.as_str().to_string(),
        error: Some(reason),
    });
    c.shared().save_record(id, &record).await?;
    list_ended(c, id, &record);
    Ok(())
}
