//! Checkpoint settings and their validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sluice_state::blob::BlobStore;

use crate::duration::format_duration;
use crate::error::InvalidSetting;

/// What a job does when the latest completed checkpoint in its store cannot be restored (a
/// damaged or missing file). Its two-phase-commit sinks committed its output when it
/// completed, so anything but stopping writes output again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnusableCheckpoint {
    /// Stop with an error naming the checkpoint, the file and the problem (the default:
    /// nothing is written twice; repair the store, or choose one of the others).
    #[default]
    Fail,
    /// Restore the newest older checkpoint that loads, deleting the unusable newer ones;
    /// the output committed since that older checkpoint is written again.
    FallBack,
    /// Delete the unusable checkpoints and start from scratch (or from the savepoint the job
    /// starts from); all output committed so far is written again.
    StartFresh,
}

impl UnusableCheckpoint {
    /// Parses `fail`, `fall-back` or `start-fresh`.
    pub fn parse(s: &str) -> Result<Self, InvalidSetting> {
        match s {
            "fail" => Ok(UnusableCheckpoint::Fail),
            "fall-back" => Ok(UnusableCheckpoint::FallBack),
            "start-fresh" => Ok(UnusableCheckpoint::StartFresh),
            other => Err(InvalidSetting(format!(
                "'{other}' is not fail, fall-back or start-fresh"
            ))),
        }
    }
}

/// How a job takes checkpoints (Flink's `execution.checkpointing.*` options).
#[derive(Clone)]
pub struct CheckpointConfig {
    /// Time between the start of one checkpoint and the trigger of the next.
    pub interval: Duration,
    /// A checkpoint not complete after this long is abandoned.
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the start of the next.
    pub min_pause: Duration,
    /// Checkpoints in flight at once (only 1 is supported so far).
    pub max_concurrent: u32,
    /// Consecutive failed checkpoints tolerated before the job fails and restarts.
    pub tolerable_failures: u32,
    /// Completed checkpoints kept; older ones are deleted once subsumed.
    pub retained: u32,
    /// Where checkpoints are stored.
    pub store: Arc<dyn BlobStore>,
    /// What to do when the latest completed checkpoint cannot be restored.
    pub on_unusable: UnusableCheckpoint,
    /// The deliberately broken variant the simulation's deletion oracle must catch: a
    /// subsumed checkpoint's shared files are deleted even when a retained checkpoint names
    /// them too.
    #[cfg(madsim)]
    pub broken_gc: bool,
}

impl fmt::Debug for CheckpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointConfig")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("min_pause", &self.min_pause)
            .field("max_concurrent", &self.max_concurrent)
            .field("tolerable_failures", &self.tolerable_failures)
            .field("retained", &self.retained)
            .field("store", &self.store)
            .field("on_unusable", &self.on_unusable)
            .finish()
    }
}

impl CheckpointConfig {
    /// Checkpoints every `interval` into `store`, with Flink's other defaults (timeout 10 min,
    /// no pause, one at a time, no tolerated failures, one retained).
    pub fn new(interval: Duration, store: Arc<dyn BlobStore>) -> Self {
        CheckpointConfig {
            interval,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            retained: 1,
            store,
            on_unusable: UnusableCheckpoint::Fail,
            #[cfg(madsim)]
            broken_gc: false,
        }
    }

    /// Checks the settings; the error names the option and the problem.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.interval.is_zero() {
            return Err(InvalidSetting("checkpoint interval must be positive".into()));
        }
        if self.timeout.is_zero() {
            return Err(InvalidSetting("checkpoint timeout must be positive".into()));
        }
        if self.timeout < self.interval {
            return Err(InvalidSetting(format!(
                "checkpoint timeout ({}) is shorter than the checkpoint interval ({}): a checkpoint would be abandoned before the next one is even due; raise the timeout",
                format_duration(self.timeout),
                format_duration(self.interval)
            )));
        }
        if self.max_concurrent != 1 {
            return Err(InvalidSetting(format!(
                "max concurrent checkpoints must be 1 (got {}): overlapping checkpoints are not supported yet",
                self.max_concurrent
            )));
        }
        if self.retained == 0 {
            return Err(InvalidSetting("retained checkpoints must be at least 1".into()));
        }
        Ok(())
    }
}
