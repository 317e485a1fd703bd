//! The Loki exporter against a Loki double that decodes the real wire format (snappy +
//! protobuf `PushRequest`, or JSON) and enforces what Loki enforces: label name rules,
//! per-stream timestamp order within a push, and the tenant header.

use crate::harness::{free_port, post, Sieve};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use prost::Message;
use sieve::exporters::loki::push::PushRequest;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// One entry as Loki stored it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub labels: BTreeMap<String, String>,
    pub nanos: i64,
    pub line: String,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    entries: Vec<Stored>,
    tenant: Option<String>,
    fail_next: Vec<u16>,
    statuses: Vec<u16>,
}

#[derive(Clone)]
pub struct LokiDouble {
    state: Arc<Mutex<State>>,
    pub port: u16,
}

impl LokiDouble {
    pub async fn start(tenant: Option<&str>) -> LokiDouble {
        LokiDouble::serve(tenant, None).await
    }

    /// A double that speaks HTTPS with `acceptor` (and so checks client certificates
    /// when the acceptor asks for them).
    pub async fn start_tls(
        tenant: Option<&str>,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> LokiDouble {
        LokiDouble::serve(tenant, Some(acceptor)).await
    }

    async fn serve(tenant: Option<&str>, tls: Option<tokio_rustls::TlsAcceptor>) -> LokiDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            tenant: tenant.map(str::to_string),
            ..Default::default()
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, tls) = (Arc::clone(&shared), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(push(&state, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => drop(
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await,
                        ),
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                drop(
                                    http.serve_connection(
                                        hyper_util::rt::TokioIo::new(stream),
                                        service,
                                    )
                                    .await,
                                );
                            }
                        }
                    }
                });
            }
        });
        LokiDouble { state, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/loki/api/v1/push", self.port)
    }

    pub fn tls_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/loki/api/v1/push", self.port)
    }

    pub fn entries(&self) -> Vec<Stored> {
        self.state.lock().entries.clone()
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.state.lock().statuses.clone()
    }

    pub fn fail_next(&self, statuses: &[u16]) {
        self.state.lock().fail_next = statuses.to_vec();
    }

    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Stored]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.entries()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "loki double: timed out waiting for {what}; have {:?}",
                self.entries()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn reply(status: u16, text: &str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(text.to_string())))
        .unwrap()
}

async fn push(
    state: &Mutex<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let status = handle(state, req).await;
    state.lock().statuses.push(status.status().as_u16());
    status
}

async fn handle(
    state: &Mutex<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    if req.uri().path() != "/loki/api/v1/push" || req.method() != hyper::Method::POST {
        return reply(404, "404 page not found");
    }
    let tenant = req
        .headers()
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(required) = state.lock().tenant.clone() {
        if tenant.as_deref() != Some(required.as_str()) {
            return reply(401, "no org id");
        }
    }
    let injected = {
        let mut s = state.lock();
        (!s.fail_next.is_empty()).then(|| s.fail_next.remove(0))
    };
    if let Some(status) = injected {
        return reply(status, "injected failure");
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let streams = match content_type.as_str() {
        "application/x-protobuf" => {
            let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&body) else {
                return reply(400, "snappy: corrupt input");
            };
            let Ok(request) = PushRequest::decode(raw.as_slice()) else {
                return reply(400, "failed to decode protobuf");
            };
            request
                .streams
                .into_iter()
                .map(|s| {
                    let entries = s
                        .entries
                        .into_iter()
                        .map(|e| {
                            let ts = e.timestamp.unwrap_or_default();
                            let metadata = e
                                .structured_metadata
                                .into_iter()
                                .map(|p| (p.name, p.value))
                                .collect();
                            (
                                ts.seconds * 1_000_000_000 + ts.nanos as i64,
                                e.line,
                                metadata,
                            )
                        })
                        .collect();
                    (s.labels, entries)
                })
                .collect::<Vec<(String, Vec<(i64, String, BTreeMap<String, String>)>)>>()
        }
        "application/json" => {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return reply(400, "invalid JSON");
            };
            let mut streams = Vec::new();
            for stream in value["streams"].as_array().cloned().unwrap_or_default() {
                let labels: BTreeMap<String, String> = stream["stream"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                let label_text = format!(
                    "{{{}}}",
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", serde_json::Value::from(v.as_str())))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let entries = stream["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| {
                        let metadata = v[2]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        (
                            v[0].as_str().unwrap().parse().unwrap(),
                            v[1].as_str().unwrap().to_string(),
                            metadata,
                        )
                    })
                    .collect();
                streams.push((label_text, entries));
            }
            streams
        }
        other => return reply(415, &format!("unsupported content type {other}")),
    };
    let mut stored = Vec::new();
    for (label_text, entries) in streams {
        let labels = match parse_labels(&label_text) {
            Ok(labels) => labels,
            Err(e) => return reply(400, &format!("error parsing labels {label_text}: {e}")),
        };
        let mut last = i64::MIN;
        for (nanos, line, metadata) in entries {
            if nanos < last {
                return reply(400, &format!("entry out of order for stream {label_text}"));
            }
            last = nanos;
            stored.push(Stored {
                labels: labels.clone(),
                nanos,
                line,
                metadata,
            });
        }
    }
    state.lock().entries.extend(stored);
    reply(204, "")
}

/// Loki's label rules: `{name="value", ...}`, names `[a-zA-Z_][a-zA-Z0-9_]*`, no
/// duplicates, at least one label.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or("not wrapped in {}")?;
    let mut labels = BTreeMap::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or("missing =")?;
        let name = name.trim();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("invalid label name {name:?}"));
        }
        let mut values = serde_json::Deserializer::from_str(after).into_iter::<String>();
        let value = values
            .next()
            .ok_or("missing value")?
            .map_err(|e| e.to_string())?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = after[values.byte_offset()..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    if labels.is_empty() {
        return Err("at least one label pair is required per stream".into());
    }
    Ok(labels)
}

fn config(loki: &LokiDouble, exporter_extra: &str, processors: &str, receivers: &str) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
{receivers}
processors:
  batch:
    timeout: 50ms
  redaction:
    allow_all_keys: true
exporters:
  loki:
    endpoint: {}
    tenant_id: team-a
    retry_on_failure:
      initial_interval: 50ms
{exporter_extra}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    logs:
      receivers: [otlp{}]
      processors: [{processors}]
      exporters: [loki]
",
        loki.endpoint(),
        if receivers.is_empty() { "" } else { ", syslog" }
    )
}

/// (body, time in ns, severity number, attributes)
type TestRecord<'a> = (&'a str, u64, i32, &'a [(&'a str, &'a str)]);

fn logs_json(records: &[TestRecord]) -> Vec<u8> {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(body, time, severity, attrs)| {
            let attributes: Vec<serde_json::Value> = attrs.iter().map(|(k, v)| serde_json::json!({"key": k, "value": {"stringValue": v}})).collect();
            serde_json::json!({"timeUnixNano": time.to_string(), "severityNumber": severity, "body": {"stringValue": body}, "attributes": attributes,
                               "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"})
        })
        .collect();
    serde_json::json!({"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}, {"key": "k8s.pod.name", "value": {"stringValue": "checkout-7f9"}}]},
                                         "scopeLogs": [{"logRecords": records}]}]})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_labels_metadata_and_time_order() {
    let loki = LokiDouble::start(Some("team-a")).await;
    let sieve = Sieve::start(&config(
        &loki,
        "    labels:\n      resource: [k8s.pod.name]",
        "batch",
        "",
    ));
    let body = logs_json(&[
        ("second", 2_000, 13, &[("http.route", "/pay")]),
        ("first", 1_000, 13, &[("http.route", "/pay")]),
        ("boom", 1_500, 17, &[]),
    ]);
    let (status, _, _) = post(sieve.http, "/v1/logs", "application/json", None, body).await;
    assert_eq!(status, 200);
    loki.wait_for("three entries", |e| e.len() == 3).await;
    let entries = loki.entries();
    let warn: Vec<&Stored> = entries
        .iter()
        .filter(|e| e.labels.get("level").map(String::as_str) == Some("warn"))
        .collect();
    assert_eq!(
        warn.iter().map(|e| e.line.as_str()).collect::<Vec<_>>(),
        vec!["first", "second"],
        "time order within the stream"
    );
    assert_eq!(
        warn[0].labels,
        BTreeMap::from([
            ("level".to_string(), "warn".to_string()),
            ("service_name".to_string(), "checkout".to_string()),
            ("k8s_pod_name".to_string(), "checkout-7f9".to_string())
        ])
    );
    assert_eq!(
        warn[0].metadata.get("http_route").map(String::as_str),
        Some("/pay")
    );
    assert_eq!(
        warn[0].metadata.get("trace_id").map(String::as_str),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(warn[0].nanos, 1_000);
    assert!(entries
        .iter()
        .any(|e| e.labels["level"] == "error" && e.line == "boom"));
    assert!(
        loki.statuses().iter().all(|s| *s == 204),
        "{:?}",
        loki.statuses()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_encoding_and_logfmt_lines() {
    let loki = LokiDouble::start(Some("team-a")).await;
    let sieve = Sieve::start(&config(
        &loki,
        "    encoding: json\n    structured_metadata: false\n    line_format: logfmt",
        "batch",
        "",
    ));
    let (status, _, _) = post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        logs_json(&[("paid ok", 5, 9, &[("order", "42")])]),
    )
    .await;
    assert_eq!(status, 200);
    loki.wait_for("one entry", |e| e.len() == 1).await;
    let entry = loki.entries().remove(0);
    assert_eq!(entry.line, "body=\"paid ok\" order=42 trace_id=5b8efff798038103d269b633813fc60c span_id=eee19b7ec3c1b174");
    assert!(entry.metadata.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_value_cap_moves_excess_values_to_metadata() {
    let loki = LokiDouble::start(Some("team-a")).await;
    let sieve = Sieve::start(&config(
        &loki,
        "    max_label_values: 2\n    labels:\n      attributes: [user_id]",
        "batch",
        "",
    ));
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        let (status, _, _) = post(
            sieve.http,
            "/v1/logs",
            "application/json",
            None,
            logs_json(&[("hi", 1, 9, &[("user_id", user)])]),
        )
        .await;
        assert_eq!(status, 200);
    }
    loki.wait_for("five entries", |e| e.len() == 5).await;
    let entries = loki.entries();
    let labelled = entries
        .iter()
        .filter(|e| e.labels.contains_key("user_id"))
        .count();
    let in_metadata = entries
        .iter()
        .filter(|e| e.metadata.contains_key("user_id"))
        .count();
    assert_eq!((labelled, in_metadata), (2, 3));
    assert_eq!(
        sieve.metric(
            "sieve_exporter_label_overflows_total",
            &[("label", "user_id")]
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_and_bad_requests_dropped_with_the_reason() {
    let loki = LokiDouble::start(Some("team-a")).await;
    loki.fail_next(&[429, 500]);
    let sieve = Sieve::start(&config(&loki, "", "batch", ""));
    post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        logs_json(&[("retried", 1, 9, &[])]),
    )
    .await;
    loki.wait_for("the retried entry", |e| e.len() == 1).await;
    assert_eq!(loki.statuses(), vec![429, 500, 204]);
    loki.fail_next(&[400]);
    post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        logs_json(&[("rejected", 2, 9, &[])]),
    )
    .await;
    sieve.wait_metric(
        "sieve_exporter_dropped_items_total",
        &[("exporter", "loki"), ("reason", "permanent")],
        WAIT,
        |v| v == 1.0,
    );
    assert!(
        sieve.log().contains("HTTP 400: injected failure"),
        "Loki's reason is logged:\n{}",
        sieve.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tenant_is_what_loki_refuses() {
    let loki = LokiDouble::start(Some("someone-else")).await;
    let sieve = Sieve::start(&config(&loki, "", "batch", ""));
    post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        logs_json(&[("x", 1, 9, &[])]),
    )
    .await;
    sieve.wait_metric(
        "sieve_exporter_dropped_items_total",
        &[("exporter", "loki"), ("reason", "permanent")],
        WAIT,
        |v| v == 1.0,
    );
    assert_eq!(loki.statuses(), vec![401]);
}

/// The whole chain: logger → sieve syslog receiver → redaction → Loki.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_to_loki_with_redaction() {
    let loki = LokiDouble::start(Some("team-a")).await;
    let port = free_port();
    let syslog = format!("  syslog:\n    tcp:\n      listen_address: 127.0.0.1:{port}\n    resource:\n      service.name: hosts\n");
    let sieve = Sieve::start(&config(&loki, "", "redaction, batch", &syslog));
    let status = std::process::Command::new("logger")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--tcp",
            "--rfc5424",
            "--octet-count",
            "-t",
            "sshd",
            "-p",
            "auth.warning",
        ])
        .arg("failed login for jane@example.com from 203.0.113.5")
        .status()
        .unwrap();
    assert!(status.success());
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.write_all(b"<14>1 - host app - - - card 4111111111111111 used\n")
        .unwrap();
    raw.flush().unwrap();
    loki.wait_for("both syslog lines", |e| e.len() == 2).await;
    let entries = loki.entries();
    let login = entries
        .iter()
        .find(|e| e.line.starts_with("failed login"))
        .expect("the logger line");
    assert_eq!(login.line, "failed login for **** from ****");
    assert_eq!(
        login.labels.get("service_name").map(String::as_str),
        Some("hosts")
    );
    assert_eq!(login.labels.get("level").map(String::as_str), Some("warn"));
    assert_eq!(
        login.metadata.get("syslog_appname").map(String::as_str),
        Some("sshd")
    );
    assert!(entries.iter().any(|e| e.line == "card **** used"));
    drop(sieve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::make_certificates(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let server = |client_ca: Option<String>| {
        sieve::tls::acceptor(&sieve::tls::TlsServerConfig {
            cert_file: file("server.pem"),
            key_file: file("server.key"),
            client_ca_file: client_ca,
        })
        .unwrap()
    };

    let loki = LokiDouble::start_tls(Some("team-a"), server(None)).await;
    let tls = format!("    tls:\n      ca_file: {}", file("ca.pem"));
    let sieve = Sieve::start(
        &config(&loki, &tls, "batch", "").replace(&loki.endpoint(), &loki.tls_endpoint()),
    );
    post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        logs_json(&[("over https", 1, 9, &[])]),
    )
    .await;
    loki.wait_for("the entry over HTTPS", |e| {
        e.iter().any(|s| s.line == "over https")
    })
    .await;
    drop(sieve);

    let mutual = LokiDouble::start_tls(Some("team-a"), server(Some(file("ca.pem")))).await;
    let without_cert = Sieve::start(
        &config(&mutual, &tls, "batch", "").replace(&mutual.endpoint(), &mutual.tls_endpoint()),
    );
    post(
        without_cert.http,
        "/v1/logs",
        "application/json",
        None,
        logs_json(&[("refused", 1, 9, &[])]),
    )
    .await;
    without_cert.wait_metric(
        "sieve_exporter_send_failed_items_total",
        &[("exporter", "loki"), ("reason", "transport")],
        WAIT,
        |v| v >= 1.0,
    );
    drop(without_cert);
    let with_cert = format!(
        "{tls}\n      cert_file: {}\n      key_file: {}",
        file("client.pem"),
        file("client.key")
    );
    let sieve = Sieve::start(
        &config(&mutual, &with_cert, "batch", "")
            .replace(&mutual.endpoint(), &mutual.tls_endpoint()),
    );
    post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        logs_json(&[("mutual", 1, 9, &[])]),
    )
    .await;
    mutual
        .wait_for("the entry over mutual TLS", |e| {
            e.iter().any(|s| s.line == "mutual")
        })
        .await;
    assert!(mutual.entries().iter().all(|s| s.line != "refused"));
}
