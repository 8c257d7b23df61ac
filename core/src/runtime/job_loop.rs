//! The attempt/restart loop of a job, one copy for both modes: the embedded runtime runs its
//! attempts in this process, the coordinator's job master runs them on workers, and both go
//! through [`run_attempts`] with an [`AttemptRunner`] of their own.
//!
//! Each turn finds what the attempt restores ([`prepare_attempt`]: the latest usable
//! checkpoint, else the savepoint the job starts from), runs the attempt, and on a failure
//! asks the restart strategy whether and when to try again. A checkpoint or savepoint that
//! does not fit the job ends it at once: a restart would find it just as unfit.

use std::collections::VecDeque;
use std::time::Duration;

use crate::checkpoint::coordinator::{
    JobCheckpointing, SavepointInfo, SavepointRequest, SavepointRequests, StopAction,
};
use crate::checkpoint::restart::RestartTracker;
use crate::checkpoint::savepoint::{load_savepoint, savepoint_name, write_savepoint};
use crate::checkpoint::{CheckpointStorage, Latest, LoadedCheckpoint, UnusableCheckpoint};
use crate::clock::Clock;
use crate::error::{CheckpointError, JobError};
use crate::graph::JobGraph;
use crate::runtime::{restore, SavepointRestore};
use crate::state::blob::BlobError;
use crate::status::JobStatus;

/// What an attempt starts from.
pub(crate) struct AttemptStart {
    /// 0 first, + 1 per restart.
    pub(crate) attempt: u32,
    /// The checkpoint or savepoint it restores, if any.
    pub(crate) restored: Option<LoadedCheckpoint>,
    /// Whether `restored` is the savepoint the job starts from (not one of its checkpoints).
    pub(crate) from_savepoint: bool,
    /// The completed checkpoints the attempt's coordinator retains, oldest first.
    pub(crate) retained: VecDeque<u64>,
}

/// How an attempt ended.
pub(crate) enum AttemptEnd<D> {
    /// The job ends: every task finished (`cancelled: false`) or it was cancelled or stopped.
    Ended {
        /// What the mode keeps of the attempt (the embedded runtime: its metrics).
        done: D,
        /// Whether it was cancelled rather than finished.
        cancelled: bool,
    },
    /// The attempt failed: the restart strategy decides.
    Failed(JobError),
}

/// How the loop ended.
pub(crate) enum LoopEnd<D> {
    /// The last attempt finished, or was cancelled or stopped (`cancelled`).
    Ended {
        /// What the mode kept of the last attempt.
        done: D,
        /// Whether it was cancelled rather than finished.
        cancelled: bool,
    },
    /// The job was cancelled while it waited to restart.
    CancelledBetweenAttempts,
    /// The job failed for good: no restart left, or a checkpoint that does not fit it.
    Failed(JobError),
}

/// How a mode runs the attempts of a job and follows it.
pub(crate) trait AttemptRunner {
    /// What the mode keeps of a finished attempt.
    type Done;

    /// Attempt `attempt` is about to be prepared (its failures are filed under it).
    fn starting(&mut self, attempt: u32);

    /// Runs one attempt from `start` to its end.
    async fn run(&mut self, start: AttemptStart) -> AttemptEnd<Self::Done>;

    /// Whether a cancel was asked for: a failure then ends the job, with no restart.
    fn cancelling(&self) -> bool;

    /// Waits `delay` before the next attempt; `false` if the job was cancelled meanwhile.
    async fn wait(&mut self, delay: Duration) -> bool;

    /// The job's status changed (to `Failing` or `Restarting`; `Running` is the runner's).
    fn status(&mut self, status: JobStatus);

    /// Attempt `attempt` failed with `error` (for the exception history and the log).
    fn failed(&mut self, attempt: u32, error: &JobError);
}

/// The job-level inputs of the loop.
pub(crate) struct JobAttempts<'a> {
    pub(crate) graph: &'a JobGraph,
    pub(crate) storage: Option<&'a CheckpointStorage>,
    /// What to do when the latest completed checkpoint cannot be restored.
    pub(crate) on_unusable: UnusableCheckpoint,
    pub(crate) savepoint: Option<&'a SavepointRestore>,
    pub(crate) tracker: RestartTracker,
    pub(crate) clock: Clock,
    pub(crate) log: &'a slog::Logger,
    /// The first attempt's number (a job taken over by a new leader continues above the
    /// attempts of the old one).
    pub(crate) first_attempt: u32,
}

/// Runs attempts of the job until one ends it; see the module documentation.
pub(crate) async fn run_attempts<R: AttemptRunner>(job: &mut JobAttempts<'_>, runner: &mut R) -> LoopEnd<R::Done> {
    let mut attempt = job.first_attempt;
    loop {
        runner.starting(attempt);
        let error = match prepare_attempt(job.graph, job.storage, job.on_unusable, job.savepoint, job.log).await {
            Err(e) if e.is_permanent() => return LoopEnd::Failed(e),
            Err(e) => e,
            Ok((restored, retained, from_savepoint)) => {
                let start = AttemptStart {
                    attempt,
                    restored,
                    from_savepoint,
                    retained,
                };
                match runner.run(start).await {
                    AttemptEnd::Ended { done, cancelled } => return LoopEnd::Ended { done, cancelled },
                    AttemptEnd::Failed(e) if e.is_permanent() => return LoopEnd::Failed(e),
                    AttemptEnd::Failed(e) => e,
                }
            }
        };
        if runner.cancelling() {
            // The failure is the cancel's doing (tasks find their peers gone): not recorded.
            return LoopEnd::Failed(error);
        }
        runner.failed(attempt, &error);
        runner.status(JobStatus::Failing);
        let Some(delay) = job.tracker.on_failure(job.clock.now_ms()) else {
            slog::error!(job.log, "job failed; no restart left"; "error" => %error, "attempt" => attempt);
            return LoopEnd::Failed(error);
        };
        slog::warn!(job.log, "attempt failed; restarting"; "attempt" => attempt, "error" => %error,
            "delay_ms" => delay.as_millis() as u64, "restart" => job.tracker.restarts());
        runner.status(JobStatus::Restarting);
        if !runner.wait(delay).await {
            return LoopEnd::CancelledBetweenAttempts;
        }
        attempt += 1;
    }
}

/// The first checkpoint id the job uses: after every checkpoint in the store, and after the
/// savepoint it starts from (its sink transactions are named by their checkpoint ids).
pub(crate) async fn first_checkpoint_id(
    storage: Option<&CheckpointStorage>,
    savepoint: Option<&SavepointRestore>,
) -> Result<u64, JobError> {
    let mut next = match storage {
        Some(st) => st.highest_id().await.map_err(CheckpointError::from)? + 1,
        None => 1,
    };
    if let Some(sp) = savepoint {
        let meta = load_savepoint(sp.store.as_ref())
            .await
            .map_err(|e| savepoint_error(sp, e))?
            .metadata;
        next = next.max(meta.checkpoint_id + 1);
    }
    Ok(next)
}

/// A savepoint that cannot be read: a store that failed is worth a retry (a checkpoint error),
/// a savepoint that is missing or damaged is not.
fn savepoint_error(sp: &SavepointRestore, e: CheckpointError) -> JobError {
    match e {
        CheckpointError::Storage(b) if !matches!(b, BlobError::NotFound(_)) => CheckpointError::Storage(b).into(),
        e => JobError::Savepoint(format!("savepoint {:?}: {e}", sp.store)),
    }
}

/// Finds what an attempt restores: the latest usable checkpoint (else the savepoint, if the
/// job starts from one; the `bool` says so), and the complete checkpoints the coordinator will
/// retain. Complete checkpoints newer than the one restored are unusable (damaged): they are
/// deleted so they don't linger or count as retained.
pub(crate) async fn prepare_attempt(
    graph: &JobGraph,
    storage: Option<&CheckpointStorage>,
    on_unusable: UnusableCheckpoint,
    savepoint: Option<&SavepointRestore>,
    log: &slog::Logger,
) -> Result<(Option<LoadedCheckpoint>, VecDeque<u64>, bool), JobError> {
    let (restored, retained) = match storage {
        None => (None, VecDeque::new()),
        Some(st) => latest_checkpoint(st, on_unusable, log).await?,
    };
    if let Some(ck) = &restored {
        restore::check_compatible(graph, ck, false).map_err(|reason| JobError::Restore {
            checkpoint: ck.metadata.checkpoint_id,
            reason,
        })?;
        if savepoint.is_some() {
            slog::info!(log, "the checkpoint store holds a checkpoint of this run, newer than the savepoint: restoring it instead";
                "checkpoint" => ck.metadata.checkpoint_id);
        }
        return Ok((restored, retained, false));
    }
    match savepoint {
        None => Ok((None, retained, false)),
        Some(sp) => Ok((Some(savepoint_for(graph, sp, log).await?), retained, true)),
    }
}

/// What an attempt restores from the job's own checkpoints, by the recovery policy: the
/// latest completed checkpoint, and the completed ones up to it (the coordinator retains
/// them). If the latest cannot be restored, `Fail` stops the job; `FallBack` restores the
/// newest older one that loads and deletes the unusable newer ones; `StartFresh` deletes them
/// all and restores nothing.
async fn latest_checkpoint(
    st: &CheckpointStorage,
    on_unusable: UnusableCheckpoint,
    log: &slog::Logger,
) -> Result<(Option<LoadedCheckpoint>, VecDeque<u64>), JobError> {
    let (latest, problem, older) = match st.latest().await? {
        Latest::None => return Ok((None, VecDeque::new())),
        Latest::Usable(ck) => {
            let id = ck.metadata.checkpoint_id;
            let retained = st.completed_ids().await?;
            debug_assert_eq!(retained.last(), Some(&id), "the latest is the newest completed one");
            return Ok((Some(ck), retained.into_iter().collect()));
        }
        Latest::Unusable { id, problem, older } => (id, problem, older),
    };
    slog::warn!(log, "the latest completed checkpoint cannot be restored"; "checkpoint" => latest,
        "problem" => %problem, "older" => older.len(), "policy" => ?on_unusable);
    let unusable = || JobError::UnusableCheckpoint {
        checkpoint: latest,
        problem: problem.to_string(),
        older: older.len(),
    };
    match on_unusable {
        UnusableCheckpoint::Fail => Err(unusable()),
        UnusableCheckpoint::StartFresh => {
            discard_all(st, std::iter::once(latest).chain(older.iter().copied()), log).await;
            Ok((None, VecDeque::new()))
        }
        UnusableCheckpoint::FallBack => {
            let mut damaged = vec![latest];
            for (i, &id) in older.iter().enumerate() {
                match st.load(id).await {
                    Ok(ck) => {
                        discard_all(st, damaged.into_iter(), log).await;
                        let retained = older[i..].iter().rev().copied().collect();
                        slog::warn!(log, "falling back to an older checkpoint: the output committed since is written again";
                            "checkpoint" => id);
                        return Ok((Some(ck), retained));
                    }
                    Err(CheckpointError::Storage(e)) if !matches!(e, BlobError::NotFound(_)) => {
                        return Err(CheckpointError::Storage(e).into())
                    }
                    Err(e) => {
                        slog::warn!(log, "an older checkpoint cannot be restored either"; "checkpoint" => id, "problem" => %e);
                        damaged.push(id);
                    }
                }
            }
            Err(unusable())
        }
    }
}

/// Deletes the unusable checkpoints `ids` (logging each).
async fn discard_all(st: &CheckpointStorage, ids: impl Iterator<Item = u64>, log: &slog::Logger) {
    for id in ids {
        match st.discard(id).await {
            Ok(()) => slog::info!(log, "deleted unusable checkpoint"; "checkpoint" => id),
            Err(e) => slog::warn!(log, "could not delete unusable checkpoint"; "checkpoint" => id, "error" => %e),
        }
    }
}

/// Loads the savepoint at the root of `store` and renames its operators by `mapping` (old
/// uid → new uid); the error says which went wrong. (A worker restores the savepoint the
/// coordinator already checked against the job with this.)
pub(crate) async fn load_mapped_savepoint(
    store: &dyn crate::state::blob::BlobStore,
    mapping: &std::collections::BTreeMap<String, String>,
) -> Result<LoadedCheckpoint, String> {
    let mut ck = load_savepoint(store)
        .await
        .map_err(|e| format!("loading savepoint {store:?}: {e}"))?;
    restore::map_uids(&mut ck, mapping).map_err(|e| format!("savepoint {store:?}: {e}"))?;
    Ok(ck)
}

/// The job's savepoint, renamed by its uid mapping and checked against the graph.
async fn savepoint_for(
    graph: &JobGraph,
    sp: &SavepointRestore,
    log: &slog::Logger,
) -> Result<LoadedCheckpoint, JobError> {
    let mut ck = load_savepoint(sp.store.as_ref())
        .await
        .map_err(|e| savepoint_error(sp, e))?;
    restore::map_uids(&mut ck, &sp.uid_mapping)
        .map_err(|e| JobError::Savepoint(format!("savepoint {:?}: {e}", sp.store)))?;
    restore::check_compatible(graph, &ck, sp.allow_non_restored_state).map_err(|reason| {
        JobError::Savepoint(format!(
            "cannot restore savepoint {:?} (checkpoint {}): {reason}",
            sp.store, ck.metadata.checkpoint_id
        ))
    })?;
    for op in restore::unmatched_operators(graph, &ck) {
        slog::warn!(log, "dropping state of an operator the job no longer has (--allow-non-restored-state)"; "operator" => op);
    }
    slog::info!(log, "restoring from savepoint"; "savepoint" => format!("{:?}", sp.store), "checkpoint" => ck.metadata.checkpoint_id);
    Ok(ck)
}

/// The next savepoint request of the job, for a runner waiting to restart (pending forever
/// if the job takes none, or while a checkpoint coordinator holds the requests).
pub(crate) async fn next_savepoint_request(requests: Option<&SavepointRequests>) -> SavepointRequest {
    let Some(requests) = requests else {
        return std::future::pending().await;
    };
    let mut rx = requests.lock().await;
    match rx.recv().await {
        Some(req) => req,
        None => std::future::pending().await,
    }
}

/// Serves a savepoint asked for while the job waits to restart. No attempt runs to take a
/// checkpoint (or to drain), but the latest completed checkpoint is exactly the state the
/// next attempt would restore, and nothing was committed after it: the savepoint is a copy
/// of it. A stop-with-savepoint then ends the job through its stop hook (with or without
/// `drain`: there is nothing running to drain). Returns whether the job stops.
pub(crate) async fn savepoint_between_attempts(
    job: &JobCheckpointing,
    req: SavepointRequest,
    log: &slog::Logger,
) -> bool {
    let meta = match job.storage.latest().await {
        Ok(Latest::Usable(ck)) => ck.metadata,
        Ok(Latest::None) => {
            let _ = req.reply.send(Err(
                "the job is waiting to restart and has no completed checkpoint to take the savepoint from".into(),
            ));
            return false;
        }
        Ok(Latest::Unusable { id, problem, .. }) => {
            let _ = req.reply.send(Err(format!(
                "the job is waiting to restart and its latest checkpoint {id} cannot be restored: {problem}"
            )));
            return false;
        }
        Err(e) => {
            let _ = req.reply.send(Err(format!("reading the checkpoint store: {e}")));
            return false;
        }
    };
    let name = savepoint_name(&meta.job_name, meta.checkpoint_id);
    match write_savepoint(&job.storage, &meta, req.target.as_ref(), &name).await {
        Ok(name) => {
            slog::info!(log, "savepoint taken while the job waits to restart: a copy of its latest checkpoint";
                "checkpoint" => meta.checkpoint_id, "savepoint" => &name, "stop" => req.stop.is_some());
            let _ = req.reply.send(Ok(SavepointInfo {
                name,
                checkpoint_id: meta.checkpoint_id,
            }));
            if req.stop.is_some() {
                (job.stop)(StopAction::Cancel);
                return true;
            }
            false
        }
        Err(e) => {
            let _ = req.reply.send(Err(format!("writing savepoint {name}: {e}")));
            false
        }
    }
}
