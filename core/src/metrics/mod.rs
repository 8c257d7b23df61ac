//! Metrics: a registry of counters, gauges, meters and histograms in scopes, the built-in
//! metrics of the runtime, and their formats for reporters (Prometheus text, StatsD lines).

mod checkpoint_stats;
pub mod prometheus;
mod registry;
pub mod statsd;
mod summary;
pub(crate) mod task;
mod vertex;

pub use checkpoint_stats::{CheckpointOutcome, CheckpointRecord, CheckpointStats, HISTORY_LEN};
pub use registry::{
    exponential_buckets, Counter, Gauge, Histogram, Labels, Meter, MetricGroup, MetricKind, MetricRegistry,
    MetricSample, MetricValue, ScopeGuard, METER_WINDOW,
};
pub use summary::{vertex_summaries, VertexSummary};
pub use vertex::{VertexMetrics, VertexSnapshot};
