//! Pipeline configuration: the OpenTelemetry Collector's layout, read, expanded, checked.
//!
//! ```yaml
//! receivers:  { otlp: { protocols: { grpc: , http: } } }
//! processors: { batch: }
//! exporters:  { otlp/tempo: { endpoint: "tempo:4317" } }
//! service:
//!   pipelines:
//!     traces: { receivers: [otlp], processors: [batch], exporters: [otlp/tempo] }
//!   telemetry: { logs: { level: info }, metrics: { address: "127.0.0.1:8888" } }
//! ```
//!
//! Loading runs three steps, all before anything starts:
//! 1. [`expand`]: `${env:..}`, `${file:..}` and `$$` (line numbers preserved);
//! 2. typed deserialization with serde_yaml: every struct denies unknown keys and each
//!    component section picks the struct for a component id's type as it reads the key, so
//!    serde_yaml's own errors carry the key path and line;
//! 3. semantic checks (pipelines referencing undefined components, signals a component
//!    does not accept, per-component rules), located with [`locate`].
//!
//! The result, [`Config`], is what the topology builds from and what a reload diffs.
//! This module is generic over the components a config can name ([`Components`]) and
//! names none itself: the list is `crate::components`.

mod connections;
pub mod expand;
pub mod locate;

use crate::model::Signal;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// The configuration sieve runs when started without `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../pipelines/default.yaml");

/// A component id: `type` or `type/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId {
    pub kind: String,
    pub name: Option<String>,
}

impl ComponentId {
    pub fn parse(text: &str) -> Result<ComponentId, String> {
        let (kind, name) = match text.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (text, None),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        };
        if !valid(kind) || name.is_some_and(|n| !valid(n)) {
            return Err(format!("`{text}` is not a component id (`type` or `type/name`, letters, digits, `_`, `-`, `.`)"));
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", self.kind, name),
            None => f.write_str(&self.kind),
        }
    }
}

/// A pipeline id: `traces`, `metrics` or `logs`, optionally `/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineId {
    pub signal: Signal,
    pub name: Option<String>,
}

impl PipelineId {
    pub fn parse(text: &str) -> Result<PipelineId, String> {
        let id = ComponentId::parse(text)?;
        let signal = Signal::parse(&id.kind)
            .ok_or_else(|| format!("pipeline `{text}` must be named after its signal: traces, metrics or logs (optionally `/name`)"))?;
        Ok(PipelineId {
            signal,
            name: id.name,
        })
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", self.signal, name),
            None => f.write_str(self.signal.as_str()),
        }
    }
}

/// A config value that must never be printed: headers, passwords, tokens.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A key of a component's own config that failed its checks.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted key path inside the component, e.g. `protocols.grpc.endpoint`.
    pub key: String,
    pub message: String,
}

impl FieldError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Implemented by the tagged config enums of each section.
pub trait ComponentConfig: Sized + Clone + fmt::Debug + PartialEq {
    /// The section's name in the YAML, e.g. `receivers`.
    const SECTION: &'static str;
    /// Known component types, listed in error messages: the collector's current
    /// (snake_case) names.
    const KINDS: &'static [&'static str];
    /// Older names still accepted, as the collector keeps them (its component renaming,
    /// collector #14396 and contrib #45339): `(alias, current name)`.
    const ALIASES: &'static [(&'static str, &'static str)] = &[];
    /// The current name of the type written `kind`: itself, or what an alias stands for.
    fn current_kind(kind: &str) -> &str {
        Self::ALIASES
            .iter()
            .find(|(alias, _)| *alias == kind)
            .map_or(kind, |(_, current)| current)
    }
    /// Reads the config of a component of type `kind` (a current name).
    fn deserialize_kind<'de, D: Deserializer<'de>>(
        kind: &str,
        deserializer: D,
    ) -> Result<Self, D::Error>;
    /// The signals this component accepts.
    fn signals(&self) -> &'static [Signal];
    /// Checks that go beyond types (ranges, addresses, combinations).
    fn validate(&self) -> Result<(), FieldError>;
    /// The extensions this component's config names: the key naming one, its id, and
    /// the role it must play (e.g. `storage`).
    fn extension_references(&self) -> Vec<ExtensionReference> {
        Vec::new()
    }
    /// The roles an extension can play for other components (none for the others).
    fn roles(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Implemented by the config enum of the `connectors:` section: a connector is an
/// exporter of some pipelines and a receiver of others.
pub trait Connects: ComponentConfig {
    /// Whether the connector takes `from` data as an exporter and emits `to` data as a
    /// receiver (the collector's "supported pipeline types"), or why not.
    fn connects(&self, from: Signal, to: Signal) -> Result<(), String>;
    /// The pipelines its own config names (a routing table): the key inside the
    /// connector's config and the pipeline id as written.
    fn named_pipelines(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A component's config naming an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionReference {
    /// The key, a dotted path inside the component's config.
    pub key: &'static str,
    pub id: String,
    pub role: &'static str,
}

/// The components a configuration can name, one config enum per section (the list
/// lives in `crate::components`; this module names none of them).
pub trait Components: Clone + fmt::Debug + PartialEq + 'static {
    type Extension: ComponentConfig;
    type Receiver: ComponentConfig;
    type Processor: ComponentConfig;
    type Exporter: ComponentConfig;
    type Connector: Connects;

    /// Rules across a pipeline's components (e.g. one storage per pipeline): the key
    /// inside the pipeline (`exporters`) and what is wrong.
    fn check_pipeline(
        _config: &Config<Self>,
        _pipeline: &PipelineConfig,
    ) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}

/// Reads an optional section whose presence with an empty value (`grpc:`) means "on, with
/// defaults", as the collector reads `protocols.grpc`.
pub fn present_or_default<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

/// Reads a component's config, treating an empty value (`batch:`) as all defaults.
pub fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Durations written as the collector writes them: `200ms`, `5s`, `1m`, `1h30m`.
pub mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        if text.trim() == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(text.trim())
            .map_err(|e| format!("`{text}` is not a duration like 200ms, 5s or 1m30s: {e}"))
    }
}

/// A section of components keyed by id, in file order.
struct Section<T>(Vec<(ComponentId, T)>);

struct ComponentSeed<'a, T>(&'a str, PhantomData<T>);

impl<'de, T: ComponentConfig> DeserializeSeed<'de> for ComponentSeed<'_, T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize_kind(self.0, deserializer)
    }
}

impl<'de, T: ComponentConfig> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SectionVisitor<T>(PhantomData<T>);
        impl<'de, T: ComponentConfig> Visitor<'de> for SectionVisitor<T> {
            type Value = Section<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a map of {} by id", T::SECTION)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Section(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(ComponentId, T)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let id = ComponentId::parse(&key).map_err(de::Error::custom)?;
                    let kind = T::current_kind(&id.kind);
                    if !T::KINDS.contains(&kind) {
                        return Err(de::Error::custom(format!(
                            "`{key}`: unknown {} type `{}`; known types: {}",
                            T::SECTION.trim_end_matches('s'),
                            id.kind,
                            known_kinds::<T>()
                        )));
                    }
                    if out.iter().any(|(existing, _)| *existing == id) {
                        return Err(de::Error::custom(format!("`{key}`: defined twice")));
                    }
                    let config = map.next_value_seed(ComponentSeed::<T>(kind, PhantomData))?;
                    out.push((id, config));
                }
                Ok(Section(out))
            }
        }
        deserializer.deserialize_any(SectionVisitor(PhantomData))
    }
}

/// The types of a section for an error message, aliases after the name they stand for.
fn known_kinds<T: ComponentConfig>() -> String {
    T::KINDS
        .iter()
        .map(|kind| {
            let aliases: Vec<&str> = T::ALIASES
                .iter()
                .filter(|(_, current)| current == kind)
                .map(|(alias, _)| *alias)
                .collect();
            match aliases.as_slice() {
                [] => kind.to_string(),
                _ => format!("{kind} (or {})", aliases.join(", ")),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl<T: ComponentConfig> Default for Section<T> {
    fn default() -> Self {
        Section(Vec::new())
    }
}

/// What a pipeline does when its queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse new data with a retryable error (gRPC `UNAVAILABLE`, HTTP 503).
    #[default]
    Refuse,
    /// Accept and drop the new data, counted as `sieve_pipeline_dropped_items_total{reason="queue_full"}`.
    DropNewest,
}

/// The bounded queue in front of a pipeline's processors.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Batches (one per received request) the queue holds before `when_full` applies.
    pub capacity: usize,
    /// Bytes the queue holds before `when_full` applies, in MiB (batches count their
    /// encoded size; an empty queue takes one batch of any size).
    pub max_size_mib: usize,
    /// `refuse` (default: the client gets a retryable error) or `drop_newest` (counted).
    pub when_full: WhenFull,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 256,
            max_size_mib: 16,
            when_full: WhenFull::Refuse,
        }
    }
}

impl QueueConfig {
    pub fn max_bytes(&self) -> usize {
        self.max_size_mib.saturating_mul(1 << 20)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    /// Receivers and connectors feeding this pipeline.
    receivers: Vec<String>,
    /// Processors, in order.
    #[serde(default)]
    processors: Vec<String>,
    /// Exporters and connectors receiving every batch the processors emit.
    exporters: Vec<String>,
    /// The pipeline queue.
    #[serde(default)]
    queue: QueueConfig,
    /// Threads running this pipeline's processors (default: the cores available to
    /// sieve, as its cgroup's CPU quota and affinity allow; 1 for a pipeline with a
    /// persistent queue).
    #[serde(default)]
    workers: Option<usize>,
}

/// A pipeline, with component ids resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    pub receivers: Vec<ComponentId>,
    /// The connectors among `receivers:` (data other pipelines hand on).
    pub connectors_in: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
    /// The connectors among `exporters:` (handing data on to other pipelines).
    pub connectors_out: Vec<ComponentId>,
    pub queue: QueueConfig,
    /// Threads running the processors, as configured (`None`: the default, see
    /// `topology::pipeline::workers_of`).
    pub workers: Option<usize>,
}

/// Format of sieve's own logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    /// Human-readable lines (`console` is accepted as the collector's name for it).
    #[default]
    #[serde(alias = "console")]
    Text,
    /// One JSON object per line.
    Json,
}

/// `service.telemetry.logs`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetry {
    /// `error`, `warn`, `info`, `debug` or `trace` (or `RUST_LOG` directives such as
    /// `info,sieve::exporters=debug`); `RUST_LOG` overrides it. A reload applies it.
    pub level: String,
    /// `text` (default) or `json`; a change takes effect on restart.
    pub encoding: LogEncoding,
}

impl Default for LogsTelemetry {
    fn default() -> Self {
        LogsTelemetry {
            level: "info".into(),
            encoding: LogEncoding::Text,
        }
    }
}

/// `service.telemetry.metrics`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetry {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (loopback by default). A
    /// reload moves it.
    pub address: String,
}

impl Default for MetricsTelemetry {
    fn default() -> Self {
        MetricsTelemetry {
            address: "127.0.0.1:8888".into(),
        }
    }
}

/// `service.telemetry`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub logs: LogsTelemetry,
    pub metrics: MetricsTelemetry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    /// The extensions to start; others are defined and unused, as in the collector.
    #[serde(default)]
    extensions: Vec<String>,
    pipelines: BTreeMap<String, RawPipeline>,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    shutdown_timeout: Duration,
    /// The configuration audit trail (see [`crate::audit`]).
    #[serde(default)]
    audit: Option<crate::audit::AuditConfig>,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
struct RawConfig<C: Components> {
    #[serde(default)]
    extensions: Section<C::Extension>,
    #[serde(default)]
    receivers: Section<C::Receiver>,
    #[serde(default)]
    processors: Section<C::Processor>,
    #[serde(default)]
    exporters: Section<C::Exporter>,
    #[serde(default)]
    connectors: Section<C::Connector>,
    service: RawService,
}

/// A loaded, checked configuration of the components `C`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config<C: Components> {
    /// The extensions `service.extensions` starts.
    pub extensions: BTreeMap<ComponentId, C::Extension>,
    pub receivers: BTreeMap<ComponentId, C::Receiver>,
    pub processors: BTreeMap<ComponentId, C::Processor>,
    pub exporters: BTreeMap<ComponentId, C::Exporter>,
    pub connectors: BTreeMap<ComponentId, C::Connector>,
    pub pipelines: BTreeMap<PipelineId, PipelineConfig>,
    pub telemetry: TelemetryConfig,
    /// How long SIGTERM waits for queues to drain (`service.shutdown_timeout`, default 10s).
    pub shutdown_timeout: Duration,
    /// `service.audit`: where loads and reloads are recorded, if anywhere.
    pub audit: Option<crate::audit::AuditConfig>,
    /// Keeps the values of `${..}` references out of every message about this config
    /// (start and reload failures included).
    pub redactor: expand::Redactor,
}

/// A configuration that cannot run, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<embedded default>`).
    pub origin: String,
    /// 1-based line, when it could be found.
    pub line: Option<usize>,
    /// What is wrong, naming the key path.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.origin, line, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl<C: Components> Config<C> {
    /// Reads and checks the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Config<C>, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &origin)
    }

    /// The embedded default pipeline (a test keeps it valid).
    pub fn embedded_default() -> Result<Config<C>, ConfigError> {
        Config::parse(DEFAULT_CONFIG, "<embedded default>")
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config<C>, ConfigError> {
        Config::parse_with(text, origin, &expand::Process)
    }

    pub fn parse_with(
        text: &str,
        origin: &str,
        source: &dyn expand::Source,
    ) -> Result<Config<C>, ConfigError> {
        let err = |line: Option<usize>, message: String| ConfigError {
            origin: origin.to_string(),
            line,
            message,
        };
        let expanded = expand::expand(text, source).map_err(|e| err(Some(e.line), e.message))?;
        let raw: RawConfig<C> = serde_yaml::from_str(&expanded.text).map_err(|e| {
            let (line, message) = section_key_error(&e, &expanded.text)
                .unwrap_or_else(|| yaml_message(&e, &expanded.text));
            err(line, expanded.redactor.redact(&message))
        })?;
        let checker = Checker {
            text: &expanded.text,
            origin,
            redactor: &expanded.redactor,
        };
        let mut config = checker.check(raw)?;
        config.redactor = expanded.redactor;
        Ok(config)
    }

    /// The signals a receiver must deliver, from the pipelines that list it.
    pub fn signals_of_receiver(&self, id: &ComponentId) -> Vec<Signal> {
        let mut signals: Vec<Signal> = self
            .pipelines
            .iter()
            .filter(|(_, p)| p.receivers.contains(id))
            .map(|(pid, _)| pid.signal)
            .collect();
        signals.dedup();
        signals
    }
}

/// An error about a component key itself (unknown type, bad id, defined twice), which
/// serde_yaml places at the start of the section: found again by the key, the last time
/// it appears (a duplicate's second definition).
fn section_key_error(error: &serde_yaml::Error, text: &str) -> Option<(Option<usize>, String)> {
    let full = error.to_string();
    let message = full
        .rfind(" at line ")
        .map_or(full.as_str(), |at| &full[..at]);
    let (section, rest) = message.split_once(": ")?;
    if ![
        "extensions",
        "receivers",
        "processors",
        "exporters",
        "connectors",
    ]
    .contains(&section)
    {
        return None;
    }
    let key = rest.strip_prefix('`')?.split('`').next()?;
    Some((
        locate::last_line_of(text, &[section, key]),
        format!(
            "{section}.{key}: {}",
            rest.trim_start_matches(&format!("`{key}`"))
                .trim_start_matches(':')
                .trim()
        ),
    ))
}

/// serde_yaml's line and message, without its trailing position (the line is reported
/// separately). When a value fails its own parsing (a bad duration), serde_yaml points at
/// the enclosing map and its path stops there: the value the message quotes is looked for
/// among that map's keys, and the key found completes the path.
fn yaml_message(error: &serde_yaml::Error, text: &str) -> (Option<usize>, String) {
    let full = error.to_string();
    let message = match full.rfind(" at line ") {
        Some(at) => &full[..at],
        None => full.as_str(),
    };
    let line = error.location().map(|l| l.line()).map(|line| {
        quoted(message)
            .and_then(|value| locate::sibling_line_with_value(text, line, value))
            .unwrap_or(line)
    });
    let key = line
        .and_then(|l| text.lines().nth(l - 1))
        .and_then(locate::key_of_line)
        .filter(|key| !message.contains(&format!("`{key}`")));
    let message = match (message.split_once(": "), key) {
        (Some((path, rest)), Some(key)) if !path.contains(' ') && !path.ends_with(key) => {
            format!("{path}.{key}: {rest}")
        }
        _ => message.to_string(),
    };
    (line, message)
}

/// The first text a message quotes in backticks.
fn quoted(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('`')?;
    rest.split_once('`').map(|(value, _)| value)
}

struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
    redactor: &'a expand::Redactor,
}

impl Checker<'_> {
    fn error(&self, path: &[&str], value: Option<&str>, message: String) -> ConfigError {
        let line = match value {
            Some(v) => locate::line_of_value(self.text, path, v),
            None => locate::line_of(self.text, path),
        };
        ConfigError {
            origin: self.origin.to_string(),
            line,
            message: self
                .redactor
                .redact(&format!("{}: {}", path.join("."), message)),
        }
    }

    fn check<C: Components>(&self, raw: RawConfig<C>) -> Result<Config<C>, ConfigError> {
        let defined = self.components(raw.extensions)?;
        let extensions = self.enabled_extensions(defined, &raw.service.extensions)?;
        let receivers = self.components(raw.receivers)?;
        let processors = self.components(raw.processors)?;
        let exporters = self.components(raw.exporters)?;
        let connectors = self.components(raw.connectors)?;
        self.extension_references(&extensions, &receivers)?;
        self.extension_references(&extensions, &exporters)?;
        let mut pipelines = BTreeMap::new();
        for (key, raw_pipeline) in raw.service.pipelines {
            let id = PipelineId::parse(&key)
                .map_err(|m| self.error(&["service", "pipelines", &key], None, m))?;
            let path = ["service", "pipelines", key.as_str()];
            let (receivers, connectors_in) = self.ends(
                &path,
                "receivers",
                &raw_pipeline.receivers,
                (&receivers, &connectors),
                id.signal,
            )?;
            let (exporters, connectors_out) = self.ends(
                &path,
                "exporters",
                &raw_pipeline.exporters,
                (&exporters, &connectors),
                id.signal,
            )?;
            let pipeline = PipelineConfig {
                receivers,
                connectors_in,
                processors: self.references(
                    &path,
                    "processors",
                    &raw_pipeline.processors,
                    &processors,
                    id.signal,
                )?,
                exporters,
                connectors_out,
                queue: raw_pipeline.queue,
                workers: raw_pipeline.workers,
            };
            let fed = !pipeline.receivers.is_empty() || !pipeline.connectors_in.is_empty();
            let drained = !pipeline.exporters.is_empty() || !pipeline.connectors_out.is_empty();
            if !fed || !drained {
                return Err(self.error(
                    &path,
                    None,
                    "a pipeline needs at least one receiver and one exporter".into(),
                ));
            }
            for (key, value) in [
                (&["queue", "capacity"][..], pipeline.queue.capacity),
                (&["queue", "max_size_mib"], pipeline.queue.max_size_mib),
                (&["workers"], pipeline.workers.unwrap_or(1)),
            ] {
                if value == 0 {
                    return Err(self.error(
                        &[&path[..], key].concat(),
                        None,
                        "must be at least 1".into(),
                    ));
                }
            }
            pipelines.insert(id, pipeline);
        }
        self.check_connections(&connectors, &pipelines)?;
        if pipelines.is_empty() {
            return Err(self.error(
                &["service", "pipelines"],
                None,
                "at least one pipeline is required".into(),
            ));
        }
        let telemetry = raw.service.telemetry;
        crate::net::parse_address(&telemetry.metrics.address)
            .map_err(|m| self.error(&["service", "telemetry", "metrics", "address"], None, m))?;
        tracing_subscriber::EnvFilter::try_new(&telemetry.logs.level).map_err(|e| {
            self.error(
                &["service", "telemetry", "logs", "level"],
                None,
                e.to_string(),
            )
        })?;
        let config = Config {
            extensions,
            receivers,
            processors,
            exporters,
            connectors,
            pipelines,
            telemetry,
            shutdown_timeout: raw.service.shutdown_timeout,
            audit: raw.service.audit,
            redactor: expand::Redactor::default(),
        };
        for (id, pipeline) in &config.pipelines {
            if let Err((key, message)) = C::check_pipeline(&config, pipeline) {
                let id = id.to_string();
                return Err(self.error(&["service", "pipelines", &id, key], None, message));
            }
        }
        Ok(config)
    }

    fn components<T: ComponentConfig>(
        &self,
        section: Section<T>,
    ) -> Result<BTreeMap<ComponentId, T>, ConfigError> {
        let mut out = BTreeMap::new();
        for (id, config) in section.0 {
            let key = id.to_string();
            if let Err(field) = config.validate() {
                let mut path = vec![T::SECTION, key.as_str()];
                path.extend(field.key.split('.').filter(|s| !s.is_empty()));
                let mut located = self.error(&path, None, field.message);
                // a path into a list (`blocked_values.0`) is found by its list's key
                while located.line.is_none() && path.len() > 1 {
                    path.pop();
                    located.line = locate::line_of(self.text, &path);
                }
                return Err(located);
            }
            out.insert(id, config);
        }
        Ok(out)
    }

    /// The extensions `service.extensions` lists, each defined.
    fn enabled_extensions<T: ComponentConfig>(
        &self,
        mut defined: BTreeMap<ComponentId, T>,
        listed: &[String],
    ) -> Result<BTreeMap<ComponentId, T>, ConfigError> {
        let path = ["service", "extensions"];
        let mut enabled = BTreeMap::new();
        for name in listed {
            let fail = |message: String| self.error(&path, Some(name), message);
            let id = ComponentId::parse(name).map_err(fail)?;
            let Some(config) = defined.remove(&id) else {
                return Err(fail(if enabled.contains_key(&id) {
                    format!("`{name}` is listed twice")
                } else {
                    format!("`{name}` is not defined under `extensions`")
                }));
            };
            enabled.insert(id, config);
        }
        Ok(enabled)
    }

    /// Checks that every extension a component names is enabled and plays the role.
    fn extension_references<E: ComponentConfig, T: ComponentConfig>(
        &self,
        extensions: &BTreeMap<ComponentId, E>,
        components: &BTreeMap<ComponentId, T>,
    ) -> Result<(), ConfigError> {
        for (id, config) in components {
            for reference in config.extension_references() {
                let component = id.to_string();
                let mut path = vec![T::SECTION, component.as_str()];
                path.extend(reference.key.split('.'));
                let fail = |message: String| self.error(&path, None, message);
                let extension = ComponentId::parse(&reference.id)
                    .ok()
                    .and_then(|id| extensions.get(&id));
                match extension {
                    None => {
                        return Err(fail(format!(
                            "`{}` is not an extension listed in `service.extensions`",
                            reference.id
                        )))
                    }
                    Some(e) if !e.roles().contains(&reference.role) => {
                        return Err(fail(format!(
                            "`{}` is not a {} extension",
                            reference.id, reference.role
                        )))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    fn references<T: ComponentConfig>(
        &self,
        pipeline_path: &[&str],
        list: &str,
        names: &[String],
        defined: &BTreeMap<ComponentId, T>,
        signal: Signal,
    ) -> Result<Vec<ComponentId>, ConfigError> {
        let path = [pipeline_path, &[list]].concat();
        let mut ids = Vec::new();
        for name in names {
            let fail = |message: String| self.error(&path, Some(name), message);
            let id = ComponentId::parse(name).map_err(fail)?;
            let Some(config) = defined.get(&id) else {
                return Err(fail(format!(
                    "`{name}` is not defined under `{}`",
                    T::SECTION
                )));
            };
            if !config.signals().contains(&signal) {
                return Err(fail(format!("`{name}` does not accept {signal}")));
            }
            if ids.contains(&id) {
                return Err(fail(format!("`{name}` is listed twice")));
            }
            ids.push(id);
        }
        Ok(ids)
    }
}
