//! The invariants the fuzz targets assert, shared with the test that replays the corpus
//! (`tests/it/fuzz_corpus.rs`): each function takes arbitrary bytes and panics only when
//! an invariant is broken.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sieve::model::{validate, Batch, Signal};

/// Items prost decodes from `buf`, or `None` when it refuses them.
fn decoded_items(signal: Signal, buf: &[u8]) -> Option<usize> {
    Some(match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(buf)
            .ok()?
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum(),
        Signal::Metrics => {
            let request = ExportMetricsServiceRequest::decode(buf).ok()?;
            let batch = Batch::from_metrics(request.resource_metrics);
            batch.items()
        }
        Signal::Logs => ExportLogsServiceRequest::decode(buf)
            .ok()?
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum(),
    })
}

/// The edge check, as receivers take requests (`Batch::from_request`): what it accepts
/// prost decodes, with the items it counted, and passes the check again whole.
pub fn wire(data: &[u8]) {
    for signal in Signal::ALL {
        let Ok(checked) = validate::check_request(signal, data) else {
            continue;
        };
        let Ok(admitted) = Batch::from_request(signal, bytes::Bytes::copy_from_slice(data)) else {
            assert_eq!(checked.accepted, 0, "refused while items were acceptable");
            continue;
        };
        assert_eq!(admitted.batch.items(), checked.accepted);
        let passed = admitted.batch.to_bytes();
        assert_eq!(decoded_items(signal, &passed), Some(checked.accepted));
        let again = validate::check_request(signal, &passed).expect("the copy is well framed");
        assert_eq!((again.accepted, again.refused), (checked.accepted, 0));
    }
}

/// The OTLP/JSON transcoder: what it accepts decodes, and its output is never more
/// than four times the body plus a little (packed 64-bit numbers are the worst case).
pub fn json(data: &[u8]) {
    for signal in Signal::ALL {
        let Ok(admitted) = sieve::receivers::otlp::json::decode(signal, data) else {
            continue;
        };
        let bytes = admitted.batch.to_bytes();
        assert!(
            bytes.len() <= 4 * data.len() + 64,
            "{} from {}",
            bytes.len(),
            data.len()
        );
        assert_eq!(decoded_items(signal, &bytes), Some(admitted.batch.items()));
    }
}

/// Syslog: both parsers take any text; the framing decoder, fed the bytes in two
/// pieces, never returns a message over its limit and always consumes what it reads.
pub fn syslog(data: &[u8]) {
    use sieve::receivers::syslog::framing::{Decoder, Frame, Oversize, Trailer};
    let text = String::from_utf8_lossy(data);
    let _ = sieve::receivers::syslog::parse::rfc5424(&text);
    let now = chrono::DateTime::from_timestamp(1_764_000_000, 0).expect("a valid time");
    let _ = sieve::receivers::syslog::parse::rfc3164(&text, chrono_tz::Europe::Berlin, now);
    const MAX: usize = 64;
    for oversize in [Oversize::Truncate, Oversize::Reject] {
        let mut decoder = Decoder::new(Trailer::LF, MAX, oversize);
        let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
        let mut buf = bytes::BytesMut::new();
        for piece in [&data[..split], &data[split..]] {
            buf.extend_from_slice(piece);
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Some(Frame::Message { bytes, .. })) => assert!(bytes.len() <= MAX),
                    Ok(Some(Frame::Rejected)) => {}
                    Ok(None) | Err(_) => break,
                }
                assert!(buf.len() < before, "a frame consumes input");
            }
        }
        let _ = decoder.finish(&mut buf);
    }
}

/// A fixed environment for `${env:..}` and `${file:..}` references.
struct Fixed;

impl sieve::config::expand::Source for Fixed {
    fn env(&self, name: &str) -> Option<String> {
        name.len()
            .is_multiple_of(2)
            .then(|| format!("value-of-{name}: #x"))
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        Ok(format!("{path}\n"))
    }
}

/// The config loader and expander take any text without panicking, and an error never
/// shows an expanded value.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = sieve::components::Config::parse_with(text, "fuzz", &Fixed) {
        // an expanded value shows as `value-of-…`, unless the file itself says that
        assert!(
            text.contains("value-of-") || !error.to_string().contains("value-of-"),
            "an expanded value in: {error}"
        );
    }
}

/// OTTL conditions: the parser takes any text in every context without panicking, and
/// a condition it accepts evaluates on an item of its context (a span, a span event, a
/// log record, a metric, a data point, a resource) without panicking.
pub fn ottl(data: &[u8]) {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Gauge, Metric, NumberDataPoint};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span::Event, Span};
    use sieve::ottl::items::{
        number_point, EventItem, LogItem, MetricItem, Owner, ResourceItem, SpanItem,
    };
    use sieve::ottl::{Condition, Context, Item};
    let text = String::from_utf8_lossy(data);
    let nested = KeyValue {
        key: "k".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(Default::default())),
        }),
        ..Default::default()
    };
    let resource = Resource {
        attributes: vec![nested.clone()],
        ..Default::default()
    };
    let owner = Owner {
        resource: Some(&resource),
        scope: None,
    };
    let span = Span {
        name: "GET /".into(),
        attributes: vec![nested.clone()],
        ..Default::default()
    };
    let event = Event::default();
    let record = LogRecord {
        attributes: vec![nested.clone()],
        ..Default::default()
    };
    let point = NumberDataPoint {
        attributes: vec![nested],
        ..Default::default()
    };
    let metric = Metric {
        data: Some(Data::Gauge(Gauge {
            data_points: vec![point.clone()],
        })),
        ..Default::default()
    };
    let items: [(Context, &dyn Item); 6] = [
        (Context::Resource, &ResourceItem(Some(&resource))),
        (Context::Span, &SpanItem { owner, span: &span }),
        (
            Context::SpanEvent,
            &EventItem {
                owner,
                span: "GET /",
                event: &event,
            },
        ),
        (
            Context::Log,
            &LogItem {
                owner,
                record: &record,
            },
        ),
        (
            Context::Metric,
            &MetricItem {
                owner,
                metric: &metric,
                point: None,
            },
        ),
        (
            Context::DataPoint,
            &MetricItem {
                owner,
                metric: &metric,
                point: Some(number_point(&point)),
            },
        ),
    ];
    for (context, item) in items {
        if let Ok(condition) = Condition::new(&text, context) {
            let _ = condition.matches(item);
        }
    }
}

/// The connectors' readers of encoded traces, on what the edge check accepts:
/// `routing` by resource divides a request without losing or adding an item, and
/// `spanmetrics` reads no more spans than the request holds and flushes without
/// panicking.
pub fn connectors(data: &[u8]) {
    use sieve::connectors::routing::{RouteConfig, Router, RoutingConfig};
    use sieve::connectors::spanmetrics::{Aggregator, SpanMetricsConfig};
    let Ok(admitted) = Batch::from_request(Signal::Traces, bytes::Bytes::copy_from_slice(data))
    else {
        return;
    };
    let batch = admitted.batch;
    let items = batch.items();
    let table = RoutingConfig {
        table: vec![RouteConfig {
            context: Default::default(),
            condition: Some(r#"attributes["service.name"] == "a""#.into()),
            statement: None,
            pipelines: vec!["traces/a".into()],
        }],
        default_pipelines: Vec::new(),
        error_mode: Default::default(),
        match_once: None,
    };
    let routed = Router::new(&table)
        .expect("the table is valid")
        .route(batch.clone());
    let parts: usize = routed.parts.iter().map(|(_, part)| part.items()).sum();
    assert_eq!(
        parts + routed.unrouted,
        items,
        "routing keeps every item once"
    );
    let mut aggregator = Aggregator::new(&SpanMetricsConfig::default());
    assert!(aggregator.add(&batch) <= items);
    let _ = aggregator.flush(1);
}

/// Redaction on the wire, as pipelines run it on what receivers admit: its output decodes
/// with the same items, and decodes to what the decoded path makes of the same request
/// (under two configurations: the shipped pipeline's rules with `summary: debug`, and
/// `allowed_keys` with `action: drop`).
pub fn redaction(data: &[u8]) {
    thread_local! {
        static REDACTORS: Vec<sieve::processors::redaction::Redactor> = redactors();
    }
    for signal in Signal::ALL {
        let Ok(admitted) = Batch::from_request(signal, bytes::Bytes::copy_from_slice(data)) else {
            continue;
        };
        let items = admitted.batch.items();
        REDACTORS.with(|redactors| {
            for redactor in redactors {
                let mut on_the_wire = admitted.batch.clone();
                redactor.redact(&mut on_the_wire);
                let wire = on_the_wire.to_bytes();
                assert_eq!(
                    decoded_items(signal, &wire),
                    Some(items),
                    "the output decodes"
                );
                let mut decoded = decoded_batch(signal, &admitted.batch.to_bytes());
                redactor.redact_batch(&mut decoded);
                assert_eq!(
                    decoded_batch(signal, &wire).to_bytes(),
                    decoded_batch(signal, &decoded.to_bytes()).to_bytes(),
                    "the wire walk and the decoded path agree"
                );
            }
        });
    }
}

/// The two configurations [`redaction`] runs, compiled once.
fn redactors() -> Vec<sieve::processors::redaction::Redactor> {
    use sieve::processors::redaction::{Action, MaskStyle, RedactionConfig, Redactor, Summary};
    let configs = [
        RedactionConfig {
            allow_all_keys: true,
            ignored_keys: vec!["service.name".into()],
            blocked_key_patterns: vec!["(?i)(password|secret)".into()],
            blocked_values: vec!["session=[A-Za-z0-9]{16,}".into()],
            mask_style: MaskStyle::Typed,
            summary: Summary::Debug,
            ..Default::default()
        },
        RedactionConfig {
            allowed_keys: vec!["k".into(), "user.email".into()],
            action: Action::Drop,
            summary: Summary::Info,
            ..Default::default()
        },
    ];
    configs
        .into_iter()
        .map(|config| Redactor::new(config).expect("the rules compile"))
        .collect()
}

/// `buf`, which prost decodes, as a decoded batch.
fn decoded_batch(signal: Signal, buf: &[u8]) -> Batch {
    match signal {
        Signal::Traces => Batch::from_traces(
            ExportTraceServiceRequest::decode(buf)
                .unwrap()
                .resource_spans,
        ),
        Signal::Logs => {
            Batch::from_logs(ExportLogsServiceRequest::decode(buf).unwrap().resource_logs)
        }
        Signal::Metrics => Batch::from_metrics(
            ExportMetricsServiceRequest::decode(buf)
                .unwrap()
                .resource_metrics,
        ),
    }
}
