//! OTLP/gRPC: unary `Export` calls of the trace, metrics and logs services.

use super::{partial_success_protobuf, signal_for_grpc_path, Shared, RETRY_AFTER};
use crate::compression::{Compression, InflateError};
use crate::grpc::{self, code};
use crate::model::{Batch, Rejected};
use crate::net::{Admission, Body, Server};
use crate::queue::Refusal;
use crate::receivers::budget::{BodyError, Reservation};
use crate::receivers::core::{IngestError, NotTaken};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use std::sync::Arc;
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

pub fn serve(listener: TcpListener, shared: Arc<Shared>, admission: &Arc<Admission>) -> Server {
    let admission = Some(Arc::clone(admission));
    Server::spawn(listener, admission, move |req| {
        handle(Arc::clone(&shared), req)
    })
}

/// A gRPC call that ended with a non-OK status.
struct Failure {
    code: i32,
    message: String,
    /// The `reason` label for `sieve_receiver_rejected_requests_total`, if counted there.
    rejected_reason: Option<&'static str>,
    retry_after: bool,
}

impl Failure {
    fn rejected(code: i32, reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            rejected_reason: Some(reason),
            retry_after: false,
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let identity = match shared.authenticate("grpc", &req) {
        Ok(identity) => identity,
        Err((failure, _)) => {
            let unavailable = failure == crate::auth::AuthFailure::Unavailable;
            return status_response(&Failure {
                code: if unavailable {
                    code::UNAVAILABLE
                } else {
                    code::UNAUTHENTICATED
                },
                message: if unavailable {
                    "credentials cannot be checked yet".into()
                } else {
                    "missing or invalid credentials".into()
                },
                rejected_reason: None,
                retry_after: unavailable,
            });
        }
    };
    match export(&shared, req, &identity).await {
        Ok(rejected) => ok_response(rejected.as_ref()),
        Err(failure) => {
            if let Some(reason) = failure.rejected_reason {
                shared.core.count_rejected("grpc", reason);
            }
            status_response(&failure)
        }
    }
}

/// Handles one export; on success returns the items rejected as partial success.
async fn export(
    shared: &Shared,
    req: Request<Incoming>,
    identity: &crate::auth::Identity,
) -> Result<Option<Rejected>, Failure> {
    let Some(signal) = signal_for_grpc_path(req.uri().path()) else {
        return Err(Failure::rejected(
            code::UNIMPLEMENTED,
            "unknown_method",
            format!("unknown method {}", req.uri().path()),
        ));
    };
    let is_grpc = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        return Err(Failure::rejected(
            code::INVALID_ARGUMENT,
            "content_type",
            "content-type must be application/grpc",
        ));
    }
    let encoding = req
        .headers()
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let Some(compression) = Compression::from_header(encoding) else {
        return Err(Failure::rejected(
            code::UNIMPLEMENTED,
            "unsupported_encoding",
            format!("grpc-encoding {encoding} is not supported"),
        ));
    };
    if let Some(refusal) = shared.core.refuse_unread(signal, "grpc") {
        // at the headers: a full pipeline costs the client's body nothing here
        return Err(Failure {
            code: code::UNAVAILABLE,
            message: refusal_message(refusal),
            rejected_reason: None,
            retry_after: true,
        });
    }
    let limit = shared
        .config()
        .protocols
        .grpc
        .as_ref()
        .map_or(4, |g| g.max_recv_msg_size_mib) as usize
        * MIB;
    let include = shared
        .config()
        .protocols
        .grpc
        .as_ref()
        .is_some_and(|g| g.include_metadata);
    let (metadata, tenant) = shared.request_context(include, req.headers(), identity);
    let client = req
        .extensions()
        .get::<crate::net::ClientAddress>()
        .map(|c| c.0);
    let budget = shared.budget();
    let mut reservation = Reservation::default();
    let body = budget
        .read_body(req.into_body(), limit + 5, &mut reservation, |prefix| {
            grpc::declared_length(prefix).map(|n| n + 5)
        })
        .await
        .map_err(|e| body_failure(e, limit))?;
    let (compressed, message) = grpc::unframe(&body)
        .map_err(|e| Failure::rejected(code::INVALID_ARGUMENT, "malformed", e.to_string()))?;
    let message = if compressed {
        if compression == Compression::None {
            return Err(Failure::rejected(
                code::INTERNAL,
                "malformed",
                "compressed message without grpc-encoding",
            ));
        }
        let inflated = compression
            .decompress(&message, limit)
            .map_err(inflate_failure)?;
        budget
            .reserve(&mut reservation, inflated.len())
            .await
            .map_err(|e| body_failure(e, limit))?;
        Bytes::from(inflated)
    } else {
        message
    };
    let bytes = message.len();
    let admitted = Batch::from_request(signal, message).map(|mut admitted| {
        admitted.batch.set_metadata(metadata);
        admitted.batch.set_client(client);
        admitted
    });
    if !shared.within_tenant_limits(tenant.as_ref(), &admitted, bytes) {
        return Err(Failure {
            code: code::UNAVAILABLE,
            message: "this tenant is over its limit; retry later".into(),
            rejected_reason: None,
            retry_after: true,
        });
    }
    shared.core.admit(admitted).map_err(|e| match e {
        NotTaken::Invalid(invalid) => Failure::rejected(
            code::INVALID_ARGUMENT,
            invalid.reason(),
            invalid.to_string(),
        ),
        NotTaken::Refused(IngestError::NoPipeline) => Failure::rejected(
            code::UNIMPLEMENTED,
            "no_pipeline",
            format!("no pipeline takes {signal} from this receiver"),
        ),
        NotTaken::Refused(IngestError::Refused(refused)) => Failure {
            code: code::UNAVAILABLE,
            message: refusal_message(refused.refusal),
            rejected_reason: None,
            retry_after: true,
        },
    })
}

pub(super) fn refusal_message(refusal: Refusal) -> String {
    format!("{}: retry later", refusal.reason().replace('_', " "))
}

fn body_failure(error: BodyError, limit: usize) -> Failure {
    match error {
        BodyError::TooLarge => Failure::rejected(
            code::RESOURCE_EXHAUSTED,
            "too_large",
            format!("message larger than {limit} bytes"),
        ),
        BodyError::Busy => Failure {
            code: code::UNAVAILABLE,
            message: "too many requests in flight: retry later".into(),
            rejected_reason: Some("in_flight_limit"),
            retry_after: true,
        },
        BodyError::Read(e) => Failure::rejected(
            code::CANCELLED,
            "read_error",
            format!("reading the request failed: {e}"),
        ),
    }
}

fn inflate_failure(e: InflateError) -> Failure {
    match e {
        InflateError::TooLarge { .. } => {
            Failure::rejected(code::RESOURCE_EXHAUSTED, "too_large", e.to_string())
        }
        InflateError::Corrupt(_) => {
            Failure::rejected(code::INVALID_ARGUMENT, "malformed", e.to_string())
        }
    }
}

fn grpc_headers(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
}

/// An `Export*ServiceResponse` (with `partial_success` when items were rejected)
/// followed by `grpc-status: 0`.
fn ok_response(rejected: Option<&Rejected>) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let message = rejected.map(partial_success_protobuf).unwrap_or_default();
    let body =
        Full::new(grpc::frame(false, &message)).with_trailers(async move { Some(Ok(trailers)) });
    let mut response = Response::new(body.boxed_unsync());
    grpc_headers(&mut response);
    response
}

/// A trailers-only response carrying a non-OK status.
fn status_response(failure: &Failure) -> Response<Body> {
    let mut response = Response::new(Empty::<Bytes>::new().boxed_unsync());
    grpc_headers(&mut response);
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(failure.code));
    if let Ok(message) = HeaderValue::from_str(&grpc::encode_message(&failure.message)) {
        headers.insert("grpc-message", message);
    }
    let retry_after = failure.retry_after.then_some(RETRY_AFTER);
    let status = grpc::status_message(failure.code, &failure.message, retry_after);
    if let Ok(details) = HeaderValue::from_str(&grpc::status_details_header(&status)) {
        headers.insert("grpc-status-details-bin", details);
    }
    response
}
