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

use super::http_core::{http_exporter_config, transport_error, Classify, HttpCore, HttpOptions};
use super::{ExportError, Exported, SendingQueueConfig};
use crate::build::{BuildContext, BuildError};
use crate::config::FieldError;
use crate::model::Batch;
use bytes::Bytes;
use http::Request;
use parking_lot::Mutex;
use prost::Message;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
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

http_exporter_config! {
    /// `exporters: prometheusremotewrite:`. Retries 5xx and 429; the queue has one
    /// consumer by default, to keep samples in order.
    pub struct RemoteWriteConfig {
        /// Remote-write URL, e.g. `http://prometheus:9090/api/v1/write`.
        pub endpoint: String,
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
    }
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

fn default_sending_queue() -> SendingQueueConfig {
    SendingQueueConfig {
        num_consumers: 1,
        ..Default::default()
    }
}

impl RemoteWriteConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        self.validate_shared()?;
        super::otlp::web_uri(&self.endpoint).map_err(|m| FieldError::new("endpoint", m))?;
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
}

/// Sends batches to a remote-write endpoint.
pub struct RemoteWriteExporter {
    config: RemoteWriteConfig,
    options: Options,
    core: Arc<HttpCore>,
    delta: Mutex<DeltaState>,
}

impl RemoteWriteExporter {
    pub fn build(config: &RemoteWriteConfig, cx: &BuildContext) -> Result<Self, BuildError> {
        Ok(RemoteWriteExporter {
            options: config.options(),
            core: Arc::new(config.core(false, cx)?),
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
            let request = Request::post(&self.config.endpoint)
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", "snappy")
                .header("x-prometheus-remote-write-version", "0.1.0");
            let core = Arc::clone(&self.core);
            let metadata = batch.metadata().cloned();
            sends.spawn(async move {
                core.post(
                    request,
                    Bytes::from(body),
                    metadata.as_ref(),
                    &RemoteWriteAnswers,
                )
                .await
            });
        }
        while let Some(result) = sends.join_next().await {
            result.map_err(transport_error)??;
        }
        let message = if dropped > 0 {
            "data points that cannot be sent as Prometheus samples (see the delta_temporality option)".into()
        } else {
            String::new()
        };
        Ok(Exported {
            rejected: dropped,
            message,
            discarded: None,
        })
    }
}

/// Remote write's refusals: 429 and 5xx are retryable; a permanent refusal of samples
/// out of order or duplicated (a restart resending, two senders of one series) is
/// counted apart as `out_of_order`.
struct RemoteWriteAnswers;

impl Classify for RemoteWriteAnswers {
    fn reason(&self, retryable: bool, message: &str) -> &'static str {
        match (
            retryable,
            message.contains("out of order") || message.contains("duplicate sample"),
        ) {
            (true, _) => "http_retryable",
            (false, true) => "out_of_order",
            (false, false) => "http_permanent",
        }
    }
}
