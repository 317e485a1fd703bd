use super::*;

const GOOD: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
processors:
  batch:
    timeout: 1s
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.yaml")
}

#[test]
fn a_good_config_loads() {
    let config = parse(GOOD).unwrap();
    let id = PipelineId::parse("traces").unwrap();
    assert_eq!(
        config.pipelines[&id].exporters,
        vec![ComponentId::parse("debug").unwrap()]
    );
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
}

#[test]
fn the_embedded_default_loads() {
    let config = Config::embedded_default();
    assert_eq!(config.pipelines.len(), 3);
}

/// Each bad config: (replace this, with this, expected line, words the message must hold).
const BAD: &[(&str, &str, usize, &[&str])] = &[
    (
        "        endpoint: 127.0.0.1:4317\n",
        "        endpoint: 127.0.0.1:4317\n        bogus: 1\n",
        6,
        &["receivers.otlp.protocols.grpc", "unknown field `bogus`"],
    ),
    (
        "  batch:\n",
        "  batchy:\n",
        7,
        &[
            "processors.batchy: unknown processor type `batchy`",
            "batch, memory_limiter",
        ],
    ),
    (
        "  debug:\n",
        "  debug:\n  splunk_hec/out:\n",
        11,
        &["exporters.splunk_hec/out: unknown exporter type `splunk_hec`"],
    ),
    (
        "    timeout: 1s\n",
        "    timeout: soon\n",
        8,
        &["processors.batch.timeout", "soon"],
    ),
    (
        "      exporters: [debug]\n",
        "      exporters: [debug, otlp/tempo]\n",
        16,
        &[
            "service.pipelines.traces.exporters",
            "`otlp/tempo` is not defined under `exporters`",
        ],
    ),
    (
        "      receivers: [otlp]\n",
        "      receivers: [otlp/x]\n",
        14,
        &[
            "service.pipelines.traces.receivers",
            "`otlp/x` is not defined",
        ],
    ),
    (
        "    traces:\n",
        "    spans:\n",
        13,
        &["service.pipelines.spans", "traces, metrics or logs"],
    ),
    (
        "service:\n",
        "extensions: {}\nservice:\n",
        11,
        &["unknown field `extensions`"],
    ),
    (
        "        endpoint: 127.0.0.1:4317\n",
        "        endpoint: not-an-address\n",
        5,
        &["receivers.otlp.protocols.grpc.endpoint", "not-an-address"],
    ),
    (
        "    timeout: 1s\n",
        "    timeout: 1s\n    send_batch_size: 100\n    send_batch_max_size: 10\n",
        10,
        &["processors.batch.send_batch_max_size"],
    ),
    (
        "  debug:\n",
        "  debug:\n    verbosity: loud\n",
        11,
        &["exporters.debug.verbosity", "loud"],
    ),
    (
        "      processors: [batch]\n",
        "      processors: [batch, batch]\n",
        15,
        &["listed twice"],
    ),
    (
        "  debug:\n",
        "  debug:\n  debug:\n",
        11,
        &["exporters.debug: defined twice"],
    ),
    (
        "service:\n",
        "service:\n  telemetry:\n    logs:\n      level: loud=very\n",
        14,
        &["service.telemetry.logs.level"],
    ),
];

#[test]
fn bad_configs_name_the_key_and_line() {
    for (from, to, line, words) in BAD {
        assert!(
            GOOD.contains(from),
            "fixture `{from}` is not in the good config"
        );
        let text = GOOD.replacen(from, to, 1);
        let error = parse(&text).expect_err(&format!("accepted:\n{text}"));
        assert_eq!(
            error.line,
            Some(*line),
            "wrong line for {error} in:\n{text}"
        );
        for word in *words {
            assert!(
                error.to_string().contains(word),
                "`{error}` does not mention `{word}`"
            );
        }
        assert!(
            error
                .to_string()
                .starts_with(&format!("test.yaml:{line}: ")),
            "{error}"
        );
    }
}

#[test]
fn a_component_that_does_not_accept_the_signal_is_rejected() {
    let text = GOOD
        .replace("receivers:\n", "receivers:\n  syslog:\n    udp:\n")
        .replace(
            "      receivers: [otlp]\n",
            "      receivers: [otlp, syslog]\n",
        );
    let error = parse(&text).unwrap_err();
    assert_eq!(error.line, Some(16), "{error}");
    assert!(
        error.message.contains("`syslog` does not accept traces"),
        "{error}"
    );
}

#[test]
fn a_pipeline_without_receivers_is_rejected() {
    let text = GOOD.replace("      receivers: [otlp]\n", "      receivers: []\n");
    let error = parse(&text).unwrap_err();
    assert!(error.message.contains("at least one receiver"), "{error}");
}

#[test]
fn syntax_errors_carry_the_line() {
    let error = parse("receivers:\n  otlp: [\n").unwrap_err();
    assert!(error.line.is_some(), "{error}");
}

#[test]
fn env_expansion_applies_before_parsing() {
    struct Env;
    impl expand::Source for Env {
        fn env(&self, name: &str) -> Option<String> {
            (name == "GRPC_PORT").then(|| "5317".to_string())
        }
        fn file(&self, _: &str) -> std::io::Result<String> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }
    let text = GOOD.replace("127.0.0.1:4317", "127.0.0.1:${env:GRPC_PORT}");
    let config = Config::parse_with(&text, "t", &Env).unwrap();
    let ReceiverConfig::Otlp(otlp) = &config.receivers[&ComponentId::parse("otlp").unwrap()] else {
        panic!("the otlp receiver is an otlp receiver")
    };
    assert_eq!(
        otlp.protocols.grpc.as_ref().unwrap().endpoint,
        "127.0.0.1:5317"
    );
}

#[test]
fn secrets_do_not_appear_in_errors() {
    struct Env;
    impl expand::Source for Env {
        fn env(&self, _: &str) -> Option<String> {
            Some("hunter2-secret".to_string())
        }
        fn file(&self, _: &str) -> std::io::Result<String> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }
    let text = GOOD.replace("    timeout: 1s\n", "    send_batch_size: ${env:TOKEN}\n");
    let error = Config::parse_with(&text, "t", &Env).unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[test]
fn component_ids_parse() {
    assert_eq!(
        ComponentId::parse("otlp/tempo").unwrap().to_string(),
        "otlp/tempo"
    );
    assert!(ComponentId::parse("otlp/").is_err());
    assert!(ComponentId::parse("a b").is_err());
    assert_eq!(PipelineId::parse("logs/app").unwrap().signal, Signal::Logs);
}
