//! Receiver authentication with real clients: the OpenTelemetry Rust SDK over gRPC and
//! HTTP with and without the right bearer token, basic auth from an htpasswd file, and a
//! token file rotated while sieve runs.

use crate::harness::{http_client, traces_request, Sieve};
use crate::sink::Sink;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A config whose OTLP protocols both require the authenticator `auth`, defined by
/// `extension` (an `extensions:` entry).
fn config(sink: &str, extension: &str, auth: &str) -> String {
    config_with(sink, extension, auth, auth)
}

/// The same with an authenticator for each protocol.
fn config_with(sink: &str, extensions: &str, grpc: &str, http: &str) -> String {
    let enabled = if grpc == http {
        grpc.to_string()
    } else {
        format!("{grpc}, {http}")
    };
    format!(
        "extensions:
{extensions}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{{grpc}}
        auth:
          authenticator: {grpc}
      http:
        endpoint: 127.0.0.1:{{http}}
        auth:
          authenticator: {http}
exporters:
  otlp:
    endpoint: {sink}
service:
  extensions: [{enabled}]
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
"
    )
}

/// Sends `spans` spans through the SDK with `authorization` (if any) as a header.
fn send_with_sdk(port: u16, grpc: bool, authorization: Option<&str>, spans: usize) {
    let exporter = if grpc {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(value) = authorization {
            metadata.insert("authorization", value.parse().unwrap());
        }
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_metadata(metadata)
            .build()
    } else {
        let headers = authorization
            .map(|v| [("authorization".to_string(), v.to_string())].into())
            .unwrap_or_default();
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("http://127.0.0.1:{port}/v1/traces"))
            .with_headers(headers)
            .build()
    }
    .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let tracer = provider.tracer("auth-it");
    for i in 0..spans {
        tracer.start(format!("span-{i}")).end();
    }
    let _ = provider.shutdown();
}

/// POSTs a 1-span OTLP/HTTP request with `authorization`; the status and the
/// `www-authenticate` header.
async fn post_with(port: u16, authorization: Option<&str>) -> (u16, Option<String>) {
    let mut request = http::Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(traces_request(0, 1)));
    let response = http_client()
        .request(request.body(body).unwrap())
        .await
        .unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), challenge)
}

fn refused(sieve: &Sieve, transport: &str, reason: &str) -> f64 {
    sieve.metric(
        "sieve_receiver_unauthenticated_requests_total",
        &[("transport", transport), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_gets_in_with_the_right_bearer_token_only() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "t0ken-for-it").unwrap();
    let extension = format!(
        "  bearertokenauth:\n    token: ${{file:{}}}",
        secret.display()
    );
    let sieve = Sieve::start(&config(
        &sink.grpc_endpoint(),
        &extension,
        "bearertokenauth",
    ));
    for (grpc, port, transport) in [(true, sieve.grpc, "grpc"), (false, sieve.http, "http")] {
        tokio::task::spawn_blocking(move || {
            send_with_sdk(port, grpc, Some("Bearer t0ken-for-it"), 3);
            send_with_sdk(port, grpc, Some("Bearer wrong"), 2);
            send_with_sdk(port, grpc, None, 2);
        })
        .await
        .unwrap();
        assert_eq!(refused(&sieve, transport, "invalid"), 2.0, "{transport}");
        assert_eq!(refused(&sieve, transport, "missing"), 2.0, "{transport}");
    }
    sink.wait_for(WAIT, "the authenticated spans", |r| r.span_count() == 6)
        .await;
    let (status, challenge) = post_with(sieve.http, Some("Bearer nope")).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"sieve\""));
    let log = sieve.log();
    assert!(!log.contains("t0ken-for-it"), "the token was logged");
    assert!(!log.contains("nope"), "a presented credential was logged");
    assert!(
        !sieve.metrics_text().contains("t0ken"),
        "the token is in a metric"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_takes_effect_without_a_restart() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "first\n").unwrap();
    let extension = format!(
        "  bearertokenauth/rotating:\n    filename: {}",
        file.display()
    );
    let sieve = Sieve::start(&config(
        &sink.grpc_endpoint(),
        &extension,
        "bearertokenauth/rotating",
    ));
    assert_eq!(post_with(sieve.http, Some("Bearer first")).await.0, 200);
    std::fs::write(&file, "second\n").unwrap();
    let deadline = Instant::now() + WAIT;
    while post_with(sieve.http, Some("Bearer second")).await.0 != 200 {
        assert!(Instant::now() < deadline, "the new token never took");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(post_with(sieve.http, Some("Bearer first")).await.0, 401);
    assert!(sieve.log().contains("tokens read again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_an_htpasswd_file() {
    use base64::Engine;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join(".htpasswd");
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    std::fs::write(&htpasswd, format!("ops:{hash}\n")).unwrap();
    let extension = format!(
        "  basicauth/server:\n    htpasswd:\n      file: {}",
        htpasswd.display()
    );
    let sieve = Sieve::start(&config(
        &sink.grpc_endpoint(),
        &extension,
        "basicauth/server",
    ));
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let (good, bad) = (basic("ops:correct horse"), basic("ops:battery staple"));
    assert_eq!(post_with(sieve.http, Some(&good)).await.0, 200);
    let (status, challenge) = post_with(sieve.http, Some(&bad)).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Basic realm=\"sieve\""));
    let port = sieve.grpc;
    tokio::task::spawn_blocking(move || {
        send_with_sdk(port, true, Some(&good), 2);
        send_with_sdk(port, true, Some(&bad), 1);
    })
    .await
    .unwrap();
    assert_eq!(refused(&sieve, "grpc", "invalid"), 1.0);
    sink.wait_for(WAIT, "three spans", |r| r.span_count() == 3)
        .await;
}

/// An agent sieve sends to a gateway sieve that requires credentials: the agent's
/// exporters authenticate with the collector's client extensions, a bearer token over
/// gRPC (read from a file, rotated while running) and basic auth over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_authenticates_to_a_gateway_with_client_extensions() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (server_tokens, client_token) = (dir.path().join("valid"), dir.path().join("mine"));
    std::fs::write(&server_tokens, "gateway-token\n").unwrap();
    std::fs::write(&client_token, "gateway-token\n").unwrap();
    let gateway = Sieve::start(&config_with(
        &sink.grpc_endpoint(),
        &format!(
            "  bearertokenauth:\n    filename: {}\n  basicauth/server:\n    htpasswd:\n      inline: \"agent:agent-pass\"",
            server_tokens.display()
        ),
        "bearertokenauth",
        "basicauth/server",
    ));
    let agent_config = format!(
        "extensions:
  bearertokenauth/client:
    filename: {}
  basicauth/client:
    client_auth:
      username: agent
      password: agent-pass
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{}
    auth:
      authenticator: bearertokenauth/client
    retry_on_failure:
      enabled: false
  otlphttp:
    endpoint: http://127.0.0.1:{}
    auth:
      authenticator: basicauth/client
    retry_on_failure:
      enabled: false
service:
  extensions: [bearertokenauth/client, basicauth/client]
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp, otlphttp]
",
        client_token.display(),
        gateway.grpc,
        gateway.http
    );
    let agent = Sieve::start(&agent_config);
    assert_eq!(post_with(agent.http, None).await.0, 200);
    sink.wait_for(WAIT, "the span through both exporters", |r| {
        r.span_count() == 2
    })
    .await;
    assert_eq!(refused(&gateway, "grpc", "invalid"), 0.0);
    assert_eq!(refused(&gateway, "http", "invalid"), 0.0);
    // the agent's token file now holds a token the gateway does not take
    std::fs::write(&client_token, "stale-token\n").unwrap();
    let deadline = Instant::now() + WAIT;
    while refused(&gateway, "grpc", "invalid") == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the rotated client token never went out"
        );
        assert_eq!(post_with(agent.http, None).await.0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!agent.log().contains("agent-pass") && !agent.log().contains("stale-token"));
}
