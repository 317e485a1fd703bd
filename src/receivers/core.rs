//! What every receiver shares: its id, its routes to pipelines (swapped on reload) and
//! the counting of what it received, handed over, refused and dropped.

use crate::model::Batch;
use crate::queue::{Refused, Routes};
use crate::telemetry::{ReceiverLabels, ReceiverReasonLabels, RequestLabels, Telemetry};
use parking_lot::RwLock;
use std::sync::Arc;

/// Why a batch was not taken.
#[derive(Debug)]
pub enum IngestError {
    /// No pipeline takes this signal from this receiver.
    NoPipeline,
    Refused(Refused),
}

pub struct ReceiverCore {
    pub id: String,
    routes: RwLock<Arc<Routes>>,
    telemetry: Arc<Telemetry>,
}

impl ReceiverCore {
    pub fn new(id: String, routes: Arc<Routes>, telemetry: Arc<Telemetry>) -> ReceiverCore {
        ReceiverCore {
            id,
            routes: RwLock::new(routes),
            telemetry,
        }
    }

    /// Whether some pipeline takes `signal`.
    pub fn accepts(&self, signal: crate::model::Signal) -> bool {
        self.routes.read().accepts(signal)
    }

    pub fn set_routes(&self, routes: Arc<Routes>) {
        *self.routes.write() = routes;
    }

    fn labels(&self, batch: &Batch) -> ReceiverLabels {
        ReceiverLabels {
            receiver: self.id.clone(),
            signal: batch.signal().as_str().into(),
        }
    }

    fn reason_labels(&self, batch_signal: &str, reason: &str) -> ReceiverReasonLabels {
        ReceiverReasonLabels {
            receiver: self.id.clone(),
            signal: batch_signal.into(),
            reason: reason.into(),
        }
    }

    /// Counts a batch as received and hands it to the pipelines; a refusal is counted.
    pub fn ingest(&self, batch: Batch) -> Result<(), IngestError> {
        let (signal, items) = (batch.signal(), batch.items() as u64);
        self.telemetry
            .receiver_received
            .get_or_create(&self.labels(&batch))
            .inc_by(items);
        self.hand_over(batch).inspect_err(|e| {
            if let IngestError::Refused(refused) = e {
                let labels = self.reason_labels(signal.as_str(), refused.refusal.reason());
                self.telemetry
                    .receiver_refused
                    .get_or_create(&labels)
                    .inc_by(items);
            }
        })
    }

    /// Hands over a batch already counted as received (a retry after a refusal).
    pub fn hand_over(&self, batch: Batch) -> Result<(), IngestError> {
        let routes = Arc::clone(&self.routes.read());
        if !routes.accepts(batch.signal()) {
            return Err(IngestError::NoPipeline);
        }
        let (labels, items) = (self.labels(&batch), batch.items() as u64);
        routes.deliver(batch).map_err(IngestError::Refused)?;
        self.telemetry
            .receiver_accepted
            .get_or_create(&labels)
            .inc_by(items);
        Ok(())
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
    pub fn count_rejected_items(&self, signal: crate::model::Signal, reason: &str, items: usize) {
        self.telemetry
            .receiver_rejected_items
            .get_or_create(&self.reason_labels(signal.as_str(), reason))
            .inc_by(items as u64);
    }

    /// Takes what the edge check made of a request: refused items are counted, and a
    /// request with nothing acceptable is handed back as the error.
    pub fn admit(
        &self,
        checked: Result<crate::model::Admitted, crate::model::Invalid>,
    ) -> Result<crate::model::Admitted, crate::model::Invalid> {
        let rejected = match &checked {
            Ok(admitted) => admitted.rejected.as_ref(),
            Err(crate::model::Invalid::AllRefused(rejected)) => Some(rejected),
            Err(_) => None,
        };
        if let Some(r) = rejected {
            self.count_rejected_items(r.signal, r.reason, r.count);
        }
        checked
    }

    /// Counts items received and then lost without the sender being told (UDP).
    pub fn count_dropped(&self, signal: &str, reason: &str, items: usize) {
        self.telemetry
            .receiver_dropped
            .get_or_create(&self.reason_labels(signal, reason))
            .inc_by(items as u64);
    }
}
