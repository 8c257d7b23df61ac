//! The options of a submission that the cluster itself uses; the rest go to the job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_state::blob::BlobStore;
use sluice_transport::wire::WireOption;

use crate::checkpoint::{CheckpointConfig, RestartStrategy, UnusableCheckpoint};
use crate::duration::parse_duration;
use crate::error::InvalidSetting;
use crate::state_backend::BackendKind;

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
    "on-unusable-checkpoint",
    "retain-checkpoints-on-cancel",
    "state-backend",
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
    /// Keep the job's checkpoints when it is cancelled (they are deleted by default, and
    /// always when it finishes).
    pub(crate) retain_on_cancel: bool,
    /// The state backend the job asked for (`None`: the heap).
    pub(crate) state_backend: Option<BackendKind>,
}

impl SubmitOptions {
    /// The state backend as it travels to workers: always named, so that every subtask of
    /// every attempt runs on the same one.
    pub(crate) fn state_backend_wire(&self) -> String {
        self.state_backend.unwrap_or(BackendKind::Heap).name().to_owned()
    }

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

fn duration(key: &str, v: &str) -> Result<Duration, InvalidSetting> {
    let d = parse_duration(v).map_err(|e| e.context(format_args!("--{key}")))?;
    if d.is_zero() {
        return Err(InvalidSetting(format!("--{key} must be positive")));
    }
    Ok(d)
}

fn count(key: &str, v: &str) -> Result<u32, InvalidSetting> {
    v.parse()
        .map_err(|_| InvalidSetting(format!("--{key}: '{v}' is not a whole number")))
}

type Options = BTreeMap<String, String>;

/// Splits `options` into the job's own and the cluster's; an option given twice is refused.
fn split(options: &[WireOption]) -> Result<(Options, Options), InvalidSetting> {
    let (mut job, mut cluster) = (BTreeMap::new(), BTreeMap::new());
    for o in options {
        let map = if CLUSTER_OPTIONS.contains(&o.key.as_str()) {
            &mut cluster
        } else {
            &mut job
        };
        if map.insert(o.key.clone(), o.value.clone()).is_some() {
            return Err(InvalidSetting(format!("option --{} is given twice", o.key)));
        }
    }
    Ok((job, cluster))
}

/// The savepoint to start from, with its `allow-non-restored-state` and `uid-mapping`.
fn savepoint_options(cluster: &mut Options) -> Result<Option<(String, bool, Options)>, InvalidSetting> {
    let allow = match cluster.remove("allow-non-restored-state").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(InvalidSetting(format!(
                "--allow-non-restored-state: '{other}' is not true or false"
            )))
        }
    };
    let mapping = match cluster.remove("uid-mapping") {
        Some(m) => Some(crate::runtime::parse_uid_mapping(&m).map_err(|e| e.context("--uid-mapping"))?),
        None => None,
    };
    match cluster.remove("from-savepoint") {
        Some(path) => Ok(Some((path, allow, mapping.unwrap_or_default()))),
        None if allow => Err(InvalidSetting(
            "--allow-non-restored-state needs --from-savepoint".into(),
        )),
        None if mapping.is_some() => Err(InvalidSetting("--uid-mapping needs --from-savepoint".into())),
        None => Ok(None),
    }
}

/// The checkpoint settings, if `checkpoint-interval` turns checkpointing on.
fn checkpoint_options(
    cluster: &mut Options,
    store: Option<&Arc<dyn BlobStore>>,
) -> Result<Option<CheckpointConfig>, InvalidSetting> {
    let Some(interval) = cluster.remove("checkpoint-interval") else {
        if let Some(k) = cluster.keys().next() {
            return Err(InvalidSetting(format!(
                "--{k} needs checkpointing: give --checkpoint-interval"
            )));
        }
        return Ok(None);
    };
    let store = store.ok_or_else(|| {
        InvalidSetting(
            "--checkpoint-interval needs a place for checkpoints: start the coordinator with --checkpoint-dir".into(),
        )
    })?;
    let mut c = CheckpointConfig::new(duration("checkpoint-interval", &interval)?, store.clone());
    if let Some(v) = cluster.remove("checkpoint-timeout") {
        c.timeout = duration("checkpoint-timeout", &v)?;
    }
    if let Some(v) = cluster.remove("min-pause-between-checkpoints") {
        c.min_pause = parse_duration(&v).map_err(|e| e.context("--min-pause-between-checkpoints"))?;
    }
    if let Some(v) = cluster.remove("tolerable-failed-checkpoints") {
        c.tolerable_failures = count("tolerable-failed-checkpoints", &v)?;
    }
    if let Some(v) = cluster.remove("retained-checkpoints") {
        c.retained = count("retained-checkpoints", &v)?;
    }
    if let Some(v) = cluster.remove("on-unusable-checkpoint") {
        c.on_unusable = UnusableCheckpoint::parse(&v).map_err(|e| e.context("--on-unusable-checkpoint"))?;
    }
    c.validate()?;
    Ok(Some(c))
}

/// Splits and checks `options`; `store` is where the coordinator keeps checkpoints, if it
/// was given a place.
pub(crate) fn parse(
    options: &[WireOption],
    store: Option<&Arc<dyn BlobStore>>,
) -> Result<SubmitOptions, InvalidSetting> {
    let (job, mut cluster) = split(options)?;
    let from_savepoint = savepoint_options(&mut cluster)?;
    let restart = match cluster.remove("restart-strategy") {
        Some(s) => Some(RestartStrategy::parse(&s).map_err(|e| e.context("--restart-strategy"))?),
        None => None,
    };
    let retain_on_cancel = match cluster.remove("retain-checkpoints-on-cancel").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(InvalidSetting(format!(
                "--retain-checkpoints-on-cancel: '{other}' is not true or false"
            )))
        }
    };
    let state_backend = match cluster.remove("state-backend") {
        Some(v) => Some(BackendKind::parse(&v).map_err(|e| e.context("--state-backend"))?),
        None => None,
    };
    let checkpointing = checkpoint_options(&mut cluster, store)?;
    if state_backend == Some(BackendKind::Tiered) && checkpointing.is_none() {
        return Err(InvalidSetting(
            "--state-backend tiered keeps the job's state in its checkpoint storage: give --checkpoint-interval, or --state-backend heap".into(),
        ));
    }
    debug_assert!(cluster.is_empty(), "every cluster option is handled: {cluster:?}");
    Ok(SubmitOptions {
        job,
        checkpointing,
        restart,
        from_savepoint,
        retain_on_cancel,
        state_backend,
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
        let err = |kv: &[(&str, &str)], s: Option<&Arc<dyn BlobStore>>| parse(&opts(kv), s).unwrap_err().0;
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

    #[test]
    fn a_job_chooses_its_state_backend() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let with = |kv: &[(&str, &str)]| parse(&opts(kv), Some(&store));
        let tiered = with(&[("checkpoint-interval", "1s"), ("state-backend", "tiered")]).unwrap();
        assert_eq!(tiered.state_backend, Some(BackendKind::Tiered));
        assert_eq!(tiered.state_backend_wire(), "tiered");
        // Not a job option: the job's own options never see it.
        assert!(tiered.job.is_empty());
        let heap = with(&[("state-backend", "heap")]).unwrap();
        assert_eq!(heap.state_backend_wire(), "heap");
        assert_eq!(with(&[]).unwrap().state_backend_wire(), "heap", "the default, named");
        let refused = |kv: &[(&str, &str)]| with(kv).unwrap_err().0;
        assert!(refused(&[("state-backend", "tiered")]).contains("give --checkpoint-interval"));
        assert!(
            refused(&[("state-backend", "rocksdb")]).contains(r#"--state-backend: "rocksdb" is not a state backend"#)
        );
    }
}
