//! The command line: validate, version, exit codes, shipped pipelines.

use crate::harness::{free_port, passthrough_config, sieve_bin, Sieve};
use crate::sink::Sink;
use std::process::Command;
use std::time::Duration;

#[test]
fn every_shipped_pipeline_validates() {
    let dir = format!("{}/pipelines", env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let output = Command::new(sieve_bin())
                .arg("validate")
                .arg("--config")
                .arg(&path)
                .env("TEMPO_TENANT", "t")
                .env("REDACTION_HASH_KEY", "0123456789abcdef0123")
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "found {checked} pipelines");
}

#[test]
fn a_bad_config_exits_64_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpont: x\n",
    )
    .unwrap();
    for args in [vec!["validate", "--config"], vec!["--config"]] {
        let output = Command::new(sieve_bin())
            .args(&args)
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("bad.yaml:5:") && stderr.contains("unknown field `endpont`"),
            "{stderr}"
        );
    }
}

#[test]
fn version_names_the_commit_and_the_state_of_the_tree() {
    let output = Command::new(sieve_bin()).arg("--version").output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let prefix = format!("sieve {} (commit {head}, tree ", env!("CARGO_PKG_VERSION"));
    assert!(printed.starts_with(&prefix), "{printed} (HEAD is {head})");
    assert!(
        printed.ends_with("tree clean)") || printed.ends_with("tree modified)"),
        "{printed}"
    );
    let sieve = Sieve::start(&passthrough_config("http://127.0.0.1:1", "batch", "", ""));
    assert_eq!(
        sieve.metric("sieve_build_info", &[("commit", &head)]),
        1.0,
        "sieve_build_info names the commit"
    );
}

#[test]
fn a_port_in_use_is_a_clear_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let config = passthrough_config("http://127.0.0.1:1", "", "", "")
        .replace("{grpc}", &port.to_string())
        .replace("{http}", &free_port().to_string())
        .replace("{metrics}", &free_port().to_string());
    std::fs::write(&path, config).unwrap();
    let output = Command::new(sieve_bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains(&format!("cannot listen on 127.0.0.1:{port}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tempo_pipeline_sends_with_the_tenant_header() {
    let sink = Sink::start().await;
    sink.require_tenant("team-a");
    let config =
        crate::harness::shipped_tempo_config("traces-to-tempo.yaml", &sink.grpc_endpoint());
    let sieve = Sieve::start(&config);
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"checkout"}]}]}]}"#;
    let (status, _, _) = crate::harness::post(
        sieve.http,
        "/v1/traces",
        "application/json",
        None,
        body.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    sink.wait_for(
        std::time::Duration::from_secs(20),
        "the span at the tenant",
        |r| r.span_count() == 1,
    )
    .await;
    sink.with(|r| assert_eq!(r.tenants, vec![Some("team-a".to_string())]));
}

#[test]
fn unreadable_tls_files_fail_validation_naming_key_and_file() {
    let tls = "tls:\n        cert_file: /nonexistent/server.pem\n        key_file: /nonexistent/server.key";
    for (receiver, signal, key) in [
        (
            format!("syslog:\n    tcp:\n      {tls}"),
            "logs",
            "receivers.syslog.tcp.tls",
        ),
        (
            format!(
                "otlp:\n    protocols:\n      grpc:\n        {}",
                tls.replace("\n  ", "\n    ")
            ),
            "traces",
            "receivers.otlp.protocols.grpc.tls",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let name = receiver.split(':').next().unwrap();
        std::fs::write(
            &path,
            format!("receivers:\n  {receiver}\nexporters:\n  debug:\nservice:\n  pipelines:\n    {signal}:\n      receivers: [{name}]\n      exporters: [debug]\n"),
        )
        .unwrap();
        let output = Command::new(sieve_bin())
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{key}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(key) && stderr.contains("/nonexistent/server.pem"),
            "{stderr}"
        );
    }
}

/// A start that fails on a value from `${env:..}` (an address that cannot be bound) and a
/// reload that fails on a value from `${file:..}`: both name the reference, never the
/// value.
#[test]
fn start_and_reload_failures_show_references_not_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = |endpoint: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: {endpoint}\nexporters:\n  debug:\nservice:\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{{metrics}}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
        )
    };
    let path = dir.path().join("start.yaml");
    std::fs::write(
        &path,
        config("${env:LISTEN}").replace("{metrics}", &free_port().to_string()),
    )
    .unwrap();
    // 192.0.2.0/24 is TEST-NET-1: no interface here holds it, so binding fails
    let output = Command::new(sieve_bin())
        .arg("--config")
        .arg(&path)
        .env("LISTEN", "192.0.2.77:4317")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("192.0.2.77"), "{stderr}");
    assert!(stderr.contains("${env:LISTEN}"), "{stderr}");

    let sieve = Sieve::start(&config("127.0.0.1:{grpc}"));
    let secret = dir.path().join("listen");
    std::fs::write(&secret, "192.0.2.78:4317\n").unwrap();
    sieve.write_config(&config(&format!("${{file:{}}}", secret.display())));
    sieve.signal("HUP");
    sieve.wait_metric(
        "sieve_config_reloads_total",
        &[("result", "failure")],
        std::time::Duration::from_secs(20),
        |v| v >= 1.0,
    );
    let log = sieve.log();
    assert!(log.contains("reload failed"), "{log}");
    assert!(!log.contains("192.0.2.78"), "{log}");
    assert!(log.contains("${file:"), "{log}");
}

/// The audit trail records the start, an applied reload and a failed one, with no
/// expanded secret in it; `sieve audit verify` accepts it, and refuses it once a record
/// is edited or removed.
#[test]
fn the_audit_trail_records_every_load_and_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (audit, secret) = (dir.path().join("audit.log"), dir.path().join("secret"));
    std::fs::write(&secret, "audit-secret-value").unwrap();
    let base = passthrough_config("http://127.0.0.1:1", "batch", "", "").replace(
        "service:\n",
        &format!("service:\n  audit:\n    path: {}\n", audit.display()),
    );
    let with_secret = base.replace(
        "    compression: gzip\n",
        &format!(
            "    compression: gzip\n    headers:\n      X-Scope-OrgID: ${{file:{}}}\n",
            secret.display()
        ),
    );
    let sieve = Sieve::start(&base);
    sieve.reload_with(&with_secret, 1.0);
    sieve.write_config(
        &with_secret.replace("    timeout: 50ms\n", "    timeout: 50ms\n    bogus: 1\n"),
    );
    sieve.signal("HUP");
    sieve.wait_metric(
        "sieve_config_reloads_total",
        &[("result", "failure")],
        Duration::from_secs(20),
        |v| v >= 1.0,
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("\"event\":\"start\"")
            && lines[0].contains("\"added\":[\"receivers/otlp\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("\"changed\":[\"exporters/otlp\"]"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("\"result\":\"error\"") && lines[2].contains("bogus"),
        "{}",
        lines[2]
    );
    assert!(
        !text.contains("audit-secret-value"),
        "an expanded secret in the trail"
    );
    let verify = |file: &std::path::Path| {
        Command::new(sieve_bin())
            .args(["audit", "verify"])
            .arg(file)
            .output()
            .unwrap()
    };
    let intact = verify(&audit);
    assert!(intact.status.success());
    assert!(String::from_utf8_lossy(&intact.stdout).contains("3 records, chain intact"));
    let edited = dir.path().join("edited.log");
    std::fs::write(
        &edited,
        text.replacen("\"result\":\"error\"", "\"result\":\"ok\"", 1),
    )
    .unwrap();
    let broken = verify(&edited);
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stderr).contains("line 3"));
    let removed = dir.path().join("removed.log");
    std::fs::write(&removed, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    assert_eq!(verify(&removed).status.code(), Some(1));
}
