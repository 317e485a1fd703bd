//! `kafka` receiver: consumes OTLP export requests from per-signal topics in a consumer
//! group, in the OpenTelemetry Collector's `kafkareceiver` configuration shape — the
//! scale-out tier behind agents that export with `partition_traces_by_id`: each gateway
//! owns whole partitions and therefore whole traces.
//!
//! * Subscribes to the topics of the signals configured under `traces:`, `metrics:` and
//!   `logs:`; with none configured, to the default topics of the signals its pipelines
//!   carry, following them on reload: a pipeline added for a new signal subscribes to its
//!   topic; when no pipeline carries a signal any more, its topic is left and its
//!   messages stay in Kafka.
//! * At-least-once: a message's offset is stored for commit only after its pipelines
//!   accepted it (the collector marks before processing), plus `commit_delay` — set it
//!   above the time the pipeline holds data (a tail sampler's `decision_wait`, export
//!   retries) so a crash between acceptance and export redelivers instead of losing.
//!   Stored offsets are committed every second and on stop. Redelivered messages are
//!   duplicates downstream.
//! * Backpressure: when a pipeline refuses (queue full, memory limit), consumption pauses
//!   on that message and retries it with backoff instead of dropping it. A pause longer
//!   than `max.poll.interval.ms` (5 minutes) makes the broker hand the partitions to
//!   another group member, which then redelivers.
//! * A message that does not decode is counted (`sieve_receiver_rejected_requests_total`
//!   with `transport="kafka"`), logged, and skipped.

use crate::config::{duration, FieldError};
use crate::kafka::{default_topic, AuthConfig, Connection, Encoding, SignalTopic};
use crate::model::{Admitted, Batch, Invalid, Signal};
use serde::Deserialize;
use std::time::Duration;

/// Where a new consumer group starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialOffset {
    /// Only messages produced from now on (the collector's default).
    #[default]
    Latest,
    /// Everything the topic still holds.
    Earliest,
}

/// `receivers: kafka:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaReceiverConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Client id the brokers see.
    pub client_id: String,
    /// Consumer group; gateways sharing it share the partitions.
    pub group_id: String,
    /// Topic and encoding for traces.
    pub traces: Option<SignalTopic>,
    /// Topic and encoding for metrics.
    pub metrics: Option<SignalTopic>,
    /// Topic and encoding for logs.
    pub logs: Option<SignalTopic>,
    /// `latest` (default) or `earliest`, for a group without committed offsets.
    pub initial_offset: InitialOffset,
    /// How long after acceptance a message's offset may be committed.
    #[serde(with = "duration")]
    pub commit_delay: Duration,
    /// Group session timeout.
    #[serde(with = "duration")]
    pub session_timeout: Duration,
    /// Group heartbeat interval.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Largest message accepted, in bytes (bounds memory per message).
    pub max_message_bytes: usize,
    /// SASL and TLS.
    pub auth: AuthConfig,
    /// Keep each message's record headers with its data as request metadata (what an
    /// agent's `include_metadata_keys` sent: a tenant header), at most 32 of them.
    pub include_metadata: bool,
}

impl Default for KafkaReceiverConfig {
    fn default() -> Self {
        KafkaReceiverConfig {
            brokers: vec!["localhost:9092".into()],
            client_id: "sieve".into(),
            group_id: "sieve".into(),
            traces: None,
            metrics: None,
            logs: None,
            initial_offset: InitialOffset::Latest,
            commit_delay: Duration::ZERO,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            max_message_bytes: 16 << 20,
            auth: AuthConfig::default(),
            include_metadata: false,
        }
    }
}

impl KafkaReceiverConfig {
    fn connection(&self) -> Connection<'_> {
        Connection {
            brokers: &self.brokers,
            client_id: &self.client_id,
            auth: &self.auth,
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        self.connection().validate()?;
        if self.group_id.is_empty() {
            return Err(FieldError::new("group_id", "is required"));
        }
        if self.heartbeat_interval >= self.session_timeout {
            return Err(FieldError::new(
                "heartbeat_interval",
                "must be shorter than session_timeout",
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(FieldError::new(
                "max_message_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }

    /// The signals with explicitly configured topics.
    fn configured(&self) -> Vec<(Signal, SignalTopic)> {
        [
            (Signal::Traces, &self.traces),
            (Signal::Metrics, &self.metrics),
            (Signal::Logs, &self.logs),
        ]
        .into_iter()
        .filter_map(|(signal, topic)| topic.clone().map(|t| (signal, t)))
        .collect()
    }

    /// Topics to subscribe to, given the signals the pipelines carry.
    pub fn subscriptions(&self, carried: impl Fn(Signal) -> bool) -> Vec<(Signal, SignalTopic)> {
        let configured = self.configured();
        if !configured.is_empty() {
            return configured;
        }
        Signal::ALL
            .into_iter()
            .filter(|s| carried(*s))
            .map(|s| (s, default_topic(s)))
            .collect()
    }

    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    fn consumer_properties(&self) -> Vec<(&'static str, String)> {
        let mut properties = self.connection().properties();
        let offset = match self.initial_offset {
            InitialOffset::Latest => "latest",
            InitialOffset::Earliest => "earliest",
        };
        properties.extend([
            ("group.id", self.group_id.clone()),
            ("auto.offset.reset", offset.into()),
            ("enable.auto.commit", "true".into()),
            ("auto.commit.interval.ms", "1000".into()),
            ("enable.auto.offset.store", "false".into()),
            (
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            ),
            (
                "heartbeat.interval.ms",
                self.heartbeat_interval.as_millis().to_string(),
            ),
            ("fetch.max.bytes", self.max_message_bytes.to_string()),
            (
                "receive.message.max.bytes",
                (self.max_message_bytes + 65_536).to_string(),
            ),
        ]);
        properties
    }
}

/// Checks one message of `signal` as the OTLP receiver checks a request: the items that
/// decode, and what was refused.
pub fn decode(signal: Signal, encoding: Encoding, payload: &[u8]) -> Result<Admitted, Invalid> {
    match encoding {
        Encoding::OtlpProto => Batch::from_request(signal, bytes::Bytes::copy_from_slice(payload)),
        Encoding::OtlpJson => super::otlp::json::decode(signal, payload),
    }
}

#[cfg(feature = "kafka")]
pub use consumer::KafkaReceiver;

#[cfg(feature = "kafka")]
mod consumer {
    use super::*;
    use crate::queue::Routes;
    use crate::receivers::core::{IngestError, ReceiverCore};
    use crate::telemetry::Telemetry;
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    /// A message's record headers as request metadata (UTF-8 values only, at most
    /// [`crate::receivers::core::METADATA_HEADERS`], each at most
    /// [`crate::receivers::core::METADATA_VALUE_BYTES`]).
    fn record_metadata(message: &impl Message) -> crate::model::Metadata {
        use crate::receivers::core::{METADATA_HEADERS, METADATA_VALUE_BYTES};
        let pairs = message.headers().into_iter().flat_map(|headers| {
            headers.iter().filter_map(|header| {
                let value = std::str::from_utf8(header.value?).ok()?;
                (value.len() <= METADATA_VALUE_BYTES)
                    .then(|| (header.key.to_string(), value.to_string()))
            })
        });
        crate::model::Metadata::from_pairs(pairs.take(METADATA_HEADERS))
    }
    use std::collections::VecDeque;
    use std::sync::Arc;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    /// A consumer made at prepare time, so bad settings fail the reload, not the task.
    pub struct Prepared {
        config: KafkaReceiverConfig,
        consumer: StreamConsumer,
    }

    pub struct KafkaReceiver {
        core: Arc<ReceiverCore>,
        stop: watch::Sender<bool>,
        /// Tells the consumer that the pipelines changed, so it can resubscribe.
        routes_changed: Arc<watch::Sender<()>>,
        task: JoinHandle<()>,
    }

    impl KafkaReceiver {
        pub fn prepare(config: &KafkaReceiverConfig) -> std::io::Result<Prepared> {
            let consumer = crate::kafka::client_config(&config.consumer_properties())
                .create::<StreamConsumer>()
                .map_err(|e| std::io::Error::other(format!("kafka consumer: {e}")))?;
            Ok(Prepared {
                config: config.clone(),
                consumer,
            })
        }

        pub fn start(
            id: String,
            prepared: Prepared,
            routes: Arc<Routes>,
            telemetry: Arc<Telemetry>,
        ) -> KafkaReceiver {
            let core = Arc::new(ReceiverCore::new(id, routes, telemetry));
            let (stop, stopped) = watch::channel(false);
            let routes_changed = Arc::new(watch::Sender::new(()));
            let watched = Watched {
                stopped,
                routes_changed: routes_changed.subscribe(),
            };
            let task = tokio::spawn(consume(prepared, Arc::clone(&core), watched));
            KafkaReceiver {
                core,
                stop,
                routes_changed,
                task,
            }
        }

        /// Replaces the consumer (after committing what the old one stored).
        pub async fn update(&mut self, prepared: Prepared) {
            let (stop, stopped) = watch::channel(false);
            let old_stop = std::mem::replace(&mut self.stop, stop);
            let _ = old_stop.send(true);
            let watched = Watched {
                stopped,
                routes_changed: self.routes_changed.subscribe(),
            };
            let old_task = std::mem::replace(
                &mut self.task,
                tokio::spawn(consume(prepared, Arc::clone(&self.core), watched)),
            );
            let _ = old_task.await;
        }

        /// New routes; without configured topics, the consumer then follows the signals
        /// the pipelines carry (subscribing to a new signal's topic, leaving a dropped one's
        /// messages in Kafka).
        pub fn set_routes(&self, routes: Arc<Routes>) {
            self.core.set_routes(routes);
            self.routes_changed.send_replace(());
        }

        pub async fn stop(self) {
            let _ = self.stop.send(true);
            let _ = self.task.await;
            self.core.set_routes(Arc::new(Routes::default()));
        }
    }

    /// An accepted message whose offset is stored once `commit_delay` has passed.
    struct Accepted {
        at: Instant,
        topic: String,
        partition: i32,
        offset: i64,
    }

    /// What the consuming task watches besides the brokers.
    struct Watched {
        stopped: watch::Receiver<bool>,
        routes_changed: watch::Receiver<()>,
    }

    /// Subscribes to the topics of the signals the pipelines carry (or the configured ones).
    fn subscribe(
        consumer: &StreamConsumer,
        config: &KafkaReceiverConfig,
        core: &ReceiverCore,
    ) -> Option<Vec<(Signal, SignalTopic)>> {
        let subscriptions = config.subscriptions(|s| core.accepts(s));
        let topics: Vec<&str> = subscriptions
            .iter()
            .map(|(_, t)| t.topic.as_str())
            .collect();
        if let Err(error) = consumer.subscribe(&topics) {
            tracing::error!(receiver = %core.id, %error, "kafka: cannot subscribe");
            return None;
        }
        tracing::info!(receiver = %core.id, ?topics, "kafka: consuming");
        Some(subscriptions)
    }

    async fn consume(prepared: Prepared, core: Arc<ReceiverCore>, watched: Watched) {
        let Prepared { config, consumer } = prepared;
        let Watched {
            mut stopped,
            mut routes_changed,
        } = watched;
        let Some(mut subscriptions) = subscribe(&consumer, &config, &core) else {
            return;
        };
        let mut pending: VecDeque<Accepted> = VecDeque::new();
        let mut commit_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let message = tokio::select! {
                message = consumer.recv() => message,
                _ = commit_tick.tick() => {
                    store_due(&consumer, &mut pending, config.commit_delay);
                    continue;
                }
                _ = routes_changed.changed() => {
                    // a failed subscribe leaves the old subscription in place
                    if config.subscriptions(|s| core.accepts(s)) != subscriptions {
                        if let Some(now) = subscribe(&consumer, &config, &core) {
                            subscriptions = now;
                        }
                    }
                    continue;
                }
                _ = stopped.changed() => break,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(receiver = %core.id, %error, "kafka: consumer error");
                    // Not a tight loop while the brokers are away.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stopped.changed() => break,
                    }
                    continue;
                }
            };
            let Some((signal, topic)) = subscriptions
                .iter()
                .find(|(_, t)| t.topic == message.topic())
            else {
                continue;
            };
            let accepted = Accepted {
                at: Instant::now(),
                topic: message.topic().to_string(),
                partition: message.partition(),
                offset: message.offset(),
            };
            let payload = message.payload().unwrap_or_default();
            match decode(*signal, topic.encoding, payload) {
                Ok(mut admitted) => {
                    if config.include_metadata {
                        admitted.batch.set_metadata(Some(record_metadata(&message)));
                    }
                    if let Some(r) = &admitted.rejected {
                        core.count_rejected_items(r.signal, r.reason, r.count);
                    }
                    if !deliver(&core, admitted.batch, &mut stopped).await {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(receiver = %core.id, topic = %accepted.topic, offset = accepted.offset, %error, "kafka: skipping a message that does not decode");
                    if let Invalid::AllRefused(r) = &error {
                        core.count_rejected_items(r.signal, r.reason, r.count);
                    }
                    core.count_rejected("kafka", error.reason());
                }
            }
            pending.push_back(accepted);
            store_due(&consumer, &mut pending, config.commit_delay);
        }
        store_due(&consumer, &mut pending, config.commit_delay);
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(receiver = %core.id, %error, "kafka: final commit");
        }
    }

    /// Offers a batch until its pipelines take it; false if stopped first (the message
    /// stays uncommitted and is redelivered).
    async fn deliver(
        core: &ReceiverCore,
        batch: Batch,
        stopped: &mut watch::Receiver<bool>,
    ) -> bool {
        let (signal, items) = (batch.signal(), batch.items());
        let mut attempt = core.hand_over(batch);
        let mut backoff = Duration::from_millis(10);
        loop {
            let batch = match attempt {
                Ok(()) => return true,
                Err(IngestError::NoPipeline) => {
                    core.count_dropped(signal, "no_pipeline", items);
                    return true;
                }
                Err(IngestError::Refused(refused)) => match refused.batch {
                    Some(batch) => batch,
                    None => {
                        core.count_dropped(signal, "fan_out_partially_refused", items);
                        return true;
                    }
                },
            };
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped.changed() => return false,
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
            attempt = core.hand_over(batch);
        }
    }

    fn store_due(consumer: &StreamConsumer, pending: &mut VecDeque<Accepted>, delay: Duration) {
        while let Some(accepted) = pending.front() {
            if accepted.at.elapsed() < delay {
                break;
            }
            if let Err(error) =
                consumer.store_offset(&accepted.topic, accepted.partition, accepted.offset + 1)
            {
                tracing::debug!(%error, "kafka: offset not stored (partition revoked?)");
            }
            pending.pop_front();
        }
    }
}

#[cfg(feature = "kafka")]
pub use consumer::Prepared;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_follow_the_config_or_the_pipelines() {
        let config: KafkaReceiverConfig =
            serde_yaml::from_str("traces: {topic: spans, encoding: otlp_json}").unwrap();
        config.validate().unwrap();
        let subs = config.subscriptions(|_| true);
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].1.topic, "spans");
        let defaults = KafkaReceiverConfig::default().subscriptions(|s| s == Signal::Logs);
        assert_eq!(defaults, vec![(Signal::Logs, default_topic(Signal::Logs))]);
    }

    #[test]
    fn offsets_are_stored_by_sieve_not_librdkafka() {
        let properties = KafkaReceiverConfig::default().consumer_properties();
        assert!(properties.contains(&("enable.auto.offset.store", "false".into())));
        assert!(properties.contains(&("auto.offset.reset", "latest".into())));
    }

    #[test]
    fn messages_decode_by_encoding_and_bad_ones_are_errors() {
        let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"s"}]}]}]}"#;
        let admitted = decode(Signal::Traces, Encoding::OtlpJson, json).unwrap();
        assert_eq!((admitted.batch.items(), admitted.rejected), (1, None));
        let bad_id = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"01","spanId":"0102030405060708","name":"s"},{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708"}]}]}]}"#;
        let admitted = decode(Signal::Traces, Encoding::OtlpJson, bad_id).unwrap();
        assert_eq!(admitted.batch.items(), 1);
        assert_eq!(admitted.rejected.unwrap().count, 1, "left out and reported");
        assert!(decode(Signal::Traces, Encoding::OtlpProto, b"\x0a\xff\xff").is_err());
        assert!(decode(Signal::Traces, Encoding::OtlpJson, b"[1]").is_err());
    }

    #[test]
    fn bad_settings_are_named() {
        let error = serde_yaml::from_str::<KafkaReceiverConfig>("heartbeat_interval: 20s")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(error.key, "heartbeat_interval");
    }
}
