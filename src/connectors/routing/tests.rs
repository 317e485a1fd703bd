//! Routing by resource, request, span, log record, metric and data point: each item to
//! the first route it matches, the rest to the defaults or counted; encoded batches
//! divided on the wire the same as decoded ones; mistakes named by key.

use super::*;
use crate::model::Metadata;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric, Gauge, NumberDataPoint};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource(tenant: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![string("tenant", tenant)],
        ..Default::default()
    })
}

fn router(yaml: &str) -> Router {
    let config: RoutingConfig = serde_yaml::from_str(yaml).unwrap();
    Router::new(&config).unwrap()
}

fn refusal(yaml: &str) -> FieldError {
    let config: RoutingConfig = serde_yaml::from_str(yaml).unwrap();
    Router::new(&config).err().expect("the config is refused")
}

/// Spans named `<tenant>-<n>` under one resource per tenant.
fn tenants_spans(tenants: &[&str], per_tenant: usize) -> Vec<ResourceSpans> {
    tenants
        .iter()
        .map(|tenant| ResourceSpans {
            resource: resource(tenant),
            scope_spans: vec![ScopeSpans {
                spans: (0..per_tenant)
                    .map(|n| Span {
                        name: format!("{tenant}-{n}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

/// Per pipeline, the span names it got, sorted.
fn span_names(routed: Routed) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = routed
        .parts
        .into_iter()
        .map(|(pipeline, mut batch)| {
            let mut names: Vec<String> = batch
                .traces_mut()
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(|s| s.name.clone())
                .collect();
            names.sort();
            (pipeline, names)
        })
        .collect();
    out.sort();
    out
}

const TENANTS: &str = r#"
table:
  - condition: attributes["tenant"] == "acme"
    pipelines: [traces/acme]
  - statement: route() where attributes["tenant"] == "ecorp"
    pipelines: [traces/ecorp]
default_pipelines: [traces/other]
"#;

#[test]
fn resources_go_to_their_tenants_pipeline_and_the_rest_to_the_defaults() {
    let router = router(TENANTS);
    let batch = Batch::from_traces(tenants_spans(&["acme", "ecorp", "initech"], 2));
    let routed = router.route(batch);
    assert_eq!(routed.unrouted, 0);
    assert_eq!(
        span_names(routed),
        vec![
            ("traces/acme".into(), vec!["acme-0".into(), "acme-1".into()]),
            (
                "traces/ecorp".into(),
                vec!["ecorp-0".into(), "ecorp-1".into()]
            ),
            (
                "traces/other".into(),
                vec!["initech-0".into(), "initech-1".into()]
            ),
        ]
    );
}

#[test]
fn an_encoded_batch_is_divided_on_the_wire_as_the_decoded_one_is() {
    let router = router(TENANTS);
    let resources = tenants_spans(&["acme", "initech", "ecorp", "acme"], 3);
    let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: resources.clone(),
    };
    let encoded =
        Batch::from_encoded_parts(Signal::Traces, vec![request.encode_to_vec().into()], 12);
    let routed = router.route(encoded);
    assert!(
        routed.parts.iter().all(|(_, b)| b.is_encoded()),
        "routing by resource leaves the bytes as they came"
    );
    let counts: Vec<usize> = routed.parts.iter().map(|(_, b)| b.items()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 12);
    assert_eq!(
        span_names(routed),
        span_names(router.route(Batch::from_traces(resources)))
    );
}

#[test]
fn with_no_defaults_unmatched_items_are_counted_as_unrouted() {
    let router = router(
        r#"
table:
  - condition: attributes["tenant"] == "acme"
    pipelines: [traces/acme]
"#,
    );
    let routed = router.route(Batch::from_traces(tenants_spans(&["acme", "ecorp"], 3)));
    assert_eq!(routed.unrouted, 3);
    assert_eq!(
        span_names(routed),
        vec![(
            "traces/acme".into(),
            vec!["acme-0".into(), "acme-1".into(), "acme-2".into()]
        )]
    );
}

#[test]
fn the_first_matching_route_wins_and_a_route_may_name_several_pipelines() {
    let router = router(
        r#"
table:
  - condition: attributes["tenant"] == "acme"
    pipelines: [traces/acme, traces/audit]
  - condition: attributes["tenant"] != nil
    pipelines: [traces/any]
"#,
    );
    let routed = router.route(Batch::from_traces(tenants_spans(&["acme", "ecorp"], 1)));
    assert_eq!(
        span_names(routed),
        vec![
            ("traces/acme".into(), vec!["acme-0".into()]),
            ("traces/any".into(), vec!["ecorp-0".into()]),
            ("traces/audit".into(), vec!["acme-0".into()]),
        ]
    );
}

#[test]
fn span_routes_divide_a_resource_and_keep_its_resource_and_scope() {
    let router = router(
        r#"
table:
  - context: span
    condition: IsMatch(name, "-0$")
    pipelines: [traces/first]
  - condition: attributes["tenant"] == "acme"
    pipelines: [traces/acme]
"#,
    );
    let mut resources = tenants_spans(&["acme"], 3);
    resources[0].scope_spans[0].scope = Some(Default::default());
    resources[0].scope_spans[0].scope.as_mut().unwrap().name = "lib".into();
    let routed = router.route(Batch::from_traces(resources));
    for (_, batch) in &routed.parts {
        let mut batch = batch.clone();
        let rs = &batch.traces_mut()[0];
        assert_eq!(rs.resource, resource("acme"));
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "lib");
    }
    assert_eq!(
        span_names(routed),
        vec![
            ("traces/acme".into(), vec!["acme-1".into(), "acme-2".into()]),
            ("traces/first".into(), vec!["acme-0".into()]),
        ]
    );
}

#[test]
fn request_routes_read_the_metadata_the_receiver_kept() {
    let router = router(
        r#"
table:
  - context: request
    condition: request["X-Tenant"] == "acme"
    pipelines: [traces/acme]
default_pipelines: [traces/other]
"#,
    );
    let mut acme = Batch::from_traces(tenants_spans(&["x"], 1));
    acme.set_metadata(Some(Metadata::from_pairs([(
        "x-tenant".into(),
        "acme".into(),
    )])));
    let routed = router.route(acme);
    assert_eq!(routed.parts[0].0, "traces/acme");
    assert_eq!(
        routed.parts[0].1.metadata().and_then(|m| m.get("x-tenant")),
        Some("acme"),
        "the metadata goes on with the data"
    );
    let routed = router.route(Batch::from_traces(tenants_spans(&["x"], 1)));
    assert_eq!(routed.parts[0].0, "traces/other");
}

#[test]
fn log_routes_send_low_severity_to_cheap_storage() {
    let router = router(
        r#"
table:
  - context: log
    condition: severity_number < SEVERITY_NUMBER_ERROR
    pipelines: [logs/cheap]
default_pipelines: [logs/important]
"#,
    );
    let records = [9, 17, 5, 21]
        .map(|severity_number| LogRecord {
            severity_number,
            ..Default::default()
        })
        .to_vec();
    let batch = Batch::from_logs(vec![ResourceLogs {
        resource: resource("acme"),
        scope_logs: vec![ScopeLogs {
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    }]);
    let mut severities: Vec<(String, Vec<i32>)> = router
        .route(batch)
        .parts
        .into_iter()
        .map(|(p, mut b)| {
            let s = b.logs_mut()[0].scope_logs[0]
                .log_records
                .iter()
                .map(|r| r.severity_number)
                .collect();
            (p, s)
        })
        .collect();
    severities.sort();
    assert_eq!(
        severities,
        vec![
            ("logs/cheap".into(), vec![9, 5]),
            ("logs/important".into(), vec![17, 21])
        ]
    );
}

fn gauge(name: &str, hosts: &[&str]) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: hosts
                .iter()
                .map(|h| NumberDataPoint {
                    attributes: vec![string("host", h)],
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    }
}

/// Per pipeline, `metric/host` of every point it got.
fn points(routed: Routed) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = routed
        .parts
        .into_iter()
        .map(|(p, mut b)| {
            let mut names = Vec::new();
            for m in b
                .metrics_mut()
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
            {
                if let Some(metric::Data::Gauge(g)) = &m.data {
                    for point in &g.data_points {
                        let host = crate::model::any_value_text(point.attributes[0].value.as_ref());
                        names.push(format!("{}/{host}", m.name));
                    }
                }
            }
            (p, names)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn metric_and_data_point_routes_divide_metrics_as_they_say() {
    let router = router(
        r#"
table:
  - context: datapoint
    condition: attributes["host"] == "db"
    pipelines: [metrics/db]
  - context: metric
    condition: name == "cpu"
    pipelines: [metrics/cpu]
default_pipelines: [metrics/rest]
"#,
    );
    let batch = Batch::from_metrics(vec![ResourceMetrics {
        resource: resource("acme"),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![gauge("cpu", &["web", "db"]), gauge("mem", &["web", "db"])],
            ..Default::default()
        }],
        ..Default::default()
    }]);
    assert_eq!(
        points(router.route(batch)),
        vec![
            ("metrics/cpu".into(), vec!["cpu/web".into()]),
            ("metrics/db".into(), vec!["cpu/db".into(), "mem/db".into()]),
            ("metrics/rest".into(), vec!["mem/web".into()]),
        ]
    );
}

#[test]
fn mistakes_are_refused_with_their_key() {
    let cases = [
        ("table: []", "table", "at least one route"),
        (
            "{match_once: true, table: [{condition: 'true', pipelines: [traces/a]}]}",
            "match_once",
            "v0.120.0",
        ),
        (
            "table: [{statement: 'attributes[\"a\"] == 1', pipelines: [traces/a]}]",
            "table.0.statement",
            "route() where",
        ),
        (
            "table: [{context: request, statement: 'route() where true', pipelines: [traces/a]}]",
            "table.0.statement",
            "takes a `condition`",
        ),
        (
            "table: [{context: request, condition: 'request[\"a\"] > \"b\"', pipelines: [traces/a]}]",
            "table.0.condition",
            "the only form",
        ),
        (
            "table: [{condition: 'attributes[\"a\"] = 1', pipelines: [traces/a]}]",
            "table.0.condition",
            "column",
        ),
        (
            "table: [{condition: 'true', statement: 'route() where true', pipelines: [traces/a]}]",
            "table.0.condition",
            "exactly one",
        ),
        ("table: [{condition: 'true', pipelines: []}]", "table.0.pipelines", "at least one"),
        (
            "table: [{condition: 'true', pipelines: [traces/a, traces/a]}]",
            "table.0.pipelines",
            "`traces/a` is listed twice",
        ),
        (
            "{default_pipelines: [traces/b, traces/b], table: [{condition: 'true', pipelines: [traces/a]}]}",
            "default_pipelines",
            "listed twice",
        ),
    ];
    for (yaml, key, message) in cases {
        let error = refusal(yaml);
        assert_eq!(error.key, key, "{yaml}");
        assert!(error.message.contains(message), "{yaml}: {}", error.message);
    }
}

#[test]
fn item_contexts_must_belong_to_the_signal() {
    let config: RoutingConfig = serde_yaml::from_str(
        "table: [{context: span, condition: 'name == \"a\"', pipelines: [logs/a]}]",
    )
    .unwrap();
    assert!(config.routes(Signal::Traces).is_ok());
    let error = config.routes(Signal::Logs).unwrap_err();
    assert!(
        error.contains("table[0]") && error.contains("span"),
        "{error}"
    );
}
