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

use crate::exporters::{Export, ExportError, Exported};
use crate::model::Batch;
use crate::queue::PipelineInput;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::time::Duration;

/// The pipelines a connector hands data to, by pipeline id.
#[derive(Default)]
pub struct Downstream(RwLock<Vec<(String, Arc<PipelineInput>)>>);

impl Downstream {
    /// Points the connector at `targets` (pipeline id, its queue).
    pub fn set(&self, targets: Vec<(String, Arc<PipelineInput>)>) {
        *self.0.write() = targets;
    }

    fn input(&self, pipeline: &str) -> Option<Arc<PipelineInput>> {
        let targets = self.0.read();
        let found = targets.iter().find(|(name, _)| name == pipeline);
        found.map(|(_, input)| Arc::clone(input))
    }

    fn names(&self) -> Vec<String> {
        self.0.read().iter().map(|(name, _)| name.clone()).collect()
    }
}

/// The longest wait between two offers to a downstream queue that refuses.
const MOST_PATIENT: Duration = Duration::from_millis(100);

/// Hands each part to its pipeline, offering again after a growing wait (1 ms doubling
/// up to [`MOST_PATIENT`]) while a queue refuses; a part stops being offered once its
/// pipeline takes it. Returns the items of parts whose pipeline is no longer downstream
/// (a reload removed it), which are dropped.
async fn hand_on(downstream: &Downstream, mut pending: Vec<(String, Batch)>) -> usize {
    for (_, batch) in &mut pending {
        // the upstream pipeline's log record is not the downstream's: the upstream log
        // keeps the record until this send ends, then the downstream queue (and its own
        // log, if it has one) holds the data
        batch.set_record(None);
    }
    let mut wait = Duration::from_millis(1);
    let mut gone = 0;
    loop {
        let mut refused = Vec::new();
        for (pipeline, batch) in pending {
            match downstream.input(&pipeline) {
                None => gone += batch.items(),
                Some(input) if input.is_gated() => refused.push((pipeline, batch)),
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

pub mod spanmetrics_task {
    //! The running side of `spanmetrics`: spans are added to the aggregator as the
    //! upstream pipeline hands them over; a task flushes the metrics downstream every
    //! `metrics_flush_interval`, and once more when the connector goes (reload or stop).
    //! A flush that downstream keeps refusing until the next one is due is dropped and
    //! counted (with cumulative temporality the next flush carries its totals).

    use super::{hand_on, Downstream, Mutex};
    use crate::connectors::spanmetrics::{Aggregator, SpanMetricsConfig};
    use crate::model::Batch;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use tokio::sync::Notify;

    /// How long the last flush, when the connector goes, waits for room downstream.
    const LAST_FLUSH_PATIENCE: Duration = Duration::from_secs(5);

    /// The connector's own metrics.
    pub struct Counters {
        /// Live series.
        pub series: Gauge,
        /// Spans counted into an overflow series (a cardinality or memory limit).
        pub overflowed: Counter,
        /// Resources evicted when `resource_metrics_cache_size` was reached.
        pub evicted: Counter,
        /// Spans not counted: their resource has no `service.name` (as in the collector).
        pub ignored: Counter,
        /// Data points of flushes dropped because downstream refused them.
        pub dropped_points: Counter,
    }

    pub struct SpanMetrics {
        shared: Arc<Shared>,
        interval: Duration,
        started: OnceLock<()>,
    }

    struct Shared {
        aggregator: Mutex<Aggregator>,
        downstream: Arc<Downstream>,
        counters: Counters,
        stop: Notify,
    }

    impl SpanMetrics {
        pub fn new(
            config: &SpanMetricsConfig,
            downstream: Arc<Downstream>,
            counters: Counters,
        ) -> SpanMetrics {
            SpanMetrics {
                shared: Arc::new(Shared {
                    aggregator: Mutex::new(Aggregator::new(config)),
                    downstream,
                    counters,
                    stop: Notify::new(),
                }),
                interval: config.flush_interval(),
                started: OnceLock::new(),
            }
        }

        /// Adds a batch's spans (starting the flush task the first time).
        pub fn add(&self, batch: &Batch) {
            self.started.get_or_init(|| {
                tokio::spawn(flush_every(Arc::clone(&self.shared), self.interval));
            });
            let shared = &self.shared;
            let mut aggregator = shared.aggregator.lock();
            aggregator.add(batch);
            shared
                .counters
                .overflowed
                .inc_by(aggregator.take_overflowed());
            shared.counters.evicted.inc_by(aggregator.take_evicted());
            shared.counters.ignored.inc_by(aggregator.take_ignored());
            shared.counters.series.set(aggregator.series() as i64);
        }
    }

    impl Drop for SpanMetrics {
        fn drop(&mut self) {
            self.shared.stop.notify_one();
        }
    }

    async fn flush_every(shared: Arc<Shared>, interval: Duration) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = ticks.tick() => flush(&shared, interval).await,
                _ = shared.stop.notified() => {
                    flush(&shared, LAST_FLUSH_PATIENCE).await;
                    return;
                }
            }
        }
    }

    /// Sends what the aggregator has now, waiting at most `patience` for room.
    async fn flush(shared: &Shared, patience: Duration) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let flushed = {
            let mut aggregator = shared.aggregator.lock();
            let flushed = aggregator.flush(now);
            shared.counters.series.set(aggregator.series() as i64);
            flushed
        };
        let Some(batch) = flushed else {
            return;
        };
        let points = batch.items();
        let parts = shared
            .downstream
            .names()
            .into_iter()
            .map(|name| (name, batch.clone()))
            .collect();
        match tokio::time::timeout(patience, hand_on(&shared.downstream, parts)).await {
            Ok(0) => {}
            Ok(gone) => {
                shared.counters.dropped_points.inc_by(gone as u64);
            }
            Err(_) => {
                tracing::warn!(points, "spanmetrics: downstream refused a flush until the next was due; dropped (counted)");
                shared.counters.dropped_points.inc_by(points as u64);
            }
        }
    }
}
