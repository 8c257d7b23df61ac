//! Which windows a record belongs to.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::InvalidSetting;

/// A window of event time `[start, end)` in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First ms in the window.
    pub start: i64,
    /// First ms after the window.
    pub end: i64,
}

impl TimeWindow {
    /// The last timestamp in the window: the window fires when the watermark reaches it, and
    /// its results carry it as their event time.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    /// Whether two windows overlap (session windows merge then). Windows that only touch do
    /// not merge: a record exactly at a session's end may arrive after that session fired, and
    /// merging it then would make the result depend on watermark timing.
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// How records are grouped into event-time windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed-size, non-overlapping windows aligned to the epoch plus `offset`.
    Tumbling {
        /// Window length in ms.
        size: i64,
        /// Shift of window starts in ms.
        offset: i64,
    },
    /// Fixed-size windows starting every `slide` ms; a record is in `size / slide` of them.
    Sliding {
        /// Window length in ms.
        size: i64,
        /// Distance between window starts in ms.
        slide: i64,
        /// Shift of window starts in ms.
        offset: i64,
    },
    /// Windows of activity per key, closed by a gap of inactivity of `gap` ms.
    Session {
        /// The inactivity gap in ms.
        gap: i64,
    },
}

impl WindowAssigner {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        WindowAssigner::Tumbling {
            size: size.as_millis() as i64,
            offset: 0,
        }
    }

    /// Sliding windows of `size` every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        WindowAssigner::Sliding {
            size: size.as_millis() as i64,
            slide: slide.as_millis() as i64,
            offset: 0,
        }
    }

    /// Session windows with inactivity gap `gap`.
    pub fn session(gap: Duration) -> Self {
        WindowAssigner::Session {
            gap: gap.as_millis() as i64,
        }
    }

    /// Whether windows of this assigner merge (sessions).
    pub fn is_merging(&self) -> bool {
        matches!(self, WindowAssigner::Session { .. })
    }

    /// Checks the sizes; the message names the bad parameter.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        match *self {
            WindowAssigner::Tumbling { size, .. } if size <= 0 => Err(InvalidSetting(format!(
                "tumbling window size must be positive, got {size} ms"
            ))),
            WindowAssigner::Sliding { size, slide, .. } if size <= 0 || slide <= 0 => Err(InvalidSetting(format!(
                "sliding window size and slide must be positive, got size {size} ms, slide {slide} ms"
            ))),
            WindowAssigner::Session { gap } if gap <= 0 => {
                Err(InvalidSetting(format!("session gap must be positive, got {gap} ms")))
            }
            _ => Ok(()),
        }
    }

    /// Calls `f` with each window that contains timestamp `ts`.
    pub fn assign(&self, ts: i64, mut f: impl FnMut(TimeWindow)) {
        match *self {
            WindowAssigner::Tumbling { size, offset } => {
                let start = ts - (ts - offset).rem_euclid(size);
                f(TimeWindow {
                    start,
                    end: start + size,
                });
            }
            WindowAssigner::Sliding { size, slide, offset } => {
                let last_start = ts - (ts - offset).rem_euclid(slide);
                let mut start = last_start;
                while start > ts - size {
                    f(TimeWindow {
                        start,
                        end: start + size,
                    });
                    start -= slide;
                }
            }
            WindowAssigner::Session { gap } => f(TimeWindow {
                start: ts,
                end: ts + gap,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(a: WindowAssigner, ts: i64) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        a.assign(ts, |w| v.push((w.start, w.end)));
        v.sort();
        v
    }

    #[test]
    fn tumbling_handles_negative_times() {
        let a = WindowAssigner::tumbling(Duration::from_millis(10));
        assert_eq!(windows(a, 0), [(0, 10)]);
        assert_eq!(windows(a, 9), [(0, 10)]);
        assert_eq!(windows(a, -1), [(-10, 0)]);
    }

    #[test]
    fn sliding_assigns_size_over_slide_windows() {
        let a = WindowAssigner::sliding(Duration::from_millis(10), Duration::from_millis(5));
        assert_eq!(windows(a, 7), [(0, 10), (5, 15)]);
        assert_eq!(windows(a, 10), [(5, 15), (10, 20)]);
    }

    #[test]
    fn zero_sizes_are_rejected_by_name() {
        assert!(WindowAssigner::tumbling(Duration::ZERO)
            .validate()
            .unwrap_err()
            .0
            .contains("tumbling"));
        assert!(WindowAssigner::session(Duration::ZERO)
            .validate()
            .unwrap_err()
            .0
            .contains("gap"));
    }
}
