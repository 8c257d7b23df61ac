//! The built-in jobs as a cluster job registry: the coordinator and every worker build a
//! submitted job from its name and options, as `sluice run` would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sluice_core::cluster::{JobRegistry, StoreOpener};
use sluice_core::error::{InvalidSetting, JobBuildError};
use sluice_core::JobGraph;

use crate::jobs::{self, JobOptions};

/// Job options of `sluice submit` as they travel to the cluster (`key` without `--`).
pub const JOB_OPTION_KEYS: &[&str] = &[
    "parallelism",
    "input",
    "output",
    "print",
    "events",
    "events-per-second",
    "seed",
    "lines-per-second",
    "events-dir",
];

/// The registry of built-in jobs.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinJobs;

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, InvalidSetting> {
    v.parse()
        .map_err(|_| InvalidSetting(format!("--{key}: '{v}' is not a valid number")))
}

/// Reads job options from their key/value form.
pub fn job_options(options: &BTreeMap<String, String>) -> Result<JobOptions, InvalidSetting> {
    let mut o = JobOptions {
        parallelism: 1,
        ..JobOptions::default()
    };
    for (k, v) in options {
        match k.as_str() {
            "parallelism" => o.parallelism = number(k, v)?,
            "input" => o.input = Some(PathBuf::from(v)),
            "output" => o.output = Some(PathBuf::from(v)),
            "print" => o.print = number::<bool>(k, v)?,
            "events" => o.events = Some(number(k, v)?),
            "events-per-second" => o.events_per_second = Some(number(k, v)?),
            "seed" => o.seed = number(k, v)?,
            "lines-per-second" => o.lines_per_second = Some(number(k, v)?),
            "events-dir" => o.events_dir = Some(PathBuf::from(v)),
            other => {
                return Err(InvalidSetting(format!(
                    "unknown job option --{other}; job options are: --{}",
                    JOB_OPTION_KEYS.join(", --")
                )))
            }
        }
    }
    Ok(o)
}

/// The key/value form of job options (only those that differ from the defaults).
pub fn option_pairs(o: &JobOptions) -> Vec<(String, String)> {
    let mut v = vec![("parallelism".to_string(), o.parallelism.to_string())];
    let mut put = |k: &str, val: String| v.push((k.to_string(), val));
    if let Some(p) = &o.input {
        put("input", p.display().to_string());
    }
    if let Some(p) = &o.output {
        put("output", p.display().to_string());
    }
    if o.print {
        put("print", "true".into());
    }
    if let Some(n) = o.events {
        put("events", n.to_string());
    }
    if let Some(n) = o.events_per_second {
        put("events-per-second", n.to_string());
    }
    if o.seed != 0 {
        put("seed", o.seed.to_string());
    }
    if let Some(n) = o.lines_per_second {
        put("lines-per-second", n.to_string());
    }
    if let Some(p) = &o.events_dir {
        put("events-dir", p.display().to_string());
    }
    v
}

impl JobRegistry for BuiltinJobs {
    fn build(&self, name: &str, options: &BTreeMap<String, String>) -> Result<JobGraph, JobBuildError> {
        let opts = job_options(options)?;
        Ok(jobs::build(name, &opts)?.build()?)
    }

    fn file_options(&self, _name: &str) -> Vec<&'static str> {
        // Every built-in job reads and writes files only through these.
        vec!["input", "output", "events-dir"]
    }
}

/// Opens checkpoint locations for the cluster (local directories and `s3://`).
pub fn store_opener() -> StoreOpener {
    Arc::new(|location: &str| crate::settings::open_store(location))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_their_key_value_form() {
        let o = JobOptions {
            parallelism: 3,
            output: Some(PathBuf::from("/tmp/out")),
            events: Some(10),
            seed: 7,
            ..JobOptions::default()
        };
        let map: BTreeMap<String, String> = option_pairs(&o).into_iter().collect();
        let back = job_options(&map).unwrap();
        assert_eq!(
            (back.parallelism, back.output, back.events, back.seed),
            (3, o.output, Some(10), 7)
        );
    }

    #[test]
    fn bad_options_are_named() {
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(job_options(&m("events", "many"))
            .unwrap_err()
            .0
            .contains("--events: 'many'"));
        assert!(job_options(&m("colour", "red"))
            .unwrap_err()
            .0
            .contains("unknown job option --colour"));
        let Err(err) = BuiltinJobs.build("no-such-job", &BTreeMap::new()) else {
            panic!("an unknown job must be refused")
        };
        assert!(
            matches!(&err, JobBuildError::UnknownJob { name, known } if name == "no-such-job" && known.iter().any(|k| k == "nexmark-q5")),
            "{err}"
        );
    }
}
