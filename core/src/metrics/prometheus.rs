//! Renders metric samples in the Prometheus text exposition format (version 0.0.4).
//!
//! Names get the `sluice_` prefix. A counter is `<name>_total`; a meter becomes a counter
//! `<name>_total` and a gauge `<name>_per_second`; a histogram has `_bucket`, `_sum` and
//! `_count` series. Families are written in name order, each with its `# HELP` and `# TYPE`
//! once, so the output passes `promtool check metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::registry::{MetricSample, MetricValue};

/// The content type of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Family<'a> {
    kind: &'static str,
    help: &'a str,
    lines: Vec<String>,
}

/// Renders `samples` as Prometheus text.
pub fn render<'a>(samples: &'a [MetricSample]) -> String {
    let mut families: BTreeMap<String, Family<'a>> = BTreeMap::new();
    let mut add = |name: String, kind: &'static str, help: &'a str, line: String| {
        families
            .entry(name)
            .or_insert_with(|| Family {
                kind,
                help,
                lines: Vec::new(),
            })
            .lines
            .push(line);
    };
    for s in samples {
        let base = format!("sluice_{}", sanitize_name(&s.name));
        let labels = label_text(&s.labels, None);
        match &s.value {
            MetricValue::Counter(c) => {
                let n = counter_name(&base);
                add(n.clone(), "counter", &s.help, format!("{n}{labels} {c}"));
            }
            MetricValue::Gauge(g) => add(base.clone(), "gauge", &s.help, format!("{base}{labels} {}", number(*g))),
            MetricValue::Meter { count, rate } => {
                let n = counter_name(&base);
                add(n.clone(), "counter", &s.help, format!("{n}{labels} {count}"));
                let r = format!("{base}_per_second");
                add(r.clone(), "gauge", &s.help, format!("{r}{labels} {}", number(*rate)));
            }
            MetricValue::Histogram { count, sum, buckets } => {
                let mut lines = Vec::with_capacity(buckets.len() + 3);
                for (bound, n) in buckets {
                    let l = label_text(&s.labels, Some(&number(*bound)));
                    lines.push(format!("{base}_bucket{l} {n}"));
                }
                lines.push(format!("{base}_bucket{} {count}", label_text(&s.labels, Some("+Inf"))));
                lines.push(format!("{base}_sum{labels} {}", number(*sum)));
                lines.push(format!("{base}_count{labels} {count}"));
                for line in lines {
                    add(base.clone(), "histogram", &s.help, line);
                }
            }
        }
    }
    let mut out = String::new();
    for (name, f) in &families {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(f.help));
        let _ = writeln!(out, "# TYPE {name} {}", f.kind);
        for l in &f.lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn counter_name(base: &str) -> String {
    if base.ends_with("_total") {
        base.to_string()
    } else {
        format!("{base}_total")
    }
}

/// Metric names allow `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn label_text(labels: &[(String, String)], le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", sanitize_name(k), escape_value(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricRegistry;

    #[test]
    fn renders_every_kind_with_one_header_per_family() {
        let r = MetricRegistry::new();
        let job = r.root().group("job_name", "q\"1\"");
        job.group("subtask", "0").counter("records_in", "records read").add(7);
        job.group("subtask", "1").counter("records_in", "records read").add(3);
        job.gauge("uptime_seconds", "time running").set(1.5);
        job.meter("records_out", "records written").mark(4);
        let h = job.histogram("checkpoint_duration_seconds", "checkpoint time", vec![0.1, 1.0]);
        h.observe(0.5);
        let text = render(&r.snapshot());
        assert_eq!(
            text,
            "# HELP sluice_checkpoint_duration_seconds checkpoint time\n\
             # TYPE sluice_checkpoint_duration_seconds histogram\n\
             sluice_checkpoint_duration_seconds_bucket{job_name=\"q\\\"1\\\"\",le=\"0.1\"} 0\n\
             sluice_checkpoint_duration_seconds_bucket{job_name=\"q\\\"1\\\"\",le=\"1\"} 1\n\
             sluice_checkpoint_duration_seconds_bucket{job_name=\"q\\\"1\\\"\",le=\"+Inf\"} 1\n\
             sluice_checkpoint_duration_seconds_sum{job_name=\"q\\\"1\\\"\"} 0.5\n\
             sluice_checkpoint_duration_seconds_count{job_name=\"q\\\"1\\\"\"} 1\n\
             # HELP sluice_records_in_total records read\n\
             # TYPE sluice_records_in_total counter\n\
             sluice_records_in_total{job_name=\"q\\\"1\\\"\",subtask=\"0\"} 7\n\
             sluice_records_in_total{job_name=\"q\\\"1\\\"\",subtask=\"1\"} 3\n\
             # HELP sluice_records_out_per_second records written\n\
             # TYPE sluice_records_out_per_second gauge\n\
             sluice_records_out_per_second{job_name=\"q\\\"1\\\"\"} 0\n\
             # HELP sluice_records_out_total records written\n\
             # TYPE sluice_records_out_total counter\n\
             sluice_records_out_total{job_name=\"q\\\"1\\\"\"} 4\n\
             # HELP sluice_uptime_seconds time running\n\
             # TYPE sluice_uptime_seconds gauge\n\
             sluice_uptime_seconds{job_name=\"q\\\"1\\\"\"} 1.5\n"
        );
    }
}
