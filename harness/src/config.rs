//! The daemon's configuration file (TOML), with every option also settable from the
//! environment. See `docs/configuration.md` for the keys and their defaults.
//!
//! Precedence, lowest first: built-in defaults, the file (`--config FILE` or `SLUICE_CONFIG`),
//! environment variables `SLUICE_<SECTION>_<KEY>` (key with `_` for `-`, e.g.
//! `SLUICE_COORDINATOR_HEARTBEAT_INTERVAL=1s`, `SLUICE_METRICS_STATSD_ADDRESS=host:8125`),
//! then command-line flags. Unknown keys, in the file or the environment, are an error that
//! names them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::logging::{parse_filter, LogFilter, LogFormat};
use sluice_core::error::InvalidSetting;

/// A problem with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("configuration file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong (with the key).
        message: String,
    },
    /// An environment variable is not an option or has a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value is of the right type but not allowed.
    #[error("configuration key {key}: {message}")]
    Invalid {
        /// The key, as `section.key`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Config {
    /// `[coordinator]`: the coordinator daemon.
    pub coordinator: CoordinatorSection,
    /// `[worker]`: the worker daemon.
    pub worker: WorkerSection,
    /// `[logging]`: log format and levels.
    pub logging: LoggingSection,
    /// `[metrics]`: reporters.
    pub metrics: MetricsSection,
    /// `[rest]`: limits of the REST API's port (both modes).
    pub rest: RestSection,
    /// `[security]`: TLS, allowed paths, file permissions.
    pub security: SecuritySection,
    /// `[ha]`: standby coordinators and leader election over etcd.
    pub ha: HaSection,
    /// `[state]`: where keyed state lives.
    pub state: StateSection,
}

/// `[ha]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct HaSection {
    /// `none` (one coordinator, jobs in memory) or `etcd`.
    pub mode: String,
    /// The etcd members (`http://host:port`).
    pub etcd_endpoints: Vec<String>,
    /// Keys live under `/sluice/<cluster-id>/`; coordinators of one cluster share it.
    pub cluster_id: Option<String>,
    /// How long leadership outlives a leader that stopped renewing it.
    pub lease_ttl: String,
    /// How long one request to etcd may take (default: the lease TTL / 2, at most 5 s).
    pub etcd_timeout: Option<String>,
}

impl Default for HaSection {
    fn default() -> Self {
        HaSection {
            mode: "none".into(),
            etcd_endpoints: Vec::new(),
            cluster_id: None,
            lease_ttl: "10s".into(),
            etcd_timeout: None,
        }
    }
}

/// `[security]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct SecuritySection {
    /// The cluster CA's certificate (PEM): mutual TLS on control and data ports when set.
    pub tls_ca: Option<String>,
    /// This node's certificate (PEM), signed by the CA, naming its identity.
    pub tls_cert: Option<String>,
    /// This node's private key (PEM).
    pub tls_key: Option<String>,
    /// Base directories (or `s3://bucket/prefix`) that job files, savepoints and restores
    /// must be under; empty allows any.
    pub allowed_paths: Vec<String>,
    /// Where savepoints go when a request names no directory.
    pub savepoint_dir: Option<String>,
    /// The process's umask for everything it writes (octal).
    pub umask: String,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            allowed_paths: Vec::new(),
            savepoint_dir: None,
            umask: "027".into(),
        }
    }
}

/// `[rest]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct RestSection {
    /// Connections at once; more are closed at once.
    pub max_connections: usize,
    /// How long a request's header may take to arrive.
    pub header_timeout: String,
    /// How long a connection may stay silent before it is closed.
    pub idle_timeout: String,
    /// The REST port's certificate (PEM): HTTPS when set, with `tls-key`.
    pub tls_cert: Option<String>,
    /// Its private key (PEM).
    pub tls_key: Option<String>,
    /// Bearer tokens (`<role> <name> <token>` per line, role `admin` or `read-only`): every
    /// request needs one when set.
    pub tokens_file: Option<String>,
    /// Whether jobs may be submitted through REST (Flink's `web.submit.enable`).
    pub submit_enabled: bool,
    /// Whether jobs may be cancelled or stopped through REST (Flink's `web.cancel.enable`).
    pub cancel_enabled: bool,
}

impl Default for RestSection {
    fn default() -> Self {
        RestSection {
            max_connections: 256,
            header_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            tls_cert: None,
            tls_key: None,
            tokens_file: None,
            submit_enabled: true,
            cancel_enabled: true,
        }
    }
}

/// `[coordinator]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct CoordinatorSection {
    /// Address for workers and clients.
    pub bind: String,
    /// Address of the REST API; none turns it off.
    pub rest_bind: Option<String>,
    /// Where jobs' checkpoints go; none turns checkpointing off.
    pub checkpoint_dir: Option<String>,
    /// How often workers and coordinator send heartbeats.
    pub heartbeat_interval: String,
    /// A worker silent this long is lost.
    pub heartbeat_timeout: String,
    /// How long a job waits for slots.
    pub slot_wait: String,
    /// Connections the control port serves at once; more are closed at once.
    pub max_connections: usize,
    /// Ended jobs kept in the job table; the oldest are forgotten beyond it.
    pub max_retained_jobs: usize,
    /// How long an ended attempt waits for its workers to confirm its tasks stopped.
    pub cancel_timeout: String,
    /// Jobs running or waiting at once; more submissions are refused.
    pub max_active_jobs: usize,
    /// The control address published as the leader's, if not the bound one.
    pub advertise_address: Option<String>,
}

impl Default for CoordinatorSection {
    fn default() -> Self {
        CoordinatorSection {
            bind: "127.0.0.1:6123".into(),
            rest_bind: None,
            checkpoint_dir: None,
            heartbeat_interval: "500ms".into(),
            heartbeat_timeout: "10s".into(),
            slot_wait: "60s".into(),
            max_connections: 1024,
            max_retained_jobs: 1000,
            cancel_timeout: "30s".into(),
            max_active_jobs: 1024,
            advertise_address: None,
        }
    }
}

/// `[state]`: the keyed-state backend of `run` and of a worker's tasks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct StateSection {
    /// `heap` (the default) or `tiered`.
    pub backend: String,
    /// The tiered backend's block cache, e.g. `256MiB`.
    pub cache_memory: Option<String>,
    /// The block cache's disk tier, e.g. `10GiB` (with `cache-dir`).
    pub cache_disk: Option<String>,
    /// The disk tier's directory.
    pub cache_dir: Option<PathBuf>,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            backend: "heap".into(),
            cache_memory: None,
            cache_disk: None,
            cache_dir: None,
        }
    }
}

/// `[worker]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct WorkerSection {
    /// The coordinator's address.
    pub coordinator: Option<String>,
    /// Address for data connections from other workers.
    pub bind: String,
    /// Task slots offered.
    pub slots: u32,
    /// The worker's id.
    pub id: Option<String>,
    /// The data address given to peers, when not the bound one.
    pub advertise_address: Option<String>,
    /// Data connections greeting, or waiting for their deployment, at once.
    pub max_data_connections: usize,
    /// How long to keep dialing a peer (or wait for one to dial) when an attempt starts, and
    /// how long a greeted data connection waits for its deployment.
    pub connect_timeout: String,
    /// A data frame that has begun must be complete within this.
    pub frame_timeout: String,
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            coordinator: None,
            bind: "127.0.0.1:0".into(),
            slots: 1,
            id: None,
            advertise_address: None,
            max_data_connections: 1024,
            connect_timeout: "20s".into(),
            frame_timeout: "30s".into(),
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct LoggingSection {
    /// `term` or `json`.
    pub format: String,
    /// The level of modules not named in `modules`.
    pub level: String,
    /// Level per module path prefix, e.g. `"sluice_core::cluster" = "debug"`.
    pub modules: BTreeMap<String, String>,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            format: "term".into(),
            level: "warn".into(),
            modules: BTreeMap::new(),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct MetricsSection {
    /// Reporters on: any of `prometheus` (`GET /metrics` on the REST API), `statsd`, `log`.
    pub reporters: Vec<String>,
    /// How often the push reporters (StatsD, log) report.
    pub interval: String,
    /// `[metrics.statsd]`.
    pub statsd: StatsdSection,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            reporters: vec!["prometheus".into()],
            interval: "10s".into(),
            statsd: StatsdSection::default(),
        }
    }
}

/// `[metrics.statsd]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct StatsdSection {
    /// Where the StatsD daemon listens (UDP).
    pub address: String,
    /// Prefix of every metric name.
    pub prefix: String,
    /// Send labels as DogStatsD tags instead of in the name.
    pub tags: bool,
}

impl Default for StatsdSection {
    fn default() -> Self {
        StatsdSection {
            address: "127.0.0.1:8125".into(),
            prefix: "sluice".into(),
            tags: false,
        }
    }
}

/// Environment variables that are not configuration keys.
const NOT_OPTIONS: [&str; 3] = ["SLUICE_LOG", "SLUICE_CONFIG", "SLUICE_LOG_FORMAT"];

/// Sections, longest first so `metrics_statsd` wins over `metrics`.
const SECTIONS: [(&str, &[&str]); 9] = [
    ("metrics_statsd", &["metrics", "statsd"]),
    ("state", &["state"]),
    ("security", &["security"]),
    ("ha", &["ha"]),
    ("rest", &["rest"]),
    ("coordinator", &["coordinator"]),
    ("worker", &["worker"]),
    ("logging", &["logging"]),
    ("metrics", &["metrics"]),
];

fn parse_env_value(key: &str, raw: &str) -> toml::Value {
    let list = [
        "reporters",
        "allowed-paths",
        "allowed_paths",
        "etcd-endpoints",
        "etcd_endpoints",
    ]
    .contains(&key);
    // Sizes are text even when they are a bare number of bytes.
    if ["cache-memory", "cache-disk", "cache-dir"].contains(&key) {
        return toml::Value::String(raw.to_string());
    }
    if list && !raw.trim_start().starts_with('[') {
        return toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        );
    }
    // A TOML value if it parses as one (numbers, booleans, arrays, inline tables), else text.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set(table: &mut toml::Table, path: &[&str], key: &str, value: toml::Value) {
    let mut t = table;
    for p in path {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("made a table just above");
    }
    t.insert(key.to_string(), value);
}

impl Config {
    /// Loads `file` (if given) and the `SLUICE_*` variables of `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: name.clone(),
                    source,
                })?;
                let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::File {
                    path: name.clone(),
                    message: e.to_string().trim().to_string(),
                })?;
                // Checked alone first, so an unknown key is reported against the file.
                Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| ConfigError::File {
                    path: name.clone(),
                    message: e.to_string().trim().to_string(),
                })?;
                table
            }
            None => toml::Table::new(),
        };
        let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("SLUICE_")).collect();
        vars.sort();
        for (var, raw) in vars {
            if NOT_OPTIONS.contains(&var.as_str()) || var.starts_with("SLUICE_TEST_") {
                continue;
            }
            let rest = var["SLUICE_".len()..].to_ascii_lowercase();
            let Some((prefix, path)) = SECTIONS.iter().find(|(s, _)| rest.starts_with(&format!("{s}_"))) else {
                return Err(ConfigError::Env {
                    var,
                    message: "not a configuration option: use SLUICE_<SECTION>_<KEY> with a section of coordinator, worker, ha, state, logging, metrics, metrics_statsd, rest, security".into(),
                });
            };
            let key = rest[prefix.len() + 1..].replace('_', "-");
            let value = parse_env_value(&key, &raw);
            let mut alone = toml::Table::new();
            set(&mut alone, path, &key, value.clone());
            Config::deserialize(toml::Value::Table(alone)).map_err(|e| ConfigError::Env {
                var: var.clone(),
                message: e.to_string().trim().to_string(),
            })?;
            set(&mut table, path, &key, value);
        }
        let config = Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Env {
            var: "SLUICE_*".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        for (key, v) in [
            ("coordinator.heartbeat-interval", &self.coordinator.heartbeat_interval),
            ("coordinator.heartbeat-timeout", &self.coordinator.heartbeat_timeout),
            ("coordinator.slot-wait", &self.coordinator.slot_wait),
            ("coordinator.cancel-timeout", &self.coordinator.cancel_timeout),
            ("metrics.interval", &self.metrics.interval),
            ("rest.header-timeout", &self.rest.header_timeout),
            ("worker.connect-timeout", &self.worker.connect_timeout),
            ("worker.frame-timeout", &self.worker.frame_timeout),
            ("rest.idle-timeout", &self.rest.idle_timeout),
        ] {
            sluice_core::duration::parse_duration(v).map_err(|e| bad(key, e.to_string()))?;
        }
        if self.metrics_interval().is_zero() {
            return Err(bad("metrics.interval", "must be more than zero".into()));
        }
        if self.worker.slots == 0 || self.worker.slots > sluice_core::cluster::MAX_SLOTS_PER_WORKER {
            return Err(bad(
                "worker.slots",
                format!("must be between 1 and {}", sluice_core::cluster::MAX_SLOTS_PER_WORKER),
            ));
        }
        for (key, n) in [
            ("coordinator.max-connections", self.coordinator.max_connections),
            ("coordinator.max-retained-jobs", self.coordinator.max_retained_jobs),
            ("coordinator.max-active-jobs", self.coordinator.max_active_jobs),
            ("worker.max-data-connections", self.worker.max_data_connections),
            ("rest.max-connections", self.rest.max_connections),
        ] {
            if n == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        for r in &self.metrics.reporters {
            if !["prometheus", "statsd", "log"].contains(&r.as_str()) {
                return Err(bad(
                    "metrics.reporters",
                    format!("unknown reporter '{r}' (use prometheus, statsd or log)"),
                ));
            }
        }
        self.validate_security()?;
        self.log_format().map_err(|e| bad("logging.format", e.0))?;
        self.log_filter().map_err(|e| bad("logging", e.0))?;
        Ok(())
    }

    fn validate_security(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        let s = &self.security;
        let set = [&s.tls_ca, &s.tls_cert, &s.tls_key]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set != 0 && set != 3 {
            return Err(bad(
                "security.tls-ca",
                "tls-ca, tls-cert and tls-key go together: set all three or none",
            ));
        }
        let paths = [
            ("security.tls-ca", &s.tls_ca),
            ("security.tls-cert", &s.tls_cert),
            ("security.tls-key", &s.tls_key),
            ("security.savepoint-dir", &s.savepoint_dir),
            ("rest.tls-cert", &self.rest.tls_cert),
            ("rest.tls-key", &self.rest.tls_key),
            ("rest.tokens-file", &self.rest.tokens_file),
        ];
        if let Some((key, _)) = paths
            .iter()
            .find(|(_, v)| v.as_deref().is_some_and(|v| v.trim().is_empty()))
        {
            return Err(bad(key, "is empty: name a file, or leave the key out"));
        }
        if self.rest.tls_cert.is_some() != self.rest.tls_key.is_some() {
            return Err(bad("rest.tls-cert", "tls-cert and tls-key go together"));
        }
        if crate::security::parse_umask(&s.umask).is_none() {
            return Err(bad("security.umask", "must be octal, 000 to 777 (e.g. \"027\")"));
        }
        Ok(())
    }

    /// The REST port's limits (validated on load).
    pub fn rest_limits(&self) -> crate::rest::ServeLimits {
        let d =
            |v: &str, default: u64| sluice_core::duration::parse_duration(v).unwrap_or(Duration::from_secs(default));
        crate::rest::ServeLimits {
            max_connections: self.rest.max_connections,
            header_timeout: d(&self.rest.header_timeout, 10),
            idle_timeout: d(&self.rest.idle_timeout, 60),
        }
    }

    /// Whether reporter `name` is on.
    pub fn reporter(&self, name: &str) -> bool {
        self.metrics.reporters.iter().any(|r| r == name)
    }

    /// `metrics.interval` as a duration (validated on load).
    pub fn metrics_interval(&self) -> Duration {
        sluice_core::duration::parse_duration(&self.metrics.interval).unwrap_or(Duration::from_secs(10))
    }

    /// The log format.
    pub fn log_format(&self) -> Result<LogFormat, InvalidSetting> {
        match self.logging.format.as_str() {
            "term" => Ok(LogFormat::Terminal),
            "json" => Ok(LogFormat::Json),
            other => Err(InvalidSetting(format!(
                "unknown log format '{other}' (use term or json)"
            ))),
        }
    }

    /// The log levels: `logging.level` for every module, then `logging.modules`.
    pub fn log_filter(&self) -> Result<LogFilter, InvalidSetting> {
        let mut spec = self.logging.level.clone();
        for (module, level) in &self.logging.modules {
            spec.push_str(&format!(",{module}={level}"));
        }
        parse_filter(&spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_without_file_or_environment() {
        assert_eq!(Config::load(None, env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn file_then_environment() {
        let f = file(
            "[coordinator]\nbind = \"0.0.0.0:7000\"\nheartbeat-interval = \"1s\"\n\
             [metrics]\nreporters = [\"prometheus\", \"log\"]\n[metrics.statsd]\nprefix = \"prod\"\n\
             [logging]\nmodules = { \"sluice_core::cluster\" = \"debug\" }\n",
        );
        let c = Config::load(
            Some(f.path()),
            env(&[
                ("SLUICE_COORDINATOR_HEARTBEAT_INTERVAL", "2s"),
                ("SLUICE_METRICS_STATSD_ADDRESS", "10.0.0.1:8125"),
                ("SLUICE_METRICS_REPORTERS", "statsd,log"),
                ("SLUICE_WORKER_SLOTS", "4"),
                ("SLUICE_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.coordinator.bind, "0.0.0.0:7000");
        assert_eq!(c.coordinator.heartbeat_interval, "2s");
        assert_eq!(c.metrics.statsd.prefix, "prod");
        assert_eq!(c.metrics.statsd.address, "10.0.0.1:8125");
        assert_eq!(c.metrics.reporters, vec!["statsd", "log"]);
        assert_eq!(c.worker.slots, 4);
        assert_eq!(c.logging.modules["sluice_core::cluster"], "debug");
    }

    #[test]
    fn the_documented_complete_file_is_the_defaults() {
        let doc = include_str!("../../docs/configuration.md");
        let (_, rest) = doc
            .split_once("```toml\n")
            .expect("docs/configuration.md has a TOML block");
        let (block, _) = rest.split_once("```").expect("the block ends");
        let f = file(block);
        let documented = Config::load(Some(f.path()), env(&[])).unwrap();
        assert_eq!(documented, Config::load(None, env(&[])).unwrap());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_them() {
        let f = file("[coordinator]\nheartbeat-intervall = \"1s\"\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("heartbeat-intervall") && e.contains(&f.path().display().to_string()),
            "{e}"
        );
        let f = file("[coordinater]\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(e.contains("coordinater"), "{e}");
        let e = Config::load(None, env(&[("SLUICE_WORKER_SLOT", "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SLUICE_WORKER_SLOT") && e.contains("slot"), "{e}");
        let e = Config::load(None, env(&[("SLUICE_NOPE", "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SLUICE_NOPE"), "{e}");
    }

    #[test]
    fn bad_values_are_errors_that_name_the_key() {
        let cases = [
            ("[coordinator]\nslot-wait = \"soon\"\n", "coordinator.slot-wait"),
            ("[metrics]\nreporters = [\"graphite\"]\n", "graphite"),
            ("[logging]\nlevel = \"loud\"\n", "loud"),
            ("[logging]\nformat = \"xml\"\n", "xml"),
            ("[worker]\nslots = 0\n", "worker.slots"),
            ("[worker]\nslots = \"two\"\n", "slots"),
            ("[coordinator\n", "configuration file"),
        ];
        for (text, needle) in cases {
            let f = file(text);
            let e = Config::load(Some(f.path()), env(&[])).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Config::load(Some(Path::new("/nonexistent/sluice.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/sluice.toml"), "{e}");
    }
}
