//! The persistent queue (`file_storage` + `sending_queue.storage`): `kill -9` at random
//! moments under load, with the backend stalled and then flowing, loses no span sieve
//! acknowledged — checked by distinct span names, duplicates allowed.

use crate::harness::{http_client, traces_request, Sieve};
use crate::sink::Sink;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SPANS: usize = 5;

fn config(sink: &str, storage: &Path) -> String {
    format!(
        "extensions:
  file_storage:
    directory: {storage}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{{http}}
processors:
  batch:
    timeout: 100ms
exporters:
  otlp:
    endpoint: {sink}
    timeout: 1s
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 200ms
      max_elapsed_time: 0s
    sending_queue:
      storage: file_storage
service:
  extensions: [file_storage]
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
",
        storage = storage.display()
    )
}

/// POSTs a traces request; the status, or `None` when the connection failed (sieve
/// killed in the middle).
async fn try_post(port: u16, body: Vec<u8>) -> Option<u16> {
    let request = http::Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .ok()?;
    let response = http_client().request(request).await.ok()?;
    Some(response.status().as_u16())
}

/// Sends 100-span requests until one is refused, which must be the retryable refusal
/// counted as `storage_full`; returns the refused request's tag.
async fn fill_until_refused(sieve: &Sieve) -> usize {
    let mut tag = 0;
    let refused = loop {
        assert!(tag < 10_000, "never refused");
        match try_post(sieve.http, traces_request(tag, 100)).await {
            Some(200) => tag += 1,
            other => break other,
        }
    };
    assert_eq!(refused, Some(503), "the retryable refusal");
    let counted = sieve.metric(
        "sieve_pipeline_refused_items_total",
        &[("reason", "storage_full")],
    );
    assert!(counted > 0.0, "counted as storage_full");
    tag
}

/// Lets the backend answer, then waits until sieve takes the refused request `tag` by
/// itself and every request up to it arrives.
async fn recovers_and_delivers(sieve: &Sieve, sink: &Sink, tag: usize) {
    sink.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while try_post(sieve.http, traces_request(tag, 100)).await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "still refusing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.wait_for(Duration::from_secs(30), "what was accepted", |r| {
        let names: HashSet<String> = r.span_names().into_iter().collect();
        (0..=tag).all(|t| names.contains(&format!("r{t}-s99")))
    })
    .await;
}

/// Sends tagged requests from `first` on until `stop`; returns the tags answered 200.
async fn send_until(port: u16, first: usize, stop: Arc<AtomicBool>) -> (Vec<usize>, usize) {
    let mut acked = Vec::new();
    let mut tag = first;
    while !stop.load(Ordering::Relaxed) {
        let body = traces_request(tag, SPANS);
        let sent = tokio::time::timeout(Duration::from_secs(2), try_post(port, body));
        if let Ok(Some(200)) = sent.await {
            acked.push(tag);
        }
        tag += 1;
    }
    (acked, tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_span() {
    let sink = Sink::start().await;
    let storage = tempfile::tempdir().unwrap();
    let config = config(&sink.grpc_endpoint(), storage.path());
    let mut acked = HashSet::new();
    let mut next_tag = 0;
    for round in 0..12 {
        // the first half with the backend hung, the rest with it answering
        if round == 0 {
            sink.stall();
        }
        if round == 6 {
            sink.resume();
        }
        let mut sieve = Sieve::start(&config);
        let stop = Arc::new(AtomicBool::new(false));
        let sender = tokio::spawn(send_until(sieve.http, next_tag, Arc::clone(&stop)));
        tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(..700))).await;
        sieve.signal("KILL");
        sieve.wait_exit(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        let (tags, after) = sender.await.unwrap();
        acked.extend(tags);
        next_tag = after;
    }
    assert!(
        acked.len() > 50,
        "load was sent: {} requests acknowledged",
        acked.len()
    );
    let inspected = std::process::Command::new(crate::harness::sieve_bin())
        .args(["queue", "inspect"])
        .arg(storage.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&inspected.stdout);
    assert!(inspected.status.success(), "{report}");
    assert!(
        report.contains("traces: ") && report.contains(" segments, "),
        "{report}"
    );
    let _replaying = Sieve::start(&config);
    let expected: Vec<String> = acked
        .iter()
        .flat_map(|tag| (0..SPANS).map(move |i| format!("r{tag}-s{i}")))
        .collect();
    sink.wait_for(Duration::from_secs(60), "every acknowledged span", |r| {
        let names: HashSet<String> = r.span_names().into_iter().collect();
        expected.iter().all(|name| names.contains(name))
    })
    .await;
}

/// A backend down for a minute at 5k spans/s: with the persistent queue no client is
/// refused (requests wait on disk once the memory queues are full), and everything
/// arrives once the backend is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_long_outage_refuses_no_client_and_loses_nothing() {
    let sink = Sink::start().await;
    let storage = tempfile::tempdir().unwrap();
    let sieve = Sieve::start(&config(&sink.grpc_endpoint(), storage.path()));
    sink.stall();
    const SPANS_PER_REQUEST: usize = 100;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(60) {
        tick.tick().await;
        let status = try_post(sieve.http, traces_request(sent, SPANS_PER_REQUEST)).await;
        assert_eq!(
            status,
            Some(200),
            "request {sent} refused during the outage"
        );
        sent += 1;
    }
    assert!(sent >= 2900, "5k spans/s for 60 s: {sent} requests");
    assert_eq!(
        sieve.metric("sieve_pipeline_refused_items_total", &[]),
        0.0,
        "nothing refused"
    );
    sink.resume();
    sink.wait_for(
        Duration::from_secs(120),
        "every span after the outage",
        |r| {
            let names: HashSet<String> = r.span_names().into_iter().collect();
            (0..sent).all(|tag| names.contains(&format!("r{tag}-s{}", SPANS_PER_REQUEST - 1)))
        },
    )
    .await;
}

/// A reload that moves an exporter to another backend while the old one has a backlog:
/// the rebuilt pipeline takes the backlog over from the log, so every acknowledged span
/// arrives, and only what was in flight is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_backlog_hands_it_over() {
    let (old, new) = (Sink::start().await, Sink::start().await);
    let storage = tempfile::tempdir().unwrap();
    let sieve = Sieve::start(&config(&old.grpc_endpoint(), storage.path()));
    old.stall();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(send_until(sieve.http, 0, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    sieve.reload_with(&config(&new.grpc_endpoint(), storage.path()), 1.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, _) = sender.await.unwrap();
    assert!(acked.len() > 20, "{} acknowledged", acked.len());
    new.wait_for(
        Duration::from_secs(30),
        "every span at the new backend",
        |r| {
            let names: HashSet<String> = r.span_names().into_iter().collect();
            acked
                .iter()
                .all(|tag| (0..SPANS).all(|i| names.contains(&format!("r{tag}-s{i}"))))
        },
    )
    .await;
    let delivered = new.with(|r| r.span_count());
    assert!(
        delivered <= 2 * acked.len() * SPANS,
        "{delivered} spans for {} acknowledged: the backlog was not replayed from scratch",
        acked.len() * SPANS
    );
}

/// A full persistent queue gives the retryable refusal, counted, and takes requests
/// again on its own once the backlog drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_then_recovers_on_its_own() {
    let sink = Sink::start().await;
    let storage = tempfile::tempdir().unwrap();
    let small = config(&sink.grpc_endpoint(), storage.path())
        .replace("    directory:", "    max_size_mib: 1\n    directory:");
    let sieve = Sieve::start(&small);
    sink.stall();
    let tag = fill_until_refused(&sieve).await;
    assert!(
        sieve
            .metrics_text()
            .contains("sieve_queue_bytes{queue=\"storage:traces\"}"),
        "the queue's bytes on disk are shown"
    );
    let text = sieve.metrics_text();
    for family in [
        "sieve_storage_fsync_duration_seconds_count{pipeline=\"traces\"}",
        "sieve_storage_oldest_age_seconds{pipeline=\"traces\"}",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
    recovers_and_delivers(&sieve, &sink, tag).await;
}

/// `when_full: drop_oldest`: with the backend down and the log at `max_size_mib`, no
/// client is refused; the oldest requests nothing has read are dropped and counted,
/// the newest kept. Once the backend is back, every accepted span has arrived or is
/// counted as dropped — exactly, by distinct names — and the books balance at every
/// scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_with_drop_oldest_keeps_the_newest_and_counts_the_rest() {
    let storage = tempfile::tempdir().unwrap();
    drop_oldest_keeps_the_newest(storage.path(), 1, 600).await;
}

/// The same on a real full disk (ENOSPC on a 3 MiB tmpfs, under an 8 MiB
/// `max_size_mib`): the oldest unread segment makes room, no client is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_with_drop_oldest_keeps_the_newest_and_counts_the_rest() {
    let Some(disk) = SmallDisk::mount(3 << 20) else {
        eprintln!("SKIPPED: this machine does not allow mounting a tmpfs");
        return;
    };
    drop_oldest_keeps_the_newest(disk.0.path(), 8, 1500).await;
}

/// Sends `requests` of 100 spans to a stalled backend through a log of `max_size_mib`
/// with `when_full: drop_oldest` in `storage`, then checks the accounting.
async fn drop_oldest_keeps_the_newest(storage: &Path, max_size_mib: u64, requests: usize) {
    let sink = Sink::start().await;
    let small = config(&sink.grpc_endpoint(), storage)
        .replace(
            "    directory:",
            &format!(
                "    max_size_mib: {max_size_mib}\n    when_full: drop_oldest\n    directory:"
            ),
        )
        .replace(
            "      exporters: [otlp]\n",
            "      exporters: [otlp]\n      queue: { capacity: 4 }\n",
        )
        .replace(
            "      storage: file_storage\n",
            "      storage: file_storage\n      queue_size: 4\n",
        )
        .replace(
            "    timeout: 100ms\n",
            "    timeout: 100ms\n    send_batch_size: 100\n",
        );
    let sieve = Sieve::start(&small);
    sink.stall();
    for tag in 0..requests {
        assert_eq!(
            try_post(sieve.http, traces_request(tag, 100)).await,
            Some(200),
            "request {tag} accepted"
        );
        if tag % 50 == 0 {
            crate::integrity::check_books(&sieve.metrics_text());
        }
    }
    let dropped = |sieve: &Sieve| {
        sieve.metric(
            "sieve_pipeline_dropped_items_total",
            &[("reason", "storage_full")],
        )
    };
    assert!(dropped(&sieve) > 0.0, "the oldest were dropped, counted");
    assert_eq!(
        sieve.metric("sieve_pipeline_refused_items_total", &[]),
        0.0,
        "no client refused"
    );
    sink.resume();
    let last = format!("r{}-s99", requests - 1);
    sink.wait_for(Duration::from_secs(60), "the newest request", |r| {
        r.span_names().contains(&last)
    })
    .await;
    sieve.wait_metric(
        "sieve_pipeline_queued_items",
        &[],
        Duration::from_secs(30),
        |queued| queued == 0.0,
    );
    sieve.wait_metric(
        "sieve_exporter_sent_items_total",
        &[],
        Duration::from_secs(30),
        |sent| sent + dropped(&sieve) >= (requests * 100) as f64,
    );
    crate::integrity::check_books(&sieve.metrics_text());
    let delivered: HashSet<String> = sink.with(|r| r.span_names().into_iter().collect());
    assert_eq!(
        delivered.len() as f64 + dropped(&sieve),
        (requests * 100) as f64,
        "every accepted span arrived once or was counted as dropped"
    );
}

/// Damage found at start — flipped bytes, a zero-filled segment, a truncated one, a
/// record of another version — costs only the damaged records: sieve starts, delivers
/// the rest and counts what it skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backlog_delivers_the_rest_and_counts_the_damage() {
    let sink = Sink::start().await;
    let storage = tempfile::tempdir().unwrap();
    let small = config(&sink.grpc_endpoint(), storage.path())
        .replace("    directory:", "    max_size_mib: 1\n    directory:");
    let (requests, spans) = (450, 40);
    {
        let mut sieve = Sieve::start(&small);
        sink.stall();
        for tag in 0..requests {
            assert_eq!(
                try_post(sieve.http, traces_request(tag, spans)).await,
                Some(200)
            );
        }
        sieve.signal("KILL");
        sieve.wait_exit(Duration::from_secs(10));
    }
    let dir = storage.path().join("traces");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 4096)
        .collect();
    segments.sort();
    assert!(
        segments.len() >= 5,
        "a backlog over several segments, the last one left whole: {segments:?}"
    );
    let damage = |path: &Path, change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = std::fs::read(path).unwrap();
        change(&mut bytes);
        std::fs::write(path, bytes).unwrap();
    };
    damage(&segments[0], &|b| b[1000] ^= 0xff);
    damage(&segments[1], &|b| b.iter_mut().for_each(|x| *x = 0));
    damage(&segments[2], &|b| b[4] = 99);
    damage(&segments[3], &|b| {
        let half = b.len() / 2;
        b.truncate(half)
    });
    sink.resume();
    let sieve = Sieve::start(&small);
    let all: HashSet<String> = (0..requests)
        .flat_map(|tag| (0..spans).map(move |i| format!("r{tag}-s{i}")))
        .collect();
    // everything after the damaged segments arrives
    let last = format!("r{}-s{}", requests - 1, spans - 1);
    sink.wait_for(
        Duration::from_secs(30),
        "the records after the damage",
        |r| r.span_names().contains(&last),
    )
    .await;
    let delivered: HashSet<String> = sink.with(|r| r.span_names()).into_iter().collect();
    let lost = all.difference(&delivered).count();
    assert!(
        lost > 0 && lost < all.len() / 2,
        "only damaged records are lost: {lost}"
    );
    sieve.wait_metric(
        "sieve_storage_corrupt_records_total",
        &[],
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
}

/// SIGTERM with the backend down: what is unsent when `shutdown_timeout` runs out stays
/// on disk and is delivered after the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_sigterm_leaves_unsent_is_delivered_after_the_next_start() {
    let sink = Sink::start().await;
    let storage = tempfile::tempdir().unwrap();
    let with_timeout = |endpoint: &str| {
        config(endpoint, storage.path())
            .replace("  telemetry:\n", "  shutdown_timeout: 1s\n  telemetry:\n")
    };
    // nothing listens on port 1: the backend is down
    let mut sieve = Sieve::start(&with_timeout("http://127.0.0.1:1"));
    let requests = 100;
    for tag in 0..requests {
        assert_eq!(
            try_post(sieve.http, traces_request(tag, SPANS)).await,
            Some(200)
        );
    }
    sieve.signal("TERM");
    let exit = sieve.wait_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "a clean exit within the timeout"
    );
    let _next = Sieve::start(&with_timeout(&sink.grpc_endpoint()));
    sink.wait_for(
        Duration::from_secs(30),
        "every span after the restart",
        |r| {
            let names: HashSet<String> = r.span_names().into_iter().collect();
            (0..requests).all(|tag| (0..SPANS).all(|i| names.contains(&format!("r{tag}-s{i}"))))
        },
    )
    .await;
}

/// A tmpfs of `bytes` mounted on a fresh directory, unmounted when dropped; `None`
/// where the machine does not allow mounting.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// A real full disk (ENOSPC on a 1 MiB tmpfs, well under `max_size_mib`): the
/// retryable refusal, counted; once the backlog drains and space returns, sieve takes
/// requests again by itself, and everything accepted arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_then_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(1 << 20) else {
        eprintln!("SKIPPED: this machine does not allow mounting a tmpfs");
        return;
    };
    let sink = Sink::start().await;
    let sieve = Sieve::start(&config(&sink.grpc_endpoint(), disk.0.path()));
    sink.stall();
    let tag = fill_until_refused(&sieve).await;
    recovers_and_delivers(&sieve, &sink, tag).await;
}

/// A 1 GiB backlog — as a sieve whose backend was down would leave it — drains at the
/// backend's pace after a start, with memory that does not grow with the backlog: the
/// log is read a record at a time, never loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_backlog_drains_with_flat_memory() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    use sieve::storage::log::{Fsync, Log};
    const RECORDS: usize = 16 * 1024;
    const PAD: usize = 64 * 1024;
    let sink = Sink::start().await;
    sink.strip_attributes();
    let storage = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(
        &storage.path().join("traces"),
        4 << 30,
        Fsync::Interval(Duration::from_secs(1)),
    )
    .unwrap();
    let pad = "x".repeat(PAD);
    for n in 0..RECORDS {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: (n as u128 + 1).to_be_bytes().to_vec(),
                        span_id: 1u64.to_be_bytes().to_vec(),
                        name: format!("r{n}"),
                        attributes: vec![KeyValue {
                            key: "pad".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(pad.clone())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        log.append(
            sieve::model::Signal::Traces,
            1,
            None,
            None,
            &[bytes::Bytes::from(request.encode_to_vec())],
        )
        .unwrap();
    }
    assert!(log.size().0 >= 1 << 30, "a backlog of 1 GiB");
    drop(log);
    let config = config(&sink.grpc_endpoint(), storage.path())
        .replace("    directory:", "    max_size_mib: 4096\n    directory:")
        .replace(
            "    timeout: 100ms\n",
            "    timeout: 100ms\n    send_batch_size: 32\n    send_batch_max_size: 32\n",
        )
        .replace(
            "    timeout: 1s\n",
            "    timeout: 10s\n    compression: none\n",
        );
    let sieve = Sieve::start(&config);
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let mut peak = 0;
    loop {
        peak = peak.max(sieve.rss_bytes());
        let delivered = sink.with(|r| {
            r.span_names()
                .into_iter()
                .collect::<HashSet<String>>()
                .len()
        });
        if delivered == RECORDS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{delivered} of {RECORDS} delivered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("1 GiB backlog drained, sieve's peak RSS {} MiB", peak >> 20);
    assert!(
        peak < 192 << 20,
        "peak RSS {} MiB while 1 GiB drained",
        peak >> 20
    );
}

/// What shutdown leaves in a persistent queue is counted as `left_on_disk`, not as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_shutdown_leaves_on_disk_is_counted_as_such() {
    let storage = tempfile::tempdir().unwrap();
    let text = config("http://127.0.0.1:1", storage.path())
        .replace("{http}", "0")
        .replace(
            "      address: 127.0.0.1:{metrics}\n",
            "      address: 127.0.0.1:0\n",
        );
    let config = sieve::components::Config::parse(&text, "test.yaml").unwrap();
    let telemetry = sieve::telemetry::Telemetry::new();
    let mut topology = sieve::topology::Topology::new(telemetry.clone());
    topology.apply(config).await.unwrap();
    let port = topology.receiver_addresses()["otlp"][0].port();
    for tag in 0..20 {
        assert_eq!(try_post(port, traces_request(tag, SPANS)).await, Some(200));
    }
    topology.shutdown(Duration::from_millis(500)).await;
    let text = telemetry.encode();
    let left = crate::harness::sum_samples(
        &text,
        "sieve_exporter_dropped_items_total",
        &[("reason", "left_on_disk")],
    );
    let lost = crate::harness::sum_samples(
        &text,
        "sieve_exporter_dropped_items_total",
        &[("reason", "shutdown")],
    );
    assert!(left > 0.0, "{text}");
    assert_eq!(lost, 0.0, "nothing counted as lost");
}
