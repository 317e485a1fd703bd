//! Connectors end to end: `routing` keeps three tenants' data apart through one
//! receiver; `spanmetrics` counts every span the OpenTelemetry SDK sends into a real
//! Prometheus while tail sampling keeps only its share for the Tempo double (the shipped
//! `pipelines/traces-red-metrics-and-sampling.yaml`); `forward` carries backpressure
//! from a stalled downstream exporter back to the client and loses nothing.

use crate::harness::{post, post_traces, sdk_send_spans, Sieve};
use crate::prometheus::Prometheus;
use crate::sink::Sink;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, NumberDataPoint};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn tenants_config(sinks: [&Sink; 3]) -> String {
    let [acme, ecorp, other] = sinks.map(Sink::grpc_endpoint);
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{{grpc}}
        include_metadata: true
      http:
        endpoint: 127.0.0.1:{{http}}
        include_metadata: true
connectors:
  routing:
    default_pipelines: [traces/other]
    table:
      - context: request
        condition: request[\"X-Tenant\"] == \"acme\"
        pipelines: [traces/acme]
      - context: request
        condition: request[\"X-Tenant\"] == \"ecorp\"
        pipelines: [traces/ecorp]
exporters:
  otlp/acme:
    endpoint: {acme}
  otlp/ecorp:
    endpoint: {ecorp}
  otlp/other:
    endpoint: {other}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [routing]
    traces/acme:
      receivers: [routing]
      exporters: [otlp/acme]
    traces/ecorp:
      receivers: [routing]
      exporters: [otlp/ecorp]
    traces/other:
      receivers: [routing]
      exporters: [otlp/other]
"
    )
}

/// Waits until `sink` holds `spans` spans; their names.
fn wait_spans(sink: &Sink, spans: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let names = sink.with(|r| r.span_names());
        if names.len() >= spans {
            return names;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {spans} spans arrived",
            names.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_keeps_three_tenants_apart_and_sends_the_rest_to_the_default() {
    let (acme, ecorp, other) = (
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    );
    let sieve = Sieve::start(&tenants_config([&acme, &ecorp, &other]));
    let port = sieve.grpc;
    tokio::task::spawn_blocking(move || {
        sdk_send_spans(port, true, Some(("x-tenant", "acme")), "acme", 20);
        sdk_send_spans(port, true, Some(("x-tenant", "ecorp")), "ecorp", 15);
        sdk_send_spans(port, true, Some(("x-tenant", "initech")), "initech", 5);
        sdk_send_spans(port, true, None, "anonymous", 5);
    })
    .await
    .unwrap();
    let http = sieve.http;
    assert_eq!(
        post_traces(http, &[("X-Tenant", "ecorp")], 7, 10).await.0,
        200
    );

    let only = |names: Vec<String>, prefixes: &[&str]| {
        let strays: Vec<&String> = names
            .iter()
            .filter(|n| !prefixes.iter().any(|p| n.starts_with(p)))
            .collect();
        assert!(strays.is_empty(), "leaked: {strays:?}");
        names.len()
    };
    assert_eq!(only(wait_spans(&acme, 20), &["acme-"]), 20);
    assert_eq!(only(wait_spans(&ecorp, 25), &["ecorp-", "r7-"]), 25);
    assert_eq!(
        only(wait_spans(&other, 10), &["initech-", "anonymous-"]),
        10
    );
    let routed = sieve.wait_metric(
        "sieve_exporter_sent_items_total",
        &[("exporter", "routing")],
        WAIT,
        |v| v >= 55.0,
    );
    assert_eq!(routed, 55.0, "every span crossed the connector once");
    assert_eq!(sieve.metric("sieve_exporter_dropped_items_total", &[]), 0.0);
    // nothing more arrives late anywhere
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(acme.with(|r| r.span_count()), 20);
    assert_eq!(ecorp.with(|r| r.span_count()), 25);
    assert_eq!(other.with(|r| r.span_count()), 10);
}

/// Spans of service `checkout` with known kinds, statuses and durations, each its own
/// trace, sent by the SDK with explicit timestamps.
fn send_known_spans(port: u16) {
    use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("checkout")
                .build(),
        )
        .build();
    let tracer = provider.tracer("shop");
    let start = std::time::SystemTime::now() - Duration::from_secs(5);
    let send = |name: &str, kind: SpanKind, millis: u64, error: bool, count: usize| {
        for _ in 0..count {
            let mut span = tracer
                .span_builder(name.to_string())
                .with_kind(kind.clone())
                .with_start_time(start)
                .start(&tracer);
            if error {
                span.set_status(Status::error("boom"));
            }
            span.end_with_timestamp(start + Duration::from_millis(millis));
        }
    };
    send("GET /cart", SpanKind::Server, 3, false, 60);
    send("GET /cart", SpanKind::Server, 40, true, 10);
    send("SELECT orders", SpanKind::Client, 700, false, 30);
    provider.shutdown().unwrap();
}

fn value(result: &serde_json::Value) -> f64 {
    result["value"][1].as_str().unwrap().parse().unwrap()
}

/// The shipped RED-metrics pipeline, pointed at `prometheus` and `tempo`, with a short
/// flush interval and decision wait.
fn red_metrics_config(prometheus: &Prometheus, tempo: &Sink) -> String {
    let shipped = std::fs::read_to_string(format!(
        "{}/pipelines/traces-red-metrics-and-sampling.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let replace = |text: String, from: &str, to: &str| {
        assert!(text.contains(from), "the shipped pipeline has `{from}`");
        text.replace(from, to)
    };
    let mut config = shipped;
    for (from, to) in [
        ("127.0.0.1:4317", "127.0.0.1:{grpc}".to_string()),
        ("127.0.0.1:4318", "127.0.0.1:{http}".to_string()),
        (
            "${env:PROMETHEUS_URL:-http://127.0.0.1:9090/api/v1/write}",
            prometheus.write_url(),
        ),
        (
            "${env:TEMPO_ENDPOINT:-http://127.0.0.1:3200}",
            tempo.grpc_endpoint(),
        ),
        (
            "metrics_flush_interval: 15s",
            "metrics_flush_interval: 500ms".to_string(),
        ),
        ("decision_wait: 10s", "decision_wait: 500ms".to_string()),
    ] {
        config = replace(config, from, &to);
    }
    config + "  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics}\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanmetrics_counts_every_span_while_tail_sampling_keeps_its_share() {
    let prometheus = Prometheus::start();
    let tempo = Sink::start().await;
    let sieve = Sieve::start(&red_metrics_config(&prometheus, &tempo));
    let port = sieve.grpc;
    tokio::task::spawn_blocking(move || send_known_spans(port))
        .await
        .unwrap();

    let calls = |selector: &str| {
        let query = format!("traces_span_metrics_calls_total{{{selector}}}");
        let result = prometheus.wait_query(&query);
        assert_eq!(result.len(), 1, "{query}: {result:?}");
        assert_eq!(result[0]["metric"]["job"], "checkout");
        value(&result[0])
    };
    // a flush may land before the SDK's last export: wait for the totals
    let deadline = std::time::Instant::now() + WAIT;
    while calls(r#"span_name="SELECT orders""#) < 30.0 {
        assert!(std::time::Instant::now() < deadline, "calls stuck");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        calls(
            r#"service_name="checkout",span_name="GET /cart",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_UNSET""#
        ),
        60.0
    );
    assert_eq!(
        calls(r#"span_name="GET /cart",status_code="STATUS_CODE_ERROR""#),
        10.0
    );
    assert_eq!(
        calls(r#"span_name="SELECT orders",span_kind="SPAN_KIND_CLIENT""#),
        30.0
    );
    let bucket = |span: &str, le: &str| {
        let query = format!(
            "sum(traces_span_metrics_duration_milliseconds_bucket{{span_name=\"{span}\",le=\"{le}\"}})"
        );
        value(&prometheus.wait_query(&query)[0])
    };
    assert_eq!(bucket("GET /cart", "5"), 60.0, "3 ms spans");
    assert_eq!(bucket("GET /cart", "25"), 60.0);
    assert_eq!(bucket("GET /cart", "50"), 70.0, "and the 40 ms errors");
    assert_eq!(bucket("SELECT orders", "500"), 0.0);
    assert_eq!(bucket("SELECT orders", "1000"), 30.0);
    assert_eq!(bucket("SELECT orders", "+Inf"), 30.0);

    // every error trace is kept, about a tenth of the rest
    let kept_errors = {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let errors = tempo.with(|r| {
                r.traces
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .flat_map(|ss| &ss.spans)
                    .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
                    .count()
            });
            if errors == 10 || std::time::Instant::now() > deadline {
                break errors;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(kept_errors, 10);
    let stored = tempo.with(|r| r.span_count());
    assert!(
        (10..40).contains(&stored),
        "{stored} of 100 spans stored: the errors and about 10 % of the other 90"
    );
}

fn forward_config(sink: &Sink) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
      grpc:
        endpoint: 127.0.0.1:{{grpc}}
connectors:
  forward:
exporters:
  otlp:
    endpoint: {}
    sending_queue:
      queue_size: 2
      num_consumers: 1
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [forward]
      queue:
        capacity: 2
      workers: 1
    traces/out:
      receivers: [forward]
      exporters: [otlp]
      queue:
        capacity: 2
      workers: 1
",
        sink.grpc_endpoint()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_downstream_pipeline_refuses_upstream_clients_and_loses_nothing() {
    let sink = Sink::start().await;
    sink.stall();
    let sieve = Sieve::start(&forward_config(&sink));
    let mut accepted = 0;
    let mut refused = 0;
    for tag in 0..200 {
        match post_traces(sieve.http, &[], tag, 10).await.0 {
            200 => accepted += 1,
            503 => refused += 1,
            other => panic!("status {other}"),
        }
        if refused > 5 {
            break;
        }
    }
    assert!(
        refused > 5,
        "the client is refused once every queue is full"
    );
    assert!(
        accepted < 50,
        "{accepted} requests fit in a few small queues"
    );
    sink.resume();
    let names = wait_spans(&sink, accepted * 10);
    assert_eq!(names.len(), accepted * 10);
    assert_eq!(sieve.metric("sieve_exporter_dropped_items_total", &[]), 0.0);
    assert_eq!(sieve.metric("sieve_pipeline_dropped_items_total", &[]), 0.0);
    assert_eq!(
        sieve.metric(
            "sieve_pipeline_refused_items_total",
            &[("pipeline", "traces/out")]
        ),
        0.0,
        "the connector waits for room: it is no client being refused, again and again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rebuilding_the_downstream_pipeline_keeps_the_connector_connected() {
    let (first, second) = (Sink::start().await, Sink::start().await);
    let sieve = Sieve::start(&forward_config(&first));
    assert_eq!(post_traces(sieve.http, &[], 1, 10).await.0, 200);
    wait_spans(&first, 10);
    // the downstream pipeline's exporter changes: it is rebuilt, the upstream one kept
    let changed = forward_config(&first).replace(&first.grpc_endpoint(), &second.grpc_endpoint());
    sieve.reload_with(&changed, 1.0);
    let deadline = std::time::Instant::now() + WAIT;
    let mut tag = 2;
    while second.with(|r| r.span_count()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new pipeline gets nothing"
        );
        assert_eq!(post_traces(sieve.http, &[], tag, 10).await.0, 200);
        tag += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = (tag - 1) * 10;
    let deadline = std::time::Instant::now() + WAIT;
    while first.with(|r| r.span_count()) + second.with(|r| r.span_count()) < sent {
        assert!(
            std::time::Instant::now() < deadline,
            "spans lost across the reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        first.with(|r| r.span_count()) + second.with(|r| r.span_count()),
        sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changing_the_routing_table_sends_the_next_data_by_the_new_table() {
    let (acme, ecorp, other) = (
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    );
    let config = tenants_config([&acme, &ecorp, &other]);
    let sieve = Sieve::start(&config);
    assert_eq!(
        post_traces(sieve.http, &[("X-Tenant", "acme")], 1, 10)
            .await
            .0,
        200
    );
    wait_spans(&acme, 10);
    // acme's data now goes where ecorp's does
    let moved = config.replace("pipelines: [traces/acme]", "pipelines: [traces/ecorp]");
    assert_ne!(moved, config);
    sieve.reload_with(&moved, 1.0);
    assert_eq!(
        post_traces(sieve.http, &[("X-Tenant", "acme")], 2, 10)
            .await
            .0,
        200
    );
    let names = wait_spans(&ecorp, 10);
    assert!(names.iter().all(|n| n.starts_with("r2-")), "{names:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(acme.with(|r| r.span_count()), 10, "nothing more for acme");
    assert_eq!(other.with(|r| r.span_count()), 0);
}

/// A downstream pipeline whose id sorts before its upstream one (`traces/acme` <
/// `traces/in`), a sibling downstream pipeline whose exporter is stalled.
fn sorted_before_upstream(stalled: &Sink) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
connectors:
  forward:
exporters:
  otlp/stalled:
    endpoint: {}
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 200ms
    sending_queue:
      queue_size: 2
  debug:
service:
  shutdown_timeout: 2s
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces/in:
      receivers: [otlp]
      exporters: [forward]
    traces/acme:
      receivers: [forward]
      exporters: [debug]
    traces/zz:
      receivers: [forward]
      exporters: [otlp/stalled]
      queue: {{ capacity: 2 }}
",
        stalled.grpc_endpoint()
    )
}

/// SIGTERM with a stalled exporter downstream of a connector: every pipeline reaches the
/// shutdown deadline and aborts on its own, whatever order their ids sort in (a
/// downstream pipeline ends only after the one upstream of it), so sieve exits in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_in_time_when_a_downstream_pipeline_sorts_before_its_upstream() {
    let stalled = Sink::start().await;
    stalled.stall();
    let mut sieve = Sieve::start(&sorted_before_upstream(&stalled));
    for tag in 0..20 {
        assert_eq!(post_traces(sieve.http, &[], tag, 1).await.0, 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sieve.signal("TERM");
    let started = Instant::now();
    let exited = tokio::task::spawn_blocking(move || {
        let status = sieve.wait_exit(Duration::from_secs(15));
        (status, sieve.log())
    })
    .await
    .unwrap();
    stalled.resume();
    assert!(
        exited.0.is_some(),
        "still running {:?} after SIGTERM with shutdown_timeout 2s:\n{}",
        started.elapsed(),
        exited.1
    );
}

/// Two traces pipelines exporting to one `spanmetrics` share one instance, as in the
/// collector: one cumulative series per identity (one start time), counting the spans of
/// both (3 + 5), never two streams of the same series with 3 and 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanmetrics_fed_by_two_pipelines_sends_one_series_per_identity() {
    let sink = Sink::start().await;
    let config = format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
  otlp/b:
    protocols:
      http:
        endpoint: 127.0.0.1:{{grpc}}
connectors:
  spanmetrics:
    metrics_flush_interval: 300ms
exporters:
  otlp:
    endpoint: {}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces/a:
      receivers: [otlp]
      exporters: [spanmetrics]
    traces/b:
      receivers: [otlp/b]
      exporters: [spanmetrics]
    metrics:
      receivers: [spanmetrics]
      exporters: [otlp]
",
        sink.grpc_endpoint()
    );
    let sieve = Sieve::start(&config);
    // the same spans (same service, names, kinds) into either pipeline
    for _ in 0..3 {
        assert_eq!(post_span(sieve.http).await, 200);
    }
    for _ in 0..5 {
        assert_eq!(post_span(sieve.grpc).await, 200);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // every start time seen per series identity of `calls`, and the last count
    let points = sink.with(calls_points);
    assert!(!points.is_empty(), "no calls points arrived");
    let mut starts: BTreeMap<String, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for point in &points {
        let identity = format!("{:?}", point.attributes);
        starts
            .entry(identity)
            .or_default()
            .insert(point.start_time_unix_nano);
    }
    for (identity, times) in &starts {
        assert_eq!(
            times.len(),
            1,
            "one cumulative series `{identity}` arrived with {} start times (one stream per upstream pipeline)",
            times.len()
        );
    }
    assert_eq!(
        count(points.last().unwrap()),
        8,
        "3 + 5 spans in one series"
    );
}

/// Every `calls` data point the sink received, in the order they arrived.
fn calls_points(received: &crate::sink::Received) -> Vec<NumberDataPoint> {
    received
        .metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name.ends_with(".calls"))
        .flat_map(|m| match &m.data {
            Some(metric::Data::Sum(sum)) => sum.data_points.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// A `calls` point's count.
fn count(point: &NumberDataPoint) -> i64 {
    match point.value {
        Some(number_data_point::Value::AsInt(v)) => v,
        other => panic!("calls is an int sum: {other:?}"),
    }
}

/// POSTs one span `GET /` of service `checkout` (OTLP/JSON).
async fn post_span(port: u16) -> u16 {
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /","kind":2,"startTimeUnixNano":"1000000000","endTimeUnixNano":"2000000000"}]}]}]}"#;
    post(
        port,
        "/v1/traces",
        "application/json",
        None,
        body.as_bytes().to_vec(),
    )
    .await
    .0
}

/// A series never flushed before goes out as `calls` = 0 (the collector's zero-first
/// point, so Prometheus sees the step); when the connector goes (SIGTERM, or a reload
/// changing it) its last flush sends every series' count.
/// Here 5 spans, SIGTERM before the first periodic flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_flush_sends_the_calls_of_series_never_flushed_before() {
    let sink = Sink::start().await;
    let config = format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
connectors:
  spanmetrics:
    metrics_flush_interval: 60s
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
      exporters: [spanmetrics]
    metrics:
      receivers: [spanmetrics]
      exporters: [otlp]
",
        sink.grpc_endpoint()
    );
    let mut sieve = Sieve::start(&config);
    for _ in 0..5 {
        assert_eq!(post_span(sieve.http).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sieve.signal("TERM");
    tokio::task::spawn_blocking(move || sieve.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap()
        .expect("sieve exits");
    let calls: Vec<i64> = sink.with(calls_points).iter().map(count).collect();
    assert_eq!(calls.last(), Some(&5), "calls points sent: {calls:?}");
}
