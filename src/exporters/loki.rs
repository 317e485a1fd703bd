//! `loki` exporter: the Loki push API (`POST /loki/api/v1/push`), protobuf `PushRequest`
//! compressed with snappy (the default, as promtail sends it) or JSON.
//!
//! Streams and labels: each log record's stream is chosen by a small set of labels —
//! `service_name` (from the resource's `service.name`, `unknown_service` when absent) and
//! `level` (from the severity), plus the resource or record attributes listed in
//! `labels.resource` / `labels.attributes`. Label names are sanitised to Loki's rule
//! (`[a-zA-Z_][a-zA-Z0-9_]*`: other characters become `_`, a leading digit gets a `_`).
//! Everything else goes to structured metadata (Loki 3), or into the line with
//! `structured_metadata: false` and `line_format: json | logfmt`.
//!
//! A guard caps the distinct values each label may take (`max_label_values`): a value
//! beyond the cap is moved to structured metadata instead of creating a stream, and
//! counted in `sieve_exporter_label_overflows_total`. A value not seen for
//! `label_value_ttl` frees its place, so a label whose values churn (pod names) keeps
//! taking new ones. Entries of a stream are sent in
//! timestamp order; a push holds at most `max_batch_bytes` of lines and metadata and at
//! most `max_batch_entries` entries (larger batches are sent as several pushes; a retry
//! resends the whole batch, and Loki drops the exact duplicates).
//!
//! `https://` endpoints use TLS (`tls.ca_file`, and `tls.cert_file`/`tls.key_file` for
//! mutual TLS).
//!
//! Loki also ingests OTLP natively (`/otlp/v1/logs`): the `otlphttp` exporter with
//! `logs_endpoint: http://loki:3100/otlp/v1/logs` is the alternative when Loki maps
//! attributes itself.

use super::http_core::{http_exporter_config, HttpCore, HttpOptions, PlainHttp};
use super::{ExportError, Exported, SendingQueueConfig};
use crate::build::{BuildContext, BuildError};
use crate::config::{duration, FieldError, Secret};
use crate::model::{Batch, Payload};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use parking_lot::Mutex;
use prost::Message;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How a push is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LokiEncoding {
    /// Snappy-compressed protobuf `PushRequest`.
    #[default]
    Protobuf,
    /// JSON `{"streams": [...]}`.
    Json,
}

/// What the log line holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// The record's body as text.
    #[default]
    Body,
    /// A JSON object: `body` plus, without structured metadata, the attributes.
    Json,
    /// `key=value` pairs: `body=...` plus, without structured metadata, the attributes.
    Logfmt,
}

/// `labels:` of the Loki exporter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// Resource attributes that become labels (besides `service.name` → `service_name`).
    pub resource: Vec<String>,
    /// Log record attributes that become labels.
    pub attributes: Vec<String>,
}

http_exporter_config! {
    /// `exporters: loki:`. Retries: 429 and 5xx are retried; other 4xx are dropped with
    /// Loki's reason.
    pub struct LokiExporterConfig {
        /// Push URL, e.g. `http://loki:3100/loki/api/v1/push`.
        pub endpoint: String,
        /// Tenant sent as `X-Scope-OrgID`.
        #[serde(default)]
        pub tenant_id: Option<Secret>,
        /// `protobuf` (default, snappy) or `json`.
        #[serde(default)]
        pub encoding: LokiEncoding,
        /// Which attributes become labels.
        #[serde(default)]
        pub labels: LabelsConfig,
        /// Send other attributes as structured metadata (Loki 3); otherwise they go into
        /// the line per `line_format`.
        #[serde(default = "yes")]
        pub structured_metadata: bool,
        /// `body` (default), `json` or `logfmt`.
        #[serde(default)]
        pub line_format: LineFormat,
        /// Distinct values one label may take before new values go to structured metadata.
        #[serde(default = "default_max_label_values")]
        pub max_label_values: usize,
        /// A label value not seen for this long frees its place under `max_label_values`.
        #[serde(default = "default_label_value_ttl", with = "duration")]
        pub label_value_ttl: Duration,
        /// Largest push, in bytes of lines and metadata.
        #[serde(default = "default_max_batch_bytes")]
        pub max_batch_bytes: usize,
        /// Most entries in one push.
        #[serde(default = "default_max_batch_entries")]
        pub max_batch_entries: usize,
    }
}

fn default_sending_queue() -> SendingQueueConfig {
    SendingQueueConfig::default()
}

fn yes() -> bool {
    true
}

fn default_max_label_values() -> usize {
    1000
}

fn default_label_value_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_batch_bytes() -> usize {
    1 << 20
}

fn default_max_batch_entries() -> usize {
    10_000
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl LokiExporterConfig {
    pub fn validate(&self) -> Result<(), FieldError> {
        self.validate_shared()?;
        super::otlp::web_uri(&self.endpoint).map_err(|m| FieldError::new("endpoint", m))?;
        if self.label_value_ttl.is_zero() {
            return Err(FieldError::new("label_value_ttl", "must be positive"));
        }
        if self.max_label_values == 0 || self.max_batch_bytes < 1024 || self.max_batch_entries == 0
        {
            return Err(FieldError::new("max_batch_bytes", "max_label_values and max_batch_entries must be positive, max_batch_bytes at least 1024"));
        }
        Ok(())
    }

    /// The tenant header, marked sensitive so it is never logged.
    fn tenant_header(&self) -> Option<HeaderValue> {
        let tenant = self.tenant_id.as_ref()?;
        let mut value = HeaderValue::try_from(tenant.0.as_str()).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// Loki's `push.proto`.
pub mod push {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// A label name as Loki accepts it.
pub fn sanitize_label(name: &str) -> String {
    let mut out = crate::exporters::underscore_invalid(name);
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The `level` label from an OTLP severity number.
fn level(record: &LogRecord) -> &'static str {
    match record.severity_number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unknown",
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// One entry on its way into a stream.
struct Entry {
    nanos: i64,
    line: String,
    metadata: Vec<(String, String)>,
}

impl Entry {
    fn size(&self) -> usize {
        self.line.len()
            + self
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + 16
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct LabelOverflowLabels {
    exporter: String,
    label: String,
}

/// Sends batches to Loki.
pub struct LokiExporter {
    config: LokiExporterConfig,
    core: HttpCore,
    label_values: Mutex<LabelGuard>,
    overflows: prometheus_client::metrics::family::Family<
        LabelOverflowLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    exporter_id: String,
    /// The attribute keys `labels.resource` and `labels.attributes` name: a record's
    /// attribute under one of them is a label (or refused to metadata), never copied.
    label_keys: HashSet<String, foldhash::fast::RandomState>,
}

/// The streams of one batch by their label values: each distinct combination gets an
/// index, its label string and the labels the guard refused.
#[derive(Default)]
struct StreamKeys {
    /// Label values joined (`\0` between, `\u{1}` before a present value) → index.
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    labels: Vec<String>,
    refused: Vec<Vec<(String, String)>>,
    key: String,
}

impl StreamKeys {
    /// The stream of `values`, made with `make` the first time.
    fn stream(
        &mut self,
        values: &[(&str, Option<String>)],
        make: impl FnOnce(&[(&str, Option<String>)]) -> (String, Vec<(String, String)>),
    ) -> (usize, &[(String, String)]) {
        self.key.clear();
        for (_, value) in values {
            self.key.push('\0');
            if let Some(value) = value {
                self.key.push('\u{1}');
                self.key.push_str(value);
            }
        }
        let at = match self.index.get(self.key.as_str()) {
            Some(at) => *at,
            None => {
                let (labels, refused) = make(values);
                self.labels.push(labels);
                self.refused.push(refused);
                self.index.insert(self.key.clone(), self.labels.len() - 1);
                self.labels.len() - 1
            }
        };
        (at, &self.refused[at])
    }
}

impl LokiExporter {
    pub fn build(config: &LokiExporterConfig, cx: &BuildContext) -> Result<Self, BuildError> {
        let mut core = config.core(false, cx)?;
        if let Some(tenant) = config.tenant_header() {
            core = core.with_header(HeaderName::from_static("x-scope-orgid"), tenant);
        }
        Ok(LokiExporter {
            config: config.clone(),
            core,
            label_values: Mutex::new(LabelGuard::new(
                config.max_label_values,
                config.label_value_ttl,
            )),
            overflows: cx.telemetry.family(
                "exporter_label_overflows",
                "Label values moved to structured metadata by a label-value cap",
            ),
            exporter_id: cx.id.to_string(),
            label_keys: config
                .labels
                .resource
                .iter()
                .chain(&config.labels.attributes)
                .cloned()
                .collect(),
        })
    }

    /// Whether `name=value` may be a label, remembering it when it may.
    fn admit_label(&self, name: &str, value: &str) -> bool {
        if self.label_values.lock().admit(name, value, Instant::now()) {
            return true;
        }
        let labels = LabelOverflowLabels {
            exporter: self.exporter_id.clone(),
            label: name.to_string(),
        };
        self.overflows.get_or_create(&labels).inc();
        false
    }

    /// Groups a batch's records into streams, entries sorted by time. The batch comes
    /// decoded (the exporter decodes it before the first attempt) and is read in place.
    fn streams(&self, batch: &Batch) -> Result<BTreeMap<String, Vec<Entry>>, ExportError> {
        let decoded;
        let resource_logs = match batch.payload() {
            Payload::Logs(logs) => logs.as_slice(),
            _ => {
                decoded = {
                    let mut copy = batch.clone();
                    copy.decode();
                    copy
                };
                match decoded.payload() {
                    Payload::Logs(logs) => logs.as_slice(),
                    _ => &[],
                }
            }
        };
        let mut keys = StreamKeys::default();
        let mut streams: Vec<Vec<Entry>> = Vec::new();
        for rl in resource_logs {
            let resource = rl
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let service = find(resource, "service.name")
                .map(|v| crate::model::any_value_text(Some(v)))
                .unwrap_or_else(|| "unknown_service".into());
            for record in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                let (stream, entry) = self.entry(resource, &service, record, &mut keys);
                match streams.get_mut(stream) {
                    Some(entries) => entries.push(entry),
                    None => streams.push(vec![entry]),
                }
            }
        }
        let mut by_labels: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for (labels, entries) in keys.labels.into_iter().zip(streams) {
            by_labels.entry(labels).or_default().extend(entries);
        }
        for entries in by_labels.values_mut() {
            entries.sort_by_key(|e| e.nanos);
        }
        Ok(by_labels)
    }

    /// A record's stream (an index into `keys`) and entry. The label values of a record
    /// are looked up once per batch and combination: the label-value guard is asked and
    /// the label string made only for the first record with them.
    fn entry(
        &self,
        resource: &[KeyValue],
        service: &str,
        record: &LogRecord,
        keys: &mut StreamKeys,
    ) -> (usize, Entry) {
        let labels = &self.config.labels;
        let mut values: Vec<(&str, Option<String>)> =
            Vec::with_capacity(2 + labels.resource.len() + labels.attributes.len());
        values.push(("service_name", Some(service.to_string())));
        values.push(("level", Some(level(record).to_string())));
        for key in &labels.resource {
            let value = find(resource, key).map(|v| crate::model::any_value_text(Some(v)));
            values.push((key, value));
        }
        for key in &labels.attributes {
            let value =
                find(&record.attributes, key).map(|v| crate::model::any_value_text(Some(v)));
            values.push((key, value));
        }
        let (stream, refused) = keys.stream(&values, |values| self.stream_labels(values));
        let mut metadata: Vec<(String, String)> = refused.to_vec();
        for kv in &record.attributes {
            if !self.label_keys.contains(kv.key.as_str()) {
                let value = crate::model::any_value_text(kv.value.as_ref());
                metadata.push((sanitize_label(&kv.key), value));
            }
        }
        if !record.trace_id.is_empty() {
            metadata.push(("trace_id".into(), hex(&record.trace_id)));
        }
        if !record.span_id.is_empty() {
            metadata.push(("span_id".into(), hex(&record.span_id)));
        }
        let nanos = [record.time_unix_nano, record.observed_time_unix_nano]
            .into_iter()
            .find(|t| *t > 0)
            .unwrap_or_else(now_nanos) as i64;
        let body = crate::model::any_value_text(record.body.as_ref());
        let (line, metadata) = self.line(body, metadata);
        (
            stream,
            Entry {
                nanos,
                line,
                metadata,
            },
        )
    }

    /// The label string of a combination of label values (name as configured, value if
    /// the record has it), and the labels the guard refused, which go to metadata.
    fn stream_labels(&self, values: &[(&str, Option<String>)]) -> (String, Vec<(String, String)>) {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        let mut refused = Vec::new();
        for (key, value) in values {
            let Some(value) = value else { continue };
            let name = match *key {
                "service_name" | "level" => key.to_string(),
                other => sanitize_label(other),
            };
            if self.admit_label(&name, value) {
                labels.insert(name, value.clone());
            } else {
                refused.push((name, value.clone()));
            }
        }
        (label_string(&labels), refused)
    }

    /// The line per `line_format`; without structured metadata the attributes join it.
    fn line(
        &self,
        body: String,
        metadata: Vec<(String, String)>,
    ) -> (String, Vec<(String, String)>) {
        let (inline, keep) = if self.config.structured_metadata {
            (Vec::new(), metadata)
        } else {
            (metadata, Vec::new())
        };
        let line = match self.config.line_format {
            LineFormat::Body if inline.is_empty() => body,
            LineFormat::Body | LineFormat::Logfmt => {
                let mut line = String::new();
                for (k, v) in std::iter::once(("body".to_string(), body)).chain(inline) {
                    let _ = write!(
                        line,
                        "{}{k}={}",
                        if line.is_empty() { "" } else { " " },
                        logfmt_value(&v)
                    );
                }
                line
            }
            LineFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("body".into(), body.into());
                for (k, v) in inline {
                    object.insert(k, v.into());
                }
                serde_json::Value::Object(object).to_string()
            }
        };
        (line, keep)
    }

    /// Splits streams into pushes bounded by bytes and entries.
    fn pushes(&self, streams: BTreeMap<String, Vec<Entry>>) -> Vec<Vec<(String, Vec<Entry>)>> {
        let mut pushes = Vec::new();
        let mut current: Vec<(String, Vec<Entry>)> = Vec::new();
        let (mut bytes, mut entries) = (0, 0);
        for (labels, stream) in streams {
            for entry in stream {
                if entries > 0
                    && (bytes + entry.size() > self.config.max_batch_bytes
                        || entries >= self.config.max_batch_entries)
                {
                    pushes.push(std::mem::take(&mut current));
                    (bytes, entries) = (0, 0);
                }
                bytes += entry.size();
                entries += 1;
                match current.last_mut() {
                    Some((last, list)) if *last == labels => list.push(entry),
                    _ => current.push((labels.clone(), vec![entry])),
                }
            }
        }
        if !current.is_empty() {
            pushes.push(current);
        }
        pushes
    }

    fn encode(&self, push: Vec<(String, Vec<Entry>)>) -> (Bytes, &'static str) {
        match self.config.encoding {
            LokiEncoding::Protobuf => {
                let request = push::PushRequest {
                    streams: push
                        .into_iter()
                        .map(|(labels, entries)| push::StreamAdapter {
                            labels,
                            entries: entries
                                .into_iter()
                                .map(|e| push::EntryAdapter {
                                    timestamp: Some(push::Timestamp {
                                        seconds: e.nanos.div_euclid(1_000_000_000),
                                        nanos: e.nanos.rem_euclid(1_000_000_000) as i32,
                                    }),
                                    line: e.line,
                                    structured_metadata: e
                                        .metadata
                                        .into_iter()
                                        .map(|(name, value)| push::LabelPairAdapter { name, value })
                                        .collect(),
                                })
                                .collect(),
                            hash: 0,
                        })
                        .collect(),
                };
                let compressed = snap::raw::Encoder::new()
                    .compress_vec(&request.encode_to_vec())
                    .expect("snappy compresses any buffer");
                (Bytes::from(compressed), "application/x-protobuf")
            }
            LokiEncoding::Json => {
                let streams: Vec<serde_json::Value> = push
                    .into_iter()
                    .map(|(labels, entries)| {
                        let values: Vec<serde_json::Value> = entries
                            .into_iter()
                            .map(|e| {
                                let metadata: serde_json::Map<String, serde_json::Value> = e.metadata.into_iter().map(|(k, v)| (k, v.into())).collect();
                                serde_json::json!([e.nanos.to_string(), e.line, metadata])
                            })
                            .collect();
                        serde_json::json!({ "stream": parse_label_string(&labels), "values": values })
                    })
                    .collect();
                (
                    Bytes::from(serde_json::json!({ "streams": streams }).to_string()),
                    "application/json",
                )
            }
        }
    }

    pub async fn export(&self, batch: &Batch) -> Result<Exported, ExportError> {
        let streams = self.streams(batch)?;
        for push in self.pushes(streams) {
            let (body, content_type) = self.encode(push);
            self.send(body, content_type, batch.metadata()).await?;
        }
        Ok(Exported::default())
    }

    async fn send(
        &self,
        body: Bytes,
        content_type: &'static str,
        metadata: Option<&crate::model::Metadata>,
    ) -> Result<(), ExportError> {
        let request = Request::post(&self.config.endpoint).header("content-type", content_type);
        self.core
            .post(request, body, metadata, &PlainHttp)
            .await
            .map(drop)
    }
}

/// `{a="x", b="y"}` with `"`, `\` and newlines escaped, as Loki parses stream labels.
pub fn label_string(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::from(v.as_str())))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// The inverse of [`label_string`] for values it produced.
fn parse_label_string(text: &str) -> serde_json::Map<String, serde_json::Value> {
    let inner = text.trim_start_matches('{').trim_end_matches('}');
    let mut out = serde_json::Map::new();
    let mut rest = inner;
    while let Some((name, after)) = rest.split_once('=') {
        let mut stream = serde_json::Deserializer::from_str(after).into_iter::<String>();
        let Some(Ok(value)) = stream.next() else {
            break;
        };
        out.insert(
            name.trim().trim_start_matches(',').trim().to_string(),
            value.into(),
        );
        rest = &after[stream.byte_offset()..];
    }
    out
}

fn logfmt_value(value: &str) -> String {
    if value.is_empty() || value.contains([' ', '"', '=', '\n', '\t']) {
        serde_json::Value::from(value).to_string()
    } else {
        value.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The values each label took recently (when each was last seen), at most `max` per label.
struct LabelGuard {
    values: HashMap<String, HashMap<String, Instant>>,
    max: usize,
    ttl: Duration,
    next_expiry: Instant,
}

impl LabelGuard {
    fn new(max: usize, ttl: Duration) -> Self {
        LabelGuard {
            values: HashMap::new(),
            max,
            ttl,
            next_expiry: Instant::now() + ttl / 10,
        }
    }

    /// Whether `name=value` may be a label: a known value, or a new one while the label
    /// has room (values idle for the ttl are forgotten every tenth of it).
    fn admit(&mut self, name: &str, value: &str, now: Instant) -> bool {
        if now >= self.next_expiry {
            let ttl = self.ttl;
            for values in self.values.values_mut() {
                values.retain(|_, last| now.duration_since(*last) < ttl);
            }
            self.next_expiry = now + ttl / 10;
        }
        if !self.values.contains_key(name) {
            self.values.insert(name.to_string(), HashMap::new());
        }
        let values = self.values.get_mut(name).expect("inserted above");
        if let Some(last) = values.get_mut(value) {
            *last = now;
            return true;
        }
        if values.len() < self.max {
            values.insert(value.to_string(), now);
            return true;
        }
        false
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_follow_loki_rules() {
        assert_eq!(sanitize_label("service.name"), "service_name");
        assert_eq!(sanitize_label("k8s.pod-name"), "k8s_pod_name");
        assert_eq!(sanitize_label("2xx"), "_2xx");
        assert_eq!(sanitize_label(""), "_");
    }

    #[test]
    fn label_values_are_capped_and_idle_ones_free_their_place() {
        let ttl = Duration::from_secs(60);
        let mut guard = LabelGuard::new(2, ttl);
        let start = Instant::now();
        assert!(guard.admit("pod", "a", start));
        assert!(guard.admit("pod", "b", start));
        assert!(!guard.admit("pod", "c", start), "past the cap");
        assert!(
            guard.admit("level", "info", start),
            "each label has its own cap"
        );
        let later = start + ttl / 2;
        assert!(
            guard.admit("pod", "a", later),
            "a known value stays a label"
        );
        assert!(
            !guard.admit("pod", "c", later),
            "b is idle, but not for the ttl yet"
        );
        let after_ttl = start + ttl + ttl / 10;
        assert!(guard.admit("pod", "c", after_ttl), "b expired, so c fits");
        assert!(!guard.admit("pod", "d", after_ttl), "a is still recent");
    }

    #[test]
    fn label_strings_escape_and_round_trip() {
        let labels = BTreeMap::from([
            ("a".to_string(), "x\"y\\z\n".to_string()),
            ("b".to_string(), "plain".to_string()),
        ]);
        let text = label_string(&labels);
        assert_eq!(text, r#"{a="x\"y\\z\n", b="plain"}"#);
        let parsed = parse_label_string(&text);
        assert_eq!(parsed["a"], "x\"y\\z\n");
        assert_eq!(parsed["b"], "plain");
    }

    fn config(extra: &str) -> LokiExporterConfig {
        serde_yaml::from_str(&format!(
            "endpoint: http://loki:3100/loki/api/v1/push\n{extra}"
        ))
        .unwrap()
    }

    fn built(config: &LokiExporterConfig) -> LokiExporter {
        let telemetry = crate::telemetry::Telemetry::new();
        let cx = BuildContext {
            id: "loki",
            pipeline: "logs",
            signal: crate::model::Signal::Logs,
            telemetry: &telemetry,
        };
        LokiExporter::build(config, &cx).unwrap()
    }

    #[test]
    fn basic_auth_and_tenant_become_sensitive_headers() {
        let exporter = built(&config(
            "tenant_id: ops\nheaders: {X-Scope-OrgID: other}\nbasic_auth: {username: u, password: p}",
        ));
        let headers = exporter.core.headers();
        assert_eq!(
            headers["x-scope-orgid"], "ops",
            "tenant_id wins over a header"
        );
        assert!(headers["x-scope-orgid"].is_sensitive());
        assert_eq!(headers["authorization"], "Basic dTpw");
        assert!(headers["authorization"].is_sensitive());
        assert_eq!(
            built(&config("bearer_token: t0k3n")).core.headers()["authorization"],
            "Bearer t0k3n"
        );
        assert!(
            config("bearer_token: a\nbasic_auth: {username: u, password: p}")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn pushes_are_bounded_by_entries_and_bytes() {
        let exporter = built(&config("max_batch_entries: 3\nmax_batch_bytes: 1024"));
        let entry = |n: i64, len: usize| Entry {
            nanos: n,
            line: "x".repeat(len),
            metadata: Vec::new(),
        };
        let streams = BTreeMap::from([
            (
                "{a=\"1\"}".to_string(),
                (0..5).map(|n| entry(n, 10)).collect::<Vec<_>>(),
            ),
            ("{a=\"2\"}".to_string(), vec![entry(0, 600), entry(1, 600)]),
        ]);
        let pushes = exporter.pushes(streams);
        let sizes: Vec<usize> = pushes
            .iter()
            .map(|p| p.iter().map(|(_, e)| e.len()).sum())
            .collect();
        assert_eq!(
            sizes,
            vec![3, 3, 1],
            "3 entries at most, and two 600-byte lines never share 1024 bytes"
        );
        assert!(pushes.iter().all(|p| p
            .iter()
            .map(|(_, e)| e.iter().map(Entry::size).sum::<usize>())
            .sum::<usize>()
            <= 1024));
    }

    #[test]
    fn logfmt_quotes_only_when_needed() {
        assert_eq!(logfmt_value("plain"), "plain");
        assert_eq!(logfmt_value("two words"), "\"two words\"");
    }
}
