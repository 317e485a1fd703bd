//! The OTLP messages as tables: every field's number, name and type, for the messages of
//! the three export requests (opentelemetry-proto v1, as generated into the
//! `opentelemetry-proto` crate sieve decodes with).
//!
//! Two readers share these tables, so they cannot disagree about what a message holds:
//! the edge check in [`super::validate`] (which refuses what the decoder would refuse)
//! and the OTLP/JSON transcoder in the OTLP receiver (which writes protobuf wire bytes
//! straight from JSON). A field the decoder knows but a table missed would let a wrong
//! wire type through: the property test in `validate` (`edge accepts ⇒ prost decodes`)
//! is what keeps the tables honest.

/// A field's type, as far as its wire encoding and its JSON form differ.
#[derive(Clone, Copy)]
pub enum Type {
    Bool,
    Int32,
    Int64,
    Uint32,
    Uint64,
    /// Zigzag-encoded `sint32`.
    Sint32,
    /// An open enum: any `int32`; in JSON also the value's name.
    Enum(fn(&str) -> Option<i32>),
    Fixed32,
    Fixed64,
    Sfixed64,
    Double,
    String,
    /// Bytes, base64 in JSON.
    Bytes,
    /// A trace or span id: bytes, hex in JSON (the OTLP/JSON exception to base64).
    Id,
    Message(&'static Message),
}

/// The protobuf wire types sieve accepts (groups are refused everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireType {
    Varint = 0,
    Fixed64 = 1,
    Delimited = 2,
    Fixed32 = 5,
}

impl Type {
    /// The wire type of one value of this type (a packed repeated field is `Delimited`).
    pub fn wire_type(self) -> WireType {
        match self {
            Type::Bool
            | Type::Int32
            | Type::Int64
            | Type::Uint32
            | Type::Uint64
            | Type::Sint32
            | Type::Enum(_) => WireType::Varint,
            Type::Fixed64 | Type::Sfixed64 | Type::Double => WireType::Fixed64,
            Type::Fixed32 => WireType::Fixed32,
            Type::String | Type::Bytes | Type::Id | Type::Message(_) => WireType::Delimited,
        }
    }
}

/// One field of a message.
pub struct Field {
    pub number: u32,
    /// The `.proto` name (snake_case); OTLP/JSON uses its lowerCamelCase form.
    pub name: &'static str,
    pub ty: Type,
    pub repeated: bool,
}

/// One message type.
pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

impl Message {
    pub fn field(&self, number: u32) -> Option<&'static Field> {
        // most tables list fields 1..n in order
        let at = (number as usize).wrapping_sub(1);
        match self.fields.get(at) {
            Some(field) if field.number == number => Some(field),
            _ => self.fields.iter().find(|f| f.number == number),
        }
    }

    /// The field a JSON key names: its `.proto` name or its lowerCamelCase form.
    pub fn json_field(&self, key: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| json_name_matches(key, f.name))
    }
}

/// Whether `key` is `snake` or `snake` in lowerCamelCase, without allocating.
fn json_name_matches(key: &str, snake: &str) -> bool {
    if key == snake {
        return true;
    }
    let mut key = key.bytes();
    let mut snake = snake.bytes();
    while let Some(s) = snake.next() {
        let expected = if s == b'_' {
            match snake.next() {
                Some(c) => c.to_ascii_uppercase(),
                None => return false,
            }
        } else {
            s
        };
        if key.next() != Some(expected) {
            return false;
        }
    }
    key.next().is_none()
}

const fn one(number: u32, name: &'static str, ty: Type) -> Field {
    Field {
        number,
        name,
        ty,
        repeated: false,
    }
}

const fn many(number: u32, name: &'static str, ty: Type) -> Field {
    Field {
        number,
        name,
        ty,
        repeated: true,
    }
}

// opentelemetry/proto/common/v1/common.proto

pub static ANY_VALUE: Message = Message {
    name: "AnyValue",
    fields: &[
        one(1, "string_value", Type::String),
        one(2, "bool_value", Type::Bool),
        one(3, "int_value", Type::Int64),
        one(4, "double_value", Type::Double),
        one(5, "array_value", Type::Message(&ARRAY_VALUE)),
        one(6, "kvlist_value", Type::Message(&KEY_VALUE_LIST)),
        one(7, "bytes_value", Type::Bytes),
        one(8, "string_value_strindex", Type::Int32),
    ],
};

pub static ARRAY_VALUE: Message = Message {
    name: "ArrayValue",
    fields: &[many(1, "values", Type::Message(&ANY_VALUE))],
};

pub static KEY_VALUE_LIST: Message = Message {
    name: "KeyValueList",
    fields: &[many(1, "values", Type::Message(&KEY_VALUE))],
};

pub static KEY_VALUE: Message = Message {
    name: "KeyValue",
    fields: &[
        one(1, "key", Type::String),
        one(2, "value", Type::Message(&ANY_VALUE)),
        one(3, "key_strindex", Type::Int32),
    ],
};

const ATTRIBUTES: Type = Type::Message(&KEY_VALUE);

pub static INSTRUMENTATION_SCOPE: Message = Message {
    name: "InstrumentationScope",
    fields: &[
        one(1, "name", Type::String),
        one(2, "version", Type::String),
        many(3, "attributes", ATTRIBUTES),
        one(4, "dropped_attributes_count", Type::Uint32),
    ],
};

pub static ENTITY_REF: Message = Message {
    name: "EntityRef",
    fields: &[
        one(1, "schema_url", Type::String),
        one(2, "type", Type::String),
        many(3, "id_keys", Type::String),
        many(4, "description_keys", Type::String),
    ],
};

// opentelemetry/proto/resource/v1/resource.proto

pub static RESOURCE: Message = Message {
    name: "Resource",
    fields: &[
        many(1, "attributes", ATTRIBUTES),
        one(2, "dropped_attributes_count", Type::Uint32),
        many(3, "entity_refs", Type::Message(&ENTITY_REF)),
    ],
};

const SCOPE: Type = Type::Message(&INSTRUMENTATION_SCOPE);

// opentelemetry/proto/trace/v1/trace.proto and collector/trace/v1/trace_service.proto

pub static EXPORT_TRACE_REQUEST: Message = Message {
    name: "ExportTraceServiceRequest",
    fields: &[many(1, "resource_spans", Type::Message(&RESOURCE_SPANS))],
};

pub static RESOURCE_SPANS: Message = Message {
    name: "ResourceSpans",
    fields: &[
        one(1, "resource", Type::Message(&RESOURCE)),
        many(2, "scope_spans", Type::Message(&SCOPE_SPANS)),
        one(3, "schema_url", Type::String),
    ],
};

pub static SCOPE_SPANS: Message = Message {
    name: "ScopeSpans",
    fields: &[
        one(1, "scope", SCOPE),
        many(2, "spans", Type::Message(&SPAN)),
        one(3, "schema_url", Type::String),
    ],
};

pub static SPAN: Message = Message {
    name: "Span",
    fields: &[
        one(1, "trace_id", Type::Id),
        one(2, "span_id", Type::Id),
        one(3, "trace_state", Type::String),
        one(4, "parent_span_id", Type::Id),
        one(5, "name", Type::String),
        one(6, "kind", Type::Enum(span_kind)),
        one(7, "start_time_unix_nano", Type::Fixed64),
        one(8, "end_time_unix_nano", Type::Fixed64),
        many(9, "attributes", ATTRIBUTES),
        one(10, "dropped_attributes_count", Type::Uint32),
        many(11, "events", Type::Message(&SPAN_EVENT)),
        one(12, "dropped_events_count", Type::Uint32),
        many(13, "links", Type::Message(&SPAN_LINK)),
        one(14, "dropped_links_count", Type::Uint32),
        one(15, "status", Type::Message(&STATUS)),
        one(16, "flags", Type::Fixed32),
    ],
};

pub static SPAN_EVENT: Message = Message {
    name: "Span.Event",
    fields: &[
        one(1, "time_unix_nano", Type::Fixed64),
        one(2, "name", Type::String),
        many(3, "attributes", ATTRIBUTES),
        one(4, "dropped_attributes_count", Type::Uint32),
    ],
};

pub static SPAN_LINK: Message = Message {
    name: "Span.Link",
    fields: &[
        one(1, "trace_id", Type::Id),
        one(2, "span_id", Type::Id),
        one(3, "trace_state", Type::String),
        many(4, "attributes", ATTRIBUTES),
        one(5, "dropped_attributes_count", Type::Uint32),
        one(6, "flags", Type::Fixed32),
    ],
};

pub static STATUS: Message = Message {
    name: "Status",
    fields: &[
        one(2, "message", Type::String),
        one(3, "code", Type::Enum(status_code)),
    ],
};

// opentelemetry/proto/logs/v1/logs.proto and collector/logs/v1/logs_service.proto

pub static EXPORT_LOGS_REQUEST: Message = Message {
    name: "ExportLogsServiceRequest",
    fields: &[many(1, "resource_logs", Type::Message(&RESOURCE_LOGS))],
};

pub static RESOURCE_LOGS: Message = Message {
    name: "ResourceLogs",
    fields: &[
        one(1, "resource", Type::Message(&RESOURCE)),
        many(2, "scope_logs", Type::Message(&SCOPE_LOGS)),
        one(3, "schema_url", Type::String),
    ],
};

pub static SCOPE_LOGS: Message = Message {
    name: "ScopeLogs",
    fields: &[
        one(1, "scope", SCOPE),
        many(2, "log_records", Type::Message(&LOG_RECORD)),
        one(3, "schema_url", Type::String),
    ],
};

pub static LOG_RECORD: Message = Message {
    name: "LogRecord",
    fields: &[
        one(1, "time_unix_nano", Type::Fixed64),
        one(2, "severity_number", Type::Enum(severity_number)),
        one(3, "severity_text", Type::String),
        one(5, "body", Type::Message(&ANY_VALUE)),
        many(6, "attributes", ATTRIBUTES),
        one(7, "dropped_attributes_count", Type::Uint32),
        one(8, "flags", Type::Fixed32),
        one(9, "trace_id", Type::Id),
        one(10, "span_id", Type::Id),
        one(11, "observed_time_unix_nano", Type::Fixed64),
        one(12, "event_name", Type::String),
    ],
};

// opentelemetry/proto/metrics/v1/metrics.proto and collector/metrics/v1/metrics_service.proto

pub static EXPORT_METRICS_REQUEST: Message = Message {
    name: "ExportMetricsServiceRequest",
    fields: &[many(
        1,
        "resource_metrics",
        Type::Message(&RESOURCE_METRICS),
    )],
};

pub static RESOURCE_METRICS: Message = Message {
    name: "ResourceMetrics",
    fields: &[
        one(1, "resource", Type::Message(&RESOURCE)),
        many(2, "scope_metrics", Type::Message(&SCOPE_METRICS)),
        one(3, "schema_url", Type::String),
    ],
};

pub static SCOPE_METRICS: Message = Message {
    name: "ScopeMetrics",
    fields: &[
        one(1, "scope", SCOPE),
        many(2, "metrics", Type::Message(&METRIC)),
        one(3, "schema_url", Type::String),
    ],
};

pub static METRIC: Message = Message {
    name: "Metric",
    fields: &[
        one(1, "name", Type::String),
        one(2, "description", Type::String),
        one(3, "unit", Type::String),
        one(5, "gauge", Type::Message(&GAUGE)),
        one(7, "sum", Type::Message(&SUM)),
        one(9, "histogram", Type::Message(&HISTOGRAM)),
        one(
            10,
            "exponential_histogram",
            Type::Message(&EXPONENTIAL_HISTOGRAM),
        ),
        one(11, "summary", Type::Message(&SUMMARY)),
        many(12, "metadata", ATTRIBUTES),
    ],
};

const TEMPORALITY: Type = Type::Enum(aggregation_temporality);

pub static GAUGE: Message = Message {
    name: "Gauge",
    fields: &[many(1, "data_points", Type::Message(&NUMBER_DATA_POINT))],
};

pub static SUM: Message = Message {
    name: "Sum",
    fields: &[
        many(1, "data_points", Type::Message(&NUMBER_DATA_POINT)),
        one(2, "aggregation_temporality", TEMPORALITY),
        one(3, "is_monotonic", Type::Bool),
    ],
};

pub static HISTOGRAM: Message = Message {
    name: "Histogram",
    fields: &[
        many(1, "data_points", Type::Message(&HISTOGRAM_DATA_POINT)),
        one(2, "aggregation_temporality", TEMPORALITY),
    ],
};

pub static EXPONENTIAL_HISTOGRAM: Message = Message {
    name: "ExponentialHistogram",
    fields: &[
        many(
            1,
            "data_points",
            Type::Message(&EXPONENTIAL_HISTOGRAM_DATA_POINT),
        ),
        one(2, "aggregation_temporality", TEMPORALITY),
    ],
};

pub static SUMMARY: Message = Message {
    name: "Summary",
    fields: &[many(1, "data_points", Type::Message(&SUMMARY_DATA_POINT))],
};

pub static NUMBER_DATA_POINT: Message = Message {
    name: "NumberDataPoint",
    fields: &[
        one(2, "start_time_unix_nano", Type::Fixed64),
        one(3, "time_unix_nano", Type::Fixed64),
        one(4, "as_double", Type::Double),
        many(5, "exemplars", Type::Message(&EXEMPLAR)),
        one(6, "as_int", Type::Sfixed64),
        many(7, "attributes", ATTRIBUTES),
        one(8, "flags", Type::Uint32),
    ],
};

pub static HISTOGRAM_DATA_POINT: Message = Message {
    name: "HistogramDataPoint",
    fields: &[
        one(2, "start_time_unix_nano", Type::Fixed64),
        one(3, "time_unix_nano", Type::Fixed64),
        one(4, "count", Type::Fixed64),
        one(5, "sum", Type::Double),
        many(6, "bucket_counts", Type::Fixed64),
        many(7, "explicit_bounds", Type::Double),
        many(8, "exemplars", Type::Message(&EXEMPLAR)),
        many(9, "attributes", ATTRIBUTES),
        one(10, "flags", Type::Uint32),
        one(11, "min", Type::Double),
        one(12, "max", Type::Double),
    ],
};

pub static EXPONENTIAL_HISTOGRAM_DATA_POINT: Message = Message {
    name: "ExponentialHistogramDataPoint",
    fields: &[
        many(1, "attributes", ATTRIBUTES),
        one(2, "start_time_unix_nano", Type::Fixed64),
        one(3, "time_unix_nano", Type::Fixed64),
        one(4, "count", Type::Fixed64),
        one(5, "sum", Type::Double),
        one(6, "scale", Type::Sint32),
        one(7, "zero_count", Type::Fixed64),
        one(8, "positive", Type::Message(&BUCKETS)),
        one(9, "negative", Type::Message(&BUCKETS)),
        one(10, "flags", Type::Uint32),
        many(11, "exemplars", Type::Message(&EXEMPLAR)),
        one(12, "min", Type::Double),
        one(13, "max", Type::Double),
        one(14, "zero_threshold", Type::Double),
    ],
};

pub static BUCKETS: Message = Message {
    name: "ExponentialHistogramDataPoint.Buckets",
    fields: &[
        one(1, "offset", Type::Sint32),
        many(2, "bucket_counts", Type::Uint64),
    ],
};

pub static SUMMARY_DATA_POINT: Message = Message {
    name: "SummaryDataPoint",
    fields: &[
        one(2, "start_time_unix_nano", Type::Fixed64),
        one(3, "time_unix_nano", Type::Fixed64),
        one(4, "count", Type::Fixed64),
        one(5, "sum", Type::Double),
        many(6, "quantile_values", Type::Message(&VALUE_AT_QUANTILE)),
        many(7, "attributes", ATTRIBUTES),
        one(8, "flags", Type::Uint32),
    ],
};

pub static VALUE_AT_QUANTILE: Message = Message {
    name: "SummaryDataPoint.ValueAtQuantile",
    fields: &[
        one(1, "quantile", Type::Double),
        one(2, "value", Type::Double),
    ],
};

pub static EXEMPLAR: Message = Message {
    name: "Exemplar",
    fields: &[
        one(2, "time_unix_nano", Type::Fixed64),
        one(3, "as_double", Type::Double),
        one(4, "span_id", Type::Id),
        one(5, "trace_id", Type::Id),
        one(6, "as_int", Type::Sfixed64),
        many(7, "filtered_attributes", ATTRIBUTES),
    ],
};

/// The export request message of a signal.
pub fn request(signal: super::Signal) -> &'static Message {
    match signal {
        super::Signal::Traces => &EXPORT_TRACE_REQUEST,
        super::Signal::Metrics => &EXPORT_METRICS_REQUEST,
        super::Signal::Logs => &EXPORT_LOGS_REQUEST,
    }
}

// Enum names accepted in OTLP/JSON (the spec asks senders for integers; the proto3 JSON
// mapping also allows names, and some senders use them).

fn span_kind(name: &str) -> Option<i32> {
    let kinds = [
        "UNSPECIFIED",
        "INTERNAL",
        "SERVER",
        "CLIENT",
        "PRODUCER",
        "CONSUMER",
    ];
    index_of(name.strip_prefix("SPAN_KIND_")?, &kinds)
}

fn status_code(name: &str) -> Option<i32> {
    index_of(
        name.strip_prefix("STATUS_CODE_")?,
        &["UNSET", "OK", "ERROR"],
    )
}

fn aggregation_temporality(name: &str) -> Option<i32> {
    let values = ["UNSPECIFIED", "DELTA", "CUMULATIVE"];
    index_of(name.strip_prefix("AGGREGATION_TEMPORALITY_")?, &values)
}

/// `SEVERITY_NUMBER_UNSPECIFIED` is 0; `TRACE`, `TRACE2` … `FATAL4` are 1 to 24.
fn severity_number(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    let levels = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let (level, step) = match rest.as_bytes().last()? {
        d @ b'2'..=b'4' => (&rest[..rest.len() - 1], i32::from(d - b'1')),
        _ => (rest, 0),
    };
    Some(index_of(level, &levels)? * 4 + 1 + step)
}

fn index_of(name: &str, names: &[&str]) -> Option<i32> {
    names.iter().position(|n| *n == name).map(|i| i as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_match_in_both_spellings_only() {
        assert!(json_name_matches("traceId", "trace_id"));
        assert!(json_name_matches("trace_id", "trace_id"));
        assert!(json_name_matches(
            "startTimeUnixNano",
            "start_time_unix_nano"
        ));
        assert!(!json_name_matches("traceid", "trace_id"));
        assert!(!json_name_matches("traceIdx", "trace_id"));
        assert!(!json_name_matches("trace", "trace_id"));
    }

    #[test]
    fn enum_names_have_the_proto_values() {
        assert_eq!(span_kind("SPAN_KIND_SERVER"), Some(2));
        assert_eq!(status_code("STATUS_CODE_ERROR"), Some(2));
        assert_eq!(
            aggregation_temporality("AGGREGATION_TEMPORALITY_CUMULATIVE"),
            Some(2)
        );
        assert_eq!(severity_number("SEVERITY_NUMBER_UNSPECIFIED"), Some(0));
        assert_eq!(severity_number("SEVERITY_NUMBER_TRACE"), Some(1));
        assert_eq!(severity_number("SEVERITY_NUMBER_DEBUG3"), Some(7));
        assert_eq!(severity_number("SEVERITY_NUMBER_INFO"), Some(9));
        assert_eq!(severity_number("SEVERITY_NUMBER_FATAL4"), Some(24));
        assert_eq!(severity_number("SEVERITY_NUMBER_LOUD"), None);
        assert_eq!(span_kind("SERVER"), None);
    }

    /// Every message's field numbers are distinct.
    #[test]
    fn field_numbers_are_unique() {
        let all: [&Message; 26] = [
            &ANY_VALUE,
            &ARRAY_VALUE,
            &KEY_VALUE_LIST,
            &KEY_VALUE,
            &INSTRUMENTATION_SCOPE,
            &ENTITY_REF,
            &RESOURCE,
            &RESOURCE_SPANS,
            &SCOPE_SPANS,
            &SPAN,
            &SPAN_EVENT,
            &SPAN_LINK,
            &STATUS,
            &LOG_RECORD,
            &RESOURCE_METRICS,
            &SCOPE_METRICS,
            &METRIC,
            &SUM,
            &HISTOGRAM,
            &EXPONENTIAL_HISTOGRAM,
            &NUMBER_DATA_POINT,
            &HISTOGRAM_DATA_POINT,
            &EXPONENTIAL_HISTOGRAM_DATA_POINT,
            &BUCKETS,
            &SUMMARY_DATA_POINT,
            &EXEMPLAR,
        ];
        for message in all {
            let mut numbers: Vec<u32> = message.fields.iter().map(|f| f.number).collect();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(numbers.len(), message.fields.len(), "{}", message.name);
        }
    }
}
