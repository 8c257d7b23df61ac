//! Errors of the harness library, and the exit codes of the `sluice` binary by error variant.

use sluice_core::cluster::{ClusterError, RefusalKind};
use sluice_core::error::{CheckpointError, InvalidSetting, JobBuildError};
use sluice_core::state::BlobError;
use sluice_core::JobError;

/// Exit codes of the `sluice` binary (the README's table): a script can tell a job that
/// failed from a typo, a missing job from an unreachable coordinator.
pub mod exit {
    /// The job failed, or the command failed for a reason not listed below.
    pub const FAILED: u8 = 1;
    /// A flag, option or value is wrong (clap's own usage errors exit 2 as well).
    pub const USAGE: u8 = 2;
    /// What the command names does not exist: a job name, a job id, a savepoint.
    pub const NOT_FOUND: u8 = 3;
    /// The request does not fit the job's state: it has ended, does not checkpoint, or a
    /// checkpoint or savepoint does not fit it.
    pub const CONFLICT: u8 = 4;
    /// The coordinator (or a peer) cannot be reached, or did not answer in time.
    pub const UNAVAILABLE: u8 = 5;
    /// A checkpoint or savepoint store failed, or holds damaged files.
    pub const STORAGE: u8 = 6;
    /// Not allowed: a certificate the peer refused, a missing admin identity, a path outside
    /// the allowed ones.
    pub const FORBIDDEN: u8 = 7;
}

/// Why a job could not be started or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The job could not be built from its name and options.
    #[error(transparent)]
    Build(#[from] JobBuildError),
    /// A command-line option or setting is wrong (the message names it).
    #[error("{0}")]
    BadOption(String),
    /// The job failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A cluster request failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A checkpoint or savepoint could not be read, written or deleted.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A savepoint could not be read or deleted (names it).
    #[error("{path}: {source}")]
    Savepoint {
        /// The savepoint directory.
        path: String,
        /// What went wrong.
        #[source]
        source: CheckpointError,
    },
    /// A savepoint path names no savepoint (no such directory, or no `_metadata` in it).
    #[error("{0}")]
    NoSavepoint(String),
    /// A metric reporter could not start.
    #[error(transparent)]
    Reporter(#[from] crate::reporters::ReporterError),
    /// Not allowed (a path outside the allowed ones, a token file others can read).
    #[error("{0}")]
    Forbidden(String),
    /// TLS files could not be read or used.
    #[error(transparent)]
    Tls(#[from] sluice_transport::tls::TlsError),
    /// A job followed to its end (`submit --wait`) did not finish.
    #[error("job {id} ended {status}{}", error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    JobEnded {
        /// The job.
        id: String,
        /// FAILED or CANCELED.
        status: String,
        /// Why it failed.
        error: Option<String>,
    },
    /// A store location could not be opened (names it).
    #[error("{location}: {source}")]
    Store {
        /// The directory or `s3://` location.
        location: String,
        /// Why.
        #[source]
        source: BlobError,
    },
}

impl From<InvalidSetting> for HarnessError {
    fn from(e: InvalidSetting) -> Self {
        HarnessError::BadOption(e.0)
    }
}

impl HarnessError {
    /// The exit code of `sluice` for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            HarnessError::Build(e) => build_exit_code(e),
            HarnessError::BadOption(_) | HarnessError::Reporter(_) => exit::USAGE,
            HarnessError::Job(e) => job_exit_code(e),
            HarnessError::Cluster(e) => cluster_exit_code(e),
            HarnessError::Checkpoint(_) | HarnessError::Savepoint { .. } | HarnessError::Store { .. } => exit::STORAGE,
            HarnessError::NoSavepoint(_) => exit::NOT_FOUND,
            HarnessError::JobEnded { .. } => exit::FAILED,
            HarnessError::Forbidden(_) => exit::FORBIDDEN,
            HarnessError::Tls(e) => tls_exit_code(e),
        }
    }
}

fn build_exit_code(e: &JobBuildError) -> u8 {
    match e {
        JobBuildError::UnknownJob { .. } => exit::NOT_FOUND,
        JobBuildError::BadOption(_) | JobBuildError::Input(_) => exit::USAGE,
        JobBuildError::Graph(e) => job_exit_code(e),
    }
}

fn job_exit_code(e: &JobError) -> u8 {
    match e {
        JobError::InvalidGraph(_) | JobError::InvalidCheckpointConfig(_) => exit::USAGE,
        JobError::Restore { .. } | JobError::Savepoint(_) => exit::CONFLICT,
        JobError::Checkpoint(_) | JobError::UnusableCheckpoint { .. } => exit::STORAGE,
        JobError::TaskFailed { .. }
        | JobError::TaskPanicked { .. }
        | JobError::CheckpointsFailing { .. }
        | JobError::WorkerLost { .. }
        | JobError::NotEnoughSlots { .. }
        | JobError::RemoteTask { .. }
        | JobError::Protocol(_)
        | JobError::Transport { .. } => exit::FAILED,
    }
}

fn cluster_exit_code(e: &ClusterError) -> u8 {
    match e.kind() {
        RefusalKind::NotFound => exit::NOT_FOUND,
        RefusalKind::Conflict => exit::CONFLICT,
        RefusalKind::Invalid => exit::USAGE,
        RefusalKind::Unavailable | RefusalKind::NotLeader => exit::UNAVAILABLE,
        RefusalKind::Forbidden => exit::FORBIDDEN,
        RefusalKind::Failed | RefusalKind::Unspecified => exit::FAILED,
    }
}

fn tls_exit_code(e: &sluice_transport::tls::TlsError) -> u8 {
    use sluice_transport::tls::TlsError;
    match e {
        TlsError::Handshake { .. } | TlsError::Identity { .. } => exit::FORBIDDEN,
        TlsError::HandshakeTimeout { .. } => exit::UNAVAILABLE,
        TlsError::Read { .. } | TlsError::Empty { .. } | TlsError::Config(_) => exit::USAGE,
    }
}

/// The exit code for the first error in `chain` that this crate knows (the CLI walks an
/// error's sources with it); `None` if none is known.
pub fn exit_code_of<'a>(mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> Option<u8> {
    chain.find_map(|e| {
        if let Some(h) = e.downcast_ref::<HarnessError>() {
            Some(h.exit_code())
        } else if let Some(c) = e.downcast_ref::<ClusterError>() {
            Some(cluster_exit_code(c))
        } else if let Some(j) = e.downcast_ref::<JobError>() {
            Some(job_exit_code(j))
        } else if let Some(b) = e.downcast_ref::<JobBuildError>() {
            Some(build_exit_code(b))
        } else if e.downcast_ref::<InvalidSetting>().is_some()
            || e.downcast_ref::<crate::config::ConfigError>().is_some()
        {
            Some(exit::USAGE)
        } else if e.downcast_ref::<CheckpointError>().is_some() {
            Some(exit::STORAGE)
        } else {
            None
        }
    })
}
