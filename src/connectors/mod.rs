//! Connectors: components that are an exporter of one pipeline and a receiver of others
//! (the collector's `connectors:` section) — `forward`, `routing` and `spanmetrics`.
//!
//! A connector runs as an exporter of each pipeline listing it under `exporters`, with
//! that exporter's queue and task: the pipeline's worker hands it batches and waits for
//! room in its queue like for any exporter. Its send hands data to the pipelines
//! downstream (those listing it under `receivers`) through their pipeline queues, as a
//! receiver does. A downstream queue that refuses (full, or its memory limiter over its
//! limit) is offered the data again after a short wait, without end: the connector's
//! queue fills, then the upstream pipeline's, and the upstream receivers refuse their
//! clients. Data crossing a connector is never dropped for lack of room. Each downstream
//! pipeline takes its part once, even when another refuses and the send waits.
//!
//! Which pipelines are downstream is set by the topology ([`Downstream::set`]) after
//! every start and reload, so a rebuilt downstream pipeline takes over from the one it
//! replaces, which drains once no connector or receiver holds its queue any longer.
//! Validation (`config::connections`) rejects connectors used on one side only, signal
//! pairs a connector does not support, and cycles.

pub mod routing;
pub mod spanmetrics;
pub mod spanmetrics_task;

use crate::exporters::{Export, ExportError, Exported};
use crate::model::Batch;
use crate::queue::PipelineInput;
use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The pipelines a connector hands data to, by pipeline id. Until the topology first
/// points it at them, a send waits (a new pipeline starts just before its connectors
/// are pointed).
pub struct Downstream {
    targets: RwLock<Vec<(String, Arc<PipelineInput>)>>,
    pointed: watch::Sender<bool>,
}

impl Default for Downstream {
    fn default() -> Self {
        Downstream {
            targets: RwLock::default(),
            pointed: watch::Sender::new(false),
        }
    }
}

impl Downstream {
    /// Points the connector at `targets` (pipeline id, its queue).
    pub fn set(&self, targets: Vec<(String, Arc<PipelineInput>)>) {
        *self.targets.write() = targets;
        self.pointed.send_replace(true);
    }

    /// Waits until the topology has pointed the connector.
    async fn pointed(&self) {
        let mut pointed = self.pointed.subscribe();
        // the sender lives as long as `self`
        let _ = pointed.wait_for(|p| *p).await;
    }

    fn input(&self, pipeline: &str) -> Option<Arc<PipelineInput>> {
        let targets = self.targets.read();
        let found = targets.iter().find(|(name, _)| name == pipeline);
        found.map(|(_, input)| Arc::clone(input))
    }

    async fn names(&self) -> Vec<String> {
        self.pointed().await;
        self.targets
            .read()
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The longest wait between two offers to a downstream queue that refuses.
const MOST_PATIENT: Duration = Duration::from_millis(100);

/// Hands each part to its pipeline, offering again after a growing wait (1 ms doubling
/// up to [`MOST_PATIENT`]) while a queue refuses; a part stops being offered once its
/// pipeline takes it. Returns the items of parts whose pipeline is no longer downstream
/// (a reload removed it), which are dropped.
pub(crate) async fn hand_on(downstream: &Downstream, mut pending: Vec<(String, Batch)>) -> usize {
    for (_, batch) in &mut pending {
        // the upstream pipeline's log record is not the downstream's: the upstream log
        // keeps the record until this send ends, then the downstream queue (and its own
        // log, if it has one) holds the data
        batch.set_record(None);
    }
    downstream.pointed().await;
    let mut wait = Duration::from_millis(1);
    let mut gone = 0;
    loop {
        let mut refused = Vec::new();
        for (pipeline, batch) in pending {
            match downstream.input(&pipeline) {
                None => gone += batch.items(),
                // a queue that would refuse anything is not offered to (an offer would
                // count a refusal every time round)
                Some(input) if input.refuses_now().is_some() => refused.push((pipeline, batch)),
                Some(input) => {
                    if let Err((_, back)) = input.offer(batch) {
                        refused.push((pipeline, back));
                    }
                }
            }
        }
        if refused.is_empty() {
            return gone;
        }
        pending = refused;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MOST_PATIENT);
    }
}

/// What a send reports: items for pipelines no longer there are dropped as `unrouted`.
fn handed_on(unrouted: usize) -> Exported {
    Exported {
        discarded: (unrouted > 0).then_some(("unrouted", unrouted as u64)),
        ..Exported::default()
    }
}

/// `forward`: every batch to every downstream pipeline.
pub struct Forward {
    pub downstream: Arc<Downstream>,
}

/// `routing`: each item to the pipelines of the route it matches.
pub struct Routing {
    pub downstream: Arc<Downstream>,
    pub router: routing::Router,
}

/// A built connector, running as an exporter of one pipeline.
pub enum Connector {
    Forward(Forward),
    Routing(Routing),
    SpanMetrics(spanmetrics_task::SpanMetrics),
}

impl Export for Connector {
    async fn export(&self, batch: &Batch) -> Result<Exported, ExportError> {
        match self {
            Connector::Forward(forward) => {
                let parts = forward
                    .downstream
                    .names()
                    .await
                    .into_iter()
                    .map(|name| (name, batch.clone()))
                    .collect();
                Ok(handed_on(hand_on(&forward.downstream, parts).await))
            }
            Connector::Routing(routing) => {
                let routed = routing.router.route(batch.clone());
                let gone = hand_on(&routing.downstream, routed.parts).await;
                Ok(handed_on(routed.unrouted + gone))
            }
            Connector::SpanMetrics(spanmetrics) => {
                spanmetrics.add(batch);
                Ok(Exported::default())
            }
        }
    }
}
