//! Redaction on the encoded form: the export request is walked as protobuf wire bytes
//! (the OTLP messages of opentelemetry-proto v1, as [`crate::model::schema`] lists them),
//! every string the decoded path would look at is scanned where it lies, and only the
//! records that change are written again. Everything else — ids, timestamps, numbers,
//! unchanged attributes, whole unchanged spans — is copied as bytes, and nothing is
//! decoded into prost messages.
//!
//! The walk copies nothing as it goes. It notes each change as an edit — a byte range of
//! the request and what replaces it (a string record written anew, nothing for a removed
//! attribute, `summary` attributes inserted at an item's end) — and when a message's
//! content changes size, one more edit for that message's header (its key and length),
//! placed before the edits inside it. At the end the request is copied once with the
//! edits made in order: every unchanged byte is copied exactly once whatever its depth,
//! and a request with no edit is not copied at all.
//!
//! A string is profiled for the prefilter as bytes and checked to be UTF-8 only when some
//! rule can match it; one no rule can match is passed on as it came (the edge check has
//! already refused requests whose strings are not UTF-8). An attribute key whose rule is
//! remembered is looked up by its bytes, unchecked.
//!
//! The rules are the decoded path's ([`Redactor::redact_batch`]), item by item: the same
//! tally per resource, scope, span, event, link, log record, data point and exemplar, the
//! same `summary` attributes (appended at the end of the item, which decodes to the
//! same list), the same counts. A differential property test holds the two paths to
//! the same output. What the decoded path would merge and this walk cannot see whole —
//! a singular sub-message or a oneof sent twice, which protobuf allows but no SDK
//! writes — makes the walk give up on that request ([`Fallback`]), and the caller
//! redacts it decoded instead.

use super::{Action, KeyRule, Redactor, Tally};
use crate::model::wire::{Fields, Value};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;
use std::ops::Range;

/// The walk met something only the decoded path handles exactly.
#[derive(Debug)]
pub struct Fallback;

impl From<crate::model::wire::WireError> for Fallback {
    fn from(_: crate::model::wire::WireError) -> Fallback {
        Fallback
    }
}

impl From<super::NotUtf8> for Fallback {
    fn from(_: super::NotUtf8) -> Fallback {
        Fallback
    }
}

/// Where a field leads: a message that holds items further down, or an item (a message
/// with its own attributes, tallied and summarised on its own).
enum Node {
    Container(&'static [Child]),
    Item(Item),
}

/// A sub-message field of a message, and whether protobuf merges repeats of it.
struct Child {
    number: u32,
    node: &'static Node,
    singular: bool,
}

struct Item {
    attributes: u32,
    /// A name scanned when `redact_names` is on (spans, span events).
    name: Option<u32>,
    /// A log body.
    body: Option<u32>,
    children: &'static [Child],
}

const fn many(number: u32, node: &'static Node) -> Child {
    Child {
        number,
        node,
        singular: false,
    }
}

const fn one(number: u32, node: &'static Node) -> Child {
    Child {
        number,
        node,
        singular: true,
    }
}

const fn item(attributes: u32, children: &'static [Child]) -> Node {
    Node::Item(Item {
        attributes,
        name: None,
        body: None,
        children,
    })
}

static RESOURCE: Node = item(1, &[]);
static SCOPE: Node = item(3, &[]);

static TRACES: Node = Node::Container(&[many(1, &RESOURCE_SPANS)]);
static RESOURCE_SPANS: Node = Node::Container(&[one(1, &RESOURCE), many(2, &SCOPE_SPANS)]);
static SCOPE_SPANS: Node = Node::Container(&[one(1, &SCOPE), many(2, &SPAN)]);
static SPAN: Node = Node::Item(Item {
    attributes: 9,
    name: Some(5),
    body: None,
    children: &[many(11, &SPAN_EVENT), many(13, &SPAN_LINK)],
});
static SPAN_EVENT: Node = Node::Item(Item {
    attributes: 3,
    name: Some(2),
    body: None,
    children: &[],
});
static SPAN_LINK: Node = item(4, &[]);

static LOGS: Node = Node::Container(&[many(1, &RESOURCE_LOGS)]);
static RESOURCE_LOGS: Node = Node::Container(&[one(1, &RESOURCE), many(2, &SCOPE_LOGS)]);
static SCOPE_LOGS: Node = Node::Container(&[one(1, &SCOPE), many(2, &LOG_RECORD)]);
static LOG_RECORD: Node = Node::Item(Item {
    attributes: 6,
    name: None,
    body: Some(5),
    children: &[],
});

static METRICS: Node = Node::Container(&[many(1, &RESOURCE_METRICS)]);
static RESOURCE_METRICS: Node = Node::Container(&[one(1, &RESOURCE), many(2, &SCOPE_METRICS)]);
static SCOPE_METRICS: Node = Node::Container(&[one(1, &SCOPE), many(2, &METRIC)]);
/// The data oneof: at most one of them may appear (see [`Walk::container`]).
static METRIC: Node = Node::Container(&[
    one(5, &NUMBER_POINTS),
    one(7, &NUMBER_POINTS),
    one(9, &HISTOGRAM_POINTS),
    one(10, &EXPONENTIAL_HISTOGRAM_POINTS),
    one(11, &SUMMARY_POINTS),
]);
static NUMBER_POINTS: Node = Node::Container(&[many(1, &NUMBER_DATA_POINT)]);
static HISTOGRAM_POINTS: Node = Node::Container(&[many(1, &HISTOGRAM_DATA_POINT)]);
static EXPONENTIAL_HISTOGRAM_POINTS: Node =
    Node::Container(&[many(1, &EXPONENTIAL_HISTOGRAM_DATA_POINT)]);
static SUMMARY_POINTS: Node = Node::Container(&[many(1, &SUMMARY_DATA_POINT)]);
static NUMBER_DATA_POINT: Node = item(7, &[many(5, &EXEMPLAR)]);
static HISTOGRAM_DATA_POINT: Node = item(9, &[many(8, &EXEMPLAR)]);
static EXPONENTIAL_HISTOGRAM_DATA_POINT: Node = item(1, &[many(11, &EXEMPLAR)]);
static SUMMARY_DATA_POINT: Node = item(7, &[]);
static EXEMPLAR: Node = item(7, &[]);

/// The tree of an export request of `signal`.
fn request(signal: crate::model::Signal) -> &'static Node {
    match signal {
        crate::model::Signal::Traces => &TRACES,
        crate::model::Signal::Logs => &LOGS,
        crate::model::Signal::Metrics => &METRICS,
    }
}

/// An `AnyValue`'s field: its number, its content and its whole record.
type OneofField = (u32, Range<usize>, Range<usize>);

/// How many bytes a message's content grew by (negative: shrank) through the edits in it.
type Delta = isize;

/// What [`Walk::array`] does with each value: its growth, or `None` when the attribute
/// holding the array must go.
type ValueWalk<'r, 'b> =
    fn(&mut Walk<'r, 'b>, Range<usize>, &mut Tally) -> Result<Option<Delta>, Fallback>;

/// One change to the request: the bytes at `source` give way to `arena[replacement]`.
struct Edit {
    source: Range<usize>,
    replacement: Range<usize>,
}

/// One request's walk.
struct Walk<'r, 'b> {
    redactor: &'r Redactor,
    buf: &'b [u8],
    buffers: Buffers,
}

/// What a walk writes besides its output: its edits, in the order of the request's
/// bytes, and the bytes they put in. A redactor keeps them from one request to the next
/// (see [`Buffers::keep`]), so a walk does not grow them anew.
#[derive(Default)]
pub(super) struct Buffers {
    edits: Vec<Edit>,
    arena: Vec<u8>,
    /// Where a string is redacted to on its way into `arena`.
    scratch: String,
}

/// The most bytes of buffers a redactor keeps between requests; a request that needed
/// more gives them back.
const BUFFERS_KEPT_BYTES: usize = 1 << 20;

impl Buffers {
    /// These buffers emptied, if they are small enough to keep.
    fn keep(mut self) -> Buffers {
        let bytes = self.edits.capacity() * std::mem::size_of::<Edit>()
            + self.arena.capacity()
            + self.scratch.capacity();
        if bytes > BUFFERS_KEPT_BYTES {
            return Buffers::default();
        }
        self.edits.clear();
        self.arena.clear();
        self.scratch.clear();
        self
    }
}

fn put_delimited(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    encode_varint(u64::from(number) << 3 | 2, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The size of a length-delimited record of field `number` holding `len` bytes.
fn delimited_len(number: u32, len: usize) -> usize {
    encoded_len_varint(u64::from(number) << 3 | 2) + encoded_len_varint(len as u64) + len
}

/// Appends a `KeyValue` record of field `number`: `key` and an `AnyValue` whose content
/// is `value`.
fn put_attribute(out: &mut Vec<u8>, number: u32, key: &str, value: &[u8]) {
    encode_varint(u64::from(number) << 3 | 2, out);
    let content = delimited_len(1, key.len()) + delimited_len(2, value.len());
    encode_varint(content as u64, out);
    put_delimited(out, 1, key.as_bytes());
    put_delimited(out, 2, value);
}

/// Appends the attributes `summary` adds to an item, as records of its attributes field
/// `number`: the bytes prost gives [`Redactor::summary`]'s, without building them.
fn put_summary(out: &mut Vec<u8>, number: u32, tally: &Tally, debug: bool) {
    let mut value = Vec::with_capacity(16);
    for (key, count) in [
        ("redaction.masked.count", tally.masked),
        ("redaction.redacted.count", tally.redacted),
    ] {
        value.clear();
        // int_value (field 3), a varint even when zero: it is a oneof
        value.push(3 << 3);
        encode_varint(count as u64, &mut value);
        put_attribute(out, number, key, &value);
    }
    if debug {
        for (key, keys) in [
            ("redaction.masked.keys", &tally.masked_keys),
            ("redaction.redacted.keys", &tally.redacted_keys),
        ] {
            value.clear();
            put_delimited(&mut value, 1, keys.join(",").as_bytes());
            put_attribute(out, number, key, &value);
        }
    }
}

/// The string at `range`, which must be UTF-8 (std's check for short strings, where the
/// SIMD one's setup costs more than it saves).
fn text(buf: &[u8], range: Range<usize>) -> Result<&str, Fallback> {
    let bytes = &buf[range];
    if bytes.len() < 64 {
        return std::str::from_utf8(bytes).map_err(|_| Fallback);
    }
    simdutf8::compat::from_utf8(bytes).map_err(|_| Fallback)
}

impl Redactor {
    /// Redacts one encoded export request of `signal`: the new request, `None` when
    /// nothing in it changes, or [`Fallback`] when only the decoded path is exact.
    pub(super) fn redact_encoded(
        &self,
        signal: crate::model::Signal,
        buf: &[u8],
    ) -> Result<Option<Vec<u8>>, Fallback> {
        let mut walk = Walk {
            redactor: self,
            buf,
            buffers: self.walk_buffers.take(),
        };
        let walked = walk.message(0..buf.len(), request(signal));
        let redacted = walked.map(|delta| walk.output(delta));
        *self.walk_buffers.borrow_mut() = walk.buffers.keep();
        redacted
    }
}

impl<'r, 'b> Walk<'r, 'b> {
    /// The request with every edit made, in one copy; `None` when there are none.
    fn output(&self, delta: Delta) -> Option<Vec<u8>> {
        let Buffers { edits, arena, .. } = &self.buffers;
        if edits.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(self.buf.len().saturating_add_signed(delta));
        let mut copied = 0;
        for edit in edits {
            debug_assert!(
                edit.source.start >= copied,
                "edits in the order of the bytes"
            );
            out.extend_from_slice(&self.buf[copied..edit.source.start]);
            out.extend_from_slice(&arena[edit.replacement.clone()]);
            copied = edit.source.end;
        }
        out.extend_from_slice(&self.buf[copied..]);
        Some(out)
    }

    /// Notes an edit: the bytes at `source` give way to what `write` appends to the arena
    /// (it is handed the scratch string too). Gives the change in size.
    fn edit(&mut self, source: Range<usize>, write: impl FnOnce(&mut Vec<u8>, &str)) -> Delta {
        let Buffers {
            edits,
            arena,
            scratch,
        } = &mut self.buffers;
        let start = arena.len();
        write(arena, scratch);
        let replacement = start..arena.len();
        let delta = replacement.len() as isize - source.len() as isize;
        edits.push(Edit {
            source,
            replacement,
        });
        delta
    }

    fn remove(&mut self, record: Range<usize>) -> Delta {
        self.edit(record, |_, _| {})
    }

    /// After the content `inner` of the record `record` (field `number`) changed size by
    /// `delta` through the edits made since `mark`: an edit of the record's header (key
    /// and length), placed before those edits, as it stands before them in the bytes.
    /// Gives the record's change in size.
    fn relength(
        &mut self,
        mark: usize,
        number: u32,
        inner: Range<usize>,
        record: Range<usize>,
        delta: Delta,
    ) -> Delta {
        if delta == 0 {
            return 0;
        }
        let length = inner
            .len()
            .checked_add_signed(delta)
            .expect("edits inside a message remove at most its bytes");
        let arena = &mut self.buffers.arena;
        let start = arena.len();
        encode_varint(u64::from(number) << 3 | 2, arena);
        encode_varint(length as u64, arena);
        let header = record.start..inner.start;
        let replacement = start..arena.len();
        let header_delta = replacement.len() as isize - header.len() as isize;
        self.buffers.edits.insert(
            mark,
            Edit {
                source: header,
                replacement,
            },
        );
        delta + header_delta
    }

    /// Walks the content of the record `record` (field `number`) with `content`, then
    /// writes its header anew if its size changed.
    fn nested(
        &mut self,
        number: u32,
        inner: Range<usize>,
        record: Range<usize>,
        content: impl FnOnce(&mut Self, Range<usize>) -> Result<Delta, Fallback>,
    ) -> Result<Delta, Fallback> {
        let mark = self.buffers.edits.len();
        let delta = content(self, inner.clone())?;
        Ok(self.relength(mark, number, inner, record, delta))
    }

    fn message(&mut self, range: Range<usize>, node: &Node) -> Result<Delta, Fallback> {
        match node {
            Node::Container(children) => self.container(range, children),
            Node::Item(item) => self.item(range, item),
        }
    }

    /// The sub-message at `number` among `children`, if it leads to items.
    fn child(
        &mut self,
        number: u32,
        inner: Range<usize>,
        record: Range<usize>,
        children: &[Child],
        singular_seen: &mut bool,
    ) -> Result<Delta, Fallback> {
        let Some(child) = children.iter().find(|c| c.number == number) else {
            return Ok(0);
        };
        // a second one would be merged with the first by a decoder
        if child.singular && std::mem::replace(singular_seen, true) {
            return Err(Fallback);
        }
        self.nested(number, inner, record, |walk, inner| {
            walk.message(inner, child.node)
        })
    }

    fn container(&mut self, range: Range<usize>, children: &[Child]) -> Result<Delta, Fallback> {
        let mut singular_seen = false;
        let mut delta = 0;
        for field in Fields::new(self.buf, range) {
            if let (number, Value::Delimited(inner), record) = field? {
                delta += self.child(number, inner, record, children, &mut singular_seen)?;
            }
        }
        Ok(delta)
    }

    fn item(&mut self, range: Range<usize>, item: &Item) -> Result<Delta, Fallback> {
        let redact_names = self.redactor.config.redact_names;
        let mut tally = Tally::default();
        let mut singular_seen = false;
        let mut delta = 0;
        for field in Fields::new(self.buf, range.clone()) {
            let (number, value, record) = field?;
            let Value::Delimited(inner) = value else {
                continue;
            };
            delta += if number == item.attributes {
                self.key_value(number, inner, record, &mut tally)?
            } else if item.name == Some(number) && redact_names {
                self.string_in_place(number, inner, record, &mut tally)?
            } else if item.body == Some(number) {
                if std::mem::replace(&mut singular_seen, true) {
                    return Err(Fallback);
                }
                self.nested(number, inner, record, |walk, inner| {
                    walk.body(inner, &mut tally)
                })?
            } else {
                self.child(number, inner, record, item.children, &mut singular_seen)?
            };
        }
        Ok(delta + self.append_summary(item.attributes, range.end, &tally))
    }

    /// The `summary` attributes at the end of an item (which decodes to the same list as
    /// the decoded path's, where they come last among the attributes).
    fn append_summary(&mut self, number: u32, end: usize, tally: &Tally) -> Delta {
        let redactor = self.redactor;
        if !redactor.summarizes(tally) {
            return 0;
        }
        let debug = redactor.config.summary == super::Summary::Debug;
        self.edit(end..end, |arena, _| {
            put_summary(arena, number, tally, debug)
        })
    }

    /// A name or a body string (field `number`, at `record`): masked where it matches,
    /// never removed.
    fn string_in_place(
        &mut self,
        number: u32,
        inner: Range<usize>,
        record: Range<usize>,
        tally: &mut Tally,
    ) -> Result<Delta, Fallback> {
        let redactor = self.redactor;
        self.buffers.scratch.clear();
        let bytes = &self.buf[inner];
        if !redactor.redact_bytes_into(bytes, tally, &mut self.buffers.scratch)? {
            return Ok(0);
        }
        let drop = redactor.config.action == Action::Drop;
        Ok(self.edit(record, |arena, redacted| {
            let content = if drop {
                redactor.replacement_for_drop()
            } else {
                redacted
            };
            put_delimited(arena, number, content.as_bytes())
        }))
    }

    /// The one oneof field of an `AnyValue` when it is length-delimited (a string, an
    /// array, a map, bytes): its number, its content and its record; `None` for an
    /// empty or scalar value, which redaction leaves alone. A second field would be
    /// merged or replaced by a decoder.
    fn any_value_field(buf: &[u8], range: Range<usize>) -> Result<Option<OneofField>, Fallback> {
        let mut found = None;
        for field in Fields::new(buf, range) {
            if found.replace(field?).is_some() {
                return Err(Fallback);
            }
        }
        Ok(match found {
            Some((number, Value::Delimited(inner), record)) => Some((number, inner, record)),
            _ => None,
        })
    }

    /// A log body (the content of an `AnyValue`): strings are masked (never removed),
    /// arrays and maps walked.
    fn body(&mut self, range: Range<usize>, tally: &mut Tally) -> Result<Delta, Fallback> {
        let Some((number, inner, record)) = Self::any_value_field(self.buf, range)? else {
            return Ok(0);
        };
        match number {
            1 => self.string_in_place(number, inner, record, tally),
            5 => {
                let mark = self.buffers.edits.len();
                let delta = self
                    .array(inner.clone(), tally, |walk, inner, tally| {
                        walk.body(inner, tally).map(Some)
                    })?
                    .expect("a body's values are never removed");
                Ok(self.relength(mark, number, inner, record, delta))
            }
            6 => self.nested(number, inner, record, |walk, inner| {
                walk.key_values(inner, tally)
            }),
            _ => Ok(0),
        }
    }

    /// Walks the values of an `ArrayValue` with `value`; `None` when one of them asked
    /// for the attribute holding the array to go. Every value is walked all the same, so
    /// the tally counts them all, as the decoded path does.
    fn array(
        &mut self,
        range: Range<usize>,
        tally: &mut Tally,
        value: ValueWalk<'r, 'b>,
    ) -> Result<Option<Delta>, Fallback> {
        let mut delta = 0;
        let mut remove = false;
        for field in Fields::new(self.buf, range) {
            let (number, field_value, record) = field?;
            if let (1, Value::Delimited(inner)) = (number, field_value) {
                let mark = self.buffers.edits.len();
                match value(self, inner.clone(), tally)? {
                    None => remove = true,
                    Some(changed) => delta += self.relength(mark, number, inner, record, changed),
                }
            }
        }
        Ok((!remove).then_some(delta))
    }

    /// Walks a `KeyValueList` (attributes nested in a map value or a body).
    fn key_values(&mut self, range: Range<usize>, tally: &mut Tally) -> Result<Delta, Fallback> {
        let mut delta = 0;
        for field in Fields::new(self.buf, range) {
            if let (1, Value::Delimited(inner), record) = field? {
                delta += self.key_value(1, inner, record, tally)?;
            }
        }
        Ok(delta)
    }

    /// One attribute (the record `record` of field `number`, content `range`), by the
    /// rules of [`Redactor::decide`].
    fn key_value(
        &mut self,
        number: u32,
        range: Range<usize>,
        record: Range<usize>,
        tally: &mut Tally,
    ) -> Result<Delta, Fallback> {
        let (buf, redactor) = (self.buf, self.redactor);
        let (mut key, mut value) = (0..0, None);
        for field in Fields::new(buf, range.clone()) {
            match field? {
                (1, Value::Delimited(inner), _) => key = inner,
                // a second value would be merged with the first by a decoder
                (2, Value::Delimited(inner), record) if value.is_none() => {
                    value = Some((inner, record))
                }
                (2, ..) => return Err(Fallback),
                _ => {}
            }
        }
        let rule = match redactor.remembered_key_rule(&buf[key.clone()]) {
            Some(rule) => rule,
            None => redactor.key_rule(text(buf, key.clone())?),
        };
        // the key itself matters only to `summary: debug`, which lists keys
        let key = if redactor.config.summary == super::Summary::Debug {
            text(buf, key)?
        } else {
            ""
        };
        match rule {
            KeyRule::Ignored => Ok(0),
            KeyRule::NotAllowed => {
                redactor.detected(tally, redactor.allowed_keys_counter());
                redactor.redacted(tally, key);
                Ok(self.remove(record))
            }
            KeyRule::Blocked => {
                let attribute = Attribute {
                    number,
                    key,
                    range,
                    record,
                    value,
                };
                self.blocked(attribute, tally)
            }
            KeyRule::Scan => {
                let Some((inner, value_record)) = value else {
                    return Ok(0);
                };
                let mark = self.buffers.edits.len();
                let before = tally.detections;
                let Some(delta) = self.attribute_value(inner.clone(), tally)? else {
                    self.buffers.edits.truncate(mark);
                    redactor.redacted(tally, key);
                    return Ok(self.remove(record));
                };
                if tally.detections > before {
                    redactor.masked(tally, key);
                }
                let delta = self.relength(mark, 2, inner, value_record, delta);
                Ok(self.relength(mark, number, range, record, delta))
            }
        }
    }

    /// An attribute whose key matches `blocked_key_patterns`: its whole value masked (or
    /// the attribute removed, with `action: drop`).
    fn blocked(&mut self, attribute: Attribute, tally: &mut Tally) -> Result<Delta, Fallback> {
        let redactor = self.redactor;
        redactor.detected(tally, redactor.blocked_keys_counter());
        if redactor.config.action == Action::Drop {
            redactor.redacted(tally, attribute.key);
            return Ok(self.remove(attribute.record));
        }
        let decoded = attribute
            .value
            .as_ref()
            .map(|(inner, _)| AnyValue::decode(&self.buf[inner.clone()]))
            .transpose()
            .map_err(|_| Fallback)?;
        let original = match decoded.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        redactor.masked(tally, attribute.key);
        let mut masked = Vec::new();
        put_delimited(
            &mut masked,
            1,
            redactor.replacement("blocked_key", &original).as_bytes(),
        );
        let mark = self.buffers.edits.len();
        let source = match attribute.value {
            Some((_, value_record)) => value_record,
            None => attribute.range.end..attribute.range.end,
        };
        let delta = self.edit(source, |arena, _| put_delimited(arena, 2, &masked));
        Ok(self.relength(
            mark,
            attribute.number,
            attribute.range,
            attribute.record,
            delta,
        ))
    }

    /// An attribute's value (the content of an `AnyValue`), by the rules of
    /// [`Redactor::redact_value`]; `None` when the attribute holding it must go.
    fn attribute_value(
        &mut self,
        range: Range<usize>,
        tally: &mut Tally,
    ) -> Result<Option<Delta>, Fallback> {
        let Some((number, inner, record)) = Self::any_value_field(self.buf, range)? else {
            return Ok(Some(0));
        };
        let redactor = self.redactor;
        match number {
            1 => {
                self.buffers.scratch.clear();
                let bytes = &self.buf[inner];
                if !redactor.redact_bytes_into(bytes, tally, &mut self.buffers.scratch)? {
                    return Ok(Some(0));
                }
                if redactor.config.action == Action::Drop {
                    return Ok(None);
                }
                Ok(Some(self.edit(record, |arena, redacted| {
                    put_delimited(arena, number, redacted.as_bytes())
                })))
            }
            5 => {
                let mark = self.buffers.edits.len();
                let Some(delta) = self.array(inner.clone(), tally, Self::attribute_value)? else {
                    return Ok(None);
                };
                Ok(Some(self.relength(mark, number, inner, record, delta)))
            }
            6 => Ok(Some(self.nested(
                number,
                inner,
                record,
                |walk, inner| walk.key_values(inner, tally),
            )?)),
            _ => Ok(Some(0)),
        }
    }
}

/// An attribute as [`Walk::key_value`] found it.
struct Attribute<'b> {
    /// The field it is a record of.
    number: u32,
    key: &'b str,
    /// Its content and its whole record.
    range: Range<usize>,
    record: Range<usize>,
    /// Its value's content and record.
    value: Option<(Range<usize>, Range<usize>)>,
}

#[cfg(test)]
mod tests;
