//! Loading whole configurations of sieve's components: key-and-line errors, secrets
//! kept out of messages, the embedded default.

use super::*;
use crate::config::{expand, ComponentId, ConfigError, PipelineId};
use crate::model::Signal;
use std::time::Duration;

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
    let config = Config::embedded_default().unwrap();
    assert_eq!(config.pipelines.len(), 3);
}

/// The collector's snake_case names and the older names they replaced load the same
/// component; an unknown type's message lists both.
#[test]
fn current_names_and_their_aliases_load_the_same_components() {
    let config = |exporter: &str, auth: &str| {
        format!(
            "extensions:\n  {auth}/out:\n    token: t\nreceivers:\n  otlp:\n    protocols:\n      grpc:\n\
             exporters:\n  {exporter}/out:\n    endpoint: http://127.0.0.1:1\n    auth:\n      authenticator: {auth}/out\n\
             service:\n  extensions: [{auth}/out]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [{exporter}/out]\n"
        )
    };
    let extension = |c: &Config, kind: &str| {
        c.extensions[&ComponentId::parse(&format!("{kind}/out")).unwrap()].clone()
    };
    let by_name = parse(&config("otlp_grpc", "bearer_token_auth")).unwrap();
    let by_alias = parse(&config("otlp_grpc", "bearertokenauth")).unwrap();
    assert_eq!(
        extension(&by_name, "bearer_token_auth"),
        extension(&by_alias, "bearertokenauth")
    );
    assert!(matches!(
        extension(&by_name, "bearer_token_auth"),
        ExtensionConfig::BearerTokenAuth(_)
    ));
    for (current, alias) in [("otlp_grpc", "otlp"), ("otlp_http", "otlphttp")] {
        let by_name = parse(&config(current, "bearer_token_auth")).unwrap();
        let by_alias = parse(&config(alias, "bearer_token_auth")).unwrap();
        let exporter = |c: &Config, kind: &str| {
            c.exporters[&ComponentId::parse(&format!("{kind}/out")).unwrap()].clone()
        };
        assert_eq!(exporter(&by_name, current), exporter(&by_alias, alias));
        assert!(matches!(
            (current, exporter(&by_name, current)),
            ("otlp_grpc", ExporterConfig::Otlp(_)) | ("otlp_http", ExporterConfig::OtlpHttp(_))
        ));
    }
    let message = parse(&GOOD.replace("  debug:\n", "  debug:\n  otlphttpx:\n"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("otlp_http (or otlphttp)"), "{message}");
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
        "connectorz: {}\nservice:\n",
        11,
        &["unknown field `connectorz`"],
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

/// Values that must never be shown; each holds the word `PASSWORD`.
struct Secrets;

impl expand::Source for Secrets {
    fn env(&self, name: &str) -> Option<String> {
        Some(
            match name {
                "EP" => "ftp://admin:PASSWORD@collector:4317",
                "BAD_URL" => "http://admin:PASSWORD@col lector:4317",
                "PIPE" => "debug/PASSWORD",
                "REGEX" => "(PASSWORD",
                "TEXT" => "PASSWORD-text",
                _ => return None,
            }
            .to_string(),
        )
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        match path {
            "/run/token" => Ok("PASSWORD-from-file\n".into()),
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    }
}

/// Every kind of error — a validation that quotes the value, a value that fails to
/// parse, a type error from the YAML reader, a reference to an undefined component, a
/// bad regex — names the key and line and shows the reference, never the value.
#[test]
fn secrets_never_appear_in_errors_of_any_kind() {
    let otlp_exporter = |endpoint: &str| {
        GOOD.replace(
            "  debug:\n",
            &format!("  debug:\n  otlp:\n    endpoint: {endpoint}\n"),
        )
        .replace("exporters: [debug]", "exporters: [debug, otlp]")
    };
    let cases: Vec<(String, usize, &str)> =
        vec![
        (otlp_exporter("${env:EP}"), 12, "exporters.otlp.endpoint"),
        (otlp_exporter("${env:BAD_URL}"), 12, "exporters.otlp.endpoint"),
        (
            GOOD.replace("timeout: 1s", "timeout: ${env:TEXT}"),
            8,
            "processors.batch.timeout",
        ),
        (
            GOOD.replace("timeout: 1s", "send_batch_size: ${file:/run/token}"),
            8,
            "processors.batch.send_batch_size",
        ),
        (
            GOOD.replace("exporters: [debug]", "exporters: [${env:PIPE}]"),
            16,
            "service.pipelines.traces.exporters",
        ),
        (
            GOOD.replace(
                "  batch:\n    timeout: 1s\n",
                "  batch:\n    timeout: 1s\n  redaction:\n    blocked_values: [\"${env:REGEX}\"]\n",
            ),
            10,
            "processors.redaction.blocked_values",
        ),
    ];
    for (text, line, key) in cases {
        let error = Config::parse_with(&text, "t", &Secrets).unwrap_err();
        let shown = error.to_string();
        assert!(!shown.contains("PASSWORD"), "{shown}");
        assert!(shown.contains(key), "{shown}");
        assert_eq!(error.line, Some(line), "{shown}");
    }
}

#[test]
fn a_quoted_value_is_shown_as_its_reference() {
    let text = GOOD.replace("timeout: 1s", "timeout: ${env:TEXT}");
    let error = Config::parse_with(&text, "t", &Secrets).unwrap_err();
    assert!(error.message.contains("`${env:TEXT}`"), "{error}");
}

#[test]
fn a_bad_value_is_reported_at_its_own_key_not_the_first_of_its_map() {
    let text = GOOD.replace(
        "  debug:\n",
        "  debug:\n  otlp:\n    endpoint: http://localhost:4317\n    timeout: -5s\n",
    );
    let error = parse(&text).unwrap_err();
    assert_eq!(error.line, Some(13), "{error}");
    assert!(
        error.message.starts_with("exporters.otlp.timeout:"),
        "{error}"
    );
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

proptest::proptest! {
    #[test]
    fn config_parsing_never_panics(text in r"(receivers|service|pipelines|traces|otlp|batch|exporters|debug|[:\-\[\]{}, ]|\n  |\n){0,60}") {
        let _ = Config::parse(&text, "prop");
    }
}

/// A config with a `file_storage` extension in `dir` used by an OTLP exporter; `edit`
/// rewrites its text.
fn with_storage(
    dir: &std::path::Path,
    edit: impl Fn(String) -> String,
) -> Result<Config, ConfigError> {
    let text = format!(
        "extensions:
  file_storage/queue:
    directory: {}
    fsync: true
    compaction:
      on_start: true
receivers:
  otlp:
    protocols: {{grpc: }}
exporters:
  otlp:
    endpoint: http://127.0.0.1:4317
    sending_queue:
      storage: file_storage/queue
service:
  extensions: [file_storage/queue]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
",
        dir.display()
    );
    parse(&edit(text))
}

#[test]
fn a_collector_file_storage_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_storage(dir.path(), |t| t).unwrap();
    let storage = config.extensions[&ComponentId::parse("file_storage/queue").unwrap()]
        .file_storage()
        .unwrap();
    assert_eq!(
        storage.fsync,
        crate::storage::FsyncMode::Always,
        "the collector's `fsync: true`"
    );
    assert_eq!(storage.when_full, crate::storage::StorageWhenFull::Refuse);
    let config = with_storage(dir.path(), |t| {
        t.replace(
            "    fsync: true\n",
            "    fsync: true\n    when_full: drop_oldest\n",
        )
    })
    .unwrap();
    let storage = config.extensions[&ComponentId::parse("file_storage/queue").unwrap()]
        .file_storage()
        .unwrap();
    assert_eq!(
        storage.when_full,
        crate::storage::StorageWhenFull::DropOldest
    );
}

#[test]
fn storage_mistakes_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, usize, &str); 4] = [
        (
            "    fsync: true\n",
            "    fsync: true\n    when_full: drop_newest\n",
            5,
            "unknown variant `drop_newest`, expected `refuse` or `drop_oldest`",
        ),
        (
            "  extensions: [file_storage/queue]\n",
            "",
            14,
            "exporters.otlp.sending_queue.storage: `file_storage/queue` is not an extension listed in `service.extensions`",
        ),
        (
            "storage: file_storage/queue",
            "storage: file_storage/other",
            14,
            "`file_storage/other` is not an extension listed",
        ),
        (
            "  extensions: [file_storage/queue]",
            "  extensions: [file_storage/queue, file_storage/gone]",
            16,
            "`file_storage/gone` is not defined under `extensions`",
        ),
    ];
    for (from, to, line, message) in cases {
        let error = with_storage(dir.path(), |t| t.replacen(from, to, 1)).unwrap_err();
        assert_eq!(error.line, Some(line), "{error}");
        assert!(error.to_string().contains(message), "{error}");
    }
}

#[test]
fn workers_are_checked_naming_the_key_and_line() {
    let config = parse(&GOOD.replace(
        "      exporters: [debug]\n",
        "      exporters: [debug]\n      workers: 4\n",
    ))
    .unwrap();
    let id = PipelineId::parse("traces").unwrap();
    assert_eq!(config.pipelines[&id].workers, Some(4));
    assert_eq!(
        parse(GOOD).unwrap().pipelines[&id].workers,
        None,
        "unset: the default applies"
    );
    let zero = parse(&GOOD.replace(
        "      exporters: [debug]\n",
        "      exporters: [debug]\n      workers: 0\n",
    ))
    .unwrap_err();
    assert!(
        zero.to_string()
            .contains("service.pipelines.traces.workers: must be at least 1"),
        "{zero}"
    );
    let stateful = parse(
        &GOOD
            .replace(
                "  batch:\n",
                "  tail_sampling:\n    policies: [{name: all, type: always_sample}]\n  batch:\n",
            )
            .replace("[batch]", "[tail_sampling, batch]")
            .replace(
                "      exporters: [debug]\n",
                "      exporters: [debug]\n      workers: 2\n",
            ),
    );
    assert!(
        stateful.is_ok(),
        "tail_sampling shares its state across workers: {stateful:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let durable = with_storage(dir.path(), |t| {
        t.replace(
            "      exporters: [otlp]\n",
            "      exporters: [otlp]\n      workers: 2\n",
        )
    })
    .unwrap_err();
    assert!(
        durable
            .to_string()
            .contains("a pipeline with a persistent queue runs on one worker"),
        "{durable}"
    );
}

#[test]
fn an_unwritable_storage_directory_fails_validation_naming_the_key() {
    let error = with_storage(std::path::Path::new("/proc/sieve-no-such-dir"), |t| t).unwrap_err();
    assert!(
        error.to_string().contains("extensions.file_storage/queue.directory: `/proc/sieve-no-such-dir` is not a writable directory"),
        "{error}"
    );
    assert_eq!(error.line, Some(3));
}

#[test]
fn a_pipeline_keeps_one_storage() {
    let dir = tempfile::tempdir().unwrap();
    let error = with_storage(dir.path(), |t| {
        t.replace(
            "service:\n  extensions: [file_storage/queue]",
            "  otlp/second:\n    endpoint: http://127.0.0.1:4318\n    sending_queue: {storage: file_storage/other}\nservice:\n  extensions: [file_storage/queue, file_storage/other]",
        )
        .replace(
            "receivers:\n",
            &format!("  file_storage/other:\n    directory: {}\nreceivers:\n", dir.path().display()),
        )
        .replace("exporters: [otlp]", "exporters: [otlp, otlp/second]")
    })
    .unwrap_err();
    assert!(
        error.to_string().contains("service.pipelines.traces.exporters: its exporters name two storages, `file_storage/other` and `file_storage/queue`"),
        "{error}"
    );
    assert!(error.line.is_some(), "{error}");
}

/// The collector's documented `bearertokenauth` and `basicauth` configs, as users have
/// them, with receivers naming them.
const COLLECTOR_AUTH: &str = "\
extensions:
  bearertokenauth:
    token: \"somerandomtoken\"
  bearertokenauth/withscheme:
    scheme: \"Bearer\"
    token: \"randomtoken\"
  basicauth/server:
    htpasswd:
      inline: |
        ${env:SIEVE_TEST_BASIC_USER}:${env:SIEVE_TEST_BASIC_PASSWORD}
  basicauth/client:
    client_auth:
      username: username
      password: password
  oidc:
    issuer_url: http://localhost:8080/auth/realms/opentelemetry
    audience: account
  headers_setter:
    headers:
      - action: insert
        key: X-Scope-OrgID
        from_context: tenant_id
      - action: upsert
        key: User-ID
        value: user_id
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
        auth:
          authenticator: bearertokenauth/withscheme
      http:
        endpoint: 127.0.0.1:4318
        auth:
          authenticator: basicauth/server
exporters:
  debug:
service:
  extensions: [bearertokenauth, bearertokenauth/withscheme, basicauth/server, basicauth/client, oidc, headers_setter]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
";

#[test]
fn the_collectors_auth_configs_load_unchanged() {
    std::env::set_var("SIEVE_TEST_BASIC_USER", "user");
    std::env::set_var("SIEVE_TEST_BASIC_PASSWORD", "pass");
    let config = parse(COLLECTOR_AUTH).unwrap();
    use crate::config::ComponentConfig;
    let receiver = &config.receivers[&ComponentId::parse("otlp").unwrap()];
    let references: Vec<String> = receiver
        .extension_references()
        .into_iter()
        .map(|r| format!("{}={}", r.key, r.id))
        .collect();
    assert_eq!(
        references,
        [
            "protocols.grpc.auth.authenticator=bearertokenauth/withscheme",
            "protocols.http.auth.authenticator=basicauth/server"
        ]
    );
}

#[test]
fn an_authenticator_that_is_not_one_is_refused_naming_the_key_and_line() {
    std::env::set_var("SIEVE_TEST_BASIC_USER", "user");
    std::env::set_var("SIEVE_TEST_BASIC_PASSWORD", "pass");
    let client_only = COLLECTOR_AUTH.replacen(
        "authenticator: basicauth/server",
        "authenticator: basicauth/client",
        1,
    );
    let error = parse(&client_only).unwrap_err();
    assert_eq!(error.line, Some(36), "{error}");
    assert!(error.to_string().contains("auth.authenticator"), "{error}");
    let unknown = COLLECTOR_AUTH.replacen(
        "authenticator: basicauth/server",
        "authenticator: oidc/undefined",
        1,
    );
    assert!(parse(&unknown).is_err());
    let no_token = COLLECTOR_AUTH.replacen(
        "    token: \"somerandomtoken\"\n",
        "    scheme: Bearer\n",
        1,
    );
    let error = parse(&no_token).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("extensions.bearertokenauth.token"),
        "{error}"
    );
    assert!(!error.to_string().contains("randomtoken"), "{error}");
}

#[test]
fn listeners_beyond_loopback_without_tls_or_auth_are_named() {
    std::env::set_var("SIEVE_TEST_BASIC_USER", "user");
    std::env::set_var("SIEVE_TEST_BASIC_PASSWORD", "pass");
    let otlp = ComponentId::parse("otlp").unwrap();
    let exposed = COLLECTOR_AUTH
        .replace("127.0.0.1:4317", "0.0.0.0:4317")
        .replace("127.0.0.1:4318", "0.0.0.0:4318");
    let config = parse(&exposed).unwrap();
    assert!(
        config.receivers[&otlp].unprotected_listeners().is_empty(),
        "both protocols authenticate"
    );
    let open = exposed.replacen(
        "        auth:\n          authenticator: basicauth/server\n",
        "",
        1,
    );
    let config = parse(&open).unwrap();
    assert_eq!(
        config.receivers[&otlp].unprotected_listeners(),
        vec![("http", "0.0.0.0:4318".parse().unwrap())]
    );
    let config = parse(GOOD).unwrap();
    assert!(
        config.receivers[&otlp].unprotected_listeners().is_empty(),
        "loopback is not exposed"
    );
}

#[test]
fn an_exporter_names_a_client_authenticator_and_one_credential_only() {
    std::env::set_var("SIEVE_TEST_BASIC_USER", "user");
    std::env::set_var("SIEVE_TEST_BASIC_PASSWORD", "pass");
    let with_auth = COLLECTOR_AUTH.replace(
        "exporters:\n  debug:\n",
        "exporters:\n  debug:\n  otlp:\n    endpoint: http://127.0.0.1:4317\n    auth:\n      authenticator: basicauth/client\n",
    ).replace("exporters: [debug]", "exporters: [otlp]");
    let config = parse(&with_auth).unwrap();
    let id = PipelineId::parse("traces").unwrap();
    let signature = crate::topology::pipeline::Signature::of(&config, &config.pipelines[&id]);
    assert!(
        format!("{signature:?}").contains("auth_extension: Some(Basic(ClientAuthConfig { username: \"username\", password: <redacted> }))"),
        "{signature:?}"
    );
    let server_only = with_auth.replacen(
        "authenticator: basicauth/client\n",
        "authenticator: basicauth/server\n",
        2,
    );
    let error = parse(&server_only).unwrap_err();
    assert!(
        error.to_string().contains("is not a client_auth extension"),
        "{error}"
    );
    let both = with_auth.replace(
        "    auth:\n      authenticator: basicauth/client\n",
        "    auth:\n      authenticator: basicauth/client\n    bearer_token: x\n",
    );
    let error = parse(&both).unwrap_err();
    assert!(error.to_string().contains("exporters.otlp.auth"), "{error}");
}
