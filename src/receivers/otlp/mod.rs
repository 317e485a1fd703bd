//! `otlp` receiver: OTLP/gRPC and OTLP/HTTP (protobuf and JSON), per the OTLP
//! specification (opentelemetry-proto `docs/specification.md`).
//!
//! * gRPC: the three `Export` services on one HTTP/2 listener, framed by [`crate::grpc`].
//! * HTTP: `POST` to `/v1/traces`, `/v1/metrics`, `/v1/logs` (configurable), bodies in
//!   `application/x-protobuf` or `application/json`.
//! * `gzip`, `zstd` and `deflate` bodies; size limits apply to the bytes received and to
//!   the decompressed size, so a compression bomb is refused without being inflated.
//! * Protobuf requests are not decoded: they pass the edge check
//!   ([`crate::model::validate`]: what is accepted decodes; undecodable items are refused
//!   one by one through `partial_success`) and are carried encoded. JSON requests are
//!   transcoded to protobuf in one streaming pass (see [`json`]) and checked the same way.
//! * Request bytes in flight are bounded across connections (`max_in_flight_mib`, see
//!   [`crate::receivers::budget`]).
//! * Responses follow the spec: success (with `partial_success` when items were
//!   rejected), `INVALID_ARGUMENT`/400 for malformed data, `RESOURCE_EXHAUSTED`/413 for
//!   oversized data, `UNAVAILABLE`/503 with a retry delay when a pipeline refuses.
//!
//! * TLS per protocol (`tls:` with the collector's option names), mutual TLS with
//!   `client_ca_file`; failed handshakes are counted as rejected requests
//!   (`reason="tls_handshake"`).
//! * Connection limits per protocol, with the behaviour described in [`crate::net`]:
//!   `max_connections`, `max_connections_per_source` (so one address holding stalled
//!   connections cannot lock the others out), `read_header_timeout` and
//!   `max_concurrent_streams`.
//!
//! Settings, admissions (TLS, connection limit) and routes live behind swappable `Arc`s so
//! a reload changes them without re-binding a listener whose address did not change.

mod config;
mod grpc;
mod http;
pub mod json;

pub use config::{AuthConfig, GrpcServerConfig, HttpServerConfig, OtlpReceiverConfig, Protocols};

use super::budget::Budget;
use super::core::ReceiverCore;
use crate::auth::Authenticator;
use crate::model::{Rejected, Signal};
use crate::net::parse_address;
use crate::net::{self, Admission, Handover, Server};
use crate::queue::Routes;
use crate::receivers::core::request_metadata;
use crate::receivers::tenants::TenantLimits;
use crate::telemetry::Telemetry;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use parking_lot::RwLock;
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long clients are asked to wait after a refusal.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The server authenticators of the two protocols, built from the extensions their
/// `auth.authenticator` names.
#[derive(Clone, Default)]
pub struct ProtocolAuth {
    pub grpc: Option<Arc<Authenticator>>,
    pub http: Option<Arc<Authenticator>>,
}

/// The metadata entry `include_metadata` adds for who a request authenticated as (a
/// client's own header of that name is replaced).
pub const AUTH_SUBJECT: &str = "auth.subject";

/// A request's tenant and the limits it is held to.
struct Tenant {
    limits: Arc<TenantLimits>,
    name: String,
}

/// What both protocol handlers share.
struct Shared {
    core: ReceiverCore,
    config: RwLock<Arc<OtlpReceiverConfig>>,
    budget: RwLock<Budget>,
    auth: RwLock<ProtocolAuth>,
    tenant_limits: RwLock<Option<Arc<TenantLimits>>>,
}

impl Shared {
    /// What a request says about itself, read from its headers before the body (which
    /// consumes the request) once its identity is known: the metadata kept with its data
    /// (`include_metadata`), and its tenant for `tenant_limits`. With `bind_tenant`, the
    /// tenant entry is the identity's, whatever header the client sent.
    fn request_context(
        &self,
        include_metadata: bool,
        headers: &hyper::HeaderMap,
        identity: &crate::auth::Identity,
    ) -> (Option<crate::model::Metadata>, Option<Tenant>) {
        let config = self.config();
        let bound = config.bind_tenant.as_ref().map(|b| {
            (
                b.metadata_key.to_ascii_lowercase(),
                b.tenant_of(identity.as_deref()),
            )
        });
        let kept = include_metadata.then(|| {
            let headers = request_metadata(headers);
            match identity {
                Some(subject) => crate::model::Metadata::from_pairs(
                    headers
                        .pairs()
                        .iter()
                        .filter(|(name, _)| name != AUTH_SUBJECT)
                        .cloned()
                        .chain([(AUTH_SUBJECT.to_string(), subject.clone())]),
                ),
                None => headers,
            }
        });
        let metadata = match &bound {
            None => kept,
            Some((key, tenant)) => {
                let others = kept
                    .iter()
                    .flat_map(|m| m.pairs())
                    .filter(|(name, _)| name != key)
                    .cloned();
                let own = tenant.clone().map(|t| (key.clone(), t));
                Some(crate::model::Metadata::from_pairs(others.chain(own)))
            }
        };
        let tenant = self.tenant_limits.read().clone().map(|limits| {
            let bound = bound.as_ref().map(|(k, t)| (k.as_str(), t.as_deref()));
            let name = limits.tenant_of(headers, bound);
            Tenant { limits, name }
        });
        (metadata, tenant)
    }

    /// Whether `tenant` may bring `admitted`'s items (`bytes` uncompressed) now; a
    /// refusal is counted in the receiver's books.
    fn within_tenant_limits(
        &self,
        tenant: Option<&Tenant>,
        admitted: &Result<crate::model::Admitted, crate::model::Invalid>,
        bytes: usize,
    ) -> bool {
        let (Some(tenant), Ok(admitted)) = (tenant, admitted) else {
            return true;
        };
        let (signal, items) = (admitted.batch.signal(), admitted.batch.items());
        let allowed = tenant.limits.admit(&tenant.name, items, bytes);
        if !allowed {
            self.core.count_tenant_refusal(signal, items);
        }
        allowed
    }

    /// Builds the tenant limits of `config`, keeping the buckets when they did not change.
    fn set_tenant_limits(&self, config: &OtlpReceiverConfig) {
        let current = self.config();
        let mut limits = self.tenant_limits.write();
        if limits.is_some() && current.tenant_limits == config.tenant_limits {
            return;
        }
        *limits = config
            .tenant_limits
            .as_ref()
            .map(|c| Arc::new(TenantLimits::new(c, &self.core.id, self.core.telemetry())));
    }

    /// Checks a request's credentials when its protocol asks for them; a failure is
    /// counted and comes back with the `WWW-Authenticate` challenge. The identity is the
    /// authenticator's, else the client certificate's (mutual TLS).
    fn authenticate<B>(
        &self,
        transport: &'static str,
        request: &hyper::Request<B>,
    ) -> Result<crate::auth::Identity, (crate::auth::AuthFailure, String)> {
        let certificate = request
            .extensions()
            .get::<crate::net::PeerIdentity>()
            .map(|peer| peer.0.to_string());
        let auth = self.auth.read();
        let authenticator = match transport {
            "grpc" => auth.grpc.as_ref(),
            _ => auth.http.as_ref(),
        };
        let Some(authenticator) = authenticator else {
            return Ok(certificate);
        };
        authenticator
            .check(request.headers())
            .map(|identity| identity.or(certificate))
            .map_err(|failure| {
                self.core.count_unauthenticated(transport, failure);
                (failure, authenticator.challenge())
            })
    }

    fn config(&self) -> Arc<OtlpReceiverConfig> {
        Arc::clone(&self.config.read())
    }

    fn budget(&self) -> Budget {
        self.budget.read().clone()
    }

    /// Swaps in a config; a new budget only when its size changed (requests in flight
    /// keep what they reserved from the old one).
    fn set_config(&self, config: OtlpReceiverConfig) {
        if config.max_in_flight_mib != self.config().max_in_flight_mib {
            *self.budget.write() = Budget::new(config.in_flight_bytes());
        }
        *self.config.write() = Arc::new(config);
    }
}

/// A protocol listener's admission, its refusals counted for `transport`.
fn admission(shared: &Arc<Shared>, transport: &'static str) -> Arc<Admission> {
    let counted = Arc::clone(shared);
    Arc::new(Admission {
        tls: RwLock::new(None),
        limits: RwLock::new(crate::net::Limits {
            max_connections: 0,
            max_connections_per_source: 0,
            read_header_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1,
        }),
        on_refused: Box::new(move |reason| counted.core.count_rejected(transport, reason)),
    })
}

/// Sets an admission from a protocol's settings (a protocol not served keeps its last).
fn admit(admission: &Admission, tls: Option<TlsAcceptor>, limits: Option<crate::net::Limits>) {
    *admission.tls.write() = tls;
    if let Some(limits) = limits {
        *admission.limits.write() = limits;
    }
}

/// Listeners bound (and TLS files loaded) for a new or changed config, not yet serving.
pub struct Prepared {
    config: OtlpReceiverConfig,
    auth: ProtocolAuth,
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    grpc_tls: Option<TlsAcceptor>,
    http_tls: Option<TlsAcceptor>,
}

/// Loads a protocol's TLS files; the error names the receiver, the key and the file.
fn load_tls(
    id: &str,
    protocol: &str,
    tls: Option<&crate::tls::TlsServerConfig>,
) -> std::io::Result<Option<TlsAcceptor>> {
    tls.map(|tls| {
        crate::tls::http_acceptor(tls).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("receiver {id}: protocols.{protocol}.tls: {e}"),
            )
        })
    })
    .transpose()
}

fn load_tls_of(
    id: &str,
    config: &OtlpReceiverConfig,
) -> std::io::Result<(Option<TlsAcceptor>, Option<TlsAcceptor>)> {
    let p = &config.protocols;
    Ok((
        load_tls(id, "grpc", p.grpc.as_ref().and_then(|g| g.tls.as_ref()))?,
        load_tls(id, "http", p.http.as_ref().and_then(|h| h.tls.as_ref()))?,
    ))
}

/// A running `otlp` receiver.
pub struct OtlpReceiver {
    shared: Arc<Shared>,
    grpc: Option<Server>,
    http: Option<Server>,
    grpc_admission: Arc<Admission>,
    http_admission: Arc<Admission>,
}

pub fn grpc_addr(config: &OtlpReceiverConfig) -> Option<SocketAddr> {
    config
        .protocols
        .grpc
        .as_ref()
        .and_then(|g| parse_address(&g.endpoint).ok())
}

pub fn http_addr(config: &OtlpReceiverConfig) -> Option<SocketAddr> {
    config
        .protocols
        .http
        .as_ref()
        .and_then(|h| parse_address(&h.endpoint).ok())
}

fn bind_error(id: &str, protocol: &str, addr: SocketAddr, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("receiver {id}: cannot listen on {addr} ({protocol}): {e}"),
    )
}

impl OtlpReceiver {
    /// Binds the listeners of a new receiver (taking over sockets on offer in `handover`).
    pub fn prepare(
        id: &str,
        config: &OtlpReceiverConfig,
        handover: &Handover,
        auth: ProtocolAuth,
    ) -> std::io::Result<Prepared> {
        let bind = |protocol, addr: Option<SocketAddr>| {
            addr.map(|a| handover.tcp(a).map_err(|e| bind_error(id, protocol, a, e)))
                .transpose()
        };
        let (grpc_tls, http_tls) = load_tls_of(id, config)?;
        Ok(Prepared {
            config: config.clone(),
            auth,
            grpc: bind("grpc", grpc_addr(config))?,
            http: bind("http", http_addr(config))?,
            grpc_tls,
            http_tls,
        })
    }

    /// Binds only the listeners whose address changes under `config`.
    pub fn prepare_update(
        &self,
        config: &OtlpReceiverConfig,
        auth: ProtocolAuth,
    ) -> std::io::Result<Prepared> {
        let id = &self.shared.core.id;
        let rebind =
            |protocol, current: Option<SocketAddr>, wanted: Option<SocketAddr>| match wanted {
                Some(addr) if current != Some(addr) => net::bind(addr)
                    .map(Some)
                    .map_err(|e| bind_error(id, protocol, addr, e)),
                _ => Ok(None),
            };
        let (grpc_tls, http_tls) = load_tls_of(id, config)?;
        Ok(Prepared {
            grpc_tls,
            http_tls,
            auth,
            config: config.clone(),
            grpc: rebind(
                "grpc",
                self.grpc.as_ref().map(|s| s.addr),
                grpc_addr(config),
            )?,
            http: rebind(
                "http",
                self.http.as_ref().map(|s| s.addr),
                http_addr(config),
            )?,
        })
    }

    /// Starts serving prepared listeners.
    pub fn start(
        id: String,
        prepared: Prepared,
        routes: Arc<Routes>,
        telemetry: Arc<Telemetry>,
    ) -> OtlpReceiver {
        let shared = Arc::new(Shared {
            core: ReceiverCore::new(id, routes, telemetry),
            budget: RwLock::new(Budget::new(prepared.config.in_flight_bytes())),
            config: RwLock::new(Arc::new(prepared.config.clone())),
            auth: RwLock::new(prepared.auth.clone()),
            tenant_limits: RwLock::new(None),
        });
        shared.set_tenant_limits(&prepared.config);
        let mut receiver = OtlpReceiver {
            grpc_admission: admission(&shared, "grpc"),
            http_admission: admission(&shared, "http"),
            shared,
            grpc: None,
            http: None,
        };
        receiver.admit(&prepared);
        receiver.grpc = prepared
            .grpc
            .map(|l| grpc::serve(l, Arc::clone(&receiver.shared), &receiver.grpc_admission));
        receiver.http = prepared
            .http
            .map(|l| http::serve(l, Arc::clone(&receiver.shared), &receiver.http_admission));
        receiver
    }

    /// Sets both admissions from a prepared config.
    fn admit(&self, prepared: &Prepared) {
        let protocols = &prepared.config.protocols;
        admit(
            &self.grpc_admission,
            prepared.grpc_tls.clone(),
            protocols.grpc.as_ref().map(|g| g.limits()),
        );
        admit(
            &self.http_admission,
            prepared.http_tls.clone(),
            protocols.http.as_ref().map(|h| h.limits()),
        );
    }

    /// Applies a changed config: swaps settings, serves newly bound listeners and stops
    /// the ones no longer wanted. Unchanged listeners keep their connections.
    pub async fn update(&mut self, prepared: Prepared) {
        let wants_grpc = prepared.config.protocols.grpc.is_some();
        let wants_http = prepared.config.protocols.http.is_some();
        self.admit(&prepared);
        *self.shared.auth.write() = prepared.auth.clone();
        self.shared.set_tenant_limits(&prepared.config);
        self.shared.set_config(prepared.config);
        if let Some(listener) = prepared.grpc {
            let server = grpc::serve(listener, Arc::clone(&self.shared), &self.grpc_admission);
            if let Some(old) = self.grpc.replace(server) {
                old.stop().await;
            }
        } else if !wants_grpc {
            if let Some(old) = self.grpc.take() {
                old.stop().await;
            }
        }
        if let Some(listener) = prepared.http {
            let server = http::serve(listener, Arc::clone(&self.shared), &self.http_admission);
            if let Some(old) = self.http.replace(server) {
                old.stop().await;
            }
        } else if !wants_http {
            if let Some(old) = self.http.take() {
                old.stop().await;
            }
        }
    }

    pub fn set_routes(&self, routes: Arc<Routes>) {
        self.shared.core.set_routes(routes);
    }

    /// Offers the listening sockets to the receivers a reload starts.
    pub fn offer(&self, handover: &mut Handover) {
        self.grpc
            .iter()
            .chain(&self.http)
            .for_each(|s| s.offer(handover));
    }

    /// The addresses actually bound (useful with port 0).
    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.grpc.as_ref().map(|s| s.addr),
            self.http.as_ref().map(|s| s.addr),
        )
    }

    /// Stops accepting and waits for in-flight requests.
    pub async fn stop(self) {
        if let Some(s) = self.grpc {
            s.stop().await;
        }
        if let Some(s) = self.http {
            s.stop().await;
        }
        self.shared.core.set_routes(Arc::new(Routes::default()));
    }
}

/// The `Export*ServiceResponse` telling the client which items were rejected.
fn partial_success_protobuf(rejected: &Rejected) -> Vec<u8> {
    let (count, message) = (rejected.count as i64, rejected.message.clone());
    match rejected.signal {
        Signal::Traces => ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: count,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Signal::Metrics => ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: count,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Signal::Logs => ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: count,
                error_message: message,
            }),
        }
        .encode_to_vec(),
    }
}

/// The same response in OTLP/JSON (64-bit integers as strings).
fn partial_success_json(rejected: &Rejected) -> String {
    let field = match rejected.signal {
        Signal::Traces => "rejectedSpans",
        Signal::Metrics => "rejectedDataPoints",
        Signal::Logs => "rejectedLogRecords",
    };
    serde_json::json!({ "partialSuccess": {
        field: rejected.count.to_string(),
        "errorMessage": rejected.message,
    } })
    .to_string()
}

/// The signal served at a gRPC method path.
fn signal_for_grpc_path(path: &str) -> Option<Signal> {
    Signal::ALL.into_iter().find(|s| s.grpc_path() == path)
}
