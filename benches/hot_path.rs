//! The hot path of a pass-through pipeline, piece by piece: request bytes → wire walk →
//! batch merge → encode → compress, against the cost of a full prost decode/encode.
//!
//! `cargo bench --bench hot_path`; each iteration handles one request of 100 spans
//! (about 47 KB, like the load run's requests).

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sieve::compression::Compression;
use sieve::model::{wire, Batch, Signal};
use sieve::processors::batch::{BatchConfig, BatchProcessor};
use sieve::processors::{DropCounter, Processor};
use std::time::Duration;

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

/// One export request of `spans` spans with realistic names and attributes.
pub fn request(spans: usize) -> Bytes {
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
                attribute("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
                attribute("http.route", "/api/v1/items/{id}"),
                attribute("network.peer.address", "10.1.2.3"),
            ],
            ..Default::default()
        })
        .collect();
    let resource = Resource { attributes: vec![attribute("service.name", "items"), attribute("host.name", "node-1")], ..Default::default() };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { resource: Some(resource), scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
    };
    Bytes::from(request.encode_to_vec())
}

fn hot_path(c: &mut Criterion) {
    let body = request(100);
    let mut group = c.benchmark_group("request_of_100_spans");
    group.throughput(Throughput::Elements(100));
    group.measurement_time(Duration::from_secs(3));

    group.bench_function("wire_walk_count", |b| b.iter(|| wire::count_items(Signal::Traces, &body).unwrap()));
    group.bench_function("prost_decode", |b| b.iter(|| ExportTraceServiceRequest::decode(body.as_ref()).unwrap()));
    let decoded = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
    group.bench_function("prost_encode", |b| b.iter(|| decoded.encode_to_vec()));

    group.bench_function("passthrough_batch_and_encode", |b| {
        let drops = DropCounter { undecodable: Default::default() };
        let mut processor = BatchProcessor::new(BatchConfig { send_batch_size: 1000, ..Default::default() }, drops);
        let mut out = Vec::new();
        b.iter(|| {
            processor.process(Batch::from_encoded(Signal::Traces, body.clone()).unwrap(), &mut out);
            for batch in out.drain(..) {
                let mut buf = BytesMut::with_capacity(batch.encoded_len());
                batch.encode_into(&mut buf);
                criterion::black_box(buf);
            }
        })
    });

    for level in [1, 6] {
        group.bench_function(format!("gzip_level_{level}"), |b| b.iter(|| Compression::Gzip.compress(&body, Some(level))));
    }
    group.bench_function("zstd_level_3", |b| b.iter(|| Compression::Zstd.compress(&body, Some(3))));
    let gz = Compression::Gzip.compress(&body, None);
    group.bench_function("gunzip", |b| b.iter(|| Compression::Gzip.decompress(&gz, 4 << 20).unwrap()));

    let json = serde_json::to_vec(&decoded).unwrap();
    group.bench_function("otlp_json_decode", |b| {
        b.iter_batched(|| json.clone(), |j| sieve::receivers::otlp::json::decode(Signal::Traces, &j).unwrap(), BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
