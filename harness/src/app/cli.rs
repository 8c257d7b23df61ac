//! The command line every Sluice binary shares: global flags, the fixed subcommands, and
//! `run` and `submit` with one subcommand per registered job (its options parsed by the
//! job's own arguments).
//!
//! This layer is the binary's `main`: it reports errors with `anyhow` and turns them into
//! exit codes by kind ([`crate::error::exit_code_of`]); nothing of it is public beyond
//! [`App::main`](super::App::main).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args, FromArgMatches, Subcommand};

use super::{client_cmds, run_cmd, serve_cmds, AppRegistry};
use crate::config::Config;
use crate::logging::{parse_filter, root_logger, LogFormat};
use crate::HarnessError;

/// Flags every subcommand takes.
#[derive(Args, Debug)]
struct Globals {
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
}

/// The subcommands that do not depend on the registered jobs.
#[derive(Subcommand, Debug)]
enum Fixed {
    /// Lists this binary's jobs with their options.
    Jobs,
    /// Runs a coordinator (job manager) for workers and clients.
    Coordinator(serve_cmds::CoordinatorArgs),
    /// Runs a worker (task executor) that registers with a coordinator.
    Worker(serve_cmds::WorkerArgs),
    /// Lists a coordinator's jobs: `<id> <name> <STATUS>` per line.
    List(client_cmds::ClientArgs),
    /// Cancels a job on a coordinator.
    Cancel(client_cmds::CancelArgs),
    /// Savepoints: `--coordinator ADDR JOB_ID DIR` takes one of a running job (its path is
    /// printed last); `list DIR`, `inspect PATH`, `dispose PATH` manage the archive.
    Savepoint(client_cmds::SavepointArgs),
    /// Stops a job on a coordinator with a savepoint (its path is printed last).
    Stop(client_cmds::StopArgs),
    /// Makes a cluster's certificates: a CA, and certificates for the coordinator, workers,
    /// admins and the REST port (see docs/security.md).
    Certs(crate::certs::CertsArgs),
}

/// The whole command line of binary `app` with `registry`'s jobs.
fn command((app, version): (&str, &str), registry: &AppRegistry) -> clap::Command {
    let cmd = clap::Command::new(app.to_string())
        .version(version.to_string())
        .subcommand_required(true)
        .arg_required_else_help(true);
    // The derives set `about` from their types' comments: ours comes last.
    let cmd = Fixed::augment_subcommands(Globals::augment_args(cmd))
        .about(format!("{app}: a stateful stream processor (Sluice)"));
    cmd.subcommand(per_job(
        "run",
        "Runs a job embedded in this process (`run JOB --help` for its options)",
        registry,
        run_cmd::RunArgs::augment_args,
    ))
    .subcommand(per_job(
        "submit",
        "Submits a job to a coordinator and prints its id (the last line; with --wait, the line before the job's end) (`submit JOB --help` for its options)",
        registry,
        client_cmds::SubmitArgs::augment_args,
    ))
}

/// `run` or `submit`: one subcommand per job with the job's options; Sluice's own flags
/// (`common`) are global, so they go before or after the job's name alike. A name that is no
/// job comes through as an external subcommand, refused later with the list of jobs.
fn per_job(
    name: &'static str,
    about: &'static str,
    registry: &AppRegistry,
    common: fn(clap::Command) -> clap::Command,
) -> clap::Command {
    let parent = common(clap::Command::new(name))
        .mut_args(|a| a.global(true))
        .about(about)
        .subcommand_required(true)
        .allow_external_subcommands(true)
        .disable_help_subcommand(true)
        .subcommand_value_name("JOB")
        .subcommand_help_heading("Jobs");
    registry.jobs().fold(parent, |cmd, job| cmd.subcommand(job.command()))
}

/// The job named after `run` or `submit`, with its matches; an unknown name is refused
/// listing the jobs there are.
fn job_of<'m>(registry: &AppRegistry, m: &'m ArgMatches) -> Result<(&'m str, &'m ArgMatches), HarnessError> {
    let (job, jm) = m.subcommand().expect("clap requires a job");
    registry.get(job)?;
    // A known job's name after `--` comes through as an external subcommand, whose matches
    // hold none of the job's options.
    if jm.ids().any(|id| id.as_str().is_empty()) {
        return Err(HarnessError::BadOption(format!(
            "'{job}' came after `--`: give the job's name, then its options, without `--`"
        )));
    }
    Ok((job, jm))
}

/// Refuses a job option that `run` or `submit` (or the global flags) already take: the two
/// could not be told apart on the command line.
pub(super) fn check_job_options(job: &str, options: &clap::Command) -> Result<(), HarnessError> {
    let ours = [
        run_cmd::RunArgs::augment_args(clap::Command::new("run")),
        client_cmds::SubmitArgs::augment_args(clap::Command::new("submit")),
        Globals::augment_args(clap::Command::new("globals")),
    ];
    for arg in options.get_arguments() {
        let clash = ours.iter().flat_map(|c| c.get_arguments()).find(|o| {
            (arg.get_long().is_some() && o.get_long() == arg.get_long())
                || (arg.get_short().is_some() && o.get_short() == arg.get_short())
                || (o.get_id() == arg.get_id())
        });
        if let Some(o) = clash {
            return Err(HarnessError::BadOption(format!(
                "job '{job}' has an option --{} that Sluice's own --{} would shadow: rename it",
                arg.get_long().unwrap_or(arg.get_id().as_str()),
                o.get_long().unwrap_or(o.get_id().as_str())
            )));
        }
    }
    Ok(())
}

/// Runs the command line `args` of binary `app`; the exit code.
pub(super) fn main(app: (&str, &str), registry: Result<AppRegistry, HarnessError>, args: Vec<OsString>) -> ExitCode {
    let registry = match registry {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let matches = match command(app, &registry).try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(crate::error::exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match real_main(&registry, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, json)) => {
            let code = crate::error::exit_code_of(e.chain()).unwrap_or(crate::error::exit::FAILED);
            if json {
                let line = serde_json::json!({ "level": "ERRO", "msg": describe(&e), "exit_code": code });
                eprintln!("{line}");
            } else {
                eprintln!("error: {}", describe(&e));
            }
            ExitCode::from(code)
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

/// Runs the command; on failure, the error and whether it is to be reported as JSON (the
/// log format asked for), so standard error stays one format.
fn real_main(registry: &AppRegistry, m: &ArgMatches) -> Result<(), (anyhow::Error, bool)> {
    let flag_json = m.get_one::<String>("log_format").is_some_and(|f| f == "json");
    let (config, log, format) = setup(m).map_err(|e| (e, flag_json))?;
    let json = matches!(format, LogFormat::Json);
    dispatch(registry, m, (config, log, json)).map_err(|e| (e, json))
}

/// The configuration, the logger and the log format.
fn setup(m: &ArgMatches) -> anyhow::Result<(Config, slog::Logger, LogFormat)> {
    let globals = Globals::from_arg_matches(m)?;
    let config = Config::load(globals.config.as_deref(), std::env::vars())?;
    let filter = match &globals.log_level {
        Some(spec) => parse_filter(spec).map_err(|e| e.context("--log-level / SLUICE_LOG"))?,
        None => config.log_filter()?,
    };
    let format = match globals.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Terminal,
        None => config.log_format()?,
    };
    let log = root_logger(format, filter);
    crate::security::apply_umask(&config);
    Ok((config, log, format))
}

fn dispatch(
    registry: &AppRegistry,
    m: &ArgMatches,
    (config, log, json): (Config, slog::Logger, bool),
) -> anyhow::Result<()> {
    match m.subcommand() {
        Some(("run", rm)) => return run_cmd::run(registry, job_of(registry, rm)?, (config, log, json)),
        Some(("submit", sm)) => return client_cmds::submit(registry, job_of(registry, sm)?, &config, json),
        _ => {}
    }
    match Fixed::from_arg_matches(m)? {
        Fixed::Jobs => {
            print_text(&jobs_listing(registry));
            Ok(())
        }
        Fixed::Coordinator(args) => serve_cmds::coordinator(registry, args, config, log),
        Fixed::Worker(args) => serve_cmds::worker(registry, args, config, log),
        Fixed::List(args) => client_cmds::list(args, &config),
        Fixed::Cancel(args) => client_cmds::cancel(args, &config),
        Fixed::Savepoint(args) => client_cmds::savepoint(args, &config),
        Fixed::Stop(args) => client_cmds::stop(args, &config),
        Fixed::Certs(args) => Ok(crate::certs::run(&args)?),
    }
}

/// `jobs`: each job's name and description, then its options with their help.
fn jobs_listing(registry: &AppRegistry) -> String {
    let mut out = String::new();
    for job in registry.jobs() {
        out.push_str(&format!("{}\n    {}\n", job.name(), job.description()));
        for arg in job.command().get_arguments().filter(|a| a.get_long() != Some("help")) {
            let long = arg.get_long().unwrap_or_default();
            let value = match arg.get_value_names() {
                Some(v) if arg.get_action().takes_values() => format!(" <{}>", v.join(" ")),
                None if arg.get_action().takes_values() => " <VALUE>".to_string(),
                _ => String::new(),
            };
            let mut line = format!("    --{long}{value}");
            if let Some(help) = arg.get_help() {
                line = format!("{line:<34} {help}");
            }
            if arg.is_required_set() {
                line.push_str(" (required)");
            }
            let defaults: Vec<_> = arg.get_default_values().iter().map(|d| d.to_string_lossy()).collect();
            if !defaults.is_empty() && arg.get_action().takes_values() {
                line.push_str(&format!(" [default: {}]", defaults.join(",")));
            }
            out.push_str(&line);
            out.push('\n');
        }
        let p = "    --parallelism <N>, -p";
        out.push_str(&format!(
            "{p:<34} Default parallelism of the job's operators [default: 1]\n"
        ));
    }
    out
}

/// Prints a line of a command's output. A reader that stopped reading (`sluice list | head
/// -1`) is not an error of ours: the command ends quietly, as Unix tools do, instead of
/// panicking as `println!` would.
pub(super) fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Prints text that ends its own lines (see [`print_line`]).
pub(super) fn print_text(text: &str) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM: the job then drains (sources stop, windows fire, sinks
/// commit) and the process exits with its summary.
pub(super) async fn stop_requested() {
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

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub(super) fn duration_arg(name: &str, v: &str) -> anyhow::Result<std::time::Duration> {
    Ok(sluice_core::duration::parse_duration(v).map_err(|e| e.context(format_args!("--{name}")))?)
}
