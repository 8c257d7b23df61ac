//! A complete Sluice program: user sessions from a stream of clicks.
//!
//! Clicks are generated (seeded, so every run is the same), stamped with event time, keyed by
//! user and grouped into session windows that close after 30 s of inactivity. A keyed process
//! function also flags users whose click count crosses 100, using value state.
//!
//! ```text
//! cargo run --release -p sluice --example click_sessions
//! ```

use std::time::Duration;

use sluice_core::connectors::{GeneratorSource, PrintSink};
use sluice_core::state::{KeyedStateStore, ValueState};
use sluice_core::{
    AggregateFunction, Collector, ExecutionConfig, KeyedContext, KeyedProcessFunction, OperatorError, StreamEnv,
    WatermarkStrategy, WindowAssigner,
};

/// A click: (user, page, event time in ms).
type Click = (u32, u32, i64);

/// Counts the clicks of a session and the distinct pages seen.
#[derive(Clone)]
struct SessionStats;

impl AggregateFunction for SessionStats {
    type In = Click;
    type Acc = (u64, std::collections::BTreeSet<u32>);
    type Out = (u64, usize);
    fn create_accumulator(&self) -> Self::Acc {
        (0, Default::default())
    }
    fn add(&self, acc: &mut Self::Acc, c: Click) {
        acc.0 += 1;
        acc.1.insert(c.1);
    }
    fn get_result(&self, acc: &Self::Acc) -> (u64, usize) {
        (acc.0, acc.1.len())
    }
    fn merge(&self, mut a: Self::Acc, b: Self::Acc) -> Self::Acc {
        a.0 += b.0;
        a.1.extend(b.1);
        a
    }
}

/// Emits a user once, when their total click count reaches 100.
#[derive(Clone, Default)]
struct HeavyUsers {
    clicks: Option<ValueState<u64>>,
}

impl KeyedProcessFunction for HeavyUsers {
    type Key = u32;
    type In = Click;
    type Out = String;

    fn open(&mut self, state: &mut KeyedStateStore<u32>) -> Result<(), OperatorError> {
        self.clicks = Some(state.value_state("clicks")?);
        Ok(())
    }

    fn process_element(
        &mut self,
        _c: Click,
        ctx: &mut KeyedContext<'_, u32>,
        out: &mut Collector<'_, String>,
    ) -> Result<(), OperatorError> {
        let n = ctx.update_value(self.clicks.expect("opened"), |n| {
            *n += 1;
            *n
        });
        if n == 100 {
            let user = *ctx.key();
            out.collect(format!("user {user} reached 100 clicks at t={}", ctx.timestamp()));
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = StreamEnv::new("click-sessions");
    env.set_parallelism(2);
    // 50k clicks of 200 users over ~40 minutes of event time, up to 5 s out of order.
    let clicks = env.from_source(
        GeneratorSource::new(42, Some(50_000), |i, rng| {
            let user = rng.next_below(200) as u32;
            let page = rng.next_below(30) as u32;
            let t = (i as i64) * 50 + rng.next_below(5_000) as i64;
            (user, page, t)
        }),
        WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(5))
            .with_timestamp_assigner(|c: &Click| c.2),
        "clicks",
    );
    clicks
        .key_by(|c: &Click| c.0)
        .window(WindowAssigner::session(Duration::from_secs(30)))
        .aggregate_with(SessionStats, |user: &u32, w, (n, pages): (u64, usize)| {
            format!(
                "user {user}: session {}..{} with {n} clicks on {pages} pages",
                w.start, w.end
            )
        })
        .uid("sessions")
        .filter(|line: &String| line.contains(" with 1") && line.len() > 60)
        .sink_to(PrintSink::with_format(|s: &String| s.clone()), "print-sessions");
    clicks
        .key_by(|c: &Click| c.0)
        .process(HeavyUsers::default())
        .uid("heavy-users")
        .sink_to(PrintSink::with_format(|s: &String| s.clone()), "print-heavy");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(env.execute(ExecutionConfig::default()))?;
    eprintln!(
        "{} clicks in, {} lines out in {:.2?}",
        result.records_in, result.records_out, result.duration
    );
    Ok(())
}
