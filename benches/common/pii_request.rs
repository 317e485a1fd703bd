//! Spans like real HTTP and database spans, most of which carry PII: a user's email in
//! the URL and an attribute, the client's public IP, SQL with an address in it (about
//! 600 bytes per span). Every span changes under the default detectors.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

fn attribute(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn http_attributes(i: usize) -> Vec<KeyValue> {
    vec![
        attribute("http.request.method", "GET".into()),
        attribute(
            "url.full",
            format!(
                "https://shop.example.com/api/v1/orders?customer=jane.doe{i}@example.com&page=2"
            ),
        ),
        attribute("http.route", "/api/v1/orders".into()),
        attribute("client.address", format!("203.0.113.{}", i % 250)),
        attribute("user.email", format!("jane.doe{i}@example.com")),
        attribute(
            "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36".into(),
        ),
        attribute("http.response.status_code", "200".into()),
    ]
}

fn db_attributes(i: usize) -> Vec<KeyValue> {
    vec![
        attribute("db.system", "postgresql".into()),
        attribute("db.name", "shop".into()),
        attribute(
            "db.statement",
            format!("SELECT id, total FROM orders WHERE email = 'jane.doe{i}@example.com' AND last_ip = '198.51.100.{}' LIMIT 20", i % 250),
        ),
        attribute("server.address", "db.internal.example.com".into()),
        attribute("db.operation", "SELECT".into()),
    ]
}

/// One export request of `spans` spans, alternately an HTTP server span and the
/// database span under it.
pub fn traces_request_with_pii(spans: usize) -> Bytes {
    traces_request_with_pii_from(spans, 0)
}

/// The trace id of span `i` of a request whose traces are numbered from `first_trace`
/// (two spans to a trace), spread over all 128 bits as random ids are (samplers read the
/// low bits).
pub fn trace_id(first_trace: u64, i: usize) -> [u8; 16] {
    ((first_trace + (i / 2) as u64) as u128 * 7919 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
        .to_be_bytes()
}

/// The same, its traces numbered from `first_trace` (so that each request brings new
/// traces), every 50th span an error.
pub fn traces_request_with_pii_from(spans: usize, first_trace: u64) -> Bytes {
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: trace_id(first_trace, i).to_vec(),
            status: (first_trace > 0 && i % 50 == 49).then(|| Status {
                code: 2,
                ..Default::default()
            }),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: if i % 2 == 1 {
                (i as u64).to_be_bytes().to_vec()
            } else {
                Vec::new()
            },
            name: if i % 2 == 0 {
                "GET /api/v1/orders".into()
            } else {
                "SELECT orders".into()
            },
            kind: if i % 2 == 0 { 2 } else { 3 },
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_001_000_000 + i as u64,
            attributes: if i % 2 == 0 {
                http_attributes(i)
            } else {
                db_attributes(i)
            },
            ..Default::default()
        })
        .collect();
    let resource = Resource {
        attributes: vec![
            attribute("service.name", "shop".into()),
            attribute("host.name", "node-1".into()),
        ],
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Bytes::from(request.encode_to_vec())
}
