//! Per-vertex figures of a job, summed or combined over its subtasks, from metric samples
//! (as `GET /jobs/{id}` shows them, in embedded and in cluster mode alike).

use super::registry::{MetricSample, MetricValue};

/// One vertex of a running job and its live figures.
#[derive(Debug, Clone, PartialEq)]
pub struct VertexSummary {
    /// Vertex name.
    pub name: String,
    /// Its parallelism.
    pub parallelism: u32,
    /// Subtasks reporting metrics now.
    pub subtasks_reporting: u32,
    /// Records in, summed over subtasks (of the current attempt).
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Records in per second.
    pub records_in_per_second: f64,
    /// Records out per second.
    pub records_out_per_second: f64,
    /// Late records dropped.
    pub late_records_dropped: u64,
    /// Network bytes in and out of the tasks the vertex is chained into.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// The busiest subtask's busy share (0..=1).
    pub busy_ratio_max: f64,
    /// The most backpressured subtask's share (0..=1).
    pub backpressured_ratio_max: f64,
    /// The lowest input watermark over subtasks, ms (`None` before any).
    pub input_watermark_ms: Option<f64>,
}

fn value(s: &MetricSample) -> (u64, f64) {
    match s.value {
        MetricValue::Counter(c) => (c, c as f64),
        MetricValue::Meter { count, rate } => (count, rate),
        MetricValue::Gauge(g) => (g as u64, g),
        MetricValue::Histogram { count, .. } => (count, count as f64),
    }
}

/// Figures for each of `vertices` (`(name, parallelism)`) from `samples` of one job.
pub fn vertex_summaries(samples: &[MetricSample], vertices: &[(String, u32)]) -> Vec<VertexSummary> {
    vertices
        .iter()
        .map(|(name, parallelism)| {
            let mut v = VertexSummary {
                name: name.clone(),
                parallelism: *parallelism,
                subtasks_reporting: 0,
                records_in: 0,
                records_out: 0,
                records_in_per_second: 0.0,
                records_out_per_second: 0.0,
                late_records_dropped: 0,
                bytes_in: 0,
                bytes_out: 0,
                busy_ratio_max: 0.0,
                backpressured_ratio_max: 0.0,
                input_watermark_ms: None,
            };
            for s in samples {
                if s.label("operator") == Some(name.as_str()) {
                    let (count, rate) = value(s);
                    match s.name.as_str() {
                        "operator_records_in" => {
                            v.records_in += count;
                            v.records_in_per_second += rate;
                            v.subtasks_reporting += 1;
                        }
                        "operator_records_out" => {
                            v.records_out += count;
                            v.records_out_per_second += rate;
                        }
                        "operator_late_records_dropped" => v.late_records_dropped += count,
                        _ => {}
                    }
                    continue;
                }
                let in_task = s.label("operator").is_none()
                    && s.label("channel").is_none()
                    && s.label("task").is_some_and(|t| t.split(" -> ").any(|n| n == name));
                if !in_task {
                    continue;
                }
                let (count, g) = value(s);
                match s.name.as_str() {
                    "task_bytes_in" => v.bytes_in += count,
                    "task_bytes_out" => v.bytes_out += count,
                    "task_busy_ratio" => v.busy_ratio_max = v.busy_ratio_max.max(g),
                    "task_backpressured_ratio" => v.backpressured_ratio_max = v.backpressured_ratio_max.max(g),
                    "task_input_watermark_seconds" if g.is_finite() => {
                        let ms = g * 1000.0;
                        v.input_watermark_ms = Some(v.input_watermark_ms.map_or(ms, |w: f64| w.min(ms)));
                    }
                    _ => {}
                }
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricRegistry;

    #[test]
    fn sums_operators_and_combines_tasks() {
        let r = MetricRegistry::new();
        for sub in 0..2u32 {
            let t = r.root().group("task", "src -> map").group("subtask", &sub.to_string());
            t.group("operator", "map")
                .meter("operator_records_in", "")
                .mark(10 + sub as u64);
            t.group("operator", "src").meter("operator_records_out", "").mark(5);
            t.gauge("task_input_watermark_seconds", "").set(0.1 + sub as f64);
            t.meter("task_bytes_out", "").mark(7);
        }
        let v = vertex_summaries(&r.snapshot(), &[("map".into(), 2), ("src".into(), 2)]);
        assert_eq!(v[0].records_in, 21);
        assert_eq!(v[0].subtasks_reporting, 2);
        assert_eq!(v[0].input_watermark_ms, Some(100.0));
        assert_eq!(v[0].bytes_out, 14);
        assert_eq!(v[1].records_out, 10);
        assert_eq!(v[1].bytes_out, 14);
    }
}
