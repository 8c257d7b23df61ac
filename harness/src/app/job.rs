//! The job trait a user implements, and how a job's typed options travel: parsed from the
//! command line by the job's own `clap` arguments, sent to the cluster as key/value pairs,
//! and parsed back by the same arguments on the coordinator (where a bad value is refused at
//! submission) and on every worker.

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use sluice_core::error::{InvalidSetting, JobBuildError};
use sluice_core::StreamEnv;

/// A job a Sluice binary can run by name: embedded (`run`), or on a cluster (`submit`) whose
/// coordinator and workers are the same binary.
///
/// Its options are a `clap::Args` struct: they are documented by `jobs` and
/// `submit NAME --help`, and a value of the wrong type, a missing required option or an
/// unknown one is refused when the job is submitted, naming the option.
///
/// ```
/// use sluice::app::Job;
/// use sluice_core::error::JobBuildError;
/// use sluice_core::connectors::PrintSink;
/// use sluice_core::{StreamEnv, WatermarkStrategy};
/// use sluice_core::connectors::VecSource;
///
/// /// Doubles a range of numbers.
/// struct Doubler;
///
/// #[derive(clap::Args, Debug)]
/// struct DoublerOptions {
///     /// How many numbers.
///     #[arg(long, default_value_t = 10)]
///     count: u64,
/// }
///
/// impl Job for Doubler {
///     type Options = DoublerOptions;
///     fn name(&self) -> &str { "doubler" }
///     fn description(&self) -> &str { "doubles 0..count" }
///     fn build(&self, env: &StreamEnv, o: &DoublerOptions) -> Result<(), JobBuildError> {
///         let numbers: Vec<u64> = (0..o.count).collect();
///         env.from_source(VecSource::new(numbers), WatermarkStrategy::no_watermarks(), "numbers")
///             .map(|n: u64| n * 2)
///             .sink_to(PrintSink::default(), "print");
///         Ok(())
///     }
/// }
/// # let app = sluice::App::new("doubler").job(Doubler);
/// ```
pub trait Job: Send + Sync + 'static {
    /// The job's options (see the trait's documentation). A job without options uses
    /// [`NoOptions`].
    type Options: clap::Args + Send + Sync + 'static;

    /// The name it is run and submitted by (letters, digits, `-`, `_`).
    fn name(&self) -> &str;

    /// One line on what it computes (shown by `jobs`).
    fn description(&self) -> &str;

    /// The options (long names, without `--`) that name files or directories: a client
    /// makes them absolute before submitting, and the coordinator and workers check them
    /// against their allowed paths.
    fn files(&self) -> &'static [&'static str] {
        &[]
    }

    /// Adds the job's sources, operators and sinks to `env` (whose parallelism is already
    /// set from `--parallelism`).
    fn build(&self, env: &StreamEnv, options: &Self::Options) -> Result<(), JobBuildError>;
}

/// The options of a job that takes none.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct NoOptions {}

/// A registered job with its options' type erased.
pub(crate) trait DynJob: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    fn files(&self) -> &'static [&'static str];
    /// The job's options as a command named after the job.
    fn command(&self) -> Command;
    /// Parses the options out of `matches` (of [`DynJob::command`]) and builds the job.
    fn build_from(&self, env: &StreamEnv, matches: &ArgMatches) -> Result<(), JobBuildError>;
}

impl<J: Job> DynJob for J {
    fn name(&self) -> &str {
        Job::name(self)
    }

    fn description(&self) -> &str {
        Job::description(self)
    }

    fn files(&self) -> &'static [&'static str] {
        Job::files(self)
    }

    fn command(&self) -> Command {
        let name = Job::name(self).to_string();
        let command = Command::new(name).next_help_heading("Job options");
        <J::Options as clap::Args>::augment_args(command)
            .about(Job::description(self).to_string())
            .next_help_heading("Options")
    }

    fn build_from(&self, env: &StreamEnv, matches: &ArgMatches) -> Result<(), JobBuildError> {
        let options = <J::Options as clap::FromArgMatches>::from_arg_matches(matches)
            .map_err(|e| bad(format!("job '{}': {}", Job::name(self), clap_message(&e))))?;
        Job::build(self, env, &options)
    }
}

fn bad(message: String) -> JobBuildError {
    JobBuildError::BadOption(InvalidSetting(message))
}

/// clap's message without its `error:` prefix and usage lines.
pub(crate) fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let text = text.split("\n\nUsage:").next().unwrap_or(&text);
    let text = text.split("\n\nFor more information").next().unwrap_or(text);
    text.trim().trim_start_matches("error: ").replace('\n', " ")
}

/// The options of `command` as given on the command line (not defaults), as key/value pairs
/// (`key` is the long name; a flag is `true`).
pub(crate) fn option_pairs(command: &Command, matches: &ArgMatches) -> Result<Vec<(String, String)>, InvalidSetting> {
    let mut pairs = Vec::new();
    for arg in command.get_arguments() {
        let (id, Some(long)) = (arg.get_id().as_str(), arg.get_long()) else {
            continue;
        };
        if !matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        if !arg.get_action().takes_values() {
            // A flag (the only kind [`check_shapes`] lets through) set from the environment
            // may say `false`.
            if matches.get_flag(id) {
                pairs.push((long.to_string(), "true".to_string()));
            }
            continue;
        }
        let values: Vec<_> = matches.get_raw(id).into_iter().flatten().collect();
        let [value] = values.as_slice() else {
            return Err(InvalidSetting(format!(
                "--{long} is given {} times: a job option takes one value",
                values.len()
            )));
        };
        let value = value
            .to_str()
            .ok_or_else(|| InvalidSetting(format!("--{long}: the value is not UTF-8")))?;
        pairs.push((long.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// Parses key/value options (as they travel) with `command`'s arguments: an unknown key, a
/// flag with a value other than `true`/`false`, a missing required option or a badly typed
/// value is refused naming the option.
pub(crate) fn parse_pairs(command: &Command, options: &BTreeMap<String, String>) -> Result<ArgMatches, InvalidSetting> {
    let job = command.get_name().to_string();
    let mut argv = vec![job.clone()];
    for (key, value) in options {
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(key.as_str())) else {
            return Err(InvalidSetting(format!(
                "job '{job}' has no option --{key}; its options are: {}",
                known_options(command)
            )));
        };
        if arg.get_action().takes_values() {
            argv.push(format!("--{key}={value}"));
        } else {
            match value.as_str() {
                "true" => argv.push(format!("--{key}")),
                "false" => {}
                other => {
                    return Err(InvalidSetting(format!(
                        "job '{job}': --{key} is a flag: 'true' or 'false', not '{other}'"
                    )))
                }
            }
        }
    }
    // Every process parses what the client sent, never its own environment: the options of
    // one job are the same on the coordinator and on every worker.
    command
        .clone()
        .mut_args(|a| a.env(None::<&'static str>))
        .try_get_matches_from(argv)
        .map_err(|e| InvalidSetting(format!("job '{job}': {}", clap_message(&e))))
}

/// `--a, --b <N>` for an error message.
fn known_options(command: &Command) -> String {
    let names: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "help")
        .map(|l| format!("--{l}"))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Refuses job options that would not survive the trip to the cluster as key/value pairs:
/// one without a long name (positional or short only), and any other than a single value or
/// a flag (counts, lists, several values, optional values, value delimiters).
pub(crate) fn check_shapes(job: &str, command: &Command) -> Result<(), InvalidSetting> {
    for a in command.get_arguments() {
        let Some(long) = a.get_long() else {
            return Err(InvalidSetting(format!(
                "job '{job}': option '{}' has no long name: job options travel to the cluster by their long names (#[arg(long)])",
                a.get_id()
            )));
        };
        let single = a
            .get_num_args()
            .is_none_or(|n| n.min_values() == 1 && n.max_values() == 1);
        let fits = match a.get_action() {
            clap::ArgAction::Set => single && a.get_value_delimiter().is_none(),
            clap::ArgAction::SetTrue => true,
            _ => false,
        };
        if !fits {
            return Err(InvalidSetting(format!(
                "job '{job}': option --{long} is not a single value nor a flag: job options travel to the cluster as one value each (use a String and split it in the job)"
            )));
        }
    }
    Ok(())
}
