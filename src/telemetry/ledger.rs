//! Item accounting that adds up at every scrape.
//!
//! Each receiver, pipeline and exporter keeps a ledger of monotonic counts of items
//! passing the points where they change hands. What sits between two points — items
//! waiting in a queue, held by processors, or being sent (including waits between
//! retries) — is not counted separately but derived from the counts at scrape time, so
//! every scrape satisfies, per component, exactly:
//!
//! * receiver: `received = accepted + refused{reason}`
//! * pipeline: `accepted = emitted + dropped{reason} + queued + held`
//! * exporter: `enqueued = sent + dropped{reason} + queued + in_flight`
//!
//! A ledger is written in the direction items flow (a batch is counted as dequeued
//! before it is counted as sent) and read against it (sent before dequeued before
//! enqueued), so the derived gauges are never negative even though the counts are read
//! one at a time while items move.
//!
//! Ledgers live as long as the process, keyed by their labels, so a pipeline that a
//! reload rebuilds keeps counting where the old one stopped (while the old one drains,
//! both write to it).

use super::{
    ExporterLabels, ExporterReasonLabels, PipelineLabels, PipelineReasonLabels, ReceiverLabels,
    ReceiverReasonLabels,
};
use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One count, handed to the component that increments it.
#[derive(Clone, Debug, Default)]
pub struct Count(Arc<AtomicU64>);

impl Count {
    /// Release and acquire: a scrape that sees a count sees every count written before
    /// it, which reading against the flow relies on.
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Counts by `reason`, created on first use.
#[derive(Debug, Default)]
pub struct ByReason(RwLock<Vec<(String, Count)>>);

impl ByReason {
    /// The count for `reason` (a handle to keep: looking it up takes a lock).
    pub fn reason(&self, reason: &str) -> Count {
        if let Some((_, count)) = self.0.read().iter().find(|(r, _)| r == reason) {
            return count.clone();
        }
        let mut all = self.0.write();
        if let Some((_, count)) = all.iter().find(|(r, _)| r == reason) {
            return count.clone();
        }
        let count = Count::default();
        all.push((reason.to_string(), count.clone()));
        count
    }

    fn read(&self) -> Vec<(String, u64)> {
        self.0
            .read()
            .iter()
            .map(|(reason, count)| (reason.clone(), count.get()))
            .collect()
    }
}

/// What a receiver took in: `received` is `accepted` plus `refused`.
#[derive(Debug, Default)]
pub struct ReceiverLedger {
    pub accepted: Count,
    /// Items the sender was told to send again (or, for UDP, lost and counted).
    pub refused: ByReason,
}

/// A pipeline's items: offered to its queue (and accepted unless they bounced off it),
/// dequeued by its worker, emitted to its exporters or dropped. `offered` is counted
/// before a batch is put on the queue, so the worker can never count it as dequeued
/// first.
#[derive(Debug, Default)]
pub struct PipelineLedger {
    pub offered: Count,
    /// Offered and refused (queue full, pipeline closing).
    pub bounced: Count,
    pub dequeued: Count,
    pub emitted: Count,
    pub dropped: ByReason,
}

/// An exporter's items: enqueued, dequeued by a sender, then sent or dropped.
#[derive(Debug, Default)]
pub struct ExporterLedger {
    pub enqueued: Count,
    pub dequeued: Count,
    pub sent: Count,
    pub dropped: ByReason,
}

/// Every ledger, by labels.
#[derive(Debug, Default)]
pub struct Ledgers {
    receivers: Mutex<Vec<(ReceiverLabels, Arc<ReceiverLedger>)>>,
    pipelines: Mutex<Vec<(PipelineLabels, Arc<PipelineLedger>)>>,
    exporters: Mutex<Vec<(ExporterLabels, Arc<ExporterLedger>)>>,
}

fn get_or_create<L: PartialEq + Clone, T: Default>(
    all: &Mutex<Vec<(L, Arc<T>)>>,
    labels: &L,
) -> Arc<T> {
    let mut all = all.lock();
    if let Some((_, ledger)) = all.iter().find(|(l, _)| l == labels) {
        return Arc::clone(ledger);
    }
    let ledger = Arc::new(T::default());
    all.push((labels.clone(), Arc::clone(&ledger)));
    ledger
}

impl Ledgers {
    pub fn receiver(&self, labels: &ReceiverLabels) -> Arc<ReceiverLedger> {
        get_or_create(&self.receivers, labels)
    }

    pub fn pipeline(&self, labels: &PipelineLabels) -> Arc<PipelineLedger> {
        get_or_create(&self.pipelines, labels)
    }

    pub fn exporter(&self, labels: &ExporterLabels) -> Arc<ExporterLedger> {
        get_or_create(&self.exporters, labels)
    }
}

/// A label set and the same set with a `reason` added.
pub trait Reasoned: EncodeLabelSet + Clone + std::fmt::Debug {
    type WithReason: EncodeLabelSet;
    fn with_reason(&self, reason: String) -> Self::WithReason;
}

impl Reasoned for ReceiverLabels {
    type WithReason = ReceiverReasonLabels;
    fn with_reason(&self, reason: String) -> ReceiverReasonLabels {
        ReceiverReasonLabels {
            receiver: self.receiver.clone(),
            signal: self.signal.clone(),
            reason,
        }
    }
}

impl Reasoned for PipelineLabels {
    type WithReason = PipelineReasonLabels;
    fn with_reason(&self, reason: String) -> PipelineReasonLabels {
        PipelineReasonLabels {
            pipeline: self.pipeline.clone(),
            reason,
        }
    }
}

impl Reasoned for ExporterLabels {
    type WithReason = ExporterReasonLabels;
    fn with_reason(&self, reason: String) -> ExporterReasonLabels {
        ExporterReasonLabels {
            exporter: self.exporter.clone(),
            pipeline: self.pipeline.clone(),
            signal: self.signal.clone(),
            reason,
        }
    }
}

/// One metric family being encoded: its samples, then its descriptor and values.
struct Family<'a, L> {
    name: &'static str,
    help: &'static str,
    samples: Vec<(&'a L, Option<String>, u64)>,
}

impl<'a, L: Reasoned> Family<'a, L> {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: &'a L, reason: Option<String>, value: u64) {
        self.samples.push((labels, reason, value));
    }

    fn encode(self, encoder: &mut DescriptorEncoder, counter: bool) -> std::fmt::Result {
        let kind = if counter {
            ConstCounter::new(0u64).metric_type()
        } else {
            ConstGauge::new(0i64).metric_type()
        };
        let mut family = encoder.encode_descriptor(self.name, self.help, None, kind)?;
        for (labels, reason, value) in self.samples {
            let encode = |metric| {
                if counter {
                    ConstCounter::new(value).encode(metric)
                } else {
                    ConstGauge::new(value as i64).encode(metric)
                }
            };
            match reason {
                Some(reason) => {
                    let labels = labels.with_reason(reason);
                    encode(family.encode_family(&labels)?)?
                }
                None => encode(family.encode_family(labels)?)?,
            }
        }
        Ok(())
    }
}

impl Collector for LedgerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.encode_receivers(&mut encoder)?;
        self.encode_pipelines(&mut encoder)?;
        self.encode_exporters(&mut encoder)
    }
}

/// Encodes every ledger on each scrape.
#[derive(Debug)]
pub struct LedgerCollector(pub Arc<Ledgers>);

impl LedgerCollector {
    fn encode_receivers(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let all = self.0.receivers.lock();
        let mut received = Family::new("receiver_received_items", "Items in well-formed requests");
        let mut accepted = Family::new(
            "receiver_accepted_items",
            "Items accepted by every target pipeline",
        );
        let mut refused = Family::new(
            "receiver_refused_items",
            "Items refused with a retryable error (or lost and counted, for UDP)",
        );
        for (labels, ledger) in all.iter() {
            let refusals = ledger.refused.read();
            let taken = ledger.accepted.get();
            let total = taken + refusals.iter().map(|(_, n)| n).sum::<u64>();
            received.push(labels, None, total);
            accepted.push(labels, None, taken);
            for (reason, n) in refusals {
                refused.push(labels, Some(reason), n);
            }
        }
        received.encode(encoder, true)?;
        accepted.encode(encoder, true)?;
        refused.encode(encoder, true)
    }

    fn encode_pipelines(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let all = self.0.pipelines.lock();
        let mut accepted = Family::new("pipeline_accepted_items", "Items put on a pipeline queue");
        let mut emitted = Family::new(
            "pipeline_emitted_items",
            "Items a pipeline handed to its exporters",
        );
        let mut dropped = Family::new("pipeline_dropped_items", "Items accepted and then dropped");
        let mut queued = Family::new("pipeline_queued_items", "Items waiting in a pipeline queue");
        let mut held = Family::new(
            "pipeline_held_items",
            "Items inside a pipeline's processors (batching, tail sampling)",
        );
        for (labels, ledger) in all.iter() {
            // against the flow: what left first, what entered last
            let drops = ledger.dropped.read();
            let out = ledger.emitted.get();
            let dequeued = ledger.dequeued.get();
            let bounced = ledger.bounced.get();
            let taken = ledger.offered.get().saturating_sub(bounced);
            let dropped_total: u64 = drops.iter().map(|(_, n)| n).sum();
            accepted.push(labels, None, taken);
            emitted.push(labels, None, out);
            queued.push(labels, None, taken.saturating_sub(dequeued));
            held.push(labels, None, dequeued.saturating_sub(out + dropped_total));
            for (reason, n) in drops {
                dropped.push(labels, Some(reason), n);
            }
        }
        accepted.encode(encoder, true)?;
        emitted.encode(encoder, true)?;
        dropped.encode(encoder, true)?;
        queued.encode(encoder, false)?;
        held.encode(encoder, false)
    }

    fn encode_exporters(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let all = self.0.exporters.lock();
        let mut enqueued = Family::new(
            "exporter_enqueued_items",
            "Items put on an exporter's queue",
        );
        let mut sent = Family::new("exporter_sent_items", "Items the backend acknowledged");
        let mut dropped = Family::new("exporter_dropped_items", "Items an exporter gave up on");
        let mut queued = Family::new(
            "exporter_queued_items",
            "Items waiting in an exporter's queue",
        );
        let mut in_flight = Family::new(
            "exporter_in_flight_items",
            "Items being sent, or waiting between retries",
        );
        for (labels, ledger) in all.iter() {
            let drops = ledger.dropped.read();
            let acknowledged = ledger.sent.get();
            let dequeued = ledger.dequeued.get();
            let taken = ledger.enqueued.get();
            let dropped_total: u64 = drops.iter().map(|(_, n)| n).sum();
            enqueued.push(labels, None, taken);
            sent.push(labels, None, acknowledged);
            queued.push(labels, None, taken.saturating_sub(dequeued));
            in_flight.push(
                labels,
                None,
                dequeued.saturating_sub(acknowledged + dropped_total),
            );
            for (reason, n) in drops {
                dropped.push(labels, Some(reason), n);
            }
        }
        enqueued.encode(encoder, true)?;
        sent.encode(encoder, true)?;
        dropped.encode(encoder, true)?;
        queued.encode(encoder, false)?;
        in_flight.encode(encoder, false)
    }
}
