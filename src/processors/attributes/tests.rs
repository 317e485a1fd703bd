//! `include` / `exclude` as the collector's README describes them, per signal: a table
//! of match properties and the items each selects, with an action that marks what it
//! touches.

use super::*;
use matching::{Item, ItemKind, MatchConfig, Matcher};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![string("service.name", service)],
        ..Default::default()
    })
}

fn scope(name: &str, version: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        version: version.into(),
        ..Default::default()
    })
}

/// Three spans: (id, service, name, kind, scope, version, extra attribute).
fn spans() -> Batch {
    let rows = [
        (
            "1",
            "svcA",
            "login",
            2,
            "lib-a",
            "1.0",
            ("http.method", "GET"),
        ),
        ("2", "svcA", "checkout", 3, "lib-b", "2.0", ("env", "prod")),
        ("3", "svcB", "login", 1, "lib-a", "1.1", ("env", "dev")),
    ];
    Batch::from_traces(
        rows.iter()
            .map(
                |(id, service, name, kind, lib, version, (k, v))| ResourceSpans {
                    resource: resource(service),
                    scope_spans: vec![ScopeSpans {
                        scope: scope(lib, version),
                        spans: vec![Span {
                            name: name.to_string(),
                            kind: *kind,
                            attributes: vec![string("id", id), string(k, v)],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )
            .collect(),
    )
}

/// Three log records: a health check at INFO, a failure at ERROR, a map body without
/// a severity.
fn logs() -> Batch {
    let body = |text: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(text.into())),
        })
    };
    let records = vec![
        LogRecord {
            body: body("health check"),
            severity_number: 9,
            severity_text: "INFO".into(),
            attributes: vec![string("id", "1")],
            ..Default::default()
        },
        LogRecord {
            body: body("payment failed"),
            severity_number: 17,
            severity_text: "ERROR".into(),
            attributes: vec![string("id", "2")],
            ..Default::default()
        },
        LogRecord {
            body: Some(AnyValue {
                value: Some(any_value::Value::KvlistValue(Default::default())),
            }),
            attributes: vec![string("id", "3")],
            ..Default::default()
        },
    ];
    Batch::from_logs(vec![ResourceLogs {
        resource: resource("svcA"),
        scope_logs: vec![ScopeLogs {
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    }])
}

/// Two metrics: `http.requests` (a sum, points 1 and 2) and `cpu` (a gauge, point 3).
fn metrics() -> Batch {
    let point = |id: &str| NumberDataPoint {
        attributes: vec![string("id", id)],
        ..Default::default()
    };
    Batch::from_metrics(vec![ResourceMetrics {
        resource: resource("svcA"),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![
                Metric {
                    name: "http.requests".into(),
                    data: Some(Data::Sum(Sum {
                        data_points: vec![point("1"), point("2")],
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "cpu".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![point("3")],
                    })),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    }])
}

/// The ids of the items the processor marked.
fn marked(batch: &mut Batch) -> Vec<String> {
    let mut lists: Vec<Vec<KeyValue>> = Vec::new();
    match batch.signal() {
        Signal::Traces => batch.traces_mut().iter().for_each(|rs| {
            rs.scope_spans.iter().for_each(|ss| {
                ss.spans
                    .iter()
                    .for_each(|s| lists.push(s.attributes.clone()))
            })
        }),
        Signal::Logs => batch.logs_mut().iter().for_each(|rl| {
            rl.scope_logs.iter().for_each(|sl| {
                sl.log_records
                    .iter()
                    .for_each(|r| lists.push(r.attributes.clone()))
            })
        }),
        Signal::Metrics => batch.metrics_mut().iter_mut().for_each(|rm| {
            rm.scope_metrics.iter_mut().for_each(|sm| {
                sm.metrics.iter_mut().for_each(|m| {
                    point_attributes(m.data.as_mut())
                        .into_iter()
                        .for_each(|a| lists.push(a.clone()))
                })
            })
        }),
    }
    lists
        .iter()
        .filter(|attrs| attrs.iter().any(|kv| kv.key == "marked"))
        .map(|attrs| crate::model::any_value_text(attrs[0].value.as_ref()))
        .collect()
}

/// (signal, include/exclude YAML, ids of the items the action touches)
const SELECTIONS: &[(Signal, &str, &[&str])] = &[
    (Signal::Traces, "include: {match_type: strict, services: [svcA]}", &["1", "2"]),
    (Signal::Traces, "include: {match_type: regexp, services: ['^svc']}", &["1", "2", "3"]),
    (Signal::Traces, "include: {match_type: strict, span_names: [login]}", &["1", "3"]),
    (Signal::Traces, "include: {match_type: regexp, span_names: ['check.*']}", &["2"]),
    (Signal::Traces, "include: {match_type: strict, span_kinds: [SPAN_KIND_SERVER]}", &["1"]),
    (Signal::Traces, "include: {match_type: strict, span_kinds: [Client, Internal]}", &["2", "3"]),
    (Signal::Traces, "include: {match_type: strict, attributes: [{key: env, value: prod}]}", &["2"]),
    (Signal::Traces, "include: {match_type: strict, attributes: [{key: env}]}", &["2", "3"]),
    (Signal::Traces, "include: {match_type: regexp, attributes: [{key: env, value: '^d'}]}", &["3"]),
    (Signal::Traces, "include: {match_type: strict, attributes: [{key: env}, {key: id, value: '3'}]}", &["3"]),
    (Signal::Traces, "include: {match_type: strict, libraries: [{name: lib-a}]}", &["1", "3"]),
    (Signal::Traces, "include: {match_type: strict, libraries: [{name: lib-a, version: '1.1'}]}", &["3"]),
    (Signal::Traces, "include: {match_type: strict, resources: [{key: service.name, value: svcB}]}", &["3"]),
    (Signal::Traces, "exclude: {match_type: strict, span_names: [login]}", &["2"]),
    (Signal::Traces, "include: {match_type: strict, services: [svcA]}\nexclude: {match_type: strict, span_names: [checkout]}", &["1"]),
    (Signal::Traces, "include: {match_type: strict, services: [svcA], span_names: [login]}", &["1"]),
    (Signal::Traces, "include: {match_type: strict, services: [svcC]}", &[]),
    (Signal::Logs, "include: {match_type: strict, log_bodies: [health check]}", &["1"]),
    (Signal::Logs, "include: {match_type: regexp, log_bodies: [fail]}", &["2"]),
    (Signal::Logs, "include: {match_type: strict, log_severity_texts: [ERROR]}", &["2"]),
    (Signal::Logs, "include: {match_type: strict, log_severity_number: {min: WARN}}", &["2"]),
    (Signal::Logs, "include: {match_type: strict, log_severity_number: {min: 9, match_undefined: true}}", &["1", "2", "3"]),
    (Signal::Logs, "exclude: {match_type: strict, log_severity_number: {min: INFO}}", &["3"]),
    (Signal::Logs, "include: {match_type: strict, attributes: [{key: id, value: '2'}]}", &["2"]),
    (Signal::Metrics, "include: {match_type: strict, metric_names: [http.requests]}", &["1", "2"]),
    (Signal::Metrics, "include: {match_type: regexp, metric_names: ['^cp']}", &["3"]),
    (Signal::Metrics, "exclude: {match_type: strict, metric_names: [cpu]}", &["1", "2"]),
    (Signal::Metrics, "include: {match_type: strict, resources: [{key: service.name, value: svcA}]}", &["1", "2", "3"]),
];

#[test]
fn include_and_exclude_select_what_the_collector_selects() {
    for (signal, matching, expected) in SELECTIONS {
        let yaml = format!("actions: [{{key: marked, value: yes, action: insert}}]\n{matching}");
        let config: AttributesConfig = serde_yaml::from_str(&yaml).unwrap();
        config
            .validate()
            .unwrap_or_else(|e| panic!("{matching}: {}: {}", e.key, e.message));
        assert!(config.signals().contains(signal), "{matching}");
        let mut processor = AttributesProcessor::new(&config).unwrap();
        let batch = match signal {
            Signal::Traces => spans(),
            Signal::Logs => logs(),
            Signal::Metrics => metrics(),
        };
        let mut out = Vec::new();
        processor.process(batch, &mut out);
        assert_eq!(marked(&mut out[0]), *expected, "{signal:?} {matching}");
    }
}

/// Properties of one signal limit the processor to it, as the collector refuses
/// `span_names` in a logs pipeline; properties that cannot describe any one item are
/// refused outright.
#[test]
fn match_properties_limit_the_signals() {
    let signals = |matching: &str| {
        let yaml = format!("actions: [{{key: a, value: 1, action: insert}}]\n{matching}");
        let config: AttributesConfig = serde_yaml::from_str(&yaml).unwrap();
        (config.signals(), config.validate().err().map(|e| e.message))
    };
    assert_eq!(signals("").0, &Signal::ALL);
    assert_eq!(
        signals("include: {match_type: strict, span_names: [a]}").0,
        &[Signal::Traces]
    );
    assert_eq!(
        signals("include: {match_type: strict, log_bodies: [a]}").0,
        &[Signal::Logs]
    );
    assert_eq!(
        signals("include: {match_type: strict, metric_names: [a]}").0,
        &[Signal::Metrics]
    );
    assert_eq!(
        signals("include: {match_type: strict, attributes: [{key: a}]}").0,
        &[Signal::Traces, Signal::Logs]
    );
    let (none, error) =
        signals("include: {match_type: strict, span_names: [a]}\nexclude: {match_type: strict, log_bodies: [b]}");
    assert!(none.is_empty());
    assert!(error.unwrap().contains("different signals"));
    let (_, error) = signals("include: {match_type: strict}");
    assert!(error.unwrap().contains("at least one property"));
    let (_, error) = signals("include: {match_type: regexp, span_names: ['(']}");
    assert!(error.unwrap().contains("not a regular expression"));
    let (_, error) = signals("include: {match_type: strict, span_kinds: [SERVERISH]}");
    assert!(error.unwrap().contains("not a span kind"));
}

/// `regexp` reads the text of numbers and booleans, as the collector does, and applies
/// to a library's version too.
#[test]
fn regexp_matches_the_text_of_numbers_and_library_versions() {
    let config: MatchConfig = serde_yaml::from_str(
        "{match_type: regexp, attributes: [{key: code, value: '^5'}], libraries: [{name: '^io\\.', version: '^1\\.'}]}",
    )
    .unwrap();
    let matcher = Matcher::new("include", &config).unwrap();
    let code = |value: i64| KeyValue {
        key: "code".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    };
    let library = |version: &str| InstrumentationScope {
        name: "io.jdbc".into(),
        version: version.into(),
        ..Default::default()
    };
    let item = |attributes: &[KeyValue], scope: &InstrumentationScope| {
        matcher.matches(&Item {
            resource: &[],
            scope: Some(scope),
            attributes,
            kind: ItemKind::Span { name: "a", kind: 1 },
        })
    };
    assert!(item(&[code(503)], &library("1.4")));
    assert!(!item(&[code(200)], &library("1.4")));
    assert!(!item(&[code(503)], &library("2.0")));
}
