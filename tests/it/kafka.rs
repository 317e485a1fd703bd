//! The scale-out tier against a real Kafka-compatible broker (tansu, started here on
//! loopback): OpenTelemetry SDK → sieve agent → Kafka keyed by trace id → sieve gateway
//! (Kafka receiver → tail sampling) → OTLP sink, with the gateway killed mid-stream.

use crate::harness::{free_port, post, Sieve};
use crate::sink::Sink;
use crate::tail_sampling::{check_kept, send_traces, spans_by_index, POLICIES, SPANS_PER_TRACE};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker with in-memory storage; killed on drop.
pub struct Tansu {
    child: Child,
    port: u16,
}

/// `$SIEVE_TANSU`, else `target/tools/tansu` (where scripts/test puts it), else `tansu`.
fn tansu_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SIEVE_TANSU") {
        return path.into();
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/tansu");
    if tools.exists() {
        tools
    } else {
        "tansu".into()
    }
}

impl Tansu {
    pub fn start() -> Tansu {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, port }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu_bin())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--partitions")
            .arg(partitions.to_string())
            .arg(name)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "topic {name} created");
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_config(brokers: &str) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{{grpc}}
processors:
  batch:
    timeout: 50ms
exporters:
  kafka:
    brokers: [\"{brokers}\"]
    traces: {{topic: otlp_spans}}
    partition_traces_by_id: true
    producer: {{compression: zstd}}
    retry_on_failure:
      initial_interval: 100ms
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [kafka]
"
    )
}

fn gateway_config(brokers: &str, sink: &str) -> String {
    format!(
        "receivers:
  kafka:
    brokers: [\"{brokers}\"]
    group_id: gateways
    initial_offset: earliest
    commit_delay: 10s
    session_timeout: 6s
    heartbeat_interval: 1s
    traces: {{topic: otlp_spans}}
processors:
  tail_sampling:
    decision_wait: 5s
    decision_cache: {{sampled_cache_size: 10000, non_sampled_cache_size: 10000}}
    policies:
{POLICIES}
exporters:
  otlp:
    endpoint: {sink}
    retry_on_failure:
      initial_interval: 100ms
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [kafka]
      processors: [tail_sampling]
      exporters: [otlp]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_to_kafka_to_a_tail_sampling_gateway_survive_a_gateway_crash() {
    let broker = Tansu::start();
    broker.create_topic("otlp_spans", 4);
    let sink = Sink::start().await;
    let agent = Sieve::start(&agent_config(&broker.brokers()));
    let gateway = Sieve::start(&gateway_config(&broker.brokers(), &sink.grpc_endpoint()));
    let total = 300;
    let endpoint = format!("http://127.0.0.1:{}", agent.grpc);

    let first_half = endpoint.clone();
    tokio::task::spawn_blocking(move || send_traces(first_half, 0..total / 2))
        .await
        .unwrap();
    gateway.wait_metric(
        "sieve_receiver_accepted_items_total",
        &[("receiver", "kafka")],
        Duration::from_secs(60),
        |n| n > 0.0,
    );
    gateway.wait_metric(
        "sieve_tail_sampling_traces_held",
        &[],
        Duration::from_secs(10),
        |n| n > 0.0,
    );
    // The scenario, not synchronisation: let librdkafka's 1 s auto-commit run while the
    // traces are still held, so offsets stored at acceptance would now be committed and
    // those traces lost. Then kill it without a chance to flush.
    std::thread::sleep(Duration::from_secs(3));
    gateway.signal("KILL");
    drop(gateway);

    tokio::task::spawn_blocking(move || send_traces(endpoint, total / 2..total))
        .await
        .unwrap();
    let sent = agent.wait_metric(
        "sieve_exporter_sent_items_total",
        &[("exporter", "kafka")],
        Duration::from_secs(30),
        |n| n as usize == total * SPANS_PER_TRACE,
    );
    assert_eq!(agent.metric("sieve_exporter_dropped_items_total", &[]), 0.0);

    let gateway = Sieve::start(&gateway_config(&broker.brokers(), &sink.grpc_endpoint()));
    let keepers = (0..total)
        .filter(|i| crate::tail_sampling::kind(*i) != crate::tail_sampling::Kind::Plain)
        .count();
    sink.wait_for(
        Duration::from_secs(90),
        "every error and slow trace, whole",
        |r| {
            spans_by_index(r)
                .iter()
                .filter(|(i, spans)| {
                    crate::tail_sampling::kind(**i) != crate::tail_sampling::Kind::Plain
                        && spans.len() == SPANS_PER_TRACE
                })
                .count()
                == keepers
        },
    )
    .await;
    gateway.wait_metric(
        "sieve_receiver_accepted_items_total",
        &[("receiver", "kafka")],
        Duration::from_secs(30),
        |n| n > 0.0,
    );
    sink.with(|r| {
        check_kept(r, total);
        let unique: usize = spans_by_index(r).values().map(|s| s.len()).sum();
        let duplicates = r.span_count() - unique;
        eprintln!(
            "agent acknowledged {sent} spans; sink got {} spans, {duplicates} of them duplicates",
            r.span_count()
        );
    });
}

/// A gateway without tail sampling whose exporter and pipeline queues hold one batch.
fn stallable_gateway_config(brokers: &str, sink: &str) -> String {
    format!(
        "receivers:
  kafka:
    brokers: [\"{brokers}\"]
    group_id: stallable
    initial_offset: earliest
    traces: {{topic: otlp_spans}}
exporters:
  otlp:
    endpoint: {sink}
    sending_queue: {{queue_size: 1, num_consumers: 1}}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [kafka]
      exporters: [otlp]
      queue:
        capacity: 1
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_pipeline_pauses_consumption_and_loses_nothing() {
    let broker = Tansu::start();
    broker.create_topic("otlp_spans", 1);
    let sink = Sink::start().await;
    sink.stall();
    let agent = Sieve::start(&agent_config(&broker.brokers()));
    let total = 40;
    let endpoint = format!("http://127.0.0.1:{}", agent.grpc);
    tokio::task::spawn_blocking(move || send_traces(endpoint, 0..total))
        .await
        .unwrap();
    agent.wait_metric(
        "sieve_exporter_sent_items_total",
        &[("exporter", "kafka")],
        Duration::from_secs(30),
        |n| n as usize == total * SPANS_PER_TRACE,
    );
    let gateway = Sieve::start(&stallable_gateway_config(
        &broker.brokers(),
        &sink.grpc_endpoint(),
    ));
    // the receiver retries refused messages itself: the pipeline counts each refusal
    gateway.wait_metric(
        "sieve_pipeline_refused_items_total",
        &[("pipeline", "traces")],
        Duration::from_secs(60),
        |n| n > 0.0,
    );
    sink.resume();
    sink.wait_for(Duration::from_secs(60), "every span", |r| {
        spans_by_index(r).values().map(|s| s.len()).sum::<usize>() == total * SPANS_PER_TRACE
    })
    .await;
    assert_eq!(
        gateway.metric("sieve_pipeline_dropped_items_total", &[]),
        0.0
    );
    assert_eq!(
        gateway.metric("sieve_exporter_dropped_items_total", &[]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_the_exporter_retries_then_drops_and_counts() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let config = agent_config(&nobody)
        .replace("    timeout: 50ms\n", "    timeout: 10ms\n")
        .replace(
            "    retry_on_failure:\n      initial_interval: 100ms\n",
            "    timeout: 500ms\n    retry_on_failure:\n      initial_interval: 100ms\n      max_elapsed_time: 2s\n",
        );
    let agent = Sieve::start(&config);
    let endpoint = format!("http://127.0.0.1:{}", agent.grpc);
    tokio::task::spawn_blocking(move || send_traces(endpoint, 0..1))
        .await
        .unwrap();
    let dropped = agent.wait_metric(
        "sieve_exporter_dropped_items_total",
        &[("exporter", "kafka"), ("reason", "retries_exhausted")],
        Duration::from_secs(30),
        |n| n > 0.0,
    );
    assert_eq!(dropped, SPANS_PER_TRACE as f64, "a trace's spans, counted");
    assert!(
        agent.metric(
            "sieve_exporter_send_failed_items_total",
            &[("exporter", "kafka")]
        ) >= 2.0 * dropped,
        "retried before dropping"
    );
    assert_eq!(
        agent.metric("sieve_exporter_sent_items_total", &[("exporter", "kafka")]),
        0.0
    );
}

/// An agent taking OTLP/HTTP and exporting traces and logs to their default topics.
fn two_signal_agent_config(brokers: &str) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
exporters:
  kafka:
    brokers: [\"{brokers}\"]
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [kafka]
    logs:
      receivers: [otlp]
      exporters: [kafka]
"
    )
}

/// A gateway on the default topics whose pipelines are `signals`.
fn default_topics_gateway_config(brokers: &str, sink: &str, signals: &[&str]) -> String {
    let pipelines: String = signals
        .iter()
        .map(|s| format!("    {s}:\n      receivers: [kafka]\n      exporters: [otlp]\n"))
        .collect();
    format!(
        "receivers:
  kafka:
    brokers: [\"{brokers}\"]
    group_id: following
    initial_offset: earliest
    session_timeout: 6s
    heartbeat_interval: 1s
exporters:
  otlp:
    endpoint: {sink}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
{pipelines}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_added_on_reload_subscribes_to_its_signals_topic() {
    let broker = Tansu::start();
    broker.create_topic("otlp_spans", 1);
    broker.create_topic("otlp_logs", 1);
    let agent = Sieve::start(&two_signal_agent_config(&broker.brokers()));
    for (file, path) in [("trace.json", "/v1/traces"), ("logs.json", "/v1/logs")] {
        let body = std::fs::read(format!(
            "{}/tests/data/otlp-json/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let (status, _, _) = post(agent.http, path, "application/json", None, body).await;
        assert_eq!(status, 200, "{file}");
    }
    agent.wait_metric(
        "sieve_exporter_sent_items_total",
        &[("exporter", "kafka")],
        Duration::from_secs(30),
        |n| n == 2.0,
    );

    let sink = Sink::start().await;
    let gateway = Sieve::start(&default_topics_gateway_config(
        &broker.brokers(),
        &sink.grpc_endpoint(),
        &["traces"],
    ));
    sink.wait_for(Duration::from_secs(60), "the span", |r| r.span_count() == 1)
        .await;
    assert_eq!(sink.with(|r| r.log_count()), 0, "no logs pipeline yet");

    gateway.reload_with(
        &default_topics_gateway_config(
            &broker.brokers(),
            &sink.grpc_endpoint(),
            &["traces", "logs"],
        ),
        1.0,
    );
    sink.wait_for(Duration::from_secs(60), "the log record", |r| {
        r.log_count() == 1
    })
    .await;
    assert_eq!(
        gateway.metric(
            "sieve_receiver_rejected_requests_total",
            &[("reason", "no_pipeline")]
        ),
        0.0,
        "the logs topic was not read before its pipeline existed"
    );
}
