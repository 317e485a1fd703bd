//! Connectors in whole configurations: the pipelines on both sides resolved, and every
//! misuse refused at load naming the key and line — used on one side only, a signal
//! pair the connector does not connect, a cycle, a routing table naming a pipeline that
//! does not receive from it, an unknown type or key.

use super::*;
use crate::config::{ComponentId, ConfigError, PipelineId};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.yaml")
}

/// A config with `connectors` and `pipelines` (YAML at two levels of indentation).
fn config(connectors: &str, pipelines: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nconnectors:\n{connectors}service:\n  pipelines:\n{pipelines}"
    )
}

fn refused(text: &str) -> ConfigError {
    parse(text).expect_err("the config is refused")
}

#[test]
fn a_connector_joins_the_pipelines_that_list_it_on_either_side() {
    let text = config(
        "  forward:\n  spanmetrics:\n",
        "    traces:\n      receivers: [otlp]\n      exporters: [forward, spanmetrics, debug]\n\
         \x20   traces/b:\n      receivers: [forward]\n      exporters: [debug]\n\
         \x20   metrics:\n      receivers: [otlp, spanmetrics]\n      exporters: [debug]\n",
    );
    let config = parse(&text).unwrap();
    let id = |s: &str| ComponentId::parse(s).unwrap();
    let traces = &config.pipelines[&PipelineId::parse("traces").unwrap()];
    assert_eq!(traces.exporters, vec![id("debug")]);
    assert_eq!(
        traces.connectors_out,
        vec![id("forward"), id("spanmetrics")]
    );
    let metrics = &config.pipelines[&PipelineId::parse("metrics").unwrap()];
    assert_eq!(metrics.receivers, vec![id("otlp")]);
    assert_eq!(metrics.connectors_in, vec![id("spanmetrics")]);
}

#[test]
fn misuses_are_refused_with_key_and_line() {
    let cases: &[(&str, &str, usize, &[&str])] = &[
        // exporter only
        (
            "  forward:\n",
            "    traces:\n      receivers: [otlp]\n      exporters: [forward]\n",
            13,
            &["service.pipelines.traces.exporters", "`forward` is an exporter here, but no pipeline lists it under `receivers`"],
        ),
        // receiver only
        (
            "  forward:\n",
            "    traces:\n      receivers: [forward]\n      exporters: [debug]\n",
            12,
            &["service.pipelines.traces.receivers", "no pipeline lists it under `exporters`"],
        ),
        // a pair the connector does not connect
        (
            "  forward:\n",
            "    traces:\n      receivers: [otlp]\n      exporters: [forward]\n\
             \x20   logs:\n      receivers: [forward]\n      exporters: [debug]\n",
            13,
            &["service.pipelines.traces.exporters", "cannot connect this pipeline with `logs`", "traces are not logs"],
        ),
        (
            "  spanmetrics:\n",
            "    logs:\n      receivers: [otlp]\n      exporters: [spanmetrics]\n\
             \x20   metrics:\n      receivers: [spanmetrics]\n      exporters: [debug]\n",
            15,
            &["service.pipelines.metrics.receivers", "spanmetrics turns traces into metrics, not logs into metrics"],
        ),
        // a cycle
        (
            "  forward/a:\n  forward/b:\n",
            "    traces:\n      receivers: [otlp]\n      exporters: [forward/a]\n\
             \x20   traces/x:\n      receivers: [forward/a, forward/b]\n      exporters: [forward/b]\n",
            17,
            &["service.pipelines.traces/x.exporters", "cycle: traces/x → traces/x"],
        ),
        // a routing table naming a pipeline that does not receive from it
        (
            "  routing:\n    table:\n      - condition: attributes[\"t\"] == \"a\"\n        pipelines: [traces/a]\n",
            "    traces:\n      receivers: [otlp]\n      exporters: [routing]\n\
             \x20   traces/a:\n      receivers: [otlp]\n      exporters: [debug]\n\
             \x20   traces/b:\n      receivers: [routing]\n      exporters: [debug]\n",
            11,
            &["connectors.routing.table", "pipeline `traces/a` does not list `routing` under its `receivers`"],
        ),
        (
            "  routing:\n    table:\n      - condition: attributes[\"t\"] == \"a\"\n        pipelines: [traces/b]\n    default_pipelines: [traces/nope]\n",
            "    traces:\n      receivers: [otlp]\n      exporters: [routing]\n\
             \x20   traces/b:\n      receivers: [routing]\n      exporters: [debug]\n",
            12,
            &["connectors.routing.default_pipelines", "`traces/nope` is not a pipeline"],
        ),
        // a routing table on spans used for logs
        (
            "  routing:\n    table:\n      - context: span\n        condition: name == \"a\"\n        pipelines: [logs/b]\n",
            "    logs:\n      receivers: [otlp]\n      exporters: [routing]\n\
             \x20   logs/b:\n      receivers: [routing]\n      exporters: [debug]\n",
            17,
            &["service.pipelines.logs.exporters", "table[0] has context `span`, which logs do not have"],
        ),
    ];
    for (connectors, pipelines, line, parts) in cases {
        let error = refused(&config(connectors, pipelines));
        let text = error.to_string();
        for part in *parts {
            assert!(text.contains(part), "{text}\n  should contain: {part}");
        }
        assert_eq!(error.line, Some(*line), "{text}");
    }
}

#[test]
fn unknown_connector_types_and_keys_are_refused() {
    let error = refused(&config(
        "  count:\n",
        "    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
    ));
    assert!(
        error.to_string().contains("connectors.count: unknown connector type `count`; known types: forward, routing, spanmetrics"),
        "{error}"
    );
    let error = refused(&config(
        "  forward:\n    tabel: []\n",
        "    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
    ));
    assert!(error.to_string().contains("tabel"), "{error}");
    assert_eq!(error.line, Some(9));
}
