//! Property tests of event-time windows: for random bounded inputs (keys from a small set,
//! timestamps out of order by at most the watermark bound, i.e. every record's timestamp is at
//! least the highest timestamp before it minus the bound), the per-key-and-window sums that
//! tumbling, sliding and session windows emit must equal a plain batch computation over the
//! same input, at parallelism 1 and 4, with random batch sizes and a watermark after every
//! batch (so windows fire while records are still arriving), and no record may be counted late.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use sluice_core::connectors::CollectSink;
use sluice_core::{ExecutionConfig, StreamEnv, WindowAssigner};

/// (key, window start, window end, sum of values)
type WindowSum = (char, i64, i64, i64);

/// A watermark bound and events that respect it: `hi` grows by `step`, and each event lags it
/// by at most the bound, so it is never more than the bound behind any earlier event. Lags of
/// exactly 0 and exactly the bound are favoured: they put records right at the watermark.
fn bounded_input() -> impl Strategy<Value = (i64, Vec<Ev>)> {
    (0i64..=20).prop_flat_map(|bound| {
        let lag = prop_oneof![Just(0), Just(bound), 0..=bound];
        let steps = proptest::collection::vec((0u8..3, 0i64..=8, lag, 1i64..=9), 0..60);
        (Just(bound), steps).prop_map(|(bound, steps)| {
            let mut hi = 0;
            let events = steps
                .into_iter()
                .map(|(k, step, lag, v)| {
                    hi += step;
                    ((b'a' + k) as char, (hi - lag).max(0), v)
                })
                .collect();
            (bound, events)
        })
    })
}

/// The windows the engine emits for `input`, and the late records it dropped.
fn engine(
    input: &[Ev],
    bound: i64,
    assigner: WindowAssigner,
    parallelism: u32,
    batch_size: usize,
) -> (Vec<WindowSum>, u64) {
    let env = StreamEnv::new("window-property");
    env.set_parallelism(parallelism);
    let sink = CollectSink::new();
    events(&env, input.to_vec(), bound as u64)
        .key_by(|e: &Ev| e.0)
        .window(assigner)
        .aggregate_with(Sum, |k: &char, w, s| (*k, w.start, w.end, s))
        .sink_to(sink.clone(), "out");
    let r = run_with(
        &env,
        ExecutionConfig {
            batch_size,
            watermark_interval_ms: 0,
            ..Default::default()
        },
    );
    (sorted(sink.values()), late_dropped(&r, "WindowAggregate"))
}

fn to_rows(m: BTreeMap<(char, i64, i64), i64>) -> Vec<WindowSum> {
    m.into_iter().map(|((k, s, e), v)| (k, s, e, v)).collect()
}

fn batch_tumbling(input: &[Ev], size: i64) -> Vec<WindowSum> {
    let mut m = BTreeMap::new();
    for &(k, ts, v) in input {
        let start = ts.div_euclid(size) * size;
        *m.entry((k, start, start + size)).or_insert(0) += v;
    }
    to_rows(m)
}

fn batch_sliding(input: &[Ev], size: i64, slide: i64) -> Vec<WindowSum> {
    let mut m = BTreeMap::new();
    for &(k, ts, v) in input {
        for n in (ts - size).div_euclid(slide)..=ts.div_euclid(slide) {
            let start = n * slide;
            if start <= ts && ts < start + size {
                *m.entry((k, start, start + size)).or_insert(0) += v;
            }
        }
    }
    to_rows(m)
}

/// Sessions per key: sorted by time, a record joins the current session if it starts before
/// the session's end (windows merge only when they overlap), else it starts a new one.
fn batch_sessions(input: &[Ev], gap: i64) -> Vec<WindowSum> {
    let mut per_key: BTreeMap<char, Vec<(i64, i64)>> = BTreeMap::new();
    for &(k, ts, v) in input {
        per_key.entry(k).or_default().push((ts, v));
    }
    let mut out = Vec::new();
    for (k, mut recs) in per_key {
        recs.sort();
        let mut cur: Option<(i64, i64, i64)> = None;
        for (ts, v) in recs {
            cur = match cur {
                Some((s, e, sum)) if ts < e => Some((s, e.max(ts + gap), sum + v)),
                Some((s, e, sum)) => {
                    out.push((k, s, e, sum));
                    Some((ts, ts + gap, v))
                }
                None => Some((ts, ts + gap, v)),
            };
        }
        out.extend(cur.map(|(s, e, sum)| (k, s, e, sum)));
    }
    sorted(out)
}

/// Runs the engine at parallelism 1 and 4 and checks it against `expected`.
fn check(
    input: &[Ev],
    bound: i64,
    assigner: WindowAssigner,
    batch: usize,
    expected: &[WindowSum],
) -> Result<(), TestCaseError> {
    for p in [1, 4] {
        let (got, late) = engine(input, bound, assigner, p, batch);
        prop_assert_eq!(
            &got,
            expected,
            "parallelism {}, batch size {}, {:?}",
            p,
            batch,
            assigner
        );
        prop_assert_eq!(late, 0, "late records at parallelism {}", p);
    }
    Ok(())
}

/// 32 cases unless `PROPTEST_CASES` asks for more.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tumbling_window_sums_equal_the_batch_computation(
        (bound, input) in bounded_input(), size in 1i64..=30, batch in 1usize..=8,
    ) {
        let assigner = WindowAssigner::Tumbling { size, offset: 0 };
        check(&input, bound, assigner, batch, &batch_tumbling(&input, size))?;
    }

    #[test]
    fn sliding_window_sums_equal_the_batch_computation(
        (bound, input) in bounded_input(), slide in 1i64..=15, extra in 0i64..=30, batch in 1usize..=8,
    ) {
        let size = slide + extra;
        let assigner = WindowAssigner::Sliding { size, slide, offset: 0 };
        check(&input, bound, assigner, batch, &batch_sliding(&input, size, slide))?;
    }

    /// With even timestamps and an odd gap no record can start exactly where a session ends,
    /// so whether touching windows merge never matters.
    #[test]
    fn session_window_sums_equal_the_batch_computation_when_no_record_touches_a_session_end(
        (bound, input) in bounded_input(), half_gap in 0i64..=10, batch in 1usize..=8,
    ) {
        let input: Vec<Ev> = input.into_iter().map(|(k, ts, v)| (k, ts * 2, v)).collect();
        let gap = 2 * half_gap + 1;
        let assigner = WindowAssigner::Session { gap };
        check(&input, 2 * bound, assigner, batch, &batch_sessions(&input, gap))?;
    }

    /// Any timestamps: a record may start exactly where a session that already fired ends.
    #[test]
    fn session_window_sums_equal_the_batch_computation(
        (bound, input) in bounded_input(), gap in 1i64..=20, batch in 1usize..=8,
    ) {
        let assigner = WindowAssigner::Session { gap };
        check(&input, bound, assigner, batch, &batch_sessions(&input, gap))?;
    }
}

/// Sliding windows shorter than their slide leave gaps; a record in a gap belongs to no window,
/// which is not the same as arriving late.
#[test]
fn sliding_window_gaps_are_not_counted_as_late() {
    let input = vec![('a', 1, 1), ('a', 7, 2), ('a', 11, 4)];
    let assigner = WindowAssigner::Sliding {
        size: 5,
        slide: 10,
        offset: 0,
    };
    let expected = batch_sliding(&input, 5, 10);
    assert_eq!(expected, vec![('a', 0, 5, 1), ('a', 10, 15, 4)]);
    let (got, late) = engine(&input, 0, assigner, 1, 1);
    assert_eq!(got, expected);
    assert_eq!(late, 0, "the record at 7 falls between windows; it is not late");
}

/// A record that starts exactly where a fired session ends opens a new session, in the engine
/// as in the batch model: sessions merge only when they overlap, so the result does not depend
/// on when the watermark fired the first one.
#[test]
fn session_touching_a_fired_session_gives_the_same_result_as_batch() {
    // b@10 moves the watermark to 9, which fires a's session [0,10); then a@10 arrives
    // (not late: the watermark promised only that no record at or before 9 would come).
    let input = vec![('a', 0, 1), ('b', 10, 100), ('a', 10, 2)];
    let assigner = WindowAssigner::Session { gap: 10 };
    let expected = batch_sessions(&input, 10);
    assert_eq!(expected, vec![('a', 0, 10, 1), ('a', 10, 20, 2), ('b', 10, 20, 100)]);
    let (got, late) = engine(&input, 0, assigner, 1, 1);
    assert_eq!(late, 0);
    assert_eq!(got, expected);
}
