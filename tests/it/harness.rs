//! Shared helpers: run the `sieve` binary on a config, read its metrics, signal it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port free for TCP and UDP, from 20000–31999: below Linux's ephemeral range
/// (32768–60999), where the sinks' port-0 listeners and every outgoing connection get
/// their ports, so a port handed out here is not taken by them before sieve binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = std::process::id().wrapping_mul(97) % COUNT;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
}

pub fn sieve_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sieve")
}

/// A sieve process with its own ports and config file.
pub struct Sieve {
    child: Option<Child>,
    pub grpc: u16,
    pub http: u16,
    pub metrics: u16,
    dir: tempfile::TempDir,
}

impl Sieve {
    /// Starts sieve on `config`, where `{grpc}`, `{http}` and `{metrics}` are replaced
    /// by free ports, and waits until `/readyz` answers 200.
    pub fn start(config: &str) -> Sieve {
        Sieve::start_with_env(config, &[])
    }

    /// [`Sieve::start`] with these environment variables set.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Sieve {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http, metrics) = (free_port(), free_port(), free_port());
        let mut sieve = Sieve {
            child: None,
            grpc,
            http,
            metrics,
            dir,
        };
        sieve.write_config(config);
        let stderr = std::fs::File::create(sieve.dir.path().join("stderr.log")).unwrap();
        let child = Command::new(sieve_bin())
            .arg("--config")
            .arg(sieve.config_path())
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        sieve.child = Some(child);
        sieve.wait_ready();
        sieve
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sieve.yaml")
    }

    /// Writes a config (with the port placeholders filled in); it takes effect on SIGHUP.
    pub fn write_config(&self, config: &str) {
        let text = config
            .replace("{grpc}", &self.grpc.to_string())
            .replace("{http}", &self.http.to_string())
            .replace("{metrics}", &self.metrics.to_string());
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "sieve exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if http_get(self.metrics, "/readyz").is_some_and(|(status, _)| status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sieve not ready in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGHUP and waits until the `nth` successful reload since start is counted.
    pub fn reload(&self, nth: f64) {
        self.signal("HUP");
        self.wait_metric(
            "sieve_config_reloads_total",
            &[("result", "success")],
            Duration::from_secs(20),
            |v| v >= nth,
        );
    }

    /// Writes `config` and reloads it (the `nth` successful reload).
    pub fn reload_with(&self, config: &str, nth: f64) {
        self.write_config(config);
        self.reload(nth);
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, killing it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Sum of every sample of `name` whose labels include all of `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum_samples(&self.metrics_text(), name, labels)
    }

    /// Polls `metric` until `done` holds, panicking after `timeout`.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        done: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.metric(name, labels);
            if done(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} stuck at {value}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The resident set size of the process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }
}

impl Drop for Sieve {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A minimal HTTP/1.0 GET, enough for the telemetry endpoints.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// An HTTP client for OTLP/HTTP requests in tests.
pub fn http_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// POSTs `body` and returns the status, headers and body.
pub async fn post(
    port: u16,
    path: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt;
    let mut request = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", content_type);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let response = http_client()
        .request(
            request
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// A sieve config: OTLP receiver on the harness ports → `processors` → OTLP gRPC exporter
/// to `sink`, for every signal.
pub fn passthrough_config(
    sink: &str,
    processors: &str,
    extra_exporter: &str,
    queue: &str,
) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{{grpc}}
      http:
        endpoint: 127.0.0.1:{{http}}
processors:
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: {sink}
    compression: gzip
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 200ms
{extra_exporter}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  shutdown_timeout: 5s
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{processors}]
      exporters: [otlp]
{queue}
    metrics:
      receivers: [otlp]
      processors: [{processors}]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      processors: [{processors}]
      exporters: [otlp]
"
    )
}

/// A shipped Tempo pipeline (`pipelines/<file>`) pointed at `sink` for tenant `team-a`,
/// its listeners on the harness's ports and its self-metrics added.
pub fn shipped_tempo_config(file: &str, sink: &str) -> String {
    let shipped =
        std::fs::read_to_string(format!("{}/pipelines/{file}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    shipped
        .replace("127.0.0.1:4317", "127.0.0.1:{grpc}")
        .replace("127.0.0.1:4318", "127.0.0.1:{http}")
        .replace("${env:TEMPO_ENDPOINT:-http://127.0.0.1:3200}", sink)
        .replace("${env:TEMPO_TENANT}", "team-a")
        + "  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics}\n"
}

/// An encoded traces export request of `spans` spans whose trace id is `tag`.
pub fn traces_request(tag: usize, spans: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: (tag as u128 + 1).to_be_bytes().to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("r{tag}-s{i}"),
            ..Default::default()
        })
        .collect();
    let scope_spans = vec![ScopeSpans {
        spans,
        ..Default::default()
    }];
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans,
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
pub fn make_certificates(dir: &std::path::Path) {
    let script = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=sieve-test-ca -days 2 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
for who in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 2 -extfile $who.ext 2>/dev/null
done
"#;
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "openssl could not make test certificates");
}

/// Sends `spans` spans named `<prefix>-<i>` with the OpenTelemetry SDK over gRPC or
/// HTTP, with `header` (name, value) on every export if given.
pub fn sdk_send_spans(
    port: u16,
    grpc: bool,
    header: Option<(&str, &str)>,
    prefix: &str,
    spans: usize,
) {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
    let exporter = if grpc {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some((name, value)) = header {
            let name = tonic::metadata::MetadataKey::from_bytes(name.as_bytes()).unwrap();
            metadata.insert(name, value.parse().unwrap());
        }
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_metadata(metadata)
            .build()
    } else {
        let headers = header
            .map(|(name, value)| [(name.to_string(), value.to_string())].into())
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
    let tracer = provider.tracer("sieve-it");
    for i in 0..spans {
        tracer.start(format!("{prefix}-{i}")).end();
    }
    let _ = provider.shutdown();
}

/// POSTs `traces_request(tag, spans)` over OTLP/HTTP with `headers`; the status and the
/// response headers.
pub async fn post_traces(
    port: u16,
    headers: &[(&str, &str)],
    tag: usize,
    spans: usize,
) -> (u16, http::HeaderMap) {
    let mut request = http::Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(traces_request(tag, spans)));
    let response = http_client()
        .request(request.body(body).unwrap())
        .await
        .unwrap();
    (response.status().as_u16(), response.headers().clone())
}
