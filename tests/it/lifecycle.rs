//! Backpressure, reload and shutdown, with clients sending while things change.

use crate::harness::{
    free_port, http_get, make_certificates, passthrough_config, post, sum_samples, traces_request,
    Sieve,
};
use crate::otlp::grpc_call;
use crate::sink::Sink;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const SPANS_PER_REQUEST: usize = 10;

const SMALL_QUEUES: &str = "      queue:
        capacity: 2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_exporter_turns_into_refusals_and_nothing_accepted_is_lost() {
    let sink = Sink::start().await;
    let config = passthrough_config(&sink.grpc_endpoint(), "", "", SMALL_QUEUES).replace(
        "    compression: gzip\n",
        "    compression: gzip\n    sending_queue:\n      queue_size: 2\n      num_consumers: 1\n",
    );
    let sieve = Sieve::start(&config);
    sink.stall();
    let (mut accepted, mut refused) = (0usize, 0usize);
    for tag in 0..40 {
        let (status, headers, _) = post(
            sieve.http,
            "/v1/traces",
            "application/x-protobuf",
            None,
            traces_request(tag, SPANS_PER_REQUEST),
        )
        .await;
        match status {
            200 => accepted += 1,
            503 => {
                assert_eq!(headers["retry-after"], "1");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        refused > 0,
        "a stalled backend with tiny queues must refuse"
    );
    assert!(
        accepted >= 3,
        "the queues hold a few requests before refusing (accepted {accepted})"
    );
    let grpc_status = grpc_call(
        sieve.grpc,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        None,
        &traces_request(99, SPANS_PER_REQUEST),
    )
    .await;
    assert_eq!(grpc_status, 14, "gRPC clients get UNAVAILABLE");
    refused += 1;
    let items = |n: usize| (n * SPANS_PER_REQUEST) as f64;
    let refused_read = sieve.metric(
        "sieve_receiver_refused_items_total",
        &[("reason", "queue_full")],
    );
    let refused_unread = sieve.metric(
        "sieve_receiver_refused_unread_requests_total",
        &[("reason", "queue_full")],
    );
    assert!(
        refused_unread > 0.0,
        "a full pipeline refuses at the headers"
    );
    assert_eq!(
        refused_read / SPANS_PER_REQUEST as f64 + refused_unread,
        refused as f64,
        "each refusal is counted once: by its items when its body was read, by request when refused before"
    );
    assert_eq!(
        sieve.metric(
            "sieve_receiver_accepted_items_total",
            &[("signal", "traces")]
        ),
        items(accepted)
    );
    assert!(sieve.metric("sieve_queue_size", &[("queue", "pipeline:traces")]) >= 1.0);

    sink.resume();
    sink.wait_for(WAIT, "every accepted span", |r| {
        r.span_count() == accepted * SPANS_PER_REQUEST
    })
    .await;
    sieve.wait_metric("sieve_exporter_sent_items_total", &[], WAIT, |v| {
        v == items(accepted)
    });
    assert_eq!(sieve.metric("sieve_exporter_dropped_items_total", &[]), 0.0);
    assert_eq!(sieve.metric("sieve_pipeline_dropped_items_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_accepts_and_counts_what_it_drops() {
    let sink = Sink::start().await;
    let queue = "      queue:\n        capacity: 1\n        when_full: drop_newest";
    let config = passthrough_config(&sink.grpc_endpoint(), "", "", queue).replace(
        "    compression: gzip\n",
        "    compression: gzip\n    sending_queue:\n      queue_size: 1\n      num_consumers: 1\n",
    );
    let sieve = Sieve::start(&config);
    sink.stall();
    for tag in 0..20 {
        let (status, _, _) = post(
            sieve.http,
            "/v1/traces",
            "application/x-protobuf",
            None,
            traces_request(tag, SPANS_PER_REQUEST),
        )
        .await;
        assert_eq!(status, 200, "drop_newest never refuses");
    }
    let dropped = sieve.metric(
        "sieve_pipeline_dropped_items_total",
        &[("reason", "queue_full")],
    );
    assert!(dropped > 0.0);
    sink.resume();
    let delivered = 200.0 - dropped;
    sieve.wait_metric("sieve_exporter_sent_items_total", &[], WAIT, |v| {
        v == delivered
    });
    sink.wait_for(WAIT, "the undropped spans", |r| {
        r.span_count() as f64 == delivered
    })
    .await;
}

/// Sends requests over one keep-alive HTTP client until stopped; counts outcomes.
struct Client {
    ok: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn start(port: u16) -> Client {
        let (ok, errors, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (ok2, errors2, stop2) = (ok.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = crate::harness::http_client();
            let mut tag = 0;
            while !stop2.load(Ordering::SeqCst) {
                let req = http::Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        traces_request(tag, SPANS_PER_REQUEST),
                    )))
                    .unwrap();
                match client.request(req).await {
                    Ok(r) if r.status() == 200 => ok2.fetch_add(1, Ordering::SeqCst),
                    _ => errors2.fetch_add(1, Ordering::SeqCst),
                };
                tag += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        Client {
            ok,
            errors,
            stop,
            task,
        }
    }

    async fn wait_for_requests(&self, more: usize) {
        let target = self.ok.load(Ordering::SeqCst) + more;
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.ok.load(Ordering::SeqCst) < target {
            assert!(tokio::time::Instant::now() < deadline, "client stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.ok.load(Ordering::SeqCst),
            self.errors.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_keeps_connections() {
    let (a, b) = (Sink::start().await, Sink::start().await);
    let first = passthrough_config(&a.grpc_endpoint(), "batch", "", "");
    let sieve = Sieve::start(&first);
    let client = Client::start(sieve.http);
    client.wait_for_requests(20).await;

    // (a) a changed exporter and (b) an added pipeline
    let second = passthrough_config(&b.grpc_endpoint(), "batch", "", "").replace(
        "    logs:\n",
        "    logs/extra:\n      receivers: [otlp]\n      exporters: [otlp]\n    logs:\n",
    );
    sieve.reload_with(&second, 1.0);
    client.wait_for_requests(20).await;
    let (status, _, _) = post(
        sieve.http,
        "/v1/logs",
        "application/json",
        None,
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    b.wait_for(WAIT, "the log in both log pipelines", |r| {
        r.log_count() == 2
    })
    .await;

    // (c) an invalid file: rejected, the running config keeps serving
    sieve.write_config("receivers:\n  otlp:\n    bogus: true\n");
    sieve.signal("HUP");
    sieve.wait_metric(
        "sieve_config_reloads_total",
        &[("result", "failure")],
        WAIT,
        |v| v == 1.0,
    );
    let spans_at_b = b.with(|r| r.span_count());
    client.wait_for_requests(20).await;
    let (ok, errors) = client.stop().await;
    assert_eq!(errors, 0, "no client saw an error during reloads");
    assert!(
        sieve.log().contains("unknown field `bogus`"),
        "the failed reload names the key:\n{}",
        sieve.log()
    );

    let expected = ok * SPANS_PER_REQUEST;
    b.wait_for(WAIT, "all spans at a or b", |r| {
        r.span_count() + a.with(|ra| ra.span_count()) == expected
    })
    .await;
    assert!(
        a.with(|r| r.span_count()) > 0 && b.with(|r| r.span_count()) > spans_at_b,
        "data moved to the new exporter and kept flowing"
    );
    assert_eq!(sieve.metric("sieve_exporter_dropped_items_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_receiver_takes_over_its_ports_under_load() {
    let sink = Sink::start().await;
    let first = passthrough_config(&sink.grpc_endpoint(), "batch", "", "");
    let sieve = Sieve::start(&first);
    let client = Client::start(sieve.http);
    client.wait_for_requests(20).await;

    let renamed = first
        .replace("  otlp:\n    protocols:", "  otlp/renamed:\n    protocols:")
        .replace("receivers: [otlp]", "receivers: [otlp/renamed]");
    assert_ne!(renamed, first);
    sieve.reload_with(&renamed, 1.0);
    sieve.wait_metric(
        "sieve_receiver_accepted_items_total",
        &[("receiver", "otlp/renamed")],
        WAIT,
        |v| v > 0.0,
    );
    let grpc_status = grpc_call(
        sieve.grpc,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        None,
        &traces_request(1, 1),
    )
    .await;
    assert_eq!(grpc_status, 0, "the gRPC port was taken over too");
    let (ok, errors) = client.stop().await;
    // The socket never closes, so no connection is refused. The old receiver does close
    // its keep-alive connection, and the client's one connection may race that close
    // with a request (which the client sees fail, and which was not accepted).
    assert!(errors <= 1, "{errors} client errors during the rename");
    let expected = ok * SPANS_PER_REQUEST + 1;
    sink.wait_for(WAIT, "every accepted span", |r| r.span_count() == expected)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_exits_zero() {
    let sink = Sink::start().await;
    let mut sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    let client = Client::start(sieve.http);
    client.wait_for_requests(30).await;
    sieve.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = sieve.wait_exit(Duration::from_secs(8));
        (status, sieve)
    })
    .await
    .unwrap();
    let (ok, _errors) = client.stop().await;
    let (status, sieve) = status;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit code; log:\n{}",
        sieve.log()
    );
    sink.wait_for(WAIT, "every accepted span", |r| {
        r.span_count() == ok * SPANS_PER_REQUEST
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_retried_then_dropped_and_counted() {
    let dead = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let config = passthrough_config(&dead, "", "", "").replace(
        "      max_interval: 200ms\n",
        "      max_interval: 200ms\n      max_elapsed_time: 500ms\n",
    );
    let sieve = Sieve::start(&config);
    let (status, _, _) = post(
        sieve.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        traces_request(1, SPANS_PER_REQUEST),
    )
    .await;
    assert_eq!(status, 200);
    sieve.wait_metric(
        "sieve_exporter_dropped_items_total",
        &[("reason", "retries_exhausted")],
        WAIT,
        |v| v == 10.0,
    );
    assert!(
        sieve.metric(
            "sieve_exporter_send_failed_items_total",
            &[("reason", "transport")]
        ) >= 20.0,
        "retried at least once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_not_retried() {
    let sink = Sink::start().await;
    sink.fail_next(tonic::Code::InvalidArgument, 1);
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "", "", ""));
    post(
        sieve.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        traces_request(1, SPANS_PER_REQUEST),
    )
    .await;
    sieve.wait_metric(
        "sieve_exporter_dropped_items_total",
        &[("reason", "permanent")],
        WAIT,
        |v| v == 10.0,
    );
    assert_eq!(
        sieve.metric(
            "sieve_exporter_send_failed_items_total",
            &[("reason", "grpc_invalid_argument")]
        ),
        10.0
    );
    sink.fail_next(tonic::Code::Unavailable, 2);
    post(
        sieve.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        traces_request(2, SPANS_PER_REQUEST),
    )
    .await;
    sink.wait_for(WAIT, "the retried request", |r| r.span_count() == 10)
        .await;
    assert_eq!(
        sieve.metric(
            "sieve_exporter_send_failed_items_total",
            &[("reason", "grpc_unavailable")]
        ),
        20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limiter_refuses_before_accepting() {
    let sink = Sink::start().await;
    // a 1 MiB limit is below what sieve holds even idle, so admission closes at once
    let config = passthrough_config(&sink.grpc_endpoint(), "memory_limiter, batch", "", "")
        .replace(
            "processors:\n",
            "processors:\n  memory_limiter:\n    check_interval: 10ms\n    limit_mib: 1\n",
        );
    let sieve = Sieve::start(&config);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, headers, _) = post(
            sieve.http,
            "/v1/traces",
            "application/x-protobuf",
            None,
            traces_request(1, SPANS_PER_REQUEST),
        )
        .await;
        if status == 503 {
            assert_eq!(headers["retry-after"], "1");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the limiter never closed admission"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sieve.metric(
            "sieve_receiver_refused_unread_requests_total",
            &[("reason", "memory_limit")]
        ) >= 1.0,
        "refused before its body was read"
    );
    assert_eq!(
        sieve.metric("sieve_receiver_received_items_total", &[]),
        sieve.metric("sieve_receiver_accepted_items_total", &[])
            + sieve.metric("sieve_receiver_refused_items_total", &[]),
        "what was refused unread is not in the item counts"
    );
    let accepted = sieve.metric("sieve_receiver_accepted_items_total", &[]);
    sieve.wait_metric("sieve_exporter_sent_items_total", &[], WAIT, |v| {
        v == accepted
    });
}

/// The exporter must wait at least the server's delay, although its own backoff is 50ms.
async fn server_delay_is_honoured(exporter: &str) {
    let sink = Sink::start().await;
    let delay = Duration::from_secs(1);
    sink.fail_next_with_retry_after(tonic::Code::Unavailable, 1, delay);
    let mut config = passthrough_config(&sink.grpc_endpoint(), "", "", "");
    if exporter == "otlphttp" {
        config = config
            .replace(
                &format!("  otlp:\n    endpoint: {}", sink.grpc_endpoint()),
                &format!("  otlphttp:\n    endpoint: {}", sink.http_endpoint()),
            )
            .replace("exporters: [otlp]", "exporters: [otlphttp]");
    }
    assert!(
        config.contains("initial_interval: 50ms"),
        "the exporter's own backoff is short"
    );
    let sieve = Sieve::start(&config);
    let (status, _, _) = post(
        sieve.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        traces_request(1, SPANS_PER_REQUEST),
    )
    .await;
    assert_eq!(status, 200);
    sink.wait_for(WAIT, "the retried request", |r| {
        r.span_count() == SPANS_PER_REQUEST
    })
    .await;
    let attempts = sink.attempts();
    assert_eq!(attempts.len(), 2, "one failure, one success");
    assert!(
        attempts[1] - attempts[0] >= delay,
        "{exporter} retried after {:?}, before the server's delay",
        attempts[1] - attempts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retry_info_delay_is_honoured() {
    server_delay_is_honoured("otlp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_retry_after_is_honoured() {
    server_delay_is_honoured("otlphttp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_self_telemetry_and_changes_the_log_level() {
    let sink = Sink::start().await;
    let base = passthrough_config(&sink.grpc_endpoint(), "batch", "", "");
    let sieve = Sieve::start(&base);
    let moved = free_port();
    let quiet = base.replace(
        "  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics}\n",
        &format!(
            "  telemetry:\n    logs:\n      level: warn\n    metrics:\n      address: 127.0.0.1:{moved}\n"
        ),
    );
    assert_ne!(quiet, base);
    sieve.write_config(&quiet);
    sieve.signal("HUP");
    let reloads = |port| {
        http_get(port, "/metrics").map_or(0.0, |(_, text)| {
            sum_samples(
                &text,
                "sieve_config_reloads_total",
                &[("result", "success")],
            )
        })
    };
    let deadline = std::time::Instant::now() + WAIT;
    while reloads(moved) != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics on the new address"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        http_get(sieve.metrics, "/metrics").is_none(),
        "the old metrics address is closed"
    );

    let loud = quiet.replace("      level: warn\n", "      level: info\n");
    sieve.write_config(&loud);
    sieve.signal("HUP");
    while reloads(moved) != 2.0 {
        assert!(std::time::Instant::now() < deadline, "second reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while !sieve.log().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", sieve.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sieve.log().matches("configuration reloaded").count(),
        1,
        "at level warn, the first reload logged nothing at info:\n{}",
        sieve.log()
    );
}

/// A reload whose component cannot be built (its CA file removed after validation read
/// it) fails as a whole: the running pipelines keep serving. Before builds became
/// fallible, this panicked in the middle of the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_cannot_be_built_fails_the_reload_and_the_old_pipelines_serve() {
    use sieve::components::Config;
    use sieve::telemetry::Telemetry;
    use sieve::topology::Topology;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let running = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\n\
         exporters:\n  otlp:\n    endpoint: {}\n{{extra}}\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp{{more}}]\n",
        sink.grpc_endpoint()
    );
    let config = |extra: &str, more: &str| {
        let text = running.replace("{extra}", extra).replace("{more}", more);
        Config::parse(&text, "test.yaml").unwrap()
    };
    let mut topology = Topology::new(Telemetry::new());
    topology.apply(config("", "")).await.unwrap();
    let port = topology.receiver_addresses()["otlp"][0].port();

    let ca = dir.path().join("ca.pem");
    let secure = format!(
        "  otlphttp/secure:\n    endpoint: https://127.0.0.1:1\n    tls:\n      ca_file: {}\n",
        ca.display()
    );
    let validated = config(&secure, ", otlphttp/secure");
    std::fs::remove_file(&ca).unwrap();
    let error = topology.apply(validated).await.unwrap_err();
    assert!(
        error.contains("cannot build `otlphttp/secure`: tls:") && error.contains("ca.pem"),
        "the error names the component, its key and the file: {error}"
    );

    let (status, _, _) = post(
        port,
        "/v1/traces",
        "application/x-protobuf",
        None,
        traces_request(1, 3),
    )
    .await;
    assert_eq!(status, 200, "the running receiver still accepts");
    sink.wait_for(WAIT, "the spans through the running pipeline", |r| {
        r.span_count() == 3
    })
    .await;
    topology.shutdown(Duration::from_secs(5)).await;
}
