//! The receivers sieve has: the `receivers:` section's config enum, and the dispatch
//! from it to each receiver's preparation (binding its listeners: the receiver's build)
//! and to the running receiver's updates. A receiver is added here and nowhere else
//! outside its own folder.

use crate::build::BuildError;
use crate::components::ExtensionConfig;
use crate::config::{or_default, ComponentConfig, ComponentId, ExtensionReference, FieldError};
use crate::model::Signal;
use crate::net::Handover;
use crate::queue::Routes;
#[cfg(feature = "kafka")]
use crate::receivers::kafka::{self, KafkaReceiver};
use crate::receivers::otlp::{self, OtlpReceiver};
use crate::receivers::syslog::{self, SyslogReceiver};
use crate::telemetry::Telemetry;
use serde::Deserializer;
use std::net::SocketAddr;
use std::sync::Arc;

/// The `receivers:` section, tagged by component type.
#[derive(Clone, Debug, PartialEq)]
pub enum ReceiverConfig {
    Otlp(Box<crate::receivers::otlp::OtlpReceiverConfig>),
    Syslog(crate::receivers::syslog::SyslogReceiverConfig),
    Kafka(Box<crate::receivers::kafka::KafkaReceiverConfig>),
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
            "otlp" => or_default(d).map(|c| ReceiverConfig::Otlp(Box::new(c))),
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

    fn extension_references(&self) -> Vec<ExtensionReference> {
        let ReceiverConfig::Otlp(c) = self else {
            return Vec::new();
        };
        let protocols = &c.protocols;
        [
            (
                "protocols.grpc.auth.authenticator",
                protocols.grpc.as_ref().and_then(|g| g.auth.as_ref()),
            ),
            (
                "protocols.http.auth.authenticator",
                protocols.http.as_ref().and_then(|h| h.auth.as_ref()),
            ),
        ]
        .into_iter()
        .filter_map(|(key, auth)| {
            auth.map(|a| ExtensionReference {
                key,
                id: a.authenticator.clone(),
                role: "server_auth",
            })
        })
        .collect()
    }
}

/// The extensions of a configuration, by id.
pub type Extensions = std::collections::BTreeMap<ComponentId, ExtensionConfig>;

/// Builds the server authenticators an `otlp` receiver's protocols name.
fn otlp_auth(
    name: &str,
    config: &otlp::OtlpReceiverConfig,
    extensions: &Extensions,
) -> Result<otlp::ProtocolAuth, BuildError> {
    let build = |key: &str, auth: Option<&otlp::AuthConfig>| {
        auth.map(|a| {
            let extension = ComponentId::parse(&a.authenticator)
                .ok()
                .and_then(|id| extensions.get(&id))
                .and_then(ExtensionConfig::server_authenticator)
                .ok_or_else(|| BuildError::new(name, key, "not a server authenticator"))?;
            extension
                .map(std::sync::Arc::new)
                .map_err(|e| BuildError::new(name, key, e))
        })
        .transpose()
    };
    let protocols = &config.protocols;
    Ok(otlp::ProtocolAuth {
        grpc: build(
            "protocols.grpc.auth",
            protocols.grpc.as_ref().and_then(|g| g.auth.as_ref()),
        )?,
        http: build(
            "protocols.http.auth",
            protocols.http.as_ref().and_then(|h| h.auth.as_ref()),
        )?,
    })
}

/// A started receiver.
pub enum RunningReceiver {
    Otlp(OtlpReceiver),
    Syslog(SyslogReceiver),
    #[cfg(feature = "kafka")]
    Kafka(KafkaReceiver),
}

/// Listeners bound for a receiver that is new or changes.
pub enum PreparedReceiver {
    Otlp(Box<otlp::Prepared>),
    Syslog(syslog::Prepared),
    #[cfg(feature = "kafka")]
    Kafka(kafka::Prepared),
}

impl ReceiverConfig {
    /// Listeners on a non-loopback address with neither TLS nor an authenticator: the
    /// protocol and the address. (Syslog carries no credentials: TLS with
    /// `client_ca_file` is its authentication, and UDP has neither.)
    pub fn unprotected_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let exposed = |protocol, addr: Option<SocketAddr>, protected: bool| {
            addr.filter(|a| !a.ip().is_loopback() && !protected)
                .map(|a| (protocol, a))
        };
        let listeners = match self {
            ReceiverConfig::Otlp(c) => {
                let (grpc, http) = (c.protocols.grpc.as_ref(), c.protocols.http.as_ref());
                [
                    exposed(
                        "grpc",
                        otlp::grpc_addr(c),
                        grpc.is_some_and(|g| g.tls.is_some() || g.auth.is_some()),
                    ),
                    exposed(
                        "http",
                        otlp::http_addr(c),
                        http.is_some_and(|h| h.tls.is_some() || h.auth.is_some()),
                    ),
                ]
            }
            ReceiverConfig::Syslog(c) => [
                exposed(
                    "tcp",
                    syslog::tcp_addr(c),
                    c.tcp.as_ref().is_some_and(|t| t.tls.is_some()),
                ),
                exposed("udp", syslog::udp_addr(c), false),
            ],
            ReceiverConfig::Kafka(_) => [None, None],
        };
        listeners.into_iter().flatten().collect()
    }

    /// The addresses it is configured to listen on, TCP and UDP alike (none for a
    /// receiver that connects out).
    pub fn listen_addresses(&self) -> Vec<SocketAddr> {
        let addresses = match self {
            ReceiverConfig::Otlp(c) => [otlp::grpc_addr(c), otlp::http_addr(c)],
            ReceiverConfig::Syslog(c) => [syslog::tcp_addr(c), syslog::udp_addr(c)],
            ReceiverConfig::Kafka(_) => [None, None],
        };
        addresses.into_iter().flatten().collect()
    }

    /// The receiver's build: binds its listeners (taking over a retiring receiver's
    /// socket from `handover`), starting nothing.
    pub fn prepare(
        &self,
        id: &ComponentId,
        handover: &Handover,
        extensions: &Extensions,
    ) -> Result<PreparedReceiver, BuildError> {
        let name = id.to_string();
        let failed = |e: std::io::Error| BuildError::new(&name, "", e);
        match self {
            ReceiverConfig::Otlp(c) => {
                let auth = otlp_auth(&name, c, extensions)?;
                OtlpReceiver::prepare(&name, c, handover, auth)
                    .map(|p| PreparedReceiver::Otlp(Box::new(p)))
                    .map_err(failed)
            }
            ReceiverConfig::Syslog(c) => SyslogReceiver::prepare(&name, c, handover)
                .map(PreparedReceiver::Syslog)
                .map_err(failed),
            #[cfg(feature = "kafka")]
            ReceiverConfig::Kafka(c) => KafkaReceiver::prepare(c)
                .map(PreparedReceiver::Kafka)
                .map_err(failed),
            #[cfg(not(feature = "kafka"))]
            ReceiverConfig::Kafka(_) => Err(BuildError::new(
                &name,
                "",
                "this sieve was built without the `kafka` feature",
            )),
        }
    }
}

impl RunningReceiver {
    /// Prepares the update of this running receiver `id` to `config`: binds only the
    /// listeners whose address changes.
    pub fn prepare_update(
        &self,
        id: &ComponentId,
        config: &ReceiverConfig,
        extensions: &Extensions,
    ) -> Result<PreparedReceiver, BuildError> {
        let failed = |e: std::io::Error| BuildError::new(&id.to_string(), "", e);
        match (self, config) {
            (RunningReceiver::Otlp(r), ReceiverConfig::Otlp(c)) => {
                let auth = otlp_auth(&id.to_string(), c, extensions)?;
                r.prepare_update(c, auth)
                    .map(|p| PreparedReceiver::Otlp(Box::new(p)))
                    .map_err(failed)
            }
            (RunningReceiver::Syslog(r), ReceiverConfig::Syslog(c)) => r
                .prepare_update(c)
                .map(PreparedReceiver::Syslog)
                .map_err(failed),
            #[cfg(feature = "kafka")]
            (RunningReceiver::Kafka(_), ReceiverConfig::Kafka(c)) => KafkaReceiver::prepare(c)
                .map(PreparedReceiver::Kafka)
                .map_err(failed),
            _ => Err(BuildError::new(
                &id.to_string(),
                "",
                "a running receiver cannot change its type",
            )),
        }
    }

    pub fn start(
        id: &ComponentId,
        prepared: PreparedReceiver,
        routes: Arc<Routes>,
        telemetry: &Arc<Telemetry>,
    ) -> RunningReceiver {
        let (id, telemetry) = (id.to_string(), Arc::clone(telemetry));
        match prepared {
            PreparedReceiver::Otlp(p) => {
                RunningReceiver::Otlp(OtlpReceiver::start(id, *p, routes, telemetry))
            }
            PreparedReceiver::Syslog(p) => {
                RunningReceiver::Syslog(SyslogReceiver::start(id, p, routes, telemetry))
            }
            #[cfg(feature = "kafka")]
            PreparedReceiver::Kafka(p) => {
                RunningReceiver::Kafka(KafkaReceiver::start(id, p, routes, telemetry))
            }
        }
    }

    pub async fn update(&mut self, prepared: PreparedReceiver) {
        match (self, prepared) {
            (RunningReceiver::Otlp(r), PreparedReceiver::Otlp(p)) => r.update(*p).await,
            (RunningReceiver::Syslog(r), PreparedReceiver::Syslog(p)) => r.update(p).await,
            #[cfg(feature = "kafka")]
            (RunningReceiver::Kafka(r), PreparedReceiver::Kafka(p)) => r.update(p).await,
            _ => unreachable!("a receiver id names its type, so a running receiver keeps it"),
        }
    }

    pub fn set_routes(&self, routes: Arc<Routes>) {
        match self {
            RunningReceiver::Otlp(r) => r.set_routes(routes),
            RunningReceiver::Syslog(r) => r.set_routes(routes),
            #[cfg(feature = "kafka")]
            RunningReceiver::Kafka(r) => r.set_routes(routes),
        }
    }

    pub fn offer(&self, handover: &mut Handover) {
        match self {
            RunningReceiver::Otlp(r) => r.offer(handover),
            RunningReceiver::Syslog(r) => r.offer(handover),
            #[cfg(feature = "kafka")]
            RunningReceiver::Kafka(_) => {}
        }
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        match self {
            RunningReceiver::Otlp(r) => {
                let (grpc, http) = r.addresses();
                grpc.into_iter().chain(http).collect()
            }
            RunningReceiver::Syslog(r) => r.addresses(),
            #[cfg(feature = "kafka")]
            RunningReceiver::Kafka(_) => Vec::new(),
        }
    }

    pub async fn stop(self) {
        match self {
            RunningReceiver::Otlp(r) => r.stop().await,
            RunningReceiver::Syslog(r) => r.stop().await,
            #[cfg(feature = "kafka")]
            RunningReceiver::Kafka(r) => r.stop().await,
        }
    }
}
