//! Paces a source to a number of records per second of processing time.

/// Lets a source produce `per_second` records per second on average.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    per_second: u64,
    start_ms: Option<i64>,
    emitted: u64,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u64) -> Self {
        debug_assert!(per_second > 0);
        RateLimiter {
            per_second,
            start_ms: None,
            emitted: 0,
        }
    }

    /// How many records may go now (at most `max`), or the time to wait until one may.
    pub(crate) fn allow(&mut self, now_ms: i64, max: usize) -> Result<usize, i64> {
        let start = *self.start_ms.get_or_insert(now_ms);
        let budget = ((now_ms - start).max(0) as u128 * self.per_second as u128 / 1000) as u64 + 1;
        let allowed = budget.saturating_sub(self.emitted).min(max as u64) as usize;
        if allowed == 0 {
            let next_ms = start + ((self.emitted as u128 * 1000).div_ceil(self.per_second as u128)) as i64;
            return Err(next_ms.max(now_ms + 1));
        }
        Ok(allowed)
    }

    pub(crate) fn record(&mut self, n: usize) {
        self.emitted += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_rate() {
        let mut r = RateLimiter::new(1000);
        assert_eq!(r.allow(0, 100), Ok(1));
        r.record(1);
        assert!(r.allow(0, 100).is_err());
        assert_eq!(r.allow(100, 1000), Ok(100));
        r.record(100);
        assert_eq!(r.allow(100, 1000).unwrap_err(), 101);
    }
}
