//! The HTTP client every exporter uses: hyper with a rustls connector, so `https://`
//! endpoints get TLS (ALPN `h2` for gRPC) and `http://` ones stay plaintext; and the
//! headers and credentials the HTTP exporters share.

use crate::config::{FieldError, Secret};
use crate::tls::{self, TlsClientConfig};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one exporter; `http2_only` for gRPC. Fails only on bad TLS files, which
/// validation has already checked.
pub fn build(
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
pub fn validate_credentials(
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
pub fn header_map(
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
