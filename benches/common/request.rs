//! The request the bench and the load generator send: one OTLP export request with
//! realistic span names and attributes (about 470 bytes per span).

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// One export request of `spans` spans with realistic names and attributes.
pub fn traces_request(spans: usize) -> Bytes {
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: (i as u128 * 7919).to_be_bytes().to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: (i as u64).to_be_bytes().to_vec(),
            name: format!("GET /api/v1/items/{{id}} #{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_001_000_000 + i as u64,
            attributes: vec![
                attribute("http.request.method", "GET"),
                attribute("url.path", "/api/v1/items/12345"),
                attribute("server.address", "items.internal.example.com"),
                attribute(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                ),
                attribute("http.route", "/api/v1/items/{id}"),
                attribute("network.peer.address", "10.1.2.3"),
            ],
            ..Default::default()
        })
        .collect();
    let resource = Resource {
        attributes: vec![
            attribute("service.name", "items"),
            attribute("host.name", "node-1"),
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
