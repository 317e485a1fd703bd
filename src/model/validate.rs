//! The edge check: what sieve acknowledges, it can decode.
//!
//! A request is accepted encoded and decoded later, perhaps merged with other clients'
//! requests, so the check at the edge must refuse everything the decoder (prost, as
//! generated in `opentelemetry-proto`) would refuse, at every depth, and allocate nothing
//! while doing so. Driven by the message tables in [`super::schema`], it checks:
//!
//! * framing: varints of at most 10 bytes that fit 64 bits, field keys that fit 32 bits,
//!   no field number 0, lengths within their message, no group wire types;
//! * wire types: every field the decoder knows has the wire type of its declared type (a
//!   repeated number may also be packed, and its packed bytes must hold whole values);
//! * UTF-8: every `string` field, at every depth (with `simdutf8`);
//! * nesting: prost stops at 100 nested messages (`RECURSION_LIMIT`), and also refuses
//!   to skip an unknown field of a message at depth 100; the check counts the same way
//!   (the request is depth 0).
//!
//! The unit of refusal is the item (span, metric data point, log record). A defect inside
//! an item refuses that item; a defect in what frames items (a resource, a scope, a
//! metric) refuses the items it frames. The rest of the request is accepted, and the
//! client is told how many items were refused through `partial_success`, as the OTLP
//! specification allows. Only broken framing of the request's outer structure — where
//! item boundaries cannot be trusted — refuses the whole request. When items are refused,
//! [`without_refused`] copies the request without them (the rare path); otherwise the
//! client's bytes go on untouched.

use super::schema::{self, Message, Type, WireType};
use super::wire::{read_varint, Fields, Value, WireError};
use super::Signal;
use std::ops::Range;

/// prost's recursion limit: a message may be nested at most this deep (the request is 0).
pub const MAX_DEPTH: u32 = 100;

/// What is wrong with a refused item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// Truncated or overlong fields, bad varints or keys.
    Malformed,
    /// A known field carries a wire type its type does not allow.
    WireType,
    /// A string field is not valid UTF-8.
    InvalidUtf8,
    /// Messages nested deeper than the decoder allows.
    TooDeep,
    /// A metric with more than one kind of data (gauge, sum, …): the decoder keeps only
    /// the last, so the points of the others would vanish.
    OneofConflict,
}

impl Defect {
    /// The `reason` label it is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            Defect::Malformed => "malformed",
            Defect::WireType => "wire_type",
            Defect::InvalidUtf8 => "invalid_utf8",
            Defect::TooDeep => "too_deep",
            Defect::OneofConflict => "oneof_conflict",
        }
    }

    /// What the client is told.
    pub fn describe(self) -> &'static str {
        match self {
            Defect::Malformed => "malformed protobuf (truncated or overlong field)",
            Defect::WireType => "a field has the wrong protobuf wire type",
            Defect::InvalidUtf8 => "a string field is not valid UTF-8",
            Defect::TooDeep => "messages nested deeper than 100 levels",
            Defect::OneofConflict => "a metric carries more than one kind of data",
        }
    }
}

/// The outcome of checking a request whose outer structure is sound.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Items that decode.
    pub accepted: usize,
    /// Items refused.
    pub refused: usize,
    /// The first defect found, when items were refused.
    pub defect: Option<Defect>,
    /// Where the refused items and refused frames start (offsets of their content).
    omit: Vec<usize>,
}

impl Checked {
    /// Whether the request must be copied without refused parts before it goes on.
    pub fn needs_rewrite(&self) -> bool {
        !self.omit.is_empty()
    }
}

/// What holds items: a message whose `children` fields hold further frames or items.
struct Frame {
    message: &'static Message,
    children: &'static [(u32, Child)],
    /// The children fields are one oneof: only one of them may appear.
    oneof: bool,
}

#[derive(Clone, Copy)]
enum Child {
    Frame(&'static Frame),
    Items(&'static Message),
}

impl Frame {
    fn child(&self, number: u32) -> Option<Child> {
        self.children
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, c)| *c)
    }
}

static TRACES: Frame = Frame {
    message: &schema::EXPORT_TRACE_REQUEST,
    children: &[(1, Child::Frame(&RESOURCE_SPANS))],
    oneof: false,
};
static RESOURCE_SPANS: Frame = Frame {
    message: &schema::RESOURCE_SPANS,
    children: &[(2, Child::Frame(&SCOPE_SPANS))],
    oneof: false,
};
static SCOPE_SPANS: Frame = Frame {
    message: &schema::SCOPE_SPANS,
    children: &[(2, Child::Items(&schema::SPAN))],
    oneof: false,
};

static LOGS: Frame = Frame {
    message: &schema::EXPORT_LOGS_REQUEST,
    children: &[(1, Child::Frame(&RESOURCE_LOGS))],
    oneof: false,
};
static RESOURCE_LOGS: Frame = Frame {
    message: &schema::RESOURCE_LOGS,
    children: &[(2, Child::Frame(&SCOPE_LOGS))],
    oneof: false,
};
static SCOPE_LOGS: Frame = Frame {
    message: &schema::SCOPE_LOGS,
    children: &[(2, Child::Items(&schema::LOG_RECORD))],
    oneof: false,
};

static METRICS: Frame = Frame {
    message: &schema::EXPORT_METRICS_REQUEST,
    children: &[(1, Child::Frame(&RESOURCE_METRICS))],
    oneof: false,
};
static RESOURCE_METRICS: Frame = Frame {
    message: &schema::RESOURCE_METRICS,
    children: &[(2, Child::Frame(&SCOPE_METRICS))],
    oneof: false,
};
static SCOPE_METRICS: Frame = Frame {
    message: &schema::SCOPE_METRICS,
    children: &[(2, Child::Frame(&METRIC))],
    oneof: false,
};
static METRIC: Frame = Frame {
    message: &schema::METRIC,
    children: &[
        (5, Child::Frame(&GAUGE)),
        (7, Child::Frame(&SUM)),
        (9, Child::Frame(&HISTOGRAM)),
        (10, Child::Frame(&EXPONENTIAL_HISTOGRAM)),
        (11, Child::Frame(&SUMMARY)),
    ],
    oneof: true,
};
static GAUGE: Frame = Frame {
    message: &schema::GAUGE,
    children: &[(1, Child::Items(&schema::NUMBER_DATA_POINT))],
    oneof: false,
};
static SUM: Frame = Frame {
    message: &schema::SUM,
    children: &[(1, Child::Items(&schema::NUMBER_DATA_POINT))],
    oneof: false,
};
static HISTOGRAM: Frame = Frame {
    message: &schema::HISTOGRAM,
    children: &[(1, Child::Items(&schema::HISTOGRAM_DATA_POINT))],
    oneof: false,
};
static EXPONENTIAL_HISTOGRAM: Frame = Frame {
    message: &schema::EXPONENTIAL_HISTOGRAM,
    children: &[(1, Child::Items(&schema::EXPONENTIAL_HISTOGRAM_DATA_POINT))],
    oneof: false,
};
static SUMMARY: Frame = Frame {
    message: &schema::SUMMARY,
    children: &[(1, Child::Items(&schema::SUMMARY_DATA_POINT))],
    oneof: false,
};

fn request_frame(signal: Signal) -> &'static Frame {
    match signal {
        Signal::Traces => &TRACES,
        Signal::Metrics => &METRICS,
        Signal::Logs => &LOGS,
    }
}

/// Checks an encoded export request of `signal`. `Err` when its outer structure is
/// broken (then no item can be trusted); otherwise which items decode and which not.
pub fn check_request(signal: Signal, buf: &[u8]) -> Result<Checked, WireError> {
    let mut walk = Walk {
        buf,
        checked: Checked::default(),
    };
    walk.frame(request_frame(signal), 0..buf.len(), 0, None)?;
    Ok(walk.checked)
}

struct Walk<'a> {
    buf: &'a [u8],
    checked: Checked,
}

impl Walk<'_> {
    /// Checks a frame's own fields, then its children; `inherited` is a defect of an
    /// enclosing frame, which refuses everything inside.
    fn frame(
        &mut self,
        frame: &Frame,
        range: Range<usize>,
        depth: u32,
        inherited: Option<Defect>,
    ) -> Result<(), WireError> {
        let own = self.own_fields(frame, range.clone(), depth)?;
        if own.is_some() {
            self.checked.omit.push(range.start);
        }
        // Items inside a frame that is itself omitted need no entry of their own.
        let record_items = inherited.is_none() && own.is_none();
        let defect = inherited.or(own);
        for field in Fields::new(self.buf, range) {
            let (number, value, _) = field?;
            let (Some(child), Value::Delimited(inner)) = (frame.child(number), value) else {
                continue;
            };
            match child {
                Child::Frame(f) => self.frame(f, inner, depth + 1, defect)?,
                Child::Items(message) => {
                    let item_defect = defect.or_else(|| {
                        check_message(message, &self.buf[inner.clone()], depth + 1).err()
                    });
                    self.item(inner.start, item_defect, record_items);
                }
            }
        }
        Ok(())
    }

    /// The first defect among a frame's fields other than its children (a children field
    /// that is not a sub-message counts too). Broken framing is an `Err`.
    fn own_fields(
        &self,
        frame: &Frame,
        range: Range<usize>,
        depth: u32,
    ) -> Result<Option<Defect>, WireError> {
        let mut defect = None;
        let mut child_seen = None;
        for field in Fields::new(self.buf, range) {
            let (number, value, record) = field?;
            let conflict = frame.oneof
                && frame.child(number).is_some()
                && *child_seen.get_or_insert(number) != number;
            let problem = match frame.child(number) {
                Some(_) if conflict => Some(Defect::OneofConflict),
                Some(_) if matches!(value, Value::Delimited(_)) => None,
                Some(_) if depth == 0 => {
                    return Err(WireError::NotAMessage {
                        at: record.start,
                        field: number,
                    })
                }
                Some(_) => Some(Defect::WireType),
                None => {
                    check_field(frame.message, &raw_field(number, &value, self.buf), depth).err()
                }
            };
            defect = defect.or(problem);
        }
        Ok(defect)
    }

    fn item(&mut self, start: usize, defect: Option<Defect>, record: bool) {
        match defect {
            None => self.checked.accepted += 1,
            Some(defect) => {
                self.checked.refused += 1;
                self.checked.defect.get_or_insert(defect);
                if record {
                    self.checked.omit.push(start);
                }
            }
        }
    }
}

/// Checks one message (its content `bytes`, nested `depth` deep) and everything in it.
///
/// The hot loop of the check: it reads fields straight off the slice, keeping only what
/// the check needs (number, wire type, bytes of a length-delimited value), which costs a
/// fraction of a general field reader.
pub fn check_message(message: &Message, bytes: &[u8], depth: u32) -> Result<(), Defect> {
    if depth > MAX_DEPTH {
        return Err(Defect::TooDeep);
    }
    let mut pos = 0;
    while pos < bytes.len() {
        let field = next_raw_field(bytes, &mut pos)?;
        check_field(message, &field, depth)?;
    }
    Ok(())
}

/// One field as the check sees it.
struct RawField<'a> {
    number: u32,
    wire: WireType,
    /// The value of a length-delimited field.
    bytes: &'a [u8],
}

fn raw_field<'a>(number: u32, value: &Value, buf: &'a [u8]) -> RawField<'a> {
    let (wire, bytes) = match value {
        Value::Varint(_) => (WireType::Varint, &buf[..0]),
        Value::Fixed64(_) => (WireType::Fixed64, &buf[..0]),
        Value::Fixed32(_) => (WireType::Fixed32, &buf[..0]),
        Value::Delimited(r) => (WireType::Delimited, &buf[r.clone()]),
    };
    RawField {
        number,
        wire,
        bytes,
    }
}

/// Reads the field at `*pos` with the framing rules of [`super::wire::Fields`], moving
/// `pos` past it.
#[inline]
fn next_raw_field<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<RawField<'a>, Defect> {
    let key = varint_at(bytes, pos)?;
    // a key wider than 32 bits is refused, as `Fields` and prost refuse it (its field
    // number alone may still fit in 32 bits)
    let key = u32::try_from(key).map_err(|_| Defect::Malformed)?;
    let number = key >> 3;
    if number == 0 {
        return Err(Defect::Malformed);
    }
    let (wire, len) = match key & 7 {
        0 => {
            varint_at(bytes, pos)?;
            return Ok(RawField {
                number,
                wire: WireType::Varint,
                bytes: &bytes[..0],
            });
        }
        1 => (WireType::Fixed64, 8),
        5 => (WireType::Fixed32, 4),
        2 => {
            let len = varint_at(bytes, pos)?;
            let len = usize::try_from(len).map_err(|_| Defect::Malformed)?;
            (WireType::Delimited, len)
        }
        _ => return Err(Defect::Malformed),
    };
    let value = bytes
        .get(*pos..pos.checked_add(len).ok_or(Defect::Malformed)?)
        .ok_or(Defect::Malformed)?;
    *pos += len;
    Ok(RawField {
        number,
        wire,
        bytes: value,
    })
}

#[inline]
fn varint_at(bytes: &[u8], pos: &mut usize) -> Result<u64, Defect> {
    if let Some(&byte) = bytes.get(*pos) {
        if byte < 0x80 {
            *pos += 1;
            return Ok(u64::from(byte));
        }
    }
    let (value, len) = read_varint(&bytes[*pos..]).map_err(|_| Defect::Malformed)?;
    *pos += len;
    Ok(value)
}

/// Checks one field of `message` (nested `depth` deep).
fn check_field(message: &Message, field: &RawField, depth: u32) -> Result<(), Defect> {
    let Some(declared) = message.field(field.number) else {
        // prost refuses to skip a field once its recursion budget is spent
        return if depth >= MAX_DEPTH {
            Err(Defect::TooDeep)
        } else {
            Ok(())
        };
    };
    match (declared.ty, field.wire) {
        (Type::String, WireType::Delimited) => check_utf8(field.bytes),
        (Type::Bytes | Type::Id, WireType::Delimited) => Ok(()),
        (Type::Message(inner), WireType::Delimited) => check_message(inner, field.bytes, depth + 1),
        (ty, WireType::Delimited) if declared.repeated && ty.wire_type() != WireType::Delimited => {
            check_packed(ty.wire_type(), field.bytes)
        }
        (ty, wire) if wire == ty.wire_type() => Ok(()),
        _ => Err(Defect::WireType),
    }
}

/// Most strings in telemetry are short and ASCII: `is_ascii` reads them a word at a time
/// before `simdutf8` takes on the rest.
#[inline]
fn check_utf8(bytes: &[u8]) -> Result<(), Defect> {
    if bytes.is_ascii() || simdutf8::basic::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err(Defect::InvalidUtf8)
    }
}

/// A packed repeated field must hold whole values of its element's wire type.
fn check_packed(element: WireType, mut bytes: &[u8]) -> Result<(), Defect> {
    match element {
        WireType::Fixed64 if bytes.len().is_multiple_of(8) => Ok(()),
        WireType::Fixed32 if bytes.len().is_multiple_of(4) => Ok(()),
        WireType::Varint => {
            while !bytes.is_empty() {
                let (_, len) = read_varint(bytes).map_err(|_| Defect::Malformed)?;
                bytes = &bytes[len..];
            }
            Ok(())
        }
        _ => Err(Defect::Malformed),
    }
}

/// A copy of a checked request without its refused items, and without frames left empty
/// by their removal (a frame that held nothing to begin with is kept).
pub fn without_refused(signal: Signal, buf: &[u8], checked: &Checked) -> Vec<u8> {
    let mut omit = checked.omit.clone();
    omit.sort_unstable();
    let mut out = Vec::with_capacity(buf.len());
    copy_frame(request_frame(signal), buf, 0..buf.len(), &omit, &mut out);
    out
}

/// Copies a frame's fields into `out`, leaving out what `omit` names; returns the items
/// kept and the items it held.
fn copy_frame(
    frame: &Frame,
    buf: &[u8],
    range: Range<usize>,
    omit: &[usize],
    out: &mut Vec<u8>,
) -> (usize, usize) {
    let (mut kept, mut held) = (0, 0);
    for field in Fields::new(buf, range) {
        let Ok((number, value, record)) = field else {
            break; // checked before: cannot happen
        };
        match (frame.child(number), value) {
            (Some(Child::Items(_)), Value::Delimited(inner)) => {
                held += 1;
                if omit.binary_search(&inner.start).is_err() {
                    kept += 1;
                    out.extend_from_slice(&buf[record]);
                }
            }
            (Some(Child::Frame(child)), Value::Delimited(inner)) => {
                let omitted = omit.binary_search(&inner.start).is_ok();
                let mut copy = Vec::new();
                let (k, h) = copy_frame(child, buf, inner, omit, &mut copy);
                held += h;
                if omitted || (h > 0 && k == 0) {
                    continue;
                }
                kept += k;
                prost::encoding::encode_key(
                    number,
                    prost::encoding::WireType::LengthDelimited,
                    out,
                );
                prost::encoding::encode_varint(copy.len() as u64, out);
                out.extend_from_slice(&copy);
            }
            _ => out.extend_from_slice(&buf[record]),
        }
    }
    (kept, held)
}

#[cfg(test)]
mod tests;
