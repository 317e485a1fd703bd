//! The reload rules, one table row each: what the diff between two configurations
//! decides for every receiver and pipeline.

use super::*;
use crate::components::ReceiverConfig;
use crate::tls::TlsServerConfig;

/// A config with receivers `otlp` (gRPC on `grpc_port`) and `syslog`, a batch
/// processor, a debug and an OTLP exporter, and pipelines `traces` and `logs`;
/// `edit` rewrites its text first.
fn config(edit: impl Fn(String) -> String) -> Config {
    let text = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:14317
  syslog:
    tcp:
      listen_address: 127.0.0.1:15514
processors:
  batch:
    timeout: 1s
exporters:
  debug:
  otlp:
    endpoint: http://127.0.0.1:24317
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
    logs:
      receivers: [otlp, syslog]
      exporters: [debug]
";
    Config::parse(&edit(text.to_string()), "test.yaml").unwrap()
}

fn unchanged(text: String) -> String {
    text
}

fn id(text: &str) -> ComponentId {
    ComponentId::parse(text).unwrap()
}

fn pipeline(text: &str) -> PipelineId {
    PipelineId::parse(text).unwrap()
}

fn diff(before: &Config, after: &Config) -> ConfigDiff {
    ConfigDiff::between(Some(before), after)
}

#[test]
fn at_start_everything_starts() {
    let d = ConfigDiff::between(None, &config(unchanged));
    assert_eq!(
        d.receivers[&id("otlp")],
        ReceiverChange::Start { takes_over: vec![] }
    );
    assert_eq!(
        d.receivers[&id("syslog")],
        ReceiverChange::Start { takes_over: vec![] }
    );
    assert_eq!(d.pipelines[&pipeline("traces")], PipelineChange::Start);
    assert_eq!(d.pipelines[&pipeline("logs")], PipelineChange::Start);
}

#[test]
fn an_unchanged_component_is_kept() {
    let d = diff(&config(unchanged), &config(unchanged));
    assert!(
        d.receivers.values().all(|c| *c == ReceiverChange::Keep),
        "{d:?}"
    );
    assert!(
        d.pipelines.values().all(|c| *c == PipelineChange::Keep),
        "{d:?}"
    );
    assert_eq!(d.handing_over().count(), 0);
}

#[test]
fn a_changed_exporter_rebuilds_only_the_pipelines_using_it() {
    let d = diff(&config(unchanged), &config(|t| t.replace("24317", "24318")));
    assert_eq!(
        d.pipelines[&pipeline("traces")],
        PipelineChange::Rebuild {
            changed: vec!["exporters"]
        }
    );
    assert_eq!(d.pipelines[&pipeline("logs")], PipelineChange::Keep);
    assert_eq!(d.receivers[&id("otlp")], ReceiverChange::Keep);
}

#[test]
fn a_changed_processor_or_queue_rebuilds_and_says_which() {
    let d = diff(
        &config(unchanged),
        &config(|t| t.replace("timeout: 1s", "timeout: 2s")),
    );
    assert_eq!(
        d.pipelines[&pipeline("traces")],
        PipelineChange::Rebuild {
            changed: vec!["processors"]
        }
    );
    let with_queue = |t: String| {
        t.replace(
            "      exporters: [debug]\n",
            "      exporters: [debug]\n      queue:\n        capacity: 7\n",
        )
    };
    let d = diff(&config(unchanged), &config(with_queue));
    assert_eq!(
        d.pipelines[&pipeline("logs")],
        PipelineChange::Rebuild {
            changed: vec!["queue"]
        }
    );
}

#[test]
fn a_pipeline_that_only_changes_its_receivers_is_kept() {
    let d = diff(
        &config(unchanged),
        &config(|t| t.replace("receivers: [otlp, syslog]", "receivers: [otlp]")),
    );
    assert_eq!(d.pipelines[&pipeline("logs")], PipelineChange::Keep);
    assert_eq!(d.receivers[&id("syslog")], ReceiverChange::Stop);
}

#[test]
fn a_renamed_receiver_on_the_same_port_is_handed_its_socket() {
    let renamed = |t: String| {
        t.replace("  syslog:\n", "  syslog/edge:\n")
            .replace("[otlp, syslog]", "[otlp, syslog/edge]")
    };
    let d = diff(&config(unchanged), &config(renamed));
    assert_eq!(d.receivers[&id("syslog")], ReceiverChange::Stop);
    assert_eq!(
        d.receivers[&id("syslog/edge")],
        ReceiverChange::Start {
            takes_over: vec![id("syslog")]
        }
    );
    assert_eq!(d.handing_over().collect::<Vec<_>>(), [&id("syslog")]);
    assert_eq!(d.pipelines[&pipeline("logs")], PipelineChange::Keep);
}

#[test]
fn a_renamed_receiver_on_another_port_or_an_ephemeral_one_binds_anew() {
    let moved = |t: String| {
        t.replace("  syslog:\n", "  syslog/edge:\n")
            .replace("[otlp, syslog]", "[otlp, syslog/edge]")
            .replace("15514", "15515")
    };
    let d = diff(&config(unchanged), &config(moved));
    assert_eq!(
        d.receivers[&id("syslog/edge")],
        ReceiverChange::Start { takes_over: vec![] }
    );
    let ephemeral = |t: String| t.replace("15514", "0");
    let d = diff(
        &config(ephemeral),
        &config(|t| moved(ephemeral(t)).replace("15515", "0")),
    );
    assert_eq!(
        d.receivers[&id("syslog/edge")],
        ReceiverChange::Start { takes_over: vec![] },
        "port 0 names no socket to take over"
    );
}

#[test]
fn a_removed_pipeline_is_drained_and_its_only_receiver_stopped() {
    let without_logs = |t: String| {
        let at = t.find("    logs:\n").unwrap();
        t[..at].to_string()
    };
    let d = diff(&config(unchanged), &config(without_logs));
    assert_eq!(d.pipelines[&pipeline("logs")], PipelineChange::Retire);
    assert_eq!(d.pipelines[&pipeline("traces")], PipelineChange::Keep);
    assert_eq!(d.receivers[&id("syslog")], ReceiverChange::Stop);
    assert_eq!(d.receivers[&id("otlp")], ReceiverChange::Keep);
}

#[test]
fn a_changed_receiver_is_updated_in_place() {
    let d = diff(
        &config(unchanged),
        &config(|t| t.replace("127.0.0.1:14317", "127.0.0.1:14318")),
    );
    assert_eq!(
        d.receivers[&id("otlp")],
        ReceiverChange::Update { tls_only: false }
    );
    assert_eq!(d.pipelines[&pipeline("traces")], PipelineChange::Keep);
}

#[test]
fn a_receiver_serving_tls_rereads_its_files_on_every_reload() {
    let with_tls = || {
        let mut c = config(unchanged);
        let Some(ReceiverConfig::Otlp(otlp)) = c.receivers.get_mut(&id("otlp")) else {
            panic!("an otlp receiver");
        };
        otlp.protocols.grpc.as_mut().unwrap().tls = Some(TlsServerConfig {
            cert_file: "/etc/sieve/server.pem".into(),
            key_file: "/etc/sieve/server.key".into(),
            client_ca_file: None,
        });
        c
    };
    let d = diff(&with_tls(), &with_tls());
    assert_eq!(
        d.receivers[&id("otlp")],
        ReceiverChange::Update { tls_only: true }
    );
    assert_eq!(d.receivers[&id("syslog")], ReceiverChange::Keep);
}
