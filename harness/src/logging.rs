//! Logging setup for the binary: slog to standard error, as text or JSON lines.

use std::sync::Mutex;

use slog::{Drain, Level, Logger};

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Terminal,
    /// One JSON object per line.
    Json,
}

/// Parses a level name (`error`, `warn`, `info`, `debug`, `trace`).
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Ok(Level::Error),
        "warn" | "warning" => Ok(Level::Warning),
        "info" => Ok(Level::Info),
        "debug" => Ok(Level::Debug),
        "trace" => Ok(Level::Trace),
        other => Err(format!("unknown log level '{other}' (use error, warn, info, debug or trace)")),
    }
}

/// A root logger writing to standard error at `level` and above.
///
/// The drain is synchronous behind a mutex: no logging thread, so the same setup works under
/// the simulator.
pub fn root_logger(format: LogFormat, level: Level) -> Logger {
    let version = env!("CARGO_PKG_VERSION");
    match format {
        LogFormat::Terminal => {
            let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            let drain = Mutex::new(drain.filter_level(level).fuse()).fuse();
            Logger::root(drain, slog::o!("version" => version))
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(std::io::stderr())
                .add_default_keys()
                .build()
                .fuse();
            let drain = Mutex::new(drain.filter_level(level).fuse()).fuse();
            Logger::root(drain, slog::o!("version" => version))
        }
    }
}
