//! Errors of the harness library.

use sluice_core::{JobError, OperatorError};

/// Why a job could not be started or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No built-in job has this name.
    #[error("unknown job '{name}'; known jobs: {known}")]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// A job option is missing, malformed or not for this job.
    #[error("{0}")]
    BadOption(String),
    /// The job's input can't be read.
    #[error("{0}")]
    Input(OperatorError),
    /// The job failed.
    #[error(transparent)]
    Job(#[from] JobError),
}
