//! The HTTP client every exporter uses: hyper with a rustls connector, so `https://`
//! endpoints get TLS (ALPN `h2` for gRPC) and `http://` ones stay plaintext.

use crate::tls::{self, TlsClientConfig};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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
