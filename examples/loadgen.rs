//! Load generator for the end-to-end run: sends one pre-encoded OTLP/gRPC request of 100
//! spans (the same request as `benches/hot_path.rs`) over and over, on a few HTTP/2
//! connections with several streams each, either as fast as sieve accepts or at a fixed
//! span rate.
//!
//! `cargo run --release --example loadgen -- <host:port> <seconds> [spans_per_second]`
//!
//! Prints `sent_spans=N refused_requests=N elapsed_s=F spans_per_s=F`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../benches/common/request.rs"]
mod request;

const SPANS: u64 = 100;
const CONNECTIONS: usize = 4;
const STREAMS_PER_CONNECTION: usize = 8;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4317".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let rate: Option<u64> = args.get(3).and_then(|s| s.parse().ok());
    let body = sieve::grpc::frame(false, &request::traces_request(SPANS as usize));
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
            let (client, body, sent, refused, target) = (
                client.clone(),
                body.clone(),
                sent.clone(),
                refused.clone(),
                target.clone(),
            );
            let per_worker_interval =
                rate.map(|r| Duration::from_secs_f64((SPANS * workers as u64) as f64 / r as f64));
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
                    let request = http::Request::post(format!("http://{target}/opentelemetry.proto.collector.trace.v1.TraceService/Export"))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(Full::new(body.clone()))
                        .unwrap();
                    let Ok(response) = client.request(request).await else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let headers = response.headers().clone();
                    let trailers = response.into_body().collect().await.ok().and_then(|c| c.trailers().cloned());
                    let status = trailers.as_ref().and_then(|t| t.get("grpc-status")).or(headers.get("grpc-status")).and_then(|v| v.to_str().ok()).unwrap_or("2");
                    if status == "0" {
                        sent.fetch_add(SPANS, Ordering::Relaxed);
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
        "sent_spans={sent} refused_requests={} elapsed_s={elapsed:.2} spans_per_s={:.0}",
        refused.load(Ordering::Relaxed),
        sent as f64 / elapsed
    );
}
