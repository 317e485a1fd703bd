//! OTLP/HTTP: `POST` of protobuf or JSON export requests.

use super::grpc::refusal_message;
use super::json;
use super::{partial_success_json, partial_success_protobuf, Shared, RETRY_AFTER};
use crate::compression::{Compression, InflateError};
use crate::grpc::{self, code};
use crate::model::{Batch, Rejected, Signal};
use crate::net::{self, Admission, Body, Server};
use crate::receivers::budget::{BodyError, Reservation};
use crate::receivers::core::{IngestError, NotTaken};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prost::Message;
use std::sync::Arc;
use tokio::net::TcpListener;

pub fn serve(listener: TcpListener, shared: Arc<Shared>, admission: &Arc<Admission>) -> Server {
    let admission = Some(Arc::clone(admission));
    Server::spawn(listener, admission, move |req| {
        handle(Arc::clone(&shared), req)
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// A request that failed, with the HTTP status and what the client is told.
struct Failure {
    status: StatusCode,
    message: String,
    rejected_reason: Option<&'static str>,
}

impl Failure {
    fn rejected(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            rejected_reason: Some(reason),
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let format = request_format(&req);
    let identity = match shared.authenticate("http", &req) {
        Ok(identity) => identity,
        Err((failure, challenge)) => {
            let format = format.unwrap_or(Format::Protobuf);
            if failure == crate::auth::AuthFailure::Unavailable {
                return error_response(
                    format,
                    &Failure {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        message: "credentials cannot be checked yet".into(),
                        rejected_reason: None,
                    },
                );
            }
            return unauthenticated(format, &challenge);
        }
    };
    match export(&shared, req, &identity).await {
        Ok(rejected) => success(format.unwrap_or(Format::Protobuf), rejected),
        Err(failure) => {
            if let Some(reason) = failure.rejected_reason {
                shared.core.count_rejected("http", reason);
            }
            error_response(format.unwrap_or(Format::Protobuf), &failure)
        }
    }
}

fn request_format<B>(req: &Request<B>) -> Option<Format> {
    let content_type = req.headers().get("content-type")?.to_str().ok()?;
    match content_type
        .split(';')
        .next()?
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
        "application/json" => Some(Format::Json),
        _ => None,
    }
}

fn signal_for_path(shared: &Shared, path: &str) -> Option<Signal> {
    let config = shared.config();
    let http = config.protocols.http.as_ref()?;
    let paths = [
        (Signal::Traces, &http.traces_url_path),
        (Signal::Metrics, &http.metrics_url_path),
        (Signal::Logs, &http.logs_url_path),
    ];
    let signal = paths
        .into_iter()
        .find(|(_, p)| p.as_str() == path)
        .map(|(s, _)| s);
    signal
}

/// Handles one export; on success returns the items rejected as partial success.
async fn export(
    shared: &Shared,
    req: Request<Incoming>,
    identity: &crate::auth::Identity,
) -> Result<Option<Rejected>, Failure> {
    let Some(signal) = signal_for_path(shared, req.uri().path()) else {
        return Err(Failure::rejected(
            StatusCode::NOT_FOUND,
            "unknown_path",
            format!("no OTLP endpoint at {}", req.uri().path()),
        ));
    };
    if req.method() != Method::POST {
        return Err(Failure::rejected(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            "use POST",
        ));
    }
    let Some(format) = request_format(&req) else {
        return Err(Failure::rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "content-type must be application/x-protobuf or application/json",
        ));
    };
    let encoding = req
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_string();
    let Some(compression) = Compression::from_header(&encoding) else {
        return Err(Failure::rejected(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("content-encoding {encoding} is not supported"),
        ));
    };
    let config = shared.config();
    let http = config.protocols.http.as_ref();
    let limit = http.map_or(20 << 20, |h| h.max_request_body_size) as usize;
    let include = http.is_some_and(|h| h.include_metadata);
    let (metadata, tenant) = shared.request_context(include, req.headers(), identity);
    let client = req
        .extensions()
        .get::<crate::net::ClientAddress>()
        .map(|c| c.0);
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Failure::rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than {limit} bytes"),
        ));
    }
    if let Some(refusal) = shared.core.refuse_unread(signal, "http") {
        // before the body: a full pipeline costs the client's body nothing here
        return Err(Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: refusal_message(refusal),
            rejected_reason: None,
        });
    }
    let budget = shared.budget();
    let mut reservation = Reservation::default();
    let body = budget
        .read_body(req.into_body(), limit, &mut reservation, |_| None)
        .await
        .map_err(|e| body_failure(e, limit))?;
    let body = match compression {
        Compression::None => body,
        codec => {
            let inflated = codec.decompress(&body, limit).map_err(inflate_failure)?;
            budget
                .reserve(&mut reservation, inflated.len())
                .await
                .map_err(|e| body_failure(e, limit))?;
            Bytes::from(inflated)
        }
    };
    let bytes = body.len();
    let checked = match format {
        Format::Protobuf => Batch::from_request(signal, body),
        Format::Json => json::decode(signal, &body),
    }
    .map(|mut admitted| {
        admitted.batch.set_metadata(metadata);
        admitted.batch.set_client(client);
        admitted
    });
    if !shared.within_tenant_limits(tenant.as_ref(), &checked, bytes) {
        return Err(Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "this tenant is over its limit; retry later".into(),
            rejected_reason: None,
        });
    }
    shared.core.admit(checked).map_err(|e| match e {
        NotTaken::Invalid(invalid) => Failure::rejected(
            StatusCode::BAD_REQUEST,
            invalid.reason(),
            invalid.to_string(),
        ),
        NotTaken::Refused(IngestError::NoPipeline) => Failure::rejected(
            StatusCode::NOT_FOUND,
            "no_pipeline",
            format!("no pipeline takes {signal} from this receiver"),
        ),
        NotTaken::Refused(IngestError::Refused(refused)) => Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: refusal_message(refused.refusal),
            rejected_reason: None,
        },
    })
}

fn body_failure(error: BodyError, limit: usize) -> Failure {
    match error {
        BodyError::TooLarge => Failure::rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than {limit} bytes"),
        ),
        BodyError::Busy => Failure::rejected(
            StatusCode::SERVICE_UNAVAILABLE,
            "in_flight_limit",
            "too many requests in flight: retry later",
        ),
        BodyError::Read(e) => Failure::rejected(
            StatusCode::BAD_REQUEST,
            "read_error",
            format!("reading the request failed: {e}"),
        ),
    }
}

fn inflate_failure(e: InflateError) -> Failure {
    match e {
        InflateError::TooLarge { .. } => {
            Failure::rejected(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        InflateError::Corrupt(_) => {
            Failure::rejected(StatusCode::BAD_REQUEST, "malformed", e.to_string())
        }
    }
}

/// 200 with an `Export*ServiceResponse`, carrying `partial_success` when items were rejected.
fn success(format: Format, rejected: Option<Rejected>) -> Response<Body> {
    let body: Vec<u8> = match (format, &rejected) {
        (_, None) => match format {
            Format::Protobuf => Vec::new(),
            Format::Json => b"{}".to_vec(),
        },
        (Format::Protobuf, Some(r)) => partial_success_protobuf(r),
        (Format::Json, Some(r)) => partial_success_json(r).into_bytes(),
    };
    Response::builder()
        .header("content-type", format.content_type())
        .body(net::full(body))
        .expect("static headers are valid")
}

/// 401 with the authenticator's challenge; the body says no more than that.
fn unauthenticated(format: Format, challenge: &str) -> Response<Body> {
    let message = "missing or invalid credentials";
    let body = match format {
        Format::Protobuf => {
            grpc::status_message(code::UNAUTHENTICATED, message, None).encode_to_vec()
        }
        Format::Json => serde_json::json!({ "code": code::UNAUTHENTICATED, "message": message })
            .to_string()
            .into_bytes(),
    };
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("content-type", format.content_type())
        .header("www-authenticate", challenge)
        .body(net::full(body))
        .expect("the challenge is a valid header value")
}

/// An error status with a `google.rpc.Status` body in the request's format.
fn error_response(format: Format, failure: &Failure) -> Response<Body> {
    let grpc_code = match failure.status {
        StatusCode::BAD_REQUEST => code::INVALID_ARGUMENT,
        StatusCode::SERVICE_UNAVAILABLE => code::UNAVAILABLE,
        StatusCode::PAYLOAD_TOO_LARGE => code::RESOURCE_EXHAUSTED,
        StatusCode::NOT_FOUND => code::NOT_FOUND,
        _ => code::INVALID_ARGUMENT,
    };
    let body = match format {
        Format::Protobuf => grpc::status_message(grpc_code, &failure.message, None).encode_to_vec(),
        Format::Json => serde_json::json!({ "code": grpc_code, "message": failure.message })
            .to_string()
            .into_bytes(),
    };
    let mut builder = Response::builder()
        .status(failure.status)
        .header("content-type", format.content_type());
    if failure.status == StatusCode::SERVICE_UNAVAILABLE {
        builder = builder.header("retry-after", RETRY_AFTER.as_secs().to_string());
    }
    builder
        .body(net::full(body))
        .expect("static headers are valid")
}
