//! The `routing` connector dividing one request of 100 realistic spans (~470 bytes each)
//! as the upstream pipeline hands it over: by resource on the encoded request (read on
//! the wire, the bytes passed on as they came), by a span condition (decoding included),
//! and by a span condition on a batch already decoded (an upstream processor decoded
//! it). `cargo bench --bench routing`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sieve::connectors::routing::{Router, RoutingConfig};
use sieve::model::{Batch, Signal};

#[path = "common/request.rs"]
mod request;

fn batch() -> Batch {
    Batch::from_request(Signal::Traces, request::traces_request(100))
        .unwrap()
        .batch
}

fn router(yaml: &str) -> Router {
    let config: RoutingConfig = serde_yaml::from_str(yaml).unwrap();
    Router::new(&config).unwrap()
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing_100_spans");
    group.throughput(Throughput::Elements(100));
    let by_resource = router(
        r#"
table:
  - condition: attributes["service.name"] == "checkout"
    pipelines: [traces/checkout]
  - condition: attributes["service.name"] == "items"
    pipelines: [traces/items]
default_pipelines: [traces/other]
"#,
    );
    group.bench_function("resource_on_the_wire", |b| {
        b.iter_batched(
            batch,
            |batch| by_resource.route(batch),
            BatchSize::SmallInput,
        )
    });
    let by_span = router(
        r#"
table:
  - context: span
    condition: attributes["http.response.status_code"] >= 500
    pipelines: [traces/errors]
  - context: span
    condition: kind == SPAN_KIND_CLIENT
    pipelines: [traces/clients]
default_pipelines: [traces/other]
"#,
    );
    group.bench_function("span_condition_decoding", |b| {
        b.iter_batched(batch, |batch| by_span.route(batch), BatchSize::SmallInput)
    });
    let decoded = || {
        let mut batch = batch();
        batch.decode();
        batch
    };
    group.bench_function("span_condition_decoded", |b| {
        b.iter_batched(decoded, |batch| by_span.route(batch), BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
