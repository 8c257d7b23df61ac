//! The Nexmark queries q0, q1, q2, q3, q4, q5, q7 and q8 on the DataStream API.
//!
//! Each query function takes the stream of Nexmark events and returns its result stream, so
//! the same code runs from the CLI, the benchmarks and the tests (which compare it with a plain
//! batch computation over the same generated events).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{attach_sink, Output};
use sluice_core::connectors::nexmark::{
    parts_mismatch, Auction, Bid, Event, EventFilesSource, EventKinds, NexmarkConfig, NexmarkSource, Person,
};
use sluice_core::error::{InvalidSetting, JobBuildError};
use sluice_core::state::{KeyedStateStore, ListState, ValueState};
use sluice_core::{
    AggregateFunction, Collector, DataStream, Either, EventTime, KeyedCoProcessFunction, KeyedContext,
    KeyedProcessFunction, OperatorError, StreamEnv, TimeDomain, WatermarkStrategy, WindowAssigner,
};

/// A Nexmark query as a job: its name, what it computes, and how its results are built.
#[derive(Clone, Copy)]
pub struct Query {
    /// The job's name (`nexmark-q5`).
    pub name: &'static str,
    /// One line on what it computes.
    pub description: &'static str,
    /// Adds the query over the events, and its sink, to the events' environment.
    pub build: fn(&DataStream<Event>, &Output),
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn shown<T: std::fmt::Debug>(v: &T) -> String {
    format!("{v:?}")
}

/// Every query Sluice runs.
pub const QUERIES: &[Query] = &[
    Query {
        name: "nexmark-q0",
        description: "Nexmark q0: pass-through of all bids",
        build: |e, out| attach_sink(q0(e), out, shown),
    },
    Query {
        name: "nexmark-q1",
        description: "Nexmark q1: bids with prices converted to euros",
        build: |e, out| attach_sink(q1(e), out, shown),
    },
    Query {
        name: "nexmark-q2",
        description: "Nexmark q2: bids on every 123rd auction",
        build: |e, out| attach_sink(q2(e), out, shown),
    },
    Query {
        name: "nexmark-q3",
        description: "Nexmark q3: category-10 auctions of sellers in OR/ID/CA, joined with the seller",
        build: |e, out| attach_sink(q3(e), out, shown),
    },
    Query {
        name: "nexmark-q4",
        description: "Nexmark q4: average closing price per category",
        build: |e, out| attach_sink(q4(e), out, shown),
    },
    Query {
        name: "nexmark-q5",
        description: "Nexmark q5: hottest auctions per 10 s window sliding by 2 s",
        build: |e, out| attach_sink(q5(e), out, shown),
    },
    Query {
        name: "nexmark-q7",
        description: "Nexmark q7: highest bids per 10 s window",
        build: |e, out| attach_sink(q7(e), out, shown),
    },
    Query {
        name: "nexmark-q8",
        description: "Nexmark q8: people who opened an auction in the 10 s window they registered in",
        build: |e, out| attach_sink(q8(e), out, shown),
    },
];

/// The query named `name` (`nexmark-q5`).
pub fn query(name: &str) -> Result<Query, JobBuildError> {
    QUERIES
        .iter()
        .find(|q| q.name == name)
        .copied()
        .ok_or_else(|| JobBuildError::UnknownJob {
            name: name.to_string(),
            known: QUERIES.iter().map(|q| q.name.to_string()).collect(),
        })
}

/// The Nexmark source for a run: `events` events (`None`: endless), optionally paced.
pub fn source(
    env: &StreamEnv,
    config: NexmarkConfig,
    events: Option<u64>,
    events_per_second: Option<u64>,
) -> Result<DataStream<Event>, InvalidSetting> {
    let mut src = NexmarkSource::new(config, events)?;
    if let Some(r) = events_per_second {
        src = src.with_events_per_second(r);
    }
    Ok(event_stream(env, src))
}

/// Nexmark events from `src`, stamped with their event time (the generator and the files
/// both produce them in time order); the same operator uid either way, so savepoints move
/// between the two.
fn event_stream<S: sluice_core::Source<Out = Event>>(env: &StreamEnv, src: S) -> DataStream<Event> {
    env.from_source(
        src,
        WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &Event| e.timestamp_ms()),
        "NexmarkSource",
    )
    .uid("nexmark-source")
}

/// The Nexmark events written in `dir` by `nexmark --write-events` (see
/// [`EventFilesSource`]), with the same watermarks as the generated source; only the `kinds`
/// the query reads are parsed.
/// The directory must hold as many part files as the source runs subtasks (see
/// [`EventFilesSource`]): another count is refused here, before anything runs.
pub fn file_source(
    env: &StreamEnv,
    dir: &std::path::Path,
    kinds: EventKinds,
) -> Result<DataStream<Event>, JobBuildError> {
    let src = EventFilesSource::new(dir)
        .map_err(JobBuildError::Input)?
        .with_kinds(kinds);
    if src.parts() != env.parallelism() as usize {
        return Err(JobBuildError::BadOption(InvalidSetting(format!(
            "--events-dir {}: {}",
            dir.display(),
            parts_mismatch(src.parts(), env.parallelism())
        ))));
    }
    Ok(event_stream(env, src))
}

/// The kinds of events query `name` (`nexmark-q5`) reads.
pub fn kinds_read(name: &str) -> EventKinds {
    match name {
        "nexmark-q3" | "nexmark-q8" => EventKinds {
            persons: true,
            auctions: true,
            bids: false,
        },
        "nexmark-q4" => EventKinds {
            persons: false,
            auctions: true,
            bids: true,
        },
        "nexmark-q0" | "nexmark-q1" | "nexmark-q2" | "nexmark-q5" | "nexmark-q7" => EventKinds::BIDS,
        _ => EventKinds::ALL,
    }
}

fn bids(events: &DataStream<Event>) -> DataStream<Bid> {
    events
        .flat_map(|e: Event| match e {
            Event::Bid(b) => Some(b),
            _ => None,
        })
        .name("Bids")
}

fn persons(events: &DataStream<Event>) -> DataStream<Person> {
    events
        .flat_map(|e: Event| match e {
            Event::Person(p) => Some(p),
            _ => None,
        })
        .name("Persons")
}

fn auctions(events: &DataStream<Event>) -> DataStream<Auction> {
    events
        .flat_map(|e: Event| match e {
            Event::Auction(a) => Some(a),
            _ => None,
        })
        .name("Auctions")
}

/// q0, pass-through: every bid as it is.
pub fn q0(events: &DataStream<Event>) -> DataStream<Bid> {
    bids(events)
}

/// A bid with its price converted to euros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EuroBid {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// Price in euro cents: `price * 908 / 1000`, in integers so results compare exactly.
    pub price: u64,
    /// Event time.
    pub date_time: i64,
}

/// q1, currency conversion: bids with the price in euros (rate 0.908).
pub fn q1(events: &DataStream<Event>) -> DataStream<EuroBid> {
    bids(events)
        .map(|b: Bid| EuroBid {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price * 908 / 1000,
            date_time: b.date_time,
        })
        .name("ToEuro")
}

/// q2, selection: `(auction, price)` of the bids on every 123rd auction.
pub fn q2(events: &DataStream<Event>) -> DataStream<(u64, u64)> {
    bids(events)
        .flat_map(|b: Bid| b.auction.is_multiple_of(123).then_some((b.auction, b.price)))
        .name("Select")
}

/// q3's states of interest.
pub const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];
/// q3's category of interest.
pub const Q3_CATEGORY: u64 = 10;

/// q3's result: `(person name, city, state, auction id)`.
pub type Q3Row = (String, String, String, u64);

/// q3, local item suggestion: auctions of category 10 by sellers in OR, ID or CA, joined with
/// the seller. An incremental join: each side waits in keyed state for its partner.
pub fn q3(events: &DataStream<Event>) -> DataStream<Q3Row> {
    let sellers = persons(events).filter(|p: &Person| Q3_STATES.contains(&p.state.as_str()));
    let cat = auctions(events).filter(|a: &Auction| a.category == Q3_CATEGORY);
    sellers
        .connect(&cat)
        .key_by(|p: &Person| p.id, |a: &Auction| a.seller)
        .process(Q3Join::default())
        .name("Q3Join")
        .uid("q3-join")
}

#[derive(Clone, Default)]
struct Q3Join {
    person: Option<ValueState<(String, String, String)>>,
    waiting: Option<ListState<u64>>,
}

impl KeyedCoProcessFunction for Q3Join {
    type Key = u64;
    type In1 = Person;
    type In2 = Auction;
    type Out = Q3Row;

    fn open(&mut self, state: &mut KeyedStateStore<u64>) -> Result<(), OperatorError> {
        self.person = Some(state.value_state("person")?);
        self.waiting = Some(state.list_state("auctions-waiting")?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        p: Person,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Q3Row>,
    ) -> Result<(), OperatorError> {
        let (person, waiting) = (self.person.expect("opened"), self.waiting.expect("opened"));
        for a in ctx.take_list(waiting) {
            out.collect((p.name.clone(), p.city.clone(), p.state.clone(), a));
        }
        ctx.set_value(person, (p.name, p.city, p.state));
        Ok(())
    }

    fn process_element2(
        &mut self,
        a: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, Q3Row>,
    ) -> Result<(), OperatorError> {
        match ctx.value(self.person.expect("opened")) {
            Some((name, city, state)) => out.collect((name, city, state, a.id)),
            // The seller may not have been seen yet (auctions can name a person a little ahead).
            None => ctx.list_add(self.waiting.expect("opened"), a.id),
        }
        Ok(())
    }
}

/// q4, average closing price per category: for every auction, the highest bid made while it
/// was open (`[date_time, expires]`), emitted when it closes; then per category the running
/// average (integer division) of those closing prices, as `(category, average)`.
pub fn q4(events: &DataStream<Event>) -> DataStream<(u64, u64)> {
    auctions(events)
        .connect(&bids(events))
        .key_by(|a: &Auction| a.id, |b: &Bid| b.auction)
        .process(ClosingPrice::default())
        .name("ClosingPrice")
        .uid("q4-closing-price")
        .key_by(|c: &(u64, u64)| c.0)
        .process(RunningAverage::default())
        .name("AveragePerCategory")
        .uid("q4-average")
}

/// Keeps an open auction and the highest valid bid; emits `(category, price)` at `expires`.
#[derive(Clone, Default)]
struct ClosingPrice {
    auction: Option<ValueState<(i64, i64, u64)>>,
    best: Option<ValueState<u64>>,
    early_bids: Option<ListState<(i64, u64)>>,
}

impl KeyedCoProcessFunction for ClosingPrice {
    type Key = u64;
    type In1 = Auction;
    type In2 = Bid;
    type Out = (u64, u64);

    fn open(&mut self, state: &mut KeyedStateStore<u64>) -> Result<(), OperatorError> {
        self.auction = Some(state.value_state("auction")?);
        self.best = Some(state.value_state("best-bid")?);
        self.early_bids = Some(state.list_state("early-bids")?);
        Ok(())
    }

    fn process_element1(
        &mut self,
        a: Auction,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Collector<'_, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        let mut best: Option<u64> = None;
        for (t, price) in ctx.take_list(self.early_bids.expect("opened")) {
            if t >= a.date_time && t <= a.expires {
                best = best.max(Some(price));
            }
        }
        if let Some(b) = best {
            ctx.set_value(self.best.expect("opened"), b);
        }
        ctx.set_value(self.auction.expect("opened"), (a.date_time, a.expires, a.category));
        ctx.register_event_time_timer(a.expires);
        Ok(())
    }

    fn process_element2(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Collector<'_, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        match ctx.value(self.auction.expect("opened")) {
            Some((start, expires, _)) => {
                if b.date_time >= start && b.date_time <= expires {
                    ctx.update_value(self.best.expect("opened"), |best| *best = (*best).max(b.price));
                }
            }
            None => ctx.list_add(self.early_bids.expect("opened"), (b.date_time, b.price)),
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _t: i64,
        _d: TimeDomain,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        let auction = ctx.take_value(self.auction.expect("opened"));
        let best = ctx.take_value(self.best.expect("opened"));
        if let (Some((_, _, category)), Some(price)) = (auction, best) {
            out.collect((category, price));
        }
        Ok(())
    }
}

/// Running average per key of `(key, value)` records, emitted on every update.
#[derive(Clone, Default)]
struct RunningAverage {
    sum_count: Option<ValueState<(u64, u64)>>,
}

impl KeyedProcessFunction for RunningAverage {
    type Key = u64;
    type In = (u64, u64);
    type Out = (u64, u64);

    fn open(&mut self, state: &mut KeyedStateStore<u64>) -> Result<(), OperatorError> {
        self.sum_count = Some(state.value_state("sum-count")?);
        Ok(())
    }

    fn process_element(
        &mut self,
        v: (u64, u64),
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        let avg = ctx.update_value(self.sum_count.expect("opened"), |sc| {
            sc.0 += v.1;
            sc.1 += 1;
            sc.0 / sc.1
        });
        out.collect((v.0, avg));
        Ok(())
    }
}

/// q5's window: 10 s, sliding every 2 s.
pub const Q5_WINDOW: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(2));

/// q5, hot items: per sliding window, the auctions with the most bids, as
/// `(auction, bid count, window end)`.
pub fn q5(events: &DataStream<Event>) -> DataStream<(u64, u64, i64)> {
    // Only the auction id is counted: projected before the window, which would otherwise copy
    // each bid (and its strings) into all five windows it falls in.
    bids(events)
        .map(|b: Bid| b.auction)
        .name("BidAuction")
        .key_by(|auction: &u64| *auction)
        .window(WindowAssigner::sliding(Q5_WINDOW.0, Q5_WINDOW.1))
        .aggregate_with(Count::default(), |auction: &u64, w, n: u64| (*auction, n, w.end))
        .name("BidsPerAuction")
        .uid("q5-count")
        .key_by(|c: &(u64, u64, i64)| c.2)
        .process(MaxPerWindow::default())
        .name("HottestPerWindow")
        .uid("q5-max")
}

/// Counts records.
struct Count<T>(std::marker::PhantomData<fn(T)>);

impl<T> Clone for Count<T> {
    fn clone(&self) -> Self {
        Count(std::marker::PhantomData)
    }
}

impl<T> Default for Count<T> {
    fn default() -> Self {
        Count(std::marker::PhantomData)
    }
}

impl<T: sluice_core::Data> AggregateFunction for Count<T> {
    type In = T;
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _v: T) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Per window end, keeps the auctions with the highest count; emits them when the window's
/// results are complete (the watermark passed the window).
#[derive(Clone, Default)]
struct MaxPerWindow {
    best: Option<ValueState<(u64, Vec<u64>)>>,
}

impl KeyedProcessFunction for MaxPerWindow {
    type Key = i64;
    type In = (u64, u64, i64);
    type Out = (u64, u64, i64);

    fn open(&mut self, state: &mut KeyedStateStore<i64>) -> Result<(), OperatorError> {
        self.best = Some(state.value_state("best")?);
        Ok(())
    }

    fn process_element(
        &mut self,
        v: (u64, u64, i64),
        ctx: &mut KeyedContext<'_, i64>,
        _out: &mut Collector<'_, (u64, u64, i64)>,
    ) -> Result<(), OperatorError> {
        let (auction, n, end) = v;
        let fresh = ctx.update_value(self.best.expect("opened"), |best| {
            let fresh = best.1.is_empty();
            if n > best.0 || fresh {
                *best = (n, vec![auction]);
            } else if n == best.0 {
                best.1.push(auction);
            }
            fresh
        });
        if fresh {
            ctx.register_event_time_timer(end - 1);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _t: i64,
        _d: TimeDomain,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, (u64, u64, i64)>,
    ) -> Result<(), OperatorError> {
        let end = *ctx.key();
        if let Some((n, mut auctions)) = ctx.take_value(self.best.expect("opened")) {
            auctions.sort_unstable();
            for a in auctions {
                out.collect((a, n, end));
            }
        }
        Ok(())
    }
}

/// q7's window: 10 s tumbling.
pub const Q7_WINDOW: Duration = Duration::from_secs(10);

/// q7, highest bid: per tumbling window, every bid with the highest price, as
/// `(auction, price, bidder, date_time, window end)`. Two stages: the maximum per window is
/// found per auction group in parallel, then combined per window.
pub fn q7(events: &DataStream<Event>) -> DataStream<(u64, u64, u64, i64, i64)> {
    bids(events)
        .key_by(|b: &Bid| b.auction % 64)
        .window(WindowAssigner::tumbling(Q7_WINDOW))
        .aggregate_with(MaxBids, |_g: &u64, w, best: (u64, Vec<Bid>)| (w.end, best.0, best.1))
        .name("MaxBidPerGroup")
        .uid("q7-partial")
        .key_by(|p: &(i64, u64, Vec<Bid>)| p.0)
        .process(MaxBidPerWindow::default())
        .name("MaxBidPerWindow")
        .uid("q7-final")
}

/// Keeps the bids with the highest price.
#[derive(Clone)]
struct MaxBids;

impl AggregateFunction for MaxBids {
    type In = Bid;
    type Acc = (u64, Vec<Bid>);
    type Out = (u64, Vec<Bid>);
    fn create_accumulator(&self) -> (u64, Vec<Bid>) {
        (0, Vec::new())
    }
    fn add(&self, acc: &mut (u64, Vec<Bid>), b: Bid) {
        if acc.1.is_empty() || b.price > acc.0 {
            *acc = (b.price, vec![b]);
        } else if b.price == acc.0 {
            acc.1.push(b);
        }
    }
    fn get_result(&self, acc: &(u64, Vec<Bid>)) -> (u64, Vec<Bid>) {
        acc.clone()
    }
    fn merge(&self, mut a: (u64, Vec<Bid>), b: (u64, Vec<Bid>)) -> (u64, Vec<Bid>) {
        if a.1.is_empty() || (b.0 > a.0 && !b.1.is_empty()) {
            return b;
        }
        if b.0 == a.0 {
            a.1.extend(b.1);
        }
        a
    }
}

#[derive(Clone, Default)]
struct MaxBidPerWindow {
    best: Option<ValueState<(u64, Vec<Bid>)>>,
}

impl KeyedProcessFunction for MaxBidPerWindow {
    type Key = i64;
    type In = (i64, u64, Vec<Bid>);
    type Out = (u64, u64, u64, i64, i64);

    fn open(&mut self, state: &mut KeyedStateStore<i64>) -> Result<(), OperatorError> {
        self.best = Some(state.value_state("best")?);
        Ok(())
    }

    fn process_element(
        &mut self,
        v: (i64, u64, Vec<Bid>),
        ctx: &mut KeyedContext<'_, i64>,
        _out: &mut Collector<'_, Self::Out>,
    ) -> Result<(), OperatorError> {
        let (end, price, bids) = v;
        let h = self.best.expect("opened");
        let fresh = ctx.with_value(h, |v| v.is_none());
        if fresh {
            ctx.register_event_time_timer(end - 1);
        }
        ctx.update_value(h, |best| *best = MaxBids.merge(std::mem::take(best), (price, bids)));
        Ok(())
    }

    fn on_timer(
        &mut self,
        _t: i64,
        _d: TimeDomain,
        ctx: &mut KeyedContext<'_, i64>,
        out: &mut Collector<'_, Self::Out>,
    ) -> Result<(), OperatorError> {
        let end = *ctx.key();
        if let Some((price, mut bids)) = ctx.take_value(self.best.expect("opened")) {
            bids.sort_by_key(|a| (a.auction, a.bidder, a.date_time));
            for b in bids {
                out.collect((b.auction, price, b.bidder, b.date_time, end));
            }
        }
        Ok(())
    }
}

/// q8's window: 10 s tumbling.
pub const Q8_WINDOW: Duration = Duration::from_secs(10);

/// q8, new users: people who opened an auction in the same 10 s window in which they
/// registered, as `(person id, name, window start)`.
pub fn q8(events: &DataStream<Event>) -> DataStream<(u64, String, i64)> {
    let people = persons(events).map(Either::<Person, Auction>::Left).name("PersonSide");
    let sellers = auctions(events)
        .map(Either::<Person, Auction>::Right)
        .name("AuctionSide");
    people
        .union(&[sellers])
        .key_by(|e: &Either<Person, Auction>| match e {
            Either::Left(p) => p.id,
            Either::Right(a) => a.seller,
        })
        .window(WindowAssigner::tumbling(Q8_WINDOW))
        .process(
            |id: &u64, w, items: &[Either<Person, Auction>], out: &mut Vec<(u64, String, i64)>| {
                let seller = items.iter().any(|e| matches!(e, Either::Right(_)));
                if !seller {
                    return;
                }
                for e in items {
                    if let Either::Left(p) = e {
                        out.push((*id, p.name.clone(), w.start));
                    }
                }
            },
        )
        .name("NewUsers")
        .uid("q8-join")
}

/// The event-time field every query's timestamps come from (re-exported for tests).
pub fn event_time(e: &Event) -> EventTime {
    EventTime(e.timestamp_ms())
}
