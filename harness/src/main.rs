//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice::cluster::{store_opener, BuiltinJobs};
use sluice::config::Config;
use sluice::jobs::{JobOptions, JOBS};
use sluice::logging::{parse_filter, root_logger, LogFormat};
use sluice::rest::RestOptions;
use sluice_core::cluster::{
    cancel_job, list_jobs, submit_job, trigger_savepoint, Coordinator, CoordinatorConfig, Target, Worker, WorkerConfig,
};
use sluice_core::metrics::MetricRegistry;

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "Sluice: a stateful stream processor")]
struct Cli {
    /// Configuration file (TOML; see docs/configuration.md). Every key can also be set as
    /// SLUICE_<SECTION>_<KEY>; flags override both.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on standard error: `term` or `json` (default: [logging] format, else term).
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_parser = ["term", "json"])]
    log_format: Option<String>,
    /// Log levels as LEVEL[,MODULE=LEVEL...], e.g. `info,sluice_core::cluster=debug`
    /// (default: [logging] level and modules, else warn).
    #[arg(long, global = true, env = "SLUICE_LOG")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists the built-in jobs.
    Jobs,
    /// Runs a built-in job embedded in this process.
    Run(Box<RunArgs>),
    /// Runs a coordinator (job manager) for workers and clients.
    Coordinator(CoordinatorArgs),
    /// Runs a worker (task executor) that registers with a coordinator.
    Worker(WorkerArgs),
    /// Submits a built-in job to a coordinator; prints the job id on its last line.
    Submit(Box<SubmitArgs>),
    /// Lists a coordinator's jobs: `<id> <name> <STATUS>` per line.
    List(ClientArgs),
    /// Cancels a job on a coordinator.
    Cancel(CancelArgs),
    /// Savepoints: `--coordinator ADDR JOB_ID DIR` takes one of a running job (its path is
    /// printed last); `list DIR`, `inspect PATH`, `dispose PATH` manage the archive.
    Savepoint(SavepointArgs),
    /// Stops a job on a coordinator with a savepoint (its path is printed last).
    Stop(StopArgs),
    /// Makes a cluster's certificates: a CA, and certificates for the coordinator, workers,
    /// admins and the REST port (see docs/security.md).
    Certs(sluice::certs::CertsArgs),
}

#[derive(Parser, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct SavepointArgs {
    #[command(subcommand)]
    action: Option<SavepointCommand>,
    /// The coordinator's address.
    #[arg(long)]
    coordinator: Option<String>,
    /// The job's id.
    job_id: Option<String>,
    /// Where to put the savepoint (a directory the coordinator and workers reach, or s3://;
    /// default: the coordinator's [security] savepoint-dir).
    dir: Option<String>,
}

#[derive(Parser, Debug)]
struct StopArgs {
    /// The coordinator's address.
    #[arg(long)]
    coordinator: String,
    /// The job's id.
    job_id: String,
    /// Where to put the savepoint (default: the coordinator's [security] savepoint-dir).
    #[arg(long)]
    savepoint_dir: Option<String>,
    /// Drain first: sources stop and every window fires, as at end of input.
    #[arg(long)]
    drain: bool,
}

#[derive(Subcommand, Debug)]
enum SavepointCommand {
    /// Lists the savepoints in a directory (one line each: path, job, checkpoint, time, size).
    List {
        /// The directory (or `s3://bucket/prefix`).
        dir: PathBuf,
    },
    /// Shows a savepoint: job, checkpoint, time, operators, key groups, files, sizes.
    Inspect {
        /// The savepoint directory.
        path: PathBuf,
    },
    /// Deletes a savepoint.
    Dispose {
        /// The savepoint directory.
        path: PathBuf,
    },
}

/// Options of the job itself (shared by `run` and `submit`).
#[derive(Parser, Debug)]
struct JobArgs {
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
    /// Read Nexmark events from the part files in this directory (written by the benches'
    /// `nexmark --write-events`) instead of generating them.
    #[arg(long)]
    events_dir: Option<PathBuf>,
}

impl JobArgs {
    fn options(&self) -> JobOptions {
        JobOptions {
            parallelism: self.parallelism,
            input: self.input.clone(),
            output: self.output.clone(),
            print: self.print,
            events: self.events,
            events_per_second: self.events_per_second,
            seed: self.seed,
            lines_per_second: self.lines_per_second,
            events_dir: self.events_dir.clone(),
            checksum: None,
        }
    }
}

/// Checkpoint and restart options (shared by `run` and `submit`).
#[derive(Parser, Debug)]
struct CheckpointArgs {
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
    fn on_unusable(&self) -> Option<String> {
        if self.start_fresh {
            Some("start-fresh".into())
        } else {
            self.on_unusable_checkpoint.clone()
        }
    }
}

#[derive(Parser, Debug)]
struct RunArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Turn checkpointing on, storing checkpoints here (a directory or `s3://bucket/prefix`);
    /// a run resumes from the latest complete checkpoint in it.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
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
}

#[derive(Parser, Debug)]
struct CoordinatorArgs {
    /// Address to accept workers and clients on (port 0 picks one; the address is printed).
    /// Default: [coordinator] bind, else 127.0.0.1:6123.
    #[arg(long)]
    bind: Option<String>,
    /// Where jobs' checkpoints go (a directory every worker can reach, or `s3://bucket/prefix`).
    #[arg(long)]
    checkpoint_dir: Option<String>,
    /// Serve the REST API here (port 0 picks one; the address is printed).
    #[arg(long)]
    rest_bind: Option<String>,
    /// How often workers send heartbeats (default 500ms).
    #[arg(long)]
    heartbeat_interval: Option<String>,
    /// A worker silent for this long is declared lost (default 10s).
    #[arg(long)]
    heartbeat_timeout: Option<String>,
    /// How long a job waits for enough free slots before it fails (default 60s).
    #[arg(long)]
    slot_wait: Option<String>,
}

#[derive(Parser, Debug)]
struct WorkerArgs {
    /// The coordinator's address (default: [worker] coordinator).
    #[arg(long)]
    coordinator: Option<String>,
    /// Task slots offered (default 1).
    #[arg(long)]
    slots: Option<u32>,
    /// Address to accept data connections from other workers on (port 0 picks one; default
    /// 127.0.0.1:0).
    #[arg(long)]
    bind: Option<String>,
    /// The worker's id (default: its certificate's, else `worker-<data address>`).
    #[arg(long)]
    id: Option<String>,
    /// The data address to give peers, when the bound one is not it (bound to 0.0.0.0, or
    /// behind address translation). Default: [worker] advertise-address, else the bound one.
    #[arg(long)]
    advertise_address: Option<String>,
}

#[derive(Parser, Debug)]
struct SubmitArgs {
    /// The coordinator's address.
    #[arg(long)]
    coordinator: String,
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
    /// Start from this savepoint (a location the coordinator and workers reach).
    #[arg(long)]
    from_savepoint: Option<String>,
    /// With --from-savepoint: drop the state of operators the job no longer has.
    #[arg(long)]
    allow_non_restored_state: bool,
    /// With --from-savepoint: operators renamed since, as OLD_UID=NEW_UID[,...].
    #[arg(long)]
    uid_mapping: Option<String>,
    /// Keep the job's checkpoints if it is cancelled (by default they are deleted when it
    /// ends FINISHED or CANCELED, and kept when it FAILED).
    #[arg(long)]
    retain_checkpoints_on_cancel: bool,
}

#[derive(Parser, Debug)]
struct ClientArgs {
    /// The coordinator's address.
    #[arg(long)]
    coordinator: String,
}

#[derive(Parser, Debug)]
struct CancelArgs {
    /// The coordinator's address.
    #[arg(long)]
    coordinator: String,
    /// The job's id (see `sluice list`).
    id: String,
}

/// Prints a line of a command's output. A reader that stopped reading (`sluice list | head
/// -1`) is not an error of ours: the command ends quietly, as Unix tools do, instead of
/// panicking as `println!` would.
fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Prints text that ends its own lines (see [`print_line`]).
fn print_text(text: &str) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

macro_rules! out {
    ($($t:tt)*) => { print_line(format_args!($($t)*)) };
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(sluice::error::exit_code_of(e.chain()).unwrap_or(sluice::error::exit::FAILED))
        }
    }
}

/// The error and its causes, each said once: many of our errors already name their source in
/// their own message, so a cause whose text is already there is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    let filter = match &cli.log_level {
        Some(spec) => parse_filter(spec).map_err(|e| e.context("--log-level / SLUICE_LOG"))?,
        None => config.log_filter()?,
    };
    let format = match cli.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Terminal,
        None => config.log_format()?,
    };
    let log = root_logger(format, filter);
    sluice::security::apply_umask(&config);
    match cli.command {
        Command::Jobs => {
            for j in JOBS {
                out!("{:<12} {}\n{:<12} options: {}", j.name, j.description, "", j.options);
            }
            Ok(())
        }
        Command::Run(args) => run(*args, config, log),
        Command::Coordinator(args) => coordinator(args, config, log),
        Command::Worker(args) => worker(args, config, log),
        Command::Submit(args) => submit(*args, &config),
        Command::List(args) => list(args, &config),
        Command::Cancel(args) => cancel(args, &config),
        Command::Savepoint(args) => savepoint(args, &config),
        Command::Stop(args) => stop(args, &config),
        Command::Certs(args) => Ok(sluice::certs::run(&args)?),
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

fn run(args: RunArgs, config: Config, log: slog::Logger) -> anyhow::Result<()> {
    let opts = args.job.options();
    let c = &args.checkpoints;
    let settings = sluice::settings::RunSettings {
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
    };
    if args.plan {
        let env = sluice::jobs::build(&args.job.job, &opts)?;
        print_text(&env.build()?.describe());
        return Ok(());
    }
    let services = sluice::runner::Services {
        rest_bind: args.rest_port.map(|p| format!("127.0.0.1:{p}")),
        rest_linger: duration_arg("rest-linger", &args.rest_linger)?,
        config,
    };
    let rt = runtime()?;
    let outcome = rt.block_on(sluice::runner::run_embedded(
        &args.job.job,
        &opts,
        &settings,
        &services,
        log,
        stop_requested,
    ))?;
    // The summary goes to stderr when results are printed, so stdout holds only results.
    let summary = sluice::runner::summary(&outcome.result);
    if opts.print {
        eprint!("{summary}");
    } else {
        print_text(&summary);
    }
    if let Some(path) = outcome.savepoint {
        out!("savepoint:");
        out!("{path}");
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn duration_arg(name: &str, v: &str) -> anyhow::Result<std::time::Duration> {
    Ok(sluice_core::duration::parse_duration(v).map_err(|e| e.context(format_args!("--{name}")))?)
}

fn coordinator(args: CoordinatorArgs, file: Config, log: slog::Logger) -> anyhow::Result<()> {
    let c = &file.coordinator;
    let mut config = CoordinatorConfig::new(log.clone());
    config.max_connections = c.max_connections;
    config.max_retained_jobs = c.max_retained_jobs;
    config.max_active_jobs = c.max_active_jobs;
    config.heartbeat_interval = duration_arg(
        "heartbeat-interval",
        args.heartbeat_interval.as_deref().unwrap_or(&c.heartbeat_interval),
    )?;
    config.heartbeat_timeout = duration_arg(
        "heartbeat-timeout",
        args.heartbeat_timeout.as_deref().unwrap_or(&c.heartbeat_timeout),
    )?;
    config.slot_wait = duration_arg("slot-wait", args.slot_wait.as_deref().unwrap_or(&c.slot_wait))?;
    config.cancel_timeout = duration_arg("cancel-timeout", &c.cancel_timeout)?;
    config.checkpoint_dir = args.checkpoint_dir.clone().or_else(|| c.checkpoint_dir.clone());
    config.tls = sluice::security::cluster_tls(&file)?;
    config.paths = sluice::security::path_policy(&file)?;
    config.savepoint_dir = file.security.savepoint_dir.clone();
    let bind = args.bind.clone().unwrap_or_else(|| c.bind.clone());
    let rest_bind = args.rest_bind.clone().or_else(|| c.rest_bind.clone());
    sluice::security::warn_if_exposed(&log, "control", &bind, config.tls.is_some());
    let rest_security = sluice::rest::RestSecurity::from_config(&file, log.clone())?;
    if let Some(r) = &rest_bind {
        rest_security.check_bind(r)?;
        sluice::security::warn_if_exposed(&log, "REST", r, rest_security.authenticated());
    }
    runtime()?.block_on(async move {
        let coordinator = Coordinator::new(config, Arc::new(BuiltinJobs), store_opener())?;
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .with_context(|| format!("binding the coordinator to {bind}"))?;
        let addr = listener.local_addr()?;
        sluice::logging::announce(format_args!("coordinator listening on {addr}"));
        slog::info!(log, "coordinator listening"; "address" => addr.to_string());
        let source = coordinator.clone();
        let _reporters = sluice::reporters::start(&file, Arc::new(move || source.metrics()), &log).await?;
        if let Some(rest) = &rest_bind {
            let rest_listener = tokio::net::TcpListener::bind(rest)
                .await
                .with_context(|| format!("binding the REST API to {rest}"))?;
            let rest_addr = rest_listener.local_addr()?;
            sluice::logging::announce(format_args!("rest api listening on {rest_addr}"));
            slog::info!(log, "REST API listening"; "address" => rest_addr.to_string());
            let app = sluice::rest::router(
                Arc::new(coordinator.clone()),
                RestOptions {
                    prometheus: file.reporter("prometheus"),
                    security: rest_security.clone(),
                },
            );
            let limits = file.rest_limits();
            tokio::spawn(sluice::rest::serve(
                rest_listener,
                app,
                limits,
                rest_security.tls.clone(),
                log.clone(),
            ));
        }
        tokio::select! {
            r = coordinator.serve(listener) => r?,
            _ = stop_requested() => slog::info!(log, "coordinator stopping"),
        }
        Ok(())
    })
}

fn worker(args: WorkerArgs, file: Config, log: slog::Logger) -> anyhow::Result<()> {
    let w = &file.worker;
    let registry = MetricRegistry::new();
    let execution = sluice_core::ExecutionConfig {
        log: log.clone(),
        metrics: Some(registry.clone()),
        ..sluice_core::ExecutionConfig::default()
    };
    let Some(coordinator) = args.coordinator.clone().or_else(|| w.coordinator.clone()) else {
        return Err(sluice::HarnessError::BadOption(
            "the worker needs the coordinator's address: --coordinator HOST:PORT, or [worker] coordinator in the configuration".into(),
        )
        .into());
    };
    let mut config = WorkerConfig::new(coordinator, args.slots.unwrap_or(w.slots), execution);
    config.id = args.id.clone().or_else(|| w.id.clone());
    config.max_data_connections = w.max_data_connections;
    config.connect_timeout = duration_arg("worker.connect-timeout", &w.connect_timeout)?;
    config.frame_timeout = duration_arg("worker.frame-timeout", &w.frame_timeout)?;
    config.tls = sluice::security::cluster_tls(&file)?;
    config.paths = sluice::security::path_policy(&file)?;
    config.advertise_address = args.advertise_address.clone().or_else(|| w.advertise_address.clone());
    let bind = args.bind.clone().unwrap_or_else(|| w.bind.clone());
    sluice::security::warn_if_exposed(&log, "data", &bind, config.tls.is_some());
    runtime()?.block_on(async move {
        let worker = Worker::bind(config, &bind, Arc::new(BuiltinJobs), store_opener()).await?;
        sluice::logging::announce(format_args!(
            "worker {} data address {}",
            worker.id(),
            worker.data_address()
        ));
        // Workers also send their metrics to the coordinator; these reporters push from here.
        let _reporters = sluice::reporters::start(&file, Arc::new(move || registry.snapshot()), &log).await?;
        tokio::select! {
            r = worker.run() => r?,
            _ = stop_requested() => slog::info!(log, "worker stopping"),
        }
        Ok(())
    })
}

/// The coordinator at `addr`, reached with this node's TLS if configured.
fn client_tls(config: &Config) -> anyhow::Result<Option<sluice_transport::tls::ClusterTls>> {
    Ok(sluice::security::cluster_tls(config)?)
}

fn submit(args: SubmitArgs, config: &Config) -> anyhow::Result<()> {
    let mut job = args.job.options();
    // Paths as the user meant them, from here: workers resolve a relative path against their
    // own directories, which need not be this one (or each other's).
    for path in [&mut job.input, &mut job.output, &mut job.events_dir]
        .into_iter()
        .flatten()
    {
        *path = std::path::absolute(&*path).with_context(|| format!("resolving {}", path.display()))?;
    }
    let mut options = sluice::cluster::option_pairs(&job);
    let c = &args.checkpoints;
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            options.push((k.to_string(), v));
        }
    };
    put("checkpoint-interval", c.checkpoint_interval.clone());
    put("checkpoint-timeout", c.checkpoint_timeout.clone());
    put("min-pause-between-checkpoints", c.min_pause_between_checkpoints.clone());
    put(
        "tolerable-failed-checkpoints",
        c.tolerable_failed_checkpoints.map(|n| n.to_string()),
    );
    put("retained-checkpoints", c.retained_checkpoints.map(|n| n.to_string()));
    put("restart-strategy", c.restart_strategy.clone());
    put("on-unusable-checkpoint", c.on_unusable());
    put("from-savepoint", args.from_savepoint.clone());
    put(
        "allow-non-restored-state",
        args.allow_non_restored_state.then(|| "true".to_string()),
    );
    put("uid-mapping", args.uid_mapping.clone());
    put(
        "retain-checkpoints-on-cancel",
        args.retain_checkpoints_on_cancel.then(|| "true".to_string()),
    );
    let tls = client_tls(config)?;
    let to = Target {
        addr: &args.coordinator,
        tls: tls.as_ref(),
    };
    let id = runtime()?.block_on(submit_job(to, &args.job.job, &options))?;
    out!("submitted job {} as", args.job.job);
    out!("{id}");
    Ok(())
}

fn list(args: ClientArgs, config: &Config) -> anyhow::Result<()> {
    let tls = client_tls(config)?;
    let to = Target {
        addr: &args.coordinator,
        tls: tls.as_ref(),
    };
    for j in runtime()?.block_on(list_jobs(to))? {
        match &j.error {
            Some(e) if j.status == sluice_core::cluster::JobStatus::Failed => {
                out!("{} {} {} ({e})", j.id, j.name, j.status)
            }
            _ => out!("{} {} {}", j.id, j.name, j.status),
        }
    }
    Ok(())
}

fn cancel(args: CancelArgs, config: &Config) -> anyhow::Result<()> {
    let tls = client_tls(config)?;
    let to = Target {
        addr: &args.coordinator,
        tls: tls.as_ref(),
    };
    runtime()?.block_on(cancel_job(to, &args.id))?;
    out!("cancelling job {}", args.id);
    Ok(())
}

fn savepoint(args: SavepointArgs, config: &Config) -> anyhow::Result<()> {
    let rt = runtime()?;
    let Some(cmd) = args.action else {
        let (Some(addr), Some(job)) = (args.coordinator, args.job_id) else {
            return Err(sluice::HarnessError::BadOption(
                "usage: sluice savepoint --coordinator HOST:PORT <JOB_ID> [DIR], or sluice savepoint list|inspect|dispose".into(),
            )
            .into());
        };
        let tls = client_tls(config)?;
        let to = Target {
            addr: &addr,
            tls: tls.as_ref(),
        };
        let dir = args.dir.unwrap_or_default();
        let (path, checkpoint) = rt.block_on(trigger_savepoint(to, &job, &dir, None))?;
        out!("savepoint of job {job} at checkpoint {checkpoint}:");
        out!("{path}");
        return Ok(());
    };
    match cmd {
        SavepointCommand::List { dir } => print_text(&rt.block_on(sluice::savepoints::list(&dir))?),
        SavepointCommand::Inspect { path } => print_text(&rt.block_on(sluice::savepoints::inspect(&path))?),
        SavepointCommand::Dispose { path } => {
            let d = rt.block_on(sluice::savepoints::dispose(&path))?;
            out!("disposed {} ({} files)", path.display(), d.files);
            if !d.left.is_empty() {
                out!(
                    "kept the directory: {} entries in it are not part of the savepoint: {}",
                    d.left.len(),
                    d.left.join(", ")
                );
            }
        }
    }
    Ok(())
}

fn stop(args: StopArgs, config: &Config) -> anyhow::Result<()> {
    let tls = client_tls(config)?;
    let to = Target {
        addr: &args.coordinator,
        tls: tls.as_ref(),
    };
    let dir = args.savepoint_dir.clone().unwrap_or_default();
    let (path, checkpoint) = runtime()?.block_on(trigger_savepoint(to, &args.job_id, &dir, Some(args.drain)))?;
    out!(
        "job {} stopped with a savepoint at checkpoint {checkpoint}:",
        args.job_id
    );
    out!("{path}");
    Ok(())
}
