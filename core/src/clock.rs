//! The one seam through which Sluice reads the wall clock.
//!
//! Processing time is read here and nowhere else. Elapsed time comes from tokio's clock, which
//! madsim replaces in simulation, so processing-time timers and source rates are deterministic
//! under a seed.

use std::time::Duration;

/// Processing time for a job: milliseconds since the Unix epoch, advancing with tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_wall_ms: i64,
    base: tokio::time::Instant,
}

impl Clock {
    /// A clock that starts at the current wall-clock time.
    pub fn system() -> Self {
        // The single allowed read of the system clock: it anchors processing time to the epoch.
        // Under madsim this call is intercepted and returns simulated time.
        #[allow(clippy::disallowed_methods)]
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock::starting_at(wall)
    }

    /// A clock that reads `wall_ms` now (tests and simulations pin it).
    pub fn starting_at(wall_ms: i64) -> Self {
        Clock {
            base_wall_ms: wall_ms,
            base: tokio::time::Instant::now(),
        }
    }

    /// The current processing time in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.base_wall_ms + self.base.elapsed().as_millis() as i64
    }

    /// Time elapsed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.base.elapsed()
    }

    /// The tokio instant at which the clock reads `wall_ms` (for sleeping until a timer).
    pub fn instant_at(&self, wall_ms: i64) -> tokio::time::Instant {
        let delta = (wall_ms - self.base_wall_ms).max(0) as u64;
        self.base + Duration::from_millis(delta)
    }
}
