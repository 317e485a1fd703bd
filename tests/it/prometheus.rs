//! The remote-write exporter against a real Prometheus (Debian's package, started here
//! with the remote-write receiver and native histograms on), fed by the OpenTelemetry SDK.

use crate::harness::{free_port, http_get, post, Sieve};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A Prometheus server on loopback, stopped on drop.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start() -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args([
                "--web.enable-remote-write-receiver",
                "--enable-feature=native-histograms",
                "--log.level=warn",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test installs it)");
        let prometheus = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        while http_get(port, "/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// `/api/v1/<path>?<param>=<expression>`'s `data.result`.
    pub fn api(&self, path: &str, param: &str, expression: &str) -> Vec<serde_json::Value> {
        let encoded: String = expression
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (status, body) = http_get(self.port, &format!("/api/v1/{path}?{param}={encoded}"))
            .expect("prometheus answers");
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let data = &value["data"];
        data.get("result")
            .unwrap_or(data)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until an instant query returns at least one series.
    pub fn wait_query(&self, query: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let result = self.api("query", "query", query);
            if !result.is_empty() {
                return result;
            }
            assert!(Instant::now() < deadline, "no result for {query}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn config(write_url: &str, processors: &str) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{{grpc}}
      http:
        endpoint: 127.0.0.1:{{http}}
processors:
  batch:
    timeout: 100ms
  cardinality_limit:
    limit: 50
exporters:
  prometheusremotewrite:
    endpoint: {write_url}
    external_labels:
      cluster: test
    retry_on_failure:
      initial_interval: 100ms
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [{processors}]
      exporters: [prometheusremotewrite]
"
    )
}

fn value(result: &serde_json::Value) -> f64 {
    result["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_arrive_in_prometheus_with_the_expected_names() {
    let prometheus = Prometheus::start();
    let sieve = Sieve::start(&config(&prometheus.write_url(), "batch"));
    let endpoint = format!("http://127.0.0.1:{}", sieve.grpc);
    tokio::task::spawn_blocking(move || {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .unwrap();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("shop")
            .with_attribute(KeyValue::new("service.instance.id", "i-1"))
            .build();
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_periodic_exporter(exporter)
            .with_resource(resource)
            .build();
        let meter = provider.meter("checkout");
        meter
            .u64_counter("orders")
            .with_unit("{order}")
            .build()
            .add(7, &[KeyValue::new("region", "eu")]);
        meter.f64_gauge("queue.depth").build().record(3.0, &[]);
        let latency = meter
            .f64_histogram("http.server.duration")
            .with_unit("s")
            .with_boundaries(vec![0.1, 0.5, 1.0])
            .build();
        for v in [0.05, 0.2, 0.3, 2.0] {
            latency.record(v, &[KeyValue::new("route", "/pay")]);
        }
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();

    let orders = prometheus.wait_query("orders_total");
    assert_eq!(value(&orders[0]), 7.0);
    let labels = &orders[0]["metric"];
    assert_eq!(labels["job"], "shop");
    assert_eq!(labels["instance"], "i-1");
    assert_eq!(labels["region"], "eu");
    assert_eq!(labels["otel_scope_name"], "checkout");
    assert_eq!(labels["cluster"], "test", "external labels are added");

    assert_eq!(value(&prometheus.wait_query("queue_depth")[0]), 3.0);
    assert_eq!(
        value(&prometheus.wait_query(r#"http_server_duration_seconds_bucket{le="0.1"}"#)[0]),
        1.0
    );
    assert_eq!(
        value(&prometheus.wait_query(r#"http_server_duration_seconds_bucket{le="0.5"}"#)[0]),
        3.0
    );
    assert_eq!(
        value(&prometheus.wait_query(r#"http_server_duration_seconds_bucket{le="+Inf"}"#)[0]),
        4.0
    );
    assert_eq!(
        value(&prometheus.wait_query("http_server_duration_seconds_count")[0]),
        4.0
    );
    assert!(
        (value(&prometheus.wait_query("http_server_duration_seconds_sum")[0]) - 2.55).abs() < 1e-9
    );
    let info = prometheus.wait_query("target_info");
    assert_eq!(info[0]["metric"]["job"], "shop");
    let series = prometheus.api("series", "match[]", "orders_total");
    assert_eq!(series.len(), 1, "{series:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_histograms_arrive_as_native_histograms() {
    let prometheus = Prometheus::start();
    let sieve = Sieve::start(&config(&prometheus.write_url(), "batch"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let body = serde_json::json!({"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeMetrics": [{"metrics": [{"name": "payload.size", "unit": "By", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [
            {"timeUnixNano": now.to_string(), "count": "5", "sum": 40.0, "scale": 2, "zeroCount": "1",
             "positive": {"offset": 3, "bucketCounts": ["1", "0", "3"]}}]}}]}]}]});
    let (status, _, _) = post(
        sieve.http,
        "/v1/metrics",
        "application/json",
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        value(&prometheus.wait_query("histogram_count(payload_size_bytes)")[0]),
        5.0
    );
    assert_eq!(
        value(&prometheus.wait_query("histogram_sum(payload_size_bytes)")[0]),
        40.0
    );
}

/// 100k label sets of one counter next to a well-behaved one: Prometheus gets the limit
/// plus one overflow series, the sum is kept, the normal metric is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_explosion_is_capped_without_losing_the_total() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as Kv};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    let prometheus = Prometheus::start();
    let sieve = Sieve::start(&config(&prometheus.write_url(), "cardinality_limit, batch"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let attr = |k: &str, v: String| Kv {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let counter = |name: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let point = |attributes: Vec<Kv>, value: f64| NumberDataPoint {
        attributes,
        value: Some(number_data_point::Value::AsDouble(value)),
        time_unix_nano: now,
        start_time_unix_nano: now - 1_000_000_000,
        ..Default::default()
    };
    let noisy: Vec<NumberDataPoint> = (0..100_000)
        .map(|i| point(vec![attr("user_id", format!("user-{i}"))], 1.0))
        .collect();
    let normal: Vec<NumberDataPoint> = (0..3)
        .map(|i| point(vec![attr("route", format!("/r{i}"))], 10.0))
        .collect();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![attr("service.name", "signup".into())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![counter("signups", noisy), counter("requests", normal)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, _, _) = post(
        sieve.http,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);

    assert_eq!(
        value(&prometheus.wait_query("count(signups_total)")[0]),
        51.0,
        "the limit plus one overflow series"
    );
    assert_eq!(
        value(&prometheus.wait_query("sum(signups_total)")[0]),
        100_000.0,
        "the overflow series keeps the total"
    );
    let overflow = prometheus.wait_query(r#"signups_total{otel_metric_overflow="true"}"#);
    assert_eq!(value(&overflow[0]), 99_950.0);
    assert_eq!(
        value(&prometheus.wait_query("count(requests_total)")[0]),
        3.0
    );
    assert_eq!(
        value(&prometheus.wait_query("sum(requests_total)")[0]),
        30.0
    );
    // 50 + 3 series within their limits, and the 99 950 overflowed ones' last values
    assert_eq!(
        sieve.metric("sieve_cardinality_tracked_series", &[]),
        100_003.0
    );
    assert_eq!(
        sieve.metric(
            "sieve_cardinality_overflow_points_total",
            &[("metric", "signups")]
        ),
        99_950.0
    );
    let series = |metric| sieve.metric("sieve_cardinality_metric_series", &[("metric", metric)]);
    assert_eq!((series("signups"), series("requests")), (50.0, 3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_rejections_are_counted_not_retried() {
    let prometheus = Prometheus::start();
    let sieve = Sieve::start(&config(&prometheus.write_url(), "batch"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let gauge = |time: u64| {
        serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "ooo", "gauge": {"dataPoints": [
            {"timeUnixNano": time.to_string(), "asDouble": 1.0}]}}]}]}]})
        .to_string()
        .into_bytes()
    };
    post(
        sieve.http,
        "/v1/metrics",
        "application/json",
        None,
        gauge(now),
    )
    .await;
    prometheus.wait_query("ooo");
    post(
        sieve.http,
        "/v1/metrics",
        "application/json",
        None,
        gauge(now - 60_000_000_000),
    )
    .await;
    sieve.wait_metric(
        "sieve_exporter_send_failed_items_total",
        &[("reason", "out_of_order")],
        WAIT,
        |v| v == 1.0,
    );
    sieve.wait_metric(
        "sieve_exporter_dropped_items_total",
        &[("reason", "permanent")],
        WAIT,
        |v| v == 1.0,
    );
}
