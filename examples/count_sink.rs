//! A counting OTLP/gRPC sink for the load run: accepts any `Export` call, inflates gzip or
//! zstd messages, counts items with the wire walk (no decode) and prints the total spans
//! once per second and at exit (SIGTERM/SIGINT).
//!
//! `cargo run --release --example count_sink -- <host:port>`

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sieve::compression::Compression;
use sieve::model::{wire, Signal};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4417".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let spans = Arc::new(AtomicU64::new(0));
    let reporter = spans.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            println!("spans={}", reporter.load(Ordering::Relaxed));
        }
    });
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let spans = spans.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| count(req, spans.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("spans={}", spans.load(Ordering::Relaxed));
}

async fn count(
    req: Request<hyper::body::Incoming>,
    spans: Arc<AtomicU64>,
) -> Result<Response<sieve::net::Body>, std::convert::Infallible> {
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
    let status = match sieve::grpc::unframe(&body) {
        Ok((compressed, message)) => {
            let message = if compressed {
                codec
                    .decompress(&message, 64 << 20)
                    .map(bytes::Bytes::from)
                    .unwrap_or_default()
            } else {
                message
            };
            spans.fetch_add(
                wire::count_items(Signal::Traces, &message).unwrap_or(0) as u64,
                Ordering::Relaxed,
            );
            "0"
        }
        Err(_) => "3",
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    let body =
        Full::new(sieve::grpc::frame(false, &[])).with_trailers(async move { Some(Ok(trailers)) });
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body(body.boxed_unsync())
        .unwrap())
}
