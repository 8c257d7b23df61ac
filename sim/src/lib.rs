//! Deterministic simulation of Sluice under madsim.
//!
//! Build and run with `RUSTFLAGS="--cfg madsim" cargo test -p sluice-sim`. The simulation runs
//! the real runtime of `sluice-core`; madsim replaces tokio's time, scheduling and network and
//! seeds every source of randomness, so a run is a pure function of its seed
//! (`MADSIM_TEST_SEED`). Outside `cfg(madsim)` this crate only offers the helpers below, which
//! then run on real tokio.

pub mod broken_sink;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod ha;
#[cfg(madsim)]
pub mod impostor;
pub mod keyed_count;
#[cfg(madsim)]
pub mod tiered;
pub mod windowed_count;

use sluice_core::{ExecutionConfig, JobError, JobResult, StreamEnv};

/// Runs a job built by `build` to its end with settings suited to simulation: a pinned
/// processing-time clock so results don't depend on the host's date, and small batches and
/// channels so backpressure and interleavings show up in small jobs.
pub async fn run_job(build: impl FnOnce(&StreamEnv)) -> Result<JobResult, JobError> {
    let env = StreamEnv::new("sim");
    build(&env);
    let config = ExecutionConfig {
        batch_size: 16,
        channel_capacity: 2,
        clock: Some(sluice_core::Clock::starting_at(1_700_000_000_000)),
        ..ExecutionConfig::default()
    };
    env.execute(config).await
}
