//! The registry of built-in jobs that `sluice run` (and later the coordinator) can start by
//! name.

pub mod nexmark;
pub mod wordcount;

use std::path::PathBuf;

use sluice_core::connectors::nexmark::NexmarkConfig;
use sluice_core::connectors::{DiscardSink, FileSink, PrintSink};
use sluice_core::{Data, DataStream, StreamEnv};

use checksum::ChecksumSink;
use sluice_core::error::{InvalidSetting, JobBuildError};

mod checksum;

/// A built-in job: its name and what it does.
#[derive(Debug, Clone, Copy)]
pub struct JobInfo {
    /// The name to run it by.
    pub name: &'static str,
    /// One line on what it computes.
    pub description: &'static str,
    /// Options it takes beyond `--parallelism`.
    pub options: &'static str,
}

const NEXMARK_OPTS: &str = "--events N, --events-per-second N, --seed N, --events-dir DIR, --output DIR | --print";

/// Every built-in job.
pub const JOBS: &[JobInfo] = &[
    JobInfo {
        name: "wordcount",
        description: "counts words of a text file; emits word<TAB>count on every change",
        options: "--input FILE --output DIR [--lines-per-second N]",
    },
    JobInfo {
        name: "nexmark-q0",
        description: "Nexmark q0: pass-through of all bids",
        options: NEXMARK_OPTS,
    },
    JobInfo {
        name: "nexmark-q1",
        description: "Nexmark q1: bids with prices converted to euros",
        options: NEXMARK_OPTS,
    },
    JobInfo {
        name: "nexmark-q2",
        description: "Nexmark q2: bids on every 123rd auction",
        options: NEXMARK_OPTS,
    },
    JobInfo {
        name: "nexmark-q3",
        description: "Nexmark q3: category-10 auctions of sellers in OR/ID/CA, joined with the seller",
        options: NEXMARK_OPTS,
    },
    JobInfo {
        name: "nexmark-q4",
        description: "Nexmark q4: average closing price per category",
        options: NEXMARK_OPTS,
    },
    JobInfo {
        name: "nexmark-q5",
        description: "Nexmark q5: hottest auctions per 10 s window sliding by 2 s",
        options: NEXMARK_OPTS,
    },
    JobInfo {
        name: "nexmark-q7",
        description: "Nexmark q7: highest bids per 10 s window",
        options: NEXMARK_OPTS,
    },
    JobInfo {
        name: "nexmark-q8",
        description: "Nexmark q8: people who opened an auction in the 10 s window they registered in",
        options: NEXMARK_OPTS,
    },
];

/// Options of a job run, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// Default parallelism of the job's operators.
    pub parallelism: u32,
    /// Input file (wordcount).
    pub input: Option<PathBuf>,
    /// Output directory for part files.
    pub output: Option<PathBuf>,
    /// Print results to standard output.
    pub print: bool,
    /// Number of generated events (Nexmark); `None` runs forever.
    pub events: Option<u64>,
    /// Pace of generated events per second (Nexmark).
    pub events_per_second: Option<u64>,
    /// Generator seed (Nexmark).
    pub seed: u64,
    /// Pace of input lines per second (wordcount).
    pub lines_per_second: Option<u64>,
    /// Read Nexmark events from the part files in this directory (written by
    /// `nexmark --write-events`) instead of generating them.
    pub events_dir: Option<PathBuf>,
    /// Instead of the usual sink, add a checksum of every result here (an order-independent
    /// sum of per-record hashes), so runs can be compared.
    pub checksum: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

fn known_names() -> Vec<String> {
    JOBS.iter().map(|j| j.name.to_string()).collect()
}

fn bad(message: impl Into<String>) -> JobBuildError {
    JobBuildError::BadOption(InvalidSetting(message.into()))
}

fn unused(job: &str, option: &str) -> JobBuildError {
    bad(format!("option {option} is not used by job '{job}'"))
}

fn attach_sink<T: Data>(stream: DataStream<T>, opts: &JobOptions, format: fn(&T) -> String) {
    if let Some(sum) = &opts.checksum {
        stream
            .sink_to(ChecksumSink::new(sum.clone(), format), "ChecksumSink")
            .uid("sink");
        return;
    }
    match (&opts.output, opts.print) {
        (Some(dir), _) => {
            stream
                .sink_to_transactional(FileSink::new(dir.clone(), format), "FileSink")
                .uid("sink");
        }
        (None, true) => {
            stream.sink_to(PrintSink::with_format(format), "PrintSink").uid("sink");
        }
        (None, false) => {
            stream.sink_to(DiscardSink::default(), "DiscardSink").uid("sink");
        }
    }
}

/// Builds the job `name` with `opts` into a fresh environment.
pub fn build(name: &str, opts: &JobOptions) -> Result<StreamEnv, JobBuildError> {
    if !JOBS.iter().any(|j| j.name == name) {
        return Err(JobBuildError::UnknownJob {
            name: name.to_string(),
            known: known_names(),
        });
    }
    if opts.parallelism == 0 {
        return Err(bad("--parallelism must be at least 1"));
    }
    let env = StreamEnv::new(name);
    env.set_parallelism(opts.parallelism);
    if name == "wordcount" {
        if opts.events.is_some() {
            return Err(unused(name, "--events"));
        }
        if opts.events_per_second.is_some() {
            return Err(unused(name, "--events-per-second"));
        }
        if opts.events_dir.is_some() {
            return Err(unused(name, "--events-dir"));
        }
        if opts.lines_per_second == Some(0) {
            return Err(bad("--lines-per-second must be at least 1"));
        }
        let input = opts
            .input
            .as_ref()
            .ok_or_else(|| bad("job 'wordcount' needs --input FILE"))?;
        if opts.output.is_none() && !opts.print {
            return Err(bad("job 'wordcount' needs --output DIR (or --print)"));
        }
        let counts = wordcount::build(&env, input, opts.lines_per_second).map_err(JobBuildError::Input)?;
        attach_sink(counts, opts, |(w, n): &(String, u64)| format!("{w}\t{n}"));
        return Ok(env);
    }
    if opts.input.is_some() {
        return Err(unused(name, "--input"));
    }
    if opts.lines_per_second.is_some() {
        return Err(unused(name, "--lines-per-second"));
    }
    if opts.events_per_second == Some(0) {
        return Err(bad("--events-per-second must be at least 1"));
    }
    let config = NexmarkConfig {
        seed: opts.seed,
        ..NexmarkConfig::default()
    };
    let events = match &opts.events_dir {
        Some(dir) => {
            if opts.events.is_some() || opts.events_per_second.is_some() || opts.seed != 0 {
                return Err(bad("--events-dir reads the events written there: --events, --events-per-second and --seed do not apply"));
            }
            nexmark::file_source(&env, dir, nexmark::kinds_read(name))?
        }
        None => nexmark::source(&env, config, opts.events, opts.events_per_second).map_err(JobBuildError::BadOption)?,
    };
    match name {
        "nexmark-q0" => attach_sink(nexmark::q0(&events), opts, |v| format!("{v:?}")),
        "nexmark-q1" => attach_sink(nexmark::q1(&events), opts, |v| format!("{v:?}")),
        "nexmark-q2" => attach_sink(nexmark::q2(&events), opts, |v| format!("{v:?}")),
        "nexmark-q3" => attach_sink(nexmark::q3(&events), opts, |v| format!("{v:?}")),
        "nexmark-q4" => attach_sink(nexmark::q4(&events), opts, |v| format!("{v:?}")),
        "nexmark-q5" => attach_sink(nexmark::q5(&events), opts, |v| format!("{v:?}")),
        "nexmark-q7" => attach_sink(nexmark::q7(&events), opts, |v| format!("{v:?}")),
        "nexmark-q8" => attach_sink(nexmark::q8(&events), opts, |v| format!("{v:?}")),
        other => unreachable!("job '{other}' is listed in JOBS but not built"),
    }
    Ok(env)
}
