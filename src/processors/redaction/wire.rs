//! Redaction on the encoded form: the export request is walked as protobuf wire bytes
//! (the OTLP messages of opentelemetry-proto v1, as [`crate::model::schema`] lists them),
//! every string the decoded path would look at is scanned where it lies, and only the
//! records that change are written again. Everything else — ids, timestamps, numbers,
//! unchanged attributes, whole unchanged spans — is copied as bytes, and nothing is
//! decoded into prost messages.
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
use prost::encoding::encode_varint;
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

/// What becomes of one field record.
enum Rewrite {
    Keep,
    Remove,
    Replace(Vec<u8>),
}

/// Writes a message again only once something in it changes: until then, nothing is
/// copied or allocated.
struct Writer<'a> {
    buf: &'a [u8],
    end: usize,
    /// Bytes of `buf` up to here are in `out` (or unchanged, while `out` is `None`).
    copied: usize,
    out: Option<Vec<u8>>,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Writer {
            buf,
            end: range.end,
            copied: range.start,
            out: None,
        }
    }

    /// The output, with everything before `record` copied to it.
    fn up_to(&mut self, record: usize) -> &mut Vec<u8> {
        let (buf, copied) = (self.buf, self.copied);
        // room for `summary` attributes too, so a large message is not copied again
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity((self.end - copied) * 5 / 4 + 64));
        out.extend_from_slice(&buf[copied..record]);
        self.copied = record;
        out
    }

    fn apply(&mut self, number: u32, record: Range<usize>, rewrite: Rewrite) {
        match rewrite {
            Rewrite::Keep => {}
            Rewrite::Remove => {
                self.up_to(record.start);
                self.copied = record.end;
            }
            Rewrite::Replace(bytes) => {
                put_delimited(self.up_to(record.start), number, &bytes);
                self.copied = record.end;
            }
        }
    }

    /// Adds a field after everything else.
    fn append(&mut self, number: u32, bytes: &[u8]) {
        put_delimited(self.up_to(self.end), number, bytes);
    }

    /// The new message, or `None` when nothing changed.
    fn finish(mut self) -> Option<Vec<u8>> {
        self.out.as_ref()?;
        let end = self.end;
        self.up_to(end);
        self.out
    }

    fn finish_as(self) -> Rewrite {
        self.finish().map_or(Rewrite::Keep, Rewrite::Replace)
    }
}

fn put_delimited(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    encode_varint(u64::from(number) << 3 | 2, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Walks the length-delimited fields of the message at `range` and rewrites each as
/// `visit` says (`None`: a field it does not look at, kept as it is).
fn rewrite_fields(
    buf: &[u8],
    range: Range<usize>,
    mut visit: impl FnMut(u32, Range<usize>) -> Result<Option<Rewrite>, Fallback>,
) -> Result<Writer<'_>, Fallback> {
    let mut writer = Writer::new(buf, range.clone());
    for field in Fields::new(buf, range) {
        if let (number, Value::Delimited(inner), record) = field? {
            if let Some(rewrite) = visit(number, inner)? {
                writer.apply(number, record, rewrite);
            }
        }
    }
    Ok(writer)
}

fn text(buf: &[u8], range: Range<usize>) -> Result<&str, Fallback> {
    simdutf8::compat::from_utf8(&buf[range]).map_err(|_| Fallback)
}

/// One request's walk.
struct Walk<'r> {
    redactor: &'r Redactor,
}

impl Redactor {
    /// Redacts one encoded export request of `signal`: the new request, `None` when
    /// nothing in it changes, or [`Fallback`] when only the decoded path is exact.
    pub(super) fn redact_encoded(
        &self,
        signal: crate::model::Signal,
        buf: &[u8],
    ) -> Result<Option<Vec<u8>>, Fallback> {
        Walk { redactor: self }.message(buf, 0..buf.len(), request(signal))
    }
}

impl Walk<'_> {
    fn message(
        &self,
        buf: &[u8],
        range: Range<usize>,
        node: &Node,
    ) -> Result<Option<Vec<u8>>, Fallback> {
        match node {
            Node::Container(children) => self.container(buf, range, children),
            Node::Item(item) => self.item(buf, range, item),
        }
    }

    /// The sub-message at `number` among `children`, if it leads to items.
    fn child(
        &self,
        buf: &[u8],
        number: u32,
        inner: Range<usize>,
        children: &[Child],
        singular_seen: &mut bool,
    ) -> Result<Rewrite, Fallback> {
        let Some(child) = children.iter().find(|c| c.number == number) else {
            return Ok(Rewrite::Keep);
        };
        if child.singular {
            // a second one would be merged with the first by a decoder
            if std::mem::replace(singular_seen, true) {
                return Err(Fallback);
            }
        }
        Ok(self
            .message(buf, inner, child.node)?
            .map_or(Rewrite::Keep, Rewrite::Replace))
    }

    fn container(
        &self,
        buf: &[u8],
        range: Range<usize>,
        children: &[Child],
    ) -> Result<Option<Vec<u8>>, Fallback> {
        let mut singular_seen = false;
        let writer = rewrite_fields(buf, range, |number, inner| {
            self.child(buf, number, inner, children, &mut singular_seen)
                .map(Some)
        })?;
        Ok(writer.finish())
    }

    fn item(
        &self,
        buf: &[u8],
        range: Range<usize>,
        item: &Item,
    ) -> Result<Option<Vec<u8>>, Fallback> {
        let config = &self.redactor.config;
        let mut writer = Writer::new(buf, range.clone());
        let mut tally = Tally::default();
        let mut singular_seen = false;
        for field in Fields::new(buf, range) {
            let (number, value, record) = field?;
            let Value::Delimited(inner) = value else {
                continue;
            };
            let rewrite = if number == item.attributes {
                self.key_value(buf, inner, &mut tally)?
            } else if item.name == Some(number) && config.redact_names {
                self.string_in_place(buf, inner, &mut tally)?
            } else if item.body == Some(number) {
                if std::mem::replace(&mut singular_seen, true) {
                    return Err(Fallback);
                }
                self.body(buf, inner, &mut tally)?
            } else {
                self.child(buf, number, inner, item.children, &mut singular_seen)?
            };
            writer.apply(number, record, rewrite);
        }
        for attribute in self.redactor.summary(tally) {
            writer.append(item.attributes, &attribute.encode_to_vec());
        }
        Ok(writer.finish())
    }

    /// A name or a body string: masked where it matches, never removed.
    fn string_in_place(
        &self,
        buf: &[u8],
        range: Range<usize>,
        tally: &mut Tally,
    ) -> Result<Rewrite, Fallback> {
        let redacted = self.redactor.redact_text(text(buf, range)?, tally);
        Ok(match redacted {
            None => Rewrite::Keep,
            Some(_) if self.redactor.config.action == Action::Drop => {
                Rewrite::Replace(self.redactor.replacement_for_drop().into_bytes())
            }
            Some(new) => Rewrite::Replace(new.into_bytes()),
        })
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

    /// A log body: strings are masked (never removed), arrays and maps walked.
    fn body(
        &self,
        buf: &[u8],
        range: Range<usize>,
        tally: &mut Tally,
    ) -> Result<Rewrite, Fallback> {
        let Some((number, inner, record)) = Self::any_value_field(buf, range.clone())? else {
            return Ok(Rewrite::Keep);
        };
        let rewrite = match number {
            1 => self.string_in_place(buf, inner, tally)?,
            5 => {
                self.array(buf, inner, tally, |walk, inner, tally| {
                    walk.body(buf, inner, tally)
                })?
                .0
            }
            6 => self.key_values(buf, inner, tally)?,
            _ => Rewrite::Keep,
        };
        Ok(Self::wrap(buf, range, number, record, rewrite))
    }

    /// The `AnyValue` at `range` with its field `number` (at `record`) rewritten.
    fn wrap(
        buf: &[u8],
        range: Range<usize>,
        number: u32,
        record: Range<usize>,
        rewrite: Rewrite,
    ) -> Rewrite {
        let mut writer = Writer::new(buf, range);
        writer.apply(number, record, rewrite);
        writer.finish_as()
    }

    /// Walks the values of an `ArrayValue`; also says whether one of them asked for the
    /// attribute holding the array to go (every value is walked all the same, so the
    /// tally counts them all, as the decoded path does).
    fn array(
        &self,
        buf: &[u8],
        range: Range<usize>,
        tally: &mut Tally,
        value: impl Fn(&Self, Range<usize>, &mut Tally) -> Result<Rewrite, Fallback>,
    ) -> Result<(Rewrite, bool), Fallback> {
        let mut writer = Writer::new(buf, range.clone());
        let mut remove = false;
        for field in Fields::new(buf, range) {
            let (number, field_value, record) = field?;
            if let (1, Value::Delimited(inner)) = (number, field_value) {
                match value(self, inner, tally)? {
                    Rewrite::Remove => remove = true,
                    rewrite => writer.apply(number, record, rewrite),
                }
            }
        }
        Ok((writer.finish_as(), remove))
    }

    /// Walks a `KeyValueList` (attributes nested in a map value or a body).
    fn key_values(
        &self,
        buf: &[u8],
        range: Range<usize>,
        tally: &mut Tally,
    ) -> Result<Rewrite, Fallback> {
        let writer = rewrite_fields(buf, range, |number, inner| match number {
            1 => self.key_value(buf, inner, tally).map(Some),
            _ => Ok(None),
        })?;
        Ok(writer.finish_as())
    }

    /// One attribute, by the rules of [`Redactor::decide`].
    fn key_value(
        &self,
        buf: &[u8],
        range: Range<usize>,
        tally: &mut Tally,
    ) -> Result<Rewrite, Fallback> {
        let redactor = self.redactor;
        let config = &redactor.config;
        let (mut key, mut value) = ("", None);
        for field in Fields::new(buf, range.clone()) {
            match field? {
                (1, Value::Delimited(inner), _) => key = text(buf, inner)?,
                // a second value would be merged with the first by a decoder
                (2, Value::Delimited(inner), record) if value.is_none() => {
                    value = Some((inner, record))
                }
                (2, ..) => return Err(Fallback),
                _ => {}
            }
        }
        let rule = redactor.key_rule(key);
        if rule == KeyRule::Ignored {
            return Ok(Rewrite::Keep);
        }
        let remove = |tally: &mut Tally| {
            tally.redacted.push(key.to_string());
            Ok(Rewrite::Remove)
        };
        if rule == KeyRule::NotAllowed {
            tally.detections.push("allowed_keys");
            return remove(tally);
        }
        if rule == KeyRule::Blocked {
            tally.detections.push("blocked_key_patterns");
            if config.action == Action::Drop {
                return remove(tally);
            }
            let decoded = value
                .as_ref()
                .map(|(inner, _)| AnyValue::decode(&buf[inner.clone()]))
                .transpose()
                .map_err(|_| Fallback)?;
            let original = match decoded.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            tally.masked.push(key.to_string());
            let masked = AnyValue {
                value: Some(any_value::Value::StringValue(
                    redactor.replacement("blocked_key", &original),
                )),
            };
            let mut writer = Writer::new(buf, range.clone());
            match value {
                Some((_, record)) => {
                    writer.apply(2, record, Rewrite::Replace(masked.encode_to_vec()))
                }
                None => writer.append(2, &masked.encode_to_vec()),
            }
            return Ok(writer.finish_as());
        }
        let Some((inner, record)) = value else {
            return Ok(Rewrite::Keep);
        };
        let before = tally.detections.len();
        match self.attribute_value(buf, inner, tally)? {
            Rewrite::Remove => remove(tally),
            rewrite => {
                if tally.detections.len() > before {
                    tally.masked.push(key.to_string());
                }
                Ok(Self::wrap(buf, range, 2, record, rewrite))
            }
        }
    }

    /// An attribute's value, by the rules of [`Redactor::redact_value`]: `Remove` when
    /// the attribute holding it must go.
    fn attribute_value(
        &self,
        buf: &[u8],
        range: Range<usize>,
        tally: &mut Tally,
    ) -> Result<Rewrite, Fallback> {
        let Some((number, inner, record)) = Self::any_value_field(buf, range.clone())? else {
            return Ok(Rewrite::Keep);
        };
        let rewrite = match number {
            1 => match self.redactor.redact_text(text(buf, inner)?, tally) {
                None => Rewrite::Keep,
                Some(_) if self.redactor.config.action == Action::Drop => {
                    return Ok(Rewrite::Remove)
                }
                Some(new) => Rewrite::Replace(new.into_bytes()),
            },
            5 => {
                let (rewrite, remove) = self.array(buf, inner, tally, |walk, inner, tally| {
                    walk.attribute_value(buf, inner, tally)
                })?;
                if remove {
                    return Ok(Rewrite::Remove);
                }
                rewrite
            }
            6 => self.key_values(buf, inner, tally)?,
            _ => Rewrite::Keep,
        };
        Ok(Self::wrap(buf, range, number, record, rewrite))
    }
}

#[cfg(test)]
mod tests;
