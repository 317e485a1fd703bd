//! The configuration compiled for the hot path: which attribute names are looked up,
//! which metrics group spans by which dimensions ("tables"), and how a span's series key
//! and attributes are made from what was read of it.
//!
//! A series key is the bytes of the parts that tell series apart, each length-prefixed:
//! service name, span name, kind and status code (unless excluded), every dimension's
//! value as its encoded `AnyValue` (or absent), the instrumentation scope when included,
//! and the sampling method when enabled. Values are compared as their protobuf encoding,
//! so an integer 200 and a string "200" are different series (the collector keys by the
//! text of the value and merges them under whichever came first).

use super::config::{
    Dimension, SpanMetricsConfig, Temporality, Unit, SERVICE_NAME, SPAN_KIND, SPAN_NAME,
    STATUS_CODE,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;

/// The collector's default bucket bounds, in milliseconds.
const DEFAULT_BOUNDS_MS: [u64; 16] = [
    2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10_000, 15_000,
];

pub const SCOPE_NAME: &str = "span.instrumentation.scope.name";
pub const SCOPE_VERSION: &str = "span.instrumentation.scope.version";
pub const SAMPLING_METHOD: &str = "sampling.method";

/// An attribute value as found: encoded `AnyValue` bytes off the wire, a decoded one
/// (`None`: a key without a value), or a configured default.
#[derive(Clone, Copy, Debug)]
pub enum AttrValue<'a> {
    Wire(&'a [u8]),
    Proto(Option<&'a AnyValue>),
    Text(&'a str),
}

impl AttrValue<'_> {
    /// Appends the value's `AnyValue` encoding, length-prefixed.
    pub fn write_key(&self, key: &mut Vec<u8>) {
        match *self {
            AttrValue::Wire(bytes) => put_bytes(key, bytes),
            AttrValue::Proto(None) => key.push(0),
            AttrValue::Proto(Some(value)) => {
                encode_varint(value.encoded_len() as u64, key);
                value.encode(key).expect("a Vec grows as needed");
            }
            AttrValue::Text(text) => {
                let inner = text.len();
                encode_varint((1 + encoded_len_varint(inner as u64) + inner) as u64, key);
                key.push(0x0a); // field 1 (string_value), length-delimited
                put_bytes(key, text.as_bytes());
            }
        }
    }

    /// The value decoded.
    pub fn to_any_value(self) -> AnyValue {
        match self {
            AttrValue::Wire(bytes) => AnyValue::decode(bytes).unwrap_or_default(),
            AttrValue::Proto(value) => value.cloned().unwrap_or_default(),
            AttrValue::Text(text) => string_value(text),
        }
    }
}

/// Appends `bytes` with a varint length prefix.
fn put_bytes(key: &mut Vec<u8>, bytes: &[u8]) {
    encode_varint(bytes.len() as u64, key);
    key.extend_from_slice(bytes);
}

pub fn string_value(text: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(text.into())),
    }
}

pub fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// A configured dimension: the index (`slot`) of its attribute name among those looked
/// up, and its default.
#[derive(Debug)]
pub struct Dim {
    pub name: String,
    pub slot: usize,
    pub default: Option<String>,
}

/// What a table's series feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// `calls` and `duration` (their dimensions are the same).
    CallsAndDuration,
    Calls,
    Duration,
    Events,
}

impl TableKind {
    pub fn calls(self) -> bool {
        matches!(self, TableKind::CallsAndDuration | TableKind::Calls)
    }

    pub fn duration(self) -> bool {
        matches!(self, TableKind::CallsAndDuration | TableKind::Duration)
    }
}

/// One group of series: what they feed and the dimensions added after `dimensions`.
#[derive(Debug)]
pub struct TablePlan {
    pub kind: TableKind,
    pub extra: Vec<Dim>,
}

/// The duration histogram's kind.
#[derive(Debug)]
pub enum HistogramPlan {
    Disabled,
    Explicit {
        bounds_ns: Vec<u64>,
        bounds: Vec<f64>,
    },
    Exponential {
        max_size: usize,
    },
}

/// The parts of a span (and its resource and scope) a series key is made of.
pub struct SpanParts<'a> {
    pub service: &'a [u8],
    pub name: &'a [u8],
    pub kind: i32,
    pub status: i32,
    pub scope: Scope<'a>,
    /// Whether the span's count came from a sampling threshold.
    pub adjusted: bool,
}

/// A span's instrumentation scope name and version, when the scope is one of
/// `include_instrumentation_scope`.
pub type Scope<'a> = Option<(&'a [u8], &'a [u8])>;

/// Where a dimension's value is looked for, in order: per layer (span, event,
/// resource), the value found for each attribute name slot.
pub type Layers<'l, 'a> = &'l [&'l [Option<AttrValue<'a>>]];

/// The compiled configuration.
#[derive(Debug)]
pub struct Plan {
    /// Attribute names looked up (on spans, events and resources), by slot.
    pub names: Vec<Box<[u8]>>,
    pub dimensions: Vec<Dim>,
    /// Span tables, then the events table when events are enabled.
    pub tables: Vec<TablePlan>,
    exclude_service: bool,
    exclude_name: bool,
    exclude_kind: bool,
    exclude_status: bool,
    pub scopes: Vec<String>,
    pub sampling_method: bool,
    pub histogram: HistogramPlan,
    pub unit: Unit,
    /// Exemplars per data point (0: none).
    pub exemplars: usize,
    /// Series per table and resource (0: no limit).
    pub cardinality_limit: usize,
    pub max_resources: usize,
    pub max_bytes: usize,
    /// Resource attributes that tell resources apart (empty: all).
    pub key_attributes: Vec<Box<[u8]>>,
    pub temporality: Temporality,
    pub metrics_expiration_ns: u64,
    pub series_expiration_ns: u64,
    pub calls_name: String,
    pub duration_name: String,
    pub events_name: String,
}

impl Plan {
    pub fn new(config: &SpanMetricsConfig) -> Plan {
        let mut names: Vec<Box<[u8]>> = Vec::new();
        let mut dims = |dimensions: &[Dimension]| -> Vec<Dim> {
            dimensions.iter().map(|d| dim(&mut names, d)).collect()
        };
        let dimensions = dims(&config.dimensions);
        let histogram = histogram_plan(config);
        let mut tables = Vec::new();
        let calls = dims(&config.calls_dimensions);
        if matches!(histogram, HistogramPlan::Disabled) {
            tables.push(TablePlan {
                kind: TableKind::Calls,
                extra: calls,
            });
        } else if config.calls_dimensions == config.histogram.dimensions {
            tables.push(TablePlan {
                kind: TableKind::CallsAndDuration,
                extra: calls,
            });
        } else {
            tables.push(TablePlan {
                kind: TableKind::Calls,
                extra: calls,
            });
            tables.push(TablePlan {
                kind: TableKind::Duration,
                extra: dims(&config.histogram.dimensions),
            });
        }
        if config.events.enabled {
            tables.push(TablePlan {
                kind: TableKind::Events,
                extra: dims(&config.events.dimensions),
            });
        }
        let excluded = |name: &str| config.exclude_dimensions.iter().any(|e| e == name);
        let metric_name = |name: &str| match config.namespace.as_str() {
            "" => name.to_string(),
            namespace => format!("{namespace}.{name}"),
        };
        Plan {
            names,
            dimensions,
            tables,
            exclude_service: excluded(SERVICE_NAME),
            exclude_name: excluded(SPAN_NAME),
            exclude_kind: excluded(SPAN_KIND),
            exclude_status: excluded(STATUS_CODE),
            scopes: config.include_instrumentation_scope.clone(),
            sampling_method: config.enable_metrics_sampling_method,
            histogram,
            unit: config.histogram.unit,
            exemplars: if config.exemplars.enabled {
                config.exemplars.max_per_data_point
            } else {
                0
            },
            cardinality_limit: config.aggregation_cardinality_limit,
            max_resources: config.resource_metrics_cache_size.max(1),
            max_bytes: config.max_memory_mib.saturating_mul(1 << 20),
            key_attributes: config
                .resource_metrics_key_attributes
                .iter()
                .map(|name| name.as_bytes().into())
                .collect(),
            temporality: config.aggregation_temporality,
            metrics_expiration_ns: config.metrics_expiration.as_nanos() as u64,
            series_expiration_ns: config.series_expiration.as_nanos() as u64,
            calls_name: metric_name("calls"),
            duration_name: metric_name("duration"),
            events_name: metric_name("events"),
        }
    }

    /// The slot of attribute name `key`, if it is looked up.
    #[inline]
    pub fn slot(&self, key: &[u8]) -> Option<usize> {
        self.names.iter().position(|name| **name == *key)
    }

    /// Whether spans of a scope named `name` get scope dimensions.
    pub fn includes_scope(&self, name: &[u8]) -> bool {
        !name.is_empty() && self.scopes.iter().any(|s| s.as_bytes() == name)
    }

    /// Writes the series key of `parts` with `dimensions` and then `extra`, each looked
    /// up through `layers`.
    pub fn write_key(
        &self,
        key: &mut Vec<u8>,
        parts: &SpanParts<'_>,
        extra: &[Dim],
        layers: Layers<'_, '_>,
    ) {
        key.clear();
        if !self.exclude_service {
            put_bytes(key, parts.service);
        }
        if !self.exclude_name {
            put_bytes(key, parts.name);
        }
        if !self.exclude_kind {
            key.push(kind_name(parts.kind).0);
        }
        if !self.exclude_status {
            key.push(status_name(parts.status).0);
        }
        for dim in self.dimensions.iter().chain(extra) {
            match resolve(dim, layers) {
                Some(value) => {
                    key.push(1);
                    value.write_key(key);
                }
                None => key.push(0),
            }
        }
        if let Some((name, version)) = parts.scope {
            put_bytes(key, name);
            put_bytes(key, version);
        }
        if self.sampling_method {
            key.push(u8::from(parts.adjusted));
        }
    }

    /// The attributes of the series `write_key` names, in the collector's order.
    pub fn attributes(
        &self,
        parts: &SpanParts<'_>,
        extra: &[Dim],
        layers: Layers<'_, '_>,
    ) -> Vec<KeyValue> {
        let text = |bytes: &[u8]| string_value(&String::from_utf8_lossy(bytes));
        let mut attributes = Vec::with_capacity(4 + self.dimensions.len() + extra.len());
        if !self.exclude_service {
            attributes.push(key_value(SERVICE_NAME, text(parts.service)));
        }
        if !self.exclude_name {
            attributes.push(key_value(SPAN_NAME, text(parts.name)));
        }
        if !self.exclude_kind {
            attributes.push(key_value(SPAN_KIND, string_value(kind_name(parts.kind).1)));
        }
        if !self.exclude_status {
            let status = status_name(parts.status).1;
            attributes.push(key_value(STATUS_CODE, string_value(status)));
        }
        for dim in self.dimensions.iter().chain(extra) {
            if let Some(value) = resolve(dim, layers) {
                attributes.push(key_value(&dim.name, value.to_any_value()));
            }
        }
        if let Some((name, version)) = parts.scope {
            attributes.push(key_value(SCOPE_NAME, text(name)));
            if !version.is_empty() {
                attributes.push(key_value(SCOPE_VERSION, text(version)));
            }
        }
        if self.sampling_method {
            let method = if parts.adjusted {
                "extrapolated"
            } else {
                "counted"
            };
            attributes.push(key_value(SAMPLING_METHOD, string_value(method)));
        }
        attributes
    }
}

/// A dimension, its name given a slot (shared with an earlier dimension of that name).
fn dim(names: &mut Vec<Box<[u8]>>, dimension: &Dimension) -> Dim {
    let name = dimension.name.as_bytes();
    let slot = match names.iter().position(|n| **n == *name) {
        Some(slot) => slot,
        None => {
            names.push(name.into());
            names.len() - 1
        }
    };
    Dim {
        name: dimension.name.clone(),
        slot,
        default: dimension.default.clone(),
    }
}

fn histogram_plan(config: &SpanMetricsConfig) -> HistogramPlan {
    let histogram = &config.histogram;
    if histogram.disable {
        return HistogramPlan::Disabled;
    }
    if let Some(exponential) = &histogram.exponential {
        let max_size = match exponential.max_size {
            0 => 160,
            size => size.max(2) as usize,
        };
        return HistogramPlan::Exponential { max_size };
    }
    let configured = histogram.explicit.as_ref().and_then(|e| e.buckets.as_ref());
    let bounds_ns: Vec<u64> = match configured {
        Some(buckets) => buckets.iter().map(|b| b.as_nanos() as u64).collect(),
        None => DEFAULT_BOUNDS_MS.iter().map(|ms| ms * 1_000_000).collect(),
    };
    let unit = histogram.unit.nanos();
    let bounds = bounds_ns.iter().map(|&ns| ns as f64 / unit).collect();
    HistogramPlan::Explicit { bounds_ns, bounds }
}

/// A dimension's value: the first layer that has its attribute, else its default.
fn resolve<'a>(dim: &'a Dim, layers: Layers<'_, 'a>) -> Option<AttrValue<'a>> {
    layers
        .iter()
        .find_map(|layer| layer[dim.slot])
        .or_else(|| dim.default.as_deref().map(AttrValue::Text))
}

/// A span kind's key byte and name (the collector's `traceutil.SpanKindStr`).
fn kind_name(kind: i32) -> (u8, &'static str) {
    match kind {
        0 => (0, "SPAN_KIND_UNSPECIFIED"),
        1 => (1, "SPAN_KIND_INTERNAL"),
        2 => (2, "SPAN_KIND_SERVER"),
        3 => (3, "SPAN_KIND_CLIENT"),
        4 => (4, "SPAN_KIND_PRODUCER"),
        5 => (5, "SPAN_KIND_CONSUMER"),
        _ => (6, ""),
    }
}

/// A status code's key byte and name (the collector's `traceutil.StatusCodeStr`).
fn status_name(code: i32) -> (u8, &'static str) {
    match code {
        0 => (0, "STATUS_CODE_UNSET"),
        1 => (1, "STATUS_CODE_OK"),
        2 => (2, "STATUS_CODE_ERROR"),
        _ => (3, ""),
    }
}
