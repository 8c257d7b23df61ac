//! Watermark strategies: how a source assigns event timestamps and derives watermarks.

use std::sync::Arc;
use std::time::Duration;

type TimestampFn<T> = Arc<dyn Fn(&T) -> i64 + Send + Sync>;

/// How a source stamps its records with event time and how far it lets them be out of order.
///
/// The watermark a source emits after a batch is `max_timestamp - max_out_of_orderness - 1`:
/// a promise that no later record has a timestamp at or below it. A source subtask that has
/// produced nothing for the idle timeout is marked idle, so its stale watermark does not hold
/// back the rest of the job.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::WatermarkStrategy;
/// let s = WatermarkStrategy::<(i64, String)>::for_bounded_out_of_orderness(Duration::from_secs(2))
///     .with_timestamp_assigner(|r| r.0)
///     .with_idleness(Duration::from_secs(30));
/// assert_eq!(s.max_out_of_orderness_ms(), 2000);
/// ```
pub struct WatermarkStrategy<T> {
    pub(crate) timestamps: Option<TimestampFn<T>>,
    pub(crate) max_out_of_orderness_ms: i64,
    pub(crate) idle_timeout_ms: Option<i64>,
    pub(crate) emits_watermarks: bool,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        WatermarkStrategy {
            timestamps: self.timestamps.clone(),
            max_out_of_orderness_ms: self.max_out_of_orderness_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            emits_watermarks: self.emits_watermarks,
        }
    }
}

impl<T> std::fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("has_timestamps", &self.timestamps.is_some())
            .field("max_out_of_orderness_ms", &self.max_out_of_orderness_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("emits_watermarks", &self.emits_watermarks)
            .finish()
    }
}

impl<T> WatermarkStrategy<T> {
    /// No event time: records carry no timestamp and no watermark is emitted until the input
    /// ends. Fine for jobs without event-time windows or timers.
    pub fn no_watermarks() -> Self {
        WatermarkStrategy {
            timestamps: None,
            max_out_of_orderness_ms: 0,
            idle_timeout_ms: None,
            emits_watermarks: false,
        }
    }

    /// Records may arrive up to `bound` later than a record with a higher timestamp.
    pub fn for_bounded_out_of_orderness(bound: Duration) -> Self {
        WatermarkStrategy {
            timestamps: None,
            max_out_of_orderness_ms: bound.as_millis() as i64,
            idle_timeout_ms: None,
            emits_watermarks: true,
        }
    }

    /// Timestamps never decrease within a source subtask.
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness(Duration::ZERO)
    }

    /// How to read a record's event time (ms since the epoch).
    pub fn with_timestamp_assigner(mut self, f: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        self.timestamps = Some(Arc::new(f));
        self
    }

    /// Marks a source subtask idle after `timeout` without records.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout_ms = Some(timeout.as_millis() as i64);
        self
    }

    /// The out-of-orderness bound in ms.
    pub fn max_out_of_orderness_ms(&self) -> i64 {
        self.max_out_of_orderness_ms
    }
}
