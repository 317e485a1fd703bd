//! The wire walk against the decoded path: for any request and any configuration, the
//! same output (decoded and compared) and the same counts.

use super::super::*;
use crate::model::Signal;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, ArrayValue, InstrumentationScope, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    self as metrics, exponential_histogram_data_point::Buckets, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;

const TEXTS: &[&str] = &[
    "",
    "GET /api/v1/items/12345",
    "jane.doe@example.com",
    "login from 203.0.113.7 by bob@example.org",
    "card 4111 1111 1111 1111",
    "Bearer abcdefghijklmnop",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
    "ssn 123-45-6789, call +14155552671",
    "SELECT * FROM users WHERE email = 'x@y.io' AND ip = '10.0.0.1'",
    "plain words only",
    "version 1.2.3.4",
];

const KEYS: &[&str] = &[
    "user.email",
    "password",
    "authorization",
    "http.route",
    "service.name",
    "url.path",
    "k",
];

fn text() -> impl Strategy<Value = String> {
    prop::sample::select(TEXTS).prop_map(String::from)
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(String::from)
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        text().prop_map(any_value::Value::StringValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            prop::collection::vec((key(), inner), 0..3).prop_map(|pairs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: pairs
                        .into_iter()
                        .map(|(k, v)| key_value(k, Some(v)))
                        .collect(),
                })),
            }),
        ]
    })
}

fn key_value(key: String, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key,
        value,
        ..Default::default()
    }
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec((key(), prop::option::weighted(0.9, any_value())), 0..4)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| key_value(k, v)).collect())
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    prop::option::of(attributes().prop_map(|attributes| Resource {
        attributes,
        ..Default::default()
    }))
}

fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    prop::option::of(attributes().prop_map(|attributes| InstrumentationScope {
        name: "scope".into(),
        attributes,
        ..Default::default()
    }))
}

fn span() -> impl Strategy<Value = Span> {
    (
        text(),
        attributes(),
        prop::collection::vec((text(), attributes()), 0..2),
        prop::collection::vec(attributes(), 0..2),
    )
        .prop_map(|(name, attributes, events, links)| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name,
            attributes,
            events: events
                .into_iter()
                .map(|(name, attributes)| span::Event {
                    name,
                    attributes,
                    time_unix_nano: 7,
                    ..Default::default()
                })
                .collect(),
            links: links
                .into_iter()
                .map(|attributes| span::Link {
                    trace_id: vec![3; 16],
                    attributes,
                    ..Default::default()
                })
                .collect(),
            start_time_unix_nano: 5,
            ..Default::default()
        })
}

fn traces() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans =
        (scope(), prop::collection::vec(span(), 0..3)).prop_map(|(scope, spans)| ScopeSpans {
            scope,
            spans,
            schema_url: "s".into(),
        });
    prop::collection::vec((resource(), prop::collection::vec(scope_spans, 1..3)), 1..3).prop_map(
        |all| ExportTraceServiceRequest {
            resource_spans: all
                .into_iter()
                .map(|(resource, scope_spans)| ResourceSpans {
                    resource,
                    scope_spans,
                    ..Default::default()
                })
                .collect(),
        },
    )
}

fn logs() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let record =
        (prop::option::of(any_value()), attributes()).prop_map(|(body, attributes)| LogRecord {
            body,
            attributes,
            severity_text: "INFO".into(),
            ..Default::default()
        });
    let scope_logs =
        (scope(), prop::collection::vec(record, 0..3)).prop_map(|(scope, log_records)| ScopeLogs {
            scope,
            log_records,
            ..Default::default()
        });
    (resource(), prop::collection::vec(scope_logs, 1..3)).prop_map(|(resource, scope_logs)| {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource,
                scope_logs,
                ..Default::default()
            }],
        }
    })
}

fn exemplars() -> impl Strategy<Value = Vec<Exemplar>> {
    prop::collection::vec(
        attributes().prop_map(|filtered_attributes| Exemplar {
            filtered_attributes,
            value: Some(metrics::exemplar::Value::AsInt(3)),
            ..Default::default()
        }),
        0..2,
    )
}

fn number_point() -> impl Strategy<Value = NumberDataPoint> {
    (attributes(), exemplars()).prop_map(|(attributes, exemplars)| NumberDataPoint {
        attributes,
        exemplars,
        value: Some(metrics::number_data_point::Value::AsDouble(1.5)),
        ..Default::default()
    })
}

fn metric() -> impl Strategy<Value = Metric> {
    let data = prop_oneof![
        prop::collection::vec(number_point(), 1..3)
            .prop_map(|data_points| metrics::metric::Data::Gauge(Gauge { data_points })),
        prop::collection::vec(number_point(), 1..3).prop_map(|data_points| {
            metrics::metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: 2,
                is_monotonic: true,
            })
        }),
        (attributes(), exemplars()).prop_map(|(attributes, exemplars)| {
            metrics::metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes,
                    exemplars,
                    count: 2,
                    bucket_counts: vec![1, 1],
                    explicit_bounds: vec![1.0],
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            })
        }),
        (attributes(), exemplars()).prop_map(|(attributes, exemplars)| {
            metrics::metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes,
                    exemplars,
                    positive: Some(Buckets {
                        offset: 1,
                        bucket_counts: vec![2],
                    }),
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            })
        }),
        attributes().prop_map(|attributes| {
            metrics::metric::Data::Summary(metrics::Summary {
                data_points: vec![SummaryDataPoint {
                    attributes,
                    count: 1,
                    ..Default::default()
                }],
            })
        }),
    ];
    (data, attributes()).prop_map(|(data, metadata)| Metric {
        name: "m".into(),
        data: Some(data),
        metadata,
        ..Default::default()
    })
}

fn metrics_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope_metrics =
        (scope(), prop::collection::vec(metric(), 0..3)).prop_map(|(scope, metrics)| {
            ScopeMetrics {
                scope,
                metrics,
                ..Default::default()
            }
        });
    (resource(), prop::collection::vec(scope_metrics, 1..3)).prop_map(
        |(resource, scope_metrics)| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource,
                scope_metrics,
                ..Default::default()
            }],
        },
    )
}

fn config() -> impl Strategy<Value = RedactionConfig> {
    (
        any::<bool>(),
        prop::collection::vec(key(), 0..4),
        prop::collection::vec(key(), 0..2),
        prop::option::of(Just("(?i)pass".to_string())),
        prop::sample::select(&[Action::Mask, Action::Hash, Action::Drop][..]),
        prop::sample::select(&[MaskStyle::Stars, MaskStyle::Typed][..]),
        prop::sample::select(&[Summary::Silent, Summary::Info, Summary::Debug][..]),
        any::<bool>(),
    )
        .prop_map(
            |(
                allow_all_keys,
                allowed_keys,
                ignored_keys,
                blocked,
                action,
                mask_style,
                summary,
                redact_names,
            )| {
                RedactionConfig {
                    allow_all_keys,
                    allowed_keys,
                    ignored_keys,
                    blocked_key_patterns: blocked.into_iter().collect(),
                    action,
                    mask_style,
                    summary,
                    redact_names,
                    hash_key: Some(Secret("0123456789abcdef0123".into())),
                    ..Default::default()
                }
            },
        )
}

/// A path's result: the request, encoded, and the counts per rule.
type Redacted = (Vec<u8>, HashMap<&'static str, u64>);

/// Redacts `bytes` on the wire and `decoded` on the decoded path with the same rules.
fn both(
    config: RedactionConfig,
    signal: Signal,
    bytes: &[u8],
    mut decoded: Batch,
) -> (Redacted, Redacted) {
    let redactor = Redactor::new(config).unwrap();
    let wire = redactor
        .redact_encoded(signal, bytes)
        .expect("a canonical request needs no fallback")
        .unwrap_or_else(|| bytes.to_vec());
    let wire_counts = redactor.take_counts();
    redactor.redact_batch(&mut decoded);
    let decoded_counts = redactor.take_counts();
    (
        (wire, wire_counts),
        (decoded.to_bytes().to_vec(), decoded_counts),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn traces_redact_alike_on_the_wire_and_decoded(request in traces(), config in config()) {
        let bytes = request.encode_to_vec();
        let ((wire, wire_counts), (decoded, decoded_counts)) =
            both(config, Signal::Traces, &bytes, Batch::from_traces(request.resource_spans));
        prop_assert_eq!(
            ExportTraceServiceRequest::decode(&wire[..]).unwrap(),
            ExportTraceServiceRequest::decode(&decoded[..]).unwrap()
        );
        prop_assert_eq!(wire_counts, decoded_counts);
    }

    #[test]
    fn logs_redact_alike_on_the_wire_and_decoded(request in logs(), config in config()) {
        let bytes = request.encode_to_vec();
        let ((wire, wire_counts), (decoded, decoded_counts)) =
            both(config, Signal::Logs, &bytes, Batch::from_logs(request.resource_logs));
        prop_assert_eq!(
            ExportLogsServiceRequest::decode(&wire[..]).unwrap(),
            ExportLogsServiceRequest::decode(&decoded[..]).unwrap()
        );
        prop_assert_eq!(wire_counts, decoded_counts);
    }

    #[test]
    fn metrics_redact_alike_on_the_wire_and_decoded(request in metrics_request(), config in config()) {
        let bytes = request.encode_to_vec();
        let ((wire, wire_counts), (decoded, decoded_counts)) =
            both(config, Signal::Metrics, &bytes, Batch::from_metrics(request.resource_metrics));
        prop_assert_eq!(
            ExportMetricsServiceRequest::decode(&wire[..]).unwrap(),
            ExportMetricsServiceRequest::decode(&decoded[..]).unwrap()
        );
        prop_assert_eq!(wire_counts, decoded_counts);
    }
}

#[test]
fn an_unchanged_request_is_not_copied() {
    let redactor = Redactor::new(RedactionConfig {
        allow_all_keys: true,
        ..Default::default()
    })
    .unwrap();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "GET /items".into(),
                    attributes: vec![key_value(
                        "http.route".into(),
                        Some(AnyValue {
                            value: Some(any_value::Value::StringValue("/items/{id}".into())),
                        }),
                    )],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let bytes = request.encode_to_vec();
    assert!(redactor
        .redact_encoded(Signal::Traces, &bytes)
        .unwrap()
        .is_none());
}

#[test]
fn a_resource_sent_twice_falls_back_to_the_decoded_path() {
    let redactor = Redactor::new(RedactionConfig::default()).unwrap();
    let resource = Resource {
        attributes: vec![key_value("k".into(), None)],
        ..Default::default()
    };
    let mut resource_spans = Vec::new();
    for _ in 0..2 {
        // field 1 (resource) twice: a decoder merges them
        prost::encoding::message::encode(1, &resource, &mut resource_spans);
    }
    let mut request = Vec::new();
    prost::encoding::bytes::encode(1, &resource_spans, &mut request);
    assert!(redactor.redact_encoded(Signal::Traces, &request).is_err());
    let mut batch = Batch::from_encoded_parts(Signal::Traces, vec![request.into()], 0);
    redactor.redact(&mut batch);
    let resource = batch.traces_mut()[0].resource.clone().unwrap();
    assert!(
        resource.attributes.is_empty(),
        "redacted on the decoded path"
    );
}

/// A traces request whose one span has the attribute `key` with the string `value` as
/// raw bytes (which prost would refuse to encode when they are not UTF-8).
fn request_with_raw_value(key: &str, value: &[u8]) -> Vec<u8> {
    let mut any_value = Vec::new();
    prost::encoding::bytes::encode(1, &value.to_vec(), &mut any_value);
    let mut attribute = Vec::new();
    prost::encoding::string::encode(1, &key.to_string(), &mut attribute);
    prost::encoding::bytes::encode(2, &any_value, &mut attribute);
    let mut span = Vec::new();
    prost::encoding::bytes::encode(9, &attribute, &mut span);
    let mut scope_spans = Vec::new();
    prost::encoding::bytes::encode(2, &span, &mut scope_spans);
    let mut resource_spans = Vec::new();
    prost::encoding::bytes::encode(2, &scope_spans, &mut resource_spans);
    let mut request = Vec::new();
    prost::encoding::bytes::encode(1, &resource_spans, &mut request);
    request
}

#[test]
fn a_string_is_checked_for_utf8_only_where_a_rule_can_match_it() {
    let redactor = Redactor::new(RedactionConfig {
        allow_all_keys: true,
        ..Default::default()
    })
    .unwrap();
    // no detector can match bytes with no digit, `@`, colon or capital: left as they came
    let clean = request_with_raw_value("k", b"plain \xff words");
    assert!(redactor
        .redact_encoded(Signal::Traces, &clean)
        .unwrap()
        .is_none());
    // an `@` and a dot make the email detector a candidate: the text must be UTF-8, and
    // the walk hands the request to the decoded path (whose decoding refuses it)
    let candidate = request_with_raw_value("k", b"jane\xff@example.com");
    assert!(redactor.redact_encoded(Signal::Traces, &candidate).is_err());
    let valid = request_with_raw_value("k", b"jane@example.com");
    let redacted = redactor.redact_encoded(Signal::Traces, &valid).unwrap();
    assert!(redacted.is_some_and(|bytes| !bytes.windows(16).any(|w| w == b"jane@example.com")));
}

#[test]
fn the_walk_keeps_its_buffers_only_up_to_their_limit() {
    let redactor = Redactor::new(RedactionConfig {
        allow_all_keys: true,
        ..Default::default()
    })
    .unwrap();
    let kept = |redactor: &Redactor| {
        let buffers = redactor.walk_buffers.borrow();
        buffers.arena.capacity() + buffers.scratch.capacity()
    };
    let small = request_with_raw_value("k", b"mail jane@example.com");
    redactor.redact_encoded(Signal::Traces, &small).unwrap();
    assert!(kept(&redactor) > 0, "a small request's buffers are kept");
    let huge_value = "jane@example.com ".repeat(super::BUFFERS_KEPT_BYTES / 8);
    let huge = request_with_raw_value("k", huge_value.as_bytes());
    let redacted = redactor.redact_encoded(Signal::Traces, &huge).unwrap();
    assert!(redacted.is_some());
    assert_eq!(kept(&redactor), 0, "buffers past the limit are given back");
}
