//! Reading arriving spans without decoding them: a walk over the export request's wire
//! format ([`crate::model::wire`]) finds each span's bytes and reads only the fields the
//! policies need — trace id, parent, times, status code, and (when some policy asks about
//! them) attributes and trace state. Spans are then held and sent on as the bytes that
//! arrived, inside `resource_spans` entries whose resource and scope fields are copied
//! verbatim (unknown fields included).

use super::policy::{status_code_bit, with_threshold, SpanPredicates, TraceId};
use crate::model::wire::{Fields, Value, WireError};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use std::ops::Range;

/// What the sampler needs of one span, and where its bytes are.
pub struct SpanFacts {
    /// `None` when the span's trace id is not 16 bytes.
    pub trace_id: Option<TraceId>,
    /// The span message's content within the request.
    pub bytes: Range<usize>,
    pub start: u64,
    pub end: u64,
    pub status: u8,
    pub root: bool,
    /// Predicates the span matched (resource matches included).
    pub matched: u64,
}

/// One scope's spans with the verbatim fields that frame them.
pub struct ScopeGroup {
    /// The resource_spans fields other than scope_spans (resource, schema url).
    pub resource_prefix: Vec<u8>,
    /// The scope_spans fields other than spans (scope, schema url).
    pub scope_prefix: Vec<u8>,
    pub spans: Vec<SpanFacts>,
}

/// Reads every scope of an encoded `ExportTraceServiceRequest`.
pub fn read_request(
    buf: &[u8],
    predicates: &SpanPredicates,
    mut visit: impl FnMut(ScopeGroup),
) -> Result<(), WireError> {
    for field in Fields::new(buf, 0..buf.len()) {
        if let (1, Value::Delimited(resource_spans), _) = field? {
            read_resource_spans(buf, resource_spans, predicates, &mut visit)?;
        }
    }
    Ok(())
}

fn read_resource_spans(
    buf: &[u8],
    range: Range<usize>,
    predicates: &SpanPredicates,
    visit: &mut impl FnMut(ScopeGroup),
) -> Result<(), WireError> {
    let mut resource_prefix = Vec::new();
    let mut scopes = Vec::new();
    let mut resource_bits = 0;
    for field in Fields::new(buf, range) {
        match field? {
            (2, Value::Delimited(scope), _) => scopes.push(scope),
            (number, value, record) => {
                if let (1, Value::Delimited(resource), false) =
                    (number, value, predicates.is_empty())
                {
                    let attributes = Resource::decode(&buf[resource])
                        .map(|r| r.attributes)
                        .unwrap_or_default();
                    resource_bits = predicates.resource_bits(&attributes);
                }
                resource_prefix.extend_from_slice(&buf[record]);
            }
        }
    }
    for scope in scopes {
        let mut scope_prefix = Vec::new();
        let mut spans = Vec::new();
        for field in Fields::new(buf, scope) {
            match field? {
                (2, Value::Delimited(span), _) => {
                    let mut facts = read_span(buf, span, predicates)?;
                    facts.matched |= resource_bits;
                    spans.push(facts);
                }
                (_, _, record) => scope_prefix.extend_from_slice(&buf[record]),
            }
        }
        visit(ScopeGroup {
            resource_prefix: resource_prefix.clone(),
            scope_prefix,
            spans,
        });
    }
    Ok(())
}

/// Reads one span's facts (field numbers from `opentelemetry/proto/trace/v1/trace.proto`).
fn read_span(
    buf: &[u8],
    range: Range<usize>,
    predicates: &SpanPredicates,
) -> Result<SpanFacts, WireError> {
    let mut facts = SpanFacts {
        trace_id: None,
        bytes: range.clone(),
        start: 0,
        end: 0,
        status: status_code_bit(0),
        root: true,
        matched: 0,
    };
    let wants_content = !predicates.is_empty();
    let mut attributes = Vec::new();
    let mut trace_state = "";
    for field in Fields::new(buf, range) {
        match field? {
            (1, Value::Delimited(id), _) => facts.trace_id = TraceId::try_from(&buf[id]).ok(),
            (4, Value::Delimited(parent), _) => facts.root = parent.is_empty(),
            (7, Value::Fixed64(start), _) => facts.start = start,
            (8, Value::Fixed64(end), _) => facts.end = end,
            (15, Value::Delimited(status), _) => facts.status = read_status(buf, status),
            (3, Value::Delimited(state), _) if wants_content => {
                trace_state = std::str::from_utf8(&buf[state]).unwrap_or_default();
            }
            (9, Value::Delimited(attribute), _) if wants_content => {
                // Only attributes some policy asks about are decoded.
                let asked =
                    attribute_key(buf, attribute.clone()).is_some_and(|k| predicates.asks_about(k));
                if let Some(kv) = asked
                    .then(|| KeyValue::decode(&buf[attribute]).ok())
                    .flatten()
                {
                    attributes.push(kv);
                }
            }
            _ => {}
        }
    }
    if wants_content {
        facts.matched = predicates.span_bits(&attributes, trace_state);
    }
    Ok(facts)
}

/// The key (field 1) of an encoded `KeyValue`, without copying it.
fn attribute_key(buf: &[u8], range: Range<usize>) -> Option<&str> {
    Fields::new(buf, range).find_map(|field| match field {
        Ok((1, Value::Delimited(key), _)) => std::str::from_utf8(&buf[key]).ok(),
        _ => None,
    })
}

/// The status bit of a `Status` message (its `code`, field 3); unset if unreadable.
fn read_status(buf: &[u8], range: Range<usize>) -> u8 {
    let code = Fields::new(buf, range)
        .filter_map(Result::ok)
        .find_map(|field| match field {
            (3, Value::Varint(code), _) => Some(code),
            _ => None,
        });
    status_code_bit(code.unwrap_or(0))
}

/// Copies an encoded `ExportTraceServiceRequest` with `threshold` written into every
/// span's trace state as the `ot=th:` sub-key ([`with_threshold`]). Everything else is
/// copied as bytes, unknown fields included; a span's old trace state (the last one, as
/// decoders keep) is replaced by one field at the span's end.
pub fn stamp_threshold(buf: &[u8], threshold: u64) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(buf.len() + buf.len() / 8);
    let mut stamp = |span: Range<usize>, out: &mut Vec<u8>| stamp_span(buf, span, threshold, out);
    copy_along(buf, 0..buf.len(), SPAN_PATH, &mut out, &mut stamp)?;
    Ok(out)
}

/// Field numbers from the request down to a span: resource_spans, scope_spans, spans.
const SPAN_PATH: &[u32] = &[1, 2, 2];

/// Copies the message in `buf[range]` into `out`, handing each sub-message at the end of
/// `path` to `leaf` and re-framing the messages along the way with their new lengths.
fn copy_along(
    buf: &[u8],
    range: Range<usize>,
    path: &[u32],
    out: &mut Vec<u8>,
    leaf: &mut impl FnMut(Range<usize>, &mut Vec<u8>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let Some((&number, rest)) = path.split_first() else {
        return leaf(range, out);
    };
    let mut content = Vec::new();
    // the records before the next sub-message on the path, copied in one go
    let mut unchanged = range.start;
    for field in Fields::new(buf, range.clone()) {
        if let (n, Value::Delimited(inner), record) = field? {
            if n == number {
                out.extend_from_slice(&buf[unchanged..record.start]);
                unchanged = record.end;
                content.clear();
                copy_along(buf, inner, rest, &mut content, leaf)?;
                encode_key(number, WireType::LengthDelimited, out);
                encode_varint(content.len() as u64, out);
                out.extend_from_slice(&content);
            }
        }
    }
    out.extend_from_slice(&buf[unchanged..range.end]);
    Ok(())
}

/// Copies one span's fields without its trace state (field 3), then writes the trace
/// state with `threshold` in it.
fn stamp_span(
    buf: &[u8],
    span: Range<usize>,
    threshold: u64,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let mut trace_state = "";
    let mut unchanged = span.start;
    for field in Fields::new(buf, span.clone()) {
        if let (3, Value::Delimited(state), record) = field? {
            out.extend_from_slice(&buf[unchanged..record.start]);
            unchanged = record.end;
            trace_state = std::str::from_utf8(&buf[state]).unwrap_or_default();
        }
    }
    out.extend_from_slice(&buf[unchanged..span.end]);
    let stamped = with_threshold(trace_state, threshold);
    encode_key(3, WireType::LengthDelimited, out);
    encode_varint(stamped.len() as u64, out);
    out.extend_from_slice(stamped.as_bytes());
    Ok(())
}

/// Appends one `resource_spans` entry holding `spans` (bytes of `source`) under the
/// verbatim resource and scope fields.
pub fn encode_group(out: &mut Vec<u8>, group: &ScopeGroup, source: &[u8], spans: &[SpanFacts]) {
    let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    let scope_spans_len =
        group.scope_prefix.len() + spans.iter().map(|s| field(s.bytes.len())).sum::<usize>();
    let resource_spans_len = group.resource_prefix.len() + field(scope_spans_len);
    let total = field(resource_spans_len);
    if out.capacity() - out.len() < total {
        out.reserve_exact(total.max(out.len() / 2));
    }
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(resource_spans_len as u64, out);
    out.extend_from_slice(&group.resource_prefix);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(scope_spans_len as u64, out);
    out.extend_from_slice(&group.scope_prefix);
    for span in spans {
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(span.bytes.len() as u64, out);
        out.extend_from_slice(&source[span.bytes.clone()]);
    }
}
