//! The running side of `spanmetrics`: spans are added to the aggregator as the
//! upstream pipeline hands them over; a task flushes the metrics downstream every
//! `metrics_flush_interval`, and once more when the connector goes (reload or stop).
//! A flush that downstream keeps refusing until the next one is due is dropped and
//! counted (with cumulative temporality the next flush carries its totals).

use super::{hand_on, Downstream};
use crate::connectors::spanmetrics::{Aggregator, SpanMetricsConfig};
use crate::model::Batch;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::{Arc, OnceLock, Weak};
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

/// One running `spanmetrics` connector, shared by every pipeline exporting to it (the
/// collector builds one instance per connector id and signal pair): spans from all of
/// them add up in one aggregator, so each series has one identity downstream. A
/// pipeline rebuilt by a reload that keeps the connector's config joins the running one.
pub struct SpanMetrics(Arc<Running>);

struct Running {
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

/// The running connectors by id and config, while some pipeline holds them.
static RUNNING: Mutex<Vec<(String, SpanMetricsConfig, Weak<Running>)>> = Mutex::new(Vec::new());

impl SpanMetrics {
    /// The running connector `id` with `config`, or a new one (its counters made by
    /// `counters`), and where it hands metrics on.
    pub fn shared(
        id: &str,
        config: &SpanMetricsConfig,
        counters: impl FnOnce() -> Counters,
    ) -> (SpanMetrics, Arc<Downstream>) {
        let mut running = RUNNING.lock();
        running.retain(|(_, _, held)| held.strong_count() > 0);
        let found = running
            .iter()
            .find(|(name, same, _)| name == id && same == config)
            .and_then(|(_, _, held)| held.upgrade());
        if let Some(found) = found {
            let downstream = Arc::clone(&found.shared.downstream);
            return (SpanMetrics(found), downstream);
        }
        let downstream = Arc::new(Downstream::default());
        let new = Arc::new(Running {
            shared: Arc::new(Shared {
                aggregator: Mutex::new(Aggregator::new(config)),
                downstream: Arc::clone(&downstream),
                counters: counters(),
                stop: Notify::new(),
            }),
            interval: config.flush_interval(),
            started: OnceLock::new(),
        });
        running.push((id.to_string(), config.clone(), Arc::downgrade(&new)));
        (SpanMetrics(new), downstream)
    }

    /// Adds a batch's spans (starting the flush task the first time).
    pub fn add(&self, batch: &Batch) {
        let running = &self.0;
        running.started.get_or_init(|| {
            tokio::spawn(flush_every(Arc::clone(&running.shared), running.interval));
        });
        let shared = &running.shared;
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

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.stop.notify_one();
    }
}

async fn flush_every(shared: Arc<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => flush(&shared, interval, Aggregator::flush).await,
            _ = shared.stop.notified() => {
                flush(&shared, LAST_FLUSH_PATIENCE, Aggregator::flush_last).await;
                return;
            }
        }
    }
}

/// Sends what the aggregator's `take` has now, waiting at most `patience` for room.
async fn flush(
    shared: &Shared,
    patience: Duration,
    take: fn(&mut Aggregator, u64) -> Option<Batch>,
) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let flushed = {
        let mut aggregator = shared.aggregator.lock();
        let flushed = take(&mut aggregator, now);
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
        .await
        .into_iter()
        .map(|name| (name, batch.clone()))
        .collect();
    match tokio::time::timeout(patience, hand_on(&shared.downstream, parts)).await {
        Ok(0) => {}
        Ok(gone) => {
            shared.counters.dropped_points.inc_by(gone as u64);
        }
        Err(_) => {
            tracing::warn!(
                points,
                "spanmetrics: downstream refused a flush until the next was due; dropped (counted)"
            );
            shared.counters.dropped_points.inc_by(points as u64);
        }
    }
}
