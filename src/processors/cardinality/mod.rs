//! `cardinality_limit`: caps the number of distinct attribute sets (series) per metric,
//! following the OpenTelemetry SDK specification's cardinality limit: once a metric has
//! `limit` series, points of new series are folded into one overflow series whose only
//! attribute is `otel.metric.overflow=true` (`action: overflow`, the default) or dropped
//! and counted (`action: drop`). Series seen before the limit keep flowing.
//!
//! * Scope: with `scope: resource` (default) series are counted per metric *and resource*
//!   (its attributes), so one noisy service cannot use up another's budget; `global`
//!   counts across resources.
//! * Folding: sums add up — for cumulative sums the overflow series carries the sum of the
//!   latest value of every overflowed series, so the total is kept; histograms add their
//!   counts, sums and buckets (within a batch: send all of a collection in one request for
//!   exact cumulative totals); gauges keep the last value; summaries add count and sum
//!   (quantiles cannot be merged and are left out); exponential histograms add when their
//!   scale and offsets agree, else their points are dropped and counted.
//! * `max_values_per_label`: a guard on the distinct values of named attributes
//!   (`user_id`, `url`), per metric and scope: past `max_values`, the attribute is removed
//!   (`drop_label`) or the point goes to the overflow series (`overflow`). A value not seen
//!   for `series_ttl` frees its place, like a series. Removing a label merges series that
//!   differed only in it; for cumulative sums that is only correct when one writer owns
//!   each merged series (the single-writer caveat), so prefer `overflow` for counters.
//! * Memory: a tracked series costs one hash and one timestamp (measured ~40 bytes of RSS
//!   with map overhead, see `benches/cardinality.rs`); an overflowed cumulative-sum series
//!   also keeps its latest value, and counts toward the same bound. Series idle for
//!   `series_ttl` are forgotten and free their slot (an overflowed series that comes back
//!   after that is counted into the overflow total again). At `max_tracked_series` in
//!   total, new series are treated as over the limit, and new overflowed cumulative
//!   series are dropped and counted.
//!
//! Self-metrics: `sieve_cardinality_tracked_series{processor}` (all tracked series, the
//! memory bound's measure), `sieve_cardinality_metric_series{processor,metric}` (series
//! within the limit, per metric),
//! `sieve_cardinality_overflow_points_total{processor,metric}` and
//! `sieve_cardinality_dropped_points_total{processor,metric}`; the first overflow of a
//! metric (per resource) is logged once, naming the metric and resource.

use super::Processor;
use crate::config::{duration, FieldError};
use crate::model::Batch;
use crate::telemetry::{ProcessorLabels, Telemetry};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint,
    HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use regex::Regex;
use serde::Deserialize;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// What happens to points of series over the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Fold into the `otel.metric.overflow=true` series.
    #[default]
    Overflow,
    /// Drop (counted).
    Drop,
}

/// What a label guard does past its `max_values`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelAction {
    /// Remove the attribute from the point.
    #[default]
    DropLabel,
    /// Send the point to the overflow series.
    Overflow,
}

/// Where series are counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Per metric and resource.
    #[default]
    Resource,
    /// Per metric across all resources.
    Global,
}

/// One `metric_limits` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricLimit {
    /// Exact metric name (OTLP name).
    #[serde(default)]
    pub name: Option<String>,
    /// Regex on the metric name.
    #[serde(default)]
    pub name_regex: Option<String>,
    /// Series allowed.
    pub limit: usize,
    /// Overrides the processor's `action`.
    #[serde(default)]
    pub action: Option<Action>,
}

/// One `max_values_per_label` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelLimit {
    /// Attribute key.
    pub key: String,
    /// Distinct values allowed per metric (and scope).
    pub max_values: usize,
    /// `drop_label` (default) or `overflow`.
    #[serde(default)]
    pub action: LabelAction,
}

/// `processors: cardinality_limit:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardinalityConfig {
    /// Series per metric (the SDK specification's default, 2000).
    pub limit: usize,
    /// `overflow` (default) or `drop`.
    pub action: Action,
    /// `resource` (default) or `global`.
    pub scope: Scope,
    /// Per-metric overrides, first match wins.
    pub metric_limits: Vec<MetricLimit>,
    /// Guards on the distinct values of named attributes.
    pub max_values_per_label: Vec<LabelLimit>,
    /// A series not seen for this long is forgotten.
    #[serde(with = "duration")]
    pub series_ttl: Duration,
    /// Series tracked in total, across metrics; beyond it new series are over the limit.
    pub max_tracked_series: usize,
}

impl Default for CardinalityConfig {
    fn default() -> Self {
        CardinalityConfig {
            limit: 2000,
            action: Action::Overflow,
            scope: Scope::Resource,
            metric_limits: Vec::new(),
            max_values_per_label: Vec::new(),
            series_ttl: Duration::from_secs(3600),
            max_tracked_series: 1_000_000,
        }
    }
}

impl CardinalityConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (i, m) in self.metric_limits.iter().enumerate() {
            match (&m.name, &m.name_regex) {
                (Some(_), None) => {}
                (None, Some(pattern)) => {
                    Regex::new(pattern).map_err(|e| {
                        FieldError::new(format!("metric_limits.{i}.name_regex"), e.to_string())
                    })?;
                }
                _ => {
                    return Err(FieldError::new(
                        format!("metric_limits.{i}"),
                        "set exactly one of name and name_regex",
                    ))
                }
            }
        }
        if self.series_ttl.is_zero() || self.max_tracked_series == 0 {
            return Err(FieldError::new(
                "series_ttl",
                "series_ttl and max_tracked_series must be positive",
            ));
        }
        Ok(())
    }
}

const OVERFLOW_KEY: &str = "otel.metric.overflow";

/// Hashes a key that is already a hash (attribute-set hashes): no second hashing.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type HashKeyed<V> = HashMap<u64, V, std::hash::BuildHasherDefault<PassThroughHasher>>;

/// The series of one metric in one scope.
#[derive(Default)]
struct MetricState {
    seen: HashKeyed<Instant>,
    /// Latest value (and when it was seen) of each overflowed cumulative-sum series, and
    /// their total.
    overflowed: HashKeyed<(f64, Instant)>,
    overflow_total: f64,
    /// Per `max_values_per_label` guard (by position): its values and when each was last seen.
    label_values: Vec<HashMap<String, Instant>>,
    warned: bool,
}

pub struct CardinalityLimiter {
    config: CardinalityConfig,
    regexes: Vec<Option<Regex>>,
    metrics: HashMap<(u64, String), MetricState>,
    /// Series within their limit, per metric name (across scopes).
    per_metric: HashMap<String, usize>,
    tracked: usize,
    next_sweep: Instant,
    telemetry: Option<Metrics>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CardinalityLabels {
    pub processor: String,
    pub metric: String,
}

struct Metrics {
    tracked: Gauge,
    metric_series: Family<CardinalityLabels, Gauge>,
    overflow: Family<CardinalityLabels, Counter>,
    dropped: Family<CardinalityLabels, Counter>,
    processor: String,
}

impl Metrics {
    /// Registers the limiter's own families (once) and its series in them.
    fn register(t: &Telemetry, processor: &str) -> Metrics {
        let tracked: Family<ProcessorLabels, Gauge> = t.family(
            "cardinality_tracked_series",
            "Series tracked by a cardinality limiter",
        );
        Metrics {
            tracked: tracked.get_or_create_owned(&ProcessorLabels {
                processor: processor.into(),
            }),
            metric_series: t.family(
                "cardinality_metric_series",
                "Series within the limit, per metric",
            ),
            overflow: t.family(
                "cardinality_overflow_points",
                "Points folded into the overflow series",
            ),
            dropped: t.family(
                "cardinality_dropped_points",
                "Points dropped by a cardinality limiter",
            ),
            processor: processor.into(),
        }
    }
}

/// The process's attribute hashing seed: foldhash (fast, and seeded at random so label
/// sets that collide cannot be crafted offline).
static ATTRIBUTE_HASH: std::sync::OnceLock<foldhash::fast::RandomState> =
    std::sync::OnceLock::new();

/// An order-independent hash of an attribute set: the wrapping sum of each attribute's
/// hash, so no sorting or formatting is needed on the hot path.
fn hash_attributes(attributes: &[KeyValue]) -> u64 {
    let state = ATTRIBUTE_HASH.get_or_init(Default::default);
    attributes.iter().fold(0u64, |total, kv| {
        let mut hasher = state.build_hasher();
        kv.key.hash(&mut hasher);
        hash_value(kv.value.as_ref(), &mut hasher);
        total.wrapping_add(hasher.finish())
    })
}

fn hash_value(value: Option<&AnyValue>, hasher: &mut impl Hasher) {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => (0u8, s).hash(hasher),
        Some(Value::BoolValue(b)) => (1u8, b).hash(hasher),
        Some(Value::IntValue(i)) => (2u8, i).hash(hasher),
        Some(Value::DoubleValue(d)) => (3u8, d.to_bits()).hash(hasher),
        Some(Value::BytesValue(b)) => (4u8, b).hash(hasher),
        Some(Value::ArrayValue(a)) => {
            5u8.hash(hasher);
            a.values.iter().for_each(|v| hash_value(Some(v), hasher));
        }
        Some(Value::KvlistValue(kv)) => (6u8, hash_attributes(&kv.values)).hash(hasher),
        Some(Value::StringValueStrindex(i)) => (7u8, i).hash(hasher),
        None => 8u8.hash(hasher),
    }
}

fn overflow_attributes() -> Vec<KeyValue> {
    vec![KeyValue {
        key: OVERFLOW_KEY.into(),
        value: Some(AnyValue {
            value: Some(Value::BoolValue(true)),
        }),
        ..Default::default()
    }]
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// Whether a point is kept as is, or goes to the overflow series, or is dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Keep,
    Overflow(u64),
    Drop,
}

impl CardinalityLimiter {
    /// Fails on a `name_regex` that does not compile.
    pub fn new(
        config: CardinalityConfig,
        processor: &str,
        telemetry: Option<&Telemetry>,
    ) -> Result<Self, FieldError> {
        let regexes = config
            .metric_limits
            .iter()
            .enumerate()
            .map(|(at, m)| {
                m.name_regex
                    .as_deref()
                    .map(Regex::new)
                    .transpose()
                    .map_err(|e| {
                        FieldError::new(format!("metric_limits.{at}.name_regex"), e.to_string())
                    })
            })
            .collect::<Result<_, _>>()?;
        let telemetry = telemetry.map(|t| Metrics::register(t, processor));
        Ok(CardinalityLimiter {
            config,
            regexes,
            metrics: HashMap::new(),
            per_metric: HashMap::new(),
            tracked: 0,
            next_sweep: Instant::now(),
            telemetry,
        })
    }

    /// Series tracked now, across metrics.
    pub fn tracked_series(&self) -> usize {
        self.tracked
    }

    fn limit_for(&self, name: &str) -> (usize, Action) {
        for (m, regex) in self.config.metric_limits.iter().zip(&self.regexes) {
            let matches =
                m.name.as_deref() == Some(name) || regex.as_ref().is_some_and(|r| r.is_match(name));
            if matches {
                return (m.limit, m.action.unwrap_or(self.config.action));
            }
        }
        (self.config.limit, self.config.action)
    }

    fn limit_metric(&mut self, scope_key: u64, resource: &str, metric: &mut Metric, now: Instant) {
        let (limit, action) = self.limit_for(&metric.name);
        let state = self
            .metrics
            .entry((scope_key, metric.name.clone()))
            .or_default();
        let metric_series = self.per_metric.entry(metric.name.clone()).or_default();
        let mut budget = Budget {
            state,
            metric_series,
            tracked: &mut self.tracked,
            max_tracked: self.config.max_tracked_series,
            label_limits: &self.config.max_values_per_label,
            limit,
            action,
            now,
            overflowed: 0,
            dropped: 0,
        };
        budget.apply(metric.data.as_mut());
        let (overflowed, dropped, first) = (budget.overflowed, budget.dropped, budget.state.warned);
        if (overflowed > 0 || dropped > 0) && !first {
            budget.state.warned = true;
            tracing::warn!(metric = %metric.name, resource, limit, "cardinality limit reached: new series are {}", if action == Action::Overflow { "folded into the overflow series" } else { "dropped" });
        }
        if let Some(m) = &self.telemetry {
            let labels = CardinalityLabels {
                processor: m.processor.clone(),
                metric: metric.name.clone(),
            };
            m.metric_series
                .get_or_create(&labels)
                .set(*budget.metric_series as i64);
            if overflowed > 0 {
                m.overflow.get_or_create(&labels).inc_by(overflowed);
            }
            if dropped > 0 {
                m.dropped.get_or_create(&labels).inc_by(dropped);
            }
        }
    }

    /// Forgets series idle for longer than `series_ttl`.
    fn sweep(&mut self, now: Instant) {
        let ttl = self.config.series_ttl;
        let mut forgotten = 0;
        let per_metric = &mut self.per_metric;
        self.metrics.retain(|(_, name), state| {
            let before = state.seen.len() + state.overflowed.len();
            let seen_before = state.seen.len();
            state.seen.retain(|_, last| now.duration_since(*last) < ttl);
            if let Some(count) = per_metric.get_mut(name) {
                *count -= seen_before - state.seen.len();
            }
            state
                .overflowed
                .retain(|_, (_, last)| now.duration_since(*last) < ttl);
            for values in &mut state.label_values {
                values.retain(|_, last| now.duration_since(*last) < ttl);
            }
            forgotten += before - state.seen.len() - state.overflowed.len();
            !state.seen.is_empty() || !state.overflowed.is_empty()
        });
        self.tracked -= forgotten;
        self.next_sweep = now + ttl / 10;
        let telemetry = &self.telemetry;
        self.per_metric.retain(|name, count| {
            if let Some(m) = telemetry {
                let labels = CardinalityLabels {
                    processor: m.processor.clone(),
                    metric: name.clone(),
                };
                if *count == 0 {
                    m.metric_series.remove(&labels);
                } else {
                    m.metric_series.get_or_create(&labels).set(*count as i64);
                }
            }
            *count > 0
        });
        if let Some(m) = &self.telemetry {
            m.tracked.set(self.tracked as i64);
        }
    }

    /// Applies the limits to a metrics batch.
    pub fn limit(&mut self, batch: &mut Batch, now: Instant) {
        for rm in batch.metrics_mut() {
            let resource_attributes = rm
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let scope_key = match self.config.scope {
                Scope::Resource => hash_attributes(resource_attributes),
                Scope::Global => 0,
            };
            let resource = resource_attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .map(|kv| crate::model::any_value_text(kv.value.as_ref()))
                .unwrap_or_default();
            for sm in &mut rm.scope_metrics {
                for metric in &mut sm.metrics {
                    self.limit_metric(scope_key, &resource, metric, now);
                }
            }
        }
        batch.recount();
        if let Some(m) = &self.telemetry {
            m.tracked.set(self.tracked as i64);
        }
    }
}

/// One metric's budget while its points are checked.
struct Budget<'a> {
    state: &'a mut MetricState,
    metric_series: &'a mut usize,
    tracked: &'a mut usize,
    max_tracked: usize,
    label_limits: &'a [LabelLimit],
    limit: usize,
    action: Action,
    now: Instant,
    overflowed: u64,
    dropped: u64,
}

impl Budget<'_> {
    /// Decides one point, applying label guards first (which may edit its attributes).
    fn verdict(&mut self, attributes: &mut Vec<KeyValue>) -> Verdict {
        let mut force_overflow = false;
        let label_values = &mut self.state.label_values;
        label_values.resize_with(self.label_limits.len(), Default::default);
        for (guard, values) in self.label_limits.iter().zip(label_values) {
            let Some(position) = attributes.iter().position(|kv| kv.key == guard.key) else {
                continue;
            };
            let value = crate::model::any_value_text(attributes[position].value.as_ref());
            if let Some(last) = values.get_mut(&value) {
                *last = self.now;
                continue;
            }
            if values.len() < guard.max_values {
                values.insert(value, self.now);
                continue;
            }
            match guard.action {
                LabelAction::DropLabel => {
                    attributes.remove(position);
                }
                LabelAction::Overflow => force_overflow = true,
            }
        }
        let hash = hash_attributes(attributes);
        if !force_overflow {
            if let Some(last) = self.state.seen.get_mut(&hash) {
                *last = self.now;
                return Verdict::Keep;
            }
            if self.state.seen.len() < self.limit && *self.tracked < self.max_tracked {
                self.state.seen.insert(hash, self.now);
                *self.tracked += 1;
                *self.metric_series += 1;
                return Verdict::Keep;
            }
        }
        match self.action {
            Action::Overflow => {
                self.overflowed += 1;
                Verdict::Overflow(hash)
            }
            Action::Drop => {
                self.dropped += 1;
                Verdict::Drop
            }
        }
    }

    /// Records the latest value of an overflowed cumulative series and returns the overflow
    /// series' new total; `None` when the series is new and `max_tracked_series` is reached.
    fn fold_cumulative(&mut self, hash: u64, value: f64) -> Option<f64> {
        let at_bound = *self.tracked >= self.max_tracked;
        let previous = match self.state.overflowed.entry(hash) {
            Entry::Occupied(mut known) => known.insert((value, self.now)).0,
            Entry::Vacant(_) if at_bound => return None,
            Entry::Vacant(new) => {
                new.insert((value, self.now));
                *self.tracked += 1;
                0.0
            }
        };
        self.state.overflow_total += value - previous;
        Some(self.state.overflow_total)
    }

    /// A point that could not be folded (its layout differs from the overflow point's).
    fn unfoldable(&mut self) {
        self.overflowed -= 1;
        self.dropped += 1;
    }

    fn apply(&mut self, data: Option<&mut Data>) {
        match data {
            Some(Data::Sum(sum)) => {
                let cumulative =
                    sum.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                self.limit_points(&mut sum.data_points, |budget, overflow, p, hash| {
                    budget.fold_sum(overflow, p, hash, cumulative)
                });
            }
            Some(Data::Gauge(gauge)) => {
                self.limit_points(&mut gauge.data_points, |_, overflow, p, _| {
                    fold_gauge(overflow, p)
                });
            }
            Some(Data::Histogram(histogram)) => {
                self.limit_points(&mut histogram.data_points, |budget, overflow, p, _| {
                    budget.fold_histogram(overflow, p)
                });
            }
            Some(Data::ExponentialHistogram(histogram)) => {
                self.limit_points(&mut histogram.data_points, |budget, overflow, p, _| {
                    budget.fold_exponential(overflow, p)
                });
            }
            Some(Data::Summary(summary)) => {
                self.limit_points(&mut summary.data_points, |_, overflow, p, _| {
                    fold_summary(overflow, p)
                });
            }
            None => {}
        }
    }

    /// Keeps the points within their limit in place, drops the others or folds them with
    /// `fold` into one overflow point, which goes last.
    fn limit_points<P: DataPoint>(
        &mut self,
        points: &mut Vec<P>,
        mut fold: impl FnMut(&mut Self, &mut Option<P>, &mut P, u64),
    ) {
        let mut overflow = None;
        points.retain_mut(|p| match self.verdict(p.attributes()) {
            Verdict::Keep => true,
            Verdict::Drop => false,
            Verdict::Overflow(hash) => {
                fold(self, &mut overflow, p, hash);
                false
            }
        });
        points.extend(overflow);
    }

    /// Sums add up; a cumulative overflow point carries the total of the latest values.
    fn fold_sum(
        &mut self,
        overflow: &mut Option<NumberDataPoint>,
        p: &mut NumberDataPoint,
        hash: u64,
        cumulative: bool,
    ) {
        let value = number(p);
        let total = if cumulative {
            let Some(total) = self.fold_cumulative(hash, value) else {
                self.unfoldable();
                return;
            };
            total
        } else {
            overflow.as_ref().map_or(0.0, number) + value
        };
        let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
        let o = overflow.get_or_insert_with(|| overflow_point(p));
        o.value = Some(number_data_point::Value::AsDouble(total));
        o.time_unix_nano = o.time_unix_nano.max(time);
        o.start_time_unix_nano = o.start_time_unix_nano.min(start);
    }

    fn fold_histogram(
        &mut self,
        overflow: &mut Option<HistogramDataPoint>,
        p: &mut HistogramDataPoint,
    ) {
        match overflow {
            Some(o) if o.explicit_bounds == p.explicit_bounds => merge_histogram(o, p),
            Some(_) => self.unfoldable(),
            None => *overflow = Some(overflow_point(p)),
        }
    }

    fn fold_exponential(
        &mut self,
        overflow: &mut Option<ExponentialHistogramDataPoint>,
        p: &mut ExponentialHistogramDataPoint,
    ) {
        match overflow {
            Some(o) => {
                if !merge_exponential(o, p) {
                    self.unfoldable();
                }
            }
            None => *overflow = Some(overflow_point(p)),
        }
    }
}

/// The data point types: what the limiter needs of each is its attributes.
trait DataPoint: Default {
    fn attributes(&mut self) -> &mut Vec<KeyValue>;
}

impl DataPoint for NumberDataPoint {
    fn attributes(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
}

impl DataPoint for HistogramDataPoint {
    fn attributes(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
}

impl DataPoint for ExponentialHistogramDataPoint {
    fn attributes(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
}

impl DataPoint for SummaryDataPoint {
    fn attributes(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
}

/// `p`, moved out, as the overflow point: its attributes become `otel.metric.overflow=true`.
fn overflow_point<P: DataPoint>(p: &mut P) -> P {
    let mut point = std::mem::take(p);
    *point.attributes() = overflow_attributes();
    point
}

/// Gauges keep the latest value.
fn fold_gauge(overflow: &mut Option<NumberDataPoint>, p: &mut NumberDataPoint) {
    if overflow
        .as_ref()
        .is_none_or(|o| o.time_unix_nano <= p.time_unix_nano)
    {
        *overflow = Some(overflow_point(p));
    }
}

/// Summaries add count and sum; quantiles cannot be merged and are left out.
fn fold_summary(overflow: &mut Option<SummaryDataPoint>, p: &mut SummaryDataPoint) {
    match overflow {
        Some(o) => {
            o.count += p.count;
            o.sum += p.sum;
            o.time_unix_nano = o.time_unix_nano.max(p.time_unix_nano);
        }
        None => {
            *overflow = Some(SummaryDataPoint {
                quantile_values: Vec::new(),
                ..overflow_point(p)
            })
        }
    }
}

fn merge_histogram(into: &mut HistogramDataPoint, p: &HistogramDataPoint) {
    into.count += p.count;
    into.sum = Some(into.sum.unwrap_or(0.0) + p.sum.unwrap_or(0.0));
    if into.bucket_counts.len() == p.bucket_counts.len() {
        into.bucket_counts
            .iter_mut()
            .zip(&p.bucket_counts)
            .for_each(|(a, b)| *a += b);
    }
    into.min = match (into.min, p.min) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    into.max = match (into.max, p.max) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    into.time_unix_nano = into.time_unix_nano.max(p.time_unix_nano);
}

/// Adds `p` into `into` when both have the same scale and bucket layout.
fn merge_exponential(
    into: &mut ExponentialHistogramDataPoint,
    p: &ExponentialHistogramDataPoint,
) -> bool {
    if into.scale != p.scale
        || !same_layout(&into.positive, &p.positive)
        || !same_layout(&into.negative, &p.negative)
    {
        return false;
    }
    into.count += p.count;
    into.zero_count += p.zero_count;
    into.sum = Some(into.sum.unwrap_or(0.0) + p.sum.unwrap_or(0.0));
    for (a, b) in [
        (&mut into.positive, &p.positive),
        (&mut into.negative, &p.negative),
    ] {
        if let (Some(a), Some(b)) = (a.as_mut(), b.as_ref()) {
            a.bucket_counts
                .iter_mut()
                .zip(&b.bucket_counts)
                .for_each(|(x, y)| *x += y);
        }
    }
    into.time_unix_nano = into.time_unix_nano.max(p.time_unix_nano);
    true
}

fn same_layout(a: &Option<Buckets>, b: &Option<Buckets>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.offset == b.offset && a.bucket_counts.len() == b.bucket_counts.len()
        }
        (None, None) => true,
        _ => false,
    }
}

/// One limiter for all of a pipeline's workers, behind one lock, so that its limits are
/// exact whichever worker a point came through. A batch is decoded before the lock is
/// taken; only the counting runs under it.
pub struct Shared(std::sync::Arc<parking_lot::Mutex<CardinalityLimiter>>);

impl Shared {
    /// The handles of `workers` workers on `limiter`.
    pub fn for_workers(limiter: CardinalityLimiter, workers: usize) -> Vec<Shared> {
        let shared = std::sync::Arc::new(parking_lot::Mutex::new(limiter));
        (0..workers.max(1))
            .map(|_| Shared(std::sync::Arc::clone(&shared)))
            .collect()
    }
}

impl Processor for Shared {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        batch.metrics_mut();
        self.0.lock().process(batch, out);
    }
}

impl Processor for CardinalityLimiter {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.sweep(now);
        }
        self.limit(&mut batch, now);
        out.push(batch);
    }
}

#[cfg(test)]
mod tests;
