//! Configuration of the Nexmark generator.
//!
//! Defaults are those of the reference Nexmark benchmark, so that results
//! are comparable with published numbers.

use crate::error::InvalidSetting;

/// Parameters of a Nexmark event stream. Together with an event number they
/// fully determine the event generated.
#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkConfig {
    /// Global seed; different seeds give different (but equally shaped) streams.
    pub seed: u64,
    /// Events per second of event time; sets the spacing of event timestamps.
    /// Must be > 0.
    pub first_event_rate: u64,
    /// Event time of event 0, epoch milliseconds.
    pub base_time_ms: i64,
    /// Persons per epoch of `total_proportion()` events.
    pub person_proportion: u64,
    /// Auctions per epoch of `total_proportion()` events.
    pub auction_proportion: u64,
    /// Bids per epoch of `total_proportion()` events.
    pub bid_proportion: u64,
    /// Sellers and bidders are drawn from this many most recent persons.
    pub num_active_people: u64,
    /// Bids are drawn over this many most recent auctions; also sets the
    /// average auction length so that about this many are open at once.
    pub num_in_flight_auctions: u64,
    /// A bid goes to the hot auction with probability `1 - 1/ratio`.
    pub hot_auction_ratio: u64,
    /// An auction's seller is the hot seller with probability `1 - 1/ratio`.
    pub hot_sellers_ratio: u64,
    /// A bid's bidder is the hot bidder with probability `1 - 1/ratio`.
    pub hot_bidders_ratio: u64,
    /// Target average size of a person record, bytes (approximate).
    pub avg_person_byte_size: u64,
    /// Target average size of an auction record, bytes (approximate).
    pub avg_auction_byte_size: u64,
    /// Target average size of a bid record, bytes (approximate).
    pub avg_bid_byte_size: u64,
    /// Event timestamps are permuted within groups of this many consecutive
    /// event numbers to simulate out-of-order arrival; 1 means in order.
    pub out_of_order_group_size: u64,
}

impl Default for NexmarkConfig {
    /// The reference Nexmark defaults.
    fn default() -> Self {
        Self {
            seed: 0,
            first_event_rate: 10_000,
            // 2015-07-15T00:00:00Z, the reference benchmark's base time.
            base_time_ms: 1_436_918_400_000,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
            out_of_order_group_size: 1,
        }
    }
}

impl NexmarkConfig {
    /// Checks that the generator can run with this configuration; the error
    /// message names the offending field.
    ///
    /// Rejected: a zero rate (timestamps would be undefined), a zero or
    /// overflowing total proportion (no epochs), no persons (auctions and
    /// bids need sellers and bidders), bids without auctions (bids need an
    /// auction), and zeros in the pools, ratios and group size (they are used
    /// as bounds of uniform draws or as divisors).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.first_event_rate == 0 {
            return Err(InvalidSetting("first_event_rate must be > 0".into()));
        }
        let total = self
            .person_proportion
            .checked_add(self.auction_proportion)
            .and_then(|s| s.checked_add(self.bid_proportion));
        match total {
            None => {
                return Err(InvalidSetting(
                    "person_proportion + auction_proportion + bid_proportion overflows u64".into(),
                ));
            }
            Some(0) => {
                return Err(InvalidSetting(
                    "total proportion (person_proportion + auction_proportion + bid_proportion) must be > 0".into(),
                ));
            }
            Some(_) => {}
        }
        if self.person_proportion == 0 {
            return Err(InvalidSetting(
                "person_proportion must be > 0 (auctions and bids need persons)".into(),
            ));
        }
        if self.bid_proportion > 0 && self.auction_proportion == 0 {
            return Err(InvalidSetting(
                "auction_proportion must be > 0 when bid_proportion > 0 (bids need auctions)".into(),
            ));
        }
        let positive = [
            ("num_active_people", self.num_active_people),
            ("num_in_flight_auctions", self.num_in_flight_auctions),
            ("hot_auction_ratio", self.hot_auction_ratio),
            ("hot_sellers_ratio", self.hot_sellers_ratio),
            ("hot_bidders_ratio", self.hot_bidders_ratio),
            ("out_of_order_group_size", self.out_of_order_group_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(InvalidSetting(format!("{name} must be > 0")));
            }
        }
        Ok(())
    }

    /// Microseconds of event time between consecutive events
    /// (`1_000_000 / first_event_rate`); infinite if the rate is 0, which
    /// `validate` rejects.
    pub fn inter_event_delay_us(&self) -> f64 {
        1_000_000.0 / self.first_event_rate as f64
    }

    /// Length of one epoch: `person_proportion + auction_proportion +
    /// bid_proportion` (saturating; `validate` rejects overflow).
    pub fn total_proportion(&self) -> u64 {
        self.person_proportion
            .saturating_add(self.auction_proportion)
            .saturating_add(self.bid_proportion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_reference_values_and_valid() {
        let c = NexmarkConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.total_proportion(), 50);
        assert_eq!(c.inter_event_delay_us(), 100.0);
        assert_eq!(c.base_time_ms, 1_436_918_400_000);
    }

    #[test]
    fn zero_rate_rejected_naming_field() {
        let c = NexmarkConfig {
            first_event_rate: 0,
            ..Default::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.0.contains("first_event_rate"), "{err}");
    }

    #[test]
    fn other_invalid_configs_rejected_naming_field() {
        let cases: Vec<(NexmarkConfig, &str)> = vec![
            (
                NexmarkConfig {
                    person_proportion: 0,
                    auction_proportion: 0,
                    bid_proportion: 0,
                    ..Default::default()
                },
                "proportion",
            ),
            (
                NexmarkConfig {
                    person_proportion: 0,
                    ..Default::default()
                },
                "person_proportion",
            ),
            (
                NexmarkConfig {
                    auction_proportion: 0,
                    ..Default::default()
                },
                "auction_proportion",
            ),
            (
                NexmarkConfig {
                    bid_proportion: u64::MAX,
                    ..Default::default()
                },
                "overflows",
            ),
            (
                NexmarkConfig {
                    num_active_people: 0,
                    ..Default::default()
                },
                "num_active_people",
            ),
            (
                NexmarkConfig {
                    num_in_flight_auctions: 0,
                    ..Default::default()
                },
                "num_in_flight_auctions",
            ),
            (
                NexmarkConfig {
                    hot_auction_ratio: 0,
                    ..Default::default()
                },
                "hot_auction_ratio",
            ),
            (
                NexmarkConfig {
                    hot_sellers_ratio: 0,
                    ..Default::default()
                },
                "hot_sellers_ratio",
            ),
            (
                NexmarkConfig {
                    hot_bidders_ratio: 0,
                    ..Default::default()
                },
                "hot_bidders_ratio",
            ),
            (
                NexmarkConfig {
                    out_of_order_group_size: 0,
                    ..Default::default()
                },
                "out_of_order_group_size",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.0.contains(field), "expected {field} in {err}");
        }
        // Persons-only streams are fine: nothing needs an auction.
        let persons_only = NexmarkConfig {
            auction_proportion: 0,
            bid_proportion: 0,
            ..Default::default()
        };
        assert_eq!(persons_only.validate(), Ok(()));
    }
}
