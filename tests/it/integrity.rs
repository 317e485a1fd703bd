//! Hostile and heavy input (issue 11): what sieve accepts it can decode, one client's bad
//! request costs no other client anything, and the counters add up.

use crate::harness::{passthrough_config, post, traces_request, Sieve};
use crate::otlp::grpc_call;
use crate::sink::Sink;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use prost::Message;
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Names of the spans `traces_request(tag, n)` holds.
fn names(tag: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{tag}-s{i}")).collect()
}

/// `traces_request(tag, 10)` with span 3's name made invalid UTF-8.
fn with_invalid_utf8(tag: usize) -> Vec<u8> {
    let mut request = traces_request(tag, 10);
    let name = format!("r{tag}-s3");
    let at = request
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap();
    request[at] = 0xff;
    request
}

/// `traces_request(tag, 10)` with span 3 carrying an attribute nested past the decoder's
/// recursion limit (prost encodes what it would refuse to decode).
fn with_deep_attribute(tag: usize) -> Vec<u8> {
    let mut request =
        ExportTraceServiceRequest::decode(traces_request(tag, 10).as_slice()).unwrap();
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("deep".into())),
    };
    for _ in 0..60 {
        value = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    request.resource_spans[0].scope_spans[0].spans[3]
        .attributes
        .push(KeyValue {
            key: "deep".into(),
            value: Some(value),
            ..Default::default()
        });
    request.encode_to_vec()
}

/// An OTLP/JSON request of 10 spans named like `traces_request`'s; with `bad_id`, span 3
/// has a trace id of the wrong length.
fn json_request(tag: usize, bad_id: bool) -> Vec<u8> {
    let spans: Vec<String> = (0..10)
        .map(|i| {
            let trace = if bad_id && i == 3 {
                "abcd".to_string()
            } else {
                format!("{:032x}", tag + 1)
            };
            format!(
                r#"{{"traceId":"{trace}","spanId":"{:016x}","name":"r{tag}-s{i}"}}"#,
                i + 1
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
    .into_bytes()
}

fn rejected_spans(response: &[u8], json: bool) -> i64 {
    if json {
        let value: serde_json::Value = serde_json::from_slice(response).unwrap();
        value["partialSuccess"]["rejectedSpans"]
            .as_str()
            .map_or(0, |n| n.parse().unwrap())
    } else {
        ExportTraceServiceResponse::decode(response)
            .unwrap()
            .partial_success
            .map_or(0, |p| p.rejected_spans)
    }
}

/// Several clients at once, over gRPC, protobuf and JSON, some sending requests with one
/// undecodable span (invalid UTF-8, nesting past the decoder's limit, a bad id) or with
/// nothing decodable. The batch processor merges them all; every valid span arrives, no
/// invalid one does, each client is told exactly what was refused, and the counters add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_interleaved_with_valid_ones_cost_nobody_anything() {
    let sink = Sink::start().await;
    let config = passthrough_config(&sink.grpc_endpoint(), "batch", "", "")
        .replace("timeout: 50ms", "timeout: 1s\n    send_batch_size: 100000");
    let sieve = Sieve::start(&config);
    let (http, grpc) = (sieve.http, sieve.grpc);
    let mut clients = tokio::task::JoinSet::new();
    clients.spawn(async move {
        for tag in 0..10 {
            let (status, _, body) = post(
                http,
                "/v1/traces",
                "application/x-protobuf",
                None,
                traces_request(tag, 10),
            )
            .await;
            assert_eq!((status, rejected_spans(&body, false)), (200, 0));
        }
    });
    clients.spawn(async move {
        for tag in 100..110 {
            assert_eq!(
                grpc_call(grpc, TRACES, None, &traces_request(tag, 10)).await,
                0
            );
        }
    });
    clients.spawn(async move {
        for tag in 200..210 {
            let (status, _, body) = post(
                http,
                "/v1/traces",
                "application/json",
                None,
                json_request(tag, false),
            )
            .await;
            assert_eq!((status, rejected_spans(&body, true)), (200, 0));
        }
    });
    clients.spawn(async move {
        for tag in 300..310 {
            let (status, _, body) = post(
                http,
                "/v1/traces",
                "application/x-protobuf",
                None,
                with_invalid_utf8(tag),
            )
            .await;
            assert_eq!(
                (status, rejected_spans(&body, false)),
                (200, 1),
                "tag {tag}"
            );
        }
    });
    clients.spawn(async move {
        for tag in 400..410 {
            assert_eq!(
                grpc_call(grpc, TRACES, None, &with_deep_attribute(tag)).await,
                0
            );
        }
    });
    clients.spawn(async move {
        for tag in 500..510 {
            let (status, _, body) = post(
                http,
                "/v1/traces",
                "application/json",
                None,
                json_request(tag, true),
            )
            .await;
            assert_eq!((status, rejected_spans(&body, true)), (200, 1), "tag {tag}");
        }
    });
    clients.spawn(async move {
        for tag in 600..605 {
            let mut request = traces_request(tag, 10);
            let prefix = format!("r{tag}-s");
            for i in 0..request.len() - prefix.len() {
                if request[i..].starts_with(prefix.as_bytes()) {
                    request[i] = 0xfe;
                }
            }
            let (status, _, _) =
                post(http, "/v1/traces", "application/x-protobuf", None, request).await;
            assert_eq!(
                status, 400,
                "nothing decodable: the whole request is refused"
            );
        }
    });
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }

    let mut expected = BTreeSet::new();
    for tag in (0..10).chain(100..110).chain(200..210) {
        expected.extend(names(tag, 10));
    }
    for tag in (300..310).chain(400..410).chain(500..510) {
        expected.extend(names(tag, 10).into_iter().filter(|n| !n.ends_with("-s3")));
    }
    assert_eq!(expected.len(), 570);
    // the exporter counts a batch as sent once the sink answered: then everything is in
    sieve.wait_metric("sieve_exporter_sent_items_total", &[], WAIT, |v| v >= 570.0);
    let arrived = sink.with(|r| r.span_names());
    assert_eq!(arrived.len(), 570, "each valid span exactly once");
    assert_eq!(arrived.into_iter().collect::<BTreeSet<_>>(), expected);

    let metric = |name: &str, labels: &[(&str, &str)]| sieve.metric(name, labels);
    assert_eq!(metric("sieve_receiver_accepted_items_total", &[]), 570.0);
    assert_eq!(metric("sieve_receiver_received_items_total", &[]), 570.0);
    assert_eq!(
        metric("sieve_exporter_sent_items_total", &[]),
        570.0,
        "sent once"
    );
    let rejected = |reason| metric("sieve_receiver_rejected_items_total", &[("reason", reason)]);
    assert_eq!(rejected("invalid_utf8"), 10.0 + 50.0);
    assert_eq!(rejected("too_deep"), 10.0);
    assert_eq!(rejected("invalid_id"), 10.0);
    assert_eq!(metric("sieve_pipeline_dropped_items_total", &[]), 0.0);
    assert_eq!(metric("sieve_exporter_dropped_items_total", &[]), 0.0);
    assert_eq!(
        metric(
            "sieve_receiver_rejected_requests_total",
            &[("reason", "invalid_utf8")]
        ),
        5.0
    );
}

/// A declared `Content-Length` over the limit is answered with 413 from the headers: the
/// body is never read (the client here never sends it).
#[test]
fn an_oversized_content_length_is_refused_before_the_body() {
    use std::io::{Read, Write};
    let sink_config = passthrough_config("http://127.0.0.1:9", "batch", "", "");
    let sieve = Sieve::start(&sink_config);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", sieve.http)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 21700000\r\n\r\n"
    )
    .unwrap();
    let mut response = [0u8; 12];
    stream.read_exact(&mut response).unwrap();
    assert_eq!(&response, b"HTTP/1.1 413");
    assert_eq!(
        sieve.metric(
            "sieve_receiver_rejected_requests_total",
            &[("reason", "too_large")]
        ),
        1.0
    );
}

/// One OTLP/JSON span with `attributes` attributes of an empty value: the shape that
/// inflated 35× through a JSON tree (19.5 MB for 850k attributes).
fn json_bomb(attributes: usize) -> Vec<u8> {
    let one = r#"{"key":"k","value":{}},"#;
    let mut body = String::with_capacity(attributes * one.len() + 200);
    body.push_str(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"bomb","attributes":["#);
    for _ in 0..attributes {
        body.push_str(one);
    }
    body.pop();
    body.push_str("]}]}]}]}");
    body.into_bytes()
}

/// Samples a process's RSS until stopped; returns the peak.
struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024;
                peak = peak.max(rss);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        PeakRss { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Four 19.5 MB JSON bodies at once (850k empty attributes each, just under the 20 MiB
/// limit): memory stays within a small factor of the bodies, and a memory limiter that
/// closed admission during the burst opens it again within seconds of its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bombs_stay_bounded_and_admission_reopens_after_the_burst() {
    let sink = Sink::start().await;
    let config = passthrough_config(&sink.grpc_endpoint(), "memory_limiter, batch", "", "")
        .replace(
            "processors:\n",
            "processors:\n  memory_limiter:\n    check_interval: 50ms\n    limit_mib: 96\n",
        );
    let sieve = Sieve::start(&config);
    let body = json_bomb(850_000);
    assert!(
        body.len() > 19_000_000 && body.len() < 20 << 20,
        "{}",
        body.len()
    );
    let baseline = sieve.rss_bytes();
    let watch = PeakRss::watch(sieve.pid());
    let mut bombs = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (http, body) = (sieve.http, body.clone());
        bombs.spawn(async move {
            post(http, "/v1/traces", "application/json", None, body)
                .await
                .0
        });
    }
    while let Some(status) = bombs.join_next().await {
        let status = status.unwrap();
        assert!(
            status == 200 || status == 503,
            "accepted or refused, got {status}"
        );
    }
    let peak = watch.peak();
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 4 * body.len() as u64 * 3,
        "RSS grew {} MiB for 4 bodies of {} MiB",
        growth >> 20,
        body.len() >> 20
    );
    // within seconds of the burst, an ordinary request is accepted again
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = post(
            sieve.http,
            "/v1/traces",
            "application/x-protobuf",
            None,
            traces_request(1, 5),
        )
        .await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused ({status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The books of one scrape: receiver, pipeline and exporter identities, and the items
/// in flight.
pub(crate) fn check_books(text: &str) -> f64 {
    use crate::harness::sum_samples;
    let get = |name: &str| sum_samples(text, name, &[("signal", "traces")]);
    let pipeline = |name: &str| sum_samples(text, name, &[("pipeline", "traces")]);
    assert_eq!(
        get("sieve_receiver_received_items_total"),
        get("sieve_receiver_accepted_items_total") + get("sieve_receiver_refused_items_total"),
        "receiver: received = accepted + refused\n{text}"
    );
    assert_eq!(
        pipeline("sieve_pipeline_accepted_items_total"),
        pipeline("sieve_pipeline_emitted_items_total")
            + pipeline("sieve_pipeline_dropped_items_total")
            + pipeline("sieve_pipeline_queued_items")
            + pipeline("sieve_pipeline_held_items"),
        "pipeline: accepted = emitted + dropped + queued + held\n{text}"
    );
    assert_eq!(
        get("sieve_exporter_enqueued_items_total"),
        get("sieve_exporter_sent_items_total")
            + get("sieve_exporter_dropped_items_total")
            + get("sieve_exporter_queued_items")
            + get("sieve_exporter_in_flight_items"),
        "exporter: enqueued = sent + dropped + queued + in flight\n{text}"
    );
    get("sieve_exporter_in_flight_items")
}

/// During a backend outage, batches waiting between retries are counted as in flight:
/// every scrape, taken while data keeps arriving, balances for the receiver, the
/// pipeline and the exporter; once the backend is back, everything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_add_up_at_every_scrape_during_an_outage() {
    let sink = Sink::start().await;
    sink.fail_next(tonic::Code::Unavailable, usize::MAX);
    let sieve = Sieve::start(&passthrough_config(&sink.grpc_endpoint(), "batch", "", ""));
    let http = sieve.http;
    let sender = tokio::spawn(async move {
        for tag in 0..100 {
            let body = traces_request(tag, 20);
            let (status, _, _) =
                post(http, "/v1/traces", "application/x-protobuf", None, body).await;
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut scrapes = 0;
    let mut saw_in_flight = false;
    while !sender.is_finished() {
        saw_in_flight |= check_books(&sieve.metrics_text()) > 0.0;
        scrapes += 1;
    }
    sender.await.unwrap();
    assert!(saw_in_flight, "retrying batches show as in flight");
    sink.fail_next(tonic::Code::Unavailable, 0);
    sieve.wait_metric("sieve_exporter_sent_items_total", &[], WAIT, |v| {
        v >= 2000.0
    });
    let text = sieve.metrics_text();
    assert_eq!(check_books(&text), 0.0);
    assert!(scrapes > 20, "only {scrapes} scrapes");
}

/// An HTTP client whose connections leave from `source`.
fn client_from(
    source: std::net::IpAddr,
    http2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(Some(source));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(http2)
        .build(connector)
}

/// One source address opens 1,100 connections to each protocol and stalls them (half an
/// HTTP request header, or nothing): a client from another address is still served over
/// HTTP and gRPC without errors; the stalled connections past the per-address limit are
/// closed at once, and the rest once `read_header_timeout` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_from_one_address_lock_nobody_else_out() {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let sink = Sink::start().await;
    let config = passthrough_config(&sink.grpc_endpoint(), "batch", "", "")
        .replace(
            "        endpoint: 127.0.0.1:{grpc}\n",
            "        endpoint: 127.0.0.1:{grpc}\n        read_header_timeout: 2s\n",
        )
        .replace(
            "        endpoint: 127.0.0.1:{http}\n",
            "        endpoint: 127.0.0.1:{http}\n        read_header_timeout: 2s\n",
        );
    let sieve = Sieve::start(&config);
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut stalled: Vec<tokio::net::TcpStream> = Vec::new();
    for port in [sieve.http, sieve.grpc] {
        for _ in 0..1100 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((attacker, 0).into()).unwrap();
            let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
            if port == sieve.http {
                let _ = stream
                    .write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
                    .await;
            }
            stalled.push(stream);
        }
    }
    let client: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let request = http::Request::post(format!("http://127.0.0.1:{}/v1/traces", sieve.http))
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            traces_request(1, 5),
        )))
        .unwrap();
    let response = client_from(client, false).request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let call = http::Request::post(format!("http://127.0.0.1:{}{TRACES}", sieve.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(sieve::grpc::frame(
            false,
            &traces_request(2, 5),
        )))
        .unwrap();
    let response = client_from(client, true).request(call).await.unwrap();
    let trailers = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .trailers()
        .cloned();
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    sink.wait_for(WAIT, "both requests", |r| r.span_count() == 10)
        .await;
    let refused = |reason| {
        sieve.metric(
            "sieve_receiver_rejected_requests_total",
            &[("reason", reason)],
        )
    };
    // the kernel completes connections before sieve accepts them: the count arrives
    // as sieve works through its accept backlog
    let over_limit = 2.0 * (1100.0 - 256.0);
    sieve.wait_metric(
        "sieve_receiver_rejected_requests_total",
        &[("reason", "source_limit")],
        WAIT,
        |n| n >= over_limit,
    );
    assert_eq!(refused("source_limit"), over_limit);
    // connections that never sent a request are closed after read_header_timeout
    sieve.wait_metric(
        "sieve_receiver_rejected_requests_total",
        &[("reason", "header_timeout")],
        WAIT,
        |n| n >= 256.0,
    );
    for index in [0, 1100] {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, stalled[index].peek(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "stalled connection {index} still open: {read:?}"
        );
    }
}

/// `workers: 2`: two threads, each with its own redaction and batch processor, take from
/// one pipeline queue; several clients send at once. Every span arrives exactly once,
/// and the books balance at every scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_deliver_everything_once_and_the_books_balance() {
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 50;
    let sink = Sink::start().await;
    let config = passthrough_config(
        &sink.grpc_endpoint(),
        "redaction, batch",
        "",
        "      workers: 2",
    )
    .replace(
        "processors:\n",
        "processors:\n  redaction:\n    allow_all_keys: true\n",
    );
    let sieve = Sieve::start(&config);
    let threads = std::fs::read_dir(format!("/proc/{}/task", sieve.pid()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().ends_with(" traces"))
        .count();
    assert_eq!(threads, 2, "two worker threads run the traces pipeline");
    let http = sieve.http;
    let senders: Vec<_> = (0..CLIENTS)
        .map(|client| {
            tokio::spawn(async move {
                for n in 0..REQUESTS {
                    let tag = client * REQUESTS + n;
                    let (status, _, _) = post(
                        http,
                        "/v1/traces",
                        "application/x-protobuf",
                        None,
                        traces_request(tag, 10),
                    )
                    .await;
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
        check_books(&sieve.metrics_text());
    }
    let expected = CLIENTS * REQUESTS * 10;
    sink.wait_for(Duration::from_secs(30), "every span", |r| {
        r.span_count() >= expected
    })
    .await;
    let names: BTreeSet<String> = sink.with(|r| r.span_names().into_iter().collect());
    assert_eq!(names.len(), expected, "every span once");
    assert_eq!(sink.with(|r| r.span_count()), expected, "no span twice");
    sieve.wait_metric(
        "sieve_exporter_sent_items_total",
        &[],
        Duration::from_secs(10),
        |v| v == expected as f64,
    );
    check_books(&sieve.metrics_text());
}
