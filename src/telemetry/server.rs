//! The self-telemetry HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

use super::Telemetry;
use crate::net::{self, Body, Server};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Binds `addr` and serves the telemetry endpoints until the server is stopped.
pub fn serve(addr: SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<Server> {
    Ok(serve_on(net::bind(addr)?, telemetry))
}

/// Serves the telemetry endpoints on a bound listener until the server is stopped.
pub fn serve_on(listener: TcpListener, telemetry: Arc<Telemetry>) -> Server {
    Server::spawn(listener, None, move |req| {
        let response = respond(&telemetry, &req);
        async move { response }
    })
}

fn respond<B>(telemetry: &Telemetry, req: &Request<B>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(net::full(telemetry.encode()))
            .expect("static headers are valid"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if telemetry.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(net::full(body))
        .expect("static headers are valid")
}
