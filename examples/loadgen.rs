//! Load generator for the end-to-end run, on a few HTTP/2 connections with several
//! streams each, either as fast as sieve accepts or at a fixed item rate:
//!
//! * `traces` (default): one pre-encoded OTLP/gRPC request of 100 spans (the same request
//!   as `benches/hot_path.rs`), over and over;
//! * `traces_pii`: the same with spans like real HTTP and database spans, most carrying
//!   PII (`benches/common/pii_request.rs`), for the redaction pipeline;
//! * `new_traces_pii`: the same, each request new traces, one span in 50 an error (for
//!   tail sampling);
//! * `label_explosion`: OTLP metrics from eight services, each request three metrics (a
//!   sum, a gauge and a histogram) of 100 data points, every point a new label set
//!   (`user_id`), cycling through 50,000 label sets per metric and service — the attack
//!   a cardinality limiter exists for;
//! * `metrics`: the same requests over 1,000 series in all (125 label sets per service),
//!   which a cardinality limiter lets through;
//! * `syslog`: RFC 5424 lines of about 180 bytes, octet-counted, over 4 TCP connections
//!   (sent counts the lines written: syslog over TCP has no acknowledgement).
//!
//! `cargo run --release --example loadgen -- <host:port> <seconds> [items_per_second|max] [traces|traces_pii|new_traces_pii|label_explosion|metrics|syslog]`
//!
//! Prints `sent_items=N refused_requests=N elapsed_s=F items_per_s=F`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../benches/common/request.rs"]
mod request;

#[path = "../benches/common/pii_request.rs"]
mod pii_request;

/// Spans, or data points per metric, in a request.
const SPANS: u64 = 100;
const LABEL_SETS: u64 = 50_000;
/// Label sets per service in the `metrics` workload: 1,000 series in all.
const STEADY_LABEL_SETS: u64 = 125;
const SERVICES: u64 = 8;

/// What the generator sends.
#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Traces,
    TracesWithPii,
    /// Spans with PII, every request new traces (for tail sampling).
    NewTracesWithPii,
    LabelExplosion,
    Metrics,
}

impl Workload {
    fn items_per_request(self) -> u64 {
        match self {
            Workload::Traces | Workload::TracesWithPii | Workload::NewTracesWithPii => SPANS,
            Workload::LabelExplosion | Workload::Metrics => 3 * SPANS,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Workload::Traces | Workload::TracesWithPii | Workload::NewTracesWithPii => {
                sieve::model::Signal::Traces.grpc_path()
            }
            Workload::LabelExplosion | Workload::Metrics => {
                sieve::model::Signal::Metrics.grpc_path()
            }
        }
    }
}

/// Request `n` of the metrics workloads: service `n % 8`, 100 label sets from
/// `(n / 8) * 100`, cycling through `label_sets` per service.
fn metrics_request(n: u64, label_sets: u64) -> Bytes {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;
    let text = |key: &str, value: String| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    };
    let service = n % SERVICES;
    let first = n / SERVICES * SPANS;
    let users = || {
        (first..first + SPANS).map(|u| vec![text("user_id", format!("user-{}", u % label_sets))])
    };
    let time = 1_700_000_000_000_000_000 + n;
    let number = |attributes| NumberDataPoint {
        attributes,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(n as f64)),
        ..Default::default()
    };
    let metric = |name: &str, data| Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(data),
        ..Default::default()
    };
    let latency = |attributes| HistogramDataPoint {
        attributes,
        time_unix_nano: time,
        count: 3,
        sum: Some(0.3),
        bucket_counts: vec![1, 1, 1, 0],
        explicit_bounds: vec![0.05, 0.1, 0.5],
        ..Default::default()
    };
    let metrics = vec![
        metric(
            "app.requests",
            metric::Data::Sum(Sum {
                data_points: users().map(number).collect(),
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        metric(
            "app.queue.depth",
            metric::Data::Gauge(Gauge {
                data_points: users().map(number).collect(),
            }),
        ),
        metric(
            "app.latency",
            metric::Data::Histogram(Histogram {
                data_points: users().map(latency).collect(),
                aggregation_temporality: 2,
            }),
        ),
    ];
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![text("service.name", format!("service-{service}"))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    sieve::grpc::frame(false, &request.encode_to_vec())
}
const CONNECTIONS: usize = 4;
const STREAMS_PER_CONNECTION: usize = 8;

/// The `new_traces_pii` requests: one encoded request whose trace ids are written anew
/// for each (encoding 100 spans per request would take more of the shared core than
/// sieve's work on them).
struct NewTraces {
    framed: Vec<u8>,
    /// Where each span's trace id lies in `framed`.
    id_offsets: Vec<usize>,
}

impl NewTraces {
    fn new() -> NewTraces {
        let framed = sieve::grpc::frame(
            false,
            &pii_request::traces_request_with_pii_from(SPANS as usize, 1),
        )
        .to_vec();
        let mut from = 0;
        let id_offsets = (0..SPANS as usize)
            .map(|i| {
                let id = pii_request::trace_id(1, i);
                let at = from
                    + framed[from..]
                        .windows(id.len())
                        .position(|w| w == id)
                        .expect("every span's trace id is in the request");
                from = at + id.len();
                at
            })
            .collect();
        let new_traces = NewTraces { framed, id_offsets };
        let seventh = pii_request::traces_request_with_pii_from(SPANS as usize, 1 + 7 * SPANS / 2);
        assert_eq!(
            new_traces.request(7),
            sieve::grpc::frame(false, &seventh),
            "rewriting the trace ids gives the request encoded anew"
        );
        new_traces
    }

    /// Request `n`: the same bytes as `traces_request_with_pii_from(SPANS, 1 + n * SPANS / 2)`.
    fn request(&self, n: u64) -> Bytes {
        let mut body = self.framed.clone();
        for (i, &at) in self.id_offsets.iter().enumerate() {
            body[at..at + 16].copy_from_slice(&pii_request::trace_id(1 + n * SPANS / 2, i));
        }
        Bytes::from(body)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4317".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let rate: Option<u64> = args.get(3).and_then(|s| s.parse().ok());
    let workload = match args.get(4).map(String::as_str) {
        Some("label_explosion") => Workload::LabelExplosion,
        Some("metrics") => Workload::Metrics,
        Some("traces_pii") => Workload::TracesWithPii,
        Some("new_traces_pii") => Workload::NewTracesWithPii,
        Some("syslog") => return syslog(&target, seconds, rate).await,
        _ => Workload::Traces,
    };
    let per_request = workload.items_per_request();
    let body = match workload {
        Workload::TracesWithPii => pii_request::traces_request_with_pii(SPANS as usize),
        _ => request::traces_request(SPANS as usize),
    };
    let body = sieve::grpc::frame(false, &body);
    let new_traces = Arc::new(NewTraces::new());
    let next_request = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers = CONNECTIONS * STREAMS_PER_CONNECTION;
    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        for stream in 0..STREAMS_PER_CONNECTION {
            let (client, body, sent, refused, target, next_request, new_traces) = (
                client.clone(),
                body.clone(),
                sent.clone(),
                refused.clone(),
                target.clone(),
                next_request.clone(),
                new_traces.clone(),
            );
            let per_worker_interval = rate
                .map(|r| Duration::from_secs_f64((per_request * workers as u64) as f64 / r as f64));
            let offset = per_worker_interval.map(|i| {
                i.mul_f64((connection * STREAMS_PER_CONNECTION + stream) as f64 / workers as f64)
            });
            tasks.push(tokio::spawn(async move {
                let mut next = Instant::now() + offset.unwrap_or_default();
                while Instant::now() < deadline {
                    if let Some(interval) = per_worker_interval {
                        tokio::time::sleep_until(next.into()).await;
                        next += interval;
                    }
                    let body = match workload {
                        Workload::Traces | Workload::TracesWithPii => body.clone(),
                        Workload::NewTracesWithPii => {
                            new_traces.request(next_request.fetch_add(1, Ordering::Relaxed))
                        }
                        Workload::LabelExplosion => metrics_request(
                            next_request.fetch_add(1, Ordering::Relaxed),
                            LABEL_SETS,
                        ),
                        Workload::Metrics => metrics_request(
                            next_request.fetch_add(1, Ordering::Relaxed),
                            STEADY_LABEL_SETS,
                        ),
                    };
                    let request =
                        http::Request::post(format!("http://{target}{}", workload.path()))
                            .header("content-type", "application/grpc")
                            .header("te", "trailers")
                            .body(Full::new(body))
                            .unwrap();
                    let Ok(response) = client.request(request).await else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let headers = response.headers().clone();
                    let trailers = response
                        .into_body()
                        .collect()
                        .await
                        .ok()
                        .and_then(|c| c.trailers().cloned());
                    let status = trailers
                        .as_ref()
                        .and_then(|t| t.get("grpc-status"))
                        .or(headers.get("grpc-status"))
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("2");
                    if status == "0" {
                        sent.fetch_add(per_request, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "sent_items={sent} refused_requests={} elapsed_s={elapsed:.2} items_per_s={:.0}",
        refused.load(Ordering::Relaxed),
        sent as f64 / elapsed
    );
}

/// One RFC 5424 line of about 180 bytes, octet-counted for TCP.
fn syslog_frame(n: u64) -> String {
    let line = format!(
        "<165>1 2026-12-04T10:00:00.{:06}Z web-{:02}.example.com checkout 4242 ORDER \
         [meta@32473 region=\"eu-west-1\" build=\"2.14.0\"] order {n} paid, 3 items, total 129.90 EUR, \
         latency 42ms",
        n % 1_000_000,
        n % 16
    );
    format!("{} {line}", line.len())
}

/// The `syslog` workload: lines over 4 TCP connections, as fast as the receiver reads
/// them or at `rate` lines per second in all.
async fn syslog(target: &str, seconds: u64, rate: Option<u64>) {
    use tokio::io::AsyncWriteExt;
    const LINES_PER_WRITE: u64 = 100;
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS as u64 {
        let (sent, target) = (sent.clone(), target.to_string());
        let interval = rate.map(|r| {
            Duration::from_secs_f64((LINES_PER_WRITE * CONNECTIONS as u64) as f64 / r as f64)
        });
        tasks.push(tokio::spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(&target).await else {
                return;
            };
            let mut next = Instant::now();
            let mut n = connection;
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let mut chunk = String::new();
                for _ in 0..LINES_PER_WRITE {
                    chunk.push_str(&syslog_frame(n));
                    n += CONNECTIONS as u64;
                }
                let write = stream.write_all(chunk.as_bytes());
                match tokio::time::timeout_at(deadline.into(), write).await {
                    Ok(Ok(())) => {
                        sent.fetch_add(LINES_PER_WRITE, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "sent_items={sent} refused_requests=0 elapsed_s={elapsed:.2} items_per_s={:.0}",
        sent as f64 / elapsed
    );
}
