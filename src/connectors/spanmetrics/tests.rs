use super::config::{Dimension, ExponentialConfig, Temporality};
use super::*;
use crate::model::{any_value_text, Payload, Signal};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric::Data, number_data_point, Exemplar, ResourceMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;
const MINUTE: u64 = 60 * SECOND;
const CALLS: &str = "traces.span.metrics.calls";
const DURATION: &str = "traces.span.metrics.duration";
const EVENTS: &str = "traces.span.metrics.events";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const UNSET: i32 = 0;
const OK: i32 = 1;
const ERROR: i32 = 2;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(value: &str) -> Value {
    Value::StringValue(value.into())
}

fn span(name: &str, kind: i32, status: i32, duration_ns: u64) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![9; 8],
        name: name.into(),
        kind,
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + duration_ns,
        status: Some(Status {
            code: status,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_attributes(mut span: Span, attributes: Vec<KeyValue>) -> Span {
    span.attributes = attributes;
    span
}

fn resource(attributes: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn service(name: &str, spans: Vec<Span>) -> ResourceSpans {
    resource(vec![kv("service.name", text(name))], spans)
}

fn encode(resource_spans: &[ResourceSpans]) -> Bytes {
    let request = ExportTraceServiceRequest {
        resource_spans: resource_spans.to_vec(),
    };
    Bytes::from(request.encode_to_vec())
}

fn encoded(resource_spans: &[ResourceSpans]) -> Batch {
    let items = Batch::from_traces(resource_spans.to_vec()).items();
    Batch::from_encoded_parts(Signal::Traces, vec![encode(resource_spans)], items)
}

fn delta() -> SpanMetricsConfig {
    SpanMetricsConfig {
        aggregation_temporality: Temporality::Delta,
        ..SpanMetricsConfig::default()
    }
}

fn aggregate(config: &SpanMetricsConfig, resource_spans: &[ResourceSpans]) -> Aggregator {
    let mut aggregator = Aggregator::new(config);
    assert!(config.validate().is_ok());
    aggregator.add_at(&encoded(resource_spans), T0);
    aggregator
}

/// A flushed data point, flattened.
#[derive(Debug, Clone, PartialEq)]
struct Flat {
    resource: String,
    metric: String,
    attributes: String,
    start: u64,
    time: u64,
    point: Point,
    exemplars: Vec<Exemplar>,
}

#[derive(Debug, Clone, PartialEq)]
enum Point {
    Sum(i64),
    Histogram {
        count: u64,
        sum: f64,
        buckets: Vec<u64>,
    },
    Exponential {
        count: u64,
        sum: f64,
        zero: u64,
        buckets: Vec<u64>,
        min: Option<f64>,
        max: Option<f64>,
    },
}

fn attributes_text(attributes: &[KeyValue]) -> String {
    let pairs: Vec<String> = attributes
        .iter()
        .map(|a| format!("{}={}", a.key, any_value_text(a.value.as_ref())))
        .collect();
    pairs.join(",")
}

fn resource_metrics(batch: Batch) -> Vec<ResourceMetrics> {
    assert_eq!(batch.signal(), Signal::Metrics);
    match batch.payload() {
        Payload::Metrics(resource_metrics) => resource_metrics.clone(),
        _ => panic!("a flush is decoded metrics"),
    }
}

fn flatten(batch: Option<Batch>) -> Vec<Flat> {
    let mut out = Vec::new();
    for rm in resource_metrics(batch.expect("something to flush")) {
        let resource = attributes_text(&rm.resource.as_ref().unwrap().attributes);
        for sm in &rm.scope_metrics {
            assert_eq!(sm.scope.as_ref().unwrap().name, "spanmetricsconnector");
            for metric in &sm.metrics {
                let flat =
                    |attributes: &[KeyValue], start, time, point, exemplars: &[Exemplar]| Flat {
                        resource: resource.clone(),
                        metric: metric.name.clone(),
                        attributes: attributes_text(attributes),
                        start,
                        time,
                        point,
                        exemplars: exemplars.to_vec(),
                    };
                match metric.data.as_ref().unwrap() {
                    Data::Sum(sum) => {
                        assert!(sum.is_monotonic);
                        for p in &sum.data_points {
                            let Some(number_data_point::Value::AsInt(value)) = p.value else {
                                panic!("calls are integers")
                            };
                            out.push(flat(
                                &p.attributes,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                Point::Sum(value),
                                &p.exemplars,
                            ));
                        }
                    }
                    Data::Histogram(histogram) => {
                        for p in &histogram.data_points {
                            assert_eq!(p.count, p.bucket_counts.iter().sum::<u64>());
                            let point = Point::Histogram {
                                count: p.count,
                                sum: p.sum.unwrap(),
                                buckets: p.bucket_counts.clone(),
                            };
                            out.push(flat(
                                &p.attributes,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                point,
                                &p.exemplars,
                            ));
                        }
                    }
                    Data::ExponentialHistogram(histogram) => {
                        for p in &histogram.data_points {
                            let positive = p.positive.as_ref().unwrap();
                            let point = Point::Exponential {
                                count: p.count,
                                sum: p.sum.unwrap(),
                                zero: p.zero_count,
                                buckets: positive.bucket_counts.clone(),
                                min: p.min,
                                max: p.max,
                            };
                            out.push(flat(
                                &p.attributes,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                point,
                                &p.exemplars,
                            ));
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    out
}

/// The point of `metric` whose attributes are `attributes`.
fn find<'a>(points: &'a [Flat], metric: &str, attributes: &str) -> &'a Flat {
    let found: Vec<&Flat> = points
        .iter()
        .filter(|p| p.metric == metric && p.attributes == attributes)
        .collect();
    assert_eq!(found.len(), 1, "{metric} {{{attributes}}} in {points:#?}");
    found[0]
}

fn sum(points: &[Flat], metric: &str, attributes: &str) -> i64 {
    match find(points, metric, attributes).point {
        Point::Sum(value) => value,
        ref other => panic!("{other:?}"),
    }
}

fn histogram(points: &[Flat], attributes: &str) -> (u64, f64, Vec<u64>) {
    match &find(points, DURATION, attributes).point {
        Point::Histogram {
            count,
            sum,
            buckets,
        } => (*count, *sum, buckets.clone()),
        other => panic!("{other:?}"),
    }
}

/// Attributes of a series with the four built-in dimensions, then `more`.
fn series(service: &str, name: &str, kind: &str, status: &str, more: &str) -> String {
    let base = format!("service.name={service},span.name={name},span.kind=SPAN_KIND_{kind},status.code=STATUS_CODE_{status}");
    if more.is_empty() {
        base
    } else {
        format!("{base},{more}")
    }
}

/// Default buckets (ms): 2 4 6 8 10 50 100 200 400 800 1000 1400 2000 5000 10000 15000.
fn buckets(at: &[(usize, u64)]) -> Vec<u64> {
    let mut counts = vec![0; 17];
    for &(bucket, count) in at {
        counts[bucket] = count;
    }
    counts
}

fn example_spans() -> Vec<ResourceSpans> {
    let mut backwards = span("GET /cart", SERVER, UNSET, 0);
    backwards.end_time_unix_nano = T0 - MS; // ends before it starts: duration 0
    vec![
        service(
            "checkout",
            vec![
                span("GET /cart", SERVER, UNSET, 2 * MS),
                span("GET /cart", SERVER, UNSET, 2 * MS + 1),
                span("GET /cart", SERVER, UNSET, 4 * MS),
                span("GET /cart", SERVER, UNSET, 15 * SECOND),
                span("GET /cart", SERVER, UNSET, 15 * SECOND + 1),
                backwards,
                span("GET /cart", SERVER, ERROR, 10 * MS),
                span("SELECT", CLIENT, OK, 50 * MS),
            ],
        ),
        service(
            "payment",
            vec![
                span("charge", SERVER, UNSET, 100 * MS),
                span("charge", SERVER, UNSET, 100 * MS),
                span("charge", SERVER, UNSET, 100 * MS),
            ],
        ),
    ]
}

#[test]
fn counts_calls_and_buckets_with_inclusive_upper_bounds() {
    let config = SpanMetricsConfig::default();
    let mut aggregator = aggregate(&config, &example_spans());
    assert_eq!(aggregator.series(), 4);

    // cumulative: a new calls series is sent as 0 first, its count from the next flush
    let first = flatten(aggregator.flush(T0 + MINUTE));
    let cart = series("checkout", "GET /cart", "SERVER", "UNSET", "");
    assert_eq!(sum(&first, CALLS, &cart), 0);
    let (count, total, counts) = histogram(&first, &cart);
    assert_eq!(count, 6);
    assert_eq!(counts, buckets(&[(0, 2), (1, 2), (15, 1), (16, 1)]));
    assert!((total - (2.0 + 2.000001 + 4.0 + 15_000.0 + 15_000.000001)).abs() < 1e-6);

    let second = flatten(aggregator.flush(T0 + 2 * MINUTE));
    assert_eq!(sum(&second, CALLS, &cart), 6);
    let error = series("checkout", "GET /cart", "SERVER", "ERROR", "");
    assert_eq!(sum(&second, CALLS, &error), 1);
    assert_eq!(histogram(&second, &error).2, buckets(&[(4, 1)]));
    let select = series("checkout", "SELECT", "CLIENT", "OK", "");
    assert_eq!(sum(&second, CALLS, &select), 1);
    assert_eq!(histogram(&second, &select).2, buckets(&[(5, 1)]));
    let charge = series("payment", "charge", "SERVER", "UNSET", "");
    assert_eq!(sum(&second, CALLS, &charge), 3);
    assert_eq!(histogram(&second, &charge), (3, 300.0, buckets(&[(6, 3)])));

    let point = find(&second, CALLS, &charge);
    assert_eq!((point.start, point.time), (T0, T0 + 2 * MINUTE));
    assert_eq!(point.resource, "service.name=payment");
    assert_eq!(second.len(), 8, "calls and duration of four series");
    let duration = find(&second, DURATION, &charge);
    assert_eq!(duration.metric, DURATION);
}

#[test]
fn the_duration_metric_carries_its_unit_and_bounds() {
    let config = SpanMetricsConfig {
        histogram: config::HistogramConfig {
            unit: config::Unit::Seconds,
            explicit: Some(config::ExplicitConfig {
                buckets: Some(vec![
                    std::time::Duration::from_millis(10),
                    std::time::Duration::from_millis(250),
                ]),
            }),
            ..Default::default()
        },
        ..delta()
    };
    let mut aggregator = aggregate(
        &config,
        &[service("a", vec![span("x", SERVER, UNSET, 250 * MS)])],
    );
    let metrics = resource_metrics(aggregator.flush(T0 + MINUTE).unwrap());
    let duration = &metrics[0].scope_metrics[0].metrics[1];
    assert_eq!(
        (duration.name.as_str(), duration.unit.as_str()),
        (DURATION, "s")
    );
    let Some(Data::Histogram(h)) = &duration.data else {
        panic!()
    };
    assert_eq!(h.data_points[0].explicit_bounds, vec![0.01, 0.25]);
    assert_eq!(h.data_points[0].bucket_counts, vec![0, 1, 0]);
    assert_eq!(h.data_points[0].sum, Some(0.25));
    assert_eq!(h.aggregation_temporality, 1, "delta");
}

#[test]
fn dimensions_come_from_the_span_then_the_resource_then_the_default() {
    let config = SpanMetricsConfig {
        dimensions: vec![
            Dimension {
                name: "http.method".into(),
                default: Some("GET".into()),
            },
            Dimension {
                name: "region".into(),
                default: None,
            },
        ],
        ..delta()
    };
    let input = [
        resource(
            vec![kv("service.name", text("a")), kv("region", text("eu"))],
            vec![
                with_attributes(
                    span("x", SERVER, UNSET, MS),
                    vec![kv("http.method", text("POST"))],
                ),
                span("x", SERVER, UNSET, MS),
                with_attributes(span("x", SERVER, UNSET, MS), vec![kv("region", text("us"))]),
            ],
        ),
        service("b", vec![span("x", SERVER, UNSET, MS)]),
    ];
    let mut aggregator = aggregate(&config, &input);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let x = |service, more| series(service, "x", "SERVER", "UNSET", more);
    assert_eq!(
        sum(&points, CALLS, &x("a", "http.method=POST,region=eu")),
        1
    );
    assert_eq!(sum(&points, CALLS, &x("a", "http.method=GET,region=eu")), 1);
    assert_eq!(sum(&points, CALLS, &x("a", "http.method=GET,region=us")), 1);
    // no region anywhere and no default: the dimension is left out
    assert_eq!(sum(&points, CALLS, &x("b", "http.method=GET")), 1);
}

#[test]
fn dimension_values_keep_their_type() {
    let config = SpanMetricsConfig {
        dimensions: vec![Dimension {
            name: "http.response.status_code".into(),
            default: None,
        }],
        ..delta()
    };
    let status = |value| vec![kv("http.response.status_code", value)];
    let input = [service(
        "a",
        vec![
            with_attributes(span("x", SERVER, UNSET, MS), status(Value::IntValue(200))),
            with_attributes(span("x", SERVER, UNSET, MS), status(Value::IntValue(200))),
            with_attributes(span("x", SERVER, UNSET, MS), status(Value::IntValue(503))),
        ],
    )];
    let mut aggregator = aggregate(&config, &input);
    let metrics = resource_metrics(aggregator.flush(T0 + MINUTE).unwrap());
    let Some(Data::Sum(calls)) = &metrics[0].scope_metrics[0].metrics[0].data else {
        panic!()
    };
    let last = calls.data_points[0].attributes.last().unwrap();
    assert_eq!(
        last.value.as_ref().unwrap().value,
        Some(Value::IntValue(200))
    );
    assert_eq!(calls.data_points.len(), 2);
}

#[test]
fn excluded_dimensions_merge_their_series() {
    let config = SpanMetricsConfig {
        exclude_dimensions: vec!["status.code".into(), "span.kind".into()],
        ..delta()
    };
    let input = [service(
        "a",
        vec![
            span("x", SERVER, OK, MS),
            span("x", CLIENT, ERROR, MS),
            span("x", SERVER, UNSET, MS),
        ],
    )];
    let mut aggregator = aggregate(&config, &input);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    assert_eq!(sum(&points, CALLS, "service.name=a,span.name=x"), 3);
    assert_eq!(points.len(), 2);
}

#[test]
fn resource_key_attributes_merge_resources_under_the_first() {
    let config = SpanMetricsConfig {
        resource_metrics_key_attributes: vec!["service.name".into()],
        ..delta()
    };
    let process = |pid| {
        resource(
            vec![
                kv("service.name", text("a")),
                kv("process.pid", Value::IntValue(pid)),
            ],
            vec![span("x", SERVER, UNSET, MS)],
        )
    };
    let mut aggregator = aggregate(&config, &[process(1), process(2)]);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let x = find(&points, CALLS, &series("a", "x", "SERVER", "UNSET", ""));
    assert_eq!(x.point, Point::Sum(2));
    assert_eq!(x.resource, "service.name=a,process.pid=1");

    // without key attributes, each attribute set is a resource; their order does not matter
    let mut aggregator = aggregate(&delta(), &[process(1), process(2)]);
    let reordered = resource(
        vec![
            kv("process.pid", Value::IntValue(1)),
            kv("service.name", text("a")),
        ],
        vec![span("x", SERVER, UNSET, MS)],
    );
    aggregator.add_at(&encoded(&[reordered]), T0);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let resources: Vec<(&str, &Point)> = points
        .iter()
        .filter(|p| p.metric == CALLS)
        .map(|p| (p.resource.as_str(), &p.point))
        .collect();
    assert_eq!(
        resources,
        vec![
            ("service.name=a,process.pid=1", &Point::Sum(2)),
            ("service.name=a,process.pid=2", &Point::Sum(1)),
        ]
    );
}

#[test]
fn spans_without_a_service_name_are_skipped_and_counted() {
    let input = [
        resource(
            vec![kv("host.name", text("h"))],
            vec![span("x", SERVER, UNSET, MS); 2],
        ),
        service("a", vec![span("x", SERVER, UNSET, MS)]),
    ];
    let mut aggregator = Aggregator::new(&delta());
    assert_eq!(aggregator.add_at(&encoded(&input), T0), 3);
    assert_eq!(aggregator.take_ignored(), 2);
    assert_eq!(aggregator.take_ignored(), 0);
    assert_eq!(aggregator.series(), 1);
}

#[test]
fn cumulative_sends_totals_and_delta_sends_increments() {
    let first = [service("a", vec![span("x", SERVER, UNSET, MS); 2])];
    let second = [service(
        "a",
        vec![
            span("x", SERVER, UNSET, MS),
            span("x", SERVER, UNSET, MS),
            span("x", SERVER, UNSET, MS),
            span("y", SERVER, UNSET, MS),
        ],
    )];
    let (x, y) = (
        series("a", "x", "SERVER", "UNSET", ""),
        series("a", "y", "SERVER", "UNSET", ""),
    );
    let (added, flushed, added_again, flushed_again) =
        (T0, T0 + MINUTE, T0 + 90 * SECOND, T0 + 2 * MINUTE);

    let mut cumulative = Aggregator::new(&SpanMetricsConfig::default());
    cumulative.add_at(&encoded(&first), added);
    let points = flatten(cumulative.flush(flushed));
    assert_eq!(sum(&points, CALLS, &x), 0);
    assert_eq!(histogram(&points, &x).0, 2);
    cumulative.add_at(&encoded(&second), added_again);
    let points = flatten(cumulative.flush(flushed_again));
    let calls = find(&points, CALLS, &x);
    assert_eq!(
        (&calls.point, calls.start, calls.time),
        (&Point::Sum(5), added, flushed_again)
    );
    assert_eq!(histogram(&points, &x).0, 5);
    assert_eq!(sum(&points, CALLS, &y), 0);
    assert_eq!(histogram(&points, &y).0, 1);
    // nothing new: the totals again
    let points = flatten(cumulative.flush(T0 + 3 * MINUTE));
    assert_eq!((sum(&points, CALLS, &x), sum(&points, CALLS, &y)), (5, 1));

    let mut delta_aggregator = Aggregator::new(&delta());
    delta_aggregator.add_at(&encoded(&first), added);
    let points = flatten(delta_aggregator.flush(flushed));
    let calls = find(&points, CALLS, &x);
    assert_eq!(
        (&calls.point, calls.start, calls.time),
        (&Point::Sum(2), added, flushed)
    );
    delta_aggregator.add_at(&encoded(&second), added_again);
    let points = flatten(delta_aggregator.flush(flushed_again));
    let calls = find(&points, CALLS, &x);
    assert_eq!(
        (&calls.point, calls.start, calls.time),
        (&Point::Sum(3), flushed, flushed_again)
    );
    assert_eq!(histogram(&points, &x).0, 3);
    let calls = find(&points, CALLS, &y);
    assert_eq!((&calls.point, calls.start), (&Point::Sum(1), added_again));
    // nothing new: nothing to send, and nothing held
    assert!(delta_aggregator.flush(T0 + 3 * MINUTE).is_none());
    assert_eq!(delta_aggregator.series(), 0);
    assert_eq!(delta_aggregator.held_bytes(), 0);
}

#[test]
fn idle_resources_and_series_expire() {
    let config = SpanMetricsConfig {
        metrics_expiration: std::time::Duration::from_secs(300),
        ..SpanMetricsConfig::default()
    };
    let mut aggregator = Aggregator::new(&config);
    aggregator.add_at(
        &encoded(&[service("a", vec![span("x", SERVER, UNSET, MS)])]),
        T0,
    );
    aggregator.add_at(
        &encoded(&[service("b", vec![span("x", SERVER, UNSET, MS)])]),
        T0 + 4 * MINUTE,
    );
    let points = flatten(aggregator.flush(T0 + 4 * MINUTE));
    assert_eq!(points.len(), 4, "both resources");
    let points = flatten(aggregator.flush(T0 + 5 * MINUTE));
    assert!(
        points.iter().all(|p| p.resource == "service.name=b"),
        "{points:#?}"
    );
    assert_eq!(aggregator.series(), 1);
    assert!(aggregator.flush(T0 + 9 * MINUTE).is_none());
    assert_eq!((aggregator.series(), aggregator.held_bytes()), (0, 0));

    let config = SpanMetricsConfig {
        series_expiration: std::time::Duration::from_secs(60),
        ..SpanMetricsConfig::default()
    };
    let mut aggregator = Aggregator::new(&config);
    aggregator.add_at(
        &encoded(&[service("a", vec![span("x", SERVER, UNSET, MS)])]),
        T0,
    );
    aggregator.add_at(
        &encoded(&[service("a", vec![span("y", SERVER, UNSET, MS)])]),
        T0 + 50 * SECOND,
    );
    let points = flatten(aggregator.flush(T0 + 70 * SECOND));
    let names: Vec<&str> = points.iter().map(|p| p.attributes.as_str()).collect();
    assert_eq!(names, vec![series("a", "y", "SERVER", "UNSET", ""); 2]);
}

#[test]
fn series_past_the_cardinality_limit_go_to_the_overflow_series() {
    let config = SpanMetricsConfig {
        aggregation_cardinality_limit: 3,
        ..delta()
    };
    let spans: Vec<Span> = (0..5)
        .flat_map(|i| vec![span(&format!("op{i}"), SERVER, UNSET, 3 * MS); 2])
        .collect();
    let mut aggregator = aggregate(&config, &[service("a", spans)]);
    assert_eq!(aggregator.take_overflowed(), 4);
    assert_eq!(aggregator.take_overflowed(), 0);
    assert_eq!(
        aggregator.series(),
        4,
        "three series and the overflow series"
    );
    let points = flatten(aggregator.flush(T0 + MINUTE));
    for i in 0..3 {
        assert_eq!(
            sum(
                &points,
                CALLS,
                &series("a", &format!("op{i}"), "SERVER", "UNSET", "")
            ),
            2
        );
    }
    assert_eq!(sum(&points, CALLS, "otel.metric.overflow=true"), 4);
    assert_eq!(
        histogram(&points, "otel.metric.overflow=true"),
        (4, 12.0, buckets(&[(1, 4)]))
    );
    assert_eq!(
        points.last().unwrap().attributes,
        "otel.metric.overflow=true",
        "overflow last"
    );
}

#[test]
fn the_least_recently_used_resource_is_evicted_and_sent_once_more() {
    let config = SpanMetricsConfig {
        resource_metrics_cache_size: 2,
        ..SpanMetricsConfig::default()
    };
    let one = |name: &str| [service(name, vec![span("x", SERVER, UNSET, MS)])];
    let mut aggregator = Aggregator::new(&config);
    for name in ["r1", "r2", "r3"] {
        aggregator.add_at(&encoded(&one(name)), T0);
    }
    assert_eq!(aggregator.take_evicted(), 1);
    let resources = |points: Vec<Flat>| {
        let mut names: Vec<String> = points.into_iter().map(|p| p.resource).collect();
        names.dedup();
        names
    };
    let names = resources(flatten(aggregator.flush(T0 + MINUTE)));
    assert_eq!(
        names,
        ["service.name=r1", "service.name=r2", "service.name=r3"]
    );
    let names = resources(flatten(aggregator.flush(T0 + 2 * MINUTE)));
    assert_eq!(names, ["service.name=r2", "service.name=r3"]);
    assert_eq!(aggregator.series(), 2);

    // a span for an evicted resource before the flush takes it back (evicting another)
    aggregator.add_at(&encoded(&one("r4")), T0);
    aggregator.add_at(&encoded(&one("r2")), T0);
    assert_eq!(aggregator.take_evicted(), 2, "r2 for r4, then r3 for r2");
    let points = flatten(aggregator.flush(T0 + 3 * MINUTE));
    let r2 = points
        .iter()
        .find(|p| p.resource == "service.name=r2" && p.metric == CALLS);
    assert_eq!(r2.unwrap().point, Point::Sum(2));
    let names = resources(flatten(aggregator.flush(T0 + 4 * MINUTE)));
    assert_eq!(names, ["service.name=r2", "service.name=r4"]);
}

#[test]
fn past_the_memory_bound_new_series_overflow_and_totals_stay_right() {
    let config = SpanMetricsConfig {
        max_memory_mib: 1,
        aggregation_cardinality_limit: 0,
        dimensions: vec![Dimension {
            name: "user.id".into(),
            default: None,
        }],
        ..delta()
    };
    let spans: Vec<Span> = (0..20_000)
        .map(|i| {
            with_attributes(
                span("x", SERVER, UNSET, MS),
                vec![kv("user.id", Value::IntValue(i))],
            )
        })
        .collect();
    let mut aggregator = aggregate(&config, &[service("a", spans)]);
    let held = aggregator.held_bytes();
    assert!(held < (1 << 20) + 4096, "held {held}");
    let series = aggregator.series();
    assert!((500..20_000).contains(&series), "{series} series");
    assert_eq!(aggregator.take_overflowed(), 20_000 - (series as u64 - 1));

    // a new resource past the bound goes to the overflow resource
    aggregator.add_at(
        &encoded(&[service("b", vec![span("y", SERVER, UNSET, MS)])]),
        T0,
    );
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let calls: i64 = points
        .iter()
        .filter(|p| p.metric == CALLS)
        .map(|p| match p.point {
            Point::Sum(value) => value,
            _ => 0,
        })
        .sum();
    assert_eq!(calls, 20_001);
    let overflow = points.last().unwrap();
    assert_eq!(
        (overflow.resource.as_str(), overflow.attributes.as_str()),
        ("", "otel.metric.overflow=true")
    );
    assert_eq!(
        overflow.point,
        Point::Histogram {
            count: 1,
            sum: 1.0,
            buckets: buckets(&[(0, 1)])
        }
    );
    // everything was idle after that flush (delta): all is released
    assert!(aggregator.flush(T0 + 2 * MINUTE).is_none());
    assert_eq!(aggregator.held_bytes(), 0);
}

#[test]
fn sampled_spans_count_by_their_adjusted_count() {
    let sampled = |name: &str, state: &str| {
        let mut span = span(name, SERVER, UNSET, 5 * MS);
        span.trace_state = state.into();
        span
    };
    let input = [service(
        "a",
        vec![
            sampled("tenth", "ot=th:e666666666666"),
            sampled("tenth", "ot=th:e666666666666"),
            sampled("tenth", "vendor=1,ot=th:e666666666666;rv:00112233445566"),
            sampled("half", "ot=th:8"),
            sampled("all", "ot=th:0"),
            sampled("unknown", "ot=rv:00112233445566"),
        ],
    )];
    let mut aggregator = aggregate(&delta(), &input);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let named = |name| series("a", name, "SERVER", "UNSET", "");
    assert_eq!(sum(&points, CALLS, &named("tenth")), 30);
    let (count, total, counts) = histogram(&points, &named("tenth"));
    assert_eq!((count, counts), (30, buckets(&[(2, 30)])));
    assert!((total - 150.0).abs() < 1e-6, "{total}");
    assert_eq!(sum(&points, CALLS, &named("half")), 2);
    assert_eq!(
        histogram(&points, &named("half")),
        (2, 10.0, buckets(&[(2, 2)]))
    );
    assert_eq!(sum(&points, CALLS, &named("all")), 1);
    assert_eq!(sum(&points, CALLS, &named("unknown")), 1);
}

#[test]
fn the_sampling_method_tells_extrapolated_from_counted() {
    let config = SpanMetricsConfig {
        enable_metrics_sampling_method: true,
        ..delta()
    };
    let mut sampled = span("x", SERVER, UNSET, MS);
    sampled.trace_state = "ot=th:c".into();
    let input = [service("a", vec![sampled, span("x", SERVER, UNSET, MS)])];
    let mut aggregator = aggregate(&config, &input);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let x = |method: &str| {
        series(
            "a",
            "x",
            "SERVER",
            "UNSET",
            &format!("sampling.method={method}"),
        )
    };
    assert_eq!(sum(&points, CALLS, &x("extrapolated")), 4);
    assert_eq!(sum(&points, CALLS, &x("counted")), 1);
}

#[test]
fn exemplars_are_bounded_per_data_point_and_interval() {
    let config = SpanMetricsConfig {
        exemplars: config::ExemplarsConfig {
            enabled: true,
            max_per_data_point: 2,
        },
        ..delta()
    };
    let spans: Vec<Span> = (1..=5u8)
        .map(|i| {
            let mut span = span("x", SERVER, UNSET, u64::from(i) * MS);
            span.trace_id = vec![i; 16];
            span.span_id = vec![i; 8];
            span
        })
        .collect();
    let mut untraced = span("x", SERVER, UNSET, MS);
    untraced.trace_id = Vec::new();
    let mut spans_with_untraced = vec![untraced];
    spans_with_untraced.extend(spans);
    let mut aggregator = aggregate(&config, &[service("a", spans_with_untraced)]);
    let flushed = T0 + MINUTE;
    let points = flatten(aggregator.flush(flushed));
    let x = series("a", "x", "SERVER", "UNSET", "");
    let expected: Vec<Exemplar> = (1..=2u8)
        .map(|i| Exemplar {
            time_unix_nano: flushed,
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            value: Some(exemplar::Value::AsDouble(f64::from(i))),
            ..Default::default()
        })
        .collect();
    assert_eq!(find(&points, CALLS, &x).exemplars, expected);
    assert_eq!(find(&points, DURATION, &x).exemplars, expected);

    aggregator.add_at(
        &encoded(&[service("a", vec![span("x", SERVER, UNSET, MS)])]),
        flushed,
    );
    let points = flatten(aggregator.flush(T0 + 2 * MINUTE));
    let exemplars = &find(&points, CALLS, &x).exemplars;
    assert_eq!(exemplars.len(), 1, "the previous interval's are gone");
    assert_eq!(exemplars[0].span_id, vec![9; 8]);
}

#[test]
fn events_are_counted_by_their_own_dimensions() {
    let config = SpanMetricsConfig {
        events: config::EventsConfig {
            enabled: true,
            dimensions: vec![Dimension {
                name: "exception.type".into(),
                default: None,
            }],
        },
        ..delta()
    };
    let event = |kind: &str| Event {
        name: "exception".into(),
        attributes: vec![kv("exception.type", text(kind))],
        ..Default::default()
    };
    let mut failing = span("x", SERVER, ERROR, MS);
    failing.events = vec![event("IOError"), event("Timeout")];
    let mut again = span("x", SERVER, ERROR, MS);
    again.events = vec![event("IOError")];
    let mut aggregator = aggregate(&config, &[service("a", vec![failing, again])]);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let x = |more: &str| series("a", "x", "SERVER", "ERROR", more);
    assert_eq!(sum(&points, EVENTS, &x("exception.type=IOError")), 2);
    assert_eq!(sum(&points, EVENTS, &x("exception.type=Timeout")), 1);
    assert_eq!(sum(&points, CALLS, &x("")), 2);
}

#[test]
fn calls_and_duration_can_have_dimensions_of_their_own() {
    let config = SpanMetricsConfig {
        calls_dimensions: vec![Dimension {
            name: "http.route".into(),
            default: None,
        }],
        histogram: config::HistogramConfig {
            dimensions: vec![Dimension {
                name: "http.method".into(),
                default: None,
            }],
            ..Default::default()
        },
        ..delta()
    };
    let attributes = vec![kv("http.route", text("/a")), kv("http.method", text("GET"))];
    let input = [service(
        "a",
        vec![with_attributes(span("x", SERVER, UNSET, MS), attributes); 2],
    )];
    let mut aggregator = aggregate(&config, &input);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    assert_eq!(
        sum(
            &points,
            CALLS,
            &series("a", "x", "SERVER", "UNSET", "http.route=/a")
        ),
        2
    );
    assert_eq!(
        histogram(
            &points,
            &series("a", "x", "SERVER", "UNSET", "http.method=GET")
        )
        .0,
        2
    );
    assert_eq!(points.len(), 2);
}

#[test]
fn included_scopes_become_dimensions() {
    let config = SpanMetricsConfig {
        include_instrumentation_scope: vec!["express".into()],
        ..delta()
    };
    let scoped = |name: &str, version: &str| ScopeSpans {
        scope: Some(InstrumentationScope {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        }),
        spans: vec![span("x", SERVER, UNSET, MS)],
        ..Default::default()
    };
    let mut input = service("a", Vec::new());
    input.scope_spans = vec![
        scoped("express", "4.0"),
        scoped("other", "1.0"),
        scoped("express", "5.0"),
    ];
    let mut aggregator = aggregate(&config, &[input]);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let x = |more: &str| series("a", "x", "SERVER", "UNSET", more);
    let scope = "span.instrumentation.scope.name=express,span.instrumentation.scope.version";
    assert_eq!(sum(&points, CALLS, &x(&format!("{scope}=4.0"))), 1);
    assert_eq!(sum(&points, CALLS, &x(&format!("{scope}=5.0"))), 1);
    assert_eq!(sum(&points, CALLS, &x("")), 1);
}

#[test]
fn exponential_histograms_fit_their_max_size() {
    let config = SpanMetricsConfig {
        histogram: config::HistogramConfig {
            exponential: Some(ExponentialConfig { max_size: 4 }),
            ..Default::default()
        },
        ..delta()
    };
    let spans = [0, MS, 2 * MS, 4 * MS, 1000 * MS].map(|d| span("x", SERVER, UNSET, d));
    let mut aggregator = aggregate(&config, &[service("a", spans.to_vec())]);
    let points = flatten(aggregator.flush(T0 + MINUTE));
    let Point::Exponential {
        count,
        sum,
        zero,
        buckets,
        min,
        max,
    } = &find(&points, DURATION, &series("a", "x", "SERVER", "UNSET", "")).point
    else {
        panic!()
    };
    assert_eq!((*count, *sum, *zero), (5, 1007.0, 1));
    assert!(buckets.len() <= 4, "{buckets:?}");
    assert_eq!(buckets.iter().sum::<u64>(), 4);
    assert_eq!((*min, *max), (Some(0.0), Some(1000.0)));
}

/// A configuration that uses every reading path: dimensions on spans, resources and
/// events, scopes, exemplars.
fn everything() -> (SpanMetricsConfig, Vec<ResourceSpans>) {
    let config = SpanMetricsConfig {
        dimensions: vec![
            Dimension {
                name: "http.method".into(),
                default: Some("GET".into()),
            },
            Dimension {
                name: "host.name".into(),
                default: None,
            },
        ],
        events: config::EventsConfig {
            enabled: true,
            dimensions: vec![Dimension {
                name: "exception.type".into(),
                default: None,
            }],
        },
        include_instrumentation_scope: vec!["lib".into()],
        exemplars: config::ExemplarsConfig {
            enabled: true,
            max_per_data_point: 3,
        },
        ..SpanMetricsConfig::default()
    };
    let mut failing = with_attributes(
        span("x", SERVER, ERROR, 7 * MS),
        vec![kv("http.method", text("PUT"))],
    );
    failing.events = vec![Event {
        attributes: vec![kv("exception.type", text("E"))],
        ..Default::default()
    }];
    let mut input = resource(
        vec![kv("service.name", text("a")), kv("host.name", text("h1"))],
        vec![failing, span("y", CLIENT, OK, 3 * MS)],
    );
    input.scope_spans[0].scope = Some(InstrumentationScope {
        name: "lib".into(),
        version: "1".into(),
        ..Default::default()
    });
    (
        config,
        vec![
            input,
            service("b", vec![span("z", SERVER, UNSET, 20 * MS); 3]),
        ],
    )
}

#[test]
fn encoded_and_decoded_batches_give_the_same_metrics() {
    let (config, input) = everything();
    let mut from_wire = Aggregator::new(&config);
    let mut from_messages = Aggregator::new(&config);
    assert_eq!(from_wire.add_at(&encoded(&input), T0), 5);
    assert_eq!(
        from_messages.add_at(&Batch::from_traces(input.clone()), T0),
        5
    );
    for flush in [T0 + MINUTE, T0 + 2 * MINUTE] {
        let wire = resource_metrics(from_wire.flush(flush).unwrap());
        let messages = resource_metrics(from_messages.flush(flush).unwrap());
        assert_eq!(wire, messages);
    }
    let points = flatten(from_wire.flush(T0 + 3 * MINUTE));
    let x = series("a", "x", "SERVER", "ERROR", "http.method=PUT,host.name=h1");
    let scope = "span.instrumentation.scope.name=lib,span.instrumentation.scope.version=1";
    assert_eq!(sum(&points, CALLS, &format!("{x},{scope}")), 1);
    assert_eq!(
        sum(&points, EVENTS, &format!("{x},exception.type=E,{scope}")),
        1
    );
    assert_eq!(
        sum(
            &points,
            CALLS,
            &series("b", "z", "SERVER", "UNSET", "http.method=GET")
        ),
        3
    );
}

#[test]
fn malformed_parts_are_read_as_far_as_they_go() {
    let whole = encode(&example_spans());
    // the second resource cut short: the first resource's 8 spans are read
    let cut = whole.slice(..whole.len() - 10);
    let garbage = Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    let wire_type_7 = Bytes::from_static(&[0x0f, 0x01]);
    let parts = vec![garbage, cut, wire_type_7, Bytes::new()];
    let batch = Batch::from_encoded_parts(Signal::Traces, parts, 11);
    let mut aggregator = Aggregator::new(&delta());
    let read = aggregator.add_at(&batch, T0);
    assert!((8..11).contains(&read), "{read}");
    let points = flatten(aggregator.flush(T0 + MINUTE));
    assert_eq!(
        sum(
            &points,
            CALLS,
            &series("checkout", "GET /cart", "SERVER", "UNSET", "")
        ),
        6
    );

    // a malformed field inside a span stops that resource's walk, without panicking
    let mut bytes = encode(&[service("a", vec![span("x", SERVER, UNSET, MS)])]).to_vec();
    let tail = bytes.len() - 1;
    bytes[tail] = 0xff;
    let batch = Batch::from_encoded_parts(Signal::Traces, vec![Bytes::from(bytes)], 1);
    let config = SpanMetricsConfig {
        dimensions: vec![Dimension {
            name: "k".into(),
            default: None,
        }],
        ..delta()
    };
    Aggregator::new(&config).add_at(&batch, T0);
}

#[test]
fn a_metrics_batch_adds_nothing() {
    let batch = Batch::from_metrics(Vec::new());
    assert_eq!(Aggregator::new(&delta()).add_at(&batch, T0), 0);
}

#[test]
fn the_aggregator_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<Aggregator>();
}

#[test]
fn every_collector_option_loads() {
    let yaml = r#"
histogram:
  disable: false
  unit: s
  explicit:
    buckets: [100us, 1ms, 2ms, 6ms, 10ms, 100ms, 250ms]
  dimensions:
    - name: http.status_code
dimensions:
  - name: http.method
    default: GET
  - name: http.route
calls_dimensions:
  - name: http.url
exclude_dimensions: ['status.code', collector.instance.id]
dimensions_cache_size: 1000
resource_metrics_cache_size: 1600
resource_metrics_key_attributes: [service.name, telemetry.sdk.language]
aggregation_temporality: "AGGREGATION_TEMPORALITY_DELTA"
metrics_flush_interval: 15s
metrics_expiration: 5m
series_expiration: 0
metric_timestamp_cache_size: 123
namespace: span.metrics
exemplars:
  enabled: true
  max_per_data_point: 5
events:
  enabled: true
  dimensions:
    - name: exception.type
include_instrumentation_scope: [express]
aggregation_cardinality_limit: 2000
add_resource_attributes: true
enable_metrics_sampling_method: true
max_memory_mib: 64
"#;
    let config: SpanMetricsConfig = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.flush_interval(), std::time::Duration::from_secs(15));
    assert_eq!(
        config.metrics_expiration,
        std::time::Duration::from_secs(300)
    );
    assert_eq!(config.aggregation_temporality, Temporality::Delta);
    assert_eq!(
        config
            .histogram
            .explicit
            .as_ref()
            .unwrap()
            .buckets
            .as_ref()
            .unwrap()[0],
        std::time::Duration::from_micros(100)
    );
    assert_eq!(config.dimensions[0].default.as_deref(), Some("GET"));
    let aggregator = Aggregator::new(&config);
    assert_eq!(aggregator.plan.calls_name, "span.metrics.calls");

    let empty: SpanMetricsConfig = serde_yaml::from_str("{}").unwrap();
    assert_eq!(empty, SpanMetricsConfig::default());
    let bare: SpanMetricsConfig = serde_yaml::from_str("histogram:\n  explicit:\n").unwrap();
    assert_eq!(bare.validate(), Ok(()));
    let numeric: SpanMetricsConfig =
        serde_yaml::from_str("dimensions: [{name: code, default: 200}]").unwrap();
    assert_eq!(numeric.dimensions[0].default.as_deref(), Some("200"));
}

#[test]
fn unknown_options_and_values_are_refused() {
    for yaml in [
        "no_such_option: 1",
        "aggregation_temporality: AGGREGATION_TEMPORALITY_SOMETIMES",
        "histogram: {unit: h}",
        "exemplars: {enabled: true, max: 3}",
        "metrics_flush_interval: soon",
    ] {
        assert!(
            serde_yaml::from_str::<SpanMetricsConfig>(yaml).is_err(),
            "{yaml}"
        );
    }
}

#[test]
fn validation_names_the_key() {
    let invalid = |yaml: &str| {
        let config: SpanMetricsConfig = serde_yaml::from_str(yaml).unwrap();
        config.validate().unwrap_err().key
    };
    assert_eq!(
        invalid("dimensions: [{name: service.name}]"),
        "dimensions[0].name"
    );
    assert_eq!(
        invalid("dimensions: [{name: a}, {name: a}]"),
        "dimensions[1].name"
    );
    assert_eq!(
        invalid("dimensions: [{name: a}]\ncalls_dimensions: [{name: a}]"),
        "calls_dimensions[0].name"
    );
    assert_eq!(invalid("events: {enabled: true}"), "events.dimensions");
    assert_eq!(
        invalid("exclude_dimensions: [host.name]"),
        "exclude_dimensions"
    );
    assert_eq!(
        invalid("histogram: {explicit: {buckets: [1ms]}, exponential: {max_size: 10}}"),
        "histogram"
    );
    assert_eq!(
        invalid("histogram: {explicit: {buckets: [2ms, 1ms]}}"),
        "histogram.explicit.buckets"
    );
    assert_eq!(
        invalid("histogram: {exponential: {max_size: 1}}"),
        "histogram.exponential.max_size"
    );
    assert_eq!(
        invalid("metrics_flush_interval: 0s"),
        "metrics_flush_interval"
    );
    assert_eq!(
        invalid("resource_metrics_cache_size: 0"),
        "resource_metrics_cache_size"
    );
    assert_eq!(
        invalid("metric_timestamp_cache_size: 0"),
        "metric_timestamp_cache_size"
    );
    assert_eq!(
        invalid("exemplars: {enabled: true, max_per_data_point: 0}"),
        "exemplars.max_per_data_point"
    );
    assert_eq!(invalid("max_memory_mib: 0"), "max_memory_mib");
}
