//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::jobs::{JobOptions, JOBS};
use sluice::logging::{parse_level, root_logger, LogFormat};

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "Sluice: a stateful stream processor")]
struct Cli {
    /// Log format on standard error: `term` or `json`.
    #[arg(long, global = true, default_value = "term", value_parser = ["term", "json"])]
    log_format: String,
    /// Log level (error, warn, info, debug, trace); also read from SLUICE_LOG.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists the built-in jobs.
    Jobs,
    /// Runs a built-in job embedded in this process.
    Run(Box<RunArgs>),
}

#[derive(Parser, Debug)]
struct RunArgs {
    /// The job to run (see `sluice jobs`).
    job: String,
    /// Default parallelism of the job's operators.
    #[arg(long, short = 'p', default_value_t = 1)]
    parallelism: u32,
    /// Input file (wordcount).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output directory for part files.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print results to standard output instead.
    #[arg(long)]
    print: bool,
    /// Number of generated events (Nexmark); unbounded if not given.
    #[arg(long)]
    events: Option<u64>,
    /// Pace generated events to this many per second (Nexmark).
    #[arg(long)]
    events_per_second: Option<u64>,
    /// Seed of the event generator (Nexmark).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pace input lines per second (wordcount).
    #[arg(long)]
    lines_per_second: Option<u64>,
    /// Turn checkpointing on, storing checkpoints here; a run resumes from the latest
    /// complete checkpoint in it.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Time between checkpoints, e.g. `200ms`, `10s`.
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// Abandon a checkpoint not complete after this long (default 10m).
    #[arg(long)]
    checkpoint_timeout: Option<String>,
    /// Least time between the end of one checkpoint and the start of the next.
    #[arg(long)]
    min_pause_between_checkpoints: Option<String>,
    /// Consecutive failed checkpoints tolerated before the job restarts (default 0).
    #[arg(long)]
    tolerable_failed_checkpoints: Option<u32>,
    /// Completed checkpoints kept (default 1).
    #[arg(long)]
    retained_checkpoints: Option<u32>,
    /// none | fixed-delay:attempts=N,delay=D | exponential-delay:initial=D,max=D,multiplier=X,reset=D
    /// | failure-rate:max-failures=N,interval=D,delay=D
    #[arg(long)]
    restart_strategy: Option<String>,
    /// Print the execution plan and exit.
    #[arg(long)]
    plan: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let level = parse_level(&cli.log_level).map_err(anyhow::Error::msg)?;
    let format = if cli.log_format == "json" { LogFormat::Json } else { LogFormat::Terminal };
    let log = root_logger(format, level);
    match cli.command {
        Command::Jobs => {
            for j in JOBS {
                println!("{:<12} {}\n{:<12} options: {}", j.name, j.description, "", j.options);
            }
            Ok(())
        }
        Command::Run(args) => run(*args, log),
    }
}

/// Resolves on Ctrl-C or SIGTERM: the job then drains (sources stop, windows fire, sinks
/// commit) and the process exits with its summary.
async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn run(args: RunArgs, log: slog::Logger) -> anyhow::Result<()> {
    let opts = JobOptions {
        parallelism: args.parallelism,
        input: args.input,
        output: args.output,
        print: args.print,
        events: args.events,
        events_per_second: args.events_per_second,
        seed: args.seed,
        lines_per_second: args.lines_per_second,
    };
    let settings = sluice::settings::RunSettings {
        checkpoint_dir: args.checkpoint_dir,
        checkpoint_interval: args.checkpoint_interval,
        checkpoint_timeout: args.checkpoint_timeout,
        min_pause: args.min_pause_between_checkpoints,
        tolerable_failures: args.tolerable_failed_checkpoints,
        retained: args.retained_checkpoints,
        restart_strategy: args.restart_strategy,
    };
    if args.plan {
        let env = sluice::jobs::build(&args.job, &opts)?;
        print!("{}", env.build()?.describe());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(sluice::runner::run_embedded(&args.job, &opts, &settings, log, stop_requested()))?;
    // The summary goes to stderr when results are printed, so stdout holds only results.
    let summary = sluice::runner::summary(&result);
    if opts.print {
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    Ok(())
}
