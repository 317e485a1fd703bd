//! A counting sink for the load run: accepts OTLP/gRPC `Export` calls (inflating gzip or
//! zstd and counting items with the wire walk, no decode), Prometheus remote-write
//! pushes (snappy `WriteRequest`s, counting samples and histogram samples) and Loki
//! pushes (snappy `PushRequest`s, counting entries), over HTTP/1.1 or HTTP/2. Prints the items counted every [`REPORT_MS`] and at exit (SIGTERM/SIGINT).
//!
//! `cargo run --release --example count_sink -- <host:port>`

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use sieve::compression::Compression;
use sieve::exporters::prometheus::prompb::WriteRequest;
use sieve::model::{wire, Signal};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How often the count is printed (the replay run reads when a backlog arrived from it).
const REPORT_MS: u64 = 100;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4417".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let items = Arc::new(AtomicU64::new(0));
    let reporter = items.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(REPORT_MS));
        loop {
            tick.tick().await;
            println!("items={}", reporter.load(Ordering::Relaxed));
        }
    });
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let items = items.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| count(req, items.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("items={}", items.load(Ordering::Relaxed));
}

async fn count(
    req: Request<hyper::body::Incoming>,
    items: Arc<AtomicU64>,
) -> Result<Response<sieve::net::Body>, std::convert::Infallible> {
    let grpc_signal = Signal::ALL
        .into_iter()
        .find(|s| s.grpc_path() == req.uri().path());
    let loki = req.uri().path() == "/loki/api/v1/push";
    let codec = req
        .headers()
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .and_then(Compression::from_header)
        .unwrap_or(Compression::None);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    match grpc_signal {
        Some(signal) => Ok(grpc_export(signal, codec, &body, &items)),
        None if loki => Ok(loki_push(&body, &items)),
        None => Ok(remote_write(&body, &items)),
    }
}

fn grpc_export(
    signal: Signal,
    codec: Compression,
    body: &bytes::Bytes,
    items: &AtomicU64,
) -> Response<sieve::net::Body> {
    let status = match sieve::grpc::unframe(body) {
        Ok((compressed, message)) => {
            let message = if compressed {
                codec
                    .decompress(&message, 64 << 20)
                    .map(bytes::Bytes::from)
                    .unwrap_or_default()
            } else {
                message
            };
            let n = wire::count_items(signal, &message).unwrap_or(0);
            items.fetch_add(n as u64, Ordering::Relaxed);
            "0"
        }
        Err(_) => "3",
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    let body =
        Full::new(sieve::grpc::frame(false, &[])).with_trailers(async move { Some(Ok(trailers)) });
    Response::builder()
        .header("content-type", "application/grpc")
        .body(body.boxed_unsync())
        .unwrap()
}

/// A Loki push (snappy `PushRequest`): counts its entries.
fn loki_push(body: &[u8], items: &AtomicU64) -> Response<sieve::net::Body> {
    use sieve::exporters::loki::push::PushRequest;
    count_snappy(body, items, |request: PushRequest| {
        request.streams.iter().map(|s| s.entries.len()).sum()
    })
}

/// A remote-write push (snappy `WriteRequest`): counts samples and histogram samples.
fn remote_write(body: &[u8], items: &AtomicU64) -> Response<sieve::net::Body> {
    count_snappy(body, items, |request: WriteRequest| {
        request
            .timeseries
            .iter()
            .map(|s| s.samples.len() + s.histograms.len())
            .sum()
    })
}

/// Decodes a snappy-compressed protobuf push and adds what `count` finds in it: 204, or
/// 400 when it is not one.
fn count_snappy<M: Message + Default>(
    body: &[u8],
    items: &AtomicU64,
    count: impl FnOnce(M) -> usize,
) -> Response<sieve::net::Body> {
    let request = snap::raw::Decoder::new()
        .decompress_vec(body)
        .ok()
        .and_then(|raw| M::decode(raw.as_slice()).ok());
    let Some(request) = request else {
        return Response::builder()
            .status(400)
            .body(sieve::net::full("not a snappy protobuf push"))
            .unwrap();
    };
    items.fetch_add(count(request) as u64, Ordering::Relaxed);
    Response::builder()
        .status(204)
        .body(sieve::net::full(""))
        .unwrap()
}
