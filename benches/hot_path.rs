//! The hot path of a pass-through pipeline, piece by piece: request bytes → edge check
//! (the wire walk that counts items, and the full check of every field that makes
//! accepted data decodable) → batch merge → encode → compress, against the cost of a full
//! prost decode/encode.
//!
//! `cargo bench --bench hot_path`; each iteration handles one request of 100 spans
//! (about 47 KB, like the load run's requests).

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sieve::compression::Compression;
use sieve::model::{validate, wire, Batch, Signal};
use sieve::processors::batch::{BatchConfig, BatchProcessor};
use sieve::processors::Processor;
use std::time::Duration;

#[path = "common/request.rs"]
mod request;

fn hot_path(c: &mut Criterion) {
    let body = request::traces_request(100);
    let mut group = c.benchmark_group("request_of_100_spans");
    group.throughput(Throughput::Elements(100));
    group.measurement_time(Duration::from_secs(3));

    group.bench_function("wire_walk_count", |b| {
        b.iter(|| wire::count_items(Signal::Traces, &body).unwrap())
    });
    group.bench_function("edge_check", |b| {
        b.iter(|| validate::check_request(Signal::Traces, &body).unwrap())
    });
    group.bench_function("prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(body.as_ref()).unwrap())
    });
    let decoded = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
    group.bench_function("prost_encode", |b| b.iter(|| decoded.encode_to_vec()));

    group.bench_function("passthrough_batch_and_encode", |b| {
        let mut processor = BatchProcessor::new(BatchConfig {
            send_batch_size: 1000,
            ..Default::default()
        });
        let mut out = Vec::new();
        b.iter(|| {
            processor.process(
                Batch::from_request(Signal::Traces, body.clone())
                    .unwrap()
                    .batch,
                &mut out,
            );
            for batch in out.drain(..) {
                let mut buf = BytesMut::with_capacity(batch.encoded_len());
                batch.encode_into(&mut buf);
                std::hint::black_box(buf);
            }
        })
    });

    for level in [1, 6] {
        group.bench_function(format!("gzip_level_{level}"), |b| {
            b.iter(|| Compression::Gzip.compress(&body, Some(level)))
        });
    }
    group.bench_function("zstd_level_3", |b| {
        b.iter(|| Compression::Zstd.compress(&body, Some(3)))
    });
    let gz = Compression::Gzip.compress(&body, None);
    group.bench_function("gunzip", |b| {
        b.iter(|| Compression::Gzip.decompress(&gz, 4 << 20).unwrap())
    });

    let json = serde_json::to_vec(&decoded).unwrap();
    group.bench_function("otlp_json_decode", |b| {
        b.iter_batched(
            || json.clone(),
            |j| sieve::receivers::otlp::json::decode(Signal::Traces, &j).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
