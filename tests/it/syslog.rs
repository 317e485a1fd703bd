//! The syslog receiver with real senders: util-linux `logger` (RFC 5424 and 3164, UDP and
//! TCP, octet counting, structured data) and rsyslog forwarding with octet counting; and
//! hostile input straight from a socket.

use crate::harness::{free_port, Sieve};
use crate::sink::{Received, Sink};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn config(sink: &Sink, protocol: &str, port: u16, extra: &str) -> String {
    format!(
        "receivers:
  syslog:
    protocol: {protocol}
    location: Europe/Berlin
    tcp:
      listen_address: 127.0.0.1:{port}
      idle_timeout: 2s
    udp:
      listen_address: 127.0.0.1:{port}
    resource:
      service.name: syslog-it
{extra}
processors:
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: {}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{{metrics}}
  pipelines:
    logs:
      receivers: [syslog]
      processors: [batch]
      exporters: [otlp]
",
        sink.grpc_endpoint()
    )
}

fn records(r: &Received) -> Vec<LogRecord> {
    r.logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|s| s.log_records.clone())
        .collect()
}

fn body(record: &LogRecord) -> String {
    match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn attribute(record: &LogRecord, key: &str) -> Option<String> {
    record
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// Runs `logger` with Berlin as its local zone (a POSIX TZ rule, so no tzdata is needed).
fn logger(port: u16, args: &[&str], message: &str) {
    let status = Command::new("logger")
        .env("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .arg(message)
        .status()
        .expect("logger (util-linux) is installed");
    assert!(status.success(), "logger {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_rfc5424_over_tcp_udp_and_octet_counting() {
    let sink = Sink::start().await;
    let port = free_port();
    let sieve = Sieve::start(&config(&sink, "rfc5424", port, ""));
    logger(
        port,
        &[
            "--tcp",
            "--rfc5424",
            "--octet-count",
            "-t",
            "billing",
            "--msgid",
            "ID7",
            "--sd-id",
            "order@32473",
            "--sd-param",
            "id=\"42\"",
            "-p",
            "local0.err",
        ],
        "tcp octet counted",
    );
    logger(
        port,
        &["--tcp", "--rfc5424", "-t", "billing"],
        "tcp non-transparent",
    );
    logger(
        port,
        &["--udp", "--rfc5424", "-t", "billing", "-p", "user.warning"],
        "udp datagram",
    );
    sink.wait_for(WAIT, "three syslog records", |r| records(r).len() == 3)
        .await;
    let all = sink.with(records);
    let octet = all
        .iter()
        .find(|r| body(r) == "tcp octet counted")
        .expect("octet-counted message");
    assert_eq!(octet.severity_number, 17);
    assert_eq!(octet.severity_text, "err");
    assert_eq!(attribute(octet, "syslog.facility").as_deref(), Some("16"));
    assert_eq!(
        attribute(octet, "syslog.appname").as_deref(),
        Some("billing")
    );
    assert_eq!(attribute(octet, "syslog.msgid").as_deref(), Some("ID7"));
    assert_eq!(
        attribute(octet, "syslog.structured_data.order@32473.id").as_deref(),
        Some("42")
    );
    assert!(octet.time_unix_nano > 0 && octet.observed_time_unix_nano > 0);
    let udp = all
        .iter()
        .find(|r| body(r) == "udp datagram")
        .expect("udp message");
    assert_eq!(udp.severity_text, "warning");
    assert!(all.iter().any(|r| body(r) == "tcp non-transparent"));
    let resource = sink.with(|r| format!("{:?}", r.logs[0].resource));
    assert!(resource.contains("syslog-it"));
    assert_eq!(
        sieve.metric(
            "sieve_receiver_accepted_items_total",
            &[("receiver", "syslog")]
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_rfc3164_uses_the_configured_zone() {
    let sink = Sink::start().await;
    let port = free_port();
    let _sieve = Sieve::start(&config(&sink, "rfc3164", port, ""));
    logger(
        port,
        &["--udp", "--rfc3164", "-t", "cron", "-i"],
        "bsd style",
    );
    sink.wait_for(WAIT, "the rfc3164 record", |r| records(r).len() == 1)
        .await;
    let record = sink.with(records).remove(0);
    assert_eq!(body(&record), "bsd style");
    assert_eq!(
        attribute(&record, "syslog.appname").as_deref(),
        Some("cron")
    );
    assert!(attribute(&record, "syslog.procid").is_some());
    let skew = (record.time_unix_nano as i128 - record.observed_time_unix_nano as i128).abs();
    assert!(
        skew < 1_800_000_000_000,
        "a Berlin local time read as Berlin time lands near now, not an hour or two off (skew {skew} ns)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_splits_messages_or_crashes() {
    let sink = Sink::start().await;
    let port = free_port();
    let sieve = Sieve::start(&config(
        &sink,
        "rfc5424",
        port,
        "    max_message_size: 128\n    keep_raw: true",
    ));
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let injected = "<14>1 - host app - - - user=x\n<11>1 - evil forged - - - admin logged in";
    write!(tcp, "{} {}", injected.len(), injected).unwrap();
    tcp.write_all(b"<14>1 - host app - - - bad utf8 \xff\xfe end\n")
        .unwrap();
    tcp.write_all(b"<999>1 nonsense\n").unwrap();
    tcp.write_all(format!("<14>1 - - - - - - {}\n", "x".repeat(500)).as_bytes())
        .unwrap();
    tcp.write_all(b"<14>1 - h a - - - after the long one\n")
        .unwrap();
    tcp.flush().unwrap();
    sink.wait_for(WAIT, "five records", |r| records(r).len() == 5)
        .await;
    let all = sink.with(records);
    let bodies: Vec<String> = all.iter().map(body).collect();
    assert!(
        bodies.contains(&"user=x\n<11>1 - evil forged - - - admin logged in".to_string()),
        "an embedded newline stays inside one message: {bodies:?}"
    );
    assert!(
        bodies.contains(&"bad utf8 \u{fffd}\u{fffd} end".to_string()),
        "{bodies:?}"
    );
    let bad = all
        .iter()
        .find(|r| attribute(r, "syslog.parse_error").is_some())
        .expect("the bad PRI is kept raw");
    assert_eq!(body(bad), "<999>1 nonsense");
    assert!(
        bodies.iter().any(|b| b.len() < 128 && b.starts_with("xxx")),
        "the long line is truncated"
    );
    assert!(
        bodies.contains(&"after the long one".to_string()),
        "framing recovers after truncation"
    );
    assert_eq!(
        sieve.metric(
            "sieve_receiver_rejected_requests_total",
            &[("reason", "bad_pri")]
        ),
        1.0
    );
    assert_eq!(
        sieve.metric(
            "sieve_receiver_rejected_requests_total",
            &[("reason", "truncated")]
        ),
        1.0
    );

    let mut huge = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    huge.write_all(b"92233720368547758080 x").unwrap();
    huge.flush().unwrap();
    sieve.wait_metric(
        "sieve_receiver_rejected_requests_total",
        &[("reason", "bad_octet_count")],
        WAIT,
        |v| v == 1.0,
    );
    let _idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sieve.wait_metric(
        "sieve_receiver_rejected_requests_total",
        &[("reason", "idle_timeout")],
        WAIT,
        |v| v >= 1.0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_counted() {
    let sink = Sink::start().await;
    let port = free_port();
    let config = config(&sink, "rfc5424", port, "").replace(
        "      idle_timeout: 2s\n",
        "      idle_timeout: 30s\n      max_connections: 2\n",
    );
    let sieve = Sieve::start(&config);
    let _held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + WAIT;
    while sieve.metric(
        "sieve_receiver_rejected_requests_total",
        &[("reason", "connection_limit")],
    ) < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the third connection was never refused"
        );
        let _extra = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_stops_tcp_reads_and_loses_nothing() {
    let sink = Sink::start().await;
    let port = free_port();
    let config = config(&sink, "rfc5424", port, "")
        .replace(
            "      exporters: [otlp]\n",
            "      exporters: [otlp]\n      queue:\n        capacity: 1\n",
        )
        .replace(
            "    endpoint: http",
            "    sending_queue:\n      queue_size: 1\n      num_consumers: 1\n    endpoint: http",
        );
    let sieve = Sieve::start(&config);
    sink.stall();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut sent = 0;
    // bursts until a pipeline queue refuses: from then on sieve stops reading the socket
    while sieve.metric(
        "sieve_pipeline_refused_items_total",
        &[("reason", "queue_full")],
    ) == 0.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline never filled up"
        );
        for _ in 0..20 {
            writeln!(tcp, "<14>1 - h app - - - message {sent}").unwrap();
            sent += 1;
        }
        tcp.flush().unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    for _ in 0..100 {
        writeln!(tcp, "<14>1 - h app - - - message {sent}").unwrap();
        sent += 1;
    }
    tcp.flush().unwrap();
    sink.resume();
    sink.wait_for(WAIT, "every message sent", |r| records(r).len() == sent)
        .await;
    assert_eq!(sieve.metric("sieve_receiver_dropped_items_total", &[]), 0.0);
}

/// rsyslog reads from its own TCP input and forwards to sieve with octet counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_forwards_with_octet_counting() {
    let sink = Sink::start().await;
    let port = free_port();
    let _sieve = Sieve::start(&config(&sink, "rfc5424", port, ""));
    let dir = tempfile::tempdir().unwrap();
    let rsyslog_port = free_port();
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")
module(load=\"imtcp\")
input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{rsyslog_port}\")
*.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{port}\" protocol=\"tcp\" TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\")
",
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let mut rsyslog = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("rsyslog.pid"))
        .spawn()
        .expect("rsyslogd is installed (scripts/test installs it)");
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", rsyslog_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "rsyslog did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    logger(
        rsyslog_port,
        &["--tcp", "--rfc5424", "--octet-count", "-t", "relay"],
        "through rsyslog\twith a tab",
    );
    sink.wait_for(WAIT, "the relayed record", |r| {
        records(r)
            .iter()
            .any(|l| body(l).contains("through rsyslog"))
    })
    .await;
    let _ = rsyslog.kill();
    let _ = rsyslog.wait();
    let record = sink
        .with(records)
        .into_iter()
        .find(|l| body(l).contains("through rsyslog"))
        .unwrap();
    assert_eq!(
        attribute(&record, "syslog.appname").as_deref(),
        Some("relay")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_at_a_full_pipeline_drops_and_counts() {
    let sink = Sink::start().await;
    let port = free_port();
    let config = config(&sink, "rfc5424", port, "")
        .replace(
            "      exporters: [otlp]\n",
            "      exporters: [otlp]\n      queue:\n        capacity: 1\n",
        )
        .replace(
            "    endpoint: http",
            "    sending_queue:\n      queue_size: 1\n      num_consumers: 1\n    endpoint: http",
        );
    let sieve = Sieve::start(&config);
    sink.stall();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut sent = 0;
    while sieve.metric(
        "sieve_receiver_dropped_items_total",
        &[("reason", "queue_full")],
    ) == 0.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no UDP drop was counted"
        );
        for _ in 0..20 {
            socket
                .send_to(
                    format!("<14>1 - h app - - - datagram {sent}").as_bytes(),
                    ("127.0.0.1", port),
                )
                .unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sink.resume();
    // read all three from one scrape, once the last datagrams are through
    let accepted = loop {
        let text = sieve.metrics_text();
        let count = |name| crate::harness::sum_samples(&text, name, &[("receiver", "syslog")]);
        let (received, accepted, dropped) = (
            count("sieve_receiver_received_items_total"),
            count("sieve_receiver_accepted_items_total"),
            count("sieve_receiver_dropped_items_total"),
        );
        if received == accepted + dropped {
            break accepted;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "received {received} != accepted {accepted} + dropped {dropped}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    sink.wait_for(WAIT, "the accepted datagrams", |r| {
        records(r).len() as f64 == accepted
    })
    .await;
}

/// Sends one line with `openssl s_client` (a real TLS client); returns it for killing.
fn s_client(
    dir: &std::path::Path,
    port: u16,
    with_client_cert: bool,
    line: &str,
) -> std::process::Child {
    let mut command = Command::new("openssl");
    command
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
        ])
        .arg(dir.join("ca.pem"));
    if with_client_cert {
        command
            .arg("-cert")
            .arg(dir.join("client.pem"))
            .arg("-key")
            .arg(dir.join("client.key"));
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.as_mut().unwrap(), "{line}").unwrap();
    child
}

fn tls_config(sink: &Sink, port: u16, dir: &std::path::Path, mutual: bool) -> String {
    let mut tls = format!(
        "      tls:\n        cert_file: {}\n        key_file: {}\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    );
    if mutual {
        tls += &format!("        client_ca_file: {}\n", dir.join("ca.pem").display());
    }
    config(sink, "rfc5424", port, "").replace(
        "      idle_timeout: 2s\n",
        &format!("      idle_timeout: 2s\n{tls}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_with_openssl_clients() {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::make_certificates(dir.path());

    let sink = Sink::start().await;
    let port = free_port();
    let _sieve = Sieve::start(&tls_config(&sink, port, dir.path(), false));
    let mut client = s_client(dir.path(), port, false, "<14>1 - host app - - - over tls");
    sink.wait_for(WAIT, "the TLS message", |r| {
        records(r).iter().any(|l| body(l) == "over tls")
    })
    .await;
    let _ = client.kill();
    let _ = client.wait();

    let sink = Sink::start().await;
    let port = free_port();
    let sieve = Sieve::start(&tls_config(&sink, port, dir.path(), true));
    let mut anonymous = s_client(
        dir.path(),
        port,
        false,
        "<14>1 - host app - - - no certificate",
    );
    sieve.wait_metric(
        "sieve_receiver_rejected_requests_total",
        &[("reason", "tls_handshake")],
        WAIT,
        |v| v >= 1.0,
    );
    let mut authenticated = s_client(
        dir.path(),
        port,
        true,
        "<14>1 - host app - - - with certificate",
    );
    sink.wait_for(WAIT, "the mutual-TLS message", |r| {
        records(r).iter().any(|l| body(l) == "with certificate")
    })
    .await;
    assert!(
        sink.with(records)
            .iter()
            .all(|l| body(l) != "no certificate"),
        "a client without a certificate is refused"
    );
    for child in [&mut anonymous, &mut authenticated] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_receiver_takes_over_its_tcp_and_udp_sockets() {
    let sink = Sink::start().await;
    let port = free_port();
    let first = config(&sink, "rfc5424", port, "");
    let sieve = Sieve::start(&first);
    let renamed = first
        .replace("  syslog:\n    protocol", "  syslog/renamed:\n    protocol")
        .replace("receivers: [syslog]", "receivers: [syslog/renamed]");
    sieve.reload_with(&renamed, 1.0);
    logger(port, &["--tcp", "--rfc5424"], "over tcp");
    logger(port, &["--udp", "--rfc5424"], "over udp");
    sink.wait_for(WAIT, "both lines", |r| records(r).len() == 2)
        .await;
    assert_eq!(
        sieve.metric(
            "sieve_receiver_accepted_items_total",
            &[("receiver", "syslog/renamed")]
        ),
        2.0
    );
}
