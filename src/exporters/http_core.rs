//! The core every HTTP exporter (`otlp`, `otlphttp`, `loki`, `prometheusremotewrite`)
//! shares: its common options, declared once ([`http_exporter_config!`]), checked once
//! ([`HttpOptions`]), and one [`HttpCore`] that sends a request within the exporter's
//! deadline and classifies the answer per the OTLP exporter rules — retryable (with the
//! server's `Retry-After`), permanent, or an exporter's own case through [`Classify`].
//!
//! The option layout stays the collector's flat one (`endpoint`, `headers`, `timeout`,
//! `tls`, `retry_on_failure`, `sending_queue` beside the exporter's own keys): a nested
//! `client:` block would break users' configs, and serde's `flatten` does not combine
//! with `deny_unknown_fields` (serde #1547, #2283), so the shared fields are pasted into
//! each exporter's struct by a `macro_rules!`, as rotel declares its retry options.
//!
//! The client is hyper with a rustls connector: `https://` endpoints get TLS (ALPN `h2`
//! for gRPC) and `http://` ones stay plaintext.

use super::ExportError;
use crate::build::{BuildContext, BuildError};
use crate::config::{FieldError, Secret};
use crate::tls::{self, TlsClientConfig};
use base64::Engine;
use bytes::Bytes;
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest response body read from a backend; a larger one fails the attempt.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Declares an HTTP exporter's config struct: the fields listed, plus the options every
/// HTTP exporter shares (`headers`, `basic_auth`, `bearer_token`, `timeout`,
/// `retry_on_failure`, `sending_queue`, `tls`) and [`HttpOptions`] over them. The
/// calling module defines `default_timeout()` and `default_sending_queue()`.
#[macro_export]
macro_rules! http_exporter_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident : $type:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $type, )*
            /// Headers sent with every request (e.g. `X-Scope-OrgID` for a tenant).
            /// Values are secrets: use `${env:..}` or `${file:..}`; they are never logged.
            #[serde(default)]
            pub headers: ::std::collections::BTreeMap<String, $crate::config::Secret>,
            /// Basic authentication (`username`, and `password` from `${env:..}` or
            /// `${file:..}`).
            #[serde(default)]
            pub basic_auth: Option<$crate::exporters::http_core::BasicAuth>,
            /// A bearer token (`Authorization: Bearer ...`), from `${env:..}` or
            /// `${file:..}`; not together with `basic_auth`.
            #[serde(default)]
            pub bearer_token: Option<$crate::config::Secret>,
            /// The collector's client authentication: `authenticator` names a
            /// `bearertokenauth` or `basicauth` (`client_auth`) extension whose credential
            /// goes with every request; not together with `basic_auth` or `bearer_token`.
            #[serde(default)]
            pub auth: Option<$crate::receivers::otlp::AuthConfig>,
            /// The extension `auth` names, filled in from `extensions:` when the
            /// pipeline is built.
            #[serde(skip)]
            pub auth_extension: Option<$crate::auth::ClientCredentials>,
            /// Deadline of one attempt, request and response.
            #[serde(default = "default_timeout", with = "crate::config::duration")]
            pub timeout: ::std::time::Duration,
            /// Retries of retryable failures.
            #[serde(default)]
            pub retry_on_failure: $crate::exporters::retry::RetryConfig,
            /// The exporter's queue.
            #[serde(default = "default_sending_queue")]
            pub sending_queue: $crate::exporters::SendingQueueConfig,
            /// TLS for `https://` endpoints: `ca_file` for a private CA, `cert_file` and
            /// `key_file` for mutual TLS.
            #[serde(default)]
            pub tls: $crate::tls::TlsClientConfig,
        }

        impl $name {
            /// Fills in the credentials of the extension `auth` names.
            pub fn resolve_auth(
                &mut self,
                extensions: &$crate::components::Extensions,
            ) {
                self.auth_extension = self.auth.as_ref().and_then(|a| {
                    let id = $crate::config::ComponentId::parse(&a.authenticator).ok()?;
                    extensions.get(&id)?.client_credentials()
                });
            }
        }

        impl $crate::exporters::http_core::HttpOptions for $name {
            fn options(&self) -> $crate::exporters::http_core::Shared<'_> {
                $crate::exporters::http_core::Shared {
                    headers: &self.headers,
                    basic_auth: self.basic_auth.as_ref(),
                    bearer_token: self.bearer_token.as_ref(),
                    auth: self.auth.as_ref().map(|a| a.authenticator.as_str()),
                    auth_extension: self.auth_extension.as_ref(),
                    timeout: self.timeout,
                    retry_on_failure: &self.retry_on_failure,
                    sending_queue: &self.sending_queue,
                    tls: &self.tls,
                }
            }
        }
    };
}
pub use http_exporter_config;

/// The options every HTTP exporter shares, borrowed from its config.
pub struct Shared<'a> {
    pub headers: &'a BTreeMap<String, Secret>,
    pub basic_auth: Option<&'a BasicAuth>,
    pub bearer_token: Option<&'a Secret>,
    /// The id `auth.authenticator` names.
    pub auth: Option<&'a str>,
    pub auth_extension: Option<&'a crate::auth::ClientCredentials>,
    pub timeout: Duration,
    pub retry_on_failure: &'a super::retry::RetryConfig,
    pub sending_queue: &'a super::SendingQueueConfig,
    pub tls: &'a TlsClientConfig,
}

/// What an HTTP exporter's config offers the core (implemented by
/// [`http_exporter_config!`]).
pub trait HttpOptions {
    fn options(&self) -> Shared<'_>;

    /// Checks the shared options: retries, queue, a positive timeout, readable TLS
    /// files, valid headers and at most one kind of credential.
    fn validate_shared(&self) -> Result<(), FieldError> {
        let o = self.options();
        o.retry_on_failure.validate()?;
        o.sending_queue.validate()?;
        if o.timeout.is_zero() {
            return Err(FieldError::new("timeout", "must be greater than zero"));
        }
        client(o.tls, o.timeout, false).map_err(|m| FieldError::new("tls", m))?;
        if o.auth.is_some() && (o.basic_auth.is_some() || o.bearer_token.is_some()) {
            return Err(FieldError::new(
                "auth",
                "use auth, basic_auth or bearer_token, one of them",
            ));
        }
        validate_credentials(o.headers, o.basic_auth, o.bearer_token)
    }

    /// The core sending with these options (`http2_only` for gRPC); fails when a TLS
    /// file can no longer be read.
    fn core(&self, http2_only: bool, cx: &BuildContext) -> Result<HttpCore, BuildError> {
        let o = self.options();
        let auth = match (o.auth, o.auth_extension) {
            (None, _) => None,
            (Some(_), Some(credentials)) => Some(
                crate::auth::ClientAuth::new(credentials)
                    .map_err(|e| cx.error("auth.authenticator", e))?,
            ),
            (Some(id), None) => {
                return Err(cx.error(
                    "auth.authenticator",
                    format!("`{id}` is not a client authenticator"),
                ))
            }
        };
        Ok(HttpCore {
            client: client(o.tls, o.timeout, http2_only).map_err(|e| cx.error("tls", e))?,
            headers: header_map(o.headers, o.basic_auth, o.bearer_token),
            auth,
            timeout: o.timeout,
        })
    }
}

/// How an exporter reads a refusal. The defaults are the OTLP/HTTP rules for a plain
/// HTTP backend: 429 and 5xx are retryable, other statuses permanent, and the reason
/// is the start of the body.
pub trait Classify {
    /// Whether a refusal with `status` may succeed later.
    fn retryable(&self, status: u16) -> bool {
        status == 429 || status >= 500
    }

    /// What the server said, from the body of a refusal.
    fn message(&self, body: &[u8]) -> String {
        String::from_utf8_lossy(&body[..body.len().min(512)])
            .trim()
            .to_string()
    }

    /// The `reason` label of a refusal; an exporter names its own cases here.
    fn reason(&self, retryable: bool, _message: &str) -> &'static str {
        if retryable {
            "http_retryable"
        } else {
            "http_permanent"
        }
    }
}

/// The default rules.
pub struct PlainHttp;

impl Classify for PlainHttp {}

/// An exporter's HTTP client, the headers of every request and the attempt deadline.
pub struct HttpCore {
    client: HttpClient,
    headers: HeaderMap,
    /// The credential of `auth.authenticator`, set on each request.
    auth: Option<crate::auth::ClientAuth>,
    timeout: Duration,
}

impl HttpCore {
    /// The headers of every request.
    #[cfg(test)]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Adds a header to every request, in place of a configured one of that name.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> HttpCore {
        self.headers.insert(name, value);
        self
    }

    /// Sends `request` (the exporter's method, URL and own headers) with `body`, adding
    /// the shared headers, the user agent and `auth`'s headers (from the data's
    /// `metadata` for `headers_setter`), and reads the response within the deadline:
    /// transport failures and the deadline are retryable errors.
    pub async fn exchange(
        &self,
        request: http::request::Builder,
        body: Bytes,
        metadata: Option<&crate::model::Metadata>,
    ) -> Result<(Parts, http_body_util::Collected<Bytes>), ExportError> {
        let mut request = request
            .header("user-agent", concat!("sieve/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(transport_error)?;
        request.headers_mut().extend(self.headers.clone());
        if let Some(auth) = &self.auth {
            auth.apply(request.headers_mut(), metadata);
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(transport_error)?;
            let (parts, body) = response.into_parts();
            let collected = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(transport_error)?;
            Ok::<_, ExportError>((parts, collected))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ExportError {
                retryable: true,
                retry_after: None,
                reason: "timeout",
                message: format!("no response within {:?}", self.timeout),
            })?
    }

    /// Posts `body` and returns the body of a 2xx answer; any other answer becomes an
    /// [`ExportError`] as `classify` reads it, with the server's `Retry-After`.
    pub async fn post(
        &self,
        request: http::request::Builder,
        body: Bytes,
        metadata: Option<&crate::model::Metadata>,
        classify: &impl Classify,
    ) -> Result<Bytes, ExportError> {
        let (parts, collected) = self.exchange(request, body, metadata).await?;
        let body = collected.to_bytes();
        if parts.status.is_success() {
            return Ok(body);
        }
        let status = parts.status.as_u16();
        let retryable = classify.retryable(status);
        let message = classify.message(&body);
        Err(ExportError {
            retryable,
            retry_after: parts
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
            reason: classify.reason(retryable, &message),
            message: format!("HTTP {status}: {message}"),
        })
    }
}

/// A failure to reach the backend at all: retryable.
pub fn transport_error(e: impl std::fmt::Display) -> ExportError {
    ExportError {
        retryable: true,
        retry_after: None,
        reason: "transport",
        message: e.to_string(),
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one exporter; `http2_only` for gRPC. Fails on unreadable TLS files.
pub(crate) fn client(
    tls: &TlsClientConfig,
    connect_timeout: Duration,
    http2_only: bool,
) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls::client_config(tls)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .build(https))
}

/// `basic_auth:` of an HTTP exporter.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    /// Use `${env:..}` or `${file:..}`.
    pub password: Secret,
}

/// Checks configured headers and that at most one kind of credential is set.
fn validate_credentials(
    headers: &BTreeMap<String, Secret>,
    basic: Option<&BasicAuth>,
    bearer: Option<&Secret>,
) -> Result<(), FieldError> {
    for (name, value) in headers {
        HeaderName::try_from(name.as_str()).map_err(|_| {
            FieldError::new(format!("headers.{name}"), "is not a valid header name")
        })?;
        HeaderValue::try_from(value.0.as_str()).map_err(|_| {
            FieldError::new(format!("headers.{name}"), "is not a valid header value")
        })?;
    }
    if basic.is_some() && bearer.is_some() {
        return Err(FieldError::new(
            "bearer_token",
            "use basic_auth or bearer_token, not both",
        ));
    }
    Ok(())
}

/// The headers sent with every request, all marked sensitive so they are never logged.
fn header_map(
    headers: &BTreeMap<String, Secret>,
    basic: Option<&BasicAuth>,
    bearer: Option<&Secret>,
) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut sensitive = |name: HeaderName, value: &str| {
        if let Ok(mut value) = HeaderValue::try_from(value) {
            value.set_sensitive(true);
            map.insert(name, value);
        }
    };
    for (name, value) in headers {
        if let Ok(name) = HeaderName::try_from(name.as_str()) {
            sensitive(name, &value.0);
        }
    }
    if let Some(auth) = basic {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", auth.username, auth.password.0));
        sensitive(http::header::AUTHORIZATION, &format!("Basic {token}"));
    }
    if let Some(token) = bearer {
        sensitive(http::header::AUTHORIZATION, &format!("Bearer {}", token.0));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn plain_http_retries_429_and_5xx_only() {
        assert!(PlainHttp.retryable(429) && PlainHttp.retryable(500) && PlainHttp.retryable(503));
        assert!(!PlainHttp.retryable(400) && !PlainHttp.retryable(404));
        assert_eq!(PlainHttp.reason(false, "x"), "http_permanent");
        assert_eq!(PlainHttp.message(&[b'a'; 1000]).len(), 512);
    }
}
