//! Component compliance, in the spirit of vector's component specification tests: every
//! processor and every exporter, built from config the way a pipeline builds it, is
//! driven with items, and its counts must add up at every step — nothing created,
//! nothing lost without a count, nothing left held at the end.
//!
//! - A processor runs through the pipeline worker's own accounting ([`Stage`]): at every
//!   call, what it held plus what it took in covers what it emitted plus what it still
//!   holds (it never makes items up); at the end (a flush) it holds nothing, so
//!   `taken = emitted + removed`, and `removed` is what the component is expected to
//!   remove.
//! - An exporter runs behind its real queue and senders: at every poll of its ledger,
//!   `sent + dropped ≤ dequeued ≤ enqueued` (in flight and queued are never negative);
//!   at the end `enqueued = sent + dropped`, each item counted once.

use super::{ExporterConfig, ProcessorConfig};
use crate::build::BuildContext;
use crate::config::ComponentConfig;
use crate::model::{Batch, Signal};
use crate::processors::Stage;
use crate::telemetry::{Count, ExporterLabels, Telemetry};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a processor did with the items it was given.
#[derive(Debug, Default, PartialEq, Eq)]
struct ProcessorTally {
    taken: usize,
    emitted: usize,
    removed: usize,
}

fn context<'a>(id: &'a str, signal: Signal, telemetry: &'a Arc<Telemetry>) -> BuildContext<'a> {
    BuildContext {
        id,
        pipeline: "compliance",
        signal,
        telemetry,
    }
}

/// Reads one component's config of type `kind` from YAML, as its section does, and
/// validates it.
fn parse<C: ComponentConfig>(kind: &str, yaml: &str) -> C {
    let config = C::deserialize_kind(
        C::current_kind(kind),
        serde_yaml::Deserializer::from_str(yaml),
    )
    .unwrap();
    config.validate().unwrap();
    config
}

/// Drives processor `config` with `batches` through the worker's accounting, ticking
/// whenever a deadline is due, then flushing, and checks the counts at every call.
fn drive_processor(
    config: &ProcessorConfig,
    signal: Signal,
    batches: Vec<Batch>,
) -> ProcessorTally {
    let telemetry = Telemetry::new();
    let built = config.build(&context("p", signal, &telemetry)).unwrap();
    let mut stage = Stage {
        processor: built.processor,
        removed: Count::default(),
    };
    let undecodable = Count::default();
    let mut tally = ProcessorTally::default();
    let mut step = |stage: &mut Stage, items_in: usize, out: Vec<Batch>, held_before: i64| {
        let emitted: usize = out.iter().map(Batch::items).sum();
        let held = stage.processor.held_items();
        assert!(
            emitted as i64 + held <= items_in as i64 + held_before,
            "{}: made items up (took {items_in}, held {held_before}, emitted {emitted}, holds {held})",
            config.kind()
        );
        tally.taken += items_in;
        tally.emitted += emitted;
    };
    for batch in batches {
        let (items, held) = (batch.items(), stage.processor.held_items());
        let out = stage.call(items, &undecodable, |p, out| p.process(batch, out));
        step(&mut stage, items, out, held);
        if stage
            .processor
            .next_deadline()
            .is_some_and(|d| d <= Instant::now())
        {
            let held = stage.processor.held_items();
            let out = stage.call(0, &undecodable, |p, out| p.on_tick(Instant::now(), out));
            step(&mut stage, 0, out, held);
        }
    }
    let held = stage.processor.held_items();
    let out = stage.call(0, &undecodable, |p, out| p.flush(out));
    step(&mut stage, 0, out, held);
    assert_eq!(
        stage.processor.held_items(),
        0,
        "{}: holds items after a flush",
        config.kind()
    );
    assert_eq!(undecodable.get(), 0);
    tally.removed = stage.removed.get() as usize;
    assert_eq!(
        tally.taken,
        tally.emitted + tally.removed,
        "{}: counts do not add up",
        config.kind()
    );
    tally
}

fn attribute(key: &str, value: &str) -> KeyValue {
    crate::model::tests::text_attribute(key, value)
}

/// `requests` batches of one gauge with `points` points, each its own `user` series.
fn gauge_batches(requests: usize, points: usize) -> Vec<Batch> {
    (0..requests)
        .map(|r| {
            let data_points = (0..points)
                .map(|p| NumberDataPoint {
                    attributes: vec![attribute("user", &format!("u{r}-{p}"))],
                    value: Some(number_data_point::Value::AsDouble(1.0)),
                    time_unix_nano: 1,
                    ..Default::default()
                })
                .collect();
            Batch::from_metrics(vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "requests".into(),
                        data: Some(metric::Data::Gauge(Gauge { data_points })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }])
        })
        .collect()
}

/// `requests` batches of `records` log records whose body holds an email address.
fn log_batches(requests: usize, records: usize) -> Vec<Batch> {
    (0..requests)
        .map(|_| {
            let log_records = (0..records)
                .map(|_| LogRecord {
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(
                            "login by jane@example.com".into(),
                        )),
                    }),
                    ..Default::default()
                })
                .collect();
            Batch::from_logs(vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }])
        })
        .collect()
}

fn trace_batches(requests: usize) -> Vec<Batch> {
    (0..requests)
        .map(|_| crate::model::tests::traces_batch(2, 5))
        .collect()
}

#[test]
fn every_processor_accounts_for_its_items() {
    // (type, config, signal, batches, items it is expected to remove)
    let cases: Vec<(&str, &str, Signal, Vec<Batch>, usize)> = vec![
        ("batch", "send_batch_size: 25\ntimeout: 1h", Signal::Traces, trace_batches(5), 0),
        ("memory_limiter", "limit_mib: 4096", Signal::Logs, log_batches(3, 4), 0),
        ("redaction", "allow_all_keys: true", Signal::Logs, log_batches(3, 4), 0),
        (
            "attributes",
            "actions: [{key: env, value: prod, action: upsert}]",
            Signal::Traces,
            trace_batches(3),
            0,
        ),
        (
            "k8s_attributes",
            "passthrough: true",
            Signal::Logs,
            log_batches(3, 4),
            0,
        ),
        (
            "resource_detection",
            "detectors: [env, system]",
            Signal::Traces,
            trace_batches(3),
            0,
        ),
        (
            "filter",
            "logs: {log_record: ['IsMatch(body, \"jane\")']}",
            Signal::Logs,
            log_batches(3, 4),
            12,
        ),
        (
            "resource",
            "attributes: [{key: env, value: prod, action: upsert}]",
            Signal::Metrics,
            gauge_batches(3, 8),
            0,
        ),
        (
            "cardinality_limit",
            "limit: 10\naction: drop",
            Signal::Metrics,
            gauge_batches(3, 8),
            14,
        ),
        (
            "tail_sampling",
            "decision_wait: 1h\npolicies:\n  - {name: all, type: always_sample}",
            Signal::Traces,
            trace_batches(4),
            0,
        ),
        (
            "tail_sampling",
            "decision_wait: 1h\npolicies:\n  - {name: none, type: probabilistic, probabilistic: {sampling_percentage: 0}}",
            Signal::Traces,
            trace_batches(4),
            40,
        ),
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for (kind, yaml, signal, batches, removed) in cases {
        let config: ProcessorConfig = parse(kind, yaml);
        let items: usize = batches.iter().map(Batch::items).sum();
        let tally = drive_processor(&config, signal, batches);
        assert_eq!(tally.taken, items, "{kind}");
        assert_eq!(tally.removed, removed, "{kind} with {yaml}");
        kinds.insert(config.kind());
    }
    assert_eq!(
        kinds.len(),
        <ProcessorConfig as ComponentConfig>::KINDS.len(),
        "every processor type is driven"
    );
}

/// Drives exporter `config` with `batches` behind its queue and senders until every
/// item is sent or dropped, checking its ledger at every poll; returns (sent, dropped).
async fn drive_exporter(
    config: &ExporterConfig,
    signal: Signal,
    batches: Vec<Batch>,
) -> (u64, u64) {
    let telemetry = Telemetry::new();
    let built = config.build(&context("e", signal, &telemetry)).unwrap();
    let (_abort, aborted) = tokio::sync::watch::channel(false);
    let (input, task) = built.start(&telemetry, aborted);
    let ledger = telemetry.ledgers.exporter(&ExporterLabels {
        exporter: "e".into(),
        pipeline: "compliance".into(),
        signal: signal.as_str().into(),
    });
    let items: usize = batches.iter().map(Batch::items).sum();
    let feeding = std::thread::spawn(move || {
        for batch in batches {
            input.put(batch);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // read against the flow: a later stage first, so an item counted there is
        // already counted in every earlier one
        let dropped: u64 = [
            "retry_disabled",
            "permanent",
            "partial_success",
            "undecodable",
            "shutdown",
        ]
        .iter()
        .map(|r| ledger.dropped.reason(r).get())
        .sum();
        let sent = ledger.sent.get();
        let dequeued = ledger.dequeued.get();
        let enqueued = ledger.enqueued.get();
        assert!(
            sent + dropped <= dequeued,
            "in flight went negative: {sent}+{dropped} > {dequeued}"
        );
        assert!(
            dequeued <= enqueued,
            "queued went negative: {dequeued} > {enqueued}"
        );
        if enqueued == items as u64 && sent + dropped == enqueued {
            feeding.join().unwrap();
            task.task.abort();
            return (sent, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "{sent} sent + {dropped} dropped of {enqueued}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exporter_accounts_for_its_items() {
    // nothing listens on port 1: every attempt fails, and with retries off each batch
    // is dropped and counted once
    let no_retry = "retry_on_failure: {enabled: false}";
    let cases: Vec<(&str, String, Signal, Vec<Batch>, bool)> = vec![
        (
            "debug",
            "{}".to_string(),
            Signal::Traces,
            trace_batches(3),
            true,
        ),
        (
            "otlp",
            format!("endpoint: http://127.0.0.1:1\n{no_retry}"),
            Signal::Traces,
            trace_batches(3),
            false,
        ),
        (
            "otlphttp",
            format!("endpoint: http://127.0.0.1:1\n{no_retry}"),
            Signal::Logs,
            log_batches(3, 2),
            false,
        ),
        (
            "loki",
            format!("endpoint: http://127.0.0.1:1/loki/api/v1/push\n{no_retry}"),
            Signal::Logs,
            log_batches(3, 2),
            false,
        ),
        (
            "prometheusremotewrite",
            format!("endpoint: http://127.0.0.1:1/api/v1/write\n{no_retry}"),
            Signal::Metrics,
            gauge_batches(3, 2),
            false,
        ),
        #[cfg(feature = "kafka")]
        (
            "kafka",
            format!("brokers: [127.0.0.1:1]\ntimeout: 1s\n{no_retry}"),
            Signal::Traces,
            trace_batches(3),
            false,
        ),
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for (kind, yaml, signal, batches, delivered) in cases {
        let config: ExporterConfig = parse(kind, &yaml);
        let items: usize = batches.iter().map(Batch::items).sum();
        let (sent, dropped) = drive_exporter(&config, signal, batches).await;
        let expected = if delivered {
            (items as u64, 0)
        } else {
            (0, items as u64)
        };
        assert_eq!((sent, dropped), expected, "{kind}: (sent, dropped)");
        kinds.insert(kind);
    }
    let all = <ExporterConfig as ComponentConfig>::KINDS.len();
    assert_eq!(
        kinds.len(),
        if cfg!(feature = "kafka") {
            all
        } else {
            all - 1
        },
        "every exporter type is driven"
    );
}
