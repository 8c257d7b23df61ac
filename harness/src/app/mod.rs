//! Sluice as a library: [`App`] gives any binary the whole `sluice` command line (`run`,
//! `coordinator`, `worker`, `submit`, `list`, `cancel`, `savepoint`, `stop`, `jobs`,
//! `certs`, the REST API, configuration, logging and reporters) with the binary's own jobs
//! registered beside, or instead of, the built-in ones.
//!
//! A cluster runs one binary: the coordinator and every worker build a submitted job from
//! its name and options with the same registry, and a worker whose registry differs is
//! refused when it registers (see [`AppRegistry::build_id`]).

mod cli;
mod client_cmds;
mod job;
mod run_cmd;
mod serve_cmds;
pub(crate) mod status;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use sluice_core::cluster::JobRegistry;
use sluice_core::error::{InvalidSetting, JobBuildError};
use sluice_core::{JobGraph, StreamEnv};

pub(crate) use job::{option_pairs, DynJob};
pub use job::{Job, NoOptions};
pub use status::{StatusFigures, StatusOutput};

use crate::HarnessError;

/// A Sluice binary: its name (in help and version output) and its jobs.
///
/// ```no_run
/// use sluice::App;
/// # use sluice::app::{Job, NoOptions};
/// # struct Sessions;
/// # impl Job for Sessions {
/// #     type Options = NoOptions;
/// #     fn name(&self) -> &str { "sessions" }
/// #     fn description(&self) -> &str { "click sessions" }
/// #     fn build(&self, _: &sluice_core::StreamEnv, _: &NoOptions) -> Result<(), sluice_core::error::JobBuildError> { Ok(()) }
/// # }
///
/// fn main() -> std::process::ExitCode {
///     // `clicks run sessions ...`, `clicks coordinator`, `clicks worker`, `clicks submit sessions ...`
///     App::new("clicks").version(env!("CARGO_PKG_VERSION")).job(Sessions).main()
/// }
/// ```
pub struct App {
    name: String,
    version: String,
    jobs: Vec<Registered>,
}

/// A job as registered, with the type that registered it (named when two share a name).
struct Registered {
    job: Arc<dyn DynJob>,
    type_name: &'static str,
}

impl App {
    /// A binary called `name`, with no jobs yet.
    pub fn new(name: impl Into<String>) -> Self {
        App {
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            jobs: Vec::new(),
        }
    }

    /// The binary's version (`--version`, and part of the build a worker registers with):
    /// pass your crate's, `env!("CARGO_PKG_VERSION")`. Without it, Sluice's version is used,
    /// and two builds of your jobs that differ only in their code look alike to the
    /// coordinator.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Registers `job`.
    pub fn job<J: Job>(mut self, job: J) -> Self {
        self.jobs.push(Registered {
            job: Arc::new(job),
            type_name: std::any::type_name::<J>(),
        });
        self
    }

    /// Registers the built-in jobs: word count and the Nexmark queries.
    pub fn builtins(self) -> Self {
        crate::jobs::register(self)
    }

    /// The registry of this binary's jobs; refuses two jobs of one name (naming both), a
    /// name that is not plain, and an option that clashes with Sluice's own.
    pub fn registry(&self) -> Result<AppRegistry, HarnessError> {
        let mut jobs: BTreeMap<String, (Arc<dyn DynJob>, &'static str)> = BTreeMap::new();
        for r in &self.jobs {
            let name = r.job.name().to_string();
            check_job_name(&name)?;
            if let Some((_, first)) = jobs.get(&name) {
                return Err(HarnessError::BadOption(format!(
                    "two jobs are registered as '{name}': {first} and {}; give one another name",
                    r.type_name
                )));
            }
            job::check_shapes(&name, &r.job.command()).map_err(|e| HarnessError::BadOption(e.0))?;
            cli::check_job_options(&name, &r.job.command())?;
            jobs.insert(name, (r.job.clone(), r.type_name));
        }
        Ok(AppRegistry {
            app: self.name.clone(),
            version: self.version.clone(),
            jobs: jobs.into_iter().map(|(n, (j, _))| (n, j)).collect(),
        })
    }

    /// Runs the command line of this binary (`std::env::args`) and returns its exit code:
    /// 0, 2 for a usage error, or the code of the error's kind (see `sluice::error::exit`).
    pub fn main(self) -> ExitCode {
        cli::main(
            (&self.name, &self.version),
            self.registry(),
            std::env::args_os().collect(),
        )
    }

    /// Like [`App::main`], with the arguments given (the first is the program's name).
    pub fn main_with_args(self, args: Vec<std::ffi::OsString>) -> ExitCode {
        cli::main((&self.name, &self.version), self.registry(), args)
    }
}

fn check_job_name(name: &str) -> Result<(), HarnessError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || name.len() > 64 || !name.chars().all(plain) || name.starts_with('-') || name == "help" {
        return Err(HarnessError::BadOption(format!(
            "job name {name:?}: expected 1 to 64 letters, digits, '-' or '_' (not starting with '-', not 'help')"
        )));
    }
    Ok(())
}

/// The jobs of one binary, by name: the cluster's [`JobRegistry`] and what `run`, `submit`
/// and `jobs` read.
#[derive(Clone)]
pub struct AppRegistry {
    app: String,
    version: String,
    jobs: BTreeMap<String, Arc<dyn DynJob>>,
}

impl AppRegistry {
    pub(crate) fn get(&self, name: &str) -> Result<&Arc<dyn DynJob>, JobBuildError> {
        self.jobs.get(name).ok_or_else(|| JobBuildError::UnknownJob {
            name: name.to_string(),
            known: self.jobs.keys().cloned().collect(),
        })
    }

    pub(crate) fn jobs(&self) -> impl Iterator<Item = &Arc<dyn DynJob>> {
        self.jobs.values()
    }

    /// Builds job `name` with key/value `options` into its graph, as every process of a
    /// cluster does (`parallelism` is Sluice's; the rest are the job's own).
    pub fn build_graph(&self, name: &str, options: &BTreeMap<String, String>) -> Result<JobGraph, JobBuildError> {
        let job = self.get(name)?;
        let mut options = options.clone();
        let parallelism = match options.remove("parallelism") {
            None => 1,
            Some(v) => v.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(|| {
                JobBuildError::BadOption(InvalidSetting(format!(
                    "--parallelism: '{v}' is not a whole number of at least 1"
                )))
            })?,
        };
        let matches = job::parse_pairs(&job.command(), &options)?;
        let env = StreamEnv::new(name);
        env.set_parallelism(parallelism);
        job.build_from(&env, &matches)?;
        Ok(env.build()?)
    }
}

impl JobRegistry for AppRegistry {
    fn build(&self, name: &str, options: &BTreeMap<String, String>) -> Result<JobGraph, JobBuildError> {
        self.build_graph(name, options)
    }

    fn file_options(&self, name: &str) -> Vec<&'static str> {
        self.jobs.get(name).map(|j| j.files().to_vec()).unwrap_or_default()
    }

    /// The binary's name and version, its jobs, and a digest of their options (names, whether
    /// they take a value, whether required): equal exactly when two binaries build the same
    /// jobs from the same options.
    fn build_id(&self) -> String {
        let mut schema = String::new();
        for (name, job) in &self.jobs {
            schema.push_str(name);
            for a in job.command().get_arguments() {
                let defaults: Vec<_> = a.get_default_values().iter().map(|d| d.to_string_lossy()).collect();
                schema.push_str(&format!(
                    " {}:{}:{}:{:?}:{}",
                    a.get_long().unwrap_or_default(),
                    a.get_action().takes_values(),
                    a.is_required_set(),
                    a.get_value_parser().type_id(),
                    defaults.join(",")
                ));
            }
            schema.push('\n');
        }
        let names: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
        format!(
            "{} {} (sluice {}; jobs: {}; options {:016x})",
            self.app,
            self.version,
            env!("CARGO_PKG_VERSION"),
            names.join(", "),
            fnv1a(schema.as_bytes())
        )
    }
}

/// FNV-1a, 64 bits: a digest that is the same in every process and build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
