//! Receivers: the async edge where data enters.
//!
//! A receiver owns its sockets, turns requests into [`crate::model::Batch`]es and hands
//! them to its pipelines through [`crate::queue::Routes`] without blocking; when a
//! pipeline cannot take more it answers the client with a retryable refusal.

pub mod budget;
pub mod core;
pub mod kafka;
pub mod otlp;
pub mod syslog;

use crate::config::{or_default, ComponentConfig, FieldError};
use crate::model::Signal;
use serde::Deserializer;

/// The `receivers:` section, tagged by component type.
#[derive(Clone, Debug, PartialEq)]
pub enum ReceiverConfig {
    Otlp(otlp::OtlpReceiverConfig),
    Syslog(syslog::SyslogReceiverConfig),
    Kafka(Box<kafka::KafkaReceiverConfig>),
}

impl ReceiverConfig {
    /// Whether the receiver serves TLS from certificate files: a reload re-reads them
    /// even when its config is unchanged, so a rotated certificate needs only a SIGHUP.
    pub fn serves_tls(&self) -> bool {
        match self {
            ReceiverConfig::Otlp(c) => {
                let p = &c.protocols;
                p.grpc.as_ref().is_some_and(|g| g.tls.is_some())
                    || p.http.as_ref().is_some_and(|h| h.tls.is_some())
            }
            ReceiverConfig::Syslog(c) => c.tcp.as_ref().is_some_and(|t| t.tls.is_some()),
            ReceiverConfig::Kafka(_) => false,
        }
    }
}

impl ComponentConfig for ReceiverConfig {
    const SECTION: &'static str = "receivers";
    const KINDS: &'static [&'static str] = &["otlp", "syslog", "kafka"];

    fn deserialize_kind<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        match kind {
            "otlp" => or_default(d).map(ReceiverConfig::Otlp),
            "syslog" => or_default(d).map(ReceiverConfig::Syslog),
            "kafka" => or_default(d).map(|c| ReceiverConfig::Kafka(Box::new(c))),
            other => unreachable!("section checks kinds before deserializing `{other}`"),
        }
    }

    fn signals(&self) -> &'static [Signal] {
        match self {
            ReceiverConfig::Otlp(_) => &Signal::ALL,
            ReceiverConfig::Syslog(_) => &[Signal::Logs],
            ReceiverConfig::Kafka(_) => &Signal::ALL,
        }
    }

    fn validate(&self) -> Result<(), FieldError> {
        match self {
            ReceiverConfig::Otlp(c) => c.validate(),
            ReceiverConfig::Syslog(c) => c.validate(),
            ReceiverConfig::Kafka(c) => c.validate(),
        }
    }
}
