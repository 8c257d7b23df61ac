//! The options of a submission that the cluster itself uses; the rest go to the job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_state::blob::BlobStore;
use sluice_transport::wire::WireOption;

use crate::checkpoint::{CheckpointConfig, RestartStrategy};
use crate::duration::parse_duration;

/// Options read by the coordinator (named as `sluice submit` spells them, without `--`).
pub(crate) const CLUSTER_OPTIONS: &[&str] = &[
    "checkpoint-interval",
    "checkpoint-timeout",
    "min-pause-between-checkpoints",
    "tolerable-failed-checkpoints",
    "retained-checkpoints",
    "restart-strategy",
    "from-savepoint",
    "allow-non-restored-state",
    "uid-mapping",
];

/// A submission's options, checked.
#[derive(Debug, Clone)]
pub(crate) struct SubmitOptions {
    /// Options of the job itself (everything not in [`CLUSTER_OPTIONS`]), in key order.
    pub(crate) job: BTreeMap<String, String>,
    pub(crate) checkpointing: Option<CheckpointConfig>,
    pub(crate) restart: Option<RestartStrategy>,
    /// The savepoint to start from, whether state of operators the job no longer has may be
    /// dropped, and operators renamed since (old uid → new uid).
    pub(crate) from_savepoint: Option<(String, bool, BTreeMap<String, String>)>,
}

impl SubmitOptions {
    /// The job's own options as they travel to workers.
    pub(crate) fn job_wire(&self) -> Vec<WireOption> {
        self.job
            .iter()
            .map(|(k, v)| WireOption {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    }
}

fn duration(key: &str, v: &str) -> Result<Duration, String> {
    let d = parse_duration(v).map_err(|e| format!("--{key}: {e}"))?;
    if d.is_zero() {
        return Err(format!("--{key} must be positive"));
    }
    Ok(d)
}

fn count(key: &str, v: &str) -> Result<u32, String> {
    v.parse().map_err(|_| format!("--{key}: '{v}' is not a whole number"))
}

/// Splits and checks `options`; `store` is where the coordinator keeps checkpoints, if it
/// was given a place.
pub(crate) fn parse(options: &[WireOption], store: Option<&Arc<dyn BlobStore>>) -> Result<SubmitOptions, String> {
    let mut job = BTreeMap::new();
    let mut cluster = BTreeMap::new();
    for o in options {
        let map = if CLUSTER_OPTIONS.contains(&o.key.as_str()) {
            &mut cluster
        } else {
            &mut job
        };
        if map.insert(o.key.clone(), o.value.clone()).is_some() {
            return Err(format!("option --{} is given twice", o.key));
        }
    }
    let allow = match cluster.remove("allow-non-restored-state").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(format!("--allow-non-restored-state: '{other}' is not true or false")),
    };
    let mapping = match cluster.remove("uid-mapping") {
        Some(m) => Some(crate::runtime::parse_uid_mapping(&m).map_err(|e| format!("--uid-mapping: {e}"))?),
        None => None,
    };
    let from_savepoint = match cluster.remove("from-savepoint") {
        Some(path) => Some((path, allow, mapping.unwrap_or_default())),
        None if allow => return Err("--allow-non-restored-state needs --from-savepoint".into()),
        None if mapping.is_some() => return Err("--uid-mapping needs --from-savepoint".into()),
        None => None,
    };
    let restart = match cluster.remove("restart-strategy") {
        Some(s) => Some(RestartStrategy::parse(&s).map_err(|e| format!("--restart-strategy: {e}"))?),
        None => None,
    };
    let checkpointing = match cluster.remove("checkpoint-interval") {
        None => {
            if let Some(k) = cluster.keys().next() {
                return Err(format!("--{k} needs checkpointing: give --checkpoint-interval"));
            }
            None
        }
        Some(interval) => {
            let store = store.ok_or_else(|| {
                "--checkpoint-interval needs a place for checkpoints: start the coordinator with --checkpoint-dir"
                    .to_string()
            })?;
            let mut c = CheckpointConfig::new(duration("checkpoint-interval", &interval)?, store.clone());
            if let Some(v) = cluster.remove("checkpoint-timeout") {
                c.timeout = duration("checkpoint-timeout", &v)?;
            }
            if let Some(v) = cluster.remove("min-pause-between-checkpoints") {
                c.min_pause = parse_duration(&v).map_err(|e| format!("--min-pause-between-checkpoints: {e}"))?;
            }
            if let Some(v) = cluster.remove("tolerable-failed-checkpoints") {
                c.tolerable_failures = count("tolerable-failed-checkpoints", &v)?;
            }
            if let Some(v) = cluster.remove("retained-checkpoints") {
                c.retained = count("retained-checkpoints", &v)?;
            }
            c.validate()?;
            Some(c)
        }
    };
    debug_assert!(cluster.is_empty(), "every cluster option is handled: {cluster:?}");
    Ok(SubmitOptions {
        job,
        checkpointing,
        restart,
        from_savepoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_state::blob::MemoryStore;

    fn opts(kv: &[(&str, &str)]) -> Vec<WireOption> {
        kv.iter()
            .map(|(k, v)| WireOption {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    #[test]
    fn splits_cluster_and_job_options() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let p = parse(
            &opts(&[("parallelism", "4"), ("checkpoint-interval", "200ms"), ("events", "10")]),
            Some(&store),
        )
        .unwrap();
        assert_eq!(p.job.keys().collect::<Vec<_>>(), ["events", "parallelism"]);
        assert_eq!(p.checkpointing.unwrap().interval, Duration::from_millis(200));
    }

    #[test]
    fn refuses_bad_checkpoint_options_by_name() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let err = |kv: &[(&str, &str)], s: Option<&Arc<dyn BlobStore>>| parse(&opts(kv), s).unwrap_err();
        assert!(err(&[("checkpoint-interval", "1s")], None).contains("--checkpoint-dir"));
        assert!(err(&[("checkpoint-interval", "0s")], Some(&store)).contains("must be positive"));
        assert!(err(&[("checkpoint-interval", "soon")], Some(&store)).contains("--checkpoint-interval"));
        assert!(err(&[("retained-checkpoints", "2")], Some(&store)).contains("needs checkpointing"));
        assert!(err(
            &[("checkpoint-interval", "1s"), ("retained-checkpoints", "x")],
            Some(&store)
        )
        .contains("whole number"));
        assert!(err(&[("restart-strategy", "sometimes")], None).contains("--restart-strategy"));
        assert!(err(&[("events", "1"), ("events", "2")], None).contains("twice"));
    }
}
