//! The attribute processors on one request of 100 realistic spans (~470 bytes each),
//! as receivers hand it on: `resource` rewriting only the resource on the wire (what
//! `k8s_attributes` and `resource_detection` also do per batch), and `attributes`
//! changing every span decoded, and `filter` evaluating two OTTL conditions on every
//! span (decoded). `cargo bench --bench attributes`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sieve::model::{Batch, Signal};
use sieve::processors::attributes::{AttributesConfig, AttributesProcessor};
use sieve::processors::filter::{FilterConfig, FilterProcessor};
use sieve::processors::resource::{ResourceConfig, ResourceProcessor};
use sieve::processors::Processor;

#[path = "common/request.rs"]
mod request;

fn batch() -> Batch {
    Batch::from_request(Signal::Traces, request::traces_request(100))
        .unwrap()
        .batch
}

fn attributes(c: &mut Criterion) {
    let mut group = c.benchmark_group("attributes_100_spans");
    let resource: ResourceConfig = serde_yaml::from_str(
        "attributes:
  - {key: deployment.environment, value: prod, action: upsert}
  - {key: k8s.cluster.name, value: east-1, action: insert}",
    )
    .unwrap();
    let mut resource = ResourceProcessor::new(&resource).unwrap();
    group.bench_function("resource_on_the_wire", |b| {
        b.iter_batched(
            batch,
            |batch| {
                let mut out = Vec::with_capacity(1);
                resource.process(batch, &mut out);
                out
            },
            BatchSize::SmallInput,
        )
    });
    let config: AttributesConfig = serde_yaml::from_str(
        "actions:
  - {key: environment, value: prod, action: insert}
  - {key: network.peer.address, action: hash}
include: {match_type: strict, span_names: ['GET /api/v1/items/{id} #1']}",
    )
    .unwrap();
    let mut selective = AttributesProcessor::new(&config).unwrap();
    group.bench_function("attributes_include_one_span", |b| {
        b.iter_batched(
            batch,
            |batch| {
                let mut out = Vec::with_capacity(1);
                selective.process(batch, &mut out);
                out
            },
            BatchSize::SmallInput,
        )
    });
    let config: AttributesConfig = serde_yaml::from_str(
        "actions:
  - {key: environment, value: prod, action: insert}
  - {key: network.peer.address, action: hash}",
    )
    .unwrap();
    let mut every = AttributesProcessor::new(&config).unwrap();
    group.bench_function("attributes_every_span", |b| {
        b.iter_batched(
            batch,
            |batch| {
                let mut out = Vec::with_capacity(1);
                every.process(batch, &mut out);
                out
            },
            BatchSize::SmallInput,
        )
    });
    let config: FilterConfig = serde_yaml::from_str(
        r#"traces:
  span:
    - 'attributes["http.route"] == "/healthz"'
    - 'IsMatch(name, "^health") or (kind == SPAN_KIND_INTERNAL and status.code != STATUS_CODE_ERROR)'"#,
    )
    .unwrap();
    let mut filter = FilterProcessor::new(&config).unwrap();
    group.bench_function("filter_two_conditions_keeps_all", |b| {
        b.iter_batched(
            batch,
            |batch| {
                let mut out = Vec::with_capacity(1);
                filter.process(batch, &mut out);
                out
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("decode_only", |b| {
        b.iter_batched(
            batch,
            |mut batch| {
                batch.decode();
                batch
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3));
    targets = attributes
}
criterion_main!(benches);
