//! A test OTLP backend: a real tonic gRPC server (the opentelemetry-proto generated
//! services) and a hyper OTLP/HTTP server, both decoding what arrives with prost and
//! recording it. It can stall, fail with a chosen status, and require a tenant header,
//! as Tempo does with multi-tenancy on.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use parking_lot::Mutex;
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tonic::{Request, Response, Status};

/// What the sink has received.
#[derive(Default)]
pub struct Received {
    pub traces: Vec<ResourceSpans>,
    pub metrics: Vec<ResourceMetrics>,
    pub logs: Vec<ResourceLogs>,
    /// Tenant header values seen, one per request.
    pub tenants: Vec<Option<String>>,
    /// Per trace request: its tenant header and the names of its spans.
    pub spans_by_request: Vec<(Option<String>, Vec<String>)>,
    pub requests: usize,
}

impl Received {
    pub fn span_count(&self) -> usize {
        self.traces
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    pub fn log_count(&self) -> usize {
        self.logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum()
    }

    pub fn span_names(&self) -> Vec<String> {
        self.traces
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Received>,
    changed: Notify,
    /// Fail the next N requests with this code.
    failures: Mutex<Option<(tonic::Code, usize)>>,
    /// Delay asked for with failures: gRPC RetryInfo / HTTP Retry-After.
    retry_after: Mutex<Option<Duration>>,
    /// When each request arrived, accepted or not.
    attempts: Mutex<Vec<std::time::Instant>>,
    /// Requests missing this tenant are refused (PERMISSION_DENIED / 401).
    required_tenant: Mutex<Option<String>>,
    /// Spans are kept without their attributes (for runs of large volumes).
    strip_attributes: std::sync::atomic::AtomicBool,
}

/// A running sink; dropping it stops the servers.
#[derive(Clone)]
pub struct Sink {
    state: Arc<State>,
    stalled: Arc<watch::Sender<bool>>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    _stop: Arc<watch::Sender<()>>,
}

#[derive(Clone)]
struct Service {
    state: Arc<State>,
    stalled: watch::Receiver<bool>,
}

impl Service {
    /// Applies stall, tenant and failure rules; records on success.
    async fn accept(
        &self,
        tenant: Option<String>,
        record: impl FnOnce(&mut Received),
    ) -> Result<(), Status> {
        let mut stalled = self.stalled.clone();
        let _ = stalled.wait_for(|s| !*s).await;
        if let Some(required) = self.state.required_tenant.lock().clone() {
            if tenant.as_deref() != Some(required.as_str()) {
                return Err(Status::permission_denied(format!(
                    "tenant {required} required"
                )));
            }
        }
        self.state.attempts.lock().push(std::time::Instant::now());
        if let Some((code, left)) = self.state.failures.lock().as_mut() {
            if *left > 0 {
                *left -= 1;
                return Err(match *self.state.retry_after.lock() {
                    Some(delay) => {
                        let details = sieve::grpc::status_message(
                            *code as i32,
                            "injected failure",
                            Some(delay),
                        );
                        Status::with_details(
                            *code,
                            "injected failure",
                            Bytes::from(details.encode_to_vec()),
                        )
                    }
                    None => Status::new(*code, "injected failure"),
                });
            }
        }
        {
            let mut received = self.state.received.lock();
            received.requests += 1;
            received.tenants.push(tenant);
            record(&mut received);
        }
        self.state.changed.notify_waiters();
        Ok(())
    }
}

fn tenant<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = tenant(&request);
        let mut spans = request.into_inner().resource_spans;
        if self
            .state
            .strip_attributes
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
                .for_each(|span| span.attributes.clear());
        }
        let names = spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|span| span.name.clone())
            .collect();
        let request_tenant = tenant.clone();
        self.accept(tenant, |r| {
            r.spans_by_request.push((request_tenant, names));
            r.traces.extend(spans)
        })
        .await?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let tenant = tenant(&request);
        let metrics = request.into_inner().resource_metrics;
        self.accept(tenant, |r| r.metrics.extend(metrics)).await?;
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Service {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let tenant = tenant(&request);
        let logs = request.into_inner().resource_logs;
        self.accept(tenant, |r| r.logs.extend(logs)).await?;
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

impl Sink {
    pub async fn start() -> Sink {
        let state = Arc::new(State::default());
        let (stalled, stalled_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(());
        let service = Service {
            state: Arc::clone(&state),
            stalled: stalled_rx,
        };

        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let mut grpc_stop = stop_rx.clone();
        let router = tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(service.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .add_service(
                MetricsServiceServer::new(service.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .add_service(
                LogsServiceServer::new(service.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            );
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
            let _ = router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_stop.changed().await;
                })
                .await;
        });

        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        tokio::spawn(serve_http(http_listener, service, stop_rx));
        Sink {
            state,
            stalled: Arc::new(stalled),
            grpc,
            http,
            _stop: Arc::new(stop),
        }
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Keeps spans without their attributes from now on, so large volumes fit in memory.
    pub fn strip_attributes(&self) {
        self.state
            .strip_attributes
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Holds every request until [`Sink::resume`].
    pub fn stall(&self) {
        let _ = self.stalled.send(true);
    }

    pub fn resume(&self) {
        let _ = self.stalled.send(false);
    }

    pub fn fail_next(&self, code: tonic::Code, count: usize) {
        *self.state.failures.lock() = Some((code, count));
    }

    /// Fails the next `count` requests, asking the client to wait `delay` first.
    pub fn fail_next_with_retry_after(&self, code: tonic::Code, count: usize, delay: Duration) {
        *self.state.retry_after.lock() = Some(delay);
        self.fail_next(code, count);
    }

    /// When each request arrived.
    pub fn attempts(&self) -> Vec<std::time::Instant> {
        self.state.attempts.lock().clone()
    }

    pub fn require_tenant(&self, tenant: &str) {
        *self.state.required_tenant.lock() = Some(tenant.to_string());
    }

    pub fn with<T>(&self, read: impl FnOnce(&Received) -> T) -> T {
        read(&self.state.received.lock())
    }

    /// Waits until `done` holds for what was received, or panics after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, what: &str, done: impl Fn(&Received) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            if done(&self.state.received.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let summary = self.with(|r| {
                    format!(
                        "{} requests, {} spans, {} logs",
                        r.requests,
                        r.span_count(),
                        r.log_count()
                    )
                });
                panic!("sink: timed out waiting for {what} (have {summary})");
            }
        }
    }
}

/// OTLP/HTTP protobuf: decodes the body with prost and answers as the spec says.
async fn serve_http(
    listener: tokio::net::TcpListener,
    service: Service,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let service = service.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle_http(service, req).await) }
                },
            );
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, handler)
                .await;
        });
    }
}

async fn handle_http(
    service: Service,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let tenant = req
        .headers()
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = if gzip {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
        Bytes::from(out)
    } else {
        body
    };
    let result = match path.as_str() {
        "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(r) => {
                service
                    .accept(tenant, |rec| rec.traces.extend(r.resource_spans))
                    .await
            }
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        },
        "/v1/logs" => match ExportLogsServiceRequest::decode(body) {
            Ok(r) => {
                service
                    .accept(tenant, |rec| rec.logs.extend(r.resource_logs))
                    .await
            }
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        },
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(r) => {
                service
                    .accept(tenant, |rec| rec.metrics.extend(r.resource_metrics))
                    .await
            }
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        },
        _ => Err(Status::not_found("no such path")),
    };
    let status = match result {
        Ok(()) => 200,
        Err(s) if s.code() == tonic::Code::Unavailable => 503,
        Err(s) if s.code() == tonic::Code::PermissionDenied => 401,
        Err(_) => 400,
    };
    let mut response = hyper::Response::builder().status(status);
    if let (503, Some(delay)) = (status, *service.state.retry_after.lock()) {
        response = response.header("retry-after", delay.as_secs().to_string());
    }
    response
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap()
}
