//! What every receiver shares: its id, its routes to pipelines (swapped on reload) and
//! the counting of what it received, handed over, refused and dropped.

use crate::model::{Batch, Signal};
use crate::queue::{Refused, Routes};
use crate::telemetry::{
    ReceiverLabels, ReceiverLedger, ReceiverReasonLabels, RequestLabels, Telemetry,
};
use parking_lot::RwLock;
use std::sync::Arc;

/// Why a request was not taken.
#[derive(Debug)]
pub enum NotTaken {
    /// Nothing in it could be accepted.
    Invalid(crate::model::Invalid),
    /// The pipelines refused it (or there is none).
    Refused(IngestError),
}

/// Why a batch was not taken.
#[derive(Debug)]
pub enum IngestError {
    /// No pipeline takes this signal from this receiver.
    NoPipeline,
    Refused(Refused),
}

/// The most headers `include_metadata` keeps of one request, and the longest value kept.
pub const METADATA_HEADERS: usize = 32;
pub const METADATA_VALUE_BYTES: usize = 1024;

/// Headers never kept as metadata: credentials, and what only the transport needs.
const NOT_METADATA: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "connection",
    "te",
    "content-length",
    "content-type",
    "content-encoding",
    "accept-encoding",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-timeout",
];

/// A request's headers as metadata (`include_metadata`): every header but credentials
/// and transport ones, at most [`METADATA_HEADERS`] of them with values of at most
/// [`METADATA_VALUE_BYTES`] in valid UTF-8 (others are left out), so what is kept per
/// batch is bounded.
pub fn request_metadata(headers: &hyper::HeaderMap) -> crate::model::Metadata {
    crate::model::Metadata::from_pairs(
        headers
            .iter()
            .filter(|(name, _)| !NOT_METADATA.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                let value = value
                    .to_str()
                    .ok()
                    .filter(|v| v.len() <= METADATA_VALUE_BYTES)?;
                Some((name.as_str().to_string(), value.to_string()))
            })
            .take(METADATA_HEADERS),
    )
}

pub struct ReceiverCore {
    pub id: String,
    routes: RwLock<Arc<Routes>>,
    telemetry: Arc<Telemetry>,
    /// Per signal, in [`Signal::ALL`] order.
    ledgers: [Arc<ReceiverLedger>; 3],
    /// When an authentication failure was last logged, in seconds after `started`.
    auth_logged: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl ReceiverCore {
    pub fn new(id: String, routes: Arc<Routes>, telemetry: Arc<Telemetry>) -> ReceiverCore {
        let ledgers = Signal::ALL.map(|signal| {
            telemetry.ledgers.receiver(&ReceiverLabels {
                receiver: id.clone(),
                signal: signal.as_str().into(),
            })
        });
        ReceiverCore {
            id,
            routes: RwLock::new(routes),
            telemetry,
            ledgers,
            auth_logged: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// Counts a request refused for its credentials, and logs it at most every ten
    /// seconds (the credential itself never).
    pub fn count_unauthenticated(&self, transport: &str, failure: crate::auth::AuthFailure) {
        use std::sync::atomic::Ordering;
        let labels = RequestLabels {
            receiver: self.id.clone(),
            transport: transport.into(),
            reason: failure.reason().into(),
        };
        self.telemetry
            .family::<RequestLabels, prometheus_client::metrics::counter::Counter>(
                "receiver_unauthenticated_requests",
                "Requests refused for missing or invalid credentials",
            )
            .get_or_create(&labels)
            .inc();
        let now = self.started.elapsed().as_secs() + 10;
        let last = self.auth_logged.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .auth_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(receiver = %self.id, transport, reason = failure.reason(), "refused a request without valid credentials (logged at most every 10 s; see sieve_receiver_unauthenticated_requests_total)");
        }
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Whether some pipeline takes `signal`.
    pub fn accepts(&self, signal: Signal) -> bool {
        self.routes.read().accepts(signal)
    }

    pub fn set_routes(&self, routes: Arc<Routes>) {
        *self.routes.write() = routes;
    }

    /// The ledger of `signal` items this receiver took.
    fn ledger(&self, signal: Signal) -> Arc<ReceiverLedger> {
        Arc::clone(&self.ledgers[signal as usize])
    }

    fn reason_labels(&self, signal: &str, reason: &str) -> ReceiverReasonLabels {
        ReceiverReasonLabels {
            receiver: self.id.clone(),
            signal: signal.into(),
            reason: reason.into(),
        }
    }

    /// Hands a batch to the pipelines once; the outcome is counted (accepted, or refused
    /// with its reason). For requests whose sender is told the outcome.
    pub fn ingest(&self, batch: Batch) -> Result<(), IngestError> {
        let (signal, items) = (batch.signal(), batch.items());
        self.hand_over(batch).inspect_err(|e| {
            let reason = match e {
                IngestError::NoPipeline => "no_pipeline",
                IngestError::Refused(refused) => refused.refusal.reason(),
            };
            self.ledger(signal).refused.reason(reason).add(items);
        })
    }

    /// One attempt to hand a batch to the pipelines; only success is counted. For
    /// receivers that retry a refused batch themselves: they count the outcome once, as
    /// accepted here or with [`ReceiverCore::count_dropped`] when they give up.
    pub fn hand_over(&self, batch: Batch) -> Result<(), IngestError> {
        let routes = Arc::clone(&self.routes.read());
        if !routes.accepts(batch.signal()) {
            return Err(IngestError::NoPipeline);
        }
        let (signal, items) = (batch.signal(), batch.items());
        routes.deliver(batch).map_err(IngestError::Refused)?;
        self.ledger(signal).accepted.add(items);
        Ok(())
    }

    /// Whether a request of `signal` would be refused now whatever it holds; if so, it is
    /// counted (by request: its items are never read) and the refusal returned, for the
    /// receiver to answer before reading the body.
    pub fn refuse_unread(&self, signal: Signal, transport: &str) -> Option<crate::queue::Refusal> {
        let refusal = self.routes.read().refuses_now(signal)?;
        let labels = RequestLabels {
            receiver: self.id.clone(),
            transport: transport.into(),
            reason: refusal.reason().into(),
        };
        self.telemetry
            .receiver_refused_unread_requests
            .get_or_create(&labels)
            .inc();
        Some(refusal)
    }

    /// Counts a request or message rejected before its items could be counted.
    pub fn count_rejected(&self, transport: &str, reason: &str) {
        let labels = RequestLabels {
            receiver: self.id.clone(),
            transport: transport.into(),
            reason: reason.into(),
        };
        self.telemetry
            .receiver_rejected_requests
            .get_or_create(&labels)
            .inc();
    }

    /// Counts items refused as undecodable, from a request whose other items may have been
    /// accepted.
    pub fn count_rejected_items(&self, signal: Signal, reason: &str, items: usize) {
        self.telemetry
            .receiver_rejected_items
            .get_or_create(&self.reason_labels(signal.as_str(), reason))
            .inc_by(items as u64);
    }

    /// Takes what the edge check made of a request and hands its items to the pipelines.
    /// Refused items are counted once the outcome is final: when the rest was accepted,
    /// or when nothing was acceptable (a refusal the client retries counts them later).
    pub fn admit(
        &self,
        checked: Result<crate::model::Admitted, crate::model::Invalid>,
    ) -> Result<Option<crate::model::Rejected>, NotTaken> {
        let admitted = checked.map_err(|invalid| {
            if let crate::model::Invalid::AllRefused(r) = &invalid {
                self.count_rejected_items(r.signal, r.reason, r.count);
            }
            NotTaken::Invalid(invalid)
        })?;
        self.ingest(admitted.batch).map_err(NotTaken::Refused)?;
        if let Some(r) = &admitted.rejected {
            self.count_rejected_items(r.signal, r.reason, r.count);
        }
        Ok(admitted.rejected)
    }

    /// Counts a request's items refused (retryably) because its tenant is over its
    /// `tenant_limits`.
    pub fn count_tenant_refusal(&self, signal: Signal, items: usize) {
        self.ledger(signal)
            .refused
            .reason("tenant_limit")
            .add(items);
    }

    /// Counts items received and then lost without the sender being told (UDP, or a
    /// batch a receiver gave up retrying): refused, and dropped with the same reason.
    pub fn count_dropped(&self, signal: Signal, reason: &str, items: usize) {
        self.ledger(signal).refused.reason(reason).add(items);
        self.telemetry
            .receiver_dropped
            .get_or_create(&self.reason_labels(signal.as_str(), reason))
            .inc_by(items as u64);
    }
}
