//! The `filter` processor, the collector's current form: items matching any of the OTTL
//! conditions of their context are dropped — `traces.span` / `traces.spanevent`,
//! `metrics.metric` / `metrics.datapoint`, `logs.log_record` — and counted as removed
//! under `reason="filtered"`; a scope, resource or metric left with nothing is removed
//! with it. Conditions are parsed and type-checked at load ([`crate::ottl`]).
//!
//! `error_mode` (`propagate`, `ignore`, `silent`) is accepted as in the collector. sieve's
//! conditions cannot fail at run time — paths into absent or mistyped values read `nil`
//! — so the modes behave alike.

use super::Processor;
use crate::config::FieldError;
use crate::model::{Batch, Signal};
use crate::ottl::{Condition, Context, Field, Item, Val};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric, NumberDataPoint};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Event, Span};
use serde::Deserialize;
use std::borrow::Cow;

/// What a condition that fails to evaluate does (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ErrorMode {
    #[default]
    Propagate,
    Ignore,
    Silent,
}

/// `traces:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConditions {
    /// Spans matching any of these are dropped.
    pub span: Vec<String>,
    /// Span events matching any of these are dropped.
    pub spanevent: Vec<String>,
}

/// `metrics:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConditions {
    /// Metrics matching any of these are dropped whole.
    pub metric: Vec<String>,
    /// Data points matching any of these are dropped.
    pub datapoint: Vec<String>,
}

/// `logs:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConditions {
    /// Log records matching any of these are dropped.
    pub log_record: Vec<String>,
}

/// `filter:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// `propagate` (default), `ignore` or `silent`.
    pub error_mode: ErrorMode,
    /// Conditions on spans (`span`) and span events (`spanevent`).
    pub traces: TracesConditions,
    /// Conditions on metrics (`metric`) and data points (`datapoint`).
    pub metrics: MetricsConditions,
    /// Conditions on log records (`log_record`).
    pub logs: LogsConditions,
}

fn compile(key: &str, list: &[String], context: Context) -> Result<Vec<Condition>, FieldError> {
    list.iter()
        .enumerate()
        .map(|(at, text)| {
            Condition::new(text, context)
                .map_err(|e| FieldError::new(format!("{key}[{at}]"), format!("`{text}` {e}")))
        })
        .collect()
}

impl FilterConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        FilterProcessor::new(self).map(|_| ())
    }
}

/// The compiled conditions.
pub struct FilterProcessor {
    spans: Vec<Condition>,
    span_events: Vec<Condition>,
    metrics: Vec<Condition>,
    data_points: Vec<Condition>,
    log_records: Vec<Condition>,
}

impl FilterProcessor {
    pub fn new(config: &FilterConfig) -> Result<Self, FieldError> {
        Ok(FilterProcessor {
            spans: compile("traces.span", &config.traces.span, Context::Span)?,
            span_events: compile(
                "traces.spanevent",
                &config.traces.spanevent,
                Context::SpanEvent,
            )?,
            metrics: compile("metrics.metric", &config.metrics.metric, Context::Metric)?,
            data_points: compile(
                "metrics.datapoint",
                &config.metrics.datapoint,
                Context::DataPoint,
            )?,
            log_records: compile("logs.log_record", &config.logs.log_record, Context::Log)?,
        })
    }

    fn has_conditions(&self, signal: Signal) -> bool {
        match signal {
            Signal::Traces => !self.spans.is_empty() || !self.span_events.is_empty(),
            Signal::Metrics => !self.metrics.is_empty() || !self.data_points.is_empty(),
            Signal::Logs => !self.log_records.is_empty(),
        }
    }

    fn traces(&self, batch: &mut Batch) {
        for rs in batch.traces_mut() {
            let resource = rs.resource.as_ref();
            for ss in &mut rs.scope_spans {
                let scope = ss.scope.as_ref();
                ss.spans.retain_mut(|span| {
                    let owner = Owner { resource, scope };
                    if any(&self.spans, &SpanItem { owner, span }) {
                        return false;
                    }
                    let (name, events) = (span.name.as_str(), &mut span.events);
                    events.retain(|event| {
                        !any(
                            &self.span_events,
                            &EventItem {
                                owner,
                                span: name,
                                event,
                            },
                        )
                    });
                    true
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        batch.traces_mut().retain(|rs| !rs.scope_spans.is_empty());
    }

    fn logs(&self, batch: &mut Batch) {
        for rl in batch.logs_mut() {
            let resource = rl.resource.as_ref();
            for sl in &mut rl.scope_logs {
                let owner = Owner {
                    resource,
                    scope: sl.scope.as_ref(),
                };
                sl.log_records
                    .retain(|record| !any(&self.log_records, &LogItem { owner, record }));
            }
            rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
        }
        batch.logs_mut().retain(|rl| !rl.scope_logs.is_empty());
    }

    fn metrics(&self, batch: &mut Batch) {
        for rm in batch.metrics_mut() {
            let resource = rm.resource.as_ref();
            for sm in &mut rm.scope_metrics {
                let owner = Owner {
                    resource,
                    scope: sm.scope.as_ref(),
                };
                sm.metrics.retain_mut(|metric| {
                    if any(
                        &self.metrics,
                        &MetricItem {
                            owner,
                            metric,
                            point: None,
                        },
                    ) {
                        return false;
                    }
                    if self.data_points.is_empty() {
                        return true;
                    }
                    retain_points(metric, |metric, point| {
                        !any(
                            &self.data_points,
                            &MetricItem {
                                owner,
                                metric,
                                point: Some(point),
                            },
                        )
                    })
                });
            }
            rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
        }
        batch
            .metrics_mut()
            .retain(|rm| !rm.scope_metrics.is_empty());
    }
}

fn any(conditions: &[Condition], item: &dyn Item) -> bool {
    conditions.iter().any(|c| c.matches(item))
}

/// A data point as conditions read it.
#[derive(Clone, Copy)]
pub struct Point<'a> {
    attributes: &'a [KeyValue],
    time: u64,
    value_int: Option<i64>,
    value_double: Option<f64>,
}

/// Keeps the data points `keep` says to keep; says whether any is left.
fn retain_points(metric: &mut Metric, keep: impl Fn(&Metric, Point) -> bool) -> bool {
    let Some(mut data) = metric.data.take() else {
        return true;
    };
    // the metric without its points, for conditions on its name, type and unit
    let shell = Metric {
        name: metric.name.clone(),
        description: metric.description.clone(),
        unit: metric.unit.clone(),
        data: Some(type_only(&data)),
        metadata: Vec::new(),
    };
    let left = match &mut data {
        Data::Gauge(g) => retain(&mut g.data_points, |p| keep(&shell, number_point(p))),
        Data::Sum(s) => retain(&mut s.data_points, |p| keep(&shell, number_point(p))),
        Data::Histogram(h) => retain(&mut h.data_points, |p| {
            keep(&shell, plain_point(&p.attributes, p.time_unix_nano))
        }),
        Data::ExponentialHistogram(h) => retain(&mut h.data_points, |p| {
            keep(&shell, plain_point(&p.attributes, p.time_unix_nano))
        }),
        Data::Summary(s) => retain(&mut s.data_points, |p| {
            keep(&shell, plain_point(&p.attributes, p.time_unix_nano))
        }),
    };
    metric.data = Some(data);
    left > 0
}

/// Keeps what `keep` says; the number left.
fn retain<T>(points: &mut Vec<T>, keep: impl FnMut(&T) -> bool) -> usize {
    points.retain(keep);
    points.len()
}

/// A data point without a single value (histograms, summaries).
fn plain_point(attributes: &[KeyValue], time: u64) -> Point<'_> {
    Point {
        attributes,
        time,
        value_int: None,
        value_double: None,
    }
}

fn number_point(point: &NumberDataPoint) -> Point<'_> {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
    let (value_int, value_double) = match point.value {
        Some(Number::AsInt(i)) => (Some(i), None),
        Some(Number::AsDouble(d)) => (None, Some(d)),
        None => (None, None),
    };
    Point {
        attributes: &point.attributes,
        time: point.time_unix_nano,
        value_int,
        value_double,
    }
}

/// The data's kind with no points (what `metric.type` reads).
fn type_only(data: &Data) -> Data {
    match data {
        Data::Gauge(_) => Data::Gauge(Default::default()),
        Data::Sum(_) => Data::Sum(Default::default()),
        Data::Histogram(_) => Data::Histogram(Default::default()),
        Data::ExponentialHistogram(_) => Data::ExponentialHistogram(Default::default()),
        Data::Summary(_) => Data::Summary(Default::default()),
    }
}

/// The resource and scope an item belongs to.
#[derive(Clone, Copy)]
struct Owner<'a> {
    resource: Option<&'a Resource>,
    scope: Option<&'a InstrumentationScope>,
}

impl<'a> Owner<'a> {
    fn field(&self, field: &Field) -> Val<'a> {
        match field {
            Field::ResourceAttributes(keys) => {
                Val::lookup(self.resource.map_or(&[], |r| &r.attributes), keys)
            }
            Field::ScopeName => text(self.scope.map_or("", |s| &s.name)),
            Field::ScopeVersion => text(self.scope.map_or("", |s| &s.version)),
            Field::ScopeAttributes(keys) => {
                Val::lookup(self.scope.map_or(&[], |s| &s.attributes), keys)
            }
            _ => Val::Nil,
        }
    }
}

fn text(s: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(s))
}

fn bytes(b: &[u8]) -> Val<'_> {
    Val::Bytes(Cow::Borrowed(b))
}

fn hex(b: &[u8]) -> Val<'static> {
    Val::Str(Cow::Owned(b.iter().map(|x| format!("{x:02x}")).collect()))
}

fn int(n: u64) -> Val<'static> {
    Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

struct SpanItem<'a> {
    owner: Owner<'a>,
    span: &'a Span,
}

impl Item for SpanItem<'_> {
    fn field(&self, field: &Field) -> Val<'_> {
        let span = self.span;
        match field {
            Field::Name => text(&span.name),
            Field::Kind => Val::Int(i64::from(span.kind)),
            Field::StatusCode => Val::Int(span.status.as_ref().map_or(0, |s| i64::from(s.code))),
            Field::StatusMessage => text(span.status.as_ref().map_or("", |s| &s.message)),
            Field::TraceId => bytes(&span.trace_id),
            Field::SpanId => bytes(&span.span_id),
            Field::ParentSpanId => bytes(&span.parent_span_id),
            Field::IdString(id) => match id.as_ref() {
                Field::TraceId => hex(&span.trace_id),
                Field::SpanId => hex(&span.span_id),
                _ => hex(&span.parent_span_id),
            },
            Field::TraceState => text(&span.trace_state),
            Field::StartTime => int(span.start_time_unix_nano),
            Field::EndTime => int(span.end_time_unix_nano),
            Field::Attributes(keys) => Val::lookup(&span.attributes, keys),
            other => self.owner.field(other),
        }
    }
}

struct EventItem<'a> {
    owner: Owner<'a>,
    span: &'a str,
    event: &'a Event,
}

impl Item for EventItem<'_> {
    fn field(&self, field: &Field) -> Val<'_> {
        match field {
            Field::Name => text(&self.event.name),
            Field::Time => int(self.event.time_unix_nano),
            Field::SpanName => text(self.span),
            Field::Attributes(keys) => Val::lookup(&self.event.attributes, keys),
            other => self.owner.field(other),
        }
    }
}

struct LogItem<'a> {
    owner: Owner<'a>,
    record: &'a LogRecord,
}

impl Item for LogItem<'_> {
    fn field(&self, field: &Field) -> Val<'_> {
        let record = self.record;
        match field {
            Field::Body(keys) => match Val::of(record.body.as_ref()) {
                Val::Map(map) if !keys.is_empty() => Val::lookup(map, keys),
                value if keys.is_empty() => value,
                _ => Val::Nil,
            },
            Field::SeverityNumber => Val::Int(i64::from(record.severity_number)),
            Field::SeverityText => text(&record.severity_text),
            Field::Flags => Val::Int(i64::from(record.flags)),
            Field::Time => int(record.time_unix_nano),
            Field::ObservedTime => int(record.observed_time_unix_nano),
            Field::TraceId => bytes(&record.trace_id),
            Field::SpanId => bytes(&record.span_id),
            Field::IdString(id) => match id.as_ref() {
                Field::TraceId => hex(&record.trace_id),
                _ => hex(&record.span_id),
            },
            Field::Attributes(keys) => Val::lookup(&record.attributes, keys),
            other => self.owner.field(other),
        }
    }
}

struct MetricItem<'a> {
    owner: Owner<'a>,
    metric: &'a Metric,
    point: Option<Point<'a>>,
}

impl Item for MetricItem<'_> {
    fn field(&self, field: &Field) -> Val<'_> {
        let metric = self.metric;
        match field {
            Field::MetricName => text(&metric.name),
            Field::MetricUnit => text(&metric.unit),
            Field::MetricDescription => text(&metric.description),
            Field::MetricType => Val::Int(match &metric.data {
                None => 0,
                Some(Data::Gauge(_)) => 1,
                Some(Data::Sum(_)) => 2,
                Some(Data::Histogram(_)) => 3,
                Some(Data::ExponentialHistogram(_)) => 4,
                Some(Data::Summary(_)) => 5,
            }),
            Field::Attributes(keys) => self
                .point
                .map_or(Val::Nil, |p| Val::lookup(p.attributes, keys)),
            Field::Time => self.point.map_or(Val::Nil, |p| int(p.time)),
            Field::ValueInt => self
                .point
                .and_then(|p| p.value_int)
                .map_or(Val::Nil, Val::Int),
            Field::ValueDouble => self
                .point
                .and_then(|p| p.value_double)
                .map_or(Val::Nil, Val::Float),
            other => self.owner.field(other),
        }
    }
}

impl Processor for FilterProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if self.has_conditions(batch.signal()) {
            match batch.signal() {
                Signal::Traces => self.traces(&mut batch),
                Signal::Logs => self.logs(&mut batch),
                Signal::Metrics => self.metrics(&mut batch),
            }
            batch.recount();
        }
        if batch.items() > 0 || batch.lost() > 0 {
            out.push(batch);
        }
    }
}

#[cfg(test)]
mod tests;
