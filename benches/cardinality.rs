//! Cardinality limiter cost: ns per data point with 10k tracked series (all known), and
//! at the limit (every point overflows), plus the memory a tracked series costs.
//! `cargo bench --bench cardinality`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use sieve::model::Batch;
use sieve::processors::cardinality::{CardinalityConfig, CardinalityLimiter};
use std::time::{Duration, Instant};

const POINTS: usize = 1000;

fn batch(first_user: usize) -> Batch {
    let points = (first_user..first_user + POINTS)
        .map(|i| NumberDataPoint {
            attributes: vec![
                KeyValue {
                    key: "user_id".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("user-{i}"))),
                    }),
                    ..Default::default()
                },
                KeyValue {
                    key: "route".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("/api/v1/items".into())),
                    }),
                    ..Default::default()
                },
            ],
            value: Some(number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        })
        .collect();
    let metric = Metric {
        name: "requests".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    Batch::from_metrics(vec![ResourceMetrics {
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![metric],
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn limiter(limit: usize) -> CardinalityLimiter {
    CardinalityLimiter::new(
        CardinalityConfig {
            limit,
            ..Default::default()
        },
        "bench",
        None,
    )
    .unwrap()
}

fn resident_bytes() -> u64 {
    sieve::memory::resident_bytes().unwrap_or(0)
}

fn cardinality(c: &mut Criterion) {
    let mut group = c.benchmark_group("cardinality_limit");
    group.throughput(Throughput::Elements(POINTS as u64));
    group.measurement_time(Duration::from_secs(3));

    // 10k tracked series; each iteration sends 1000 known series
    let mut known = limiter(20_000);
    for start in (0..10_000).step_by(POINTS) {
        known.limit(&mut batch(start), Instant::now());
    }
    group.bench_function("known_series_at_10k_tracked", |b| {
        b.iter_batched(
            || batch(3_000),
            |mut batch| {
                known.limit(&mut batch, Instant::now());
                batch
            },
            BatchSize::LargeInput,
        )
    });

    // at the limit: every point is a new series and overflows
    let mut full = limiter(10_000);
    for start in (0..10_000).step_by(POINTS) {
        full.limit(&mut batch(start), Instant::now());
    }
    group.bench_function("new_series_over_the_limit", |b| {
        b.iter_batched(
            || batch(50_000),
            |mut batch| {
                full.limit(&mut batch, Instant::now());
                batch
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // memory: RSS growth while tracking 200k more series
    let mut big = limiter(1_000_000);
    let before = resident_bytes();
    for start in (0..200_000).step_by(POINTS) {
        big.limit(&mut batch(start), Instant::now());
    }
    let per_series = (resident_bytes().saturating_sub(before)) as f64 / big.tracked_series() as f64;
    println!(
        "cardinality_limit/memory: {} series tracked, {per_series:.0} bytes of RSS per series",
        big.tracked_series()
    );
}

criterion_group!(benches, cardinality);
criterion_main!(benches);
