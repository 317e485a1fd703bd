//! Items of each OTTL context as conditions read them: a span, span event, log record,
//! metric or data point (prost messages) with the resource and scope it belongs to, and
//! a resource on its own. Shared by the `filter` processor and the `routing` connector.

use super::{Field, Item, Val};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric, NumberDataPoint};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Event, Span};
use std::borrow::Cow;

/// A resource (the `resource` context): `attributes` are its own.
pub struct ResourceItem<'a>(pub Option<&'a Resource>);

impl Item for ResourceItem<'_> {
    fn field(&self, field: &Field) -> Val<'_> {
        match field {
            Field::Attributes(keys) => Val::lookup(self.0.map_or(&[], |r| &r.attributes), keys),
            _ => Val::Nil,
        }
    }
}

/// A data point as conditions read it.
#[derive(Clone, Copy)]
pub struct Point<'a> {
    pub attributes: &'a [KeyValue],
    pub time: u64,
    pub value_int: Option<i64>,
    pub value_double: Option<f64>,
}

/// Keeps the data points `keep` says to keep; says whether any is left.
pub fn retain_points(metric: &mut Metric, mut keep: impl FnMut(&Metric, Point) -> bool) -> bool {
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
pub fn plain_point(attributes: &[KeyValue], time: u64) -> Point<'_> {
    Point {
        attributes,
        time,
        value_int: None,
        value_double: None,
    }
}

pub fn number_point(point: &NumberDataPoint) -> Point<'_> {
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
pub struct Owner<'a> {
    pub resource: Option<&'a Resource>,
    pub scope: Option<&'a InstrumentationScope>,
}

impl<'a> Owner<'a> {
    pub fn field(&self, field: &Field) -> Val<'a> {
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

pub struct SpanItem<'a> {
    pub owner: Owner<'a>,
    pub span: &'a Span,
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

pub struct EventItem<'a> {
    pub owner: Owner<'a>,
    pub span: &'a str,
    pub event: &'a Event,
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

pub struct LogItem<'a> {
    pub owner: Owner<'a>,
    pub record: &'a LogRecord,
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

pub struct MetricItem<'a> {
    pub owner: Owner<'a>,
    pub metric: &'a Metric,
    pub point: Option<Point<'a>>,
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
