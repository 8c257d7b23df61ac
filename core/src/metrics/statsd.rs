//! Formats metric samples as StatsD lines, packed into UDP-sized packets.
//!
//! Every value goes out as a gauge (`|g`), as Flink's StatsD reporter does: counters are
//! absolute counts, which a StatsD counter (`|c`) would add up on every report. A meter
//! sends `<name>.count` and `<name>.rate`; a histogram `<name>.count`, `.sum` and `.mean`.
//! Labels become part of the name (`sluice.<label values>.<name>`) unless `tags` is set, in
//! which case they go out as DogStatsD tags (`|#key:value`).

use super::registry::{MetricSample, MetricValue};

/// Largest packet, in bytes: fits an Ethernet MTU after IP and UDP headers.
pub const MAX_PACKET: usize = 1432;

/// StatsD name parts allow letters, digits, `_` and `-`; anything else becomes `_`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

/// The StatsD lines for `samples`, with names under `prefix`.
pub fn lines(samples: &[MetricSample], prefix: &str, tags: bool) -> Vec<String> {
    let mut out = Vec::new();
    for s in samples {
        let mut name = clean(prefix);
        if !tags {
            for (_, v) in &s.labels {
                name.push('.');
                name.push_str(&clean(v));
            }
        }
        name.push('.');
        name.push_str(&clean(&s.name));
        let suffix = if tags && !s.labels.is_empty() {
            let t: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{}:{}", clean(k), clean(v)))
                .collect();
            format!("|#{}", t.join(","))
        } else {
            String::new()
        };
        let mut put = |sub: &str, v: f64| {
            out.push(format!("{name}{sub}:{}|g{suffix}", number(v)));
        };
        match &s.value {
            MetricValue::Counter(c) => put("", *c as f64),
            MetricValue::Gauge(g) => put("", *g),
            MetricValue::Meter { count, rate } => {
                put(".count", *count as f64);
                put(".rate", *rate);
            }
            MetricValue::Histogram { count, sum, .. } => {
                put(".count", *count as f64);
                put(".sum", *sum);
                put(".mean", s.value.as_f64());
            }
        }
    }
    out
}

/// Packs lines into newline-separated packets of at most [`MAX_PACKET`] bytes (a longer
/// line gets a packet of its own).
pub fn packets(lines: &[String]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for l in lines {
        if !cur.is_empty() && cur.len() + 1 + l.len() > MAX_PACKET {
            packets.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(b'\n');
        }
        cur.extend_from_slice(l.as_bytes());
    }
    if !cur.is_empty() {
        packets.push(cur);
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricRegistry;

    #[test]
    fn labels_go_into_the_name_or_into_tags() {
        let r = MetricRegistry::new();
        let g = r.root().group("job_name", "q 1").group("subtask", "0");
        g.counter("records_in", "r").add(5);
        g.meter("records_out", "r").mark(2);
        assert_eq!(
            lines(&r.snapshot(), "sluice", false),
            vec![
                "sluice.q_1.0.records_in:5|g",
                "sluice.q_1.0.records_out.count:2|g",
                "sluice.q_1.0.records_out.rate:0|g"
            ]
        );
        assert_eq!(
            lines(&r.snapshot(), "sluice", true)[0],
            "sluice.records_in:5|g|#job_name:q_1,subtask:0"
        );
    }

    #[test]
    fn packets_stay_under_the_limit() {
        let ls: Vec<String> = (0..200).map(|i| format!("sluice.metric_{i}:1|g")).collect();
        let ps = packets(&ls);
        assert!(ps.len() > 1);
        assert!(ps.iter().all(|p| p.len() <= MAX_PACKET));
        let joined: Vec<String> = ps
            .iter()
            .flat_map(|p| {
                String::from_utf8(p.clone())
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(joined, ls);
    }
}
