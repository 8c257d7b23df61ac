//! The client commands: `submit`, `list`, `cancel`, `savepoint`, `stop`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgMatches, FromArgMatches};
use sluice_core::cluster::{cancel_job, list_jobs, submit_job, trigger_savepoint, Target};

use super::cli::{print_line, print_text, runtime};
use super::run_cmd::CheckpointArgs;
use super::status::StatusOutput;
use super::{option_pairs, AppRegistry};
use crate::config::Config;

#[derive(clap::Parser, Debug)]
pub(super) struct SubmitArgs {
    /// The coordinator's address (with standbys: every coordinator's, comma-separated).
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    find: FindLeader,
    /// Default parallelism of the job's operators.
    #[arg(long, short = 'p', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: u32,
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
    /// Where the job's keyed state lives: heap, or tiered (in runs in the checkpoint
    /// storage, read through each worker's state cache; needs --checkpoint-interval).
    /// Default: each worker's --state-backend.
    #[arg(long, value_name = "heap|tiered")]
    state_backend: Option<String>,
    /// Follow the job to its end (a status line on a terminal, a line every 10 s otherwise);
    /// exits 0 only if it FINISHED.
    #[arg(long)]
    wait: bool,
    /// This submission's id (default: a fresh one). Submitting again with the id of a
    /// submission whose outcome is unknown gets its job back rather than starting another.
    #[arg(long, value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    submission_id: Option<String>,
    /// With --wait: no status line, only the end.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(clap::Parser, Debug)]
pub(super) struct ClientArgs {
    /// The coordinator's address (with standbys: every coordinator's, comma-separated).
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    find: FindLeader,
}

#[derive(clap::Parser, Debug)]
pub(super) struct CancelArgs {
    /// The coordinator's address (with standbys: every coordinator's, comma-separated).
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    find: FindLeader,
    /// The job's id (see `sluice list`).
    id: String,
}

#[derive(clap::Parser, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct SavepointArgs {
    #[command(subcommand)]
    action: Option<SavepointCommand>,
    /// The coordinator's address (with standbys: every coordinator's, comma-separated).
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    find: FindLeader,
    /// The job's id.
    job_id: Option<String>,
    /// Where to put the savepoint (a directory the coordinator and workers reach, or s3://;
    /// default: the coordinator's [security] savepoint-dir).
    dir: Option<String>,
}

#[derive(clap::Parser, Debug)]
pub(super) struct StopArgs {
    /// The coordinator's address (with standbys: every coordinator's, comma-separated).
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    find: FindLeader,
    /// The job's id.
    job_id: String,
    /// Where to put the savepoint (default: the coordinator's [security] savepoint-dir).
    #[arg(long)]
    savepoint_dir: Option<String>,
    /// Drain first: sources stop and every window fires, as at end of input.
    #[arg(long)]
    drain: bool,
}

#[derive(clap::Subcommand, Debug)]
pub(super) enum SavepointCommand {
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

/// Finding the leader of an HA cluster through etcd instead of (or besides) `--coordinator`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(super) struct FindLeader {
    /// The cluster's etcd members, comma-separated (default: [ha] etcd-endpoints): the leader
    /// is looked up there.
    #[arg(long, value_name = "URLS")]
    etcd_endpoints: Option<String>,
    /// The cluster's name in etcd (default: [ha] cluster-id).
    #[arg(long)]
    cluster_id: Option<String>,
}

impl FindLeader {
    /// The etcd endpoints and cluster id, if the leader is to be looked up.
    pub(super) fn settings(&self, file: &Config) -> anyhow::Result<Option<(Vec<String>, String)>> {
        let endpoints: Vec<String> = match &self.etcd_endpoints {
            Some(e) => e
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect(),
            None => file.ha.etcd_endpoints.clone(),
        };
        let id = self.cluster_id.clone().or_else(|| file.ha.cluster_id.clone());
        match (endpoints.is_empty(), id) {
            (true, None) => Ok(None),
            (false, Some(id)) => Ok(Some((endpoints, id))),
            (true, Some(_)) => Err(crate::HarnessError::BadOption(
                "--cluster-id needs --etcd-endpoints to look the leader up".into(),
            )
            .into()),
            (false, None) => Err(crate::HarnessError::BadOption(
                "--etcd-endpoints needs --cluster-id to look the leader up".into(),
            )
            .into()),
        }
    }
}

/// The addresses a client asks: the leader looked up in etcd first (if asked to), then the
/// given `--coordinator` list.
pub(super) fn coordinators(given: Option<&str>, find: &FindLeader, file: &Config) -> anyhow::Result<String> {
    let mut list: Vec<String> = given.map(|g| vec![g.to_string()]).unwrap_or_default();
    if let Some((endpoints, id)) = find.settings(file)? {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let rt = runtime()?;
        let leader = rt.block_on(async {
            let ha = crate::ha::leader_lookup(&endpoints, &id, &log).await?;
            ha.leader().await.map_err(|e| crate::HarnessError::Cluster(e.into()))
        });
        match leader {
            Ok(Some(l)) => list.insert(0, l),
            Ok(None) if !list.is_empty() => {}
            Ok(None) => {
                return Err(
                    crate::HarnessError::Cluster(sluice_core::cluster::ClusterError::NotLeader { leader: None }).into(),
                )
            }
            Err(e) if !list.is_empty() => {
                eprintln!("warning: could not look the leader up in etcd ({e}); trying --coordinator")
            }
            Err(e) => return Err(e.into()),
        }
    }
    if list.is_empty() {
        return Err(crate::HarnessError::BadOption(
            "say where the coordinator is: --coordinator HOST:PORT[,HOST:PORT...], or --etcd-endpoints with --cluster-id".into(),
        )
        .into());
    }
    Ok(list.join(","))
}

/// The coordinator at `addr`, reached with this node's TLS if configured.
pub(super) fn client_tls(config: &Config) -> anyhow::Result<Option<sluice_transport::tls::ClusterTls>> {
    Ok(crate::security::cluster_tls(config)?)
}

/// `submit JOB`: the job's options as given (checked by its own arguments here, and again by
/// the coordinator), Sluice's, and a submission id that makes retries safe.
pub(super) fn submit(
    registry: &AppRegistry,
    (job, m): (&str, &ArgMatches),
    config: &Config,
    json_logs: bool,
) -> anyhow::Result<()> {
    let args = SubmitArgs::from_arg_matches(m)?;
    let mut options = vec![("parallelism".to_string(), args.parallelism.to_string())];
    options.extend(job_options(registry, job, m)?);
    options.extend(sluice_options(&args));
    let tls = client_tls(config)?;
    let addr = coordinators(args.coordinator.as_deref(), &args.find, config)?;
    let to = Target {
        addr: &addr,
        tls: tls.as_ref(),
    };
    // One id for every try of this submission: a try whose outcome is unknown is sent again
    // (here, or by the user with --submission-id) and gets the job the first try created.
    let submission = args
        .submission_id
        .clone()
        .unwrap_or_else(sluice_core::cluster::submission_id);
    let rt = runtime()?;
    let id = rt.block_on(submit_job(to, job, &options, &submission)).map_err(|e| {
        let unknown = sluice_core::cluster::outcome_unknown(&e);
        let e = anyhow::Error::from(e);
        if unknown {
            e.context(format!(
                "the outcome of submission {submission} is unknown: submit again with --submission-id {submission} to get its job rather than start another"
            ))
        } else {
            e
        }
    })?;
    print_line(format_args!("submitted job {job} as"));
    print_line(format_args!("{id}"));
    if args.wait {
        rt.block_on(super::status::follow(
            to,
            &id,
            StatusOutput::choose(args.quiet, json_logs, false),
        ))?;
    }
    Ok(())
}

/// The job's own options as given, its file options made absolute: workers resolve a
/// relative path against their own directories, which need not be this one (or each other's).
fn job_options(registry: &AppRegistry, job: &str, m: &ArgMatches) -> anyhow::Result<Vec<(String, String)>> {
    let dyn_job = registry.get(job)?;
    let mut options = Vec::new();
    for (key, value) in option_pairs(&dyn_job.command(), m)? {
        let value = if dyn_job.files().contains(&key.as_str()) {
            let path = std::path::absolute(&value).with_context(|| format!("resolving --{key} {value}"))?;
            path.to_str()
                .with_context(|| format!("--{key}: the path is not UTF-8"))?
                .to_string()
        } else {
            value
        };
        options.push((key, value));
    }
    Ok(options)
}

/// The checkpoint, restart and savepoint options given, as the coordinator reads them.
fn sluice_options(args: &SubmitArgs) -> Vec<(String, String)> {
    let c = &args.checkpoints;
    let flag = |on: bool| on.then(|| "true".to_string());
    [
        ("checkpoint-interval", c.checkpoint_interval.clone()),
        ("checkpoint-timeout", c.checkpoint_timeout.clone()),
        ("min-pause-between-checkpoints", c.min_pause_between_checkpoints.clone()),
        (
            "tolerable-failed-checkpoints",
            c.tolerable_failed_checkpoints.map(|n| n.to_string()),
        ),
        ("retained-checkpoints", c.retained_checkpoints.map(|n| n.to_string())),
        ("restart-strategy", c.restart_strategy.clone()),
        ("on-unusable-checkpoint", c.on_unusable()),
        ("from-savepoint", args.from_savepoint.clone()),
        ("allow-non-restored-state", flag(args.allow_non_restored_state)),
        ("uid-mapping", args.uid_mapping.clone()),
        ("retain-checkpoints-on-cancel", flag(args.retain_checkpoints_on_cancel)),
        ("state-backend", args.state_backend.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), v?)))
    .collect()
}

pub(super) fn list(args: ClientArgs, config: &Config) -> anyhow::Result<()> {
    let tls = client_tls(config)?;
    let addr = coordinators(args.coordinator.as_deref(), &args.find, config)?;
    let to = Target {
        addr: &addr,
        tls: tls.as_ref(),
    };
    for j in runtime()?.block_on(list_jobs(to))? {
        match &j.error {
            Some(e) if j.status == sluice_core::cluster::JobStatus::Failed => {
                print_line(format_args!("{} {} {} ({e})", j.id, j.name, j.status))
            }
            _ => print_line(format_args!("{} {} {}", j.id, j.name, j.status)),
        }
    }
    Ok(())
}

pub(super) fn cancel(args: CancelArgs, config: &Config) -> anyhow::Result<()> {
    let tls = client_tls(config)?;
    let addr = coordinators(args.coordinator.as_deref(), &args.find, config)?;
    let to = Target {
        addr: &addr,
        tls: tls.as_ref(),
    };
    runtime()?.block_on(cancel_job(to, &args.id))?;
    print_line(format_args!("cancelling job {}", args.id));
    Ok(())
}

pub(super) fn savepoint(args: SavepointArgs, config: &Config) -> anyhow::Result<()> {
    let rt = runtime()?;
    let Some(cmd) = args.action else {
        let Some(job) = args.job_id else {
            return Err(crate::HarnessError::BadOption(
                "usage: sluice savepoint --coordinator HOST:PORT <JOB_ID> [DIR], or sluice savepoint list|inspect|dispose".into(),
            )
            .into());
        };
        let addr = coordinators(args.coordinator.as_deref(), &args.find, config)?;
        let tls = client_tls(config)?;
        let to = Target {
            addr: &addr,
            tls: tls.as_ref(),
        };
        let dir = args.dir.unwrap_or_default();
        let (path, checkpoint) = rt.block_on(trigger_savepoint(to, &job, &dir, None))?;
        print_line(format_args!("savepoint of job {job} at checkpoint {checkpoint}:"));
        print_line(format_args!("{path}"));
        return Ok(());
    };
    match cmd {
        SavepointCommand::List { dir } => print_text(&rt.block_on(crate::savepoints::list(&dir))?),
        SavepointCommand::Inspect { path } => print_text(&rt.block_on(crate::savepoints::inspect(&path))?),
        SavepointCommand::Dispose { path } => {
            let d = rt.block_on(crate::savepoints::dispose(&path))?;
            print_line(format_args!("disposed {} ({} files)", path.display(), d.files));
            if !d.left.is_empty() {
                print_line(format_args!(
                    "kept the directory: {} entries in it are not part of the savepoint: {}",
                    d.left.len(),
                    d.left.join(", ")
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn stop(args: StopArgs, config: &Config) -> anyhow::Result<()> {
    let tls = client_tls(config)?;
    let addr = coordinators(args.coordinator.as_deref(), &args.find, config)?;
    let to = Target {
        addr: &addr,
        tls: tls.as_ref(),
    };
    let dir = args.savepoint_dir.clone().unwrap_or_default();
    let (path, checkpoint) = runtime()?.block_on(trigger_savepoint(to, &args.job_id, &dir, Some(args.drain)))?;
    print_line(format_args!(
        "job {} stopped with a savepoint at checkpoint {checkpoint}:",
        args.job_id
    ));
    print_line(format_args!("{path}"));
    Ok(())
}
