//! Configuration of the `otlp` receiver, with the collector's option names.

use crate::config::{duration, present_or_default, FieldError};
use crate::net::parse_address;
use crate::net::Limits;
use crate::tls::TlsServerConfig;
use serde::Deserialize;
use std::time::Duration;

/// `receivers: otlp:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiverConfig {
    /// Which protocols to serve: `grpc`, `http` or both (an empty `grpc:` means "on, with
    /// defaults").
    pub protocols: Protocols,
    /// Request bytes held at once across both protocols and all connections, in MiB:
    /// bodies being read and their decompressed form. Beyond it a request waits up to a
    /// second, then gets the retryable refusal. At least twice the largest request limit.
    pub max_in_flight_mib: u64,
    /// Per-tenant admission limits (see [`crate::receivers::tenants`]).
    pub tenant_limits: Option<crate::receivers::tenants::TenantLimitsConfig>,
    /// Binds a request's tenant to who it authenticated as (see
    /// [`crate::receivers::tenants::BindTenantConfig`]).
    pub bind_tenant: Option<crate::receivers::tenants::BindTenantConfig>,
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        OtlpReceiverConfig {
            protocols: Protocols::default(),
            max_in_flight_mib: 64,
            tenant_limits: None,
            bind_tenant: None,
        }
    }
}

/// `protocols:` of the `otlp` receiver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC server settings.
    #[serde(default, deserialize_with = "present_or_default")]
    pub grpc: Option<GrpcServerConfig>,
    /// OTLP/HTTP server settings.
    #[serde(default, deserialize_with = "present_or_default")]
    pub http: Option<HttpServerConfig>,
}

/// `auth:` of a server protocol.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The id of the authenticator extension.
    pub authenticator: String,
}

/// `protocols: grpc:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcServerConfig {
    /// Listen address, `host:port`. Defaults to loopback.
    pub endpoint: String,
    /// Largest request message accepted, in MiB, compressed or not (decompression stops
    /// at this size). Larger requests get `RESOURCE_EXHAUSTED`.
    pub max_recv_msg_size_mib: u64,
    /// Connections served at once; one more is closed as soon as it is accepted
    /// (counted as `reason="connection_limit"`).
    pub max_connections: usize,
    /// Connections served at once from one source address; one more is closed as soon
    /// as it is accepted (`reason="source_limit"`), so one address cannot take every
    /// slot. Raise it when many clients reach sieve through one NAT address.
    pub max_connections_per_source: usize,
    /// Time a new connection has to send its first request, and an HTTP/1 request its
    /// headers (idle keep-alive connections close after it too).
    #[serde(with = "duration")]
    pub read_header_timeout: Duration,
    /// Requests at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Serve over TLS (`cert_file`, `key_file`; `client_ca_file` requires client
    /// certificates). Plaintext when absent.
    pub tls: Option<TlsServerConfig>,
    /// Require credentials: `authenticator` names a `bearertokenauth` or `basicauth`
    /// extension. Requests without valid ones get `UNAUTHENTICATED` / 401.
    pub auth: Option<AuthConfig>,
    /// Keep the request's headers with its data (see [`crate::receivers::core::request_metadata`]),
    /// for `batch.metadata_keys` and an exporter's `headers_setter`.
    pub include_metadata: bool,
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        GrpcServerConfig {
            endpoint: "127.0.0.1:4317".into(),
            max_recv_msg_size_mib: 4,
            max_connections: 1024,
            max_connections_per_source: 256,
            read_header_timeout: Duration::from_secs(10),
            max_concurrent_streams: 200,
            tls: None,
            auth: None,
            include_metadata: false,
        }
    }
}

/// `protocols: http:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    /// Listen address, `host:port`. Defaults to loopback.
    pub endpoint: String,
    /// Largest request body accepted, in bytes, both as sent and after decompression.
    /// Larger requests get 413.
    pub max_request_body_size: u64,
    /// Connections served at once; one more is closed as soon as it is accepted
    /// (counted as `reason="connection_limit"`).
    pub max_connections: usize,
    /// Connections served at once from one source address; one more is closed as soon
    /// as it is accepted (`reason="source_limit"`), so one address cannot take every
    /// slot. Raise it when many clients reach sieve through one NAT address.
    pub max_connections_per_source: usize,
    /// Time a new connection has to send its first request, and an HTTP/1 request its
    /// headers (idle keep-alive connections close after it too).
    #[serde(with = "duration")]
    pub read_header_timeout: Duration,
    /// Requests at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Path for traces.
    pub traces_url_path: String,
    /// Path for metrics.
    pub metrics_url_path: String,
    /// Path for logs.
    pub logs_url_path: String,
    /// Serve over TLS (`cert_file`, `key_file`; `client_ca_file` requires client
    /// certificates). Plaintext when absent.
    pub tls: Option<TlsServerConfig>,
    /// Require credentials: `authenticator` names a `bearertokenauth` or `basicauth`
    /// extension. Requests without valid ones get `UNAUTHENTICATED` / 401.
    pub auth: Option<AuthConfig>,
    /// Keep the request's headers with its data (see [`crate::receivers::core::request_metadata`]),
    /// for `batch.metadata_keys` and an exporter's `headers_setter`.
    pub include_metadata: bool,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            endpoint: "127.0.0.1:4318".into(),
            max_request_body_size: 20 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_source: 256,
            read_header_timeout: Duration::from_secs(10),
            max_concurrent_streams: 200,
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
            tls: None,
            auth: None,
            include_metadata: false,
        }
    }
}

impl GrpcServerConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            read_header_timeout: self.read_header_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
        }
    }
}

impl HttpServerConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            read_header_timeout: self.read_header_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
        }
    }
}

fn validate_limits(protocol: &str, limits: &Limits) -> Result<(), FieldError> {
    let checks = [
        ("max_connections", limits.max_connections == 0),
        (
            "max_connections_per_source",
            limits.max_connections_per_source == 0,
        ),
        ("read_header_timeout", limits.read_header_timeout.is_zero()),
        ("max_concurrent_streams", limits.max_concurrent_streams == 0),
    ];
    match checks.into_iter().find(|(_, bad)| *bad) {
        Some((key, _)) => Err(FieldError::new(
            format!("{protocol}.{key}"),
            "must be greater than zero",
        )),
        None => Ok(()),
    }
}

/// Loads the TLS files now, so a missing or mismatched file fails validation.
fn validate_tls(key: &str, tls: Option<&TlsServerConfig>) -> Result<(), FieldError> {
    tls.map_or(Ok(()), |tls| {
        crate::tls::http_acceptor(tls)
            .map(drop)
            .map_err(|m| FieldError::new(key, m))
    })
}

impl OtlpReceiverConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(limits) = &self.tenant_limits {
            limits.validate()?;
        }
        if self.bind_tenant.is_some() {
            let p = &self.protocols;
            let mutual_tls = |tls: &Option<TlsServerConfig>| {
                tls.as_ref().is_some_and(|t| t.client_ca_file.is_some())
            };
            let open = [
                (
                    "grpc",
                    p.grpc
                        .as_ref()
                        .map(|g| g.auth.is_some() || mutual_tls(&g.tls)),
                ),
                (
                    "http",
                    p.http
                        .as_ref()
                        .map(|h| h.auth.is_some() || mutual_tls(&h.tls)),
                ),
            ]
            .into_iter()
            .find(|(_, authenticated)| *authenticated == Some(false));
            if let Some((protocol, _)) = open {
                return Err(FieldError::new(
                    format!("protocols.{protocol}.auth"),
                    "bind_tenant needs an authenticator or mutual TLS on every protocol (a tenant comes from who a request is)",
                ));
            }
        }
        let p = &self.protocols;
        if p.grpc.is_none() && p.http.is_none() {
            return Err(FieldError::new(
                "protocols",
                "enable at least one of grpc and http",
            ));
        }
        if let Some(grpc) = &p.grpc {
            parse_address(&grpc.endpoint)
                .map_err(|m| FieldError::new("protocols.grpc.endpoint", m))?;
            validate_tls("protocols.grpc.tls", grpc.tls.as_ref())?;
            validate_limits("protocols.grpc", &grpc.limits())?;
            if grpc.max_recv_msg_size_mib == 0 || grpc.max_recv_msg_size_mib > 4096 {
                return Err(FieldError::new(
                    "protocols.grpc.max_recv_msg_size_mib",
                    "must be between 1 and 4096",
                ));
            }
        }
        if let Some(http) = &p.http {
            parse_address(&http.endpoint)
                .map_err(|m| FieldError::new("protocols.http.endpoint", m))?;
            validate_tls("protocols.http.tls", http.tls.as_ref())?;
            validate_limits("protocols.http", &http.limits())?;
            if http.max_request_body_size == 0 {
                return Err(FieldError::new(
                    "protocols.http.max_request_body_size",
                    "must be greater than zero",
                ));
            }
            for (key, path) in [
                ("traces_url_path", &http.traces_url_path),
                ("metrics_url_path", &http.metrics_url_path),
                ("logs_url_path", &http.logs_url_path),
            ] {
                if !path.starts_with('/') {
                    return Err(FieldError::new(
                        format!("protocols.http.{key}"),
                        format!("`{path}` must start with /"),
                    ));
                }
            }
        }
        if let (Some(g), Some(h)) = (&p.grpc, &p.http) {
            if parse_address(&g.endpoint) == parse_address(&h.endpoint) {
                return Err(FieldError::new(
                    "protocols.http.endpoint",
                    "grpc and http cannot share an endpoint",
                ));
            }
        }
        let largest_request = self.largest_request_bytes() as u64;
        if self.max_in_flight_mib.saturating_mul(1 << 20) < 2 * largest_request {
            return Err(FieldError::new(
                "max_in_flight_mib",
                format!(
                    "must hold at least two of the largest requests ({} MiB)",
                    (2 * largest_request).div_ceil(1 << 20)
                ),
            ));
        }
        Ok(())
    }

    /// The largest request either protocol accepts, in bytes.
    fn largest_request_bytes(&self) -> usize {
        let grpc = self
            .protocols
            .grpc
            .as_ref()
            .map_or(0, |g| g.max_recv_msg_size_mib << 20);
        let http = self
            .protocols
            .http
            .as_ref()
            .map_or(0, |h| h.max_request_body_size);
        grpc.max(http) as usize
    }

    /// The budget of bytes in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.max_in_flight_mib.saturating_mul(1 << 20) as usize
    }
}
