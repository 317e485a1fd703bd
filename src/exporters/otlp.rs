//! `otlp` (gRPC) and `otlphttp` exporters, per the OTLP specification's exporter rules:
//! which responses are retryable, `RetryInfo` / `Retry-After`, `partial_success`.
//!
//! Both send the batch's serialized export request; an encoded batch is sent as the bytes
//! that arrived (concatenated), so a pass-through pipeline never re-encodes. They are
//! also the Tempo and Loki-OTLP exporters: set the tenant with `headers: {X-Scope-OrgID: ..}`.
//!
//! `https://` endpoints use TLS (rustls; `tls.ca_file` for a private CA, `tls.cert_file`
//! and `tls.key_file` for mutual TLS); `http://` ones are plaintext. A gRPC endpoint
//! without a scheme means TLS, as in the collector, unless `tls.insecure: true`.

use super::http_core::{http_exporter_config, Classify, HttpCore, HttpOptions};
use super::{ExportError, Exported, SendingQueueConfig};
use crate::build::{BuildContext, BuildError};
use crate::compression::Compression;
use crate::config::FieldError;
use crate::grpc::{self, code};
use crate::model::{Batch, Signal};
use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, Uri};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Deserialize;
use std::time::Duration;

/// Which protocol a config is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// Body encoding of `otlphttp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `application/x-protobuf`.
    #[default]
    Proto,
    /// `application/json` (OTLP/JSON); requires decoding every batch.
    Json,
}

/// `compression_params:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionParams {
    /// Codec level: gzip 1–9 (default 1, the fastest), zstd 1–22 (default 3). Lower is
    /// cheaper in CPU, higher sends fewer bytes.
    pub level: Option<i32>,
}

http_exporter_config! {
    /// `exporters: otlp:` and `exporters: otlphttp:`.
    pub struct OtlpExporterConfig {
        /// gRPC: `host:port` or `http://host:port`. HTTP: base URL, to which `/v1/traces`,
        /// `/v1/metrics` or `/v1/logs` is appended.
        #[serde(default)]
        pub endpoint: String,
        /// `otlphttp` only: full URL for traces, overriding `endpoint`.
        #[serde(default)]
        pub traces_endpoint: Option<String>,
        /// `otlphttp` only: full URL for metrics, overriding `endpoint`.
        #[serde(default)]
        pub metrics_endpoint: Option<String>,
        /// `otlphttp` only: full URL for logs, overriding `endpoint`.
        #[serde(default)]
        pub logs_endpoint: Option<String>,
        /// `otlphttp` only: `proto` (default) or `json`.
        #[serde(default)]
        pub encoding: Encoding,
        /// `gzip` (default), `zstd` or `none`.
        #[serde(default)]
        pub compression: Compression,
        /// Compression level.
        #[serde(default)]
        pub compression_params: CompressionParams,
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_sending_queue() -> SendingQueueConfig {
    SendingQueueConfig::default()
}

impl OtlpExporterConfig {
    pub fn validate(&self, transport: Transport) -> Result<(), FieldError> {
        self.validate_shared()?;
        if self.compression == Compression::Deflate {
            return Err(FieldError::new("compression", "use gzip, zstd or none"));
        }
        match transport {
            Transport::Grpc => {
                for (key, set) in [
                    ("traces_endpoint", &self.traces_endpoint),
                    ("metrics_endpoint", &self.metrics_endpoint),
                    ("logs_endpoint", &self.logs_endpoint),
                ] {
                    if set.is_some() {
                        return Err(FieldError::new(
                            key,
                            "only the otlphttp exporter has per-signal endpoints",
                        ));
                    }
                }
                if self.encoding != Encoding::Proto {
                    return Err(FieldError::new(
                        "encoding",
                        "the otlp (gRPC) exporter always sends protobuf",
                    ));
                }
                grpc_base(&self.endpoint, self.tls.insecure)
                    .map(|_| ())
                    .map_err(|m| FieldError::new("endpoint", m))
            }
            Transport::Http => {
                for signal in Signal::ALL {
                    http_url(self, signal)
                        .map_err(|m| FieldError::new(signal_endpoint_key(self, signal), m))?;
                }
                Ok(())
            }
        }
    }
}

fn signal_endpoint(config: &OtlpExporterConfig, signal: Signal) -> Option<&String> {
    match signal {
        Signal::Traces => config.traces_endpoint.as_ref(),
        Signal::Metrics => config.metrics_endpoint.as_ref(),
        Signal::Logs => config.logs_endpoint.as_ref(),
    }
}

fn signal_endpoint_key(config: &OtlpExporterConfig, signal: Signal) -> String {
    match signal_endpoint(config, signal) {
        Some(_) => format!("{signal}_endpoint"),
        None => "endpoint".into(),
    }
}

/// An `http://` or `https://` URL with a host.
pub fn web_uri(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        _ => Err(format!(
            "`{text}` must be an http:// or https:// URL with a host"
        )),
    }
}

/// The `scheme://host:port` base of a gRPC endpoint; no scheme means TLS unless `insecure`.
fn grpc_base(endpoint: &str, insecure: bool) -> Result<String, String> {
    if endpoint.is_empty() {
        return Err("is required".into());
    }
    let url = match (endpoint.contains("://"), insecure) {
        (true, _) => endpoint.to_string(),
        (false, true) => format!("http://{endpoint}"),
        (false, false) => format!("https://{endpoint}"),
    };
    let uri = web_uri(&url)?;
    Ok(format!(
        "{}://{}",
        uri.scheme_str().expect("checked by web_uri"),
        uri.authority().expect("checked by web_uri")
    ))
}

/// The URL an `otlphttp` exporter posts `signal` to.
fn http_url(config: &OtlpExporterConfig, signal: Signal) -> Result<Uri, String> {
    if let Some(url) = signal_endpoint(config, signal) {
        return web_uri(url);
    }
    if config.endpoint.is_empty() {
        return Err(format!("is required (or set {signal}_endpoint)"));
    }
    web_uri(&format!(
        "{}{}",
        config.endpoint.trim_end_matches('/'),
        signal.http_path()
    ))
}

/// Sends export requests over gRPC.
pub struct GrpcExporter {
    core: HttpCore,
    base: String,
    compression: Compression,
    level: Option<i32>,
    timeout: Duration,
}

impl GrpcExporter {
    pub fn build(config: &OtlpExporterConfig, cx: &BuildContext) -> Result<Self, BuildError> {
        Ok(GrpcExporter {
            core: config.core(true, cx)?,
            base: grpc_base(&config.endpoint, config.tls.insecure)
                .map_err(|e| cx.error("endpoint", e))?,
            compression: config.compression,
            level: config.compression_params.level,
            timeout: config.timeout,
        })
    }

    fn body(&self, batch: &Batch) -> Bytes {
        let mut message = BytesMut::with_capacity(5 + batch.encoded_len());
        message.put_bytes(0, 5);
        batch.encode_into(&mut message);
        let length = message.len() - 5;
        if self.compression == Compression::None {
            message[1..5].copy_from_slice(&(length as u32).to_be_bytes());
            return message.freeze();
        }
        grpc::frame(true, &self.compression.compress(&message[5..], self.level))
    }

    pub async fn export(&self, batch: &Batch) -> Result<Exported, ExportError> {
        let mut request = Request::post(format!("{}{}", self.base, batch.signal().grpc_path()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", grpc::timeout_header(self.timeout));
        if let Some(encoding) = self.compression.header_value() {
            request = request.header("grpc-encoding", encoding);
        }
        let (parts, collected) = self
            .core
            .exchange(request, self.body(batch), batch.metadata())
            .await?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let header = |name: &str| {
            trailers
                .get(name)
                .or_else(|| parts.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = match header("grpc-status") {
            Some(value) => value.trim().parse::<i32>().unwrap_or(code::UNKNOWN),
            None if parts.status != http::StatusCode::OK => {
                grpc::code_for_http_status(parts.status.as_u16())
            }
            None => code::UNKNOWN,
        };
        if status == code::OK {
            let body = collected.to_bytes();
            let message = grpc::unframe(&body).map(|(_, m)| m).unwrap_or_default();
            return Ok(partial_success(batch.signal(), &message));
        }
        let retry_after =
            header("grpc-status-details-bin").and_then(|d| grpc::retry_delay_from_details(&d));
        let message = header("grpc-message")
            .map(|m| grpc::decode_message(&m))
            .unwrap_or_else(|| format!("HTTP {}", parts.status));
        Err(ExportError {
            retryable: grpc::is_retryable(status, retry_after.is_some()),
            retry_after,
            reason: grpc_reason(status),
            message,
        })
    }
}

fn grpc_reason(status: i32) -> &'static str {
    match status {
        code::CANCELLED => "grpc_cancelled",
        code::INVALID_ARGUMENT => "grpc_invalid_argument",
        code::DEADLINE_EXCEEDED => "grpc_deadline_exceeded",
        code::NOT_FOUND => "grpc_not_found",
        code::PERMISSION_DENIED => "grpc_permission_denied",
        code::RESOURCE_EXHAUSTED => "grpc_resource_exhausted",
        code::ABORTED => "grpc_aborted",
        code::OUT_OF_RANGE => "grpc_out_of_range",
        code::UNIMPLEMENTED => "grpc_unimplemented",
        code::INTERNAL => "grpc_internal",
        code::UNAVAILABLE => "grpc_unavailable",
        code::DATA_LOSS => "grpc_data_loss",
        code::UNAUTHENTICATED => "grpc_unauthenticated",
        _ => "grpc_unknown",
    }
}

/// Reads the rejected-item count from an `Export*ServiceResponse`.
fn partial_success(signal: Signal, message: &[u8]) -> Exported {
    let (rejected, text) = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(message)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(message)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(message)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
    }
    .unwrap_or_default();
    Exported {
        rejected: rejected.max(0) as u64,
        message: text,
        discarded: None,
    }
}

/// Sends export requests over HTTP.
pub struct HttpExporter {
    core: HttpCore,
    urls: [Uri; 3],
    compression: Compression,
    level: Option<i32>,
    encoding: Encoding,
}

/// The OTLP/HTTP rules: only 429, 502, 503 and 504 are retryable, and a refusal's body
/// is a `google.rpc.Status`.
struct OtlpHttp;

impl Classify for OtlpHttp {
    fn retryable(&self, status: u16) -> bool {
        matches!(status, 429 | 502 | 503 | 504)
    }

    fn message(&self, body: &[u8]) -> String {
        match grpc::RpcStatus::decode(body) {
            Ok(rpc) if !rpc.message.is_empty() => rpc.message,
            _ => String::from_utf8_lossy(&body[..body.len().min(256)])
                .trim()
                .to_string(),
        }
    }
}

impl HttpExporter {
    pub fn build(config: &OtlpExporterConfig, cx: &BuildContext) -> Result<Self, BuildError> {
        let url = |s| http_url(config, s).map_err(|e| cx.error("endpoint", e));
        Ok(HttpExporter {
            core: config.core(false, cx)?,
            urls: [
                url(Signal::Traces)?,
                url(Signal::Metrics)?,
                url(Signal::Logs)?,
            ],
            compression: config.compression,
            level: config.compression_params.level,
            encoding: config.encoding,
        })
    }

    fn url(&self, signal: Signal) -> &Uri {
        &self.urls[signal as usize]
    }

    fn body(&self, batch: &Batch) -> Result<Bytes, ExportError> {
        let plain = match self.encoding {
            Encoding::Proto => batch.to_bytes(),
            Encoding::Json => Bytes::from(to_json(batch)?),
        };
        Ok(match self.compression {
            Compression::None => plain,
            codec => Bytes::from(codec.compress(&plain, self.level)),
        })
    }

    pub async fn export(&self, batch: &Batch) -> Result<Exported, ExportError> {
        let content_type = match self.encoding {
            Encoding::Proto => "application/x-protobuf",
            Encoding::Json => "application/json",
        };
        let mut request =
            Request::post(self.url(batch.signal()).clone()).header("content-type", content_type);
        if let Some(encoding) = self.compression.header_value() {
            request = request.header("content-encoding", encoding);
        }
        let body = self
            .core
            .post(request, self.body(batch)?, batch.metadata(), &OtlpHttp)
            .await?;
        Ok(match self.encoding {
            Encoding::Proto => partial_success(batch.signal(), &body),
            Encoding::Json => Exported::default(),
        })
    }
}

pub(crate) fn to_json(batch: &Batch) -> Result<Vec<u8>, ExportError> {
    let mut batch = batch.clone();
    let json = match batch.signal() {
        Signal::Traces => serde_json::to_vec(&ExportTraceServiceRequest {
            resource_spans: std::mem::take(batch.traces_mut()),
        }),
        Signal::Metrics => serde_json::to_vec(&ExportMetricsServiceRequest {
            resource_metrics: std::mem::take(batch.metrics_mut()),
        }),
        Signal::Logs => serde_json::to_vec(&ExportLogsServiceRequest {
            resource_logs: std::mem::take(batch.logs_mut()),
        }),
    };
    json.map_err(|e| ExportError {
        retryable: false,
        retry_after: None,
        reason: "encode",
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> OtlpExporterConfig {
        serde_yaml::from_str(&format!("endpoint: \"{endpoint}\"")).unwrap()
    }

    #[test]
    fn grpc_endpoint_needs_a_scheme_or_insecure() {
        assert_eq!(
            grpc_base("http://tempo:4317", false).unwrap(),
            "http://tempo:4317"
        );
        assert_eq!(grpc_base("tempo:4317", true).unwrap(), "http://tempo:4317");
        assert_eq!(
            grpc_base("tempo:4317", false).unwrap(),
            "https://tempo:4317",
            "no scheme means TLS"
        );
        assert_eq!(
            grpc_base("https://tempo:4317", false).unwrap(),
            "https://tempo:4317"
        );
        assert!(grpc_base("ftp://tempo:4317", false).is_err());
    }

    #[test]
    fn http_urls_append_the_signal_path_unless_overridden() {
        let mut c = config("http://loki:3100/otlp/");
        c.logs_endpoint = Some("http://other:9/custom".into());
        assert_eq!(
            http_url(&c, Signal::Traces).unwrap(),
            "http://loki:3100/otlp/v1/traces"
        );
        assert_eq!(http_url(&c, Signal::Logs).unwrap(), "http://other:9/custom");
    }

    #[test]
    fn header_values_are_never_printed() {
        let mut c = config("http://x:1");
        c.headers.insert(
            "authorization".into(),
            crate::config::Secret("Bearer hunter2".into()),
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn grpc_only_rejects_http_options() {
        let mut c = config("http://x:1");
        c.traces_endpoint = Some("http://y:2/v1/traces".into());
        assert_eq!(
            c.validate(Transport::Grpc).unwrap_err().key,
            "traces_endpoint"
        );
        assert!(c.validate(Transport::Http).is_ok());
    }
}
