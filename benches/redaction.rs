//! Redaction throughput on log bodies through the default detector set, in MB/s, with 1%
//! and 20% of lines holding PII; and on spans that mostly carry PII, decoded and on the
//! wire. `cargo bench --bench redaction`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use sieve::model::Batch;
use sieve::model::Signal;
use sieve::processors::redaction::{MaskStyle, RedactionConfig, Redactor, Summary};

#[path = "common/pii_request.rs"]
mod pii_request;
use std::time::Duration;

const CLEAN: &[&str] = &[
    "GET /api/v1/items/12345 200 12ms user_agent=Mozilla/5.0 (X11; Linux x86_64) trace=5b8efff798038103",
    "worker 7 finished job import-2024-05-01 in 1532ms, 1200 rows, 0 errors, queue depth 42",
    "connection pool stats: active=12 idle=4 waiting=0 max=32 timeouts=0 version v1.2.3.4",
    "cache miss for key product:98765:price, fetching from upstream service pricing-v2",
];

const WITH_PII: &[&str] = &[
    "login ok for jane.doe@example.com from 203.0.113.7 session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
    "payment declined card 4111 1111 1111 1111 customer +14155552671 ssn 123-45-6789",
];

fn lines(count: usize, pii_every: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            if i % pii_every == 0 {
                WITH_PII[i % WITH_PII.len()]
            } else {
                CLEAN[i % CLEAN.len()]
            }
            .to_string()
        })
        .collect()
}

fn batch(lines: &[String]) -> Batch {
    let records = lines
        .iter()
        .map(|l| LogRecord {
            body: Some(AnyValue {
                value: Some(Value::StringValue(l.clone())),
            }),
            ..Default::default()
        })
        .collect();
    Batch::from_logs(vec![ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn redaction(c: &mut Criterion) {
    let redactor = Redactor::new(RedactionConfig {
        allow_all_keys: true,
        ..Default::default()
    })
    .unwrap();
    let mut group = c.benchmark_group("redaction_log_bodies");
    group.measurement_time(Duration::from_secs(3));
    for (label, pii_every) in [("pii_1_percent", 100), ("pii_20_percent", 5)] {
        let lines = lines(1000, pii_every);
        let bytes: usize = lines.iter().map(String::len).sum();
        let template = batch(&lines);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(label, |b| {
            b.iter_batched(
                || template.clone(),
                |mut batch| redactor.redact_batch(&mut batch),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// The traces pipeline's redaction (as `pipelines/traces-redaction.yaml`) on 100 spans
/// that mostly carry PII: decoded (decode, redact, encode, as before the wire walk) and
/// on the wire.
fn redaction_spans(c: &mut Criterion) {
    let redactor = Redactor::new(RedactionConfig {
        allow_all_keys: true,
        ignored_keys: vec!["service.name".into(), "http.route".into()],
        blocked_key_patterns: vec!["(?i)(password|secret|api[_-]?key)".into()],
        blocked_values: vec!["session=[A-Za-z0-9]{16,}".into()],
        keep_private_ips: true,
        mask_style: MaskStyle::Typed,
        summary: Summary::Info,
        ..Default::default()
    })
    .unwrap();
    let request = pii_request::traces_request_with_pii(100);
    let encoded = || {
        Batch::from_request(Signal::Traces, request.clone())
            .unwrap()
            .batch
    };
    let mut group = c.benchmark_group("redaction_100_spans");
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(100));
    group.bench_function("decoded", |b| {
        b.iter_batched(
            encoded,
            |mut batch| {
                redactor.redact_batch(&mut batch);
                batch.to_bytes()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("wire", |b| {
        b.iter_batched(
            encoded,
            |mut batch| {
                redactor.redact(&mut batch);
                batch.to_bytes()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, redaction, redaction_spans);
criterion_main!(benches);
