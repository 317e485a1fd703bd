use super::*;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point, ExponentialHistogram, Gauge, Histogram, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

fn options() -> Options {
    Options {
        namespace: String::new(),
        add_metric_suffixes: true,
        resource_to_telemetry_conversion: false,
        target_info: true,
        external_labels: BTreeMap::new(),
        delta: DeltaMode::Convert,
        max_delta_series: 10,
    }
}

fn metric(name: &str, unit: &str) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        ..Default::default()
    }
}

/// (name, unit, gauge?, counter?, expected)
const NAMES: &[(&str, &str, bool, bool, &str)] = &[
    (
        "http.server.duration",
        "s",
        false,
        false,
        "http_server_duration_seconds",
    ),
    (
        "http.server.request.size",
        "By",
        false,
        false,
        "http_server_request_size_bytes",
    ),
    (
        "system.memory.utilization",
        "1",
        true,
        false,
        "system_memory_utilization_ratio",
    ),
    ("requests", "1", false, true, "requests_total"),
    ("requests", "{request}", false, true, "requests_total"),
    (
        "throughput",
        "By/s",
        true,
        false,
        "throughput_bytes_per_second",
    ),
    ("rate", "1/s", true, false, "rate_per_second"),
    ("queue.size", "{items}", true, false, "queue_size"),
    ("latency_seconds", "s", false, false, "latency_seconds"),
    ("bytes_total", "By", false, true, "bytes_total"),
    ("2xx.count", "", false, true, "_2xx_count_total"),
    ("weird--name!!", "", true, false, "weird_name_"),
    ("temp", "Cel", true, false, "temp_celsius"),
    ("odd", "furlongs", true, false, "odd_furlongs"),
];

#[test]
fn metric_names_follow_the_specification() {
    for (name, unit, gauge, counter, expected) in NAMES {
        assert_eq!(
            metric_name(&metric(name, unit), &options(), *gauge, *counter),
            *expected,
            "{name} [{unit}]"
        );
    }
}

#[test]
fn suffixes_can_be_turned_off_and_a_namespace_added() {
    let o = Options {
        add_metric_suffixes: false,
        namespace: "edge".into(),
        ..options()
    };
    assert_eq!(
        metric_name(&metric("requests", "1"), &o, false, true),
        "edge_requests"
    );
}

#[test]
fn label_names_follow_the_specification() {
    for (raw, expected) in [
        ("http.method", "http_method"),
        ("0abc", "key_0abc"),
        ("__reserved", "key__reserved"),
        ("_ok", "_ok"),
        ("a-b c", "a_b_c"),
    ] {
        assert_eq!(label_name(raw), expected, "{raw}");
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    crate::model::tests::text_attribute(key, value)
}

fn resource(metrics: Vec<Metric>) -> Vec<ResourceMetrics> {
    let attributes = vec![
        kv("service.name", "shop"),
        kv("service.namespace", "prod"),
        kv("service.instance.id", "i-1"),
        kv("host.name", "h1"),
    ];
    let scope = opentelemetry_proto::tonic::common::v1::InstrumentationScope {
        name: "meter".into(),
        version: "1.0".into(),
        ..Default::default()
    };
    vec![ResourceMetrics {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn point(value: f64, time: u64, attrs: &[(&str, &str)]) -> NumberDataPoint {
    NumberDataPoint {
        value: Some(number_data_point::Value::AsDouble(value)),
        time_unix_nano: time,
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        ..Default::default()
    }
}

fn series(out: Output) -> BTreeMap<String, Vec<f64>> {
    out.into_series()
        .into_iter()
        .map(|s| {
            let name = s
                .labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>()
                .join(",");
            (name, s.samples.iter().map(|x| x.value).collect())
        })
        .collect()
}

#[test]
fn counters_get_job_instance_scope_and_target_info() {
    let counter = Metric {
        data: Some(Data::Sum(Sum {
            data_points: vec![point(5.0, 2_000_000, &[("route", "/a")])],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..metric("orders", "1")
    };
    let out = series(translate(
        &resource(vec![counter]),
        &options(),
        &mut DeltaState::default(),
    ));
    assert_eq!(out["__name__=orders_total,instance=i-1,job=prod/shop,otel_scope_name=meter,otel_scope_version=1.0,route=/a"], vec![5.0]);
    assert_eq!(
        out["__name__=target_info,host_name=h1,instance=i-1,job=prod/shop"],
        vec![1.0]
    );
}

#[test]
fn histograms_become_cumulative_buckets_sum_and_count() {
    let histogram = Metric {
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                count: 6,
                sum: Some(3.5),
                bucket_counts: vec![1, 2, 3],
                explicit_bounds: vec![0.1, 1.0],
                time_unix_nano: 1_000_000,
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..metric("latency", "s")
    };
    let out = series(translate(
        &resource(vec![histogram]),
        &options(),
        &mut DeltaState::default(),
    ));
    let get = |suffix: &str| {
        out.iter()
            .find(|(k, _)| k.contains(suffix))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        get("latency_seconds_bucket,instance=i-1,job=prod/shop,le=0.1"),
        vec![1.0]
    );
    assert_eq!(
        get("latency_seconds_bucket,instance=i-1,job=prod/shop,le=1,"),
        vec![3.0]
    );
    assert_eq!(get("le=+Inf"), vec![6.0]);
    assert_eq!(get("latency_seconds_sum"), vec![3.5]);
    assert_eq!(get("latency_seconds_count"), vec![6.0]);
}

#[test]
fn deltas_accumulate_within_the_state_bound() {
    let delta_sum = |v: f64, route: &str| Metric {
        data: Some(Data::Sum(Sum {
            data_points: vec![point(v, 1, &[("route", route)])],
            aggregation_temporality: 1,
            is_monotonic: true,
        })),
        ..metric("hits", "")
    };
    let o = Options {
        max_delta_series: 1,
        target_info: false,
        ..options()
    };
    let mut state = DeltaState::default();
    translate(&resource(vec![delta_sum(2.0, "/a")]), &o, &mut state);
    let out = translate(
        &resource(vec![delta_sum(3.0, "/a"), delta_sum(1.0, "/b")]),
        &o,
        &mut state,
    );
    assert_eq!(
        out.dropped.get("delta_state_full"),
        Some(&1),
        "the second series does not fit the state"
    );
    let values: Vec<f64> = series(out).into_values().flatten().collect();
    assert_eq!(values, vec![5.0]);
    let dropping = Options {
        delta: DeltaMode::Drop,
        ..o
    };
    assert_eq!(
        translate(
            &resource(vec![delta_sum(1.0, "/a")]),
            &dropping,
            &mut DeltaState::default()
        )
        .dropped
        .get("delta_temporality"),
        Some(&1)
    );
}

#[test]
fn no_recorded_value_is_a_stale_marker() {
    let mut p = point(1.0, 1, &[]);
    p.flags = 1;
    let gauge = Metric {
        data: Some(Data::Gauge(Gauge {
            data_points: vec![p],
        })),
        ..metric("g", "")
    };
    let out = translate(
        &resource(vec![gauge]),
        &Options {
            target_info: false,
            ..options()
        },
        &mut DeltaState::default(),
    );
    let value = out.into_series()[0].samples[0].value;
    assert_eq!(value.to_bits(), STALE_NAN);
}

#[test]
fn summaries_have_quantiles_sum_and_count() {
    let summary = Metric {
        data: Some(Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                count: 4,
                sum: 10.0,
                quantile_values: vec![
                    opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile {
                        quantile: 0.5,
                        value: 2.0,
                    },
                ],
                ..Default::default()
            }],
        })),
        ..metric("rpc", "ms")
    };
    let out = series(translate(
        &resource(vec![summary]),
        &Options {
            target_info: false,
            ..options()
        },
        &mut DeltaState::default(),
    ));
    assert!(out
        .keys()
        .any(|k| k.starts_with("__name__=rpc_milliseconds,") && k.contains("quantile=0.5")));
    assert!(out
        .keys()
        .any(|k| k.starts_with("__name__=rpc_milliseconds_sum")));
    assert!(out
        .keys()
        .any(|k| k.starts_with("__name__=rpc_milliseconds_count")));
}

#[test]
fn exponential_histograms_become_native_histograms() {
    let point = ExponentialHistogramDataPoint {
        count: 6,
        sum: Some(12.0),
        scale: 10,
        zero_count: 1,
        positive: Some(exponential_histogram_data_point::Buckets {
            offset: 0,
            bucket_counts: vec![1, 1, 1, 1, 0, 0, 0, 0, 1],
        }),
        time_unix_nano: 5_000_000,
        ..Default::default()
    };
    let metric = Metric {
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![point],
            aggregation_temporality: 2,
        })),
        ..metric("size", "By")
    };
    let out = translate(
        &resource(vec![metric]),
        &Options {
            target_info: false,
            ..options()
        },
        &mut DeltaState::default(),
    );
    let h = out.into_series()[0].histograms[0].clone();
    assert_eq!(h.schema, 8, "scale 10 is merged down to 8");
    assert_eq!((h.count_int, h.zero_count_int, h.timestamp), (6, 1, 5));
    // at scale 8, OTel buckets 0..3 merge into bucket 0 and bucket 8 into bucket 2;
    // Prometheus indexes are one higher: buckets 1 and 3
    assert_eq!(
        h.positive_spans,
        vec![
            BucketSpan {
                offset: 1,
                length: 1
            },
            BucketSpan {
                offset: 1,
                length: 1
            }
        ]
    );
    assert_eq!(h.positive_deltas, vec![4, -3]);
}

#[test]
fn units_with_annotations_only_add_nothing() {
    assert_eq!(unit_suffix("{packets}", false), None);
    assert_eq!(unit_suffix("", true), None);
    assert_eq!(unit_suffix("MiBy", false).as_deref(), Some("mebibytes"));
}

#[test]
fn exemplars_carry_trace_ids_to_their_series_and_bucket() {
    use opentelemetry_proto::tonic::metrics::v1::{exemplar, Exemplar};
    let e = |v: f64| Exemplar {
        value: Some(exemplar::Value::AsDouble(v)),
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        time_unix_nano: 7_000_000,
        ..Default::default()
    };
    let mut counter_point = point(3.0, 1, &[]);
    counter_point.exemplars = vec![e(1.0)];
    let counter = Metric {
        data: Some(Data::Sum(Sum {
            data_points: vec![counter_point],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..metric("c", "")
    };
    let histogram = Metric {
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                count: 2,
                bucket_counts: vec![1, 1],
                explicit_bounds: vec![1.0],
                exemplars: vec![e(0.5), e(3.0)],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..metric("h", "")
    };
    let out = translate(
        &resource(vec![counter, histogram]),
        &Options {
            target_info: false,
            ..options()
        },
        &mut DeltaState::default(),
    )
    .into_series();
    let exemplars_of = |name: &str, le: Option<&str>| -> Vec<f64> {
        out.iter()
            .find(|s| {
                s.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
                    && le.is_none_or(|le| s.labels.iter().any(|l| l.name == "le" && l.value == le))
            })
            .map(|s| s.exemplars.iter().map(|e| e.value).collect())
            .unwrap()
    };
    assert_eq!(exemplars_of("c_total", None), vec![1.0]);
    assert_eq!(exemplars_of("h_bucket", Some("1")), vec![0.5]);
    assert_eq!(exemplars_of("h_bucket", Some("+Inf")), vec![3.0]);
    let first = &out
        .iter()
        .find(|s| !s.exemplars.is_empty())
        .unwrap()
        .exemplars[0];
    assert!(first
        .labels
        .iter()
        .any(|l| l.name == "trace_id" && l.value == "ab".repeat(16)));
    assert_eq!(first.timestamp, 7);
}
