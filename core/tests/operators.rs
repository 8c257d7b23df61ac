//! Integration tests of `sluice-core`'s operators, run end to end through `StreamEnv`:
//! map, filter, flat_map, union, rolling reduce, keyed process functions with value, list and
//! map state and with event- and processing-time timers, tumbling, sliding and session windows
//! with aggregate, reduce and process functions, allowed lateness, connect with a
//! `KeyedCoProcessFunction`, window joins, per-operator parallelism, chaining in
//! `JobGraph::describe`, end-of-input flushing, idle sources, `JobHandle::cancel`, and the
//! rejection of bad jobs. Results from parallel subtasks are sorted before comparing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::*;
use sluice_core::connectors::{CollectSink, GeneratorSource};
use sluice_core::operator::OperatorContext;
use sluice_core::state::{KeyedStateStore, ListState, MapState, ValueState};
use sluice_core::{
    Collector, Data, ExecutionConfig, JobError, JobResult, KeyedCoProcessFunction, KeyedContext, KeyedProcessFunction,
    OperatorError, Record, Sink, SinkWriter, Source, SourcePoll, SourceReader, StreamEnv, TimeDomain,
    WatermarkStrategy, WindowAssigner,
};

type Res<T = ()> = Result<T, OperatorError>;
type Ctx<'a, K> = KeyedContext<'a, K>;

// ---------------------------------------------------------------- stateless operators

#[test]
fn map_transforms_every_record() {
    let env = StreamEnv::new("map");
    env.set_parallelism(2);
    let sink = CollectSink::new();
    plain(&env, (0..100).collect::<Vec<i64>>(), "n")
        .map(|x: i64| x * 3 + 1)
        .sink_to(sink.clone(), "out");
    let r = run(&env);
    assert_eq!(sorted(sink.values()), (0..100).map(|x| x * 3 + 1).collect::<Vec<i64>>());
    assert_eq!((r.records_in, r.records_out), (100, 100));
}

#[test]
fn filter_keeps_only_matching_records() {
    let env = StreamEnv::new("filter");
    env.set_parallelism(3);
    let sink = CollectSink::new();
    plain(&env, (0..50).collect::<Vec<i64>>(), "n")
        .filter(|x: &i64| x % 5 == 0)
        .sink_to(sink.clone(), "out");
    run(&env);
    assert_eq!(sorted(sink.values()), vec![0, 5, 10, 15, 20, 25, 30, 35, 40, 45]);
}

#[test]
fn flat_map_emits_zero_or_more_records_per_input_with_the_input_timestamp() {
    let env = StreamEnv::new("flat_map");
    let sink = CollectSink::new();
    events(&env, vec![('a', 10, 2), ('b', 20, 0), ('c', 30, 3)], 0)
        .flat_map(|e: Ev| (0..e.2).map(move |i| (e.0, i)))
        .sink_to(sink.clone(), "out");
    run(&env);
    assert_eq!(
        timed(&sink),
        vec![
            (('a', 0), 10),
            (('a', 1), 10),
            (('c', 0), 30),
            (('c', 1), 30),
            (('c', 2), 30)
        ]
    );
}

#[test]
fn union_merges_all_records_of_its_inputs() {
    let env = StreamEnv::new("union");
    env.set_parallelism(2);
    let sink = CollectSink::new();
    let a = plain(&env, vec![1i64, 2, 3], "a");
    let b = plain(&env, vec![10i64, 20], "b");
    let c = plain(&env, vec![100i64], "c").map(|x: i64| x + 1);
    a.union(&[b, c]).map(|x: i64| -x).sink_to(sink.clone(), "out");
    run(&env);
    assert_eq!(sorted(sink.values()), vec![-101, -20, -10, -3, -2, -1]);
}

// ---------------------------------------------------------------- keyed operators

#[test]
fn rolling_reduce_word_count_emits_each_intermediate_count_once() {
    let text = "the quick fox and the lazy dog and the end";
    let env = StreamEnv::new("wordcount");
    env.set_parallelism(2);
    let sink = CollectSink::new();
    plain(&env, vec![text.to_string(); 3], "lines")
        .flat_map(|l: String| l.split(' ').map(|w| (w.to_string(), 1u64)).collect::<Vec<_>>())
        .key_by(|p: &(String, u64)| p.0.clone())
        .reduce(|a, b| (a.0, a.1 + b.1))
        .sink_to(sink.clone(), "out");
    run(&env);
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for w in text.split(' ') {
        *totals.entry(w.to_string()).or_default() += 3;
    }
    let want: Vec<(String, u64)> = totals
        .iter()
        .flat_map(|(w, &n)| (1..=n).map(move |i| (w.clone(), i)))
        .collect();
    assert_eq!(sorted(sink.values()), want);
}

/// Per record: the key's previous value (value state), its values so far (list state), and
/// how often the key has seen this value (map state).
#[derive(Clone, Default)]
struct StateProbe {
    last: Option<ValueState<i64>>,
    all: Option<ListState<i64>>,
    counts: Option<MapState<i64, u32>>,
}
type Probe = (char, Option<i64>, Vec<i64>, u32);
impl KeyedProcessFunction for StateProbe {
    type Key = char;
    type In = (char, i64);
    type Out = Probe;
    fn open(&mut self, s: &mut KeyedStateStore<char>) -> Res {
        self.last = Some(s.value_state("last")?);
        self.all = Some(s.list_state("all")?);
        self.counts = Some(s.map_state("counts")?);
        Ok(())
    }
    fn process_element(&mut self, v: (char, i64), ctx: &mut Ctx<'_, char>, out: &mut Collector<'_, Probe>) -> Res {
        let prev = ctx.take_value(self.last.unwrap());
        ctx.set_value(self.last.unwrap(), v.1);
        ctx.list_add(self.all.unwrap(), v.1);
        let n = ctx.update_map(self.counts.unwrap(), |m| {
            let n = m.entry(v.1).or_insert(0);
            *n += 1;
            *n
        });
        assert_eq!(ctx.map_get(self.counts.unwrap(), &v.1), Some(n));
        out.collect((v.0, prev, ctx.list(self.all.unwrap()), n));
        Ok(())
    }
}

/// Runs `StateProbe` at parallelism 2 behind a parallelism-1 source (so each key's records
/// keep their order) and returns its sorted output.
fn run_state_probe() -> Vec<Probe> {
    let env = StreamEnv::new("state");
    let src = plain(
        &env,
        vec![('a', 1), ('b', 10), ('a', 2), ('c', 100), ('b', 10), ('a', 1)],
        "in",
    );
    env.set_parallelism(2);
    let sink = CollectSink::new();
    src.key_by(|p: &(char, i64)| p.0)
        .process(StateProbe::default())
        .sink_to(sink.clone(), "out");
    run(&env);
    sorted(sink.values())
}

#[test]
fn keyed_process_value_state_is_scoped_per_key() {
    let got: Vec<_> = sorted(run_state_probe().into_iter().map(|p| (p.0, p.1)).collect());
    assert_eq!(
        got,
        vec![
            ('a', None),
            ('a', Some(1)),
            ('a', Some(2)),
            ('b', None),
            ('b', Some(10)),
            ('c', None)
        ]
    );
}

#[test]
fn keyed_process_list_state_accumulates_per_key_in_arrival_order() {
    let got: Vec<_> = sorted(run_state_probe().into_iter().map(|p| (p.0, p.2)).collect());
    let want = vec![
        ('a', vec![1]),
        ('a', vec![1, 2]),
        ('a', vec![1, 2, 1]),
        ('b', vec![10]),
        ('b', vec![10, 10]),
        ('c', vec![100]),
    ];
    assert_eq!(got, want);
}

#[test]
fn keyed_process_map_state_counts_entries_per_key() {
    let got: Vec<_> = sorted(
        run_state_probe()
            .into_iter()
            .map(|p| (p.0, *p.2.last().unwrap(), p.3))
            .collect(),
    );
    assert_eq!(
        got,
        vec![
            ('a', 1, 1),
            ('a', 1, 2),
            ('a', 2, 1),
            ('b', 10, 1),
            ('b', 10, 2),
            ('c', 100, 1)
        ]
    );
}

/// Counts records per key; each record sets an event-time timer 100 ms after it, which emits
/// (key, timer time, count at firing, watermark at firing).
#[derive(Clone, Default)]
struct CountThenFire {
    count: Option<ValueState<u64>>,
}
impl KeyedProcessFunction for CountThenFire {
    type Key = char;
    type In = Ev;
    type Out = (char, i64, u64, i64);
    fn open(&mut self, s: &mut KeyedStateStore<char>) -> Res {
        self.count = Some(s.value_state("count")?);
        Ok(())
    }
    fn process_element(&mut self, v: Ev, ctx: &mut Ctx<'_, char>, _: &mut Collector<'_, Self::Out>) -> Res {
        ctx.update_value(self.count.unwrap(), |n| *n += 1);
        ctx.register_event_time_timer(v.1 + 100);
        Ok(())
    }
    fn on_timer(&mut self, t: i64, d: TimeDomain, ctx: &mut Ctx<'_, char>, out: &mut Collector<'_, Self::Out>) -> Res {
        assert_eq!(d, TimeDomain::EventTime);
        let n = ctx.value(self.count.unwrap()).unwrap();
        out.collect((*ctx.key(), t, n, ctx.current_watermark().millis()));
        Ok(())
    }
}

#[test]
fn event_time_timers_fire_when_the_watermark_passes_with_the_timer_timestamp() {
    let env = StreamEnv::new("event-timers");
    let sink = CollectSink::new();
    // b@1000 moves the watermark to 999, firing a's timers at 100 and 150 (a has 2 records);
    // b's timer at 1100 fires only with the final watermark.
    events(&env, vec![('a', 0, 0), ('a', 50, 0), ('b', 1000, 0)], 0)
        .key_by(|e: &Ev| e.0)
        .process(CountThenFire::default())
        .sink_to(sink.clone(), "out");
    run_with(&env, stepwise());
    let want = vec![
        (('a', 100, 2, 999), 100),
        (('a', 150, 2, 999), 150),
        (('b', 1100, 1, i64::MAX), 1100),
    ];
    assert_eq!(timed(&sink), want);
}

/// Emits 'a', then waits until `done` is set (or 20 s of processing time pass) and finishes.
struct UntilFlag(Arc<AtomicBool>);
struct UntilFlagReader(Arc<AtomicBool>, Option<i64>);
impl Source for UntilFlag {
    type Out = char;
    type Reader = UntilFlagReader;
    fn reader(&self, _: u32, _: u32) -> Res<UntilFlagReader> {
        Ok(UntilFlagReader(self.0.clone(), None))
    }
}
impl SourceReader for UntilFlagReader {
    type Out = char;
    fn poll_batch(&mut self, _: usize, out: &mut Vec<char>, ctx: &OperatorContext) -> Res<SourcePoll> {
        let now = ctx.clock.now_ms();
        let start = *self.1.get_or_insert_with(|| {
            out.push('a');
            now
        });
        let done = self.0.load(Ordering::SeqCst) || now - start > 20_000;
        Ok(if done {
            SourcePoll::Finished
        } else {
            SourcePoll::WaitUntil(now + 5)
        })
    }
}

/// Sets a processing-time timer 20 ms ahead; on firing, reports it and raises the flag.
#[derive(Clone)]
struct ProcTimer(Arc<AtomicBool>);
impl KeyedProcessFunction for ProcTimer {
    type Key = char;
    type In = char;
    type Out = (String, i64, i64);
    fn process_element(&mut self, _: char, ctx: &mut Ctx<'_, char>, out: &mut Collector<'_, Self::Out>) -> Res {
        let t = ctx.current_processing_time() + 20;
        ctx.register_processing_time_timer(t);
        out.collect(("registered".into(), t, ctx.current_processing_time()));
        Ok(())
    }
    fn on_timer(&mut self, t: i64, d: TimeDomain, ctx: &mut Ctx<'_, char>, out: &mut Collector<'_, Self::Out>) -> Res {
        assert_eq!(d, TimeDomain::ProcessingTime);
        out.collect(("fired".into(), t, ctx.current_processing_time()));
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn processing_time_timer_fires_at_or_after_its_time() {
    let done = Arc::new(AtomicBool::new(false));
    let env = StreamEnv::new("processing-timers");
    let sink = CollectSink::new();
    env.from_source(UntilFlag(done.clone()), WatermarkStrategy::no_watermarks(), "src")
        .key_by(|c: &char| *c)
        .process(ProcTimer(done))
        .sink_to(sink.clone(), "out");
    run(&env);
    let got = sink.values();
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["registered", "fired"],
        "{got:?}"
    );
    assert_eq!(got[1].1, got[0].1, "on_timer gets the registered time");
    assert!(got[1].2 >= got[1].1, "fired before its time: {got:?}");
}

// ---------------------------------------------------------------- windows

#[test]
fn tumbling_window_aggregate_sums_per_key_and_window() {
    let env = StreamEnv::new("tumbling");
    env.set_parallelism(2);
    let sink = CollectSink::new();
    events(
        &env,
        vec![
            ('a', 0, 1),
            ('b', 3, 10),
            ('a', 9, 2),
            ('a', 10, 4),
            ('b', 25, 20),
            ('a', 19, 8),
        ],
        100,
    )
    .key_by(|e: &Ev| e.0)
    .window(WindowAssigner::tumbling(ms(10)))
    .aggregate_with(Sum, |k: &char, w, s| (*k, w.start, w.end, s))
    .sink_to(sink.clone(), "out");
    run(&env);
    let want = vec![
        (('a', 0, 10, 3), 9),
        (('a', 10, 20, 12), 19),
        (('b', 0, 10, 10), 9),
        (('b', 20, 30, 20), 29),
    ];
    assert_eq!(timed(&sink), want);
}

#[test]
fn sliding_window_reduce_puts_each_record_in_size_over_slide_windows() {
    let env = StreamEnv::new("sliding");
    let sink = CollectSink::new();
    events(&env, vec![('a', 1, 1), ('a', 6, 2), ('a', 12, 4)], 0)
        .key_by(|e: &Ev| e.0)
        .window(WindowAssigner::sliding(ms(10), ms(5)))
        .reduce(|x: Ev, y: Ev| (x.0, x.1.max(y.1), x.2 + y.2))
        .sink_to(sink.clone(), "out");
    run_with(&env, stepwise());
    // Windows [-5,5) {1}, [0,10) {1,6}, [5,15) {6,12}, [10,20) {12}; results carry end - 1.
    let got: Vec<(i64, i64)> = sorted(timed(&sink).into_iter().map(|(v, ts)| (ts, v.2)).collect());
    assert_eq!(got, vec![(4, 1), (9, 3), (14, 6), (19, 4)]);
}

#[test]
fn session_window_process_groups_activity_separated_by_the_gap() {
    let env = StreamEnv::new("session");
    env.set_parallelism(2);
    let sink = CollectSink::new();
    // gap 10: a: {0, 5, 14} then {30}; b: {2} then {40, 49}; out of order within the bound.
    let input = vec![
        ('a', 5, 1),
        ('a', 0, 2),
        ('b', 2, 3),
        ('a', 14, 4),
        ('a', 30, 5),
        ('b', 49, 6),
        ('b', 40, 7),
    ];
    events(&env, input, 20)
        .key_by(|e: &Ev| e.0)
        .window(WindowAssigner::session(ms(10)))
        .process(|k: &char, w, recs: &[Ev], out: &mut Vec<(char, i64, i64, Vec<i64>)>| {
            out.push((*k, w.start, w.end, sorted(recs.iter().map(|r| r.1).collect())))
        })
        .sink_to(sink.clone(), "out");
    run(&env);
    let want = vec![
        ('a', 0, 24, vec![0, 5, 14]),
        ('a', 30, 40, vec![30]),
        ('b', 2, 12, vec![2]),
        ('b', 40, 59, vec![40, 49]),
    ];
    assert_eq!(sorted(sink.values()), want);
}

#[test]
fn allowed_lateness_refires_late_records_and_drops_and_counts_too_late_ones() {
    let env = StreamEnv::new("lateness");
    let sink = CollectSink::new();
    let input = vec![
        ('a', 1000, 1),
        ('a', 2000, 2),
        ('b', 12000, 100),  // watermark 11999: a's [0,10000) fires with 3
        ('a', 5000, 4),     // late but within 5 s of lateness: fires again with 7
        ('c', 30000, 1000), // watermark 29999: b fires; a's window was cleaned up at 14999
        ('a', 3000, 8),     // too late: dropped
        ('b', 15000, 16),   // too late: dropped
    ];
    events(&env, input, 0)
        .key_by(|e: &Ev| e.0)
        .window(WindowAssigner::tumbling(ms(10_000)))
        .allowed_lateness(ms(5_000))
        .aggregate_with(Sum, |k: &char, w, s| (*k, w.start, s))
        .sink_to(sink.clone(), "out");
    let r = run_with(&env, stepwise());
    let want = vec![
        (('a', 0, 3), 9999),
        (('a', 0, 7), 9999),
        (('b', 10000, 100), 19999),
        (('c', 30000, 1000), 39999),
    ];
    assert_eq!(timed(&sink), want);
    assert_eq!(late_dropped(&r, "WindowAggregate"), 2);
}

#[test]
fn end_of_input_fires_every_open_window_of_a_bounded_job() {
    let env = StreamEnv::new("flush");
    let sink = CollectSink::new();
    let input: Vec<Ev> = (0..50)
        .map(|i| (if i % 2 == 0 { 'e' } else { 'o' }, i * 100, 1))
        .collect();
    // An hour of out-of-orderness: no window can fire before the input ends.
    events(&env, input, 3_600_000)
        .key_by(|e: &Ev| e.0)
        .window(WindowAssigner::tumbling(ms(1000)))
        .aggregate_with(Sum, |k: &char, w, s| (*k, w.start, s))
        .sink_to(sink.clone(), "out");
    let r = run_with(&env, stepwise());
    let want: Vec<(char, i64, i64)> = (0..5).flat_map(|w| [('e', w * 1000, 5), ('o', w * 1000, 5)]).collect();
    assert_eq!(sorted(sink.values()), sorted(want));
    assert_eq!(late_dropped(&r, "WindowAggregate"), 0);
}

// ---------------------------------------------------------------- two inputs

/// Joins orders with user names, buffering orders that arrive before the name.
#[derive(Clone, Default)]
struct Enrich {
    name: Option<ValueState<String>>,
    pending: Option<ListState<i64>>,
}
impl KeyedCoProcessFunction for Enrich {
    type Key = u32;
    type In1 = (u32, i64);
    type In2 = (u32, String);
    type Out = (String, i64);
    fn open(&mut self, s: &mut KeyedStateStore<u32>) -> Res {
        self.name = Some(s.value_state("name")?);
        self.pending = Some(s.list_state("pending")?);
        Ok(())
    }
    fn process_element1(&mut self, o: (u32, i64), ctx: &mut Ctx<'_, u32>, out: &mut Collector<'_, Self::Out>) -> Res {
        match ctx.value(self.name.unwrap()) {
            Some(n) => out.collect((n, o.1)),
            None => ctx.list_add(self.pending.unwrap(), o.1),
        }
        Ok(())
    }
    fn process_element2(
        &mut self,
        u: (u32, String),
        ctx: &mut Ctx<'_, u32>,
        out: &mut Collector<'_, Self::Out>,
    ) -> Res {
        for amount in ctx.take_list(self.pending.unwrap()) {
            out.collect((u.1.clone(), amount));
        }
        ctx.set_value(self.name.unwrap(), u.1);
        Ok(())
    }
}

#[test]
fn connect_with_keyed_co_process_shares_state_between_inputs() {
    let env = StreamEnv::new("connect");
    env.set_parallelism(2);
    let sink = CollectSink::new();
    let orders = plain(&env, vec![(1u32, 10i64), (2, 20), (1, 11), (3, 30), (2, 21)], "orders");
    let users = plain(&env, vec![(1u32, "ann".to_string()), (2, "bob".to_string())], "users");
    orders
        .connect(&users)
        .key_by(|o: &(u32, i64)| o.0, |u: &(u32, String)| u.0)
        .process(Enrich::default())
        .sink_to(sink.clone(), "out");
    run(&env);
    // User 3 has no name: its order stays pending.
    let want: Vec<(String, i64)> = [("ann", 10), ("ann", 11), ("bob", 20), ("bob", 21)]
        .map(|(n, a)| (n.into(), a))
        .into();
    assert_eq!(sorted(sink.values()), want);
}

#[test]
fn window_join_pairs_records_with_equal_keys_in_the_same_window() {
    let env = StreamEnv::new("join");
    env.set_parallelism(2);
    let sink = CollectSink::new();
    let left = events(&env, vec![('a', 1, 1), ('a', 12, 2), ('b', 3, 3)], 0);
    let right = events(&env, vec![('a', 5, 10), ('a', 8, 20), ('a', 15, 30), ('b', 25, 40)], 0);
    left.join(&right)
        .where_key(|e: &Ev| e.0)
        .equal_to(|e: &Ev| e.0, WindowAssigner::tumbling(ms(10)))
        .apply(|l: &Ev, r: &Ev| (l.2, r.2))
        .sink_to(sink.clone(), "out");
    run(&env);
    assert_eq!(timed(&sink), vec![((1, 10), 9), ((1, 20), 9), ((2, 30), 19)]);
}

// ---------------------------------------------------------------- parallelism and plans

/// A sink (and its writers) that remembers which subtask, of how many, wrote each value.
#[derive(Clone, Default)]
struct WhoWrote(Arc<Mutex<Vec<(u32, u32, i64)>>>, u32, u32);
impl Sink for WhoWrote {
    type In = i64;
    type Writer = WhoWrote;
    fn writer(&self, subtask: u32, parallelism: u32) -> Res<WhoWrote> {
        Ok(WhoWrote(self.0.clone(), subtask, parallelism))
    }
}
impl SinkWriter for WhoWrote {
    type In = i64;
    fn write(&mut self, batch: Vec<Record<i64>>) -> Res {
        self.0
            .lock()
            .unwrap()
            .extend(batch.into_iter().map(|r| (self.1, self.2, r.value)));
        Ok(())
    }
    fn finish(&mut self) -> Res {
        Ok(())
    }
}

#[test]
fn set_parallelism_runs_the_operator_with_that_many_subtasks() {
    let seen = WhoWrote::default();
    let env = StreamEnv::new("parallelism");
    let build = || {
        plain(&env, (0..30).collect::<Vec<i64>>(), "src")
            .rebalance()
            .map(|x: i64| x + 1)
            .set_parallelism(3)
            .sink_to(seen.clone(), "who")
            .set_parallelism(3);
    };
    build();
    let plan = env.build().unwrap().describe();
    assert!(plan.contains("task x1: src\n    --REBALANCE--> Map\n"), "{plan}");
    assert!(plan.contains("task x3: Map -> who\n"), "{plan}");
    build(); // `build()` took the graph: add it again to run it
    let r = run(&env);
    assert_eq!(r.vertices.iter().map(|v| v.parallelism).collect::<Vec<_>>(), [1, 3, 3]);
    let rows = seen.0.lock().unwrap().clone();
    assert!(rows.iter().all(|&(_, p, _)| p == 3), "{rows:?}");
    let mut per_subtask = BTreeMap::new();
    for &(s, _, _) in &rows {
        *per_subtask.entry(s).or_insert(0) += 1;
    }
    assert_eq!(
        per_subtask,
        BTreeMap::from([(0, 10), (1, 10), (2, 10)]),
        "round robin over 3 subtasks"
    );
    assert_eq!(
        sorted(rows.iter().map(|r| r.2).collect()),
        (1..=30).collect::<Vec<i64>>()
    );
}

#[test]
fn describe_shows_forward_operators_chained_and_breaks_chains_at_shuffles() {
    let build = |split: bool| {
        let env = StreamEnv::new("plan");
        let filtered = plain(&env, vec![1i64], "src").map(|x: i64| x).filter(|_: &i64| true);
        let filtered = if split { filtered.disable_chaining() } else { filtered };
        filtered
            .key_by(|x: &i64| *x)
            .reduce(|a, b| a + b)
            .sink_to(CollectSink::new(), "out");
        env.build().unwrap().describe()
    };
    let chained = build(false);
    let want = "job 'plan' (max parallelism 128)\n  task x1: src -> Map -> Filter\n    --HASH--> Reduce\n  task x1: Reduce -> out\n";
    assert_eq!(chained, want);
    let split = build(true);
    assert!(
        split.contains("task x1: src -> Map\n    --FORWARD--> Filter\n"),
        "{split}"
    );
    assert!(split.contains("task x1: Filter\n    --HASH--> Reduce\n"), "{split}");
}

// ---------------------------------------------------------------- running jobs

/// Subtask 0 emits ('k', 100 * i) every 2 ms forever; subtask 1 never emits anything.
struct OneSided;
struct OneSidedReader(u32, i64);
impl Source for OneSided {
    type Out = (char, i64);
    type Reader = OneSidedReader;
    fn reader(&self, subtask: u32, _: u32) -> Res<OneSidedReader> {
        Ok(OneSidedReader(subtask, 0))
    }
}
impl SourceReader for OneSidedReader {
    type Out = (char, i64);
    fn poll_batch(&mut self, _: usize, out: &mut Vec<(char, i64)>, ctx: &OperatorContext) -> Res<SourcePoll> {
        let now = ctx.clock.now_ms();
        if self.0 != 0 {
            return Ok(SourcePoll::WaitUntil(now + 10));
        }
        out.push(('k', self.1 * 100));
        self.1 += 1;
        Ok(SourcePoll::WaitUntil(now + 2))
    }
}

#[test]
fn idle_source_subtask_does_not_hold_back_windows() {
    let env = StreamEnv::new("idleness");
    env.set_parallelism(2);
    let strategy = WatermarkStrategy::for_monotonous_timestamps()
        .with_timestamp_assigner(|r: &(char, i64)| r.1)
        .with_idleness(ms(100));
    let src = env.from_source(OneSided, strategy, "one-sided");
    env.set_parallelism(1);
    let sink = CollectSink::new();
    src.key_by(|r: &(char, i64)| r.0)
        .window(WindowAssigner::tumbling(ms(1000)))
        .process(|_: &char, w, recs: &[(char, i64)], out: &mut Vec<(i64, usize)>| out.push((w.start, recs.len())))
        .sink_to(sink.clone(), "out");
    let fired_while_running = rt().block_on(async {
        let job = env.spawn(ExecutionConfig::default()).unwrap();
        let mut fired = false;
        for _ in 0..3000 {
            fired = sink.values().contains(&(0, 10));
            if fired {
                break;
            }
            tokio::time::sleep(ms(10)).await;
        }
        job.drain();
        assert!(!job.join().await.expect("drained job").cancelled);
        fired
    });
    assert!(
        fired_while_running,
        "window [0,1000) never fired while subtask 1 was idle"
    );
    let got = sink.values();
    let starts: Vec<i64> = got.iter().map(|w| w.0).collect();
    assert_eq!(
        starts,
        (0..got.len() as i64).map(|i| i * 1000).collect::<Vec<_>>(),
        "each window once, in order"
    );
    // Every window but the last (cut short by the drain) is complete.
    assert!(got[..got.len() - 1].iter().all(|w| w.1 == 10), "{got:?}");
}

/// Spawns the job, waits until `sink` holds more than `n` records, cancels it, and joins it.
fn cancel_after<T: Data>(env: &StreamEnv, sink: &CollectSink<T>, n: usize) -> Result<JobResult, JobError> {
    rt().block_on(async {
        let job = env.spawn(ExecutionConfig::default()).unwrap();
        for _ in 0..3000 {
            if sink.records().len() > n {
                break;
            }
            tokio::time::sleep(ms(10)).await;
        }
        job.cancel();
        job.join().await
    })
}

#[test]
fn cancel_stops_an_unbounded_job_and_reports_it_cancelled() {
    let env = StreamEnv::new("cancel");
    let sink = CollectSink::new();
    env.from_source(
        GeneratorSource::new(1, None, |i, _| i),
        WatermarkStrategy::no_watermarks(),
        "endless",
    )
    .map(|i: u64| i * 2)
    .sink_to(sink.clone(), "out");
    let r = cancel_after(&env, &sink, 0).expect("a cancelled job is not an error");
    assert!(r.cancelled);
    assert!(!sink.records().is_empty());
}

#[test]
fn cancel_of_a_multi_task_keyed_job_reports_cancelled_not_a_channel_error() {
    for round in 0..10 {
        let env = StreamEnv::new("cancel-keyed");
        env.set_parallelism(2);
        let sink = CollectSink::new();
        env.from_source(
            GeneratorSource::new(1, None, |i, _| (i % 7, 1u64)),
            WatermarkStrategy::no_watermarks(),
            "endless",
        )
        .key_by(|p: &(u64, u64)| p.0)
        .reduce(|a, b| (a.0, a.1 + b.1))
        .sink_to(sink.clone(), "out");
        match cancel_after(&env, &sink, 10_000) {
            Ok(r) => assert!(r.cancelled, "round {round}"),
            Err(e) => panic!("round {round}: cancel ended in an error: {e}"),
        }
    }
}

// ---------------------------------------------------------------- bad jobs

#[test]
fn zero_size_window_is_rejected_by_build_naming_the_problem() {
    let env = StreamEnv::new("bad-window");
    events(&env, vec![('a', 0, 1)], 0)
        .key_by(|e: &Ev| e.0)
        .window(WindowAssigner::tumbling(Duration::ZERO))
        .aggregate(Sum)
        .sink_to(CollectSink::new(), "out");
    let err = env.build().err().expect("a zero-size window must be rejected");
    assert!(matches!(err, JobError::InvalidGraph(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("WindowAggregate") && msg.contains("tumbling window size must be positive"),
        "{msg}"
    );
}

#[test]
fn job_without_a_sink_is_rejected() {
    let env = StreamEnv::new("no-sink");
    let _ = plain(&env, vec![1i64], "src").map(|x: i64| x + 1);
    let err = env.build().err().expect("a job without a sink must be rejected");
    let msg = err.to_string();
    assert!(
        msg.contains("'Map'") && msg.contains("end the stream in a sink"),
        "{msg}"
    );
}

#[test]
fn job_without_sources_is_rejected() {
    let err = StreamEnv::new("empty")
        .build()
        .err()
        .expect("an empty job must be rejected");
    assert!(err.to_string().contains("no sources"), "{err}");
}

#[test]
fn explicit_forward_between_different_parallelisms_is_rejected() {
    let env = StreamEnv::new("bad-forward");
    env.set_parallelism(2);
    plain(&env, vec![1i64], "src")
        .forward()
        .map(|x: i64| x)
        .set_parallelism(3)
        .sink_to(CollectSink::new(), "out");
    let msg = env.build().err().expect("forward 2 -> 3 must be rejected").to_string();
    assert!(
        msg.contains("forward edge from 'src' (parallelism 2) to 'Map' (parallelism 3)"),
        "{msg}"
    );
}

#[test]
fn window_without_timestamps_fails_the_job_with_missing_timestamp() {
    let env = StreamEnv::new("no-timestamps");
    plain(&env, vec![('a', 0i64, 1i64)], "src")
        .key_by(|e: &Ev| e.0)
        .window(WindowAssigner::tumbling(ms(10)))
        .aggregate(Sum)
        .sink_to(CollectSink::new(), "out");
    let err = rt()
        .block_on(env.execute(ExecutionConfig::default()))
        .expect_err("the job must fail");
    match &err {
        JobError::TaskFailed {
            source: OperatorError::MissingTimestamp(op),
            ..
        } => assert_eq!(op, "WindowAggregate"),
        other => panic!("wrong error: {other:?}"),
    }
    assert!(err.to_string().contains("needs event timestamps"), "{err}");
}
