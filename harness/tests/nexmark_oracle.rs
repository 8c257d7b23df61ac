//! Oracle tests for the Nexmark queries of `sluice::jobs::nexmark`.
//!
//! Every query runs as a real streaming job over a bounded [`NexmarkSource`] (through
//! `sluice::jobs::nexmark::source`) at several parallelisms, its output collected with a
//! [`CollectSink`]. The result is compared, as a sorted multiset, with an independent batch
//! computation written plainly here over `NexmarkGenerator::event(i)` for `i in 0..n` (folds
//! into `BTreeMap`s; the query code is never called). Every comparison also asserts that the
//! batch result is non-empty, so a source that produces nothing cannot pass vacuously.
//!
//! [`NexmarkSource`]: sluice_core::connectors::nexmark::NexmarkSource

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::OnceLock;

use sluice::jobs::nexmark;
use sluice_core::connectors::nexmark::{Auction, Bid, Event, NexmarkConfig, NexmarkGenerator, Person};
use sluice_core::connectors::CollectSink;
use sluice_core::{Data, DataStream, ExecutionConfig, StreamEnv};

/// Events for the cheap (non-windowed) queries: 6 s of event time.
const SMALL: u64 = 60_000;
/// Events for the windowed queries: 30 s of event time at the default 10 000 events/s, i.e.
/// 3 tumbling 10 s windows and 15+ sliding windows.
const LARGE: u64 = 300_000;

/// The first `LARGE` events of the default configuration, generated once for all tests (the
/// events are a pure function of their number, so a prefix is the run of a smaller `n`).
fn events(n: u64) -> &'static [Event] {
    static EVENTS: OnceLock<Vec<Event>> = OnceLock::new();
    let all = EVENTS.get_or_init(|| {
        let g = NexmarkGenerator::new(NexmarkConfig::default());
        (0..LARGE).map(|i| g.event(i)).collect()
    });
    &all[..n as usize]
}

fn bids(n: u64) -> impl Iterator<Item = &'static Bid> {
    events(n).iter().filter_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

fn persons(n: u64) -> impl Iterator<Item = &'static Person> {
    events(n).iter().filter_map(|e| match e {
        Event::Person(p) => Some(p),
        _ => None,
    })
}

fn auctions(n: u64) -> impl Iterator<Item = &'static Auction> {
    events(n).iter().filter_map(|e| match e {
        Event::Auction(a) => Some(a),
        _ => None,
    })
}

/// Runs `query` over `n` generated events at parallelism `p` and returns its output in
/// arrival order.
fn run_query<T: Data>(n: u64, p: u32, query: fn(&DataStream<Event>) -> DataStream<T>) -> Vec<T> {
    let env = StreamEnv::new(format!("oracle-p{p}"));
    env.set_parallelism(p);
    let events = nexmark::source(&env, NexmarkConfig::default(), Some(n), None).expect("source");
    let sink = CollectSink::new();
    query(&events).sink_to(sink.clone(), "collect");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt
        .block_on(env.execute(ExecutionConfig::default()))
        .expect("job runs to its end");
    assert!(!result.cancelled, "job was cancelled");
    assert_eq!(result.records_in, n, "the source read every event once (p={p})");
    sink.values()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Asserts equality of two sorted multisets, reporting the first differences, not two huge Vecs.
fn assert_same_multiset<T: Ord + Debug>(what: &str, got: Vec<T>, want: Vec<T>) {
    let (got, want) = (sorted(got), sorted(want));
    if got != want {
        let mut g: BTreeMap<&T, i64> = BTreeMap::new();
        for x in &got {
            *g.entry(x).or_default() += 1;
        }
        for x in &want {
            *g.entry(x).or_default() -= 1;
        }
        let diff: Vec<_> = g.into_iter().filter(|(_, c)| *c != 0).take(10).collect();
        panic!(
            "{what}: stream output ({} rows) differs from batch oracle ({} rows); first differences \
             (row, stream count - batch count): {diff:?}",
            got.len(),
            want.len()
        );
    }
}

/// Every field of a bid, as an orderable tuple.
type BidRow = (u64, u64, u64, String, String, i64, String);

fn bid_row(b: &Bid) -> BidRow {
    (
        b.auction,
        b.bidder,
        b.price,
        b.channel.clone(),
        b.url.clone(),
        b.date_time,
        b.extra.clone(),
    )
}

// ---------------------------------------------------------------------------------------------
// Batch oracles.
// ---------------------------------------------------------------------------------------------

fn oracle_q0(n: u64) -> Vec<BidRow> {
    bids(n).map(bid_row).collect()
}

fn oracle_q1(n: u64) -> Vec<(u64, u64, u64, i64)> {
    bids(n)
        .map(|b| (b.auction, b.bidder, b.price * 908 / 1000, b.date_time))
        .collect()
}

fn oracle_q2(n: u64) -> Vec<(u64, u64)> {
    bids(n)
        .filter(|b| b.auction % 123 == 0)
        .map(|b| (b.auction, b.price))
        .collect()
}

fn oracle_q3(n: u64) -> Vec<(String, String, String, u64)> {
    let mut sellers: BTreeMap<u64, &Person> = BTreeMap::new();
    for p in persons(n).filter(|p| ["OR", "ID", "CA"].contains(&p.state.as_str())) {
        sellers.insert(p.id, p);
    }
    auctions(n)
        .filter(|a| a.category == 10)
        .filter_map(|a| {
            sellers
                .get(&a.seller)
                .map(|p| (p.name.clone(), p.city.clone(), p.state.clone(), a.id))
        })
        .collect()
}

/// q4's batch result: (average closing price per category, number of auctions with a valid bid).
fn oracle_q4(n: u64) -> (BTreeMap<u64, u64>, usize) {
    let auctions: BTreeMap<u64, &Auction> = auctions(n).map(|a| (a.id, a)).collect();
    let mut closing: BTreeMap<u64, u64> = BTreeMap::new();
    for b in bids(n) {
        if let Some(a) = auctions.get(&b.auction) {
            if a.date_time <= b.date_time && b.date_time <= a.expires {
                let best = closing.entry(a.id).or_insert(0);
                *best = (*best).max(b.price);
            }
        }
    }
    let mut sum_count: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (id, price) in &closing {
        let sc = sum_count.entry(auctions[id].category).or_default();
        sc.0 += price;
        sc.1 += 1;
    }
    let averages = sum_count.into_iter().map(|(c, (s, k))| (c, s / k)).collect();
    (averages, closing.len())
}

fn oracle_q5(n: u64) -> Vec<(u64, u64, i64)> {
    // (window start, auction) -> bid count.
    let mut counts: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for b in bids(n) {
        let t = b.date_time;
        let mut start = t.div_euclid(2000) * 2000; // the latest start <= t
        while start > t - 10_000 {
            *counts.entry((start, b.auction)).or_default() += 1;
            start -= 2000;
        }
    }
    let mut max_per_window: BTreeMap<i64, u64> = BTreeMap::new();
    for (&(start, _), &c) in &counts {
        let m = max_per_window.entry(start).or_default();
        *m = (*m).max(c);
    }
    counts
        .iter()
        .filter(|((start, _), c)| max_per_window[start] == **c)
        .map(|(&(start, auction), &c)| (auction, c, start + 10_000))
        .collect()
}

fn oracle_q7(n: u64) -> Vec<(u64, u64, u64, i64, i64)> {
    let window_start = |t: i64| t.div_euclid(10_000) * 10_000;
    let mut max_price: BTreeMap<i64, u64> = BTreeMap::new();
    for b in bids(n) {
        let m = max_price.entry(window_start(b.date_time)).or_default();
        *m = (*m).max(b.price);
    }
    bids(n)
        .filter(|b| max_price[&window_start(b.date_time)] == b.price)
        .map(|b| {
            (
                b.auction,
                b.price,
                b.bidder,
                b.date_time,
                window_start(b.date_time) + 10_000,
            )
        })
        .collect()
}

fn oracle_q8(n: u64) -> Vec<(u64, String, i64)> {
    let window_start = |t: i64| t.div_euclid(10_000) * 10_000;
    let sellers_in_window: BTreeSet<(u64, i64)> = auctions(n).map(|a| (a.seller, window_start(a.date_time))).collect();
    persons(n)
        .filter(|p| sellers_in_window.contains(&(p.id, window_start(p.date_time))))
        .map(|p| (p.id, p.name.clone(), window_start(p.date_time)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn oracle_inputs_cover_the_intended_event_time() {
    // The windowed tests rely on LARGE events spanning several windows; the generator's rate
    // (10 000 events per second of event time) is what makes that so.
    let e = events(LARGE);
    let span = e.last().unwrap().timestamp_ms() - e[0].timestamp_ms();
    assert!(span >= 29_000, "300 000 events span only {span} ms of event time");
    let windows: BTreeSet<i64> = e.iter().map(|e| e.timestamp_ms().div_euclid(10_000)).collect();
    assert!(windows.len() >= 3, "only {} tumbling windows", windows.len());
}

#[test]
fn q0_passes_every_bid_through() {
    let want = oracle_q0(SMALL);
    assert!(!want.is_empty());
    for p in [1, 2] {
        let got = run_query(SMALL, p, nexmark::q0).iter().map(bid_row).collect();
        assert_same_multiset(&format!("q0 p={p}"), got, want.clone());
    }
}

#[test]
fn q1_converts_every_price_to_euros() {
    let want = oracle_q1(SMALL);
    assert!(!want.is_empty());
    for p in [1, 2] {
        let got = run_query(SMALL, p, nexmark::q1)
            .into_iter()
            .map(|b| (b.auction, b.bidder, b.price, b.date_time))
            .collect();
        assert_same_multiset(&format!("q1 p={p}"), got, want.clone());
    }
}

#[test]
fn q2_selects_bids_on_every_123rd_auction() {
    let want = oracle_q2(SMALL);
    assert!(!want.is_empty());
    for p in [1, 2] {
        assert_same_multiset(&format!("q2 p={p}"), run_query(SMALL, p, nexmark::q2), want.clone());
    }
}

#[test]
fn q3_joins_category_10_auctions_with_sellers_in_or_id_ca() {
    let want = oracle_q3(SMALL);
    assert!(!want.is_empty());
    for p in [1, 2] {
        assert_same_multiset(&format!("q3 p={p}"), run_query(SMALL, p, nexmark::q3), want.clone());
    }
}

#[test]
fn q4_final_running_average_per_category_matches_batch_average() {
    let (want_avg, want_rows) = oracle_q4(SMALL);
    assert!(!want_avg.is_empty() && want_rows > 0);
    for p in [1, 2] {
        let got = run_query(SMALL, p, nexmark::q4);
        // Arrival order within one category is preserved, so the last value is the final one.
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for (category, avg) in &got {
            last.insert(*category, *avg);
        }
        assert_eq!(last, want_avg, "q4 p={p}: final average per category");
        assert_eq!(got.len(), want_rows, "q4 p={p}: one row per auction with a valid bid");
    }
}

#[test]
fn q5_hottest_auctions_per_sliding_window() {
    let want = oracle_q5(LARGE);
    let windows: BTreeSet<i64> = want.iter().map(|r| r.2).collect();
    assert!(windows.len() >= 15, "only {} windows in the oracle", windows.len());
    for p in [1, 2, 4] {
        assert_same_multiset(&format!("q5 p={p}"), run_query(LARGE, p, nexmark::q5), want.clone());
    }
}

#[test]
fn q7_highest_bids_per_tumbling_window() {
    let want = oracle_q7(LARGE);
    let windows: BTreeSet<i64> = want.iter().map(|r| r.4).collect();
    assert!(windows.len() >= 3, "only {} windows in the oracle", windows.len());
    for p in [1, 2] {
        assert_same_multiset(&format!("q7 p={p}"), run_query(LARGE, p, nexmark::q7), want.clone());
    }
}

#[test]
fn q8_people_who_sell_in_their_registration_window() {
    let want = oracle_q8(LARGE);
    let windows: BTreeSet<i64> = want.iter().map(|r| r.2).collect();
    assert!(windows.len() >= 3, "only {} windows in the oracle", windows.len());
    for p in [1, 2] {
        assert_same_multiset(&format!("q8 p={p}"), run_query(LARGE, p, nexmark::q8), want.clone());
    }
}
