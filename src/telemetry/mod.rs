//! Self-telemetry: sieve's own metrics in the Prometheus text format, and health checks.
//!
//! Metric names follow one scheme, after vector's component spec: `sieve_<component
//! kind>_<what>_total` with the component id, pipeline and signal as labels and a
//! `reason` label on every refusal and drop. Counters are created through
//! [`prometheus_client`] families and handed to components as cloned handles at build
//! time, so the hot path increments an atomic and never looks up a label set.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `sieve_receiver_received_items_total` | receiver, signal | items in well-formed requests |
//! | `sieve_receiver_accepted_items_total` | receiver, signal | items every target pipeline took |
//! | `sieve_receiver_refused_items_total` | receiver, signal, reason | items refused with a retryable error |
//! | `sieve_receiver_rejected_requests_total` | receiver, transport, reason | malformed, oversized or unsupported requests |
//! | `sieve_receiver_refused_unread_requests_total` | receiver, transport, reason | requests refused before their body was read (a pipeline full or over its memory limit): their items are never counted |
//! | `sieve_receiver_rejected_items_total` | receiver, signal, reason | items refused as undecodable (`partial_success`, or the whole request) |
//! | `sieve_receiver_dropped_items_total` | receiver, signal, reason | items lost without telling the sender (UDP) |
//! | `sieve_pipeline_accepted_items_total` | pipeline | items put on the pipeline queue |
//! | `sieve_pipeline_refused_items_total` | pipeline, reason | items the pipeline refused |
//! | `sieve_pipeline_dropped_items_total` | pipeline, reason | items accepted and then dropped (processors' removals too: `reason="tail_sampling"`, …) |
//! | `sieve_pipeline_emitted_items_total` | pipeline | items handed to the exporters (once, whatever their number) |
//! | `sieve_pipeline_queued_items` | pipeline | items in the pipeline queue |
//! | `sieve_pipeline_held_items` | pipeline | items inside processors (batch, tail sampling) |
//! | `sieve_exporter_enqueued_items_total` | exporter, pipeline, signal | items put on the exporter's queue |
//! | `sieve_exporter_queued_items` | exporter, pipeline, signal | items waiting in the exporter's queue |
//! | `sieve_exporter_in_flight_items` | exporter, pipeline, signal | items being sent or waiting to be retried |
//! | `sieve_exporter_sent_items_total` | exporter, pipeline, signal | items the backend acknowledged |
//! | `sieve_exporter_send_failed_items_total` | exporter, pipeline, signal, reason | items in failed attempts (retried or not) |
//! | `sieve_exporter_dropped_items_total` | exporter, pipeline, signal, reason | items given up on |
//! | `sieve_exporter_export_duration_seconds` | exporter, pipeline, signal | one export attempt |
//! | `sieve_exporter_label_overflows_total` | exporter, label | label values over `max_label_values` (Loki) |
//! | `sieve_processor_redactions_total` | processor, pipeline, rule, action | values redacted |
//! | `sieve_cardinality_tracked_series` | processor | series tracked by a cardinality limiter |
//! | `sieve_cardinality_metric_series` | processor, metric | series within the limit |
//! | `sieve_cardinality_overflow_points_total` | processor, metric | points folded into the overflow series |
//! | `sieve_cardinality_dropped_points_total` | processor, metric | points dropped by a cardinality limiter |
//! | `sieve_tail_sampling_traces_held` | processor | traces buffered, undecided |
//! | `sieve_tail_sampling_spans_held` | processor | spans buffered |
//! | `sieve_tail_sampling_bytes_held` | processor | bytes counted against `max_memory_mib` |
//! | `sieve_tail_sampling_policy_decisions_total` | processor, policy, decision | each top-level policy's answer |
//! | `sieve_tail_sampling_traces_decided_total` | processor, decision, trigger | final decisions, by what triggered them (`decided_early` among them) |
//! | `sieve_tail_sampling_late_spans_total` | processor, decision | spans of already decided traces |
//! | `sieve_tail_sampling_fallback_active` | processor | shards (one per worker) sampling on arrival for overload; 0 when none |
//! | `sieve_tail_sampling_fallback_activations_total` | processor | times it was switched on |
//! | `sieve_storage_replayed_items_total` | pipeline | items read back from a persistent queue after a start |
//! | `sieve_storage_corrupt_records_total` | pipeline | damaged persistent-queue records skipped |
//! | `sieve_storage_fsync_duration_seconds` | pipeline | a persistent queue's fsyncs |
//! | `sieve_storage_oldest_age_seconds` | pipeline | the oldest persistent-queue segment still waiting |
//! | `sieve_queue_size`, `sieve_queue_capacity` | queue | batches held / the limit (an exporter's: in its `sizer` units) |
//! | `sieve_queue_bytes`, `sieve_queue_max_bytes` | queue | bytes held / the limit |
//! | `sieve_process_heap_bytes` | — | bytes held on the heap (what `memory_limiter` measures) |
//! | `sieve_process_resident_bytes` | — | resident set size |
//! | `sieve_config_reloads_total` | result | SIGHUP reloads |
//! | `sieve_build_info` | version, commit, tree | always 1: the commit built from and whether the tree was `clean` |
//!
//! This module keeps the families every receiver, pipeline and exporter shares. The
//! rows from `sieve_exporter_label_overflows_total` to the storage ones belong to one
//! component each (Loki, redaction, cardinality limiting, tail sampling, the persistent
//! queue): that component registers them through [`Telemetry::family`] when it is built, so adding a
//! component with metrics of its own touches no file here.
//!
//! The item counts of receivers, pipelines and exporters add up at every scrape (see
//! the `ledger` module): `received = accepted + refused`, a pipeline's `accepted = emitted +
//! dropped + queued + held`, an exporter's `enqueued = sent + dropped + queued +
//! in_flight`.
//!
//! Served on `service.telemetry.metrics.address`: `/metrics`, `/healthz` (the process
//! answers) and `/readyz` (every receiver bound and every pipeline running, else 503).

mod ledger;
mod server;

pub use ledger::{Count, ExporterLedger, Ledgers, PipelineLedger, ReceiverLedger};
pub use server::{serve, serve_on};

use ledger::LedgerCollector;

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;
use std::any::Any;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    pub receiver: String,
    pub signal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverReasonLabels {
    pub receiver: String,
    pub signal: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub receiver: String,
    pub transport: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineReasonLabels {
    pub pipeline: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    pub exporter: String,
    pub pipeline: String,
    pub signal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterReasonLabels {
    pub exporter: String,
    pub pipeline: String,
    pub signal: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessorLabels {
    pub processor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    /// The commit built from (`unknown` without a git checkout or `SIEVE_COMMIT`).
    commit: String,
    /// `clean`, `modified` (uncommitted changes) or `unknown`.
    tree: String,
}

/// What a queue holds, read at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Batches held (or the exporter's `sizer` units: items, bytes).
    pub size: usize,
    /// The limit of `size`.
    pub capacity: usize,
    /// Bytes held.
    pub bytes: usize,
    /// The limit of `bytes`.
    pub max_bytes: usize,
}

/// Reads a queue's state at scrape time.
pub type QueueProbe = Box<dyn Fn() -> QueueState + Send + Sync>;

/// All of sieve's own metrics, shared by every component.
pub struct Telemetry {
    registry: Mutex<Registry>,
    /// The families components registered at build time, by name.
    owned: Mutex<HashMap<&'static str, Box<dyn Any + Send + Sync>>>,
    pub receiver_rejected_requests: Family<RequestLabels, Counter>,
    pub receiver_refused_unread_requests: Family<RequestLabels, Counter>,
    pub receiver_rejected_items: Family<ReceiverReasonLabels, Counter>,
    pub receiver_dropped: Family<ReceiverReasonLabels, Counter>,
    pub pipeline_refused: Family<PipelineReasonLabels, Counter>,
    pub exporter_send_failed: Family<ExporterReasonLabels, Counter>,
    pub exporter_duration: Family<ExporterLabels, Histogram>,
    /// Item counts of receivers, pipelines and exporters, which add up at every scrape.
    pub ledgers: Arc<Ledgers>,
    queue_size: Family<QueueLabels, Gauge>,
    queue_capacity: Family<QueueLabels, Gauge>,
    queue_bytes: Family<QueueLabels, Gauge>,
    queue_max_bytes: Family<QueueLabels, Gauge>,
    heap_bytes: Gauge,
    resident_bytes: Gauge,
    queues: Mutex<Vec<(u64, QueueLabels, QueueProbe)>>,
    next_queue: AtomicU64,
    reloads: Family<ResultLabels, Counter>,
    ready: AtomicBool,
}

impl Telemetry {
    pub fn new() -> Arc<Telemetry> {
        let mut registry = Registry::with_prefix("sieve");
        let histogram = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let t = Telemetry {
            receiver_rejected_requests: Family::default(),
            receiver_refused_unread_requests: Family::default(),
            receiver_rejected_items: Family::default(),
            receiver_dropped: Family::default(),
            pipeline_refused: Family::default(),
            exporter_send_failed: Family::default(),
            exporter_duration: Family::new_with_constructor(histogram),
            ledgers: Arc::new(Ledgers::default()),
            queue_size: Family::default(),
            queue_capacity: Family::default(),
            queue_bytes: Family::default(),
            queue_max_bytes: Family::default(),
            heap_bytes: Gauge::default(),
            resident_bytes: Gauge::default(),
            queues: Mutex::new(Vec::new()),
            next_queue: AtomicU64::new(0),
            reloads: Family::default(),
            ready: AtomicBool::new(false),
            registry: Mutex::new(Registry::default()),
            owned: Mutex::new(HashMap::new()),
        };
        registry.register_collector(Box::new(LedgerCollector(Arc::clone(&t.ledgers))));
        registry.register(
            "receiver_rejected_requests",
            "Malformed, oversized or unsupported requests",
            t.receiver_rejected_requests.clone(),
        );
        registry.register(
            "receiver_refused_unread_requests",
            "Requests refused before their body was read, a pipeline being full or over its memory limit (their items are never counted)",
            t.receiver_refused_unread_requests.clone(),
        );
        registry.register(
            "receiver_rejected_items",
            "Items refused because they would not decode (invalid UTF-8, nesting, wire types, ids)",
            t.receiver_rejected_items.clone(),
        );
        registry.register(
            "receiver_dropped_items",
            "Items received and lost without telling the sender (UDP at a full queue)",
            t.receiver_dropped.clone(),
        );
        registry.register(
            "pipeline_refused_items",
            "Items a pipeline refused",
            t.pipeline_refused.clone(),
        );
        registry.register(
            "exporter_send_failed_items",
            "Items in failed export attempts",
            t.exporter_send_failed.clone(),
        );
        registry.register(
            "exporter_export_duration_seconds",
            "Duration of one export attempt",
            t.exporter_duration.clone(),
        );
        registry.register(
            "queue_size",
            "Batches waiting in a queue",
            t.queue_size.clone(),
        );
        registry.register(
            "queue_capacity",
            "Batches a queue can hold",
            t.queue_capacity.clone(),
        );
        registry.register(
            "queue_bytes",
            "Bytes a queue holds (an exporter's: waiting and being sent)",
            t.queue_bytes.clone(),
        );
        registry.register(
            "queue_max_bytes",
            "Bytes a queue may hold",
            t.queue_max_bytes.clone(),
        );
        registry.register(
            "process_heap_bytes",
            "Bytes held on the heap (what memory_limiter measures)",
            t.heap_bytes.clone(),
        );
        registry.register(
            "process_resident_bytes",
            "Resident set size",
            t.resident_bytes.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            t.reloads.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: env!("SIEVE_COMMIT").into(),
                tree: env!("SIEVE_TREE").into(),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        Arc::new(Telemetry {
            registry: Mutex::new(registry),
            ..t
        })
    }

    /// The family `name` (without the `sieve_` prefix) a component owns: registered by
    /// the first component built with it, shared by every one after, so a rebuilt
    /// component keeps counting on the same series.
    pub fn family<L, M>(&self, name: &'static str, help: &str) -> Family<L, M>
    where
        L: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
        M: EncodeMetric + TypedMetric + Default + Debug + Send + Sync + 'static,
    {
        self.family_with(name, help, M::default)
    }

    /// [`Telemetry::family`] for metrics made by `constructor` (histograms and their
    /// buckets).
    pub fn family_with<L, M>(
        &self,
        name: &'static str,
        help: &str,
        constructor: fn() -> M,
    ) -> Family<L, M>
    where
        L: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
        M: EncodeMetric + TypedMetric + Debug + Send + Sync + 'static,
    {
        let mut owned = self.owned.lock();
        if let Some(family) = owned
            .get(name)
            .and_then(|f| f.downcast_ref::<Family<L, M>>())
        {
            return family.clone();
        }
        let family = Family::<L, M>::new_with_constructor(constructor);
        self.registry.lock().register(name, help, family.clone());
        owned.insert(name, Box::new(family.clone()));
        family
    }

    /// Registers a queue whose size and capacity `/metrics` reports until the returned
    /// guard is dropped.
    pub fn register_queue(self: &Arc<Self>, name: String, probe: QueueProbe) -> QueueRegistration {
        let id = self.next_queue.fetch_add(1, Ordering::Relaxed);
        self.queues
            .lock()
            .push((id, QueueLabels { queue: name }, probe));
        QueueRegistration {
            telemetry: Arc::clone(self),
            id,
        }
    }

    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let memory = |bytes: Option<u64>| bytes.unwrap_or(0) as i64;
        self.heap_bytes.set(memory(crate::memory::held_bytes()));
        self.resident_bytes
            .set(memory(crate::memory::resident_bytes()));
        for (_, labels, probe) in self.queues.lock().iter() {
            let state = probe();
            let set = |family: &Family<QueueLabels, Gauge>, value: usize| {
                family.get_or_create(labels).set(value as i64);
            };
            set(&self.queue_size, state.size);
            set(&self.queue_capacity, state.capacity);
            set(&self.queue_bytes, state.bytes);
            set(&self.queue_max_bytes, state.max_bytes);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock())
            .expect("writing to a String cannot fail");
        out
    }
}

/// Keeps a queue on `/metrics`; dropping it removes the queue's gauges.
pub struct QueueRegistration {
    telemetry: Arc<Telemetry>,
    id: u64,
}

impl Drop for QueueRegistration {
    fn drop(&mut self) {
        let mut queues = self.telemetry.queues.lock();
        if let Some(index) = queues.iter().position(|(id, _, _)| *id == self.id) {
            let (_, labels, _) = queues.remove(index);
            let t = &self.telemetry;
            for family in [
                &t.queue_size,
                &t.queue_capacity,
                &t.queue_bytes,
                &t.queue_max_bytes,
            ] {
                family.remove(&labels);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed() {
        let t = Telemetry::new();
        let r = ReceiverLabels {
            receiver: "r".into(),
            signal: "logs".into(),
        };
        let rr = ReceiverReasonLabels {
            receiver: "r".into(),
            signal: "logs".into(),
            reason: "x".into(),
        };
        let p = PipelineReasonLabels {
            pipeline: "p".into(),
            reason: "x".into(),
        };
        let e = ExporterLabels {
            exporter: "e".into(),
            pipeline: "p".into(),
            signal: "logs".into(),
        };
        let er = ExporterReasonLabels {
            exporter: "e".into(),
            pipeline: "p".into(),
            signal: "logs".into(),
            reason: "x".into(),
        };
        t.ledgers.receiver(&r).accepted.add(1);
        t.ledgers.receiver(&r).refused.reason("x").add(1);
        t.receiver_dropped.get_or_create(&rr).inc();
        t.receiver_rejected_requests
            .get_or_create(&RequestLabels {
                receiver: "r".into(),
                transport: "t".into(),
                reason: "x".into(),
            })
            .inc();
        let pipeline = t.ledgers.pipeline(&PipelineLabels {
            pipeline: "p".into(),
        });
        pipeline.offered.add(4);
        pipeline.bounced.add(1);
        pipeline.dequeued.add(2);
        pipeline.dropped.reason("x").add(1);
        t.pipeline_refused.get_or_create(&p).inc();
        let exporter = t.ledgers.exporter(&e);
        exporter.enqueued.add(5);
        exporter.dequeued.add(4);
        exporter.sent.add(2);
        exporter.dropped.reason("x").add(1);
        t.exporter_send_failed.get_or_create(&er).inc();
        t.exporter_duration.get_or_create(&e).observe(0.1);
        t.record_reload(true);
        let _queue = t.register_queue(
            "q".into(),
            Box::new(|| QueueState {
                size: 1,
                capacity: 2,
                bytes: 3,
                max_bytes: 4,
            }),
        );
        let text = t.encode();
        for name in [
            "sieve_receiver_received_items_total",
            "sieve_receiver_accepted_items_total",
            "sieve_receiver_refused_items_total",
            "sieve_receiver_dropped_items_total",
            "sieve_receiver_rejected_requests_total",
            "sieve_pipeline_accepted_items_total",
            "sieve_pipeline_refused_items_total",
            "sieve_pipeline_dropped_items_total",
            "sieve_exporter_sent_items_total",
            "sieve_exporter_send_failed_items_total",
            "sieve_exporter_dropped_items_total",
            "sieve_exporter_export_duration_seconds_count",
            "sieve_config_reloads_total",
            "sieve_queue_size{queue=\"q\"} 1",
            "sieve_queue_capacity{queue=\"q\"} 2",
            "sieve_queue_bytes{queue=\"q\"} 3",
            "sieve_queue_max_bytes{queue=\"q\"} 4",
            "sieve_receiver_received_items_total{receiver=\"r\",signal=\"logs\"} 2",
            "sieve_pipeline_queued_items{pipeline=\"p\"} 1",
            "sieve_pipeline_held_items{pipeline=\"p\"} 1",
            "sieve_pipeline_emitted_items_total{pipeline=\"p\"} 0",
            "sieve_exporter_enqueued_items_total",
            "sieve_exporter_queued_items{exporter=\"e\",pipeline=\"p\",signal=\"logs\"} 1",
            "sieve_exporter_in_flight_items{exporter=\"e\",pipeline=\"p\",signal=\"logs\"} 1",
            "sieve_build_info",
            "sieve_process_heap_bytes",
            "sieve_process_resident_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn a_component_family_is_registered_once_and_shared() {
        let t = Telemetry::new();
        let labels = ProcessorLabels {
            processor: "p".into(),
        };
        let first: Family<ProcessorLabels, Counter> = t.family("things", "Things counted");
        let second: Family<ProcessorLabels, Counter> = t.family("things", "Things counted");
        first.get_or_create(&labels).inc();
        second.get_or_create(&labels).inc();
        let text = t.encode();
        assert!(
            text.contains("sieve_things_total{processor=\"p\"} 2"),
            "one series, counted by both:\n{text}"
        );
        assert_eq!(text.matches("# TYPE sieve_things_total").count(), 0);
        assert_eq!(text.matches("# TYPE sieve_things counter").count(), 1);
    }
}
