//! Metric samples to and from the wire: workers send theirs to the coordinator, which serves
//! them with its own on `/metrics` and the REST API.

use sluice_transport::wire::WireMetric;

use crate::metrics::{MetricSample, MetricValue};

/// Samples as wire metrics.
pub(crate) fn to_wire(samples: &[MetricSample]) -> Vec<WireMetric> {
    samples
        .iter()
        .map(|s| {
            let (kind, value, count, buckets) = match &s.value {
                MetricValue::Counter(c) => (0, *c as f64, *c, Vec::new()),
                MetricValue::Gauge(g) => (1, *g, 0, Vec::new()),
                MetricValue::Meter { count, rate } => (2, *rate, *count, Vec::new()),
                MetricValue::Histogram { count, sum, buckets } => (3, *sum, *count, buckets.clone()),
            };
            WireMetric {
                name: s.name.clone(),
                help: s.help.clone(),
                kind,
                labels: s.labels.clone(),
                value,
                count,
                buckets,
            }
        })
        .collect()
}

/// Wire metrics as samples, each with `extra` added to its labels (the worker's id).
pub(crate) fn from_wire(points: Vec<WireMetric>, extra: (&str, &str)) -> Vec<MetricSample> {
    points
        .into_iter()
        .map(|p| {
            let value = match p.kind {
                // The exact count travels in `count` (`value` is an f64 and rounds).
                0 => MetricValue::Counter(p.count),
                2 => MetricValue::Meter {
                    count: p.count,
                    rate: p.value,
                },
                3 => MetricValue::Histogram {
                    count: p.count,
                    sum: p.value,
                    buckets: p.buckets,
                },
                // The decoder admits kinds 0..=3 only.
                _ => MetricValue::Gauge(p.value),
            };
            let mut labels = p.labels;
            labels.retain(|(k, _)| k != extra.0);
            labels.push((extra.0.to_string(), extra.1.to_string()));
            labels.sort();
            MetricSample {
                name: p.name,
                help: p.help,
                labels,
                value,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricRegistry;

    #[test]
    fn samples_survive_the_wire_with_the_worker_label() {
        let r = MetricRegistry::new();
        let g = r.root().group("job_id", "j1");
        g.counter("records", "r").add(u64::MAX - 1);
        g.gauge("wm", "w").set(-3.5);
        g.meter("out", "o").mark(9);
        g.histogram("d", "d", vec![1.0, 2.0]).observe(1.5);
        let before = r.snapshot();
        let after = from_wire(to_wire(&before), ("worker", "w1"));
        for (a, b) in before.iter().zip(&after) {
            assert_eq!(a.value, b.value);
            assert_eq!(b.label("worker"), Some("w1"));
            assert_eq!(b.label("job_id"), Some("j1"));
        }
    }
}
