//! A keyed, windowed job runs to completion under the simulator and produces exactly the
//! result of a plain batch computation, on every seed.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sluice_core::connectors::{CollectSink, GeneratorSource};
use sluice_core::{WatermarkStrategy, WindowAssigner};

const EVENTS: u64 = 20_000;

/// Record i: key in 0..16, value in 0..100, event time i ms with up to 50 ms jitter.
fn record(i: u64, rng: &mut sluice_core::state::rng::SplitMix64) -> (u64, u64, i64) {
    (
        rng.next_below(16),
        rng.next_below(100),
        i as i64 + rng.next_below(50) as i64,
    )
}

fn oracle() -> BTreeMap<(u64, i64), u64> {
    let mut sums = BTreeMap::new();
    for i in 0..EVENTS {
        let mut rng = sluice_core::state::rng::SplitMix64::new(sluice_core::state::rng::mix(7, i));
        let (k, v, t) = record(i, &mut rng);
        *sums.entry((k, t - t.rem_euclid(1000))).or_insert(0) += v;
    }
    sums
}

#[madsim::test]
async fn windowed_sum_matches_batch_result_on_a_simulated_node() {
    let handle = madsim::runtime::Handle::current();
    let node = handle
        .create_node()
        .name("worker-1")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        .build();
    let sink = CollectSink::new();
    let collected = sink.clone();
    let result = node
        .spawn(async move {
            sluice_sim::run_job(|env| {
                env.set_parallelism(3);
                env.from_source(
                    GeneratorSource::new(7, Some(EVENTS), record),
                    WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(60))
                        .with_timestamp_assigner(|r: &(u64, u64, i64)| r.2),
                    "gen",
                )
                .key_by(|r: &(u64, u64, i64)| r.0)
                .window(WindowAssigner::tumbling(Duration::from_secs(1)))
                .aggregate_with(SumValues, |k: &u64, w, s: u64| (*k, w.start, s))
                .set_parallelism(2)
                .sink_to(sink, "collect");
            })
            .await
        })
        .await
        .expect("the job's node did not crash");
    let result = result.expect("job finished");
    assert_eq!(result.records_in, EVENTS);
    let got: BTreeMap<(u64, i64), u64> = collected
        .values()
        .into_iter()
        .map(|(k, start, s)| ((k, start), s))
        .collect();
    assert_eq!(got.len(), collected.values().len(), "a window fired twice");
    assert_eq!(got, oracle());
}

#[derive(Clone)]
struct SumValues;

impl sluice_core::AggregateFunction for SumValues {
    type In = (u64, u64, i64);
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, v: (u64, u64, i64)) {
        *acc += v.1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}
