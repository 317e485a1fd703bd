//! `prometheusremotewrite` exporter: Prometheus remote-write 1.0 — a protobuf
//! `WriteRequest`, snappy-compressed, with `Content-Encoding: snappy`,
//! `Content-Type: application/x-protobuf` and `X-Prometheus-Remote-Write-Version: 0.1.0`.
//!
//! Translation is in [`translate`]. Sending: a batch becomes one `WriteRequest` whose
//! series are sharded by label hash into requests of at most `max_batch_size_bytes`,
//! sent in parallel; a series lives in exactly one shard, and its samples are in time
//! order. `sending_queue.num_consumers` defaults to 1 here so that batches, and so each
//! series' samples, arrive in order. 5xx and 429 are retried; other 4xx are dropped and
//! counted with the server's reason, including out-of-order and duplicate-sample
//! rejections (`reason="out_of_order"`), which retrying cannot fix.

pub mod prompb;
pub mod translate;

use super::http_client::{self, HttpClient};
use super::retry::RetryConfig;
use super::{ExportError, Exported, SendingQueueConfig};
use crate::build::{BuildContext, BuildError};
use crate::config::{duration, FieldError, Secret};
use crate::model::Batch;
use crate::tls::TlsClientConfig;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full, Limited};
use parking_lot::Mutex;
use prost::Message;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;
use translate::{DeltaMode, DeltaState, Options};

/// `resource_to_telemetry_conversion:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceToTelemetry {
    /// Put every resource attribute on every series.
    pub enabled: bool,
}

/// `target_info:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetInfo {
    /// Send a `target_info` series per resource.
    pub enabled: bool,
}

impl Default for TargetInfo {
    fn default() -> Self {
        TargetInfo { enabled: true }
    }
}

/// `exporters: prometheusremotewrite:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Remote-write URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub endpoint: String,
    /// Extra headers; values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<super::http_client::BasicAuth>,
    /// Bearer token.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Labels added to every series that does not already have them.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Prefix for every metric name.
    #[serde(default)]
    pub namespace: String,
    /// Append unit suffixes and `_total` (the specification's default).
    #[serde(default = "yes")]
    pub add_metric_suffixes: bool,
    /// Copy resource attributes onto every series (instead of `target_info`).
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// The `target_info` series.
    #[serde(default)]
    pub target_info: TargetInfo,
    /// `convert` (default) delta sums and histograms to cumulative, or `drop` them.
    #[serde(default)]
    pub delta_temporality: DeltaMode,
    /// Series whose delta points are being accumulated, at most.
    #[serde(default = "default_max_delta_series")]
    pub max_delta_series: usize,
    /// Largest request, in bytes before compression.
    #[serde(default = "default_max_batch_size_bytes")]
    pub max_batch_size_bytes: usize,
    /// Deadline of one request.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Retries of 5xx and 429.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// The exporter's queue (one consumer by default, to keep samples in order).
    #[serde(default = "default_queue")]
    pub sending_queue: SendingQueueConfig,
    /// TLS for `https://` endpoints.
    #[serde(default)]
    pub tls: TlsClientConfig,
}

fn yes() -> bool {
    true
}

fn default_max_delta_series() -> usize {
    100_000
}

fn default_max_batch_size_bytes() -> usize {
    3_000_000
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_queue() -> SendingQueueConfig {
    SendingQueueConfig {
        num_consumers: 1,
        ..Default::default()
    }
}

impl RemoteWriteConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        self.retry_on_failure.validate()?;
        self.sending_queue.validate()?;
        super::otlp::web_uri(&self.endpoint).map_err(|m| FieldError::new("endpoint", m))?;
        http_client::build(&self.tls, self.timeout, false)
            .map_err(|m| FieldError::new("tls", m))?;
        super::http_client::validate_credentials(
            &self.headers,
            self.basic_auth.as_ref(),
            self.bearer_token.as_ref(),
        )?;
        if self.max_batch_size_bytes < 1024 {
            return Err(FieldError::new(
                "max_batch_size_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }

    fn options(&self) -> Options {
        Options {
            namespace: self.namespace.clone(),
            add_metric_suffixes: self.add_metric_suffixes,
            resource_to_telemetry_conversion: self.resource_to_telemetry_conversion.enabled,
            target_info: self.target_info.enabled,
            external_labels: self.external_labels.clone(),
            delta: self.delta_temporality,
            max_delta_series: self.max_delta_series,
        }
    }

    fn header_map(&self) -> HeaderMap {
        super::http_client::header_map(
            &self.headers,
            self.basic_auth.as_ref(),
            self.bearer_token.as_ref(),
        )
    }
}

/// Sends batches to a remote-write endpoint.
pub struct RemoteWriteExporter {
    config: RemoteWriteConfig,
    options: Options,
    client: HttpClient,
    headers: HeaderMap,
    delta: Mutex<DeltaState>,
}

impl RemoteWriteExporter {
    pub fn build(config: &RemoteWriteConfig, cx: &BuildContext) -> Result<Self, BuildError> {
        Ok(RemoteWriteExporter {
            options: config.options(),
            client: http_client::build(&config.tls, config.timeout, false)
                .map_err(|e| cx.error("tls", e))?,
            headers: config.header_map(),
            config: config.clone(),
            delta: Mutex::new(DeltaState::default()),
        })
    }

    /// Series grouped into requests of at most `max_batch_size_bytes`, by label hash.
    fn requests(&self, series: Vec<prompb::TimeSeries>) -> Vec<prompb::WriteRequest> {
        let total: usize = series.iter().map(|s| s.encoded_len() + 8).sum();
        let shards = total.div_ceil(self.config.max_batch_size_bytes).max(1);
        let mut requests = vec![prompb::WriteRequest::default(); shards];
        for s in series {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            s.labels.hash(&mut hasher);
            requests[(hasher.finish() % shards as u64) as usize]
                .timeseries
                .push(s);
        }
        requests.retain(|r| !r.timeseries.is_empty());
        requests
    }

    pub async fn export(&self, batch: &Batch) -> Result<Exported, ExportError> {
        let mut batch = batch.clone();
        let resources = batch.metrics_mut();
        let output = translate::translate(resources, &self.options, &mut self.delta.lock());
        let dropped: u64 = output.dropped.values().sum();
        let mut sends = tokio::task::JoinSet::new();
        for request in self.requests(output.into_series()) {
            let body = snap::raw::Encoder::new()
                .compress_vec(&request.encode_to_vec())
                .expect("snappy compresses any buffer");
            let (client, headers, endpoint, timeout) = (
                self.client.clone(),
                self.headers.clone(),
                self.config.endpoint.clone(),
                self.config.timeout,
            );
            sends.spawn(async move {
                send(&client, headers, &endpoint, timeout, Bytes::from(body)).await
            });
        }
        while let Some(result) = sends.join_next().await {
            result.map_err(|e| ExportError {
                retryable: true,
                retry_after: None,
                reason: "transport",
                message: e.to_string(),
            })??;
        }
        let message = if dropped > 0 {
            "data points that cannot be sent as Prometheus samples (see the delta_temporality option)".into()
        } else {
            String::new()
        };
        Ok(Exported {
            rejected: dropped,
            message,
        })
    }
}

async fn send(
    client: &HttpClient,
    headers: HeaderMap,
    endpoint: &str,
    timeout: Duration,
    body: Bytes,
) -> Result<(), ExportError> {
    let transport = |e: &dyn std::fmt::Display| ExportError {
        retryable: true,
        retry_after: None,
        reason: "transport",
        message: e.to_string(),
    };
    let mut request = Request::post(endpoint)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .header("user-agent", concat!("sieve/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(|e| transport(&e))?;
    request.headers_mut().extend(headers);
    let exchange = async {
        let response = client.request(request).await.map_err(|e| transport(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, 64 * 1024)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok::<_, ExportError>((parts, body))
    };
    let (parts, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ExportError {
            retryable: true,
            retry_after: None,
            reason: "timeout",
            message: format!("no response within {timeout:?}"),
        })??;
    if parts.status.is_success() {
        return Ok(());
    }
    let status = parts.status.as_u16();
    let text = String::from_utf8_lossy(&body[..body.len().min(512)])
        .trim()
        .to_string();
    let retryable = status == 429 || status >= 500;
    let reason = match (
        retryable,
        text.contains("out of order") || text.contains("duplicate sample"),
    ) {
        (true, _) => "http_retryable",
        (false, true) => "out_of_order",
        (false, false) => "http_permanent",
    };
    let retry_after = parts
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(super::otlp::parse_retry_after);
    Err(ExportError {
        retryable,
        retry_after,
        reason,
        message: format!("HTTP {status}: {text}"),
    })
}
