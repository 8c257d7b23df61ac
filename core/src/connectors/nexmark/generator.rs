//! Deterministic, seeded Nexmark event generator.
//!
//! Semantics follow the reference Nexmark benchmark (Apache Beam / Flink
//! nexmark): event numbers are cut into epochs of `total_proportion()`
//! events, each epoch holding persons first, then auctions, then bids
//! (1:3:46 by default); ids are dense counters per kind; sellers and bidders
//! are drawn from recent persons, bids from recent auctions, with "hot"
//! sellers/bidders/auctions skewing the key distribution.
//!
//! Every event is a pure function of `(config, event_number)`: it is drawn
//! from its own [`SplitMix64`] seeded with `mix(seed, event_number)`, and the
//! "how many persons/auctions exist so far" state is computed arithmetically
//! from the event number rather than carried along. So parallel source
//! subtasks can each generate a disjoint subset of event numbers (e.g.
//! `n % p == subtask`), and a source can resume from any offset.
//!
//! The values drawn are *not* bit-identical to the reference Java generator
//! (different PRNG and draw order); only the shape of the stream matches.

use super::config::NexmarkConfig;
use super::model::{Auction, Bid, Event, Person};
use sluice_state::rng::{mix, SplitMix64};

use crate::error::InvalidSetting;

/// Id of the first person; person ids are `FIRST_PERSON_ID + k` for the k-th person.
pub const FIRST_PERSON_ID: u64 = 1000;
/// Id of the first auction; auction ids are `FIRST_AUCTION_ID + k` for the k-th auction.
pub const FIRST_AUCTION_ID: u64 = 1000;
/// Lowest auction category id; categories are `FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + NUM_CATEGORIES`.
pub const FIRST_CATEGORY_ID: u64 = 10;
/// Number of distinct auction categories.
pub const NUM_CATEGORIES: u64 = 5;
/// How far past the newest person a seller/bidder draw may reach, so that
/// some records reference a person whose registration is still to come (as
/// in the reference, to exercise joins with late-arriving keys).
pub const PERSON_ID_LEAD: u64 = 10;
/// How far past the newest auction a bid's auction draw may reach (see
/// [`PERSON_ID_LEAD`]).
pub const AUCTION_ID_LEAD: u64 = 10;
/// Hot sellers are the newest person id rounded down to a multiple of this.
pub const HOT_SELLER_RATIO_DIVISOR: u64 = 100;
/// The hot auction is the newest auction id rounded down to a multiple of this.
pub const HOT_AUCTION_RATIO_DIVISOR: u64 = 100;
/// Hot bidders are the newest person id rounded down to a multiple of this, plus 1.
pub const HOT_BIDDER_RATIO_DIVISOR: u64 = 100;

/// Two-letter state codes a person can live in.
pub const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
/// Cities a person can live in.
pub const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
/// First names a person's name is built from.
pub const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
/// Last names a person's name is built from.
pub const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
/// Referral channels a bid can arrive through; a bid's URL carries the
/// channel's index here as `channel_id`.
pub const BID_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// 1/golden ratio in millionths: the out-of-order permutation's multiplier
/// is the number coprime with the group size nearest below `g * 0.618034`,
/// which scatters neighbouring positions far apart.
const INVERSE_GOLDEN_MILLIONTHS: u128 = 618_034;

/// Bytes counted for each numeric field when estimating a record's size
/// (the size of its binary encoding).
const NUMERIC_FIELD_BYTES: u64 = 8;

/// What an event number denotes, with the kind-local base-0 index for
/// persons and auctions (the ids they get).
enum Slot {
    Person { base0: u64 },
    Auction { base0: u64 },
    Bid { epoch: u64 },
}

/// Generates Nexmark events by number. Cheap to clone; holds only the
/// configuration, so any number of copies generate identical events.
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    /// Multiplier `a` of the out-of-order permutation `i -> (a*i + g/2) % g`,
    /// derived from the config once because finding it takes a gcd search.
    out_of_order_multiplier: u64,
}

impl NexmarkGenerator {
    /// Creates a generator for `config`.
    ///
    /// # Panics
    /// If `config.validate()` fails (the message names the field); use
    /// [`NexmarkGenerator::try_new`] to handle that as an error.
    pub fn new(config: NexmarkConfig) -> Self {
        match Self::try_new(config) {
            Ok(generator) => generator,
            Err(message) => panic!("invalid NexmarkConfig: {message}"),
        }
    }

    /// Creates a generator for `config`, or returns `config.validate()`'s
    /// error. For sources that take user-supplied configuration.
    pub fn try_new(config: NexmarkConfig) -> Result<Self, InvalidSetting> {
        config.validate()?;
        let out_of_order_multiplier = out_of_order_multiplier(config.out_of_order_group_size);
        Ok(Self {
            config,
            out_of_order_multiplier,
        })
    }

    /// The configuration this generator was built with.
    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// Event time (epoch ms) of the event with this number.
    ///
    /// `base_time_ms + floor(m * inter_event_delay_us / 1000)`, computed
    /// exactly in integers as `floor(m * 1000 / first_event_rate)`, where `m`
    /// is the event number after the out-of-order permutation: with
    /// `g = out_of_order_group_size` and `i = n % g`,
    /// `m = (n / g) * g + (a * i + g / 2) % g`, `a` being the number coprime
    /// with `g` nearest below `0.618 * g` (at least 1). Each group of `g`
    /// consecutive event numbers thus receives exactly the group's own
    /// timestamps, shuffled, so disorder is bounded by one group's time
    /// span. (The reference uses `(n * 953) % g`, which is the identity for
    /// every `g` dividing 952, e.g. 2, 4, 7, 8, and collapses for multiples
    /// of 953; this affine form permutes for every `g >= 2`.) With the
    /// default `g = 1` timestamps are non-decreasing.
    pub fn timestamp_ms(&self, event_number: u64) -> i64 {
        let adjusted = self.out_of_order_event_number(event_number);
        let offset = self.time_offset_ms(u128::from(adjusted));
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.config.base_time_ms.saturating_add(offset)
    }

    /// The event with this number: a pure function of (config, event_number). Event numbers start at 0.
    pub fn event(&self, event_number: u64) -> Event {
        let mut rng = SplitMix64::new(mix(self.config.seed, event_number));
        let date_time = self.timestamp_ms(event_number);
        match self.slot(event_number) {
            Slot::Person { base0 } => Event::Person(self.person(base0, date_time, &mut rng)),
            Slot::Auction { base0 } => Event::Auction(self.auction(event_number, base0, date_time, &mut rng)),
            Slot::Bid { epoch } => Event::Bid(self.bid(event_number, epoch, date_time, &mut rng)),
        }
    }

    /// Base-0 id of the newest person generated at or before this event
    /// (the event's own id if it is a person). Always defined, because every
    /// epoch starts with at least one person (`validate` ensures
    /// `person_proportion > 0`).
    pub fn last_base0_person_id(&self, event_number: u64) -> u64 {
        let (epoch, offset) = self.locate(event_number);
        let pp = self.config.person_proportion;
        epoch * pp + offset.min(pp - 1)
    }

    /// Base-0 id of the newest auction generated at or before this event
    /// (the event's own id if it is an auction), or `None` if no auction
    /// exists yet (the persons of epoch 0, or a stream without auctions).
    pub fn last_base0_auction_id(&self, event_number: u64) -> Option<u64> {
        let (epoch, offset) = self.locate(event_number);
        let pp = self.config.person_proportion;
        let ap = self.config.auction_proportion;
        if ap == 0 {
            None
        } else if offset < pp {
            // Persons come first in an epoch: the newest auction is the last
            // one of the previous epoch.
            (epoch > 0).then(|| epoch * ap - 1)
        } else if offset < pp + ap {
            Some(epoch * ap + (offset - pp))
        } else {
            // Bids come after all of this epoch's auctions.
            Some(epoch * ap + ap - 1)
        }
    }

    /// Splits an event number into (epoch, offset within the epoch).
    fn locate(&self, event_number: u64) -> (u64, u64) {
        let total = self.config.total_proportion();
        (event_number / total, event_number % total)
    }

    fn slot(&self, event_number: u64) -> Slot {
        let (epoch, offset) = self.locate(event_number);
        let pp = self.config.person_proportion;
        let ap = self.config.auction_proportion;
        if offset < pp {
            Slot::Person {
                base0: epoch * pp + offset,
            }
        } else if offset < pp + ap {
            Slot::Auction {
                base0: epoch * ap + (offset - pp),
            }
        } else {
            Slot::Bid { epoch }
        }
    }

    /// The reference out-of-order permutation of event numbers (see
    /// [`NexmarkGenerator::timestamp_ms`]).
    fn out_of_order_event_number(&self, event_number: u64) -> u64 {
        let group = self.config.out_of_order_group_size;
        if group <= 1 {
            return event_number;
        }
        let base = (event_number / group) * group;
        let position = u128::from(event_number % group);
        // u128 so that a * i + g / 2 cannot overflow; the result is < g.
        let offset =
            ((u128::from(self.out_of_order_multiplier) * position + u128::from(group / 2)) % u128::from(group)) as u64;
        base + offset
    }

    /// Milliseconds of event time from event 0 to event `m` (unpermuted),
    /// exact: `floor(m * 1000 / first_event_rate)`.
    fn time_offset_ms(&self, m: u128) -> u128 {
        m * 1000 / u128::from(self.config.first_event_rate)
    }

    /// Draws a seller/bidder among the `num_active_people` newest persons,
    /// reaching up to `PERSON_ID_LEAD` ids into the future.
    fn next_base0_person_id(&self, event_number: u64, rng: &mut SplitMix64) -> u64 {
        let num_people = self.last_base0_person_id(event_number) + 1;
        let active = num_people.min(self.config.num_active_people);
        num_people - active + rng.next_below(active + PERSON_ID_LEAD)
    }

    /// Draws a bid's auction among the `num_in_flight_auctions` newest
    /// auctions (of which there are `num_auctions`), reaching up to
    /// `AUCTION_ID_LEAD` ids into the future.
    fn next_base0_auction_id(&self, num_auctions: u64, rng: &mut SplitMix64) -> u64 {
        let active = num_auctions.min(self.config.num_in_flight_auctions);
        num_auctions - active + rng.next_below(active + AUCTION_ID_LEAD)
    }

    /// Auction length in ms: uniform in `[1, 2 * horizon]` (at least 1),
    /// where `horizon` is the event time it takes to generate
    /// `num_in_flight_auctions` more auctions, i.e. the event-time span of
    /// `num_in_flight_auctions * total_proportion / auction_proportion`
    /// events from this one. The mean is about `horizon`, so roughly
    /// `num_in_flight_auctions` auctions are open at any time, as in the
    /// reference. Defaults: 1666 events = 166 ms, so lengths in 1..=333 ms.
    fn next_auction_length_ms(&self, event_number: u64, rng: &mut SplitMix64) -> i64 {
        let c = &self.config;
        let events_for_auctions =
            u128::from(c.num_in_flight_auctions) * u128::from(c.total_proportion()) / u128::from(c.auction_proportion);
        let now = u128::from(event_number);
        let horizon = self.time_offset_ms(now + events_for_auctions) - self.time_offset_ms(now);
        let span = u64::try_from(horizon.saturating_mul(2)).unwrap_or(u64::MAX).max(1);
        let length = 1 + rng.next_below(span);
        i64::try_from(length).unwrap_or(i64::MAX)
    }

    fn person(&self, base0: u64, date_time: i64, rng: &mut SplitMix64) -> Person {
        let name = format!("{} {}", pick(rng, &FIRST_NAMES), pick(rng, &LAST_NAMES));
        let email_address = format!("{}@{}.com", next_string(rng, 3, 10), next_string(rng, 3, 7));
        let credit_card = format!(
            "{:04} {:04} {:04} {:04}",
            rng.next_below(10_000),
            rng.next_below(10_000),
            rng.next_below(10_000),
            rng.next_below(10_000)
        );
        let city = pick(rng, &US_CITIES).to_string();
        let state = pick(rng, &US_STATES).to_string();
        let mut person = Person {
            id: FIRST_PERSON_ID + base0,
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time,
            extra: String::new(),
        };
        person.extra = next_extra(rng, person_size(&person), self.config.avg_person_byte_size);
        person
    }

    fn auction(&self, event_number: u64, base0: u64, date_time: i64, rng: &mut SplitMix64) -> Auction {
        let c = &self.config;
        let seller_base0 = if rng.next_below(c.hot_sellers_ratio) > 0 {
            (self.last_base0_person_id(event_number) / HOT_SELLER_RATIO_DIVISOR) * HOT_SELLER_RATIO_DIVISOR
        } else {
            self.next_base0_person_id(event_number, rng)
        };
        let item_name = next_string(rng, 3, 20);
        let description = next_string(rng, 10, 100);
        let initial_bid = next_price(rng);
        let reserve = initial_bid + next_price(rng);
        let expires = date_time.saturating_add(self.next_auction_length_ms(event_number, rng));
        let category = FIRST_CATEGORY_ID + rng.next_below(NUM_CATEGORIES);
        let mut auction = Auction {
            id: FIRST_AUCTION_ID + base0,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time,
            expires,
            seller: FIRST_PERSON_ID + seller_base0,
            category,
            extra: String::new(),
        };
        auction.extra = next_extra(rng, auction_size(&auction), c.avg_auction_byte_size);
        auction
    }

    fn bid(&self, event_number: u64, epoch: u64, date_time: i64, rng: &mut SplitMix64) -> Bid {
        let c = &self.config;
        // A bid slot exists only if auction_proportion > 0 (validate), and
        // all of this epoch's auctions precede its bids.
        let last_auction = epoch * c.auction_proportion + c.auction_proportion - 1;
        let auction_base0 = if rng.next_below(c.hot_auction_ratio) > 0 {
            (last_auction / HOT_AUCTION_RATIO_DIVISOR) * HOT_AUCTION_RATIO_DIVISOR
        } else {
            self.next_base0_auction_id(last_auction + 1, rng)
        };
        let bidder_base0 = if rng.next_below(c.hot_bidders_ratio) > 0 {
            (self.last_base0_person_id(event_number) / HOT_BIDDER_RATIO_DIVISOR) * HOT_BIDDER_RATIO_DIVISOR + 1
        } else {
            self.next_base0_person_id(event_number, rng)
        };
        let price = next_price(rng);
        let channel_index = rng.next_below(BID_CHANNELS.len() as u64);
        let url = format!(
            "https://www.nexmark.com/{}/{}/item.htm?query=1&channel_id={}",
            next_string(rng, 3, 5),
            next_string(rng, 3, 5),
            channel_index
        );
        let mut bid = Bid {
            auction: FIRST_AUCTION_ID + auction_base0,
            bidder: FIRST_PERSON_ID + bidder_base0,
            price,
            channel: BID_CHANNELS[channel_index as usize].to_string(),
            url,
            date_time,
            extra: String::new(),
        };
        bid.extra = next_extra(rng, bid_size(&bid), c.avg_bid_byte_size);
        bid
    }
}

/// The multiplier `a` of the out-of-order permutation for group size `g`:
/// the largest `a <= 0.618034 * g` with `gcd(a, g) == 1` (1 if none), so
/// that `i -> (a * i + c) % g` is a bijection of `0..g`.
fn out_of_order_multiplier(group: u64) -> u64 {
    let mut a = (u128::from(group) * INVERSE_GOLDEN_MILLIONTHS / 1_000_000) as u64;
    while a > 1 && gcd(a, group) != 1 {
        a -= 1;
    }
    a.max(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Estimated size in bytes of a person: 8 per numeric field plus the byte
/// length of each string (a binary encoding's size, ignoring framing).
fn person_size(p: &Person) -> u64 {
    2 * NUMERIC_FIELD_BYTES
        + [&p.name, &p.email_address, &p.credit_card, &p.city, &p.state, &p.extra]
            .iter()
            .map(|s| s.len() as u64)
            .sum::<u64>()
}

/// Estimated size in bytes of an auction (see [`person_size`]).
fn auction_size(a: &Auction) -> u64 {
    7 * NUMERIC_FIELD_BYTES + (a.item_name.len() + a.description.len() + a.extra.len()) as u64
}

/// Estimated size in bytes of a bid (see [`person_size`]).
fn bid_size(b: &Bid) -> u64 {
    4 * NUMERIC_FIELD_BYTES + (b.channel.len() + b.url.len() + b.extra.len()) as u64
}

/// Picks one element uniformly.
fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
    items[rng.next_below(items.len() as u64) as usize]
}

/// A random lowercase string whose length is uniform in `[min_len, max_len]`.
fn next_string(rng: &mut SplitMix64, min_len: u64, max_len: u64) -> String {
    let len = min_len + rng.next_below(max_len - min_len + 1);
    next_exact_string(rng, len as usize)
}

/// A random lowercase string of exactly `len` letters. Draws 12 letters per
/// PRNG call (26^12 < 2^64) to keep padding cheap; each letter is exactly
/// uniform because the 12-letter block is drawn uniformly.
fn next_exact_string(rng: &mut SplitMix64, len: usize) -> String {
    const LETTERS_PER_DRAW: usize = 12;
    const BLOCK: u64 = 26u64.pow(LETTERS_PER_DRAW as u32);
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut block = rng.next_below(BLOCK);
        for _ in 0..LETTERS_PER_DRAW.min(len - out.len()) {
            out.push(char::from(b'a' + (block % 26) as u8));
            block /= 26;
        }
    }
    out
}

/// Padding that brings a record of estimated size `current` to `desired`
/// bytes on average: if the record is already at least that big, none;
/// otherwise, with `remaining = desired - current` and
/// `delta = round(remaining / 5)`, a length uniform in
/// `[remaining - delta, remaining + delta)` (mean `remaining - 1/2`). Approximate by design, as in the
/// reference: the target is an average, not an exact size.
fn next_extra(rng: &mut SplitMix64, current: u64, desired: u64) -> String {
    if current >= desired {
        return String::new();
    }
    let remaining = desired - current;
    let delta = (remaining * 2 + 5) / 10;
    let len = remaining - delta + if delta == 0 { 0 } else { rng.next_below(2 * delta) };
    next_exact_string(rng, len as usize)
}

/// A price as in the reference, `round(10^(6u) * 100)` with `u` uniform in
/// `[0,1)`: log-uniform over `[100, 10^8]`.
fn next_price(rng: &mut SplitMix64) -> u64 {
    (pow10(rng.next_f64() * 6.0) * 100.0).round() as u64
}

/// `10^x` for `x` in `[0, 6)` using only IEEE-754 basic operations (each
/// exactly rounded), so the result is bit-identical on every platform and
/// Rust version; `f64::powf` defers to the platform's libm, which may differ
/// in the last bit and so, rarely, change a rounded price.
///
/// Splits `x = k + f`, takes `10^k` from a table and computes `10^f =
/// exp(f ln 10)` as `exp(y / 8)^8` with an 18-term Taylor series for the
/// small argument (`y / 8 < 0.29`); relative error is a few ulps.
fn pow10(x: f64) -> f64 {
    const POWERS: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
    let k = x.floor();
    let f = x - k;
    let y = f * std::f64::consts::LN_10 / 8.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=18 {
        term *= y / f64::from(i);
        sum += term;
    }
    let sum = sum * sum;
    let sum = sum * sum;
    let sum = sum * sum;
    let index = (k.max(0.0) as usize).min(POWERS.len() - 1);
    sum * POWERS[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_generator() -> NexmarkGenerator {
        NexmarkGenerator::new(NexmarkConfig::default())
    }

    #[test]
    fn mix_is_exactly_1_3_46_over_50_000_events() {
        let g = default_generator();
        let (mut persons, mut auctions, mut bids) = (0u64, 0u64, 0u64);
        for n in 0..50_000 {
            match g.event(n) {
                Event::Person(_) => persons += 1,
                Event::Auction(_) => auctions += 1,
                Event::Bid(_) => bids += 1,
            }
        }
        assert_eq!((persons, auctions, bids), (1_000, 3_000, 46_000));
    }

    #[test]
    fn same_seed_and_number_give_same_event() {
        let a = default_generator();
        let b = default_generator();
        for n in [0, 1, 2, 3, 4, 49, 50, 12_345, 1 << 40] {
            assert_eq!(a.event(n), b.event(n));
        }
    }

    #[test]
    fn different_seed_gives_different_events() {
        let a = default_generator();
        let b = NexmarkGenerator::new(NexmarkConfig {
            seed: 1,
            ..Default::default()
        });
        for n in 0..1_000 {
            assert_ne!(a.event(n), b.event(n), "event {n} equal across seeds");
        }
    }

    #[test]
    fn event_independent_of_generation_order() {
        let g = default_generator();
        let forward: Vec<Event> = (0..1_000).map(|n| g.event(n)).collect();
        let mut backward: Vec<Event> = (0..1_000).rev().map(|n| g.event(n)).collect();
        backward.reverse();
        assert_eq!(forward, backward);
        // Parallel subtasks generating n % 3 == s interleave to the same stream.
        let other = g.clone();
        for s in 0..3u64 {
            for n in (s..1_000).step_by(3) {
                assert_eq!(other.event(n), forward[n as usize]);
            }
        }
    }

    #[test]
    fn ids_are_dense() {
        let g = default_generator();
        let (mut persons, mut auctions) = (0u64, 0u64);
        for n in 0..50_000 {
            match g.event(n) {
                Event::Person(p) => {
                    assert_eq!(p.id, FIRST_PERSON_ID + persons);
                    assert_eq!(g.last_base0_person_id(n), persons);
                    persons += 1;
                }
                Event::Auction(a) => {
                    assert_eq!(a.id, FIRST_AUCTION_ID + auctions);
                    assert_eq!(g.last_base0_auction_id(n), Some(auctions));
                    auctions += 1;
                }
                Event::Bid(_) => {
                    assert_eq!(g.last_base0_person_id(n), persons - 1);
                    assert_eq!(g.last_base0_auction_id(n), Some(auctions - 1));
                }
            }
        }
        assert_eq!(g.last_base0_auction_id(0), None);
        assert_eq!(g.last_base0_auction_id(50), Some(2));
    }

    #[test]
    fn references_stay_within_generated_ids_plus_lead() {
        let g = default_generator();
        let mut max_person = None::<u64>;
        let mut max_auction = None::<u64>;
        let (mut bids, mut hot_auction_bids) = (0u64, 0u64);
        for n in 0..50_000 {
            match g.event(n) {
                Event::Person(p) => max_person = Some(p.id),
                Event::Auction(a) => {
                    max_auction = Some(a.id);
                    let newest = max_person.expect("persons precede auctions");
                    assert!(a.seller >= FIRST_PERSON_ID);
                    assert!(a.seller <= newest + PERSON_ID_LEAD, "event {n}: {a:?}");
                    assert!(a.expires > a.date_time);
                    assert!(a.reserve > a.initial_bid);
                    assert!((100..=100_000_000).contains(&a.initial_bid));
                }
                Event::Bid(b) => {
                    let newest_person = max_person.expect("persons precede bids");
                    let newest_auction = max_auction.expect("auctions precede bids");
                    assert!(b.auction >= FIRST_AUCTION_ID);
                    assert!(b.auction <= newest_auction + AUCTION_ID_LEAD, "event {n}: {b:?}");
                    assert!(b.bidder >= FIRST_PERSON_ID);
                    assert!(b.bidder <= newest_person + PERSON_ID_LEAD, "event {n}: {b:?}");
                    assert!((100..=100_000_000).contains(&b.price));
                    let index = BID_CHANNELS
                        .iter()
                        .position(|c| *c == b.channel)
                        .expect("channel from BID_CHANNELS");
                    assert!(b.url.starts_with("https://www.nexmark.com/"));
                    assert!(b.url.ends_with(&format!("&channel_id={index}")));
                    bids += 1;
                    let hot = FIRST_AUCTION_ID + ((newest_auction - FIRST_AUCTION_ID) / 100) * 100;
                    if b.auction == hot {
                        hot_auction_bids += 1;
                    }
                }
            }
        }
        // hot_auction_ratio 2: at least half of the bids go to the hot auction.
        let share = hot_auction_bids as f64 / bids as f64;
        assert!((0.48..0.56).contains(&share), "hot share {share}");
    }

    #[test]
    fn timestamps_non_decreasing_and_spaced_by_rate() {
        let g = default_generator();
        let base = g.config().base_time_ms;
        let mut previous = i64::MIN;
        let mut per_ms = std::collections::BTreeMap::new();
        for n in 0..50_000 {
            let t = g.timestamp_ms(n);
            assert!(t >= previous);
            assert_eq!(g.event(n).timestamp_ms(), t);
            previous = t;
            *per_ms.entry(t).or_insert(0u32) += 1;
        }
        // 10_000 events/s: events 0..10_000 span exactly 1 s of event time,
        // 10 events per millisecond.
        assert_eq!(g.timestamp_ms(0), base);
        assert_eq!(g.timestamp_ms(10_000) - g.timestamp_ms(0), 1_000);
        assert_eq!(per_ms.len(), 5_000);
        assert!(per_ms.values().all(|&c| c == 10));
        // A slow rate: 3 events/s -> event n at floor(n * 1000 / 3) ms.
        let slow = NexmarkGenerator::new(NexmarkConfig {
            first_event_rate: 3,
            ..Default::default()
        });
        assert_eq!(slow.timestamp_ms(1) - base, 333);
        assert_eq!(slow.timestamp_ms(2) - base, 666);
        assert_eq!(slow.timestamp_ms(3) - base, 1_000);
    }

    #[test]
    fn out_of_order_groups_permute_timestamps() {
        for group in [2u64, 3, 7, 8, 10, 100, 952, 953] {
            let config = NexmarkConfig {
                out_of_order_group_size: group,
                first_event_rate: 1_000,
                ..Default::default()
            };
            let shuffled = NexmarkGenerator::new(config.clone());
            let ordered = NexmarkGenerator::new(NexmarkConfig {
                out_of_order_group_size: 1,
                ..config
            });
            let mut saw_disorder = false;
            for start in (0..3 * group).step_by(group as usize) {
                let mut a: Vec<i64> = (start..start + group).map(|n| shuffled.timestamp_ms(n)).collect();
                let mut b: Vec<i64> = (start..start + group).map(|n| ordered.timestamp_ms(n)).collect();
                saw_disorder |= a.windows(2).any(|w| w[0] > w[1]);
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b, "g={group}: group at {start} is not a permutation");
            }
            assert!(saw_disorder, "g={group}: timestamps stayed in order");
        }
        let group = 8;
        let shuffled = NexmarkGenerator::new(NexmarkConfig {
            out_of_order_group_size: group,
            ..Default::default()
        });
        let ordered = default_generator();
        // Content other than time is unaffected by the permutation.
        match (shuffled.event(3), ordered.event(3)) {
            (Event::Auction(x), Event::Auction(y)) => assert_eq!(x.id, y.id),
            other => panic!("event 3 should be an auction: {other:?}"),
        }
    }

    #[test]
    fn categories_states_cities_and_names_come_from_tables() {
        let g = default_generator();
        for n in 0..20_000 {
            match g.event(n) {
                Event::Person(p) => {
                    assert!(US_STATES.contains(&p.state.as_str()), "{p:?}");
                    assert!(US_CITIES.contains(&p.city.as_str()), "{p:?}");
                    let (first, last) = p.name.split_once(' ').expect("name has a space");
                    assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last));
                    let groups: Vec<&str> = p.credit_card.split(' ').collect();
                    assert_eq!(groups.len(), 4);
                    assert!(groups
                        .iter()
                        .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit())));
                    assert!(p.email_address.ends_with(".com") && p.email_address.contains('@'));
                }
                Event::Auction(a) => {
                    assert!((FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + NUM_CATEGORIES).contains(&a.category));
                }
                Event::Bid(_) => {}
            }
        }
    }

    #[test]
    fn average_sizes_approach_targets() {
        let g = default_generator();
        let (mut ps, mut pn, mut as_, mut an, mut bs, mut bn) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        for n in 0..50_000 {
            match g.event(n) {
                Event::Person(p) => {
                    ps += person_size(&p);
                    pn += 1;
                }
                Event::Auction(a) => {
                    as_ += auction_size(&a);
                    an += 1;
                }
                Event::Bid(b) => {
                    bs += bid_size(&b);
                    bn += 1;
                }
            }
        }
        let within = |avg: f64, target: f64| (avg - target).abs() <= target * 0.1;
        assert!(within(ps as f64 / pn as f64, 200.0), "person avg {}", ps / pn);
        assert!(within(as_ as f64 / an as f64, 500.0), "auction avg {}", as_ / an);
        assert!(within(bs as f64 / bn as f64, 100.0), "bid avg {}", bs / bn);
    }

    #[test]
    fn auction_lengths_follow_in_flight_horizon() {
        let g = default_generator();
        let mut total = 0i64;
        let mut count = 0i64;
        for n in 0..50_000 {
            if let Event::Auction(a) = g.event(n) {
                let length = a.expires - a.date_time;
                // 100 in-flight auctions * 50 / 3 = 1666 events = 166 ms at 10k ev/s.
                assert!((1..=333).contains(&length), "length {length}");
                total += length;
                count += 1;
            }
        }
        let mean = total as f64 / count as f64;
        assert!((150.0..183.0).contains(&mean), "mean length {mean}");
    }

    #[test]
    fn pow10_matches_libm_closely() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..10_000 {
            let x = rng.next_f64() * 6.0;
            let ours = pow10(x);
            let libm = 10f64.powf(x);
            assert!(((ours - libm) / libm).abs() < 1e-13, "x={x} ours={ours} libm={libm}");
        }
        assert_eq!(pow10(0.0), 1.0);
        assert_eq!(pow10(2.0), 100.0);
    }

    #[test]
    fn try_new_reports_invalid_config() {
        let err = NexmarkGenerator::try_new(NexmarkConfig {
            first_event_rate: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.0.contains("first_event_rate"));
    }

    #[test]
    #[should_panic(expected = "first_event_rate")]
    fn new_panics_on_invalid_config() {
        NexmarkGenerator::new(NexmarkConfig {
            first_event_rate: 0,
            ..Default::default()
        });
    }

    #[test]
    fn persons_only_stream_works() {
        let g = NexmarkGenerator::new(NexmarkConfig {
            auction_proportion: 0,
            bid_proportion: 0,
            ..Default::default()
        });
        for n in 0..100 {
            match g.event(n) {
                Event::Person(p) => assert_eq!(p.id, FIRST_PERSON_ID + n),
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(g.last_base0_auction_id(n), None);
        }
    }
}
