//! The data that flows through a pipeline: OTLP export requests in a thin envelope.
//!
//! A [`Batch`] carries one signal's data either *encoded* (the serialized
//! `Export{Trace,Metrics,Logs}ServiceRequest` bytes exactly as a client sent them) or
//! *decoded* (the `opentelemetry-proto` prost types). Decoding costs about a hundred times
//! more than walking the protobuf wire format, so a batch stays encoded until a processor
//! asks for the messages ([`Batch::traces_mut`] and friends decode lazily, once).
//!
//! Two properties of the protobuf encoding make the encoded form useful:
//! * serialized export requests concatenate into a valid export request (a repeated
//!   field's records simply follow each other), so merging batches is appending byte
//!   chunks and encoding is one copy; and
//! * item counts (spans, metric data points, log records) come from the cheap wire walk in
//!   [`wire`]; the edge check in [`validate`] makes sure everything accepted decodes, so
//!   that one client's bad request can never cost another's data once they share a batch.

pub mod schema;
pub mod validate;
pub mod wire;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{metric, ResourceMetrics};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The gRPC method path of the OTLP export service for this signal.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// The default OTLP/HTTP path for this signal.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// What one item of this signal is called, for messages and `partial_success`.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
        }
    }

    pub fn parse(text: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch's data: still encoded, or decoded into prost messages.
#[derive(Clone, Debug)]
pub enum Payload {
    /// Serialized export requests of the batch's signal; their concatenation is one request.
    Encoded(Vec<Bytes>),
    Traces(Vec<ResourceSpans>),
    Metrics(Vec<ResourceMetrics>),
    Logs(Vec<ResourceLogs>),
}

/// Memory a decoded payload takes per byte of its encoding, as queues count it: prost's
/// strings, vectors and options against the wire format's tags and lengths (measured
/// with `cargo test --lib -- --ignored decoded_size`: 2.4 for spans with string
/// attributes, 4.2 for metric data points with two attributes, 3.6 for log records with
/// a line of text and three attributes).
pub const DECODED_BYTES_PER_ENCODED_BYTE: usize = 4;

/// What a decoded item takes beyond [`DECODED_BYTES_PER_ENCODED_BYTE`]: its struct, which
/// for items with little content (a bare data point, a log record of a few bytes) is most
/// of it (measured: 23 and 33 bytes a byte of encoding for such items).
pub const DECODED_BYTES_PER_ITEM: usize = 64;

/// One unit of work in a pipeline: a signal, its data and its item count.
#[derive(Clone, Debug)]
pub struct Batch {
    signal: Signal,
    payload: Payload,
    items: usize,
    /// Items lost because their chunk did not decode, not yet counted as dropped.
    lost: usize,
    /// With a persistent queue: the sequence number of the oldest log record this
    /// batch holds items of, which the log keeps until the batch has left.
    record: Option<u64>,
    /// What the request that brought the data said about itself (see [`Metadata`]).
    metadata: Option<Metadata>,
    /// The address of the client that sent the data (the OTLP receivers set it), for
    /// processors that tell clients apart by it (`k8s_attributes`' `connection`).
    client: Option<std::net::IpAddr>,
}

/// Request metadata kept with the data (a receiver's `include_metadata`): header names,
/// lowercase, and their values, sorted by name. A batch carries it through the
/// processors (`batch` keeps batches of different values apart by `metadata_keys`) to
/// the exporters, whose `headers_setter` can send a value on (a tenant header).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Metadata(std::sync::Arc<[(String, String)]>);

impl Metadata {
    /// From name and value pairs (names lowercased; the first of a repeated name wins).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Metadata {
        let mut pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, first| later.0 == first.0);
        Metadata(pairs.into())
    }

    /// The value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(&name))
            .ok()
            .map(|at| self.0[at].1.as_str())
    }

    /// Only the entries named in `names`.
    pub fn only(&self, names: &[String]) -> Metadata {
        Metadata::from_pairs(
            names
                .iter()
                .filter_map(|n| Some((n.clone(), self.get(n)?.to_string()))),
        )
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Items refused from an otherwise accepted request, reported to the client as OTLP
/// `partial_success`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub signal: Signal,
    pub count: usize,
    /// The `reason` label the refused items are counted under (the first reason found).
    pub reason: &'static str,
    pub message: String,
}

impl Rejected {
    pub fn new(signal: Signal, count: usize, reason: &'static str, why: &str) -> Rejected {
        Rejected {
            signal,
            count,
            reason,
            message: format!("{count} {} rejected: {why}", signal.item_name()),
        }
    }

    /// Both refusals as one: counts add up, the first reason and message stay in front.
    pub fn and(self, other: Option<Rejected>) -> Rejected {
        match other {
            None => self,
            Some(other) => Rejected {
                count: self.count + other.count,
                message: format!("{}; {}", self.message, other.message),
                ..self
            },
        }
    }
}

/// A request as the edge took it: a batch of the items that decode, and what was refused.
#[derive(Debug)]
pub struct Admitted {
    pub batch: Batch,
    pub rejected: Option<Rejected>,
}

/// Why no item of a request was accepted.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// The request's outer structure is broken.
    #[error("malformed protobuf: {0}")]
    Framing(#[from] wire::WireError),
    /// Every item was refused.
    #[error("{}", .0.message)]
    AllRefused(Rejected),
    /// The body does not parse in its format (OTLP/JSON).
    #[error("{0}")]
    Syntax(String),
}

impl Invalid {
    /// The `reason` label the request is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Framing(_) | Invalid::Syntax(_) => "malformed",
            Invalid::AllRefused(r) => r.reason,
        }
    }
}

impl Batch {
    /// Takes a serialized export request from a client: checks it down to every field
    /// ([`validate`]), and keeps the items that decode, copying the request without the
    /// others only when some were refused.
    pub fn from_request(signal: Signal, bytes: Bytes) -> Result<Admitted, Invalid> {
        let checked = validate::check_request(signal, &bytes)?;
        let rejected = checked
            .defect
            .map(|d| Rejected::new(signal, checked.refused, d.reason(), d.describe()));
        let bytes = match rejected {
            Some(rejected) if checked.accepted == 0 => return Err(Invalid::AllRefused(rejected)),
            _ if checked.needs_rewrite() => {
                Bytes::from(validate::without_refused(signal, &bytes, &checked))
            }
            _ => bytes,
        };
        Ok(Admitted {
            batch: Batch::from_encoded_parts(signal, vec![bytes], checked.accepted),
            rejected,
        })
    }

    /// Wraps export requests sieve encoded itself, whose item count it knows.
    pub fn from_encoded_parts(signal: Signal, parts: Vec<Bytes>, items: usize) -> Batch {
        Batch {
            signal,
            payload: Payload::Encoded(parts),
            items,
            lost: 0,
            record: None,
            metadata: None,
            client: None,
        }
    }

    pub fn from_traces(resource_spans: Vec<ResourceSpans>) -> Batch {
        let items = count_spans(&resource_spans);
        Batch {
            signal: Signal::Traces,
            payload: Payload::Traces(resource_spans),
            items,
            lost: 0,
            record: None,
            metadata: None,
            client: None,
        }
    }

    pub fn from_metrics(resource_metrics: Vec<ResourceMetrics>) -> Batch {
        let items = count_data_points(&resource_metrics);
        Batch {
            signal: Signal::Metrics,
            payload: Payload::Metrics(resource_metrics),
            items,
            lost: 0,
            record: None,
            metadata: None,
            client: None,
        }
    }

    pub fn from_logs(resource_logs: Vec<ResourceLogs>) -> Batch {
        let items = count_log_records(&resource_logs);
        Batch {
            signal: Signal::Logs,
            payload: Payload::Logs(resource_logs),
            items,
            lost: 0,
            record: None,
            metadata: None,
            client: None,
        }
    }

    /// The request metadata this batch carries, if its receiver kept any.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_ref()
    }

    pub fn set_metadata(&mut self, metadata: Option<Metadata>) {
        self.metadata = metadata;
    }

    /// The address of the client that sent this data, when one client sent all of it.
    pub fn client(&self) -> Option<std::net::IpAddr> {
        self.client
    }

    pub fn set_client(&mut self, client: Option<std::net::IpAddr>) {
        self.client = client;
    }

    /// The oldest log record this batch holds items of (see [`crate::storage`]).
    pub fn record(&self) -> Option<u64> {
        self.record
    }

    /// Marks the batch as holding items of log record `seq` and later ones.
    pub fn set_record(&mut self, seq: Option<u64>) {
        self.record = seq;
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Spans, metric data points or log records in this batch.
    pub fn items(&self) -> usize {
        self.items
    }

    /// The serialized requests of an encoded batch, to rewrite in place (its items
    /// must stay the same); `None` when decoded.
    pub fn encoded_parts_mut(&mut self) -> Option<&mut Vec<Bytes>> {
        match &mut self.payload {
            Payload::Encoded(parts) => Some(parts),
            _ => None,
        }
    }

    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    pub fn is_encoded(&self) -> bool {
        matches!(self.payload, Payload::Encoded(_))
    }

    /// The resource spans, decoding them first if the batch is still encoded.
    pub fn traces_mut(&mut self) -> &mut Vec<ResourceSpans> {
        self.decode();
        match &mut self.payload {
            Payload::Traces(v) => v,
            _ => unreachable!("decode() leaves a traces batch decoded as traces"),
        }
    }

    /// The resource metrics, decoding them first if the batch is still encoded.
    pub fn metrics_mut(&mut self) -> &mut Vec<ResourceMetrics> {
        self.decode();
        match &mut self.payload {
            Payload::Metrics(v) => v,
            _ => unreachable!("decode() leaves a metrics batch decoded as metrics"),
        }
    }

    /// The resource logs, decoding them first if the batch is still encoded.
    pub fn logs_mut(&mut self) -> &mut Vec<ResourceLogs> {
        self.decode();
        match &mut self.payload {
            Payload::Logs(v) => v,
            _ => unreachable!("decode() leaves a logs batch decoded as logs"),
        }
    }

    /// Items lost to chunks that did not decode, not yet taken.
    pub fn lost(&self) -> usize {
        self.lost
    }

    /// Items lost to chunks that did not decode since the last call; whoever holds the
    /// batch counts them as dropped (`reason="undecodable"`).
    pub fn take_lost(&mut self) -> usize {
        std::mem::take(&mut self.lost)
    }

    /// Recounts items after a processor changed a decoded payload.
    pub fn recount(&mut self) {
        self.items = match &self.payload {
            Payload::Encoded(chunks) => chunks
                .iter()
                .map(|c| wire::count_items(self.signal, c).unwrap_or(0))
                .sum(),
            Payload::Traces(v) => count_spans(v),
            Payload::Metrics(v) => count_data_points(v),
            Payload::Logs(v) => count_log_records(v),
        };
    }

    /// Decodes an encoded payload in place; a decoded one is left as it is.
    ///
    /// The edge check makes every accepted chunk decodable, so a failure here is a
    /// defect; still, each chunk (one client's request, or sieve's own encoding) decodes
    /// on its own, and one that fails loses only its own items, which are logged and
    /// left for [`Batch::take_lost`] to count. Its neighbours in the batch go on.
    pub fn decode(&mut self) {
        let Payload::Encoded(chunks) = &self.payload else {
            return;
        };
        let (payload, decoded) = match self.signal {
            Signal::Traces => {
                let all = decode_chunks(chunks, |c| {
                    ExportTraceServiceRequest::decode(c).map(|r| r.resource_spans)
                });
                let count = count_spans(&all);
                (Payload::Traces(all), count)
            }
            Signal::Metrics => {
                let all = decode_chunks(chunks, |c| {
                    ExportMetricsServiceRequest::decode(c).map(|r| r.resource_metrics)
                });
                let count = count_data_points(&all);
                (Payload::Metrics(all), count)
            }
            Signal::Logs => {
                let all = decode_chunks(chunks, |c| {
                    ExportLogsServiceRequest::decode(c).map(|r| r.resource_logs)
                });
                let count = count_log_records(&all);
                (Payload::Logs(all), count)
            }
        };
        self.payload = payload;
        self.lost += self.items.saturating_sub(decoded);
        self.items = decoded;
    }

    /// The memory a queue counts for this batch: its bytes when encoded; when decoded, an
    /// estimate from its encoded size and its items ([`DECODED_BYTES_PER_ENCODED_BYTE`],
    /// [`DECODED_BYTES_PER_ITEM`]).
    pub fn held_bytes(&self) -> usize {
        match &self.payload {
            Payload::Encoded(chunks) => chunks.iter().map(Bytes::len).sum(),
            _ => {
                self.encoded_len() * DECODED_BYTES_PER_ENCODED_BYTE
                    + self.items * DECODED_BYTES_PER_ITEM
            }
        }
    }

    /// Encodes a decoded payload, so that a batch waiting in a queue is held in its
    /// smaller form (for exporters that send the encoding anyway).
    pub fn encode_in_place(&mut self) {
        if !self.is_encoded() {
            self.payload = Payload::Encoded(vec![self.to_bytes()]);
        }
    }

    /// The size in bytes of the serialized export request.
    pub fn encoded_len(&self) -> usize {
        match &self.payload {
            Payload::Encoded(chunks) => chunks.iter().map(Bytes::len).sum(),
            Payload::Traces(v) => v
                .iter()
                .map(|r| prost::encoding::message::encoded_len(1, r))
                .sum(),
            Payload::Metrics(v) => v
                .iter()
                .map(|r| prost::encoding::message::encoded_len(1, r))
                .sum(),
            Payload::Logs(v) => v
                .iter()
                .map(|r| prost::encoding::message::encoded_len(1, r))
                .sum(),
        }
    }

    /// Appends the serialized export request to `buf` (a copy of the chunks when encoded).
    pub fn encode_into(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        match &self.payload {
            Payload::Encoded(chunks) => chunks.iter().for_each(|c| buf.put_slice(c)),
            Payload::Traces(v) => v
                .iter()
                .for_each(|r| prost::encoding::message::encode(1, r, buf)),
            Payload::Metrics(v) => v
                .iter()
                .for_each(|r| prost::encoding::message::encode(1, r, buf)),
            Payload::Logs(v) => v
                .iter()
                .for_each(|r| prost::encoding::message::encode(1, r, buf)),
        }
    }

    /// The serialized export request; free when the batch is a single encoded chunk.
    pub fn to_bytes(&self) -> Bytes {
        if let Payload::Encoded(chunks) = &self.payload {
            if chunks.len() == 1 {
                return chunks[0].clone();
            }
        }
        let mut buf = BytesMut::new();
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Appends another batch of the same signal. Two encoded batches merge without
    /// decoding; otherwise both are decoded.
    pub fn merge(&mut self, mut other: Batch) {
        debug_assert_eq!(
            self.signal, other.signal,
            "batches of different signals never merge"
        );
        self.record = oldest(self.record, other.record);
        if self.metadata != other.metadata {
            // the `batch` processor never merges different metadata; anything else that
            // does cannot say whose the result is
            self.metadata = None;
        }
        if self.client != other.client {
            self.client = None;
        }
        if let (Payload::Encoded(a), Payload::Encoded(b)) = (&mut self.payload, &mut other.payload)
        {
            a.append(b);
            self.items += other.items;
            self.lost += other.lost;
            return;
        }
        self.decode();
        other.decode();
        self.items += other.items;
        self.lost += other.lost;
        match (&mut self.payload, other.payload) {
            (Payload::Traces(a), Payload::Traces(b)) => a.extend(b),
            (Payload::Metrics(a), Payload::Metrics(b)) => a.extend(b),
            (Payload::Logs(a), Payload::Logs(b)) => a.extend(b),
            _ => unreachable!("both batches are decoded as the same signal"),
        }
    }

    /// Divides the batch among `shards` by resource, so that every resource's data
    /// reaches the same shard in every batch (see [`wire::shard_by_resource`]); most
    /// batches hold one resource and go whole. Decoded traces and logs, which no caller
    /// shards, go whole to shard 0.
    pub fn shard_by_resource(self, shards: usize) -> Vec<(usize, Batch)> {
        let shard_of = |resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>| {
            let encoded = resource.map(Message::encode_to_vec).unwrap_or_default();
            (wire::resource_hash(&encoded) % shards as u64) as usize
        };
        match &self.payload {
            Payload::Encoded(chunks) => {
                match wire::shard_by_resource(self.signal, chunks, shards) {
                    Some(wire::Shards::Several(parts)) => parts
                        .into_iter()
                        .map(|(shard, parts, items)| {
                            let mut part = Batch::from_encoded_parts(self.signal, parts, items);
                            part.record = self.record;
                            part.metadata = self.metadata.clone();
                            part.client = self.client;
                            (shard, part)
                        })
                        .collect(),
                    Some(wire::Shards::One(shard)) => vec![(shard, self)],
                    None => vec![(0, self)],
                }
            }
            Payload::Metrics(resources) => {
                let first = resources
                    .first()
                    .map_or(0, |r| shard_of(r.resource.as_ref()));
                if resources
                    .iter()
                    .all(|r| shard_of(r.resource.as_ref()) == first)
                {
                    return vec![(first, self)];
                }
                let Payload::Metrics(resources) = self.payload else {
                    unreachable!("matched above")
                };
                let mut by_shard: Vec<(usize, Vec<ResourceMetrics>)> = Vec::new();
                for resource in resources {
                    let shard = shard_of(resource.resource.as_ref());
                    match by_shard.iter_mut().find(|(s, _)| *s == shard) {
                        Some((_, list)) => list.push(resource),
                        None => by_shard.push((shard, vec![resource])),
                    }
                }
                by_shard
                    .into_iter()
                    .map(|(shard, list)| {
                        let mut part = Batch::from_metrics(list);
                        part.record = self.record;
                        part.metadata = self.metadata.clone();
                        part.client = self.client;
                        (shard, part)
                    })
                    .collect()
            }
            Payload::Traces(_) | Payload::Logs(_) => vec![(0, self)],
        }
    }

    /// Splits off a batch with at most `max_items` items from the front, leaving the rest.
    /// Encoded batches are cut at resource boundaries without copying; a resource that
    /// must itself be cut is decoded first.
    pub fn split_off_front(&mut self, max_items: usize) -> Batch {
        let (record, metadata) = (self.record, self.metadata.clone());
        let mut front = self.split_front(max_items);
        front.record = record;
        front.metadata = metadata;
        front.client = self.client;
        front
    }

    fn split_front(&mut self, max_items: usize) -> Batch {
        assert!(max_items > 0, "a batch is never split into empty parts");
        if self.items <= max_items {
            let empty = Batch::from_encoded_parts(self.signal, Vec::new(), 0);
            return std::mem::replace(self, empty);
        }
        if let Payload::Encoded(chunks) = &self.payload {
            if let Some(split) = wire::split_records(self.signal, chunks, max_items) {
                let front_items = self.items - split.back_items;
                self.payload = Payload::Encoded(split.back);
                self.items = split.back_items;
                return Batch::from_encoded_parts(self.signal, split.front, front_items);
            }
        }
        self.decode();
        let front = match &mut self.payload {
            Payload::Traces(v) => Batch::from_traces(split_traces(v, max_items)),
            Payload::Metrics(v) => Batch::from_metrics(split_metrics(v, max_items)),
            Payload::Logs(v) => Batch::from_logs(split_logs(v, max_items)),
            Payload::Encoded(_) => unreachable!("decoded above"),
        };
        self.items -= front.items;
        front
    }
}

/// Decodes each chunk on its own; a chunk that fails is logged and left out.
fn decode_chunks<T>(
    chunks: &[Bytes],
    decode: impl Fn(&[u8]) -> Result<Vec<T>, prost::DecodeError>,
) -> Vec<T> {
    let mut all = Vec::new();
    for chunk in chunks {
        match decode(chunk) {
            Ok(resources) => all.extend(resources),
            Err(error) => tracing::error!(
                %error,
                bytes = chunk.len(),
                "dropping a request that passed the edge check but does not decode (a defect: please report it)"
            ),
        }
    }
    all
}

fn count_spans(v: &[ResourceSpans]) -> usize {
    v.iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fn count_log_records(v: &[ResourceLogs]) -> usize {
    v.iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

fn count_data_points(v: &[ResourceMetrics]) -> usize {
    v.iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| data_point_count(m.data.as_ref()))
        .sum()
}

/// Data points in one metric, as the collector counts them.
pub fn data_point_count(data: Option<&metric::Data>) -> usize {
    match data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Moves up to `max` spans from the front of `v` into a new vector, keeping each span's
/// resource and scope.
fn split_traces(v: &mut Vec<ResourceSpans>, max: usize) -> Vec<ResourceSpans> {
    let mut out = Vec::new();
    let mut budget = max;
    while budget > 0 && !v.is_empty() {
        let rs = &mut v[0];
        let mut taken = ResourceSpans {
            resource: rs.resource.clone(),
            scope_spans: Vec::new(),
            schema_url: rs.schema_url.clone(),
        };
        while budget > 0 && !rs.scope_spans.is_empty() {
            let ss = &mut rs.scope_spans[0];
            let n = ss.spans.len().min(budget);
            let mut part = ss.clone_shell();
            part.spans = ss.spans.drain(..n).collect();
            budget -= n;
            taken.scope_spans.push(part);
            if ss.spans.is_empty() {
                rs.scope_spans.remove(0);
            }
        }
        out.push(taken);
        if v[0].scope_spans.is_empty() {
            v.remove(0);
        }
    }
    out
}

fn split_logs(v: &mut Vec<ResourceLogs>, max: usize) -> Vec<ResourceLogs> {
    let mut out = Vec::new();
    let mut budget = max;
    while budget > 0 && !v.is_empty() {
        let rl = &mut v[0];
        let mut taken = ResourceLogs {
            resource: rl.resource.clone(),
            scope_logs: Vec::new(),
            schema_url: rl.schema_url.clone(),
        };
        while budget > 0 && !rl.scope_logs.is_empty() {
            let sl = &mut rl.scope_logs[0];
            let n = sl.log_records.len().min(budget);
            let mut part = sl.clone_shell();
            part.log_records = sl.log_records.drain(..n).collect();
            budget -= n;
            taken.scope_logs.push(part);
            if sl.log_records.is_empty() {
                rl.scope_logs.remove(0);
            }
        }
        out.push(taken);
        if v[0].scope_logs.is_empty() {
            v.remove(0);
        }
    }
    out
}

/// Splits metrics at metric granularity: a metric's data points stay together unless the
/// metric alone exceeds the budget, in which case its points are divided.
fn split_metrics(v: &mut Vec<ResourceMetrics>, max: usize) -> Vec<ResourceMetrics> {
    let mut out = Vec::new();
    let mut budget = max;
    while budget > 0 && !v.is_empty() {
        let rm = &mut v[0];
        let mut taken = ResourceMetrics {
            resource: rm.resource.clone(),
            scope_metrics: Vec::new(),
            schema_url: rm.schema_url.clone(),
        };
        while budget > 0 && !rm.scope_metrics.is_empty() {
            let sm = &mut rm.scope_metrics[0];
            let mut part = sm.clone_shell();
            while budget > 0 && !sm.metrics.is_empty() {
                let points = data_point_count(sm.metrics[0].data.as_ref());
                if points <= budget {
                    budget -= points;
                    part.metrics.push(sm.metrics.remove(0));
                } else {
                    part.metrics.push(take_points(&mut sm.metrics[0], budget));
                    budget = 0;
                }
            }
            taken.scope_metrics.push(part);
            if sm.metrics.is_empty() {
                rm.scope_metrics.remove(0);
            }
        }
        out.push(taken);
        if v[0].scope_metrics.is_empty() {
            v.remove(0);
        }
    }
    out
}

/// A copy of `metric` holding its first `n` data points, which are removed from `metric`.
fn take_points(
    metric: &mut opentelemetry_proto::tonic::metrics::v1::Metric,
    n: usize,
) -> opentelemetry_proto::tonic::metrics::v1::Metric {
    use metric::Data;
    let data = match metric.data.as_mut() {
        Some(Data::Gauge(g)) => {
            let mut c = g.clone();
            c.data_points = g.data_points.drain(..n).collect();
            Some(Data::Gauge(c))
        }
        Some(Data::Sum(s)) => Some(Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
            data_points: s.data_points.drain(..n).collect(),
            aggregation_temporality: s.aggregation_temporality,
            is_monotonic: s.is_monotonic,
        })),
        Some(Data::Histogram(h)) => Some(Data::Histogram(
            opentelemetry_proto::tonic::metrics::v1::Histogram {
                data_points: h.data_points.drain(..n).collect(),
                aggregation_temporality: h.aggregation_temporality,
            },
        )),
        Some(Data::ExponentialHistogram(h)) => Some(Data::ExponentialHistogram(
            opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                data_points: h.data_points.drain(..n).collect(),
                aggregation_temporality: h.aggregation_temporality,
            },
        )),
        Some(Data::Summary(s)) => Some(Data::Summary(
            opentelemetry_proto::tonic::metrics::v1::Summary {
                data_points: s.data_points.drain(..n).collect(),
            },
        )),
        None => None,
    };
    opentelemetry_proto::tonic::metrics::v1::Metric {
        name: metric.name.clone(),
        description: metric.description.clone(),
        unit: metric.unit.clone(),
        metadata: metric.metadata.clone(),
        data,
    }
}

/// A scope container without its items, to receive a share of them when splitting.
trait CloneShell {
    fn clone_shell(&self) -> Self;
}

impl CloneShell for opentelemetry_proto::tonic::trace::v1::ScopeSpans {
    fn clone_shell(&self) -> Self {
        Self {
            scope: self.scope.clone(),
            spans: Vec::new(),
            schema_url: self.schema_url.clone(),
        }
    }
}

impl CloneShell for opentelemetry_proto::tonic::logs::v1::ScopeLogs {
    fn clone_shell(&self) -> Self {
        Self {
            scope: self.scope.clone(),
            log_records: Vec::new(),
            schema_url: self.schema_url.clone(),
        }
    }
}

impl CloneShell for opentelemetry_proto::tonic::metrics::v1::ScopeMetrics {
    fn clone_shell(&self) -> Self {
        Self {
            scope: self.scope.clone(),
            metrics: Vec::new(),
            schema_url: self.schema_url.clone(),
        }
    }
}

/// A log severity's number from its OpenTelemetry name (`TRACE`, `INFO`, `WARN2`, ...
/// `FATAL4`, in any case; `UNSPECIFIED` is 0), as the log data model numbers them.
pub fn severity_number(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "UNSPECIFIED" {
        return Some(0);
    }
    let (base, step) = match upper.find(|c: char| c.is_ascii_digit()) {
        Some(at) => (
            &upper[..at],
            upper[at..]
                .parse::<i32>()
                .ok()
                .filter(|s| (2..=4).contains(s))?,
        ),
        None => (upper.as_str(), 1),
    };
    let first = match base {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => return None,
    };
    Some(first + step - 1)
}

/// An attribute value as text: strings as they are, bytes in base64, arrays as `[a,b]`,
/// maps as `{k=v}`. Used wherever OTLP values become labels.
pub fn any_value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(Value::ArrayValue(a)) => format!(
            "[{}]",
            a.values
                .iter()
                .map(|v| any_value_text(Some(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(Value::KvlistValue(kv)) => {
            format!(
                "{{{}}}",
                kv.values
                    .iter()
                    .map(|p| format!("{}={}", p.key, any_value_text(p.value.as_ref())))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        // a reference into a profiles string table, which no other signal carries
        Some(Value::StringValueStrindex(index)) => index.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// The older of two optional log positions.
pub fn oldest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
