//! What the Kafka exporter and receiver share: brokers, client id, authentication
//! (TLS, SASL PLAIN/SCRAM) in the OpenTelemetry Collector's `kafka` component shape, the
//! per-signal topic settings, and their translation into librdkafka properties
//! (<https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md>).
//!
//! librdkafka is built from the source bundled by the `rdkafka` crate (with a vendored
//! OpenSSL), behind the cargo feature `kafka` (on by default). Without the feature,
//! Kafka components still parse but fail validation with a message saying so.

use crate::config::{FieldError, Secret};
use crate::model::Signal;
use serde::Deserialize;

/// How OTLP data is written into Kafka messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The OTLP protobuf export request.
    #[default]
    OtlpProto,
    /// The OTLP/JSON export request.
    OtlpJson,
}

/// A signal's topic and encoding (`traces:`, `metrics:`, `logs:`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalTopic {
    /// The topic.
    pub topic: String,
    /// `otlp_proto` (default) or `otlp_json`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// The collector's default topic of each signal.
pub fn default_topic(signal: Signal) -> SignalTopic {
    let topic = match signal {
        Signal::Traces => "otlp_spans",
        Signal::Metrics => "otlp_metrics",
        Signal::Logs => "otlp_logs",
    };
    SignalTopic {
        topic: topic.into(),
        encoding: Encoding::OtlpProto,
    }
}

/// `auth:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// SASL credentials.
    pub sasl: Option<SaslConfig>,
    /// TLS to the brokers.
    pub tls: Option<KafkaTlsConfig>,
}

/// `auth.sasl:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// SASL user name.
    pub username: String,
    /// SASL password; use `${env:...}` or `${file:...}`.
    pub password: Secret,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
}

/// `auth.tls:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTlsConfig {
    /// Verify brokers against this PEM CA bundle (default: the system's).
    pub ca_file: Option<String>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<String>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<String>,
    /// Skip verifying the brokers' certificates (testing only).
    pub insecure_skip_verify: bool,
}

/// The connection settings both components have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection<'a> {
    pub brokers: &'a [String],
    pub client_id: &'a str,
    pub auth: &'a AuthConfig,
}

impl Connection<'_> {
    pub fn validate(&self) -> Result<(), FieldError> {
        if !cfg!(feature = "kafka") {
            return Err(FieldError::new(
                "brokers",
                "this sieve was built without the `kafka` cargo feature",
            ));
        }
        if self.brokers.is_empty() || self.brokers.iter().any(|b| b.trim().is_empty()) {
            return Err(FieldError::new("brokers", "list at least one host:port"));
        }
        if let Some(sasl) = &self.auth.sasl {
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&sasl.mechanism.as_str()) {
                return Err(FieldError::new(
                    "auth.sasl.mechanism",
                    format!(
                        "`{}` is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                        sasl.mechanism
                    ),
                ));
            }
        }
        if let Some(tls) = &self.auth.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(FieldError::new(
                    "auth.tls",
                    "cert_file and key_file go together",
                ));
            }
        }
        Ok(())
    }

    /// librdkafka properties for the connection; secrets go only into the client.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let mut properties = vec![
            ("bootstrap.servers", self.brokers.join(",")),
            ("client.id", self.client_id.to_string()),
        ];
        let tls = self.auth.tls.as_ref();
        let sasl = self.auth.sasl.as_ref();
        let protocol = match (tls.is_some(), sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        properties.push(("security.protocol", protocol.into()));
        if let Some(sasl) = sasl {
            properties.push(("sasl.mechanism", sasl.mechanism.clone()));
            properties.push(("sasl.username", sasl.username.clone()));
            properties.push(("sasl.password", sasl.password.0.clone()));
        }
        if let Some(tls) = tls {
            let files = [
                ("ssl.ca.location", &tls.ca_file),
                ("ssl.certificate.location", &tls.cert_file),
                ("ssl.key.location", &tls.key_file),
            ];
            for (key, file) in files {
                if let Some(file) = file {
                    properties.push((key, file.clone()));
                }
            }
            if tls.insecure_skip_verify {
                properties.push(("enable.ssl.certificate.verification", "false".into()));
            }
        }
        properties
    }
}

#[cfg(feature = "kafka")]
/// A librdkafka client config from properties.
pub fn client_config(properties: &[(&str, String)]) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    for (key, value) in properties {
        config.set(*key, value);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_picks_the_security_protocol() {
        let brokers = vec!["127.0.0.1:9092".to_string()];
        let auth: AuthConfig = serde_yaml::from_str(
            "sasl: {username: u, password: p, mechanism: SCRAM-SHA-512}\ntls: {ca_file: /ca.pem}",
        )
        .unwrap();
        let connection = Connection {
            brokers: &brokers,
            client_id: "sieve",
            auth: &auth,
        };
        connection.validate().unwrap();
        let properties = connection.properties();
        let get = |key: &str| {
            properties
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("ssl.ca.location"), Some("/ca.pem"));
        assert!(
            !format!("{auth:?}").contains("password: \"p\""),
            "secrets never print"
        );
    }

    #[test]
    fn bad_auth_is_named() {
        let brokers = vec!["b:9092".to_string()];
        let auth: AuthConfig =
            serde_yaml::from_str("sasl: {username: u, password: p, mechanism: GSSAPI}").unwrap();
        let error = Connection {
            brokers: &brokers,
            client_id: "sieve",
            auth: &auth,
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.key, "auth.sasl.mechanism");
    }
}
