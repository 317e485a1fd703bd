//! Tail sampling cost with 100k live traces of 10 spans: ns per span to take spans in
//! (group by trace, answer the policies' span questions, append to the trace's buffer)
//! and to decide and emit held traces (the oldest of 100k, and 100 alone); plus RSS per
//! buffered span over its encoded size.
//! `cargo bench --bench tail_sampling`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use sieve::model::{Batch, Signal};
use sieve::processors::tail_sampling::{TailSampler, TailSamplingConfig};
use sieve::processors::Processor;
use sieve::telemetry::Telemetry;
use std::time::{Duration, Instant};

const SPANS_PER_TRACE: usize = 10;
const TRACES_PER_BATCH: usize = 100;
const LIVE_TRACES: usize = 100_000;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A typical server span: five attributes, ~200 bytes encoded.
fn span(trace: usize, index: usize) -> Span {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&(trace as u64).to_be_bytes());
    trace_id[8..].copy_from_slice(
        &(trace as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_be_bytes(),
    );
    Span {
        trace_id: trace_id.to_vec(),
        span_id: ((trace * SPANS_PER_TRACE + index) as u64)
            .to_be_bytes()
            .to_vec(),
        parent_span_id: if index == 0 { Vec::new() } else { vec![1; 8] },
        name: "GET /api/v1/orders/{id}".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_020_000_000,
        attributes: vec![
            attribute("http.request.method", Value::StringValue("GET".into())),
            attribute(
                "http.route",
                Value::StringValue("/api/v1/orders/{id}".into()),
            ),
            attribute("http.response.status_code", Value::IntValue(200)),
            attribute(
                "server.address",
                Value::StringValue("orders.internal".into()),
            ),
            attribute(
                "user_agent.original",
                Value::StringValue("okhttp/4.12.0".into()),
            ),
        ],
        ..Default::default()
    }
}

/// `TRACES_PER_BATCH` traces from `first`, spans `spans` of each, encoded as a receiver
/// hands them on.
fn batch(first: usize, spans: std::ops::Range<usize>) -> Batch {
    let spans = (first..first + TRACES_PER_BATCH)
        .flat_map(|t| spans.clone().map(move |i| span(t, i)))
        .collect();
    let decoded = Batch::from_traces(vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![attribute(
                "service.name",
                Value::StringValue("orders".into()),
            )],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]);
    Batch::from_request(Signal::Traces, decoded.to_bytes())
        .unwrap()
        .batch
}

fn sampler(telemetry: &Telemetry) -> TailSampler {
    let config: TailSamplingConfig = serde_yaml::from_str(
        "decision_wait: 1h
num_traces: 10000000
max_memory_mib: 8192
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 2000}}
  - {name: vip, type: string_attribute, string_attribute: {key: customer.tier, values: [gold]}}
  - {name: baseline, type: probabilistic, probabilistic: {sampling_percentage: 10}}",
    )
    .unwrap();
    TailSampler::new(config, "bench", telemetry).unwrap()
}

/// Fills a sampler with `traces` live traces of `SPANS_PER_TRACE` spans.
fn fill(sampler: &mut TailSampler, traces: usize) -> usize {
    let mut out = Vec::new();
    let mut encoded = 0;
    for first in (0..traces).step_by(TRACES_PER_BATCH) {
        let batch = batch(first, 0..SPANS_PER_TRACE);
        encoded += batch.encoded_len();
        sampler.process(batch, &mut out);
    }
    assert!(out.is_empty(), "nothing is decided while filling");
    encoded
}

fn resident_bytes() -> u64 {
    sieve::memory::resident_bytes().unwrap_or(0)
}

fn tail_sampling(c: &mut Criterion) {
    let telemetry = Telemetry::new();
    // Memory first, before the benchmarks leave freed memory for the allocator to reuse.
    report_memory(&telemetry);

    let mut group = c.benchmark_group("tail_sampling");
    group.throughput(Throughput::Elements(
        (TRACES_PER_BATCH * SPANS_PER_TRACE) as u64,
    ));
    group.measurement_time(Duration::from_secs(3));

    // Taking in spans of new traces while 100k traces are live.
    let mut live = sampler(&telemetry);
    fill(&mut live, LIVE_TRACES);
    let mut next = LIVE_TRACES;
    group.bench_function("ingest_with_100k_live_traces", |b| {
        b.iter_batched(
            || {
                next += TRACES_PER_BATCH;
                batch(next, 0..SPANS_PER_TRACE)
            },
            |batch| {
                let mut out = Vec::new();
                live.process(batch, &mut out);
                out
            },
            BatchSize::LargeInput,
        )
    });
    drop(live);

    // Deciding the oldest traces while 100k are live, as a running sampler does: its
    // table and buffers are larger than the caches.
    let mut live = sampler(&telemetry);
    let mut ingested = std::collections::VecDeque::new();
    let mut next = 0;
    let mut take_in = |live: &mut TailSampler, ingested: &mut std::collections::VecDeque<_>| {
        let mut out = Vec::new();
        live.process(batch(next, 0..SPANS_PER_TRACE), &mut out);
        next += TRACES_PER_BATCH;
        ingested.push_back(Instant::now());
    };
    for _ in 0..LIVE_TRACES / TRACES_PER_BATCH {
        take_in(&mut live, &mut ingested);
    }
    group.bench_function("decide_oldest_with_100k_live_traces", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                take_in(&mut live, &mut ingested);
                let oldest_due = ingested.pop_front().unwrap() + Duration::from_secs(3600);
                let mut out = Vec::new();
                let started = Instant::now();
                live.on_tick(oldest_due, &mut out);
                total += started.elapsed();
                assert!(!out.is_empty(), "the oldest batch's traces were decided");
            }
            total
        })
    });
    drop(live);

    // Deciding held traces and emitting the kept ones.
    group.bench_function("decide_and_emit", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let mut held = sampler(&telemetry);
                fill(&mut held, TRACES_PER_BATCH);
                let started = Instant::now();
                let mut out = Vec::new();
                held.on_tick(Instant::now() + Duration::from_secs(7200), &mut out);
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// RSS growth while holding 100k traces of 10 spans.
fn report_memory(telemetry: &Telemetry) {
    let before = resident_bytes();
    let mut held = sampler(telemetry);
    let encoded = fill(&mut held, LIVE_TRACES);
    let grown = resident_bytes().saturating_sub(before) as f64;
    let spans = (LIVE_TRACES * SPANS_PER_TRACE) as f64;
    println!(
        "tail_sampling memory: {:.0} B RSS per buffered span, {:.0} B encoded, {:.0} B over the encoded size; {:.0} B counted against max_memory_mib",
        grown / spans,
        encoded as f64 / spans,
        (grown - encoded as f64) / spans,
        held.bytes_held() as f64 / spans,
    );
}

criterion_group!(benches, tail_sampling);
criterion_main!(benches);
