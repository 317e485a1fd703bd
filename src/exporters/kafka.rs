//! `kafka` exporter: writes OTLP export requests to Kafka topics, one topic per signal,
//! in the OpenTelemetry Collector's `kafkaexporter` configuration shape.
//!
//! * Messages are OTLP protobuf (`otlp_proto`, default) or OTLP/JSON export requests.
//! * `partition_traces_by_id`: one message per trace id in a batch, keyed by the id (hex),
//!   so every span of a trace lands in one partition and a consumer owning that partition
//!   sees whole traces — what a tail-sampling gateway tier needs.
//!   `partition_{logs,metrics}_by_resource_attributes`: one message per resource, keyed by
//!   a hash of its attributes.
//! * A message larger than `producer.max_message_bytes` is split in halves by items until
//!   it fits (a split trace keeps its key); a single item that alone is too large is
//!   dropped and counted (`partial_success`).
//! * Delivery: a batch counts as sent only when the broker acknowledged every message
//!   (`required_acks`, default all replicas, with librdkafka's idempotent producer so its
//!   own retries neither duplicate nor reorder). A failure fails the whole batch into the
//!   exporter's retry loop; messages of it that were acknowledged are then sent again
//!   (at-least-once). Oversized messages and authorization failures are permanent.

use super::retry::RetryConfig;
use super::{ExportError, SendingQueueConfig};
use crate::config::{duration, FieldError};
use crate::kafka::{default_topic, AuthConfig, Connection, Encoding, SignalTopic};
use crate::model::{any_value_text, Batch, Signal};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// Broker-side compression of message batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// `producer:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// Largest message payload; bigger batches are split.
    pub max_message_bytes: usize,
    /// `-1` (all in-sync replicas, default; enables the idempotent producer), `1` (the
    /// leader) or `0` (no acknowledgement: delivery is not confirmed).
    pub required_acks: i8,
    /// `none` (default), `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_message_bytes: 1_000_000,
            required_acks: -1,
            compression: Compression::None,
        }
    }
}

/// `exporters: kafka:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaExporterConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Client id the brokers see.
    pub client_id: String,
    /// Topic and encoding for traces (default `otlp_spans`, `otlp_proto`).
    pub traces: Option<SignalTopic>,
    /// Topic and encoding for metrics (default `otlp_metrics`).
    pub metrics: Option<SignalTopic>,
    /// Topic and encoding for logs (default `otlp_logs`).
    pub logs: Option<SignalTopic>,
    /// One message per trace id, keyed by it.
    pub partition_traces_by_id: bool,
    /// One message per resource, keyed by its attributes.
    pub partition_metrics_by_resource_attributes: bool,
    /// One message per resource, keyed by its attributes.
    pub partition_logs_by_resource_attributes: bool,
    /// How long librdkafka may take to deliver a message, its own retries included.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Producer settings.
    pub producer: ProducerConfig,
    /// SASL and TLS.
    pub auth: AuthConfig,
    /// The exporter's queue.
    pub sending_queue: SendingQueueConfig,
    /// Retries of failed batches.
    pub retry_on_failure: RetryConfig,
    /// Request metadata names (a tenant header a receiver kept with `include_metadata`)
    /// sent as record headers of every message, so a gateway's Kafka receiver can
    /// restore them; past a `batch` processor, only names in its `metadata_keys`.
    pub include_metadata_keys: Vec<String>,
}

impl Default for KafkaExporterConfig {
    fn default() -> Self {
        KafkaExporterConfig {
            brokers: vec!["localhost:9092".into()],
            client_id: "sieve".into(),
            traces: None,
            metrics: None,
            logs: None,
            partition_traces_by_id: false,
            partition_metrics_by_resource_attributes: false,
            partition_logs_by_resource_attributes: false,
            timeout: Duration::from_secs(5),
            producer: ProducerConfig::default(),
            auth: AuthConfig::default(),
            sending_queue: SendingQueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            include_metadata_keys: Vec::new(),
        }
    }
}

impl KafkaExporterConfig {
    fn connection(&self) -> Connection<'_> {
        Connection {
            brokers: &self.brokers,
            client_id: &self.client_id,
            auth: &self.auth,
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        self.connection().validate()?;
        if ![-1, 0, 1].contains(&self.producer.required_acks) {
            return Err(FieldError::new(
                "producer.required_acks",
                "must be -1 (all), 0 or 1",
            ));
        }
        if self.producer.max_message_bytes < 1024 {
            return Err(FieldError::new(
                "producer.max_message_bytes",
                "must be at least 1024",
            ));
        }
        if self.timeout.is_zero() {
            return Err(FieldError::new("timeout", "must be positive"));
        }
        self.sending_queue.validate()
    }

    /// The topic settings of `signal`.
    pub fn topic(&self, signal: Signal) -> SignalTopic {
        let configured = match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        };
        configured.clone().unwrap_or_else(|| default_topic(signal))
    }

    /// Whether the messages of `signal` are built from decoded data.
    pub fn decodes(&self, signal: Signal) -> bool {
        self.partitioned(signal) || self.topic(signal).encoding == Encoding::OtlpJson
    }

    fn partitioned(&self, signal: Signal) -> bool {
        match signal {
            Signal::Traces => self.partition_traces_by_id,
            Signal::Metrics => self.partition_metrics_by_resource_attributes,
            Signal::Logs => self.partition_logs_by_resource_attributes,
        }
    }

    /// librdkafka producer properties.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    fn producer_properties(&self) -> Vec<(&'static str, String)> {
        let mut properties = self.connection().properties();
        let acks = match self.producer.required_acks {
            -1 => "all".to_string(),
            n => n.to_string(),
        };
        let compression = match self.producer.compression {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        properties.extend([
            ("acks", acks),
            (
                "enable.idempotence",
                (self.producer.required_acks == -1).to_string(),
            ),
            ("compression.type", compression.into()),
            // Room for the record batch framing around one maximal message.
            (
                "message.max.bytes",
                (self.producer.max_message_bytes + 4096).to_string(),
            ),
            ("message.timeout.ms", self.timeout.as_millis().to_string()),
        ]);
        properties
    }
}

/// One message to produce.
#[derive(Debug)]
pub struct Message {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub items: usize,
}

/// The messages of a batch, and the items too large to send even alone.
pub fn messages(
    config: &KafkaExporterConfig,
    batch: &Batch,
) -> Result<(Vec<Message>, usize), ExportError> {
    let encoding = config.topic(batch.signal()).encoding;
    let groups = if config.partitioned(batch.signal()) {
        partition(batch.clone())
    } else {
        vec![(None, batch.clone())]
    };
    let mut messages = Vec::new();
    let mut too_large = 0;
    for (key, group) in groups {
        too_large += fit(
            key,
            group,
            encoding,
            config.producer.max_message_bytes,
            &mut messages,
        )?;
    }
    Ok((messages, too_large))
}

/// Splits a batch into keyed groups: by trace id, or by resource.
fn partition(mut batch: Batch) -> Vec<(Option<String>, Batch)> {
    match batch.signal() {
        Signal::Traces => by_trace_id(std::mem::take(batch.traces_mut())),
        Signal::Metrics => std::mem::take(batch.metrics_mut())
            .into_iter()
            .map(|rm| {
                let key = resource_key(rm.resource.as_ref().map(|r| &r.attributes[..]));
                (Some(key), Batch::from_metrics(vec![rm]))
            })
            .collect(),
        Signal::Logs => std::mem::take(batch.logs_mut())
            .into_iter()
            .map(|rl| {
                let key = resource_key(rl.resource.as_ref().map(|r| &r.attributes[..]));
                (Some(key), Batch::from_logs(vec![rl]))
            })
            .collect(),
    }
}

fn by_trace_id(resource_spans: Vec<ResourceSpans>) -> Vec<(Option<String>, Batch)> {
    let mut traces: HashMap<Vec<u8>, Vec<ResourceSpans>> = HashMap::new();
    let mut order = Vec::new();
    for rs in resource_spans {
        for ss in rs.scope_spans {
            let mut groups: Vec<(Vec<u8>, Vec<_>)> = Vec::new();
            let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
            for span in ss.spans {
                let at = *index.entry(span.trace_id.clone()).or_insert_with(|| {
                    groups.push((span.trace_id.clone(), Vec::new()));
                    groups.len() - 1
                });
                groups[at].1.push(span);
            }
            for (id, spans) in groups {
                let entry = traces.entry(id.clone()).or_insert_with(|| {
                    order.push(id);
                    Vec::new()
                });
                entry.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans,
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                });
            }
        }
    }
    order
        .into_iter()
        .map(|id| {
            let spans = traces.remove(&id).unwrap_or_default();
            (Some(hex(&id)), Batch::from_traces(spans))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable key for a resource: FNV-1a over its sorted `key=value` attributes.
fn resource_key(attributes: Option<&[KeyValue]>) -> String {
    let mut pairs: Vec<String> = attributes
        .unwrap_or_default()
        .iter()
        .map(|kv| format!("{}={}", kv.key, any_value_text(kv.value.as_ref())))
        .collect();
    pairs.sort();
    let hash = pairs
        .join("\u{1}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// Encodes `batch` into messages of at most `max` bytes, halving it until each fits;
/// returns the items that do not fit even alone.
fn fit(
    key: Option<String>,
    mut batch: Batch,
    encoding: Encoding,
    max: usize,
    messages: &mut Vec<Message>,
) -> Result<usize, ExportError> {
    let payload = match encoding {
        Encoding::OtlpProto => batch.to_bytes().to_vec(),
        Encoding::OtlpJson => super::otlp::to_json(&batch)?,
    };
    if payload.len() <= max {
        messages.push(Message {
            key,
            payload,
            items: batch.items(),
        });
        return Ok(0);
    }
    let items = batch.items();
    if items <= 1 {
        return Ok(items);
    }
    let front = batch.split_off_front(items / 2);
    let dropped = fit(key.clone(), front, encoding, max, messages)?;
    Ok(dropped + fit(key, batch, encoding, max, messages)?)
}

#[cfg(feature = "kafka")]
pub use producer::KafkaExporter;

#[cfg(feature = "kafka")]
mod producer {
    use super::*;
    use crate::build::{BuildContext, BuildError};
    use crate::exporters::Exported;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    /// A producer and the config it sends by.
    pub struct KafkaExporter {
        config: KafkaExporterConfig,
        producer: FutureProducer,
    }

    impl KafkaExporter {
        /// Fails when librdkafka refuses the client properties (a bad TLS or SASL
        /// setting), so a reload that brings one changes nothing.
        pub fn build(
            config: &KafkaExporterConfig,
            cx: &BuildContext,
        ) -> Result<KafkaExporter, BuildError> {
            let producer = crate::kafka::client_config(&config.producer_properties())
                .create::<FutureProducer>()
                .map_err(|e| cx.error("", format!("cannot create the Kafka producer: {e}")))?;
            Ok(KafkaExporter {
                config: config.clone(),
                producer,
            })
        }

        /// The `include_metadata_keys` the batch carries, as record headers.
        fn record_headers(&self, batch: &Batch) -> Option<rdkafka::message::OwnedHeaders> {
            let metadata = batch.metadata()?;
            let mut headers = rdkafka::message::OwnedHeaders::new();
            let mut any = false;
            for key in &self.config.include_metadata_keys {
                if let Some(value) = metadata.get(key) {
                    headers = headers.insert(rdkafka::message::Header {
                        key: key.as_str(),
                        value: Some(value),
                    });
                    any = true;
                }
            }
            any.then_some(headers)
        }

        pub async fn export(&self, batch: &Batch) -> Result<Exported, ExportError> {
            let producer = &self.producer;
            let topic = self.config.topic(batch.signal()).topic;
            let (messages, too_large) = messages(&self.config, batch)?;
            let headers = self.record_headers(batch);
            let mut deliveries = Vec::with_capacity(messages.len());
            for message in &messages {
                let mut record = FutureRecord::to(&topic).payload(&message.payload);
                if let Some(headers) = &headers {
                    record = record.headers(headers.clone());
                }
                if let Some(key) = &message.key {
                    record = record.key(key);
                }
                let delivery = producer
                    .send_result(record)
                    .map_err(|(error, _)| kafka_error(&error))?;
                deliveries.push(delivery);
            }
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((error, _))) => return Err(kafka_error(&error)),
                    Err(_) => {
                        return Err(ExportError {
                            retryable: true,
                            retry_after: None,
                            reason: "kafka",
                            message: "the producer shut down before delivery".into(),
                        })
                    }
                }
            }
            Ok(Exported {
                rejected: too_large as u64,
                message: if too_large > 0 {
                    format!(
                        "{too_large} items larger than max_message_bytes ({}) on their own",
                        self.config.producer.max_message_bytes
                    )
                } else {
                    String::new()
                },
                discarded: None,
            })
        }
    }

    fn kafka_error(error: &KafkaError) -> ExportError {
        let permanent = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::SaslAuthenticationFailed
            )
        );
        ExportError {
            retryable: !permanent,
            retry_after: None,
            reason: "kafka",
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn span(trace: u8, name: &str) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![1; 8],
            name: name.into(),
            ..Default::default()
        }
    }

    fn traces(spans: Vec<Span>) -> Batch {
        Batch::from_traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    fn config(yaml: &str) -> KafkaExporterConfig {
        let config: KafkaExporterConfig = serde_yaml::from_str(yaml).unwrap();
        config.validate().unwrap();
        config
    }

    #[test]
    fn traces_are_keyed_by_trace_id_one_message_per_trace() {
        let config = config("partition_traces_by_id: true");
        let batch = traces(vec![span(1, "a"), span(2, "b"), span(1, "c")]);
        let (messages, too_large) = messages(&config, &batch).unwrap();
        assert_eq!(too_large, 0);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].key.as_deref(), Some("01".repeat(16).as_str()));
        assert_eq!(messages[0].items, 2);
        assert_eq!(messages[1].items, 1);
    }

    #[test]
    fn unpartitioned_batches_are_one_unkeyed_message() {
        let config = config("{}");
        let (messages, _) = messages(&config, &traces(vec![span(1, "a"), span(2, "b")])).unwrap();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].key.is_none());
        assert_eq!(
            messages[0].payload,
            traces(vec![span(1, "a"), span(2, "b")]).to_bytes()
        );
    }

    #[test]
    fn oversized_batches_split_and_lone_giants_are_counted() {
        let config =
            config("producer: {max_message_bytes: 1024}\ntraces: {topic: t, encoding: otlp_json}");
        let spans: Vec<Span> = (0..20).map(|i| span(1, &format!("{i:0>100}"))).collect();
        let mut spans_and_giant = spans.clone();
        spans_and_giant.push(span(1, &"x".repeat(5000)));
        let (messages, too_large) = messages(&config, &traces(spans_and_giant)).unwrap();
        assert_eq!(too_large, 1);
        assert!(messages.len() > 1);
        assert!(messages.iter().all(|m| m.payload.len() <= 1024));
        assert_eq!(messages.iter().map(|m| m.items).sum::<usize>(), 20);
        assert!(messages[0].payload.starts_with(b"{"), "JSON encoding");
    }

    #[test]
    fn producer_settings_follow_the_config() {
        let config = config("producer: {required_acks: 1, compression: zstd}");
        let properties = config.producer_properties();
        let get = |key: &str| {
            properties
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("acks").as_deref(), Some("1"));
        assert_eq!(get("enable.idempotence").as_deref(), Some("false"));
        assert_eq!(get("compression.type").as_deref(), Some("zstd"));
        let defaults = KafkaExporterConfig::default().producer_properties();
        assert!(defaults.contains(&("enable.idempotence", "true".into())));
        assert!(defaults.contains(&("acks", "all".into())));
    }

    #[test]
    fn bad_settings_are_named() {
        let error = serde_yaml::from_str::<KafkaExporterConfig>("producer: {required_acks: 2}")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(error.key, "producer.required_acks");
        assert!(
            serde_yaml::from_str::<KafkaExporterConfig>("producer: {compression: brotli}").is_err()
        );
    }
}
