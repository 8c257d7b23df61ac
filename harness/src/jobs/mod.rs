//! The built-in jobs, word count and the Nexmark queries, registered through the same public
//! [`Job`](crate::app::Job) API as any user's job (see [`register`]).

pub mod nexmark;
pub mod wordcount;

mod checksum;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use sluice_core::connectors::nexmark::NexmarkConfig;
use sluice_core::connectors::{DiscardSink, FileSink, PrintSink};
use sluice_core::error::JobBuildError;
use sluice_core::{Data, DataStream, StreamEnv};

use crate::app::{App, Job};
use checksum::ChecksumSink;

/// Registers every built-in job on `app`.
pub fn register(app: App) -> App {
    let app = app.job(wordcount::WordCount);
    nexmark::QUERIES
        .iter()
        .fold(app, |app, q| app.job(NexmarkJob { query: *q }))
}

/// Where a built-in job's results go.
#[derive(Debug, Clone, Default)]
pub enum Output {
    /// Part files in a directory, committed exactly once with checkpoints.
    Files(PathBuf),
    /// Standard output.
    Print,
    /// Nowhere.
    #[default]
    Discard,
    /// An order-independent sum of per-record hashes, so runs can be compared (benches).
    Checksum(Arc<AtomicU64>),
}

/// `--output DIR | --print`, shared by the built-in jobs.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Output directory for part files (committed exactly once with checkpoints).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Print results to standard output instead.
    #[arg(long, conflicts_with = "output")]
    pub print: bool,
}

impl OutputArgs {
    /// The output asked for (nothing given: results are discarded).
    pub fn output(&self) -> Output {
        match (&self.output, self.print) {
            (Some(dir), _) => Output::Files(dir.clone()),
            (None, true) => Output::Print,
            (None, false) => Output::Discard,
        }
    }
}

/// Sends `stream` to `output`, each record shown by `format`.
pub fn attach_sink<T: Data>(stream: DataStream<T>, output: &Output, format: fn(&T) -> String) {
    match output {
        Output::Checksum(sum) => {
            stream
                .sink_to(ChecksumSink::new(sum.clone(), format), "ChecksumSink")
                .uid("sink");
        }
        Output::Files(dir) => {
            stream
                .sink_to_transactional(FileSink::new(dir.clone(), format), "FileSink")
                .uid("sink");
        }
        Output::Print => {
            stream.sink_to(PrintSink::with_format(format), "PrintSink").uid("sink");
        }
        Output::Discard => {
            stream.sink_to(DiscardSink::default(), "DiscardSink").uid("sink");
        }
    }
}

/// One Nexmark query as a job.
#[derive(Debug, Clone, Copy)]
pub struct NexmarkJob {
    /// The query.
    pub query: nexmark::Query,
}

/// The options of every Nexmark query.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NexmarkArgs {
    /// Number of generated events; unbounded if not given.
    #[arg(long, value_name = "N")]
    pub events: Option<u64>,
    /// Pace generated events to this many per second.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub events_per_second: Option<u64>,
    /// Seed of the event generator.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Read the events from the part files in this directory (written by the benches'
    /// `nexmark --write-events`) instead of generating them.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["events", "events_per_second", "seed"])]
    pub events_dir: Option<PathBuf>,
    /// Where results go.
    #[command(flatten)]
    pub output: OutputArgs,
}

impl Job for NexmarkJob {
    type Options = NexmarkArgs;

    fn name(&self) -> &str {
        self.query.name
    }

    fn description(&self) -> &str {
        self.query.description
    }

    fn files(&self) -> &'static [&'static str] {
        &["output", "events-dir"]
    }

    fn build(&self, env: &StreamEnv, o: &NexmarkArgs) -> Result<(), JobBuildError> {
        build_nexmark(env, self.query, o, &o.output.output())
    }
}

/// Builds Nexmark `query` with `o` into `env`, its results going to `output` (the benches
/// ask for a checksum, which has no command-line form).
pub fn build_nexmark(
    env: &StreamEnv,
    query: nexmark::Query,
    o: &NexmarkArgs,
    output: &Output,
) -> Result<(), JobBuildError> {
    let events = match &o.events_dir {
        Some(dir) => nexmark::file_source(env, dir, nexmark::kinds_read(query.name))?,
        None => {
            let config = NexmarkConfig {
                seed: o.seed,
                ..NexmarkConfig::default()
            };
            nexmark::source(env, config, o.events, o.events_per_second).map_err(JobBuildError::BadOption)?
        }
    };
    (query.build)(&events, output);
    Ok(())
}
