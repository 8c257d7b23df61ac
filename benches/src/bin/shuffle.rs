//! Shuffle benchmark: a keyed exchange at parallelism 2 (generator → key_by → count →
//! discard), with the exchange in process versus over a real TCP connection on 127.0.0.1
//! (encoded, framed, credit-controlled, as between two workers). Reports records/s, MB/s of
//! encoded batches, and the ratio, measured in the same run.
//!
//! ```text
//! cargo run --release -p sluice-benches --bin shuffle -- [--records N] [--repeat 3]
//! ```

use std::time::Duration;

use sluice_core::connectors::{DiscardSink, GeneratorSource};
use sluice_core::{ExecutionConfig, Record, StreamEnv, WatermarkStrategy};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

type Rec = (u64, u64, String);

fn record(i: u64) -> Rec {
    (i % 10_007, i, format!("payload-{i:012}"))
}

fn run(records: u64, over_tcp: bool) -> anyhow::Result<Duration> {
    let env = StreamEnv::new("shuffle");
    env.set_parallelism(2);
    env.from_source(GeneratorSource::new(1, Some(records), |i, _| record(i)), WatermarkStrategy::no_watermarks(), "gen")
        .key_by(|r: &Rec| r.0)
        .reduce(|a: Rec, b: Rec| (a.0, a.1 + b.1, b.2))
        .sink_to(DiscardSink::default(), "discard");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let config = ExecutionConfig {
        shuffle_over_tcp: over_tcp,
        ..ExecutionConfig::default()
    };
    let r = rt.block_on(env.execute(config))?;
    anyhow::ensure!(r.records_in == records, "lost records: {} of {records}", r.records_in);
    Ok(r.duration)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = arg(&args, "--records").map(|s| s.parse()).transpose()?.unwrap_or(2_000_000);
    let repeat: u32 = arg(&args, "--repeat").map(|s| s.parse()).transpose()?.unwrap_or(3);
    // Bytes per record on the wire: a batch of 1024 records encoded as the shuffle does.
    let batch: Vec<Record<Rec>> = (0..1024).map(|i| Record::new(record(i), sluice_core::EventTime::MIN)).collect();
    let bytes_per_record = bincode::serialize(&batch)?.len() as f64 / 1024.0;
    let best = |tcp: bool| -> anyhow::Result<Duration> {
        let mut best = Duration::MAX;
        for _ in 0..repeat.max(1) {
            best = best.min(run(records, tcp)?);
        }
        Ok(best)
    };
    let local = best(false)?;
    let tcp = best(true)?;
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let mbs = |d: Duration| rate(d) * bytes_per_record / 1e6;
    println!("| exchange | records | records/s | MB/s (encoded) | ratio to in-process |");
    println!("|---|---|---|---|---|");
    println!("| in process | {records} | {:.0} | {:.1} | 1.000 |", rate(local), mbs(local));
    println!("| TCP loopback | {records} | {:.0} | {:.1} | {:.3} |", rate(tcp), mbs(tcp), rate(tcp) / rate(local));
    println!("\n{bytes_per_record:.1} bytes per record encoded; best of {repeat} runs each.");
    Ok(())
}
