//! OTLP in and out with real clients: the OpenTelemetry Rust SDK over gRPC and HTTP, the
//! upstream OTLP/JSON examples, malformed and compressed bodies, compression bombs, TLS and
//! mutual TLS.

use crate::harness::{http_client, passthrough_config, post, traces_request, Sieve};
use crate::sink::Sink;
use opentelemetry::logs::{
    AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity,
};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_sdk::Resource;
use prost::Message;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn resource() -> Resource {
    Resource::builder().with_service_name("it-client").build()
}

/// Sends 10 spans, 5 log records and metrics with the SDK, over gRPC or HTTP.
fn send_with_sdk(endpoint: String, grpc: bool) {
    let spans = if grpc {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&endpoint)
            .build()
    } else {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build()
    }
    .unwrap();
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(spans)
        .with_resource(resource())
        .build();
    let tracer = tracer_provider.tracer("it");
    for i in 0..10 {
        let mut span = tracer.start(format!("span-{i}"));
        span.set_attribute(KeyValue::new("http.route", format!("/items/{i}")));
        span.set_attribute(KeyValue::new("retry.count", i as i64));
        span.end();
    }
    tracer_provider.shutdown().unwrap();

    let logs = if grpc {
        opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(&endpoint)
            .build()
    } else {
        opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/logs"))
            .build()
    }
    .unwrap();
    let logger_provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_simple_exporter(logs)
        .with_resource(resource())
        .build();
    let logger = logger_provider.logger("it");
    for i in 0..5 {
        let mut record = logger.create_log_record();
        record.set_body(LogValue::from(format!("log line {i}")));
        record.set_severity_number(Severity::Warn);
        record.add_attribute("user.tier", "gold");
        logger.emit(record);
    }
    logger_provider.shutdown().unwrap();

    {
        let metrics = if grpc {
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
        } else {
            opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{endpoint}/v1/metrics"))
                .build()
        }
        .unwrap();
        // the reader exports from the tokio runtime, which the HTTP client needs
        let reader =
            opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
                metrics,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build();
        let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource())
            .build();
        let meter = meter_provider.meter("it");
        let counter = meter.u64_counter("orders").build();
        counter.add(7, &[KeyValue::new("region", "eu")]);
        let histogram = meter.f64_histogram("latency").with_unit("s").build();
        histogram.record(0.25, &[]);
        meter_provider.shutdown().unwrap();
    }
}

fn string_attr(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

async fn round_trip(grpc: bool) {
    let sink = Sink::start().await;
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    let endpoint = if grpc {
        format!("http://127.0.0.1:{}", sieve.grpc)
    } else {
        format!("http://127.0.0.1:{}", sieve.http)
    };
    tokio::task::spawn_blocking(move || send_with_sdk(endpoint, grpc))
        .await
        .unwrap();

    sink.wait_for(WAIT, "10 spans and 5 logs", |r| {
        r.span_count() == 10 && r.log_count() == 5
    })
    .await;
    sink.with(|r| {
        let mut names = r.span_names();
        names.sort();
        assert_eq!(
            names,
            (0..10).map(|i| format!("span-{i}")).collect::<Vec<_>>()
        );
        let span = r
            .traces
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|s| &s.spans)
            .find(|s| s.name == "span-3")
            .unwrap();
        assert_eq!(
            string_attr(&span.attributes, "http.route"),
            Some(Value::StringValue("/items/3".into()))
        );
        assert_eq!(
            string_attr(&span.attributes, "retry.count"),
            Some(Value::IntValue(3))
        );
        assert_eq!(span.trace_id.len(), 16);
        let service = r.traces[0]
            .resource
            .as_ref()
            .map(|res| string_attr(&res.attributes, "service.name"));
        assert_eq!(service, Some(Some(Value::StringValue("it-client".into()))));
        let log = r
            .logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|s| &s.log_records)
            .next()
            .unwrap();
        assert_eq!(log.severity_number, 13);
        assert_eq!(
            string_attr(&log.attributes, "user.tier"),
            Some(Value::StringValue("gold".into()))
        );
    });
    {
        sink.wait_for(WAIT, "the orders counter and latency histogram", |r| {
            let names: Vec<&str> = r
                .metrics
                .iter()
                .flat_map(|m| &m.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| m.name.as_str())
                .collect();
            names.contains(&"orders") && names.contains(&"latency")
        })
        .await;
    }
    let accepted = sieve.metric(
        "sieve_receiver_accepted_items_total",
        &[("signal", "traces")],
    );
    assert_eq!(accepted, 10.0);
    sieve.wait_metric(
        "sieve_exporter_sent_items_total",
        &[("signal", "traces")],
        WAIT,
        |v| v == 10.0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_grpc_arrives_intact() {
    round_trip(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_http_arrives_intact() {
    round_trip(false).await;
}

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/otlp-json/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_json_examples_arrive_intact() {
    let sink = Sink::start().await;
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    for (file, path) in [
        ("trace.json", "/v1/traces"),
        ("metrics.json", "/v1/metrics"),
        ("logs.json", "/v1/logs"),
    ] {
        let (status, _, body) =
            post(sieve.http, path, "application/json", None, testdata(file)).await;
        assert_eq!(status, 200, "{file}: {}", String::from_utf8_lossy(&body));
    }
    let expected_traces: ExportTraceServiceRequest =
        serde_json::from_slice(&testdata("trace.json")).unwrap();
    let expected_metrics: ExportMetricsServiceRequest =
        serde_json::from_slice(&testdata("metrics.json")).unwrap();
    let expected_logs: ExportLogsServiceRequest =
        serde_json::from_slice(&testdata("logs.json")).unwrap();
    sink.wait_for(WAIT, "all three examples", |r| {
        !r.traces.is_empty() && !r.metrics.is_empty() && !r.logs.is_empty()
    })
    .await;
    sink.with(|r| {
        assert_eq!(r.traces, expected_traces.resource_spans);
        assert_eq!(r.metrics, expected_metrics.resource_metrics);
        assert_eq!(r.logs, expected_logs.resource_logs);
    });
    // sanity: the examples are not empty, so equality above means something
    assert!(
        expected_traces.resource_spans[0].scope_spans[0].spans[0]
            .trace_id
            .len()
            == 16
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_with_a_reason_and_are_counted() {
    let sink = Sink::start().await;
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    let (status, _, body) = post(
        sieve.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        vec![0x0a, 0xff, 0x01],
    )
    .await;
    assert_eq!(status, 400);
    let status_message = sieve::grpc::RpcStatus::decode(body).unwrap();
    assert!(
        status_message.message.contains("runs past the end"),
        "{}",
        status_message.message
    );
    let (status, _, body) = post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        b"{\"resourceLogs\": [".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("invalid OTLP/JSON logs request"));
    let (status, _, _) = post(sieve.http, "/v1/logs", "text/plain", None, b"hi".to_vec()).await;
    assert_eq!(status, 415);
    let (status, _, _) = post(
        sieve.http,
        "/v1/nope",
        "application/json",
        None,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        sieve.metric(
            "sieve_receiver_rejected_requests_total",
            &[("reason", "malformed")]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_bodies_are_accepted() {
    let sink = Sink::start().await;
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    let plain = traces_request(0, 20);
    for codec in [
        sieve::compression::Compression::Gzip,
        sieve::compression::Compression::Zstd,
    ] {
        let body = codec.compress(&plain, None);
        let (status, headers, _) = post(
            sieve.http,
            "/v1/traces",
            "application/x-protobuf",
            codec.header_value(),
            body,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/x-protobuf");
    }
    sink.wait_for(WAIT, "40 spans", |r| r.span_count() == 40)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_spans_with_bad_ids_are_reported_as_partial_success() {
    let sink = Sink::start().await;
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"good"},
        {"traceId":"abcd","spanId":"eee19b7ec3c1b174","name":"bad"}]}]}]}"#;
    let (status, _, response) = post(
        sieve.http,
        "/v1/traces",
        "application/json",
        None,
        body.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    // protojson writes int64 as a string, as the OTLP/JSON mapping says
    let response: serde_json::Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(response["partialSuccess"]["rejectedSpans"], "1");
    assert!(response["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("traceId"));
    sink.wait_for(WAIT, "the good span", |r| {
        r.span_names() == vec!["good".to_string()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_bombs_are_refused_with_flat_memory() {
    let sink = Sink::start().await;
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    // 1 GiB of zeros compresses to about 1 MiB of gzip and 32 KiB of zstd
    let zeros = vec![0u8; 1 << 30];
    let gzip = sieve::compression::Compression::Gzip.compress(&zeros, Some(9));
    let zstd = sieve::compression::Compression::Zstd.compress(&zeros, Some(19));
    drop(zeros);
    let before = sieve.rss_bytes();
    for (codec, body) in [("gzip", gzip.clone()), ("zstd", zstd.clone())] {
        let (status, _, _) = post(
            sieve.http,
            "/v1/traces",
            "application/x-protobuf",
            Some(codec),
            body,
        )
        .await;
        assert_eq!(status, 413, "{codec} bomb over HTTP");
    }
    for (codec, body) in [("gzip", gzip), ("zstd", zstd)] {
        let status = grpc_call(
            sieve.grpc,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Some(codec),
            &body,
        )
        .await;
        assert_eq!(status, 8, "{codec} bomb over gRPC: RESOURCE_EXHAUSTED");
    }
    let growth = sieve.rss_bytes().saturating_sub(before);
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
    assert_eq!(
        sieve.metric(
            "sieve_receiver_rejected_requests_total",
            &[("reason", "too_large")]
        ),
        4.0
    );
}

/// A raw unary gRPC call over HTTP/2; returns the grpc-status.
pub async fn grpc_call(port: u16, path: &str, encoding: Option<&str>, message: &[u8]) -> i32 {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut request = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let body = sieve::grpc::frame(encoding.is_some(), message);
    let response = client
        .request(request.body(http_body_util::Full::new(body)).unwrap())
        .await
        .unwrap();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .or(headers.get("grpc-status"))
        .unwrap();
    status.to_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_malformed_and_unknown_calls_get_their_status() {
    let sink = Sink::start().await;
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    let traces = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    assert_eq!(
        grpc_call(sieve.grpc, traces, None, &[0x0a, 0xff]).await,
        3,
        "INVALID_ARGUMENT"
    );
    assert_eq!(
        grpc_call(sieve.grpc, "/foo.Bar/Baz", None, &[]).await,
        12,
        "UNIMPLEMENTED"
    );
    assert_eq!(
        grpc_call(sieve.grpc, traces, Some("br"), &[]).await,
        12,
        "UNIMPLEMENTED encoding"
    );
    assert_eq!(
        grpc_call(sieve.grpc, traces, None, &traces_request(0, 3)).await,
        0
    );
    sink.wait_for(WAIT, "3 spans", |r| r.span_count() == 3)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlphttp_exporter_delivers_protobuf_with_headers() {
    let sink = Sink::start().await;
    sink.require_tenant("loki-tenant");
    let config = passthrough_config(&sink.grpc_endpoint(), "batch", "", "")
        .replace("  otlp:\n    endpoint:", &format!("  otlphttp:\n    endpoint: {}\n    headers:\n      X-Scope-OrgID: loki-tenant\n  otlp:\n    endpoint:", sink.http_endpoint()))
        .replace("exporters: [otlp]", "exporters: [otlphttp]");
    let sieve = Sieve::start(&config);
    let (status, _, _) = post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        testdata("logs.json"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = post(
        sieve.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        traces_request(0, 4),
    )
    .await;
    assert_eq!(status, 200);
    sink.wait_for(WAIT, "logs and spans over HTTP", |r| {
        r.log_count() == 1 && r.span_count() == 4
    })
    .await;
    sink.with(|r| {
        assert!(r
            .tenants
            .iter()
            .all(|t| t.as_deref() == Some("loki-tenant")))
    });
}

/// Exports one span named `name` with the SDK over gRPC and TLS (verifying the server
/// against the test CA), presenting the client certificate when `client_cert` is set.
pub fn export_span_over_tls(
    port: u16,
    pki: &std::path::Path,
    name: &'static str,
    client_cert: bool,
) {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let pem = |file: &str| std::fs::read_to_string(pki.join(file)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem("ca.pem")))
        .domain_name("127.0.0.1");
    if client_cert {
        tls = tls.identity(Identity::from_pem(pem("client.pem"), pem("client.key")));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("https://127.0.0.1:{port}"))
        .with_tls_config(tls)
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(resource())
        .build();
    provider.tracer("it").start(name).end();
    let _ = provider.shutdown();
}

/// POSTs a request of one span over HTTPS, trusting only the CA in `pki`.
async fn post_over_https(port: u16, pki: &std::path::Path) -> Result<u16, String> {
    let tls = sieve::tls::client_config(&sieve::tls::TlsClientConfig {
        ca_file: Some(pki.join("ca.pem").to_string_lossy().into_owned()),
        ..Default::default()
    })
    .unwrap();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let request = http::Request::post(format!("https://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            traces_request(1, 1),
        )))
        .unwrap();
    client
        .request(request)
        .await
        .map(|response| response.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_on_both_protocols() {
    let pki = tempfile::tempdir().unwrap();
    crate::harness::make_certificates(pki.path());
    let file = |name: &str| pki.path().join(name).to_string_lossy().into_owned();
    let sink = Sink::start().await;
    let plain = passthrough_config(&sink.grpc_endpoint(), "batch", "", "");
    let with_tls = plain
        .replace(
            "endpoint: 127.0.0.1:{grpc}\n",
            &format!(
                "endpoint: 127.0.0.1:{{grpc}}\n        tls:\n          cert_file: {}\n          key_file: {}\n          client_ca_file: {}\n",
                file("server.pem"),
                file("server.key"),
                file("ca.pem")
            ),
        )
        .replace(
            "endpoint: 127.0.0.1:{http}\n",
            &format!(
                "endpoint: 127.0.0.1:{{http}}\n        tls:\n          cert_file: {}\n          key_file: {}\n",
                file("server.pem"),
                file("server.key")
            ),
        );
    let sieve = Sieve::start(&with_tls);
    let (grpc, dir) = (sieve.grpc, pki.path().to_path_buf());
    tokio::task::spawn_blocking(move || {
        export_span_over_tls(grpc, &dir, "without-client-cert", false);
        export_span_over_tls(grpc, &dir, "with-client-cert", true);
    })
    .await
    .unwrap();
    assert_eq!(post_over_https(sieve.http, pki.path()).await, Ok(200));
    let plaintext = http_client()
        .request(
            http::Request::post(format!("http://127.0.0.1:{}/v1/traces", sieve.http))
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    traces_request(2, 1),
                )))
                .unwrap(),
        )
        .await;
    assert!(
        plaintext.is_err(),
        "plaintext is not served on a TLS listener"
    );

    sink.wait_for(WAIT, "the two accepted spans", |r| r.span_count() == 2)
        .await;
    sink.with(|r| assert!(r.span_names().contains(&"with-client-cert".to_string())));
    for transport in ["grpc", "http"] {
        sieve.wait_metric(
            "sieve_receiver_rejected_requests_total",
            &[("transport", transport), ("reason", "tls_handshake")],
            WAIT,
            |v| v >= 1.0,
        );
    }

    // a reload that turns TLS off on the same port serves plaintext without re-binding
    sieve.reload_with(&plain, 1.0);
    let (status, _, _) = post(
        sieve.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        traces_request(3, 1),
    )
    .await;
    assert_eq!(status, 200);
    sink.wait_for(WAIT, "the span sent in plaintext after the reload", |r| {
        r.span_count() == 3
    })
    .await;
    sink.with(|r| {
        assert!(
            !r.span_names().contains(&"without-client-cert".to_string()),
            "a gRPC client without a certificate was refused"
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_and_counted() {
    use std::io::Read;
    let sink = Sink::start().await;
    let config = passthrough_config(&sink.grpc_endpoint(), "batch", "", "").replace(
        "endpoint: 127.0.0.1:{http}\n",
        "endpoint: 127.0.0.1:{http}\n        max_connections: 2\n",
    );
    let sieve = Sieve::start(&config);
    let connect = || std::net::TcpStream::connect(("127.0.0.1", sieve.http)).unwrap();
    let (first, _second) = (connect(), connect());
    let mut third = connect();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(third.read(&mut byte).unwrap(), 0, "the third is closed");
    assert_eq!(
        sieve.metric(
            "sieve_receiver_rejected_requests_total",
            &[("transport", "http"), ("reason", "connection_limit")]
        ),
        1.0
    );

    // a closed connection frees its place
    drop(first);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let request = http::Request::post(format!("http://127.0.0.1:{}/v1/traces", sieve.http))
            .header("content-type", "application/x-protobuf")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                traces_request(1, 1),
            )))
            .unwrap();
        match http_client().request(request).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                break;
            }
            Err(_) => assert!(
                std::time::Instant::now() < deadline,
                "no place came free after a connection closed"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_rotated_certificates() {
    let (old_pki, new_pki, live) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    crate::harness::make_certificates(old_pki.path());
    crate::harness::make_certificates(new_pki.path());
    let install = |pki: &std::path::Path| {
        for file in ["server.pem", "server.key"] {
            std::fs::copy(pki.join(file), live.path().join(file)).unwrap();
        }
    };
    install(old_pki.path());
    let sink = Sink::start().await;
    let config = passthrough_config(&sink.grpc_endpoint(), "batch", "", "").replace(
        "endpoint: 127.0.0.1:{http}\n",
        &format!(
            "endpoint: 127.0.0.1:{{http}}\n        tls:\n          cert_file: {0}/server.pem\n          key_file: {0}/server.key\n",
            live.path().display()
        ),
    );
    let sieve = Sieve::start(&config);
    assert_eq!(post_over_https(sieve.http, old_pki.path()).await, Ok(200));

    install(new_pki.path());
    sieve.reload(1.0);
    assert_eq!(post_over_https(sieve.http, new_pki.path()).await, Ok(200));
    assert!(
        post_over_https(sieve.http, old_pki.path()).await.is_err(),
        "the old certificate is no longer served"
    );
}
