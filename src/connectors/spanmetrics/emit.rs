//! The OTLP metrics a flush sends, as the collector builds them: per resource one scope
//! `spanmetricsconnector` with `calls` (a monotonic integer sum), `duration` (a
//! histogram in the configured unit) and `events` (a monotonic integer sum), each data
//! point carrying its series' attributes and the interval's exemplars.
//!
//! Counts are sent rounded to integers; a histogram's count is the sum of its rounded
//! bucket counts, so that the point stays consistent. As in the collector, a new
//! cumulative sum series is sent as 0 at its first flush (so that a backend that drops
//! the first sample of a series, like Prometheus computing `increase`, sees the step).

use super::config::Temporality;
use super::histogram::{round, Histogram};
use super::plan::{key_value, HistogramPlan, Plan, TableKind};
use super::store::{Exemplar, Series};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
    AggregationTemporality, Exemplar as ExemplarPoint, ExponentialHistogram,
    ExponentialHistogramDataPoint, Histogram as HistogramData, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The scope the metrics are sent under.
pub const SCOPE: &str = "spanmetricsconnector";
/// The attribute of overflow series (the OpenTelemetry SDKs' cardinality limit).
pub const OVERFLOW: &str = "otel.metric.overflow";

pub fn overflow_attribute() -> KeyValue {
    key_value(
        OVERFLOW,
        AnyValue {
            value: Some(any_value::Value::BoolValue(true)),
        },
    )
}

/// One resource's data points, by metric.
#[derive(Default)]
pub struct Points {
    calls: Vec<NumberDataPoint>,
    explicit: Vec<HistogramDataPoint>,
    exponential: Vec<ExponentialHistogramDataPoint>,
    events: Vec<NumberDataPoint>,
}

impl Points {
    /// Adds the data points of `series`, of a table feeding `kind`.
    pub fn add(&mut self, series: &Series, kind: TableKind, plan: &Plan, now: u64) {
        if kind.calls() {
            self.calls.push(sum_point(series, plan, now));
        }
        if kind == TableKind::Events {
            self.events.push(sum_point(series, plan, now));
        }
        if !kind.duration() {
            return;
        }
        match (&series.histogram, &plan.histogram) {
            (Some(Histogram::Explicit(h)), HistogramPlan::Explicit { bounds, .. }) => {
                let (bucket_counts, count) = h.rounded();
                self.explicit.push(HistogramDataPoint {
                    attributes: series.attributes.clone(),
                    start_time_unix_nano: series.start,
                    time_unix_nano: now,
                    count,
                    sum: Some(h.sum),
                    bucket_counts,
                    explicit_bounds: bounds.clone(),
                    exemplars: exemplars(series, now),
                    ..Default::default()
                });
            }
            (Some(Histogram::Exponential(h)), _) => {
                let (zero_count, positive, count) = h.rounded();
                let seen = count > 0;
                self.exponential.push(ExponentialHistogramDataPoint {
                    attributes: series.attributes.clone(),
                    start_time_unix_nano: series.start,
                    time_unix_nano: now,
                    count,
                    sum: Some(h.sum),
                    scale: h.scale,
                    zero_count,
                    positive: Some(positive),
                    negative: Some(Buckets::default()),
                    exemplars: exemplars(series, now),
                    min: seen.then_some(h.min),
                    max: seen.then_some(h.max),
                    ..Default::default()
                });
            }
            _ => {}
        }
    }

    /// The resource's metrics, `None` without data points.
    pub fn into_resource_metrics(
        self,
        attributes: &[KeyValue],
        plan: &Plan,
    ) -> Option<ResourceMetrics> {
        let temporality = match plan.temporality {
            Temporality::Cumulative => AggregationTemporality::Cumulative,
            Temporality::Delta => AggregationTemporality::Delta,
        } as i32;
        let mut metrics = Vec::new();
        let sum = |name: &str, data_points| Metric {
            name: name.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: temporality,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        if !self.calls.is_empty() {
            metrics.push(sum(&plan.calls_name, self.calls));
        }
        let duration = |data| Metric {
            name: plan.duration_name.clone(),
            unit: plan.unit.as_str().into(),
            data: Some(data),
            ..Default::default()
        };
        if !self.explicit.is_empty() {
            metrics.push(duration(metric::Data::Histogram(HistogramData {
                data_points: self.explicit,
                aggregation_temporality: temporality,
            })));
        }
        if !self.exponential.is_empty() {
            metrics.push(duration(metric::Data::ExponentialHistogram(
                ExponentialHistogram {
                    data_points: self.exponential,
                    aggregation_temporality: temporality,
                },
            )));
        }
        if !self.events.is_empty() {
            metrics.push(sum(&plan.events_name, self.events));
        }
        if metrics.is_empty() {
            return None;
        }
        Some(ResourceMetrics {
            resource: Some(Resource {
                attributes: attributes.to_vec(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SCOPE.into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        })
    }
}

/// A `calls` or `events` data point: the rounded count, 0 for a new cumulative series.
fn sum_point(series: &Series, plan: &Plan, now: u64) -> NumberDataPoint {
    let first = series.first && plan.temporality == Temporality::Cumulative;
    let value = if first { 0 } else { round(series.calls) };
    NumberDataPoint {
        attributes: series.attributes.clone(),
        start_time_unix_nano: series.start,
        time_unix_nano: now,
        exemplars: exemplars(series, now),
        value: Some(number_data_point::Value::AsInt(value as i64)),
        ..Default::default()
    }
}

fn exemplars(series: &Series, now: u64) -> Vec<ExemplarPoint> {
    series.exemplars.iter().map(|e| exemplar(e, now)).collect()
}

fn exemplar(exemplar: &Exemplar, now: u64) -> ExemplarPoint {
    ExemplarPoint {
        time_unix_nano: now,
        trace_id: exemplar.ids.trace_id.to_vec(),
        span_id: exemplar
            .ids
            .span_id
            .map(|id| id.to_vec())
            .unwrap_or_default(),
        value: Some(exemplar::Value::AsDouble(exemplar.value)),
        ..Default::default()
    }
}
