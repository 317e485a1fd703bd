use super::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;

const SPAN: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
    {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"a","kind":2,
     "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
     "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;

fn decoded_traces(admitted: &mut Admitted) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(admitted.batch.to_bytes()).unwrap()
}

fn first_span(admitted: &mut Admitted) -> opentelemetry_proto::tonic::trace::v1::Span {
    decoded_traces(admitted).resource_spans[0].scope_spans[0].spans[0].clone()
}

fn upstream(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/otlp-json/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()
}

#[test]
fn decodes_hex_ids_integers_as_strings_or_numbers_and_enums() {
    let mut admitted = decode(Signal::Traces, SPAN.as_bytes()).unwrap();
    assert_eq!(admitted.rejected, None);
    let span = first_span(&mut admitted);
    assert_eq!(span.trace_id.len(), 16);
    assert_eq!(
        span.span_id,
        vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
    );
    assert_eq!(span.kind, 2);
    assert_eq!(span.start_time_unix_nano, 1544712660000000000);
    assert_eq!(span.end_time_unix_nano, 1544712661000000000);
    let value = span.attributes[0].value.as_ref().unwrap().value.clone();
    assert_eq!(value, Some(any_value::Value::IntValue(42)));
}

/// The transcoder against the reference: `opentelemetry-proto`'s serde mapping, on the
/// upstream examples of every signal, gives the same messages.
#[test]
fn upstream_examples_transcode_to_what_the_reference_decodes() {
    let traces = decode(Signal::Traces, &upstream("trace.json")).unwrap();
    let reference: ExportTraceServiceRequest =
        serde_json::from_slice(&upstream("trace.json")).unwrap();
    assert_eq!(
        ExportTraceServiceRequest::decode(traces.batch.to_bytes()).unwrap(),
        reference
    );
    let metrics = decode(Signal::Metrics, &upstream("metrics.json")).unwrap();
    let reference: ExportMetricsServiceRequest =
        serde_json::from_slice(&upstream("metrics.json")).unwrap();
    assert_eq!(
        ExportMetricsServiceRequest::decode(metrics.batch.to_bytes()).unwrap(),
        reference
    );
    for file in ["logs.json", "events.json"] {
        let logs = decode(Signal::Logs, &upstream(file)).unwrap();
        let reference: ExportLogsServiceRequest = serde_json::from_slice(&upstream(file)).unwrap();
        assert_eq!(
            ExportLogsServiceRequest::decode(logs.batch.to_bytes()).unwrap(),
            reference,
            "{file}"
        );
    }
}

#[test]
fn snake_case_field_names_decode_the_same() {
    let snake = SPAN
        .replace("resourceSpans", "resource_spans")
        .replace("scopeSpans", "scope_spans")
        .replace("traceId", "trace_id")
        .replace("spanId", "span_id")
        .replace("startTimeUnixNano", "start_time_unix_nano")
        .replace("intValue", "int_value");
    let mut a = decode(Signal::Traces, SPAN.as_bytes()).unwrap();
    let mut b = decode(Signal::Traces, snake.as_bytes()).unwrap();
    assert_eq!(first_span(&mut a), first_span(&mut b));
}

#[test]
fn enum_names_special_doubles_base64_and_packed_lists_decode() {
    let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h",
        "histogram":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","dataPoints":[
          {"count":"3","sum":"NaN","bucketCounts":["1",2],"explicitBounds":[0.5],"min":"-Infinity",
           "attributes":[{"key":"b","value":{"bytesValue":"/w=="}}]}]}}]}]}]}"#;
    let admitted = decode(Signal::Metrics, body.as_bytes()).unwrap();
    let request = ExportMetricsServiceRequest::decode(admitted.batch.to_bytes()).unwrap();
    let metric = &request.resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) = &metric.data
    else {
        panic!("a histogram: {metric:?}");
    };
    assert_eq!(h.aggregation_temporality, 1);
    let point = &h.data_points[0];
    assert_eq!((point.count, point.bucket_counts.clone()), (3, vec![1, 2]));
    assert!(point.sum.unwrap().is_nan());
    assert_eq!(point.min, Some(f64::NEG_INFINITY));
    assert_eq!(point.explicit_bounds, vec![0.5]);
    assert_eq!(
        point.attributes[0].value.as_ref().unwrap().value,
        Some(any_value::Value::BytesValue(vec![0xff]))
    );
}

#[test]
fn spans_with_bad_ids_are_rejected_partially() {
    let body = SPAN.replace(
        r#""spans":["#,
        r#""spans":[{"traceId":"abcd","spanId":"eee19b7ec3c1b174","name":"bad"},{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"zzz19b7ec3c1b174"},"#,
    );
    let mut admitted = decode(Signal::Traces, body.as_bytes()).unwrap();
    assert_eq!(admitted.batch.items(), 1);
    let rejected = admitted.rejected.clone().unwrap();
    assert_eq!((rejected.count, rejected.reason), (2, "invalid_id"));
    assert_eq!(first_span(&mut admitted).name, "a");
}

#[test]
fn a_request_whose_every_item_is_bad_is_refused_whole() {
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#;
    match decode(Signal::Traces, body) {
        Err(Invalid::AllRefused(r)) => assert_eq!(r.count, 1),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// JSON nests about 1.5 levels per message level, so serde_json's limit of 128 levels
/// refuses a request before its messages could be nested deeper than the decoder's 100:
/// nesting that is legal arrives, deeper nesting refuses the request with a clear error.
#[test]
fn nesting_is_bounded_by_the_json_parser_first() {
    let logs = |levels: usize| {
        let mut deep = String::from(r#"{"stringValue":"x"}"#);
        for _ in 0..levels {
            deep = format!(r#"{{"arrayValue":{{"values":[{deep}]}}}}"#);
        }
        let body = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{{"stringValue":"ok"}}}},{{"body":{deep}}}]}}]}}]}}"#
        );
        decode(Signal::Logs, body.as_bytes())
    };
    assert_eq!(logs(30).unwrap().batch.items(), 2);
    let error = logs(60).unwrap_err().to_string();
    assert!(error.contains("recursion limit"), "{error}");
}

#[test]
fn malformed_json_names_the_problem() {
    let message = |body: &[u8]| decode(Signal::Logs, body).unwrap_err().to_string();
    assert!(message(b"{\"resourceLogs\": [").contains("EOF"));
    assert!(message(b"[]").contains("object"));
    assert!(
        message(br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityText":5}]}]}]}"#)
            .contains("severity_text")
    );
    assert!(
        message(br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":-1}]}]}]}"#)
            .contains("out of range")
    );
    assert!(message(br#"{"resourceLogs":[]} x"#).contains("trailing"));
}

#[test]
fn unknown_fields_are_ignored() {
    let body = SPAN.replace(
        r#""name":"a","#,
        r#""name":"a","future":{"x":[1,{"y":null}]},"#,
    );
    let mut admitted = decode(Signal::Traces, body.as_bytes()).unwrap();
    assert_eq!(first_span(&mut admitted).name, "a");
}

/// Memory per request: the protobuf the transcoder writes stays within the documented
/// factor of the body, even for the shape that inflated 35× through a JSON tree (one
/// span with a huge number of empty attributes).
#[test]
fn output_stays_smaller_than_the_body_for_empty_attributes() {
    let attributes = vec!["{}"; 100_000].join(",");
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","attributes":[{attributes}]}}]}}]}}]}}"#
    );
    let (encoded, _) = transcode(Signal::Traces, body.as_bytes()).unwrap();
    assert!(
        encoded.len() <= body.len(),
        "{} > {}",
        encoded.len(),
        body.len()
    );
}

#[test]
fn partial_success_json_uses_the_signal_field() {
    let r = Rejected::new(Signal::Metrics, 2, "invalid_id", "m");
    assert_eq!(
        super::super::partial_success_json(&r),
        r#"{"partialSuccess":{"errorMessage":"2 data points rejected: m","rejectedDataPoints":"2"}}"#
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for signal in Signal::ALL {
                let _ = decode(signal, &bytes);
            }
        }

        /// JSON shaped like OTLP never panics the transcoder, and what it accepts decodes.
        #[test]
        fn arbitrary_json_shapes_decode_when_accepted(text in r#"\{("(resourceSpans|resource_logs|scopeSpans|spans|logRecords|traceId|intValue|value|key|body|attributes|name)":(\[|\{|"[0-9a-f]{0,34}"|-?[0-9]{1,20}|null|true),?){0,8}\}*\]*\}"#) {
            for signal in Signal::ALL {
                if let Ok(admitted) = decode(signal, text.as_bytes()) {
                    let bytes = admitted.batch.to_bytes();
                    let ok = match signal {
                        Signal::Traces => ExportTraceServiceRequest::decode(bytes).is_ok(),
                        Signal::Metrics => ExportMetricsServiceRequest::decode(bytes).is_ok(),
                        Signal::Logs => ExportLogsServiceRequest::decode(bytes).is_ok(),
                    };
                    prop_assert!(ok);
                }
            }
        }
    }
}
