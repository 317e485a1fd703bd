//! `spanmetrics` cost: ns per span to add encoded 100-span requests (each from one of a
//! few services, spans with a few dozen names, realistic attributes) to an aggregator
//! that already holds their series, with the default configuration, with two span
//! dimensions and exemplars, and for the decoded form; plus the cost of a flush.
//! `cargo bench --bench spanmetrics`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use sieve::connectors::spanmetrics::{Aggregator, SpanMetricsConfig};
use sieve::model::{Batch, Signal};
use std::time::Duration;

const SPANS_PER_REQUEST: usize = 100;
const REQUESTS: usize = 64;
const SERVICES: [&str; 4] = ["checkout", "cart", "payment", "catalog"];
const ROUTES: usize = 36;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(value: &str) -> Value {
    Value::StringValue(value.into())
}

/// Span `i` of request `request`: an HTTP server or client span, one in twenty an error.
fn span(request: usize, i: usize) -> Span {
    let n = request * SPANS_PER_REQUEST + i;
    let route = format!(
        "/api/v1/{}/{{id}}",
        ["orders", "items", "users", "carts"][n % 4]
    );
    let method = ["GET", "POST", "PUT"][n % 3];
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&(n as u64 / 10 + 1).to_be_bytes());
    Span {
        trace_id: trace_id.to_vec(),
        span_id: (n as u64 + 1).to_be_bytes().to_vec(),
        parent_span_id: (n as u64).to_be_bytes().to_vec(),
        name: format!("{method} {route} #{}", n % (ROUTES / 4)),
        kind: if n.is_multiple_of(2) { 2 } else { 3 },
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + (n as u64 % 997) * 173_000,
        attributes: vec![
            attribute("http.request.method", text(method)),
            attribute("http.route", text(&route)),
            attribute(
                "http.response.status_code",
                Value::IntValue(200 + i64::from(n.is_multiple_of(20)) * 300),
            ),
            attribute("server.address", text("orders.internal.example.com")),
            attribute(
                "user_agent.original",
                text("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
            ),
            attribute("network.peer.address", text("10.1.2.3")),
        ],
        status: Some(Status {
            code: if n.is_multiple_of(20) { 2 } else { 0 },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One service's request of `SPANS_PER_REQUEST` spans.
fn resource_spans(request: usize) -> ResourceSpans {
    let service = SERVICES[request % SERVICES.len()];
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                attribute("service.name", text(service)),
                attribute("service.instance.id", text(&format!("{service}-1"))),
                attribute("host.name", text("node-1")),
                attribute("telemetry.sdk.language", text("java")),
                attribute("telemetry.sdk.name", text("opentelemetry")),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: (0..SPANS_PER_REQUEST).map(|i| span(request, i)).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn encoded(request: &ResourceSpans) -> Batch {
    let bytes = ExportTraceServiceRequest {
        resource_spans: vec![request.clone()],
    }
    .encode_to_vec();
    Batch::from_encoded_parts(Signal::Traces, vec![Bytes::from(bytes)], SPANS_PER_REQUEST)
}

/// Adds every batch once (so that the series exist), then benches adding them in turn.
fn bench_add(c: &mut Criterion, name: &str, config: &SpanMetricsConfig, batches: &[Batch]) {
    let mut group = c.benchmark_group("spanmetrics");
    group.throughput(Throughput::Elements(SPANS_PER_REQUEST as u64));
    group.measurement_time(Duration::from_secs(3));
    let mut aggregator = Aggregator::new(config);
    for batch in batches {
        aggregator.add(batch);
    }
    let mut next = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            next = (next + 1) % batches.len();
            aggregator.add(&batches[next])
        })
    });
    println!("{name}: {} series held", aggregator.series());
    group.finish();
}

fn spanmetrics(c: &mut Criterion) {
    let requests: Vec<ResourceSpans> = (0..REQUESTS).map(resource_spans).collect();
    let wire: Vec<Batch> = requests.iter().map(encoded).collect();
    let decoded: Vec<Batch> = requests
        .iter()
        .map(|r| Batch::from_traces(vec![r.clone()]))
        .collect();

    let default = SpanMetricsConfig::default();
    bench_add(c, "add_encoded_default", &default, &wire);
    let dimensions: SpanMetricsConfig = serde_yaml::from_str(
        "dimensions: [{name: http.request.method}, {name: http.response.status_code}]
exemplars: {enabled: true}",
    )
    .unwrap();
    bench_add(
        c,
        "add_encoded_two_dimensions_exemplars",
        &dimensions,
        &wire,
    );
    bench_add(c, "add_decoded_default", &default, &decoded);

    let mut group = c.benchmark_group("spanmetrics");
    let mut aggregator = Aggregator::new(&default);
    for batch in &wire {
        aggregator.add(batch);
    }
    group.throughput(Throughput::Elements(aggregator.series() as u64));
    group.bench_function("flush_cumulative_per_series", |b| {
        b.iter(|| aggregator.flush(1_800_000_000_000_000_000))
    });
    group.finish();
}

criterion_group!(benches, spanmetrics);
criterion_main!(benches);
