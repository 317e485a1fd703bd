//! PII placed in every field of every signal never reaches the exporter.

use crate::harness::{passthrough_config, post, Sieve};
use crate::sink::Sink;
use std::time::Duration;

const PII: &[&str] = &[
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "203.0.113.77",
    "123-45-6789",
    "+14155552671",
    "AKIAIOSFODNN7EXAMPLE",
    "Bearer sk_live_abcdef123456",
];

fn attrs() -> String {
    PII.iter()
        .enumerate()
        .map(|(i, p)| format!(r#"{{"key":"a{i}","value":{{"stringValue":"x {p} y"}}}}"#))
        .collect::<Vec<_>>()
        .join(",")
}

fn nested() -> String {
    format!(
        r#"{{"key":"nested","value":{{"kvlistValue":{{"values":[{{"key":"deep","value":{{"arrayValue":{{"values":[{{"stringValue":"{}"}}]}}}}}}]}}}}}}"#,
        PII[0]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_in_every_field_of_every_signal_is_redacted() {
    let sink = Sink::start().await;
    let config = passthrough_config(&sink.grpc_endpoint(), "redaction, batch", "", "").replace(
        "processors:\n",
        "processors:\n  redaction:\n    allow_all_keys: true\n",
    );
    let sieve = Sieve::start(&config);
    let (a, n) = (attrs(), nested());
    let resource = format!(r#""resource":{{"attributes":[{a}]}}"#);
    let scope = format!(r#""scope":{{"name":"s","attributes":[{a}]}}"#);
    let traces = format!(
        r#"{{"resourceSpans":[{{{resource},"scopeSpans":[{{{scope},"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /u/{p0}","attributes":[{a},{n},{{"key":"clean","value":{{"stringValue":"GET /health"}}}}],
        "events":[{{"name":"login {p0}","attributes":[{a}]}}],"links":[{{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175","attributes":[{a}]}}]}}]}}]}}]}}"#,
        p0 = PII[0]
    );
    let logs = format!(
        r#"{{"resourceLogs":[{{{resource},"scopeLogs":[{{{scope},"logRecords":[{{"body":{{"stringValue":"user {p0} paid with {p1}"}},"attributes":[{a},{n}]}},
        {{"body":{{"kvlistValue":{{"values":[{a}]}}}}}}]}}]}}]}}"#,
        p0 = PII[0],
        p1 = PII[1]
    );
    let metrics = format!(
        r#"{{"resourceMetrics":[{{{resource},"scopeMetrics":[{{{scope},"metrics":[{{"name":"requests","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{{"asInt":"3","attributes":[{a}]}}]}}}},
        {{"name":"latency","histogram":{{"aggregationTemporality":2,"dataPoints":[{{"count":"1","sum":0.5,"bucketCounts":["1"],"attributes":[{a}]}}]}}}}]}}]}}]}}"#
    );
    for (path, body) in [
        ("/v1/traces", traces),
        ("/v1/logs", logs),
        ("/v1/metrics", metrics),
    ] {
        let (status, _, response) = post(
            sieve.http,
            path,
            "application/json",
            None,
            body.into_bytes(),
        )
        .await;
        assert_eq!(
            status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&response)
        );
    }
    sink.wait_for(Duration::from_secs(20), "all three signals", |r| {
        r.span_count() == 1 && r.log_count() == 2 && !r.metrics.is_empty()
    })
    .await;
    let received = sink.with(|r| format!("{:?}{:?}{:?}", r.traces, r.logs, r.metrics));
    for pii in PII {
        let needle = pii.split_whitespace().last().unwrap();
        assert!(!received.contains(needle), "`{pii}` reached the exporter");
    }
    assert!(
        received.contains("GET /health"),
        "clean values pass untouched"
    );
    assert!(received.contains("****"), "redaction masks in place");
    for rule in [
        "email",
        "credit_card",
        "ipv4",
        "us_ssn",
        "phone",
        "aws_access_key",
        "bearer_token",
    ] {
        let counted = sieve.metric(
            "sieve_processor_redactions_total",
            &[("rule", rule), ("action", "mask")],
        );
        assert!(counted > 0.0, "{rule} redactions are counted");
    }
}
