//! Why a cluster operation failed: one variant per thing a caller (the CLI, the REST API, a
//! worker) acts on differently. [`ClusterError::kind`] sorts them into the [`RefusalKind`]s
//! that travel in a `Rejected` frame, so a client on the other end of the wire gets the same
//! exit code and HTTP status as a caller in the coordinator's process.

use sluice_state::blob::BlobError;
use sluice_transport::wire::FrameError;

use crate::error::{InvalidSetting, JobBuildError};
use crate::status::JobStatus;

/// What kind of refusal a failed request is: what the CLI's exit code and the REST API's HTTP
/// status follow from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusalKind {
    /// An older peer sent no kind.
    Unspecified,
    /// What the request names does not exist (a job id).
    NotFound,
    /// The request does not fit the job's state (it has ended; it does not checkpoint).
    Conflict,
    /// The request itself is wrong (a bad option, an unknown job name, a bad path).
    Invalid,
    /// The coordinator or a peer cannot be reached or did not answer in time.
    Unavailable,
    /// The request was taken but carrying it out failed (a savepoint's checkpoint failed).
    Failed,
    /// The peer is not allowed to do this (its certificate names someone else, or no admin).
    Forbidden,
    /// The coordinator asked is a standby (or was deposed): ask the leader.
    NotLeader,
}

impl RefusalKind {
    /// The kind's number in a `Rejected` frame.
    pub fn to_wire(self) -> u8 {
        match self {
            RefusalKind::Unspecified => 0,
            RefusalKind::NotFound => 1,
            RefusalKind::Conflict => 2,
            RefusalKind::Invalid => 3,
            RefusalKind::Unavailable => 4,
            RefusalKind::Failed => 5,
            RefusalKind::Forbidden => 6,
            RefusalKind::NotLeader => 7,
        }
    }

    /// The kind a `Rejected` frame names (unknown numbers, from a newer peer, are unspecified).
    pub fn from_wire(n: u8) -> Self {
        match n {
            1 => RefusalKind::NotFound,
            2 => RefusalKind::Conflict,
            3 => RefusalKind::Invalid,
            4 => RefusalKind::Unavailable,
            5 => RefusalKind::Failed,
            6 => RefusalKind::Forbidden,
            7 => RefusalKind::NotLeader,
            _ => RefusalKind::Unspecified,
        }
    }
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A socket could not be bound, reached, read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the address.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer sent a frame that could not be decoded.
    #[error("{what}: {source}")]
    Frame {
        /// What was being done, with the address.
        what: String,
        /// The decoding error.
        #[source]
        source: FrameError,
    },
    /// No job has this id.
    #[error("no job with id '{id}' (known: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownJob {
        /// The id asked for.
        id: String,
        /// The ids that exist.
        known: Vec<String>,
    },
    /// The job has ended: it can no longer be cancelled, stopped or savepointed.
    #[error("job {id} has already ended: {status}")]
    JobEnded {
        /// The job.
        id: String,
        /// How it ended.
        status: JobStatus,
    },
    /// The job does not checkpoint, so it cannot take savepoints.
    #[error("job {id} does not checkpoint: savepoints need a job submitted with --checkpoint-interval")]
    NotCheckpointing {
        /// The job.
        id: String,
    },
    /// A submission's options are not valid (names the option).
    #[error(transparent)]
    BadOption(#[from] InvalidSetting),
    /// The submitted job could not be built (unknown name, bad option, invalid graph).
    #[error(transparent)]
    Build(#[from] JobBuildError),
    /// A savepoint's target directory cannot be used.
    #[error("savepoint directory {target}: {source}")]
    SavepointTarget {
        /// The directory.
        target: String,
        /// Why.
        #[source]
        source: BlobError,
    },
    /// The savepoint was taken on but did not complete.
    #[error("savepoint of job {id} failed: {reason}")]
    SavepointFailed {
        /// The job.
        id: String,
        /// Why (the checkpoint or the copy that failed).
        reason: String,
    },
    /// The job ended or restarted before the savepoint completed.
    #[error("job {id} ended (or restarted) before the savepoint completed")]
    SavepointInterrupted {
        /// The job.
        id: String,
    },
    /// The coordinator refused a request of this client (over the wire): the reason as it
    /// sent it, and what kind of refusal it was.
    #[error("{reason}")]
    Refused {
        /// What kind of refusal.
        kind: RefusalKind,
        /// Why, in the coordinator's words.
        reason: String,
    },
    /// The peer answered something this build does not expect.
    #[error("unexpected answer from {peer}: {what}")]
    Protocol {
        /// Who answered.
        peer: String,
        /// What came.
        what: String,
    },
    /// A setting of this process is invalid (names the option and the problem).
    #[error("{0}")]
    Config(String),
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The coordinator is at a limit (jobs at once, savepoints waiting): try again later.
    #[error("the coordinator is busy: {0}")]
    Busy(String),
    /// The peer proved an identity that may not do this (a worker registering under another
    /// worker's id, a non-admin submitting).
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// A request named a file outside the allowed paths.
    #[error(transparent)]
    Path(#[from] crate::paths::PathRefused),
    /// TLS could not be set up or its handshake failed.
    #[error(transparent)]
    Tls(#[from] sluice_transport::tls::TlsError),
    /// This coordinator does not lead the cluster.
    #[error("this coordinator is a standby; {}", match leader {
        Some(l) => format!("the leader is at {l}"),
        None => "no leader is known (an election is under way, or etcd cannot be reached)".to_string(),
    })]
    NotLeader {
        /// The leader's control address, if one leads.
        leader: Option<String>,
    },
    /// This coordinator lost its leadership and stopped its jobs (a successor restores them).
    #[error("this coordinator lost its leadership and stopped its jobs")]
    Deposed,
    /// The HA store refused or could not take a write.
    #[error(transparent)]
    Ha(#[from] crate::ha::HaError),
    /// A submission id already named another submission (another job or other options).
    #[error("submission id '{submission}' was used for job {job} ({name}) with other options: a retry must repeat the submission, a new submission needs a new id")]
    SubmissionReused {
        /// The id.
        submission: String,
        /// The job its first use created.
        job: String,
        /// That job's name.
        name: String,
    },
}

impl ClusterError {
    /// What kind of refusal this is (what a client's exit code and HTTP status follow).
    pub fn kind(&self) -> RefusalKind {
        match self {
            ClusterError::UnknownJob { .. } | ClusterError::Build(JobBuildError::UnknownJob { .. }) => {
                RefusalKind::NotFound
            }
            ClusterError::JobEnded { .. }
            | ClusterError::NotCheckpointing { .. }
            | ClusterError::SubmissionReused { .. } => RefusalKind::Conflict,
            ClusterError::BadOption(_)
            | ClusterError::Build(_)
            | ClusterError::SavepointTarget { .. }
            | ClusterError::Config(_) => RefusalKind::Invalid,
            ClusterError::Io { .. } | ClusterError::Timeout(_) | ClusterError::Busy(_) => RefusalKind::Unavailable,
            ClusterError::SavepointFailed { .. }
            | ClusterError::SavepointInterrupted { .. }
            | ClusterError::Frame { .. }
            | ClusterError::Protocol { .. } => RefusalKind::Failed,
            ClusterError::Refused { kind, .. } => *kind,
            ClusterError::Forbidden(_) | ClusterError::Path(_) => RefusalKind::Forbidden,
            ClusterError::Tls(e) => tls_kind(e),
            ClusterError::NotLeader { .. }
            | ClusterError::Deposed
            | ClusterError::Ha(crate::ha::HaError::Deposed(_)) => RefusalKind::NotLeader,
            ClusterError::Ha(_) => RefusalKind::Unavailable,
        }
    }

    /// The `Rejected` frame that tells a client about this error (the reason cut short if
    /// it is long: it can quote what the client sent).
    pub fn to_wire(&self) -> sluice_transport::wire::WireMessage {
        sluice_transport::wire::WireMessage::Rejected {
            reason: super::coordinator::cut(self.to_string(), 16 << 10),
            kind: self.kind().to_wire(),
        }
    }
}

/// A failed handshake is most often a certificate the peer refused; files that cannot be read
/// are a usage error; a handshake that never completed, an unreachable peer.
fn tls_kind(e: &sluice_transport::tls::TlsError) -> RefusalKind {
    use sluice_transport::tls::TlsError;
    match e {
        TlsError::Handshake { .. } | TlsError::Identity { .. } => RefusalKind::Forbidden,
        TlsError::HandshakeTimeout { .. } => RefusalKind::Unavailable,
        TlsError::Read { .. } | TlsError::Empty { .. } | TlsError::Config(_) => RefusalKind::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_wire_and_unknown_numbers_are_unspecified() {
        for k in [
            RefusalKind::Unspecified,
            RefusalKind::NotFound,
            RefusalKind::Conflict,
            RefusalKind::Invalid,
            RefusalKind::Unavailable,
            RefusalKind::Failed,
            RefusalKind::Forbidden,
            RefusalKind::NotLeader,
        ] {
            assert_eq!(RefusalKind::from_wire(k.to_wire()), k);
        }
        assert_eq!(RefusalKind::from_wire(200), RefusalKind::Unspecified);
    }

    #[test]
    fn unknown_job_lists_the_known_ids() {
        let e = ClusterError::UnknownJob {
            id: "x".into(),
            known: vec![],
        };
        assert_eq!(e.to_string(), "no job with id 'x' (known: none)");
        assert_eq!(e.kind(), RefusalKind::NotFound);
    }
}
