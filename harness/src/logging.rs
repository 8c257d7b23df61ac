//! Logging setup for the binary: slog to standard error, as text or JSON lines, with a level
//! per module.
//!
//! Levels are given as `LEVEL[,MODULE=LEVEL...]` (in `SLUICE_LOG`, `--log-level`, or the
//! `[logging]` section of the configuration): `warn,sluice_core::cluster=debug` logs warnings
//! everywhere and debug records from `sluice_core::cluster` and the modules under it. The
//! longest matching module prefix wins. Records carry their context as key-values: `job`,
//! `attempt`, `task`, `subtask`, `vertex`, `worker`, as the runtime adds them.

use std::sync::Mutex;

use slog::{Drain, Level, Logger, OwnedKVList, Record};
use sluice_core::error::InvalidSetting;

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Terminal,
    /// One JSON object per line.
    Json,
}

/// Parses a level name (`error`, `warn`, `info`, `debug`, `trace`).
pub fn parse_level(s: &str) -> Result<Level, InvalidSetting> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(Level::Error),
        "warn" | "warning" => Ok(Level::Warning),
        "info" => Ok(Level::Info),
        "debug" => Ok(Level::Debug),
        "trace" => Ok(Level::Trace),
        other => Err(InvalidSetting(format!(
            "unknown log level '{other}' (use error, warn, info, debug or trace)"
        ))),
    }
}

/// Which records pass: a default level and levels for module path prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    default: Level,
    /// `(module prefix, level)`, longest prefix first.
    modules: Vec<(String, Level)>,
}

impl LogFilter {
    /// Every module at `level`.
    pub fn new(level: Level) -> Self {
        LogFilter {
            default: level,
            modules: Vec::new(),
        }
    }

    /// The level of modules not named.
    pub fn default_level(&self) -> Level {
        self.default
    }

    /// The level that applies to records from `module`.
    pub fn level_for(&self, module: &str) -> Level {
        self.modules
            .iter()
            .find(|(prefix, _)| {
                module == prefix
                    || module
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with("::"))
            })
            .map_or(self.default, |(_, l)| *l)
    }

    /// The most verbose level anything passes at (for a cheap first check).
    fn most_verbose(&self) -> Level {
        self.modules
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, |a, b| if b.is_at_least(a) { a } else { b })
    }
}

/// Parses `LEVEL[,MODULE=LEVEL...]`; a bare level sets the default (the last one wins).
pub fn parse_filter(spec: &str) -> Result<LogFilter, InvalidSetting> {
    let mut filter = LogFilter::new(Level::Warning);
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            None => filter.default = parse_level(part)?,
            Some((module, level)) => {
                let module = module.trim();
                if module.is_empty()
                    || !module
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                {
                    return Err(InvalidSetting(format!(
                        "'{module}' is not a module path (like sluice_core::cluster)"
                    )));
                }
                let level = parse_level(level).map_err(|e| e.context(format_args!("module {module}")))?;
                filter.modules.retain(|(m, _)| m != module);
                filter.modules.push((module.to_string(), level));
            }
        }
    }
    filter
        .modules
        .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    Ok(filter)
}

/// Passes records at or above the level of their module.
struct ModuleFilter<D> {
    drain: D,
    filter: LogFilter,
    floor: Level,
}

impl<D: Drain> Drain for ModuleFilter<D> {
    type Ok = Option<D::Ok>;
    type Err = D::Err;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<Self::Ok, Self::Err> {
        if !record.level().is_at_least(self.floor)
            || !record.level().is_at_least(self.filter.level_for(record.module()))
        {
            return Ok(None);
        }
        self.drain.log(record, values).map(Some)
    }
}

/// A root logger writing to standard error what `filter` passes.
///
/// The drain is synchronous behind a mutex: no logging thread, so the same setup works under
/// the simulator.
pub fn root_logger(format: LogFormat, filter: LogFilter) -> Logger {
    let version = env!("CARGO_PKG_VERSION");
    let floor = filter.most_verbose();
    match format {
        LogFormat::Terminal => {
            let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            let drain = Mutex::new(ModuleFilter { drain, filter, floor }.fuse()).fuse();
            Logger::root(drain, slog::o!("version" => version))
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(std::io::stderr())
                .add_default_keys()
                .build()
                .fuse();
            let drain = Mutex::new(ModuleFilter { drain, filter, floor }.fuse()).fuse();
            Logger::root(drain, slog::o!("version" => version))
        }
    }
}

/// Prints a daemon's line for scripts on standard output (its address, its id). A standard
/// output that was closed (a script that read what it needed, `| head -1`) is no reason to
/// stop serving, as `println!` would by panicking.
pub fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_module_prefix_wins() {
        let f = parse_filter("info,sluice_core=warn,sluice_core::cluster=debug").unwrap();
        assert_eq!(f.level_for("sluice"), Level::Info);
        assert_eq!(f.level_for("sluice_core::runtime::task"), Level::Warning);
        assert_eq!(f.level_for("sluice_core::cluster::worker"), Level::Debug);
        assert_eq!(f.level_for("sluice_core::clusterx"), Level::Warning);
        assert_eq!(f.most_verbose(), Level::Debug);
    }

    #[test]
    fn bad_specs_are_named() {
        assert!(parse_filter("loud").unwrap_err().0.contains("loud"));
        assert!(parse_filter("info,a b=debug").unwrap_err().0.contains("a b"));
        assert!(parse_filter("sluice_core=often").unwrap_err().0.contains("sluice_core"));
    }

    #[test]
    fn records_below_their_modules_level_are_dropped() {
        use std::sync::{Arc, Mutex as StdMutex};
        #[derive(Clone)]
        struct Collect(Arc<StdMutex<Vec<String>>>);
        impl Drain for Collect {
            type Ok = ();
            type Err = slog::Never;
            fn log(&self, r: &Record<'_>, _: &OwnedKVList) -> Result<(), slog::Never> {
                self.0.lock().unwrap().push(format!("{}", r.msg()));
                Ok(())
            }
        }
        let seen = Collect(Arc::default());
        let filter = parse_filter(&format!("error,{}=info", module_path!())).unwrap();
        let floor = filter.most_verbose();
        let log = Logger::root(
            ModuleFilter {
                drain: seen.clone(),
                filter,
                floor,
            }
            .fuse(),
            slog::o!(),
        );
        slog::info!(log, "kept");
        slog::debug!(log, "dropped");
        assert_eq!(*seen.0.lock().unwrap(), vec!["kept".to_string()]);
    }
}
