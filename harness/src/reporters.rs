//! Push reporters: StatsD over UDP and a periodic summary through slog. (The Prometheus
//! reporter is pull: `GET /metrics` on the REST API.)
//!
//! A reporter reads all metrics through a snapshot function, so the same reporters serve the
//! coordinator (its own and its workers' metrics), a worker, and an embedded run.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::metrics::{statsd, MetricSample, MetricValue};
use tokio::net::UdpSocket;

use crate::config::Config;

/// A reporter could not start (names the reporter and the setting).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ReporterError {
    /// What was being set up.
    pub what: String,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

/// Reads every metric to report.
pub type MetricSource = Arc<dyn Fn() -> Vec<MetricSample> + Send + Sync>;

/// Starts the push reporters the configuration turns on; they run until the returned handles
/// are aborted (or the process ends).
pub async fn start(
    config: &Config,
    source: MetricSource,
    log: &slog::Logger,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ReporterError> {
    let every = config.metrics_interval();
    let mut handles = Vec::new();
    if config.reporter("statsd") {
        let s = &config.metrics.statsd;
        let socket = UdpSocket::bind("0.0.0.0:0").await.map_err(|source| ReporterError {
            what: "statsd reporter: binding a UDP socket".into(),
            source,
        })?;
        socket.connect(&s.address).await.map_err(|source| ReporterError {
            what: format!("statsd reporter: metrics.statsd.address {}", s.address),
            source,
        })?;
        slog::info!(log, "statsd reporter on"; "address" => &s.address, "interval_ms" => every.as_millis() as u64);
        handles.push(tokio::spawn(statsd_loop(
            socket,
            s.prefix.clone(),
            s.tags,
            every,
            source.clone(),
            log.clone(),
        )));
    }
    if config.reporter("log") {
        slog::info!(log, "log reporter on"; "interval_ms" => every.as_millis() as u64);
        handles.push(tokio::spawn(log_loop(every, source, log.clone())));
    }
    Ok(handles)
}

async fn statsd_loop(
    socket: UdpSocket,
    prefix: String,
    tags: bool,
    every: Duration,
    source: MetricSource,
    log: slog::Logger,
) {
    let mut tick = tokio::time::interval(every);
    let mut failing = false;
    loop {
        tick.tick().await;
        let lines = statsd::lines(&source(), &prefix, tags);
        for p in statsd::packets(&lines) {
            match socket.send(&p).await {
                Ok(_) => failing = false,
                // UDP: a missing daemon shows up as refused sends; say so once, keep trying.
                Err(e) if !failing => {
                    failing = true;
                    slog::warn!(log, "statsd reporter: sending failed"; "error" => %e);
                }
                Err(_) => {}
            }
        }
    }
}

fn summary_value(v: &MetricValue) -> String {
    match v {
        MetricValue::Counter(c) => c.to_string(),
        MetricValue::Gauge(g) => format!("{g}"),
        MetricValue::Meter { count, rate } => format!("{count} ({rate:.1}/s)"),
        MetricValue::Histogram { count, .. } => format!("{count} values, mean {:.3}", v.as_f64()),
    }
}

async fn log_loop(every: Duration, source: MetricSource, log: slog::Logger) {
    let mut tick = tokio::time::interval(every);
    // The first tick is immediate: skip it, there is nothing to summarize yet.
    tick.tick().await;
    loop {
        tick.tick().await;
        let samples = source();
        slog::info!(log, "metrics report"; "metrics" => samples.len());
        for s in &samples {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            slog::info!(log, "metric"; "name" => &s.name, "labels" => labels.join(","), "value" => summary_value(&s.value));
        }
    }
}
