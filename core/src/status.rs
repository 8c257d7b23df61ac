//! A job's status, with Flink's names: what the embedded runtime and the coordinator report,
//! and what the REST API and `sluice list` show.

/// A job's status, with Flink's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobStatus {
    /// Accepted, waiting for slots for its first attempt.
    Created,
    /// An attempt is deployed.
    Running,
    /// An attempt failed and is being torn down.
    Failing,
    /// Waiting to start the next attempt (restart delay, or slots).
    Restarting,
    /// A cancel was asked for and is being carried out.
    Cancelling,
    /// Cancelled.
    Canceled,
    /// Every task finished its input.
    Finished,
    /// Failed with no restart left.
    Failed,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Failing,
        JobStatus::Restarting,
        JobStatus::Cancelling,
        JobStatus::Canceled,
        JobStatus::Finished,
        JobStatus::Failed,
    ];

    /// Flink's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Failed => "FAILED",
        }
    }

    /// Parses Flink's name of a status.
    pub fn parse(s: &str) -> Option<Self> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Canceled | JobStatus::Finished | JobStatus::Failed)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
