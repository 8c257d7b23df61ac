//! Nexmark runner: each query over a fixed number of generated events, at parallelism 1 and 2,
//! each run in its own child process so peak memory is per run. Prints a Markdown table.
//!
//! ```text
//! cargo run --release -p sluice-benches --bin nexmark -- [--events N] [--queries q0,q1,...] [--parallelism 1,2]
//! ```

use std::process::Command;

use anyhow::{bail, Context};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // Child mode: one run, one machine-readable line.
    if let Some(job) = arg(&args, "--one") {
        let events: u64 = arg(&args, "--events").context("--events")?.parse()?;
        let p: u32 = arg(&args, "--parallelism").context("--parallelism")?.parse()?;
        let f = sluice_benches::run_once(&job, events, p)?;
        println!(
            "RESULT {} {} {} {} {:.4} {:.0} {}",
            f.job,
            f.parallelism,
            f.events,
            f.results,
            f.seconds,
            f.events_per_second,
            f.peak_rss_kib.unwrap_or(0)
        );
        return Ok(());
    }
    let events = arg(&args, "--events").unwrap_or_else(|| "2000000".into());
    let queries = arg(&args, "--queries").unwrap_or_else(|| "q0,q1,q2,q3,q4,q5,q7,q8".into());
    let pars = arg(&args, "--parallelism").unwrap_or_else(|| "1,2".into());
    let me = std::env::current_exe()?;
    println!("| query | parallelism | events | results | seconds | events/s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for q in queries.split(',') {
        for p in pars.split(',') {
            let out = Command::new(&me)
                .args(["--one", &format!("nexmark-{q}"), "--events", &events, "--parallelism", p])
                .output()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let Some(line) = stdout.lines().find(|l| l.starts_with("RESULT ")) else {
                bail!("run of {q} at parallelism {p} failed: {}", String::from_utf8_lossy(&out.stderr));
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let rss_mib = f[7].parse::<f64>().unwrap_or(0.0) / 1024.0;
            println!("| {q} | {} | {} | {} | {} | {} | {:.0} |", f[2], f[3], f[4], f[5], f[6], rss_mib);
        }
    }
    Ok(())
}
