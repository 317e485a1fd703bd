//! OTLP metrics → Prometheus time series, per the OpenTelemetry specification's
//! "Prometheus and OpenMetrics compatibility" section and the collector's
//! `add_metric_suffixes` behaviour.
//!
//! * Metric names: characters outside `[a-zA-Z0-9_:]` become `_`, runs of `_` collapse, a
//!   leading digit gets a `_`; the unit is appended (`By` → `bytes`, `s` → `seconds`,
//!   `1` on gauges → `ratio`, `{...}` annotations dropped, `A/B` → `A_per_B`) unless the
//!   name already ends with it; monotonic cumulative sums get `_total`.
//! * Label names: invalid characters become `_`; a leading digit gets `key_`, a leading
//!   `__` (reserved) gets `key`; attributes that collide after sanitising are joined
//!   with `;`.
//! * `job` = `service.namespace/service.name` (or `service.name`), `instance` =
//!   `service.instance.id`; every resource also produces `target_info` carrying its other
//!   attributes, or, with `resource_to_telemetry_conversion`, they go on every series.
//!   Scope name and version become `otel_scope_name` and `otel_scope_version`.
//! * Gauge → gauge; monotonic cumulative sum → counter; other sums → gauge; histogram →
//!   `_bucket{le}` (cumulative, with `+Inf`), `_sum`, `_count`; exponential histogram →
//!   a native histogram (scale above 8 merged down to 8); summary → `{quantile}`, `_sum`,
//!   `_count`. A point flagged "no recorded value" becomes Prometheus' stale marker.
//! * Delta temporality: sums and histograms are made cumulative by keeping a running
//!   total per series, at most `max_delta_series` of them; points of further series are
//!   dropped and counted (with `delta_temporality: drop`, every delta point is).

use super::prompb::{self, BucketSpan, Label, TimeSeries};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// The bit pattern Prometheus uses as its staleness marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// What to do with delta-temporality sums and histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaMode {
    /// Keep a running total per series and send it as cumulative.
    #[default]
    Convert,
    /// Drop delta points (counted).
    Drop,
}

/// Translation settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub namespace: String,
    pub add_metric_suffixes: bool,
    pub resource_to_telemetry_conversion: bool,
    pub target_info: bool,
    pub external_labels: BTreeMap<String, String>,
    pub delta: DeltaMode,
    pub max_delta_series: usize,
}

/// Sanitises a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn metric_name_chars(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' {
            c
        } else {
            '_'
        };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Sanitises a label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
pub fn label_name(name: &str) -> String {
    let mut out = crate::exporters::underscore_invalid(name);
    if out.is_empty() {
        return "key_".into();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// The name suffix for a UCUM unit (`None` when the unit adds nothing).
pub fn unit_suffix(unit: &str, is_gauge: bool) -> Option<String> {
    let mut stripped = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            c if depth == 0 => stripped.push(c),
            _ => {}
        }
    }
    let unit = stripped.trim();
    if unit.is_empty() {
        return None;
    }
    if unit == "1" {
        return is_gauge.then(|| "ratio".to_string());
    }
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main, Some(per)),
        None => (unit, None),
    };
    let word = |u: &str, table: fn(&str) -> Option<&'static str>| {
        table(u)
            .map(str::to_string)
            .unwrap_or_else(|| metric_name_chars(u).trim_matches('_').to_string())
    };
    let mut out = if main.is_empty() || main == "1" {
        String::new()
    } else {
        word(main, unit_word)
    };
    if let Some(per) = per.filter(|p| !p.is_empty()) {
        out = format!(
            "{}{}per_{}",
            out,
            if out.is_empty() { "" } else { "_" },
            word(per, per_unit_word)
        );
    }
    (!out.is_empty()).then_some(out)
}

/// The Prometheus name of a metric of this kind.
pub fn metric_name(metric: &Metric, options: &Options, is_gauge: bool, is_counter: bool) -> String {
    let mut name = metric_name_chars(&metric.name);
    if options.add_metric_suffixes {
        // as the collector's translator: `_total` is taken off, the unit is added unless
        // the name already holds it as whole words, and `_total` goes back on the end
        if is_counter {
            name = name.strip_suffix("_total").unwrap_or(&name).to_string();
        }
        if let Some(suffix) = unit_suffix(&metric.unit, is_gauge) {
            let padded = format!("_{name}_");
            if !padded.contains(&format!("_{suffix}_")) {
                name = format!("{name}_{suffix}");
            }
        }
        if is_counter {
            name.push_str("_total");
        }
    }
    if !options.namespace.is_empty() {
        name = format!("{}_{name}", metric_name_chars(&options.namespace));
    }
    name
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// Adds attributes as labels, joining values of keys that collide after sanitising.
fn add_attributes(labels: &mut BTreeMap<String, String>, attributes: &[KeyValue]) {
    for kv in attributes {
        let name = label_name(&kv.key);
        let value = crate::model::any_value_text(kv.value.as_ref());
        labels
            .entry(name)
            .and_modify(|existing| *existing = format!("{existing};{value}"))
            .or_insert(value);
    }
}

/// Per-batch output: the series and the points that could not be translated.
#[derive(Default)]
pub struct Output {
    pub series: BTreeMap<Vec<Label>, TimeSeries>,
    /// Points dropped, by reason.
    pub dropped: HashMap<&'static str, u64>,
}

impl Output {
    fn push(
        &mut self,
        labels: BTreeMap<String, String>,
        sample: Option<prompb::Sample>,
        histogram: Option<prompb::Histogram>,
    ) -> &mut TimeSeries {
        let key: Vec<Label> = labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect();
        let series = self
            .series
            .entry(key.clone())
            .or_insert_with(|| TimeSeries {
                labels: key,
                ..Default::default()
            });
        series.samples.extend(sample);
        series.histograms.extend(histogram);
        series
    }

    fn drop_point(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Series with their samples in timestamp order.
    pub fn into_series(self) -> Vec<TimeSeries> {
        self.series
            .into_values()
            .map(|mut s| {
                s.samples.sort_by_key(|x| x.timestamp);
                s.histograms.sort_by_key(|h| h.timestamp);
                s
            })
            .collect()
    }
}

/// Running totals that make delta points cumulative.
#[derive(Default)]
pub struct DeltaState {
    sums: HashMap<Vec<Label>, f64>,
    buckets: HashMap<Vec<Label>, (u64, f64, Vec<u64>)>,
}

impl DeltaState {
    pub fn len(&self) -> usize {
        self.sums.len() + self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn sample(value: f64, time: u64, flags: u32) -> prompb::Sample {
    let value = if flags & 1 == 1 {
        f64::from_bits(STALE_NAN)
    } else {
        value
    };
    prompb::Sample {
        value,
        timestamp: (time / 1_000_000) as i64,
    }
}

fn number(point: &NumberDataPoint) -> f64 {
    match point.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// Translates resource metrics, updating `delta` for delta-temporality series.
pub fn translate(
    resources: &[ResourceMetrics],
    options: &Options,
    delta: &mut DeltaState,
) -> Output {
    let mut out = Output::default();
    for rm in resources {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let mut base = BTreeMap::new();
        if options.resource_to_telemetry_conversion {
            add_attributes(&mut base, resource);
        }
        let service = find(resource, "service.name").map(|v| crate::model::any_value_text(Some(v)));
        let job = match (
            find(resource, "service.namespace").map(|v| crate::model::any_value_text(Some(v))),
            &service,
        ) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, Some(name)) => Some(name.clone()),
            _ => None,
        };
        if let Some(job) = &job {
            base.insert("job".into(), job.clone());
        }
        if let Some(instance) = find(resource, "service.instance.id") {
            base.insert(
                "instance".into(),
                crate::model::any_value_text(Some(instance)),
            );
        }
        for (name, value) in &options.external_labels {
            base.entry(label_name(name))
                .or_insert_with(|| value.clone());
        }
        let mut latest = 0u64;
        for sm in &rm.scope_metrics {
            let mut scoped = base.clone();
            if let Some(scope) = &sm.scope {
                if !scope.name.is_empty() {
                    scoped.insert("otel_scope_name".into(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    scoped.insert("otel_scope_version".into(), scope.version.clone());
                }
            }
            for metric in &sm.metrics {
                latest = latest.max(translate_metric(metric, &scoped, options, delta, &mut out));
            }
        }
        if options.target_info
            && (job.is_some() || !resource.is_empty())
            && !options.resource_to_telemetry_conversion
        {
            let mut labels = base.clone();
            let identifying = ["service.name", "service.namespace", "service.instance.id"];
            let rest: Vec<KeyValue> = resource
                .iter()
                .filter(|kv| !identifying.contains(&kv.key.as_str()))
                .cloned()
                .collect();
            add_attributes(&mut labels, &rest);
            labels.insert(
                "__name__".into(),
                metric_name_chars(&format!(
                    "{}target_info",
                    if options.namespace.is_empty() {
                        String::new()
                    } else {
                        format!("{}_", options.namespace)
                    }
                )),
            );
            out.push(labels, Some(sample(1.0, latest, 0)), None);
        }
    }
    out
}

fn with_name(
    labels: &BTreeMap<String, String>,
    attributes: &[KeyValue],
    name: &str,
) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    add_attributes(&mut out, attributes);
    out.insert("__name__".into(), name.to_string());
    out
}

/// Translates one metric; returns the latest point time seen.
fn translate_metric(
    metric: &Metric,
    base: &BTreeMap<String, String>,
    options: &Options,
    delta: &mut DeltaState,
    out: &mut Output,
) -> u64 {
    let mut latest = 0;
    match &metric.data {
        Some(Data::Gauge(g)) => {
            let name = metric_name(metric, options, true, false);
            for p in &g.data_points {
                latest = latest.max(p.time_unix_nano);
                let series = out.push(
                    with_name(base, &p.attributes, &name),
                    Some(sample(number(p), p.time_unix_nano, p.flags)),
                    None,
                );
                series.exemplars.extend(p.exemplars.iter().map(exemplar));
            }
        }
        Some(Data::Sum(s)) => {
            let is_delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
            let counter = s.is_monotonic;
            let name = metric_name(metric, options, !counter, counter);
            for p in &s.data_points {
                latest = latest.max(p.time_unix_nano);
                let labels = with_name(base, &p.attributes, &name);
                let mut value = number(p);
                if is_delta {
                    match cumulative_sum(&labels, value, options, delta) {
                        Ok(total) => value = total,
                        Err(reason) => {
                            out.drop_point(reason);
                            continue;
                        }
                    }
                }
                let series = out.push(labels, Some(sample(value, p.time_unix_nano, p.flags)), None);
                series.exemplars.extend(p.exemplars.iter().map(exemplar));
            }
        }
        Some(Data::Histogram(h)) => {
            let is_delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
            let name = metric_name(metric, options, false, false);
            for p in &h.data_points {
                latest = latest.max(p.time_unix_nano);
                histogram_series(&name, base, p, is_delta, options, delta, out);
            }
        }
        Some(Data::ExponentialHistogram(h)) => {
            let name = metric_name(metric, options, false, false);
            for p in &h.data_points {
                latest = latest.max(p.time_unix_nano);
                if h.aggregation_temporality == AggregationTemporality::Delta as i32 {
                    out.drop_point("delta_exponential_histogram");
                    continue;
                }
                out.push(
                    with_name(base, &p.attributes, &name),
                    None,
                    Some(native_histogram(p)),
                );
            }
        }
        Some(Data::Summary(s)) => {
            let name = metric_name(metric, options, false, false);
            for p in &s.data_points {
                latest = latest.max(p.time_unix_nano);
                for q in &p.quantile_values {
                    let mut labels = with_name(base, &p.attributes, &name);
                    labels.insert("quantile".into(), q.quantile.to_string());
                    out.push(
                        labels,
                        Some(sample(q.value, p.time_unix_nano, p.flags)),
                        None,
                    );
                }
                out.push(
                    with_name(base, &p.attributes, &format!("{name}_sum")),
                    Some(sample(p.sum, p.time_unix_nano, p.flags)),
                    None,
                );
                out.push(
                    with_name(base, &p.attributes, &format!("{name}_count")),
                    Some(sample(p.count as f64, p.time_unix_nano, p.flags)),
                    None,
                );
            }
        }
        None => {}
    }
    latest
}

/// An OTLP exemplar as a Prometheus one: its filtered attributes plus `trace_id` and
/// `span_id` as labels.
fn exemplar(e: &opentelemetry_proto::tonic::metrics::v1::Exemplar) -> prompb::Exemplar {
    use opentelemetry_proto::tonic::metrics::v1::exemplar::Value as ExemplarValue;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    add_attributes(&mut labels, &e.filtered_attributes);
    if !e.trace_id.is_empty() {
        labels.insert("trace_id".into(), hex(&e.trace_id));
    }
    if !e.span_id.is_empty() {
        labels.insert("span_id".into(), hex(&e.span_id));
    }
    let value = match e.value {
        Some(ExemplarValue::AsDouble(d)) => d,
        Some(ExemplarValue::AsInt(i)) => i as f64,
        None => 0.0,
    };
    prompb::Exemplar {
        labels: key(&labels),
        value,
        timestamp: (e.time_unix_nano / 1_000_000) as i64,
    }
}

fn key(labels: &BTreeMap<String, String>) -> Vec<Label> {
    labels
        .iter()
        .map(|(name, value)| Label {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn cumulative_sum(
    labels: &BTreeMap<String, String>,
    value: f64,
    options: &Options,
    delta: &mut DeltaState,
) -> Result<f64, &'static str> {
    if options.delta == DeltaMode::Drop {
        return Err("delta_temporality");
    }
    let key = key(labels);
    if !delta.sums.contains_key(&key) && delta.len() >= options.max_delta_series {
        return Err("delta_state_full");
    }
    let total = delta.sums.entry(key).or_default();
    *total += value;
    Ok(*total)
}

fn histogram_series(
    name: &str,
    base: &BTreeMap<String, String>,
    p: &HistogramDataPoint,
    is_delta: bool,
    options: &Options,
    delta: &mut DeltaState,
    out: &mut Output,
) {
    let (mut count, mut sum, mut buckets) =
        (p.count, p.sum.unwrap_or(0.0), p.bucket_counts.clone());
    if is_delta {
        if options.delta == DeltaMode::Drop {
            return out.drop_point("delta_temporality");
        }
        let key = key(&with_name(base, &p.attributes, name));
        if !delta.buckets.contains_key(&key) && delta.len() >= options.max_delta_series {
            return out.drop_point("delta_state_full");
        }
        let state = delta
            .buckets
            .entry(key)
            .or_insert_with(|| (0, 0.0, vec![0; buckets.len()]));
        if state.2.len() != buckets.len() {
            *state = (0, 0.0, vec![0; buckets.len()]);
        }
        state.0 += count;
        state.1 += sum;
        state
            .2
            .iter_mut()
            .zip(&buckets)
            .for_each(|(total, b)| *total += b);
        (count, sum, buckets) = (state.0, state.1, state.2.clone());
    }
    let mut cumulative = 0;
    for (i, bucket) in buckets.iter().enumerate() {
        cumulative += bucket;
        let le = p
            .explicit_bounds
            .get(i)
            .map_or("+Inf".to_string(), |b| b.to_string());
        let mut labels = with_name(base, &p.attributes, &format!("{name}_bucket"));
        labels.insert("le".into(), le);
        let series = out.push(
            labels,
            Some(sample(cumulative as f64, p.time_unix_nano, p.flags)),
            None,
        );
        // an exemplar goes on the bucket its value falls in: (bound i-1, bound i]
        let lower = if i == 0 {
            f64::NEG_INFINITY
        } else {
            p.explicit_bounds[i - 1]
        };
        let upper = p.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
        series.exemplars.extend(
            p.exemplars
                .iter()
                .map(exemplar)
                .filter(|e| e.value > lower && e.value <= upper),
        );
    }
    if buckets.len() <= p.explicit_bounds.len() {
        let mut labels = with_name(base, &p.attributes, &format!("{name}_bucket"));
        labels.insert("le".into(), "+Inf".into());
        out.push(
            labels,
            Some(sample(count as f64, p.time_unix_nano, p.flags)),
            None,
        );
    }
    if p.sum.is_some() {
        out.push(
            with_name(base, &p.attributes, &format!("{name}_sum")),
            Some(sample(sum, p.time_unix_nano, p.flags)),
            None,
        );
    }
    out.push(
        with_name(base, &p.attributes, &format!("{name}_count")),
        Some(sample(count as f64, p.time_unix_nano, p.flags)),
        None,
    );
}

/// Merges buckets so the scale is at most 8 (the finest Prometheus accepts).
fn downscale(buckets: &Buckets, scale: i32) -> (i32, Vec<u64>) {
    if scale <= 8 {
        return (buckets.offset, buckets.bucket_counts.clone());
    }
    let shift = scale - 8;
    let mut merged: BTreeMap<i32, u64> = BTreeMap::new();
    for (i, count) in buckets.bucket_counts.iter().enumerate() {
        *merged
            .entry((buckets.offset + i as i32) >> shift)
            .or_default() += count;
    }
    let first = merged.keys().next().copied().unwrap_or(0);
    let last = merged.keys().last().copied().unwrap_or(0);
    (
        (first),
        (first..=last)
            .map(|i| merged.get(&i).copied().unwrap_or(0))
            .collect(),
    )
}

/// OTel bucket `i` covers (base^i, base^(i+1)]; Prometheus bucket `i` covers
/// (base^(i-1), base^i], so indexes shift by one. Zero runs split spans.
fn spans_and_deltas(offset: i32, counts: &[u64]) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let mut previous = 0i64;
    let mut next_index = None::<i32>;
    for (i, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let index = offset + i as i32 + 1;
        match next_index {
            Some(expected) if expected == index => {
                spans.last_mut().expect("a span is open").length += 1
            }
            Some(expected) => spans.push(BucketSpan {
                offset: index - expected,
                length: 1,
            }),
            None => spans.push(BucketSpan {
                offset: index,
                length: 1,
            }),
        }
        next_index = Some(index + 1);
        deltas.push(count as i64 - previous);
        previous = count as i64;
    }
    (spans, deltas)
}

fn native_histogram(p: &ExponentialHistogramDataPoint) -> prompb::Histogram {
    let empty = Buckets::default();
    let (positive_offset, positive) = downscale(p.positive.as_ref().unwrap_or(&empty), p.scale);
    let (negative_offset, negative) = downscale(p.negative.as_ref().unwrap_or(&empty), p.scale);
    let (positive_spans, positive_deltas) = spans_and_deltas(positive_offset, &positive);
    let (negative_spans, negative_deltas) = spans_and_deltas(negative_offset, &negative);
    prompb::Histogram {
        count_int: p.count,
        sum: p.sum.unwrap_or(0.0),
        schema: p.scale.min(8),
        zero_threshold: p.zero_threshold,
        zero_count_int: p.zero_count,
        negative_spans,
        negative_deltas,
        positive_spans,
        positive_deltas,
        timestamp: (p.time_unix_nano / 1_000_000) as i64,
    }
}

#[cfg(test)]
#[path = "translate/tests.rs"]
mod tests;
