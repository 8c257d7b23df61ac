//! The sessions job embedded, against a small input whose sessions are worked out by hand.

use std::time::Duration;

use clicks::{sessions, Session, SessionOptions};
use sluice_core::connectors::CollectSink;
use sluice_core::{ExecutionConfig, StreamEnv};

fn run(input: &str, gap: Duration, parallelism: u32) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clicks.csv");
    std::fs::write(&path, input).unwrap();
    let options = SessionOptions {
        input: path,
        output: None,
        print: true,
        gap,
        lines_per_second: None,
    };
    let env = StreamEnv::new("sessions");
    env.set_parallelism(parallelism);
    let sink = CollectSink::new();
    sessions(&env, &options).unwrap().sink_to(sink.clone(), "collect");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(env.execute(ExecutionConfig::default())).unwrap();
    let mut lines: Vec<String> = sink.values().iter().map(Session::line).collect();
    lines.sort();
    lines
}

const CLICKS: &str = "\
1000,ann,home
2000,bob,home
3000,ann,cart
9000,ann,pay

9500,bob,help
20000,ann,home
20000,cid,home
26000,cid,cart
";

#[test]
fn sessions_close_after_the_gap_at_any_parallelism() {
    // ann: 1000..9000 (9000 - 3000 = 6 s, within the 6 s gap), then 20000 alone; bob: 2000
    // and 9500 are 7.5 s apart, two sessions; cid: 20000..26000 (exactly the gap: one).
    let want = [
        "ann 1000 9000 3",
        "ann 20000 20000 1",
        "bob 2000 2000 1",
        "bob 9500 9500 1",
        "cid 20000 26000 2",
    ];
    for parallelism in [1, 3] {
        assert_eq!(
            run(CLICKS, Duration::from_secs(6), parallelism),
            want,
            "parallelism {parallelism}"
        );
    }
}

#[test]
fn a_damaged_line_stops_the_job_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clicks.csv");
    std::fs::write(&path, "1000,ann,home\nsoon,bob,home\n").unwrap();
    let options = SessionOptions {
        input: path,
        output: None,
        print: true,
        gap: Duration::from_secs(1),
        lines_per_second: None,
    };
    let env = StreamEnv::new("sessions");
    sessions(&env, &options).unwrap().sink_to(CollectSink::new(), "collect");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(env.execute(ExecutionConfig::default())).unwrap_err();
    assert!(err.to_string().contains("not a time in ms: \"soon\""), "{err}");
}
