//! The exporters sieve has: the `exporters:` section's config enum, the build of each
//! exporter from it, and the dispatch of an export attempt to the built exporter. An
//! exporter is added here and nowhere else outside its own folder.

use crate::build::{BuildContext, BuildError};
use crate::config::{or_default, ComponentConfig, ExtensionReference, FieldError};
use crate::exporters::{
    debug, kafka, loki, otlp, prometheus, retry, Built, Export, ExportError, Exported,
    SendingQueueConfig,
};
use crate::model::{Batch, Signal};
use serde::{Deserialize, Deserializer};

/// The `exporters:` section, tagged by component type.
#[derive(Clone, Debug, PartialEq)]
pub enum ExporterConfig {
    /// OTLP over gRPC.
    Otlp(otlp::OtlpExporterConfig),
    /// OTLP over HTTP.
    OtlpHttp(otlp::OtlpExporterConfig),
    Debug(debug::DebugConfig),
    Loki(loki::LokiExporterConfig),
    /// Prometheus remote write.
    PrometheusRemoteWrite(prometheus::RemoteWriteConfig),
    Kafka(Box<kafka::KafkaExporterConfig>),
}

impl ComponentConfig for ExporterConfig {
    const SECTION: &'static str = "exporters";
    const KINDS: &'static [&'static str] = &[
        "otlp_grpc",
        "otlp_http",
        "debug",
        "loki",
        "prometheus_remote_write",
        "kafka",
    ];
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("otlp", "otlp_grpc"),
        ("otlphttp", "otlp_http"),
        ("prometheusremotewrite", "prometheus_remote_write"),
    ];

    fn deserialize_kind<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        match kind {
            "otlp_grpc" => otlp::OtlpExporterConfig::deserialize(d).map(ExporterConfig::Otlp),
            "otlp_http" => otlp::OtlpExporterConfig::deserialize(d).map(ExporterConfig::OtlpHttp),
            "debug" => or_default(d).map(ExporterConfig::Debug),
            "loki" => loki::LokiExporterConfig::deserialize(d).map(ExporterConfig::Loki),
            "prometheus_remote_write" => prometheus::RemoteWriteConfig::deserialize(d)
                .map(ExporterConfig::PrometheusRemoteWrite),
            "kafka" => or_default(d).map(|c| ExporterConfig::Kafka(Box::new(c))),
            other => unreachable!("section checks kinds before deserializing `{other}`"),
        }
    }

    fn signals(&self) -> &'static [Signal] {
        match self {
            ExporterConfig::Loki(_) => &[Signal::Logs],
            ExporterConfig::PrometheusRemoteWrite(_) => &[Signal::Metrics],
            _ => &Signal::ALL,
        }
    }

    fn validate(&self) -> Result<(), FieldError> {
        match self {
            ExporterConfig::Otlp(c) => c.validate(otlp::Transport::Grpc),
            ExporterConfig::OtlpHttp(c) => c.validate(otlp::Transport::Http),
            ExporterConfig::Debug(_) => Ok(()),
            ExporterConfig::Loki(c) => c.validate(),
            ExporterConfig::PrometheusRemoteWrite(c) => c.validate(),
            ExporterConfig::Kafka(c) => c.validate(),
        }
    }

    fn extension_references(&self) -> Vec<ExtensionReference> {
        let storage = self.sending_queue().storage.map(|id| ExtensionReference {
            key: "sending_queue.storage",
            id,
            role: "storage",
        });
        let auth = self.auth_id().map(|id| ExtensionReference {
            key: "auth.authenticator",
            id: id.to_string(),
            role: "client_auth",
        });
        storage.into_iter().chain(auth).collect()
    }
}

impl ExporterConfig {
    /// Whether this exporter works on the decoded messages of `signal`: an encoded batch
    /// is then decoded once, before the first attempt, and any loss counted; otherwise
    /// a pipeline hands it batches encoded, the smaller form to hold in a queue.
    pub fn decodes(&self, signal: Signal) -> bool {
        match self {
            ExporterConfig::Otlp(_) => false,
            ExporterConfig::OtlpHttp(c) => c.encoding == otlp::Encoding::Json,
            ExporterConfig::Debug(c) => c.verbosity != debug::Verbosity::Basic,
            ExporterConfig::Loki(_) | ExporterConfig::PrometheusRemoteWrite(_) => true,
            ExporterConfig::Kafka(c) => c.decodes(signal),
        }
    }

    /// The client authenticator `auth.authenticator` names, for HTTP exporters.
    fn auth_id(&self) -> Option<&str> {
        let auth = match self {
            ExporterConfig::Otlp(c) | ExporterConfig::OtlpHttp(c) => c.auth.as_ref(),
            ExporterConfig::Loki(c) => c.auth.as_ref(),
            ExporterConfig::PrometheusRemoteWrite(c) => c.auth.as_ref(),
            ExporterConfig::Kafka(_) | ExporterConfig::Debug(_) => None,
        };
        auth.map(|a| a.authenticator.as_str())
    }

    /// Fills in the credentials of the extension `auth.authenticator` names, so that the
    /// exporter can be built (and compared: a changed extension is a changed exporter).
    pub fn resolve_auth(&mut self, extensions: &super::Extensions) {
        match self {
            ExporterConfig::Otlp(c) | ExporterConfig::OtlpHttp(c) => c.resolve_auth(extensions),
            ExporterConfig::Loki(c) => c.resolve_auth(extensions),
            ExporterConfig::PrometheusRemoteWrite(c) => c.resolve_auth(extensions),
            ExporterConfig::Kafka(_) | ExporterConfig::Debug(_) => {}
        }
    }

    fn sending_queue(&self) -> SendingQueueConfig {
        match self {
            ExporterConfig::Otlp(c) | ExporterConfig::OtlpHttp(c) => c.sending_queue.clone(),
            ExporterConfig::Loki(c) => c.sending_queue.clone(),
            ExporterConfig::PrometheusRemoteWrite(c) => c.sending_queue.clone(),
            ExporterConfig::Kafka(c) => c.sending_queue.clone(),
            ExporterConfig::Debug(_) => SendingQueueConfig {
                num_consumers: 1,
                ..Default::default()
            },
        }
    }

    fn retry(&self) -> retry::RetryConfig {
        match self {
            ExporterConfig::Otlp(c) | ExporterConfig::OtlpHttp(c) => c.retry_on_failure.clone(),
            ExporterConfig::Loki(c) => c.retry_on_failure.clone(),
            ExporterConfig::PrometheusRemoteWrite(c) => c.retry_on_failure.clone(),
            ExporterConfig::Kafka(c) => c.retry_on_failure.clone(),
            ExporterConfig::Debug(_) => retry::RetryConfig {
                enabled: false,
                ..Default::default()
            },
        }
    }
}

/// A built exporter.
pub enum Exporter {
    OtlpGrpc(Box<otlp::GrpcExporter>),
    OtlpHttp(Box<otlp::HttpExporter>),
    Debug(debug::DebugExporter),
    Loki(Box<loki::LokiExporter>),
    PrometheusRemoteWrite(Box<prometheus::RemoteWriteExporter>),
    #[cfg(feature = "kafka")]
    Kafka(Box<kafka::KafkaExporter>),
    /// A connector handing data to other pipelines.
    Connector(Box<crate::connectors::Connector>),
}

impl ExporterConfig {
    /// Builds the exporter for the pipeline in `cx`, with its queue and retry settings;
    /// fails when a file its validation read is gone or a client cannot be made.
    pub fn build(&self, cx: &BuildContext) -> Result<Built<Exporter>, BuildError> {
        let exporter = match self {
            ExporterConfig::Loki(c) => Exporter::Loki(Box::new(loki::LokiExporter::build(c, cx)?)),
            ExporterConfig::Otlp(c) => {
                Exporter::OtlpGrpc(Box::new(otlp::GrpcExporter::build(c, cx)?))
            }
            ExporterConfig::OtlpHttp(c) => {
                Exporter::OtlpHttp(Box::new(otlp::HttpExporter::build(c, cx)?))
            }
            ExporterConfig::Debug(c) => Exporter::Debug(debug::DebugExporter::new(c.clone())),
            ExporterConfig::PrometheusRemoteWrite(c) => Exporter::PrometheusRemoteWrite(Box::new(
                prometheus::RemoteWriteExporter::build(c, cx)?,
            )),
            #[cfg(feature = "kafka")]
            ExporterConfig::Kafka(c) => {
                Exporter::Kafka(Box::new(kafka::KafkaExporter::build(c, cx)?))
            }
            #[cfg(not(feature = "kafka"))]
            ExporterConfig::Kafka(_) => {
                return Err(cx.error("", "this sieve was built without the `kafka` feature"))
            }
        };
        Ok(Built::new(
            cx,
            exporter,
            self.sending_queue(),
            self.retry(),
            self.decodes(cx.signal),
        ))
    }
}

impl Export for Exporter {
    async fn export(&self, batch: &Batch) -> Result<Exported, ExportError> {
        match self {
            Exporter::OtlpGrpc(e) => e.export(batch).await,
            Exporter::OtlpHttp(e) => e.export(batch).await,
            Exporter::Debug(e) => e.export(batch),
            Exporter::Loki(e) => e.export(batch).await,
            Exporter::PrometheusRemoteWrite(e) => e.export(batch).await,
            #[cfg(feature = "kafka")]
            Exporter::Kafka(e) => e.export(batch).await,
            Exporter::Connector(c) => c.export(batch).await,
        }
    }
}
