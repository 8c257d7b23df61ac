//! `run`: a job embedded in this process.

use std::path::PathBuf;

use clap::{ArgMatches, FromArgMatches};

use super::cli::{duration_arg, print_line, print_text, runtime, stop_requested};
use super::status::StatusOutput;
use super::{option_pairs, AppRegistry};
use crate::config::Config;
use crate::settings::StateChoice;

#[derive(clap::Parser, Debug)]
pub(super) struct RunArgs {
    /// Default parallelism of the job's operators.
    #[arg(long, short = 'p', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: u32,
    /// Turn checkpointing on, storing checkpoints here (a directory or `s3://bucket/prefix`);
    /// a run resumes from the latest complete checkpoint in it.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
    #[command(flatten)]
    state: StateArgs,
    /// Start from this savepoint directory.
    #[arg(long)]
    from_savepoint: Option<PathBuf>,
    /// With --from-savepoint: drop the state of operators the job no longer has.
    #[arg(long)]
    allow_non_restored_state: bool,
    /// With --from-savepoint: operators renamed since, as OLD_UID=NEW_UID[,...].
    #[arg(long)]
    uid_mapping: Option<String>,
    /// On Ctrl-C / SIGTERM, stop with a savepoint into this directory (its path is printed
    /// last) instead of draining.
    #[arg(long)]
    savepoint_dir: Option<PathBuf>,
    /// With --savepoint-dir: drain first (sources stop, every window fires), then savepoint.
    #[arg(long)]
    drain: bool,
    /// Print the execution plan and exit.
    #[arg(long)]
    plan: bool,
    /// Serve the REST API on this port of 127.0.0.1 (0 picks one; the address is printed).
    #[arg(long)]
    rest_port: Option<u16>,
    /// After the job ends, keep the REST API up this long (to read the final status).
    #[arg(long, default_value = "3s")]
    rest_linger: String,
    /// Show no status line while the job runs (by default: refreshed in place on a
    /// terminal, a line every 10 s otherwise, on standard error).
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Where keyed state lives (shared by `run` and `worker`).
#[derive(clap::Args, Debug)]
pub(super) struct StateArgs {
    /// `heap` (state in memory, snapshotted whole) or `tiered` (state in files in the
    /// checkpoint storage, read through a cache; checkpoints store only what changed).
    /// Default: [state] backend, else heap. Not for `worker`: a cluster job chooses at
    /// `sluice submit`.
    #[arg(long, value_name = "BACKEND")]
    pub(super) state_backend: Option<String>,
    /// The tiered backend's block cache in memory, e.g. `512MiB` (default: [state]
    /// cache-memory, else 256MiB).
    #[arg(long, value_name = "SIZE")]
    pub(super) state_cache_memory: Option<String>,
    /// A disk tier below the tiered backend's cache, e.g. `10GiB` (at least 64MiB; with
    /// --state-cache-dir; default: [state] cache-disk, else none).
    #[arg(long, value_name = "SIZE")]
    pub(super) state_cache_disk: Option<String>,
    /// The disk tier's directory: local, for this process alone (default: [state]
    /// cache-dir).
    #[arg(long, value_name = "DIR")]
    pub(super) state_cache_dir: Option<std::path::PathBuf>,
}

impl StateArgs {
    /// The backend and its cache, the command line before the file. The file's cache
    /// settings are the tiered backend's: they are left out when the backend is heap (a
    /// command line that picks heap over a file that picks tiered must not be refused for
    /// the file's sizes).
    ///
    /// A file (or environment) that picks heap itself and sets the cache is refused: its
    /// cache settings would be ignored without a word.
    pub(super) fn resolve(&self, file: &Config) -> Result<StateChoice, crate::HarnessError> {
        let s = &file.state;
        let file_cache = s.cache_memory.is_some() || s.cache_disk.is_some() || s.cache_dir.is_some();
        if s.backend == "heap" && file_cache && self.state_backend.is_none() {
            return Err(crate::HarnessError::BadOption(
                "[state] cache-memory, cache-disk and cache-dir (or SLUICE_STATE_CACHE_*) are settings of the tiered backend, and [state] backend is heap: set backend = \"tiered\" or remove them".into(),
            ));
        }
        let backend = self.state_backend.clone().unwrap_or_else(|| file.state.backend.clone());
        let from_file = backend != "heap";
        let pick = |flag: &Option<String>, in_file: &Option<String>| {
            flag.clone().or_else(|| in_file.clone().filter(|_| from_file))
        };
        Ok(StateChoice {
            cache_memory: pick(&self.state_cache_memory, &file.state.cache_memory),
            cache_disk: pick(&self.state_cache_disk, &file.state.cache_disk),
            cache_dir: self
                .state_cache_dir
                .clone()
                .or_else(|| file.state.cache_dir.clone().filter(|_| from_file)),
            backend: Some(backend),
        })
    }

    /// A worker's cache, the command line before the file. Unlike `run`, the cache settings
    /// count whatever `[state] backend` says: jobs submitted with `--state-backend tiered`
    /// run in that cache. `--state-backend` itself is refused: each job chooses its own.
    pub(super) fn resolve_worker(&self, file: &Config) -> Result<StateChoice, crate::HarnessError> {
        if self.state_backend.is_some() {
            return Err(crate::HarnessError::BadOption(
                "sluice worker --state-backend: in a cluster each job chooses its backend (sluice submit --state-backend heap|tiered, heap by default); a worker's --state-cache-* size the cache of its tiered jobs".into(),
            ));
        }
        let s = &file.state;
        Ok(StateChoice {
            backend: None,
            cache_memory: self.state_cache_memory.clone().or_else(|| s.cache_memory.clone()),
            cache_disk: self.state_cache_disk.clone().or_else(|| s.cache_disk.clone()),
            cache_dir: self.state_cache_dir.clone().or_else(|| s.cache_dir.clone()),
        })
    }
}

/// Checkpoint and restart options (shared by `run` and `submit`).
#[derive(clap::Parser, Debug)]
pub(super) struct CheckpointArgs {
    /// Time between checkpoints, e.g. `200ms`, `10s`.
    #[arg(long)]
    pub(super) checkpoint_interval: Option<String>,
    /// Abandon a checkpoint not complete after this long (default 10m).
    #[arg(long)]
    pub(super) checkpoint_timeout: Option<String>,
    /// Least time between the end of one checkpoint and the start of the next.
    #[arg(long)]
    pub(super) min_pause_between_checkpoints: Option<String>,
    /// Consecutive failed checkpoints tolerated before the job restarts (default 0).
    #[arg(long)]
    pub(super) tolerable_failed_checkpoints: Option<u32>,
    /// Completed checkpoints kept (default 1).
    #[arg(long)]
    pub(super) retained_checkpoints: Option<u32>,
    /// none | fixed-delay:attempts=N,delay=D | exponential-delay:initial=D,max=D,multiplier=X,reset=D
    /// | failure-rate:max-failures=N,interval=D,delay=D
    #[arg(long)]
    pub(super) restart_strategy: Option<String>,
    /// When the latest checkpoint cannot be restored (a damaged or missing file): `fail` (the
    /// default: nothing is written twice), `fall-back` (restore an older one; the output
    /// committed since is written again) or `start-fresh` (start over; all committed output is
    /// written again).
    #[arg(long, value_parser = ["fail", "fall-back", "start-fresh"])]
    on_unusable_checkpoint: Option<String>,
    /// Same as --on-unusable-checkpoint start-fresh.
    #[arg(long, conflicts_with = "on_unusable_checkpoint")]
    start_fresh: bool,
}

impl CheckpointArgs {
    /// What --on-unusable-checkpoint / --start-fresh ask for, if anything.
    pub(super) fn on_unusable(&self) -> Option<String> {
        if self.start_fresh {
            Some("start-fresh".into())
        } else {
            self.on_unusable_checkpoint.clone()
        }
    }
}

/// `run JOB`: builds the job from its options as a cluster would, and runs it here.
pub(super) fn run(
    registry: &AppRegistry,
    (job, m): (&str, &ArgMatches),
    (config, log, json_logs): (Config, slog::Logger, bool),
) -> anyhow::Result<()> {
    let args = RunArgs::from_arg_matches(m)?;
    let mut options = option_pairs(&registry.get(job)?.command(), m)?;
    // By convention a job's `--print` sends results to stdout: the summary then goes to
    // stderr, so stdout holds only results.
    let prints = options.iter().any(|(k, v)| k == "print" && v == "true");
    options.push(("parallelism".into(), args.parallelism.to_string()));
    let graph = registry.build_graph(job, &options.into_iter().collect())?;
    let c = &args.checkpoints;
    let settings = crate::settings::RunSettings {
        checkpoint_dir: args.checkpoint_dir.clone(),
        checkpoint_interval: c.checkpoint_interval.clone(),
        checkpoint_timeout: c.checkpoint_timeout.clone(),
        min_pause: c.min_pause_between_checkpoints.clone(),
        tolerable_failures: c.tolerable_failed_checkpoints,
        retained: c.retained_checkpoints,
        restart_strategy: c.restart_strategy.clone(),
        on_unusable_checkpoint: c.on_unusable(),
        from_savepoint: args.from_savepoint.clone(),
        allow_non_restored_state: args.allow_non_restored_state,
        uid_mapping: args.uid_mapping.clone(),
        savepoint_dir: args.savepoint_dir.clone(),
        drain: args.drain,
        state: args.state.resolve(&config)?,
    };
    if args.plan {
        print_text(&graph.describe());
        return Ok(());
    }
    let services = crate::runner::Services {
        rest_bind: args.rest_port.map(|p| format!("127.0.0.1:{p}")),
        rest_linger: duration_arg("rest-linger", &args.rest_linger)?,
        config,
        status: StatusOutput::choose(args.quiet, json_logs, prints),
    };
    let rt = runtime()?;
    let outcome = rt.block_on(crate::runner::run_embedded(
        (job, graph, args.parallelism),
        &settings,
        &services,
        log,
        stop_requested,
    ))?;
    // The summary goes to stderr when results are printed, so stdout holds only results.
    let summary = crate::runner::summary(&outcome.result);
    if prints {
        eprint!("{summary}");
    } else {
        print_text(&summary);
    }
    if let Some(path) = outcome.savepoint {
        print_line(format_args!("savepoint:"));
        print_line(format_args!("{path}"));
    }
    Ok(())
}
