//! Restart strategies: whether and when a failed job restarts (Flink's names and semantics).

use std::collections::VecDeque;
use std::time::Duration;

use crate::duration::{format_duration, parse_duration};
use crate::error::InvalidSetting;

/// What happens after a task fails.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// The job fails on the first task failure.
    None,
    /// Restart up to `attempts` times, waiting `delay` before each.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart forever, waiting `initial`, then `initial * multiplier`, ... up to `max`; the
    /// wait resets after the job ran `reset_after` without failure.
    ExponentialDelay {
        /// First wait.
        initial: Duration,
        /// Longest wait.
        max: Duration,
        /// Growth of the wait per failure.
        multiplier: f64,
        /// Failure-free run time after which the wait starts again from `initial`.
        reset_after: Duration,
    },
    /// Restart after `delay` unless more than `max_failures` failures happened within
    /// `interval`.
    FailureRate {
        /// Failures allowed within `interval`.
        max_failures: u32,
        /// The measuring window.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
}

impl RestartStrategy {
    /// Flink's default when checkpointing is on: exponential delay from 1 s to 1 min, x1.5,
    /// reset after 1 h.
    pub fn default_exponential() -> Self {
        RestartStrategy::ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 1.5,
            reset_after: Duration::from_secs(3600),
        }
    }

    /// Flink's default: exponential delay for a job that checkpoints (it can resume), none
    /// for one that does not (a restart would start over).
    pub fn default_for(checkpointing: bool) -> Self {
        if checkpointing {
            RestartStrategy::default_exponential()
        } else {
            RestartStrategy::None
        }
    }

    /// Parses `none`, `fixed-delay:attempts=3,delay=1s`,
    /// `exponential-delay:initial=1s,max=1m,multiplier=1.5,reset=1h` or
    /// `failure-rate:max-failures=3,interval=5m,delay=1s` (omitted keys take the defaults).
    pub fn parse(s: &str) -> Result<Self, InvalidSetting> {
        let (kind, params) = s.split_once(':').unwrap_or((s, ""));
        let mut kv = Vec::new();
        for part in params.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| InvalidSetting(format!("restart strategy parameter '{part}' is not key=value")))?;
            kv.push((k.trim().to_string(), v.trim().to_string()));
        }
        let take = |name: &str, kv: &mut Vec<(String, String)>| -> Option<String> {
            let i = kv.iter().position(|(k, _)| k == name)?;
            Some(kv.remove(i).1)
        };
        let dur = |v: Option<String>, default: Duration| -> Result<Duration, InvalidSetting> {
            v.map(|v| parse_duration(&v)).transpose().map(|d| d.unwrap_or(default))
        };
        let num = |name: &str, v: Option<String>, default: u32| -> Result<u32, InvalidSetting> {
            v.map(|v| {
                v.parse::<u32>().map_err(|_| {
                    InvalidSetting(format!("restart strategy parameter {name}='{v}' is not a whole number"))
                })
            })
            .transpose()
            .map(|n| n.unwrap_or(default))
        };
        let strategy = match kind.trim() {
            "none" => RestartStrategy::None,
            "fixed-delay" => RestartStrategy::FixedDelay {
                attempts: num("attempts", take("attempts", &mut kv), 3)?,
                delay: dur(take("delay", &mut kv), Duration::from_secs(1))?,
            },
            "exponential-delay" => {
                let multiplier = match take("multiplier", &mut kv) {
                    Some(m) => m
                        .parse::<f64>()
                        .ok()
                        .filter(|m| *m >= 1.0 && m.is_finite())
                        .ok_or_else(|| {
                            InvalidSetting(format!(
                                "restart strategy multiplier '{m}' must be a number of at least 1"
                            ))
                        })?,
                    None => 1.5,
                };
                RestartStrategy::ExponentialDelay {
                    initial: dur(take("initial", &mut kv), Duration::from_secs(1))?,
                    max: dur(take("max", &mut kv), Duration::from_secs(60))?,
                    multiplier,
                    reset_after: dur(take("reset", &mut kv), Duration::from_secs(3600))?,
                }
            }
            "failure-rate" => RestartStrategy::FailureRate {
                max_failures: num("max-failures", take("max-failures", &mut kv), 1)?,
                interval: dur(take("interval", &mut kv), Duration::from_secs(60))?,
                delay: dur(take("delay", &mut kv), Duration::from_secs(1))?,
            },
            other => {
                return Err(InvalidSetting(format!(
                    "unknown restart strategy '{other}' (use none, fixed-delay, exponential-delay or failure-rate)"
                )))
            }
        };
        if let Some((k, _)) = kv.first() {
            return Err(InvalidSetting(format!(
                "restart strategy '{}' has no parameter '{k}'",
                kind.trim()
            )));
        }
        Ok(strategy)
    }

    /// The strategy written the way [`RestartStrategy::parse`] reads it.
    pub fn describe(&self) -> String {
        match self {
            RestartStrategy::None => "none".into(),
            RestartStrategy::FixedDelay { attempts, delay } => {
                format!("fixed-delay:attempts={attempts},delay={}", format_duration(*delay))
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_after,
            } => format!(
                "exponential-delay:initial={},max={},multiplier={multiplier},reset={}",
                format_duration(*initial),
                format_duration(*max),
                format_duration(*reset_after)
            ),
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => format!(
                "failure-rate:max-failures={max_failures},interval={},delay={}",
                format_duration(*interval),
                format_duration(*delay)
            ),
        }
    }
}

/// Applies a strategy to a sequence of failures.
#[derive(Debug, Clone)]
pub(crate) struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    failures_ms: VecDeque<i64>,
    backoff: Option<Duration>,
    last_restart_ms: Option<i64>,
}

impl RestartTracker {
    pub(crate) fn new(strategy: RestartStrategy) -> Self {
        RestartTracker {
            strategy,
            restarts: 0,
            failures_ms: VecDeque::new(),
            backoff: None,
            last_restart_ms: None,
        }
    }

    /// A failure happened at `now_ms`: how long to wait before restarting, or `None` to give up.
    pub(crate) fn on_failure(&mut self, now_ms: i64) -> Option<Duration> {
        let delay = match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (self.restarts < *attempts).then_some(*delay),
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_after,
            } => {
                let ran_long = self
                    .last_restart_ms
                    .is_some_and(|t| now_ms - t >= reset_after.as_millis() as i64);
                let next = match self.backoff {
                    Some(b) if !ran_long => b.mul_f64(*multiplier).min(*max),
                    _ => *initial,
                };
                self.backoff = Some(next);
                Some(next)
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.failures_ms.push_back(now_ms);
                let since = now_ms - interval.as_millis() as i64;
                while self.failures_ms.front().is_some_and(|&t| t < since) {
                    self.failures_ms.pop_front();
                }
                (self.failures_ms.len() as u32 <= *max_failures).then_some(*delay)
            }
        };
        if let Some(d) = delay {
            self.restarts += 1;
            self.last_restart_ms = Some(now_ms + d.as_millis() as i64);
        }
        delay
    }

    /// Restarts so far.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_strategy_and_round_trips() {
        for s in [
            "none",
            "fixed-delay:attempts=5,delay=200ms",
            "exponential-delay:initial=10ms,max=1s,multiplier=2,reset=1m",
            "failure-rate:max-failures=2,interval=1m,delay=1s",
        ] {
            let p = RestartStrategy::parse(s).unwrap();
            assert_eq!(RestartStrategy::parse(&p.describe()).unwrap(), p, "{s}");
        }
        assert!(RestartStrategy::parse("sometimes")
            .unwrap_err()
            .0
            .contains("unknown restart strategy 'sometimes'"));
        assert!(RestartStrategy::parse("fixed-delay:tries=3")
            .unwrap_err()
            .0
            .contains("no parameter 'tries'"));
        assert!(RestartStrategy::parse("fixed-delay:attempts=x")
            .unwrap_err()
            .0
            .contains("attempts='x'"));
    }

    #[test]
    fn fixed_delay_gives_up_after_its_attempts() {
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(5),
        });
        assert_eq!(t.on_failure(0), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(10), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(20), None);
    }

    #[test]
    fn exponential_delay_grows_caps_and_resets() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(35),
            multiplier: 2.0,
            reset_after: Duration::from_millis(1000),
        });
        let waits: Vec<u128> = (0..4).map(|i| t.on_failure(i).unwrap().as_millis()).collect();
        assert_eq!(waits, [10, 20, 35, 35]);
        assert_eq!(
            t.on_failure(10_000).unwrap().as_millis(),
            10,
            "a long healthy run resets the wait"
        );
    }

    #[test]
    fn failure_rate_counts_failures_in_the_window() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_millis(100),
            delay: Duration::ZERO,
        });
        assert!(t.on_failure(0).is_some());
        assert!(t.on_failure(50).is_some());
        assert!(t.on_failure(90).is_none(), "third failure within 100 ms");
        let mut t2 = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_millis(100),
            delay: Duration::ZERO,
        });
        assert!(t2.on_failure(0).is_some());
        assert!(t2.on_failure(50).is_some());
        assert!(t2.on_failure(200).is_some(), "the early failures left the window");
    }
}
