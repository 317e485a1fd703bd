//! Health checks and debug logs dropped, everything else untouched; empty scopes and
//! resources removed; mistakes named by key and column.

use super::*;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::trace::v1::{span::Event, Span};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn processor(yaml: &str) -> FilterProcessor {
    let config: FilterConfig = serde_yaml::from_str(yaml).unwrap();
    config.validate().unwrap();
    FilterProcessor::new(&config).unwrap()
}

fn run(p: &mut FilterProcessor, batch: Batch) -> Option<Batch> {
    let mut out = Vec::new();
    p.process(batch, &mut out);
    out.pop()
}

const CONFIG: &str = r#"
error_mode: ignore
traces:
  span:
    - 'attributes["http.route"] == "/healthz"'
    - 'IsMatch(name, "^health")'
  spanevent:
    - 'name == "debug"'
logs:
  log_record:
    - 'severity_number < SEVERITY_NUMBER_INFO and severity_number != SEVERITY_NUMBER_UNSPECIFIED'
metrics:
  metric:
    - 'name == "noise"'
  datapoint:
    - 'attributes["tier"] == "debug"'
"#;

#[test]
fn health_check_spans_and_debug_events_are_dropped_and_the_rest_untouched() {
    let mut p = processor(CONFIG);
    let keep = Span {
        name: "GET /api".into(),
        attributes: vec![string("http.route", "/api")],
        events: vec![
            Event {
                name: "debug".into(),
                ..Default::default()
            },
            Event {
                name: "exception".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let batch = Batch::from_traces(vec![
        ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    keep.clone(),
                    Span {
                        name: "GET /healthz".into(),
                        attributes: vec![string("http.route", "/healthz")],
                        ..Default::default()
                    },
                    Span {
                        name: "healthcheck".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        },
        ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "health".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    ]);
    let mut out = run(&mut p, batch).unwrap();
    assert_eq!(out.items(), 1);
    let resources = out.traces_mut();
    assert_eq!(resources.len(), 1, "the emptied resource is removed");
    let span = &resources[0].scope_spans[0].spans[0];
    assert_eq!(span.name, keep.name);
    assert_eq!(span.attributes, keep.attributes);
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "exception");
}

#[test]
fn debug_logs_are_dropped_and_a_batch_left_empty_goes_nowhere() {
    let mut p = processor(CONFIG);
    let record = |severity: i32| LogRecord {
        severity_number: severity,
        ..Default::default()
    };
    let batch = Batch::from_logs(vec![ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: vec![record(5), record(9), record(0), record(1), record(17)],
            ..Default::default()
        }],
        ..Default::default()
    }]);
    let mut out = run(&mut p, batch).unwrap();
    let kept: Vec<i32> = out.logs_mut()[0].scope_logs[0]
        .log_records
        .iter()
        .map(|r| r.severity_number)
        .collect();
    assert_eq!(kept, [9, 0, 17]);
    let only_debug = Batch::from_logs(vec![ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: vec![record(5)],
            ..Default::default()
        }],
        ..Default::default()
    }]);
    assert!(
        run(&mut p, only_debug).is_none(),
        "nothing left, nothing sent on"
    );
}

#[test]
fn metrics_go_whole_or_by_data_point() {
    let mut p = processor(CONFIG);
    let point = |tier: &str| NumberDataPoint {
        attributes: vec![string("tier", tier)],
        ..Default::default()
    };
    let gauge = |name: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    };
    let batch = Batch::from_metrics(vec![ResourceMetrics {
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![
                gauge("noise", vec![point("prod")]),
                gauge("cpu", vec![point("prod"), point("debug")]),
                gauge("debug_only", vec![point("debug")]),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }]);
    let mut out = run(&mut p, batch).unwrap();
    assert_eq!(out.items(), 1);
    let metrics = &out.metrics_mut()[0].scope_metrics[0].metrics;
    assert_eq!(metrics.len(), 1, "a metric left without points is removed");
    assert_eq!(metrics[0].name, "cpu");
}

#[test]
fn a_signal_without_conditions_passes_as_it_came() {
    let mut p = processor("logs: {log_record: ['true']}");
    let batch = crate::model::tests::traces_batch(2, 3);
    let out = run(&mut p, batch).unwrap();
    assert!(out.is_encoded(), "not decoded");
    assert_eq!(out.items(), 6);
}

#[test]
fn mistakes_name_the_key_and_the_column() {
    let error = |yaml: &str| {
        let config: FilterConfig = serde_yaml::from_str(yaml).unwrap();
        let e = config.validate().unwrap_err();
        format!("{}: {}", e.key, e.message)
    };
    let message = error("traces: {span: ['name == \"a\"', 'severity_text == \"x\"']}");
    assert!(message.starts_with("traces.span[1]: "), "{message}");
    assert!(
        message.contains("at column 1") && message.contains("not a path of the span context"),
        "{message}"
    );
    let message = error("metrics: {datapoint: ['attributes[\"a\"] =! 1']}");
    assert!(
        message.starts_with("metrics.datapoint[0]") && message.contains("column 17"),
        "{message}"
    );
    assert!(
        serde_yaml::from_str::<FilterConfig>("traces: {spans: []}").is_err(),
        "unknown keys are refused"
    );
    assert!(serde_yaml::from_str::<FilterConfig>("error_mode: loud").is_err());
}
