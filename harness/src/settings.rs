//! Runtime settings given on the command line (checkpointing, restarts) and their checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::checkpoint::{CheckpointConfig, RestartStrategy, UnusableCheckpoint};
use sluice_core::duration::parse_duration;
use sluice_core::state_backend::{StateBackendConfig, TieredSettings};
use sluice_core::ExecutionConfig;
use sluice_state::blob::{BlobError, BlobStore, LocalFsStore, ObjectStoreBlob};
use sluice_state::tiered::DiskCacheConfig;

use crate::error::HarnessError;

/// Checkpoint and restart options of a run, as strings from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// `--checkpoint-dir`: where checkpoints go (a directory, or `s3://bucket/prefix`); a run
    /// resumes from the latest one there.
    pub checkpoint_dir: Option<PathBuf>,
    /// `--checkpoint-interval`.
    pub checkpoint_interval: Option<String>,
    /// `--checkpoint-timeout`.
    pub checkpoint_timeout: Option<String>,
    /// `--min-pause-between-checkpoints`.
    pub min_pause: Option<String>,
    /// `--tolerable-failed-checkpoints`.
    pub tolerable_failures: Option<u32>,
    /// `--retained-checkpoints`.
    pub retained: Option<u32>,
    /// `--restart-strategy`.
    pub restart_strategy: Option<String>,
    /// `--on-unusable-checkpoint` (or `--start-fresh`): `fail`, `fall-back` or `start-fresh`.
    pub on_unusable_checkpoint: Option<String>,
    /// `--from-savepoint`: the savepoint directory to start from.
    pub from_savepoint: Option<PathBuf>,
    /// `--allow-non-restored-state`.
    pub allow_non_restored_state: bool,
    /// `--uid-mapping OLD=NEW[,OLD=NEW...]`: operators renamed since the savepoint.
    pub uid_mapping: Option<String>,
    /// `--savepoint-dir`: on stop (Ctrl-C / SIGTERM), take a savepoint here and stop.
    pub savepoint_dir: Option<PathBuf>,
    /// `--drain`: with `--savepoint-dir`, fire every window before the savepoint.
    pub drain: bool,
    /// `--state-backend`, `--state-cache-*` (else `[state]`).
    pub state: StateChoice,
}

/// The state backend and its cache as options give them (the command line, else `[state]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateChoice {
    /// `heap` or `tiered` (`None`: heap).
    pub backend: Option<String>,
    /// The block cache's memory, e.g. `256MiB`.
    pub cache_memory: Option<String>,
    /// The block cache's disk tier, e.g. `10GiB` (needs `cache_dir`).
    pub cache_disk: Option<String>,
    /// The disk tier's directory.
    pub cache_dir: Option<PathBuf>,
}

/// Opens an existing savepoint directory (or `s3://` prefix) for reading.
pub fn open_savepoint(path: &Path) -> Result<Arc<dyn BlobStore>, HarnessError> {
    let text = path.to_string_lossy();
    if !text.starts_with("s3://") && !path.join("_metadata").is_file() {
        return Err(HarnessError::NoSavepoint(if path.is_dir() {
            format!("{}: not a savepoint (no _metadata in it)", path.display())
        } else {
            format!("{}: no such savepoint directory", path.display())
        }));
    }
    open_store(&text).map_err(|source| HarnessError::Store {
        location: text.to_string(),
        source,
    })
}

/// Opens a checkpoint location: `s3://bucket/prefix` or a local directory (created if
/// missing).
pub fn open_store(location: &str) -> Result<Arc<dyn BlobStore>, BlobError> {
    if location.starts_with("s3://") {
        Ok(Arc::new(ObjectStoreBlob::s3_from_url(location)?))
    } else {
        Ok(Arc::new(LocalFsStore::new(location)?))
    }
}

/// Parses a size in bytes: a number with an optional unit, `B`, `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000), e.g. `128MiB`.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{v}' is not a size (e.g. 512MiB, 2GiB, 1048576)"))?;
    if unit.starts_with('.') {
        return Err(format!("'{v}': give a whole number (e.g. 1536MiB for 1.5GiB)"));
    }
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{v}' (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
        }
    };
    n.checked_mul(scale).ok_or_else(|| format!("'{v}' is too large"))
}

/// The smallest block cache the tiered backend accepts: a few blocks per cache shard.
const MIN_CACHE: u64 = 1 << 20;

/// The state backend `--state-backend` / `--state-cache-*` (or `[state]`) ask for;
/// `checkpointing` says whether the job checkpoints (`None`: decided per job, on a worker).
/// A disk tier's directory is checked and claimed for this process here.
pub fn state_backend(choice: &StateChoice, checkpointing: Option<bool>) -> Result<StateBackendConfig, HarnessError> {
    let bad = |m: String| HarnessError::BadOption(m);
    match choice.backend.as_deref().unwrap_or("heap") {
        "heap" => {
            let cache_option = [
                (choice.cache_memory.is_some(), "--state-cache-memory"),
                (choice.cache_disk.is_some(), "--state-cache-disk"),
                (choice.cache_dir.is_some(), "--state-cache-dir"),
            ]
            .into_iter()
            .find_map(|(given, name)| given.then_some(name));
            match cache_option {
                Some(name) => Err(bad(format!(
                    "{name} is a setting of the tiered backend: give --state-backend tiered ([state] backend)"
                ))),
                None => Ok(StateBackendConfig::Heap),
            }
        }
        "tiered" => {
            if checkpointing == Some(false) {
                return Err(bad("--state-backend tiered ([state] backend) keeps its files in the checkpoint storage: give --checkpoint-dir and --checkpoint-interval, or --state-backend heap".into()));
            }
            Ok(StateBackendConfig::Tiered(tiered_settings(choice)?))
        }
        other => Err(unknown_backend(other)),
    }
}

fn unknown_backend(name: &str) -> HarnessError {
    HarnessError::BadOption(format!(
        "--state-backend ([state] backend) must be heap or tiered, got '{name}'"
    ))
}

/// A worker's block cache, which serves every tiered job it runs. The backend is the job's
/// (`sluice submit --state-backend`, heap by default), never the worker's: workers with
/// different defaults would mix backends in one job, whose tiered state could then not fail
/// over to a heap worker.
pub fn worker_state(choice: &StateChoice) -> Result<TieredSettings, HarnessError> {
    tiered_settings(choice)
}

/// The tiered backend's block cache `--state-cache-*` ask for (a disk tier's directory is
/// checked and claimed for this process here).
fn tiered_settings(choice: &StateChoice) -> Result<TieredSettings, HarnessError> {
    let bad = |m: String| HarnessError::BadOption(m);
    let bytes = match &choice.cache_memory {
        Some(v) => parse_size(v).map_err(|e| bad(format!("--state-cache-memory ([state] cache-memory): {e}")))?,
        None => DEFAULT_CACHE,
    };
    if bytes < MIN_CACHE {
        return Err(bad(format!(
            "--state-cache-memory ([state] cache-memory) must be at least 1MiB, got {bytes} bytes"
        )));
    }
    let bytes = usize::try_from(bytes)
        .map_err(|_| bad(format!("--state-cache-memory: {bytes} bytes does not fit this machine")))?;
    let settings = TieredSettings::new(bytes);
    Ok(match disk_cache(choice)? {
        Some(disk) => settings.with_disk(disk),
        None => settings,
    })
}

/// The disk tier `--state-cache-disk` and `--state-cache-dir` ask for, its directory
/// checked and claimed; both or neither.
fn disk_cache(choice: &StateChoice) -> Result<Option<DiskCacheConfig>, HarnessError> {
    let bad = |m: String| HarnessError::BadOption(m);
    let (size, dir) = match (&choice.cache_disk, &choice.cache_dir) {
        (None, None) => return Ok(None),
        (Some(size), Some(dir)) => (size, dir),
        (Some(_), None) => {
            return Err(bad(
                "--state-cache-disk needs --state-cache-dir ([state] cache-dir): a local directory for this process alone".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "--state-cache-dir needs --state-cache-disk ([state] cache-disk): how large the disk tier may grow, e.g. 10GiB".into(),
            ))
        }
    };
    let bytes = parse_size(size).map_err(|e| bad(format!("--state-cache-disk ([state] cache-disk): {e}")))?;
    let bytes = usize::try_from(bytes)
        .map_err(|_| bad(format!("--state-cache-disk: {bytes} bytes does not fit this machine")))?;
    DiskCacheConfig::claim(dir.clone(), bytes)
        .map(Some)
        .map_err(|e| bad(format!("--state-cache-disk / --state-cache-dir: {e}")))
}

/// The tiered backend's block cache when none is given.
const DEFAULT_CACHE: u64 = 256 << 20;

fn duration(option: &str, v: &str) -> Result<Duration, HarnessError> {
    parse_duration(v).map_err(|e| HarnessError::BadOption(format!("{option}: {e}")))
}

impl RunSettings {
    /// The disk cache's directory must not be the checkpoint directory, nor inside it or
    /// around it: the cache deletes files of its own and refuses a directory with others.
    fn check_cache_dir(&self) -> Result<(), HarnessError> {
        let (Some(cache), Some(ck)) = (&self.state.cache_dir, &self.checkpoint_dir) else {
            return Ok(());
        };
        if ck.to_string_lossy().starts_with("s3://") {
            return Ok(());
        }
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let (cache, ck) = (abs(cache), abs(ck));
        if cache.starts_with(&ck) || ck.starts_with(&cache) {
            return Err(HarnessError::BadOption(format!(
                "--state-cache-dir {} and --checkpoint-dir {} overlap: give the cache a directory of its own",
                cache.display(),
                ck.display()
            )));
        }
        Ok(())
    }

    /// The runtime configuration these settings ask for, on top of `base`.
    pub fn apply(&self, mut base: ExecutionConfig) -> Result<ExecutionConfig, HarnessError> {
        base.checkpointing = self.checkpointing()?;
        self.check_savepoint_options(base.checkpointing.is_some())?;
        self.check_cache_dir()?;
        base.state_backend = state_backend(&self.state, Some(base.checkpointing.is_some()))?;
        if let Some(path) = &self.from_savepoint {
            let store = open_savepoint(path).map_err(|e| match e {
                HarnessError::NoSavepoint(m) => HarnessError::NoSavepoint(format!("--from-savepoint {m}")),
                other => other,
            })?;
            base.from_savepoint = Some(sluice_core::SavepointRestore {
                store,
                allow_non_restored_state: self.allow_non_restored_state,
                uid_mapping: match &self.uid_mapping {
                    Some(m) => sluice_core::runtime::parse_uid_mapping(m).map_err(|e| e.context("--uid-mapping"))?,
                    None => Default::default(),
                },
            });
        }
        if let Some(s) = &self.restart_strategy {
            base.restart = Some(RestartStrategy::parse(s).map_err(|e| e.context("--restart-strategy"))?);
        }
        Ok(base)
    }

    /// The checkpoint settings, if `--checkpoint-dir` and `--checkpoint-interval` turn
    /// checkpointing on; the checkpoint options without them are refused.
    fn checkpointing(&self) -> Result<Option<CheckpointConfig>, HarnessError> {
        let checkpoint_only = [
            ("--checkpoint-timeout", self.checkpoint_timeout.is_some()),
            ("--min-pause-between-checkpoints", self.min_pause.is_some()),
            ("--tolerable-failed-checkpoints", self.tolerable_failures.is_some()),
            ("--retained-checkpoints", self.retained.is_some()),
            ("--on-unusable-checkpoint", self.on_unusable_checkpoint.is_some()),
        ];
        let (dir, interval) = match (&self.checkpoint_dir, &self.checkpoint_interval) {
            (Some(dir), Some(interval)) => (dir, interval),
            (None, None) => {
                return match checkpoint_only.iter().find(|(_, given)| *given) {
                    Some((name, _)) => Err(HarnessError::BadOption(format!(
                        "{name} needs checkpointing: give --checkpoint-dir and --checkpoint-interval"
                    ))),
                    None => Ok(None),
                }
            }
            (Some(_), None) => {
                return Err(HarnessError::BadOption(
                    "--checkpoint-dir needs --checkpoint-interval (how often to checkpoint)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(HarnessError::BadOption(
                    "--checkpoint-interval needs --checkpoint-dir (where checkpoints are stored)".into(),
                ))
            }
        };
        let interval = duration("--checkpoint-interval", interval)?;
        if interval.is_zero() {
            return Err(HarnessError::BadOption("--checkpoint-interval must be positive".into()));
        }
        let store = open_store(&dir.to_string_lossy())
            .map_err(|e| HarnessError::BadOption(format!("--checkpoint-dir {}: {e}", dir.display())))?;
        let mut c = CheckpointConfig::new(interval, store);
        self.tune(&mut c)?;
        c.validate()?;
        Ok(Some(c))
    }

    /// The optional checkpoint settings on top of the interval.
    fn tune(&self, c: &mut CheckpointConfig) -> Result<(), HarnessError> {
        if let Some(t) = &self.checkpoint_timeout {
            c.timeout = duration("--checkpoint-timeout", t)?;
            if c.timeout.is_zero() {
                return Err(HarnessError::BadOption("--checkpoint-timeout must be positive".into()));
            }
            if c.timeout < c.interval {
                return Err(HarnessError::BadOption(format!(
                    "--checkpoint-timeout ({t}) is shorter than --checkpoint-interval ({}): checkpoints would be abandoned before the next is due",
                    self.checkpoint_interval.as_deref().unwrap_or_default()
                )));
            }
        }
        if let Some(p) = &self.min_pause {
            c.min_pause = duration("--min-pause-between-checkpoints", p)?;
        }
        if let Some(n) = self.tolerable_failures {
            c.tolerable_failures = n;
        }
        if let Some(n) = self.retained {
            if n == 0 {
                return Err(HarnessError::BadOption(
                    "--retained-checkpoints must be at least 1".into(),
                ));
            }
            c.retained = n;
        }
        if let Some(p) = &self.on_unusable_checkpoint {
            c.on_unusable = UnusableCheckpoint::parse(p).map_err(|e| e.context("--on-unusable-checkpoint"))?;
        }
        Ok(())
    }

    /// The savepoint options need their companions: a savepoint to start from, checkpointing.
    fn check_savepoint_options(&self, checkpointing: bool) -> Result<(), HarnessError> {
        let needs = |what: &str, companion: &str| HarnessError::BadOption(format!("{what} needs {companion}"));
        if self.uid_mapping.is_some() && self.from_savepoint.is_none() {
            return Err(needs("--uid-mapping", "--from-savepoint"));
        }
        if self.allow_non_restored_state && self.from_savepoint.is_none() {
            return Err(needs("--allow-non-restored-state", "--from-savepoint"));
        }
        if self.drain && self.savepoint_dir.is_none() {
            return Err(needs(
                "--drain",
                "--savepoint-dir (it drains before the savepoint on stop)",
            ));
        }
        if let Some(dir) = &self.savepoint_dir {
            if !checkpointing {
                return Err(needs(
                    "--savepoint-dir",
                    "checkpointing: give --checkpoint-dir and --checkpoint-interval",
                ));
            }
            open_store(&dir.to_string_lossy())
                .map_err(|e| HarnessError::BadOption(format!("--savepoint-dir {}: {e}", dir.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: RunSettings) -> String {
        s.apply(ExecutionConfig::default()).unwrap_err().to_string()
    }

    #[test]
    fn invalid_checkpoint_options_name_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let on = |interval: &str| RunSettings {
            checkpoint_dir: Some(dir.path().to_path_buf()),
            checkpoint_interval: Some(interval.into()),
            ..RunSettings::default()
        };
        assert!(err(on("0ms")).contains("--checkpoint-interval must be positive"));
        assert!(err(on("soon")).contains("--checkpoint-interval"));
        let mut short = on("1s");
        short.checkpoint_timeout = Some("100ms".into());
        assert!(err(short).contains("--checkpoint-timeout (100ms) is shorter than --checkpoint-interval (1s)"));
        let mut none_kept = on("1s");
        none_kept.retained = Some(0);
        assert!(err(none_kept).contains("--retained-checkpoints"));
        let unwritable = RunSettings {
            checkpoint_dir: Some(PathBuf::from("/dev/null/checkpoints")),
            checkpoint_interval: Some("1s".into()),
            ..RunSettings::default()
        };
        assert!(err(unwritable).contains("--checkpoint-dir /dev/null/checkpoints"));
        let half = RunSettings {
            checkpoint_dir: Some(dir.path().to_path_buf()),
            ..RunSettings::default()
        };
        assert!(err(half).contains("--checkpoint-dir needs --checkpoint-interval"));
        let stray = RunSettings {
            retained: Some(3),
            ..RunSettings::default()
        };
        assert!(err(stray).contains("--retained-checkpoints needs checkpointing"));
        let bad_restart = RunSettings {
            restart_strategy: Some("often".into()),
            ..RunSettings::default()
        };
        assert!(err(bad_restart).contains("--restart-strategy: unknown restart strategy 'often'"));
    }

    #[test]
    fn valid_options_turn_checkpointing_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = RunSettings {
            checkpoint_dir: Some(dir.path().to_path_buf()),
            checkpoint_interval: Some("200ms".into()),
            retained: Some(3),
            restart_strategy: Some("fixed-delay:attempts=2,delay=10ms".into()),
            ..RunSettings::default()
        };
        let c = s.apply(ExecutionConfig::default()).unwrap();
        let ck = c.checkpointing.expect("on");
        assert_eq!(ck.interval, Duration::from_millis(200));
        assert_eq!(ck.retained, 3);
        assert!(matches!(
            c.restart,
            Some(RestartStrategy::FixedDelay { attempts: 2, .. })
        ));
    }
}
