//! The metric registry: named, labelled counters, gauges, histograms and meters.
//!
//! Metrics live in scopes the way Flink's do (process, job, operator, subtask), expressed as
//! labels: a [`MetricGroup`] carries the labels of its scope, and [`MetricGroup::group`] adds
//! one to make a narrower scope. Updating a metric is one atomic operation; reading them all
//! ([`MetricRegistry::snapshot`]) is what reporters and the REST API do.
//!
//! ```
//! use sluice_core::metrics::MetricRegistry;
//!
//! let registry = MetricRegistry::new();
//! let job = registry.root().group("job_name", "clicks");
//! let seen = job.counter("clicks_seen", "clicks read so far");
//! seen.add(3);
//! let sample = registry.snapshot().into_iter().find(|s| s.name == "clicks_seen").unwrap();
//! assert_eq!(sample.labels, vec![("job_name".to_string(), "clicks".to_string())]);
//! ```

use crate::sync::LockExt;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Labels of a metric, sorted by key.
pub type Labels = Vec<(String, String)>;

/// How long a meter's rate looks back.
pub const METER_WINDOW: Duration = Duration::from_secs(10);

/// A count that only goes up.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A count with its rate per second over the last [`METER_WINDOW`] (updated when the
/// registry ticks, once a second).
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<MeterInner>);

#[derive(Debug, Default)]
struct MeterInner {
    count: AtomicU64,
    rate: AtomicU64,
    /// `(ms since the registry started, count)`, oldest first.
    samples: Mutex<VecDeque<(u64, u64)>>,
}

impl Meter {
    /// Counts `n` events.
    pub fn mark(&self, n: u64) {
        self.0.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Events so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Events per second over the last window.
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.0.rate.load(Ordering::Relaxed))
    }

    fn tick(&self, now_ms: u64) {
        let count = self.count();
        let mut s = self.0.samples.locked();
        s.push_back((now_ms, count));
        while s.len() > 2 && now_ms - s[1].0 >= METER_WINDOW.as_millis() as u64 {
            s.pop_front();
        }
        let (t0, c0) = s[0];
        let rate = if now_ms > t0 {
            (count - c0) as f64 * 1000.0 / (now_ms - t0) as f64
        } else {
            0.0
        };
        self.0.rate.store(rate.to_bits(), Ordering::Relaxed);
    }
}

/// A distribution over fixed bucket bounds (cumulative counts, sum and count, as
/// Prometheus histograms).
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: Vec<f64>,
    /// One per bound plus the overflow bucket; not cumulative.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_bits: Mutex<f64>,
}

impl Histogram {
    fn new(bounds: Vec<f64>) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "histogram bounds must increase");
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(HistogramInner {
            bounds,
            buckets,
            count: AtomicU64::new(0),
            sum_bits: Mutex::new(0.0),
        }))
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        let i = self.0.bounds.partition_point(|b| *b < v);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        *self.0.sum_bits.locked() += v;
    }

    fn value(&self) -> MetricValue {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.0.bounds.len());
        for (b, n) in self.0.bounds.iter().zip(&self.0.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            buckets.push((*b, cumulative));
        }
        let count = cumulative + self.0.buckets[self.0.bounds.len()].load(Ordering::Relaxed);
        MetricValue::Histogram {
            count,
            sum: *self.0.sum_bits.locked(),
            buckets,
        }
    }
}

/// Bucket bounds growing by `factor` from `start`, `n` of them (for durations and sizes).
pub fn exponential_buckets(start: f64, factor: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| start * factor.powi(i as i32)).collect()
}

type GaugeFn = Arc<dyn Fn() -> Option<f64> + Send + Sync>;
type CounterFn = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Clone)]
enum Metric {
    Counter(Counter),
    CounterFn(CounterFn),
    Gauge(Gauge),
    GaugeFn(GaugeFn),
    Meter(Meter),
    Histogram(Histogram),
}

/// What kind of metric a sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic count.
    Counter,
    /// Current value.
    Gauge,
    /// Count and rate per second.
    Meter,
    /// Distribution.
    Histogram,
}

/// The value of a metric at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// A counter's count.
    Counter(u64),
    /// A gauge's value.
    Gauge(f64),
    /// A meter's count and rate per second.
    Meter {
        /// Events so far.
        count: u64,
        /// Events per second over the last window.
        rate: f64,
    },
    /// A histogram.
    Histogram {
        /// Values observed.
        count: u64,
        /// Their sum.
        sum: f64,
        /// `(upper bound, values <= bound)`, cumulative, bounds increasing.
        buckets: Vec<(f64, u64)>,
    },
}

impl MetricValue {
    /// The kind of metric this value came from.
    pub fn kind(&self) -> MetricKind {
        match self {
            MetricValue::Counter(_) => MetricKind::Counter,
            MetricValue::Gauge(_) => MetricKind::Gauge,
            MetricValue::Meter { .. } => MetricKind::Meter,
            MetricValue::Histogram { .. } => MetricKind::Histogram,
        }
    }

    /// One number for the value: a counter's count, a gauge's value, a meter's rate, a
    /// histogram's mean.
    pub fn as_f64(&self) -> f64 {
        match self {
            MetricValue::Counter(c) => *c as f64,
            MetricValue::Gauge(g) => *g,
            MetricValue::Meter { rate, .. } => *rate,
            MetricValue::Histogram { count, sum, .. } => {
                if *count == 0 {
                    0.0
                } else {
                    sum / *count as f64
                }
            }
        }
    }
}

/// One metric read from a registry.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// Metric name (snake case, no prefix).
    pub name: String,
    /// What it measures.
    pub help: String,
    /// Scope labels, sorted by key.
    pub labels: Labels,
    /// The value.
    pub value: MetricValue,
}

impl MetricSample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

struct Entry {
    help: String,
    metric: Metric,
    /// Whether reads show it (internal meters feed derived gauges only).
    exported: bool,
    /// The registration this entry belongs to, so one scope's metrics leave together.
    owner: u64,
}

#[derive(Default)]
struct Inner {
    metrics: Mutex<BTreeMap<(String, Labels), Entry>>,
    next_owner: AtomicU64,
}

/// Holds every metric of a process; cheap to clone.
#[derive(Clone, Default)]
pub struct MetricRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MetricRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.metrics.locked().len();
        write!(f, "MetricRegistry({n} metrics)")
    }
}

impl MetricRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MetricRegistry::default()
    }

    /// The process scope: no labels. Metrics registered through it stay until the registry
    /// goes away.
    pub fn root(&self) -> MetricGroup {
        MetricGroup {
            registry: self.clone(),
            labels: Vec::new(),
            owner: 0,
        }
    }

    /// A scope with `labels` whose metrics can be removed together with
    /// [`MetricGroup::unregister`] (a job's or an attempt's).
    pub fn scope(&self, labels: &[(&str, &str)]) -> MetricGroup {
        let owner = self.inner.next_owner.fetch_add(1, Ordering::Relaxed) + 1;
        let mut g = MetricGroup {
            registry: self.clone(),
            labels: Vec::new(),
            owner,
        };
        for (k, v) in labels {
            g = g.group(k, v);
        }
        g
    }

    /// Every metric's current value, ordered by name then labels.
    pub fn snapshot(&self) -> Vec<MetricSample> {
        let entries: Vec<(String, Labels, String, Metric)> = self
            .inner
            .metrics
            .locked()
            .iter()
            .filter(|(_, e)| e.exported)
            .map(|((n, l), e)| (n.clone(), l.clone(), e.help.clone(), e.metric.clone()))
            .collect();
        // Gauge functions run outside the lock: they may read other structures.
        entries
            .into_iter()
            .filter_map(|(name, labels, help, metric)| {
                let value = match metric {
                    Metric::Counter(c) => MetricValue::Counter(c.get()),
                    Metric::CounterFn(f) => MetricValue::Counter(f()),
                    Metric::Gauge(g) => MetricValue::Gauge(g.get()),
                    Metric::GaugeFn(f) => MetricValue::Gauge(f()?),
                    Metric::Meter(m) => MetricValue::Meter {
                        count: m.count(),
                        rate: m.rate(),
                    },
                    Metric::Histogram(h) => h.value(),
                };
                Some(MetricSample {
                    name,
                    help,
                    labels,
                    value,
                })
            })
            .collect()
    }

    /// Updates every meter's rate; `now` is time since an origin fixed by the caller.
    pub fn tick(&self, now: Duration) {
        let meters: Vec<Meter> = self
            .inner
            .metrics
            .locked()
            .values()
            .filter_map(|e| match &e.metric {
                Metric::Meter(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        let now_ms = now.as_millis() as u64;
        for m in meters {
            m.tick(now_ms);
        }
    }

    /// Ticks the registry every second until it is dropped.
    pub fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let origin = tokio::time::Instant::now();
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                MetricRegistry { inner }.tick(origin.elapsed());
            }
        })
    }

    fn register(&self, name: &str, labels: &Labels, help: &str, owner: u64, metric: Metric) {
        self.register_entry(name, labels, help, owner, metric, true)
    }

    fn register_entry(&self, name: &str, labels: &Labels, help: &str, owner: u64, metric: Metric, exported: bool) {
        // A later registration under the same name and labels replaces the earlier one (a
        // restarted attempt's subtask takes over its predecessor's series).
        self.inner.metrics.locked().insert(
            (name.to_string(), labels.clone()),
            Entry {
                help: help.to_string(),
                metric,
                owner,
                exported,
            },
        );
    }
}

/// A scope of metrics: the labels they carry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MetricGroup {
    registry: MetricRegistry,
    labels: Labels,
    owner: u64,
}

impl MetricGroup {
    /// A narrower scope: these labels plus `key=value`.
    pub fn group(&self, key: &str, value: &str) -> MetricGroup {
        let mut labels = self.labels.clone();
        labels.retain(|(k, _)| k != key);
        labels.push((key.to_string(), value.to_string()));
        labels.sort();
        MetricGroup {
            registry: self.registry.clone(),
            labels,
            owner: self.owner,
        }
    }

    /// The labels of this scope.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Registers a counter.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.registry
            .register(name, &self.labels, help, self.owner, Metric::Counter(c.clone()));
        c
    }

    /// Registers a gauge that is set by its owner.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        self.registry
            .register(name, &self.labels, help, self.owner, Metric::Gauge(g.clone()));
        g
    }

    /// Registers a gauge computed when it is read; `None` leaves it out of that read.
    pub fn gauge_fn(&self, name: &str, help: &str, f: impl Fn() -> Option<f64> + Send + Sync + 'static) {
        self.registry
            .register(name, &self.labels, help, self.owner, Metric::GaugeFn(Arc::new(f)));
    }

    /// Registers a counter whose count is read from elsewhere when it is read.
    pub fn counter_fn(&self, name: &str, help: &str, f: impl Fn() -> u64 + Send + Sync + 'static) {
        self.registry
            .register(name, &self.labels, help, self.owner, Metric::CounterFn(Arc::new(f)));
    }

    /// Registers a meter.
    pub fn meter(&self, name: &str, help: &str) -> Meter {
        let m = Meter::default();
        self.registry
            .register(name, &self.labels, help, self.owner, Metric::Meter(m.clone()));
        m
    }

    /// Registers a meter that reads do not show: it only feeds gauges computed from its
    /// rate (a time meter behind a ratio, say).
    pub fn internal_meter(&self, name: &str) -> Meter {
        let m = Meter::default();
        self.registry
            .register_entry(name, &self.labels, "", self.owner, Metric::Meter(m.clone()), false);
        m
    }

    /// Registers a histogram with these bucket bounds.
    pub fn histogram(&self, name: &str, help: &str, bounds: Vec<f64>) -> Histogram {
        let h = Histogram::new(bounds);
        self.registry
            .register(name, &self.labels, help, self.owner, Metric::Histogram(h.clone()));
        h
    }

    /// A scope with the same labels whose metrics are unregistered apart from this one's (an
    /// attempt's task metrics inside its job's scope).
    pub fn child_scope(&self) -> MetricGroup {
        let owner = self.registry.inner.next_owner.fetch_add(1, Ordering::Relaxed) + 1;
        MetricGroup {
            registry: self.registry.clone(),
            labels: self.labels.clone(),
            owner,
        }
    }

    /// A guard that unregisters this scope when dropped (however its owner ends).
    pub fn guard(&self) -> ScopeGuard {
        ScopeGuard(self.clone())
    }

    /// Removes every metric registered through this scope (or a narrower one made from it),
    /// unless a later registration has replaced it.
    pub fn unregister(&self) {
        if self.owner == 0 {
            return;
        }
        self.registry
            .inner
            .metrics
            .locked()
            .retain(|_, e| e.owner != self.owner);
    }
}

/// Unregisters a scope's metrics when dropped; see [`MetricGroup::guard`].
#[derive(Debug)]
pub struct ScopeGuard(MetricGroup);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        self.0.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_rate_is_events_over_the_window() {
        let r = MetricRegistry::new();
        let m = r.root().meter("events", "events");
        r.tick(Duration::from_millis(0));
        m.mark(500);
        r.tick(Duration::from_millis(1000));
        assert_eq!(m.rate(), 500.0);
        m.mark(1500);
        r.tick(Duration::from_millis(2000));
        assert_eq!(m.rate(), 1000.0);
        // Samples older than the window drop out.
        for s in 3..=20 {
            r.tick(Duration::from_secs(s));
        }
        assert_eq!(m.rate(), 0.0);
        assert_eq!(m.count(), 2000);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let r = MetricRegistry::new();
        let h = r.root().histogram("d", "durations", vec![1.0, 10.0, 100.0]);
        for v in [0.5, 5.0, 50.0, 500.0, 10.0] {
            h.observe(v);
        }
        let s = r.snapshot();
        assert_eq!(
            s[0].value,
            MetricValue::Histogram {
                count: 5,
                sum: 565.5,
                buckets: vec![(1.0, 1), (10.0, 3), (100.0, 4)]
            }
        );
    }

    #[test]
    fn unregister_removes_only_its_own_scope() {
        let r = MetricRegistry::new();
        let a = r.scope(&[("job_id", "1")]);
        let b = r.scope(&[("job_id", "2")]);
        a.group("subtask", "0").counter("records", "r").add(1);
        b.counter("records", "r").add(2);
        r.root().gauge("uptime", "u").set(1.0);
        a.unregister();
        let names: Vec<_> = r
            .snapshot()
            .iter()
            .map(|s| (s.name.clone(), s.label("job_id").map(str::to_string)))
            .collect();
        assert_eq!(
            names,
            vec![("records".into(), Some("2".into())), ("uptime".into(), None)]
        );
    }

    #[test]
    fn a_replaced_metric_survives_its_old_scope() {
        let r = MetricRegistry::new();
        let old = r.scope(&[("vertex", "map")]);
        old.counter("records", "r").add(5);
        let new = r.scope(&[("vertex", "map")]);
        new.counter("records", "r").add(1);
        old.unregister();
        assert_eq!(r.snapshot()[0].value, MetricValue::Counter(1));
    }

    #[test]
    fn gauge_functions_may_skip_a_read() {
        let r = MetricRegistry::new();
        r.root().gauge_fn("gone", "g", || None);
        r.root().gauge_fn("here", "g", || Some(2.5));
        let s = r.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].value, MetricValue::Gauge(2.5));
    }
}
