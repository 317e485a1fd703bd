//! Tail sampling end to end: the OpenTelemetry Rust SDK sends traces, some with errors and
//! some slow, through sieve's `tail_sampling` to an OTLP sink (a Tempo stand-in that checks
//! the tenant header); a flood against a small memory budget.

use crate::harness::{post, shipped_tempo_config, Sieve};
use crate::sink::{Received, Sink};
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// What kind of trace index `i` is in [`send_traces`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Error,
    Slow,
    Plain,
}

pub fn kind(i: usize) -> Kind {
    match i % 10 {
        0 => Kind::Error,
        5 => Kind::Slow,
        _ => Kind::Plain,
    }
}

/// Spans per trace: a root and two children.
pub const SPANS_PER_TRACE: usize = 3;

/// Sends traces `range` with the SDK over gRPC: every tenth has an error span, every
/// tenth (offset 5) lasts 3 s; the root carries `trace.index`.
pub fn send_traces(endpoint: String, range: std::ops::Range<usize>) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let tracer = provider.tracer("it");
    for i in range {
        let now = SystemTime::now();
        let start = match kind(i) {
            Kind::Slow => now - Duration::from_secs(3),
            _ => now,
        };
        let root = tracer
            .span_builder(format!("request-{i}"))
            .with_start_time(start)
            .with_attributes([KeyValue::new("trace.index", i as i64)])
            .start(&tracer);
        let cx = opentelemetry::Context::current_with_span(root);
        for c in 0..SPANS_PER_TRACE - 1 {
            let mut child = tracer.start_with_context(format!("child-{c}"), &cx);
            if kind(i) == Kind::Error && c == 1 {
                child.set_status(Status::error("payment declined"));
            }
            child.end();
        }
        cx.span().end();
    }
    provider.shutdown().unwrap();
}

/// Spans received per trace index (found through each trace's root).
pub fn spans_by_index(received: &Received) -> BTreeMap<usize, BTreeSet<Vec<u8>>> {
    let spans: Vec<_> = received
        .traces
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let index_of_trace: BTreeMap<&[u8], usize> = spans
        .iter()
        .filter_map(|s| {
            s.attributes
                .iter()
                .find(|kv| kv.key == "trace.index")
                .and_then(
                    |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::IntValue(i)) => Some((s.trace_id.as_slice(), *i as usize)),
                        _ => None,
                    },
                )
        })
        .collect();
    let mut by_index: BTreeMap<usize, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for span in spans {
        if let Some(i) = index_of_trace.get(span.trace_id.as_slice()) {
            by_index.entry(*i).or_default().insert(span.span_id.clone());
        }
    }
    by_index
}

/// Checks what a tail sampler with errors, slow (> 1 s) and 25 % probabilistic policies
/// kept of `total` traces: every error and slow trace, whole; plain traces within
/// statistical bounds, each whole.
pub fn check_kept(received: &Received, total: usize) {
    let kept = spans_by_index(received);
    for i in 0..total {
        if kind(i) != Kind::Plain {
            let spans = kept.get(&i).map_or(0, BTreeSet::len);
            assert_eq!(spans, SPANS_PER_TRACE, "{:?} trace {i} kept whole", kind(i));
        }
    }
    for (i, spans) in &kept {
        assert_eq!(spans.len(), SPANS_PER_TRACE, "kept trace {i} is whole");
    }
    let plain_total = (0..total).filter(|i| kind(*i) == Kind::Plain).count() as f64;
    let plain_kept = kept.keys().filter(|i| kind(**i) == Kind::Plain).count() as f64;
    let (mean, sd) = (plain_total * 0.25, (plain_total * 0.25 * 0.75).sqrt());
    assert!(
        (plain_kept - mean).abs() <= 5.0 * sd,
        "kept {plain_kept} of {plain_total} plain traces at 25 %"
    );
}

/// A policy set the end-to-end tests share.
pub const POLICIES: &str =
    "      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 1000}}
      - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 25}}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tempo_pipeline_keeps_errors_and_slow_traces_whole() {
    let sink = Sink::start().await;
    sink.require_tenant("team-a");
    let config = shipped_tempo_config("traces-tail-sampling-to-tempo.yaml", &sink.grpc_endpoint())
        .replace("decision_wait: 10s", "decision_wait: 1s")
        .replace("threshold_ms: 2000", "threshold_ms: 1000")
        .replace("sampling_percentage: 10", "sampling_percentage: 25");
    let sieve = Sieve::start(&config);
    let total = 400;
    let endpoint = format!("http://127.0.0.1:{}", sieve.grpc);
    tokio::task::spawn_blocking(move || send_traces(endpoint, 0..total))
        .await
        .unwrap();
    let decided = sieve.wait_metric(
        "sieve_tail_sampling_traces_decided_total",
        &[],
        Duration::from_secs(30),
        |n| n >= total as f64,
    );
    assert_eq!(decided, total as f64, "each trace decided once");
    let expected_errors_and_slow = (0..total).filter(|i| kind(*i) != Kind::Plain).count();
    sink.wait_for(Duration::from_secs(20), "errors and slow traces", |r| {
        spans_by_index(r)
            .iter()
            .filter(|(i, spans)| kind(**i) != Kind::Plain && spans.len() == SPANS_PER_TRACE)
            .count()
            == expected_errors_and_slow
    })
    .await;
    sieve.wait_metric(
        "sieve_exporter_sent_items_total",
        &[],
        Duration::from_secs(10),
        |n| n as usize == sink.with(|r| r.span_count()),
    );
    sink.with(|r| {
        check_kept(r, total);
        assert!(r.tenants.iter().all(|t| t.as_deref() == Some("team-a")));
    });
    let errors_kept = sieve.metric(
        "sieve_tail_sampling_policy_decisions_total",
        &[("policy", "errors"), ("decision", "sampled")],
    );
    assert_eq!(errors_kept, (total / 10) as f64);
}

/// An export request of `traces` traces (ids from `first`) of `spans` spans of ~1 KB.
fn padded_traces(first: usize, traces: usize, spans: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let spans = (first..first + traces)
        .flat_map(|t| {
            (0..spans).map(move |s| Span {
                trace_id: ((t as u128 + 1) * 0x9e37_79b9_7f4a_7c15)
                    .to_be_bytes()
                    .to_vec(),
                span_id: (s as u64 + 1).to_be_bytes().to_vec(),
                name: format!("t{t}-s{s}-{}", "x".repeat(1000)),
                ..Default::default()
            })
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_stays_within_the_memory_budget_by_deciding_early() {
    let sink = Sink::start().await;
    let config = format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
processors:
  tail_sampling:
    decision_wait: 60s
    max_memory_mib: 16
    fallback_sampling_percentage: 10
    policies:
{POLICIES}
exporters:
  otlp:
    endpoint: {}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlp]
",
        sink.grpc_endpoint()
    );
    let sieve = Sieve::start(&config);
    let baseline = sieve.rss_bytes();
    // 10 000 traces of 5 spans of ~1 KB: ~50 MB of spans against a 16 MiB budget.
    for request in 0..1_000 {
        let body = padded_traces(request * 10, 10, 5);
        let (status, _, _) = post(
            sieve.http,
            "/v1/traces",
            "application/x-protobuf",
            None,
            body,
        )
        .await;
        assert_eq!(status, 200);
    }
    let held = sieve.metric("sieve_tail_sampling_bytes_held", &[]);
    assert!(held <= (16 << 20) as f64, "bytes held {held}");
    let early = sieve.metric(
        "sieve_tail_sampling_traces_decided_total",
        &[("trigger", "decided_early")],
    );
    assert!(early > 0.0, "the budget forced early decisions");
    // one shard per worker; each fills its share of the budget
    assert!(sieve.metric("sieve_tail_sampling_fallback_active", &[]) >= 1.0);
    let grown = sieve.rss_bytes().saturating_sub(baseline);
    assert!(
        grown < 64 << 20,
        "RSS grew {} MiB over a 16 MiB budget",
        grown >> 20
    );
}

/// `redaction` before a tail sampler whose policies read no attribute runs after it: the
/// same traces are kept, every span that leaves is redacted, and redaction worked on the
/// kept spans only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_before_tail_sampling_redacts_every_kept_span_and_no_other() {
    let sink = Sink::start().await;
    let config = format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{{grpc}}
processors:
  redaction:
    allow_all_keys: true
    blocked_values: ['child-[0-9]']
  tail_sampling:
    decision_wait: 1s
    policies:
{POLICIES}
exporters:
  otlp:
    endpoint: {}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [redaction, tail_sampling]
      exporters: [otlp]
",
        sink.grpc_endpoint()
    );
    let sieve = Sieve::start(&config);
    let total = 200;
    let endpoint = format!("http://127.0.0.1:{}", sieve.grpc);
    tokio::task::spawn_blocking(move || send_traces(endpoint, 0..total))
        .await
        .unwrap();
    sieve.wait_metric(
        "sieve_tail_sampling_traces_decided_total",
        &[],
        Duration::from_secs(30),
        |n| n >= total as f64,
    );
    let sampled = sieve.metric(
        "sieve_tail_sampling_traces_decided_total",
        &[("decision", "sampled")],
    ) as usize;
    sink.wait_for(Duration::from_secs(20), "every kept span", |r| {
        r.span_count() == sampled * SPANS_PER_TRACE
    })
    .await;
    let kept_traces = sink.with(|r| {
        check_kept(r, total);
        let names: Vec<&str> = r
            .traces
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.name.as_str())
            .collect();
        assert!(
            names.iter().all(|name| !name.contains("child-")),
            "every kept span is redacted: {names:?}"
        );
        spans_by_index(r).len()
    });
    let redactions = sieve.metric("sieve_processor_redactions_total", &[]);
    assert_eq!(
        redactions,
        (kept_traces * (SPANS_PER_TRACE - 1)) as f64,
        "the two child names of each kept trace, and of no other trace, were redacted"
    );
}
