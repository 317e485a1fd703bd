use super::*;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    number_data_point, Gauge, Metric, NumberDataPoint, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
use proptest::prelude::*;

fn resource(n: usize) -> Option<Resource> {
    let value = AnyValue {
        value: Some(any_value::Value::StringValue(format!("service-{n}"))),
    };
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(value),
            ..Default::default()
        }],
        ..Default::default()
    })
}

pub fn resource_spans(resources: usize, spans: usize) -> Vec<ResourceSpans> {
    (0..resources)
        .map(|r| ResourceSpans {
            resource: resource(r),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|s| Span {
                        trace_id: vec![r as u8 + 1; 16],
                        span_id: vec![s as u8 + 1; 8],
                        name: format!("span-{r}-{s}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            schema_url: String::new(),
        })
        .collect()
}

/// An encoded traces batch of `resources` resources with `spans` spans each.
pub fn traces_batch(resources: usize, spans: usize) -> Batch {
    let request = ExportTraceServiceRequest {
        resource_spans: resource_spans(resources, spans),
    };
    Batch::from_request(Signal::Traces, Bytes::from(request.encode_to_vec()))
        .unwrap()
        .batch
}

fn metrics_request() -> ExportMetricsServiceRequest {
    let point = |v: f64| NumberDataPoint {
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let gauge = Metric {
        name: "g".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![point(1.0), point(2.0)],
        })),
        ..Default::default()
    };
    let sum = Metric {
        name: "s".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![point(3.0), point(4.0), point(5.0)],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(0),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![gauge, sum],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs_request(records: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(0),
            scope_logs: vec![ScopeLogs {
                log_records: (0..records)
                    .map(|i| LogRecord {
                        severity_text: format!("l{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn wire_counts_match_decoded_counts_for_every_signal() {
    let traces = traces_batch(3, 4);
    assert_eq!(traces.items(), 12);
    let metrics = Batch::from_request(
        Signal::Metrics,
        Bytes::from(metrics_request().encode_to_vec()),
    )
    .unwrap()
    .batch;
    assert_eq!(metrics.items(), 5);
    let logs = Batch::from_request(Signal::Logs, Bytes::from(logs_request(7).encode_to_vec()))
        .unwrap()
        .batch;
    assert_eq!(logs.items(), 7);
    for mut batch in [traces, metrics, logs] {
        let wire = batch.items();
        batch.decode();
        batch.recount();
        assert_eq!(batch.items(), wire);
    }
}

#[test]
fn merged_encoded_batches_concatenate_into_one_valid_request() {
    let mut a = traces_batch(1, 2);
    a.merge(traces_batch(2, 3));
    assert!(a.is_encoded());
    assert_eq!(a.items(), 8);
    let decoded = ExportTraceServiceRequest::decode(a.to_bytes()).unwrap();
    assert_eq!(decoded.resource_spans.len(), 3);
}

#[test]
fn merging_decoded_with_encoded_decodes_both() {
    let mut a = Batch::from_traces(resource_spans(1, 1));
    a.merge(traces_batch(1, 2));
    assert_eq!(a.items(), 3);
    assert_eq!(a.traces_mut().len(), 2);
}

#[test]
fn encoding_a_decoded_batch_round_trips() {
    let original = resource_spans(2, 2);
    let batch = Batch::from_traces(original.clone());
    let decoded = ExportTraceServiceRequest::decode(batch.to_bytes()).unwrap();
    assert_eq!(decoded.resource_spans, original);
    assert_eq!(batch.encoded_len(), batch.to_bytes().len());
}

#[test]
fn splitting_metrics_divides_points_and_keeps_them_all() {
    let mut batch = Batch::from_request(
        Signal::Metrics,
        Bytes::from(metrics_request().encode_to_vec()),
    )
    .unwrap()
    .batch;
    let front = batch.split_off_front(3);
    assert_eq!((front.items(), batch.items()), (3, 2));
    let mut front = front;
    let names: Vec<String> = front.metrics_mut()[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(names, vec!["g", "s"]);
}

#[test]
fn splitting_logs_keeps_order() {
    let mut batch = Batch::from_logs(logs_request(5).resource_logs);
    let mut front = batch.split_off_front(2);
    let texts: Vec<String> = front.logs_mut()[0].scope_logs[0]
        .log_records
        .iter()
        .map(|l| l.severity_text.clone())
        .collect();
    assert_eq!(texts, vec!["l0", "l1"]);
    assert_eq!(batch.items(), 3);
}

proptest! {
    #[test]
    fn wire_walk_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for signal in Signal::ALL {
            let _ = wire::count_items(signal, &bytes);
        }
    }

    #[test]
    fn wire_walk_accepts_whatever_prost_decodes_with_the_same_count(resources in 0usize..4, spans in 0usize..6, cut in 0usize..64) {
        let bytes = ExportTraceServiceRequest { resource_spans: resource_spans(resources, spans) }.encode_to_vec();
        prop_assert_eq!(wire::count_items(Signal::Traces, &bytes), Ok(resources * spans));
        let truncated = &bytes[..bytes.len().saturating_sub(cut)];
        if let Ok(count) = wire::count_items(Signal::Traces, truncated) {
            let decoded = ExportTraceServiceRequest::decode(truncated);
            prop_assert!(decoded.is_ok(), "the wire walk accepted what prost rejects");
            prop_assert_eq!(count, count_spans(&decoded.unwrap().resource_spans));
        }
    }

    #[test]
    fn split_then_merge_preserves_every_span(resources in 1usize..5, spans in 1usize..7, max in 1usize..10) {
        let mut batch = traces_batch(resources, spans);
        let mut parts = Vec::new();
        while batch.items() > 0 {
            let part = batch.split_off_front(max);
            prop_assert!(part.items() <= max && part.items() > 0);
            parts.push(part);
        }
        let mut names = Vec::new();
        for mut part in parts {
            names.extend(part.traces_mut().iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).map(|s| s.name.clone()));
        }
        let expected: Vec<String> = resource_spans(resources, spans).iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).map(|s| s.name.clone()).collect();
        prop_assert_eq!(names, expected);
    }
}

/// How much larger decoded payloads are than their encoding, per signal, measured with
/// the allocator's count of bytes held. Run by hand (`--ignored`) to check
/// [`DECODED_BYTES_PER_ENCODED_BYTE`]: other tests allocate concurrently otherwise.
#[test]
#[ignore]
fn decoded_size() {
    use crate::memory::held_bytes;
    let requests = [
        (Signal::Traces, realistic_traces().encode_to_vec()),
        (Signal::Metrics, realistic_metrics().encode_to_vec()),
        (Signal::Logs, realistic_logs().encode_to_vec()),
    ];
    for (signal, encoded) in requests {
        let copies: Vec<Batch> = (0..200)
            .map(|_| Batch::from_encoded_parts(signal, vec![Bytes::from(encoded.clone())], 0))
            .collect();
        let before = held_bytes().unwrap();
        let decoded: Vec<Batch> = copies
            .into_iter()
            .map(|mut b| {
                b.decode();
                b
            })
            .collect();
        let grown = held_bytes().unwrap().saturating_sub(before) as f64;
        let ratio = grown / (200 * encoded.len()) as f64;
        println!("{signal}: {ratio:.2} bytes decoded per byte encoded");
        drop(decoded);
    }
}

/// Spans like an instrumented HTTP server's: ids, times, eight string attributes.
fn realistic_traces() -> ExportTraceServiceRequest {
    let attribute = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let spans = (0..100)
        .map(|i| Span {
            trace_id: vec![i as u8; 16],
            span_id: vec![i as u8; 8],
            parent_span_id: vec![1; 8],
            name: format!("GET /api/v1/items/{i}"),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                attribute("http.request.method", "GET"),
                attribute("url.path", "/api/v1/items/12345"),
                attribute("server.address", "items.internal.example.com"),
                attribute("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                attribute("http.route", "/api/v1/items/{id}"),
                attribute("network.peer.address", "10.1.2.3"),
                attribute("http.response.status_code", "200"),
                attribute("client.address", "192.0.2.7"),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(0),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// A string attribute.
pub fn text_attribute(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// Sum points with two attributes, like an HTTP server's request counter.
fn realistic_metrics() -> ExportMetricsServiceRequest {
    let points = (0..100)
        .map(|i| NumberDataPoint {
            attributes: vec![
                text_attribute("http.route", "/api/v1/items/{id}"),
                text_attribute("user_id", &format!("user-{i}")),
            ],
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            value: Some(number_data_point::Value::AsDouble(i as f64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(0),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.requests".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Log records with a line of text and three attributes.
fn realistic_logs() -> ExportLogsServiceRequest {
    let records = (0..100)
        .map(|i| LogRecord {
            time_unix_nano: 1,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "GET /api/v1/items/{i} 200 12ms client=10.1.2.3"
                ))),
            }),
            attributes: vec![
                text_attribute("http.method", "GET"),
                text_attribute("http.status_code", "200"),
                text_attribute("logger", "access"),
            ],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(0),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
