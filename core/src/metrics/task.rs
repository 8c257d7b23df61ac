//! The metrics the runtime keeps for each task and each operator in it.
//!
//! Scope labels: `job_id`, `job_name`, then `task` (the chain's operator names joined by
//! ` -> `) and `subtask`, and `operator` for the metrics of one chained operator. A task
//! updates them once per batch, never per record.

use std::sync::Arc;

use super::registry::{Counter, Gauge, Meter, MetricGroup};
use super::vertex::VertexMetrics;

/// Metrics of one operator in one subtask.
#[derive(Debug)]
pub(crate) struct OperatorMetrics {
    /// The vertex totals for the job result.
    pub(crate) vertex: Arc<VertexMetrics>,
    records_in: Meter,
    records_out: Meter,
    late: Counter,
    group: MetricGroup,
}

impl OperatorMetrics {
    /// Registers the operator's metrics in `group` (its operator scope).
    pub(crate) fn register(group: MetricGroup, vertex: Arc<VertexMetrics>) -> Self {
        OperatorMetrics {
            vertex,
            records_in: group.meter("operator_records_in", "records that entered the operator"),
            records_out: group.meter(
                "operator_records_out",
                "records the operator emitted (for a sink: wrote)",
            ),
            late: group.counter(
                "operator_late_records_dropped",
                "records dropped for arriving after their window closed",
            ),
            group,
        }
    }

    /// Metrics that go nowhere (for tests of single operators).
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self::register(super::MetricRegistry::new().root(), Arc::new(VertexMetrics::default()))
    }

    pub(crate) fn add_in(&self, n: usize) {
        self.vertex.add_in(n);
        self.records_in.mark(n as u64);
    }

    pub(crate) fn add_out(&self, n: usize) {
        self.vertex.add_out(n);
        self.records_out.mark(n as u64);
    }

    pub(crate) fn add_late(&self, n: u64) {
        self.vertex
            .late_records_dropped
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.late.add(n);
    }

    /// The operator's scope, for metrics of user functions.
    pub(crate) fn group(&self) -> &MetricGroup {
        &self.group
    }
}

/// Nanoseconds in a second, for turning time meters into ratios.
const NANOS: f64 = 1e9;

/// Metrics of one task (one subtask of a chain).
#[derive(Debug, Clone)]
pub(crate) struct TaskMetrics {
    /// Encoded bytes received over the network.
    pub(crate) bytes_in: Meter,
    /// Encoded bytes sent over the network.
    pub(crate) bytes_out: Meter,
    /// Nanoseconds spent waiting for input.
    pub(crate) idle_ns: Meter,
    /// Nanoseconds spent waiting for room in an output channel.
    pub(crate) backpressured_ns: Meter,
    /// The task's input watermark in seconds.
    pub(crate) input_watermark: Gauge,
    /// The watermark the task last emitted, in seconds.
    pub(crate) output_watermark: Gauge,
    /// Bytes of state the task wrote for its latest checkpoint.
    pub(crate) state_size: Gauge,
    group: MetricGroup,
}

impl TaskMetrics {
    /// Registers the task's metrics in `group` (its task scope).
    pub(crate) fn register(group: MetricGroup) -> Self {
        // Nanosecond counts only feed the ratios below: shown themselves they would be a
        // non-base unit.
        let idle_ns = group.internal_meter("task_idle_time");
        let backpressured_ns = group.internal_meter("task_backpressured_time");
        let (i, b) = (idle_ns.clone(), backpressured_ns.clone());
        group.gauge_fn(
            "task_idle_ratio",
            "share of the last seconds spent waiting for input",
            move || Some((i.rate() / NANOS).clamp(0.0, 1.0)),
        );
        let (i, b2) = (idle_ns.clone(), b.clone());
        group.gauge_fn(
            "task_backpressured_ratio",
            "share of the last seconds spent waiting for room downstream",
            move || Some((b2.rate() / NANOS).clamp(0.0, 1.0)),
        );
        group.gauge_fn(
            "task_busy_ratio",
            "share of the last seconds spent working (neither idle nor backpressured)",
            move || Some((1.0 - i.rate() / NANOS - b.rate() / NANOS).clamp(0.0, 1.0)),
        );
        let input_watermark = group.gauge(
            "task_input_watermark_seconds",
            "the task's combined input watermark (event time, seconds since the epoch)",
        );
        let output_watermark = group.gauge(
            "task_output_watermark_seconds",
            "the watermark the task last emitted (event time, seconds since the epoch)",
        );
        input_watermark.set(f64::NEG_INFINITY);
        output_watermark.set(f64::NEG_INFINITY);
        TaskMetrics {
            bytes_in: group.meter("task_bytes_in", "encoded bytes received over the network"),
            bytes_out: group.meter("task_bytes_out", "encoded bytes sent over the network"),
            idle_ns,
            backpressured_ns,
            input_watermark,
            output_watermark,
            state_size: group.gauge(
                "task_checkpointed_state_bytes",
                "bytes of state the task wrote for its latest checkpoint",
            ),
            group,
        }
    }

    /// The task's scope (for per-channel metrics).
    pub(crate) fn group(&self) -> &MetricGroup {
        &self.group
    }
}
