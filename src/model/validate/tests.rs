use super::*;
use crate::model::{count_data_points, count_log_records, count_spans};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message as _;

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

fn attribute(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
        ..Default::default()
    }
}

/// Attributes of every value kind, a map and an array among them.
fn attributes() -> Vec<KeyValue> {
    let map = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![attribute("inner", string("ünïcode"))],
        })),
    };
    let array = AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![string("a").unwrap(), map.clone()],
        })),
    };
    let value = |v| Some(AnyValue { value: Some(v) });
    vec![
        attribute("s", string("text")),
        attribute("b", value(any_value::Value::BoolValue(true))),
        attribute("i", value(any_value::Value::IntValue(-7))),
        attribute("d", value(any_value::Value::DoubleValue(1.5))),
        attribute("y", value(any_value::Value::BytesValue(vec![0xff, 0]))),
        attribute("m", Some(map)),
        attribute("a", Some(array)),
    ]
}

fn resource(name: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![attribute("service.name", string(name))],
        dropped_attributes_count: 1,
        entity_refs: vec![EntityRef {
            schema_url: "u".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            description_keys: vec!["d".into()],
        }],
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        version: "1".into(),
        attributes: attributes(),
        dropped_attributes_count: 2,
    })
}

fn span(n: u8) -> Span {
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        trace_state: "a=b".into(),
        parent_span_id: vec![1; 8],
        flags: 1,
        name: format!("span {n}"),
        kind: 2,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: attributes(),
        dropped_attributes_count: 1,
        events: vec![span::Event {
            time_unix_nano: 3,
            name: "event".into(),
            attributes: attributes(),
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 1,
        links: vec![span::Link {
            trace_id: vec![2; 16],
            span_id: vec![2; 8],
            trace_state: "c=d".into(),
            attributes: attributes(),
            dropped_attributes_count: 1,
            flags: 1,
        }],
        dropped_links_count: 1,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
    }
}

/// Two resources of two spans each.
fn traces() -> Vec<u8> {
    let resource_spans = |name: &str, first: u8| ResourceSpans {
        resource: resource(name),
        scope_spans: vec![ScopeSpans {
            scope: scope(),
            spans: vec![span(first), span(first + 1)],
            schema_url: "s".into(),
        }],
        schema_url: "r".into(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![resource_spans("a", 1), resource_spans("b", 3)],
    }
    .encode_to_vec()
}

fn log_record(n: u8) -> LogRecord {
    LogRecord {
        time_unix_nano: 1,
        observed_time_unix_nano: 2,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: attributes(),
            })),
        }),
        attributes: attributes(),
        dropped_attributes_count: 1,
        flags: 1,
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        event_name: "e".into(),
    }
}

fn logs() -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("a"),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: vec![log_record(1), log_record(2), log_record(3)],
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
    .encode_to_vec()
}

fn exemplars() -> Vec<Exemplar> {
    vec![Exemplar {
        filtered_attributes: attributes(),
        time_unix_nano: 1,
        span_id: vec![1; 8],
        trace_id: vec![1; 16],
        value: Some(exemplar::Value::AsInt(3)),
    }]
}

fn number_point(v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: exemplars(),
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(v)),
    }
}

fn metric(name: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        description: "d".into(),
        unit: "1".into(),
        metadata: attributes(),
        data: Some(data),
    }
}

/// One metric of every type: 2 + 2 + 1 + 1 + 1 data points.
fn metrics() -> Vec<u8> {
    let histogram = HistogramDataPoint {
        attributes: attributes(),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        count: 3,
        sum: Some(4.0),
        bucket_counts: vec![1, 2],
        explicit_bounds: vec![1.0],
        exemplars: exemplars(),
        flags: 0,
        min: Some(0.5),
        max: Some(9.0),
    };
    let buckets = Some(Buckets {
        offset: -2,
        bucket_counts: vec![1, 300, 0],
    });
    let exponential = ExponentialHistogramDataPoint {
        attributes: attributes(),
        count: 301,
        scale: -3,
        zero_count: 1,
        positive: buckets.clone(),
        negative: buckets,
        exemplars: exemplars(),
        zero_threshold: 0.1,
        ..Default::default()
    };
    let summary = SummaryDataPoint {
        attributes: attributes(),
        count: 2,
        sum: 3.0,
        quantile_values: vec![ValueAtQuantile {
            quantile: 0.5,
            value: 1.0,
        }],
        ..Default::default()
    };
    let metrics = vec![
        metric(
            "gauge",
            metric::Data::Gauge(Gauge {
                data_points: vec![number_point(1.0), number_point(2.0)],
            }),
        ),
        metric(
            "sum",
            metric::Data::Sum(Sum {
                data_points: vec![number_point(1.0), number_point(2.0)],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        metric(
            "histogram",
            metric::Data::Histogram(Histogram {
                data_points: vec![histogram],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "exponential",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![exponential],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "summary",
            metric::Data::Summary(Summary {
                data_points: vec![summary],
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("a"),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics,
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
    .encode_to_vec()
}

fn request(signal: Signal) -> Vec<u8> {
    match signal {
        Signal::Traces => traces(),
        Signal::Metrics => metrics(),
        Signal::Logs => logs(),
    }
}

/// prost's item count for `buf`, or its error.
fn decoded_items(signal: Signal, buf: &[u8]) -> Result<usize, prost::DecodeError> {
    Ok(match signal {
        Signal::Traces => count_spans(&ExportTraceServiceRequest::decode(buf)?.resource_spans),
        Signal::Metrics => {
            count_data_points(&ExportMetricsServiceRequest::decode(buf)?.resource_metrics)
        }
        Signal::Logs => count_log_records(&ExportLogsServiceRequest::decode(buf)?.resource_logs),
    })
}

/// The bytes that go on after the check, as the receivers take them
/// ([`crate::model::Batch::from_request`]): the request, or its copy without what was
/// refused; none when nothing was acceptable.
fn passed_on(signal: Signal, buf: &[u8], checked: &Checked) -> Vec<u8> {
    match crate::model::Batch::from_request(signal, bytes::Bytes::copy_from_slice(buf)) {
        Ok(admitted) => {
            assert_eq!(admitted.batch.items(), checked.accepted);
            admitted.batch.to_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The position of the first occurrence of `needle`.
fn find(buf: &[u8], needle: &[u8]) -> usize {
    buf.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn valid_requests_of_every_signal_pass_untouched_with_the_decoders_counts() {
    for (signal, items) in [(Signal::Traces, 4), (Signal::Metrics, 7), (Signal::Logs, 3)] {
        let buf = request(signal);
        let checked = check_request(signal, &buf).unwrap();
        assert_eq!(checked.accepted, items, "{signal}");
        assert_eq!(decoded_items(signal, &buf).unwrap(), items, "{signal}");
        assert_eq!(checked.refused, 0);
        assert!(!checked.needs_rewrite());
    }
}

#[test]
fn invalid_utf8_in_a_span_name_refuses_that_span_only() {
    let mut buf = traces();
    let at = find(&buf, b"span 2");
    buf[at + 5] = 0xff;
    assert!(
        decoded_items(Signal::Traces, &buf).is_err(),
        "prost refuses it"
    );
    let checked = check_request(Signal::Traces, &buf).unwrap();
    assert_eq!((checked.accepted, checked.refused), (3, 1));
    assert_eq!(checked.defect, Some(Defect::InvalidUtf8));
    let rest = without_refused(Signal::Traces, &buf, &checked);
    assert_eq!(decoded_items(Signal::Traces, &rest).unwrap(), 3);
    let names: Vec<String> = ExportTraceServiceRequest::decode(rest.as_slice())
        .unwrap()
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, ["span 1", "span 3", "span 4"]);
}

#[test]
fn invalid_utf8_deep_in_an_attribute_map_refuses_the_item() {
    let mut buf = logs();
    // "ünïcode" is twice in the scope's attributes; the third is in the first record
    let word = "ünïcode".as_bytes();
    let mut at = 0;
    for _ in 0..3 {
        at += find(&buf[at..], word) + 1;
    }
    buf[at] = 0x41; // cuts the two-byte "ü" in half
    let checked = check_request(Signal::Logs, &buf).unwrap();
    assert_eq!((checked.accepted, checked.refused), (2, 1));
    let rest = without_refused(Signal::Logs, &buf, &checked);
    assert_eq!(decoded_items(Signal::Logs, &rest).unwrap(), 2);
}

#[test]
fn a_bad_resource_refuses_its_items_and_keeps_the_other_resource() {
    let mut buf = traces();
    let at = find(&buf, b"service.name");
    buf[at] = 0xc0; // an overlong encoding is never UTF-8
    let checked = check_request(Signal::Traces, &buf).unwrap();
    assert_eq!((checked.accepted, checked.refused), (2, 2));
    let rest = without_refused(Signal::Traces, &buf, &checked);
    let decoded = ExportTraceServiceRequest::decode(rest.as_slice()).unwrap();
    assert_eq!(decoded.resource_spans.len(), 1);
    assert_eq!(count_spans(&decoded.resource_spans), 2);
}

#[test]
fn a_bad_metric_name_refuses_that_metrics_points() {
    let mut buf = metrics();
    let at = find(&buf, b"histogram");
    buf[at] = 0xff;
    let checked = check_request(Signal::Metrics, &buf).unwrap();
    assert_eq!((checked.accepted, checked.refused), (6, 1));
    let rest = without_refused(Signal::Metrics, &buf, &checked);
    let decoded = ExportMetricsServiceRequest::decode(rest.as_slice()).unwrap();
    let names: Vec<&str> = decoded.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["gauge", "sum", "exponential", "summary"]);
}

/// A request of one span whose one attribute nests `levels` arrays, with an unknown
/// field in the innermost value when `unknown_innermost`. Built by hand: prost would
/// refuse to build what it cannot decode.
fn nested_span_request(levels: usize, unknown_innermost: bool) -> Vec<u8> {
    let mut value = delimited(1, b"x");
    if unknown_innermost {
        value.extend([0xf8, 0x01, 0x01]); // field 31, varint 1
    }
    for _ in 0..levels {
        value = delimited(5, &delimited(1, &value));
    }
    let key_value = [delimited(1, b"deep"), delimited(2, &value)].concat();
    let span = [
        delimited(1, &[1; 16]),
        delimited(2, &[1; 8]),
        delimited(9, &key_value),
    ]
    .concat();
    delimited(1, &delimited(2, &delimited(2, &span)))
}

#[test]
fn nesting_is_refused_exactly_where_prost_refuses_it() {
    for unknown in [false, true] {
        for levels in 40..52 {
            let buf = nested_span_request(levels, unknown);
            let prost_ok = decoded_items(Signal::Traces, &buf).is_ok();
            let checked = check_request(Signal::Traces, &buf).unwrap();
            assert_eq!(
                checked.accepted == 1,
                prost_ok,
                "levels {levels}, unknown field {unknown}"
            );
            if !prost_ok {
                assert_eq!(checked.defect, Some(Defect::TooDeep));
            }
        }
    }
    assert!(
        check_request(Signal::Traces, &nested_span_request(45, false))
            .unwrap()
            .refused
            == 0
    );
}

#[test]
fn a_known_field_with_the_wrong_wire_type_is_refused() {
    // a log record whose severity_text (3) is a varint
    let record = [0x18, 0x01];
    let buf = wrap_log_record(&record);
    assert!(decoded_items(Signal::Logs, &buf).is_err());
    let checked = check_request(Signal::Logs, &buf).unwrap();
    assert_eq!(checked.defect, Some(Defect::WireType));
    assert_eq!(checked.accepted, 0);
}

#[test]
fn packed_and_unpacked_repeated_numbers_are_both_accepted_when_whole() {
    // histogram data point: bucket_counts (6) packed, 16 bytes; then unpacked
    let mut packed = vec![0x32, 16];
    packed.extend([0u8; 16]);
    let mut unpacked = vec![0x31];
    unpacked.extend([0u8; 8]);
    let mut broken = vec![0x32, 12];
    broken.extend([0u8; 12]);
    for (point, ok) in [(packed, true), (unpacked, true), (broken, false)] {
        let buf = wrap_histogram_point(&point);
        assert_eq!(decoded_items(Signal::Metrics, &buf).is_ok(), ok);
        assert_eq!(
            check_request(Signal::Metrics, &buf).unwrap().accepted == 1,
            ok
        );
    }
}

#[test]
fn a_varint_over_64_bits_is_refused_like_prost_refuses_it() {
    // time_unix_nano would be fixed64; dropped_attributes_count (7) is a varint
    let mut record = vec![0x38];
    record.extend([0xff; 9]);
    record.push(0x02);
    let buf = wrap_log_record(&record);
    assert!(decoded_items(Signal::Logs, &buf).is_err());
    let checked = check_request(Signal::Logs, &buf).unwrap();
    assert_eq!(checked.defect, Some(Defect::Malformed));
    record[10] = 0x01;
    let buf = wrap_log_record(&record);
    assert!(decoded_items(Signal::Logs, &buf).is_ok());
    assert_eq!(check_request(Signal::Logs, &buf).unwrap().accepted, 1);
}

/// Found in review: a resource with no scopes and an invalid schema URL holds no items,
/// but it must still be left out, or prost refuses the whole request.
#[test]
fn a_bad_frame_without_items_is_still_left_out() {
    let buf = [
        0x0a, 0x04, 0x12, 0x02, 0x12, 0x00, 0x0a, 0x03, 0x1a, 0x01, 0xff,
    ];
    assert!(decoded_items(Signal::Traces, &buf).is_err());
    let checked = check_request(Signal::Traces, &buf).unwrap();
    assert_eq!(checked.accepted, 1);
    let passed = passed_on(Signal::Traces, &buf, &checked);
    assert_eq!(decoded_items(Signal::Traces, &passed).unwrap(), 1);
}

/// Found in review: Metric.data is a oneof, so prost keeps only the last kind of data a
/// metric carries; the points of the others would be acknowledged and then vanish.
#[test]
fn a_metric_with_two_kinds_of_data_is_refused() {
    // one metric: a gauge of one point, then a sum of one point
    let buf = [
        0x0a, 0x0c, 0x12, 0x0a, 0x12, 0x08, 0x2a, 0x02, 0x0a, 0x00, 0x3a, 0x02, 0x0a, 0x00,
    ];
    assert_eq!(
        decoded_items(Signal::Metrics, &buf).unwrap(),
        1,
        "prost keeps one"
    );
    let checked = check_request(Signal::Metrics, &buf).unwrap();
    assert_eq!((checked.accepted, checked.refused), (0, 2));
    assert_eq!(checked.defect, Some(Defect::OneofConflict));
    // the same kind twice merges, and both points decode
    let same = [
        0x0a, 0x0c, 0x12, 0x0a, 0x12, 0x08, 0x2a, 0x02, 0x0a, 0x00, 0x2a, 0x02, 0x0a, 0x00,
    ];
    assert_eq!(decoded_items(Signal::Metrics, &same).unwrap(), 2);
    assert_eq!(check_request(Signal::Metrics, &same).unwrap().accepted, 2);
}

#[test]
fn broken_outer_framing_refuses_the_whole_request() {
    let buf = traces();
    assert!(check_request(Signal::Traces, &buf[..buf.len() - 3]).is_err());
    assert!(check_request(Signal::Traces, &[0x08, 1]).is_err());
}

fn delimited(field: u32, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(content.len() as u64, &mut out);
    out.extend(content);
    out
}

fn wrap_log_record(record: &[u8]) -> Vec<u8> {
    delimited(1, &delimited(2, &delimited(2, record)))
}

fn wrap_histogram_point(point: &[u8]) -> Vec<u8> {
    let histogram = delimited(1, point);
    let metric = delimited(9, &histogram);
    delimited(1, &delimited(2, &delimited(2, &metric)))
}

/// One way of damaging a request.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Turns the byte into one that is never valid UTF-8 (aims at string content).
    Poison(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1..4usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Poison),
    ]
}

fn apply(buf: &mut Vec<u8>, mutation: &Mutation) {
    if buf.is_empty() {
        return;
    }
    match mutation {
        Mutation::Set(i, b) => {
            let i = i % buf.len();
            buf[i] = *b;
        }
        Mutation::Insert(i, bytes) => {
            let i = i % buf.len();
            buf.splice(i..i, bytes.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = i % buf.len();
            let end = (i + n).min(buf.len());
            buf.drain(i..end);
        }
        Mutation::Poison(i) => {
            let i = i % buf.len();
            buf[i] = 0xff;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The property the edge exists for: what it accepts, prost decodes, with as many
    /// items as the check counted.
    #[test]
    fn edge_accepts_implies_prost_decodes(
        signal in prop_oneof![Just(Signal::Traces), Just(Signal::Metrics), Just(Signal::Logs)],
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut buf = request(signal);
        for m in &mutations {
            apply(&mut buf, m);
        }
        if let Ok(checked) = check_request(signal, &buf) {
            let passed = passed_on(signal, &buf, &checked);
            let expected = if passed.is_empty() { 0 } else { checked.accepted };
            prop_assert_eq!(decoded_items(signal, &passed).ok(), Some(expected));
            let again = check_request(signal, &passed).unwrap();
            prop_assert_eq!((again.accepted, again.refused), (expected, 0));
        }
    }

    /// Arbitrary bytes never make the check panic, and what it accepts of them decodes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for signal in Signal::ALL {
            if let Ok(checked) = check_request(signal, &bytes) {
                let passed = passed_on(signal, &bytes, &checked);
                let expected = if passed.is_empty() { 0 } else { checked.accepted };
                prop_assert_eq!(decoded_items(signal, &passed).ok(), Some(expected));
            }
        }
    }
}

/// A key wider than 32 bits whose field number alone fits in 32 bits (found by the
/// `connectors` fuzz target): prost refuses it, so the span holding it is refused and
/// the other kept, never accepted and lost later.
#[test]
fn a_key_wider_than_32_bits_refuses_its_span() {
    let mut bad = span(1).encode_to_vec();
    // key 0x3b_c824_2035: wire type 5 (fixed32), field number 0x7790_4406
    bad.extend_from_slice(&[0xb5, 0xc0, 0x90, 0xc8, 0x3b, 0, 0, 0, 0]);
    let good = span(2).encode_to_vec();
    let scope_spans = [delimited(2, &bad), delimited(2, &good)].concat();
    let request = delimited(1, &delimited(2, &scope_spans));
    assert!(
        decoded_items(Signal::Traces, &request).is_err(),
        "prost refuses it"
    );
    let checked = check_request(Signal::Traces, &request).unwrap();
    assert_eq!((checked.accepted, checked.refused), (1, 1));
    let rest = without_refused(Signal::Traces, &request, &checked);
    assert_eq!(decoded_items(Signal::Traces, &rest).unwrap(), 1);
}
