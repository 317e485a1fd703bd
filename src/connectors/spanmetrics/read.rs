//! Reading what the connector needs of spans, from an encoded request without decoding
//! it (a walk over the wire format with [`Fields`]: `resource_spans (1) → resource (1) |
//! scope_spans (2) → scope (1) | spans (2)`, span fields from
//! `opentelemetry/proto/trace/v1/trace.proto`) or from decoded prost messages, into the
//! same borrowed views. Only attributes whose name some dimension looks up are kept (as
//! their encoded or decoded value, not copied), and events only when they are counted.

use super::plan::{AttrValue, Plan, Scope, TableKind};
use crate::model::wire::{Fields, Value as Wire, WireError};
use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use std::ops::Range;

/// The fields of a span the metrics are made of.
#[derive(Default)]
pub struct SpanView<'a> {
    pub name: &'a [u8],
    pub kind: i32,
    pub status: i32,
    pub start: u64,
    pub end: u64,
    pub trace_state: &'a [u8],
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
}

/// A span as read: its fields, the values of the looked-up attribute names it has (by
/// slot), its events and its scope when the scope is included.
pub struct SpanInput<'a, 'r> {
    pub view: SpanView<'a>,
    pub dims: &'r [Option<AttrValue<'a>>],
    pub events: Events<'a, 'r>,
    pub scope: Scope<'a>,
}

/// A span's events: ranges of their encodings, or the decoded events.
pub enum Events<'a, 'r> {
    Wire {
        buf: &'a [u8],
        ranges: &'r [Range<usize>],
    },
    Proto(&'a [Event]),
}

impl<'a> Events<'a, '_> {
    pub fn len(&self) -> usize {
        match self {
            Events::Wire { ranges, .. } => ranges.len(),
            Events::Proto(events) => events.len(),
        }
    }

    /// Fills `out` (by slot) with the looked-up attributes of event `at`; a malformed
    /// event has none.
    pub fn dims(&self, at: usize, plan: &Plan, out: &mut [Option<AttrValue<'a>>]) {
        out.fill(None);
        match self {
            Events::Wire { buf, ranges } => {
                for field in Fields::new(buf, ranges[at].clone()) {
                    match field {
                        Ok((3, Wire::Delimited(attribute), _)) => {
                            if wire_attribute(buf, attribute, plan, out).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
            Events::Proto(events) => proto_dims(plan, &events[at].attributes, out),
        }
    }
}

/// A resource: its attributes as read (name, value), and where to decode them from
/// when the connector starts holding it.
pub struct ResourceInput<'a> {
    pub attributes: Vec<(&'a [u8], AttrValue<'a>)>,
    source: ResourceSource<'a>,
}

enum ResourceSource<'a> {
    Wire(&'a [u8]),
    Proto(&'a [KeyValue]),
}

impl<'a> ResourceInput<'a> {
    /// The first attribute named `name`.
    pub fn get(&self, name: &[u8]) -> Option<AttrValue<'a>> {
        let found = self.attributes.iter().find(|(key, _)| *key == name);
        found.map(|(_, value)| *value)
    }

    /// The values of the looked-up attribute names, by slot.
    pub fn dims(&self, plan: &Plan) -> Vec<Option<AttrValue<'a>>> {
        let mut dims = vec![None; plan.names.len()];
        for &(key, value) in &self.attributes {
            keep(plan, &mut dims, key, value);
        }
        dims
    }

    /// The attributes, decoded.
    pub fn decode(&self) -> Vec<KeyValue> {
        match self.source {
            ResourceSource::Wire(bytes) => Resource::decode(bytes)
                .map(|r| r.attributes)
                .unwrap_or_default(),
            ResourceSource::Proto(attributes) => attributes.to_vec(),
        }
    }
}

/// The text of a string value; other values (and a missing one) have none.
pub fn string_of(value: AttrValue<'_>) -> &[u8] {
    match value {
        AttrValue::Wire(bytes) => Fields::new(bytes, 0..bytes.len())
            .map_while(Result::ok)
            .filter_map(|field| match field {
                (1, Wire::Delimited(text), _) => Some(&bytes[text]),
                _ => None,
            })
            .last()
            .unwrap_or_default(),
        AttrValue::Proto(Some(value)) => match &value.value {
            Some(any_value::Value::StringValue(text)) => text.as_bytes(),
            _ => &[],
        },
        AttrValue::Proto(None) => &[],
        AttrValue::Text(text) => text.as_bytes(),
    }
}

/// Sets the slot of attribute `key`, if looked up and not set yet (the first wins).
#[inline]
fn keep<'a>(plan: &Plan, out: &mut [Option<AttrValue<'a>>], key: &[u8], value: AttrValue<'a>) {
    if let Some(slot) = plan.slot(key) {
        out[slot].get_or_insert(value);
    }
}

fn proto_dims<'a>(plan: &Plan, attributes: &'a [KeyValue], out: &mut [Option<AttrValue<'a>>]) {
    for attribute in attributes {
        keep(
            plan,
            out,
            attribute.key.as_bytes(),
            AttrValue::Proto(attribute.value.as_ref()),
        );
    }
}

fn counts_events(plan: &Plan) -> bool {
    plan.tables.iter().any(|t| t.kind == TableKind::Events)
}

/// The resource of an encoded `resource_spans` record.
pub fn wire_resource(buf: &[u8], record: Range<usize>) -> Result<ResourceInput<'_>, WireError> {
    let mut resource = 0..0;
    for field in Fields::new(buf, record) {
        if let (1, Wire::Delimited(range), _) = field? {
            resource = range;
        }
    }
    let mut attributes = Vec::new();
    for field in Fields::new(buf, resource.clone()) {
        if let (1, Wire::Delimited(attribute), _) = field? {
            attributes.push(wire_key_value(buf, attribute)?);
        }
    }
    Ok(ResourceInput {
        attributes,
        source: ResourceSource::Wire(&buf[resource]),
    })
}

/// The key and value of an encoded `KeyValue`.
#[inline]
fn wire_key_value(buf: &[u8], range: Range<usize>) -> Result<(&[u8], AttrValue<'_>), WireError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    for field in Fields::new(buf, range) {
        match field? {
            (1, Wire::Delimited(k), _) => key = &buf[k],
            (2, Wire::Delimited(v), _) => value = &buf[v],
            _ => {}
        }
    }
    Ok((key, AttrValue::Wire(value)))
}

/// The spans of one resource: an encoded `resource_spans` record, or a decoded one.
pub enum Spans<'a> {
    Wire { buf: &'a [u8], record: Range<usize> },
    Proto(&'a ResourceSpans),
}

impl<'a> Spans<'a> {
    /// Hands every span to `visit`; an encoded record's walk stops at its first
    /// malformed field.
    pub fn walk(
        &self,
        plan: &Plan,
        visit: &mut dyn FnMut(&SpanInput<'a, '_>),
    ) -> Result<(), WireError> {
        match self {
            Spans::Wire { buf, record } => wire_spans(buf, record.clone(), plan, visit),
            Spans::Proto(resource_spans) => {
                proto_spans(resource_spans, plan, visit);
                Ok(())
            }
        }
    }
}

/// Keeps an encoded `KeyValue` in `dims` if its key is looked up. Its value is read
/// only then: the walk stops at a key that is not.
#[inline]
fn wire_attribute<'a>(
    buf: &'a [u8],
    range: Range<usize>,
    plan: &Plan,
    dims: &mut [Option<AttrValue<'a>>],
) -> Result<(), WireError> {
    let (mut slot, mut value) = (None, &[][..]);
    for field in Fields::new(buf, range) {
        match field? {
            (1, Wire::Delimited(key), _) => {
                slot = plan.slot(&buf[key]);
                if slot.is_none() {
                    return Ok(());
                }
            }
            (2, Wire::Delimited(v), _) => value = &buf[v],
            _ => {}
        }
    }
    if let Some(slot) = slot {
        dims[slot].get_or_insert(AttrValue::Wire(value));
    }
    Ok(())
}

/// Visits every span of an encoded `resource_spans` record.
fn wire_spans<'a>(
    buf: &'a [u8],
    record: Range<usize>,
    plan: &Plan,
    visit: &mut dyn FnMut(&SpanInput<'a, '_>),
) -> Result<(), WireError> {
    let mut dims = vec![None; plan.names.len()];
    let mut events = Vec::new();
    let wants_events = counts_events(plan);
    for field in Fields::new(buf, record) {
        let (2, Wire::Delimited(scope_spans), _) = field? else {
            continue;
        };
        let scope = wire_scope(buf, scope_spans.clone(), plan)?;
        for field in Fields::new(buf, scope_spans) {
            let (2, Wire::Delimited(span), _) = field? else {
                continue;
            };
            dims.fill(None);
            events.clear();
            let events_out = wants_events.then_some(&mut events);
            let view = wire_span(buf, span, plan, &mut dims, events_out)?;
            visit(&SpanInput {
                view,
                dims: &dims,
                events: Events::Wire {
                    buf,
                    ranges: &events,
                },
                scope,
            });
        }
    }
    Ok(())
}

/// The name and version of an encoded `scope_spans` record's scope, if included.
fn wire_scope<'a>(
    buf: &'a [u8],
    scope_spans: Range<usize>,
    plan: &Plan,
) -> Result<Scope<'a>, WireError> {
    if plan.scopes.is_empty() {
        return Ok(None);
    }
    let (mut name, mut version) = (&[][..], &[][..]);
    for field in Fields::new(buf, scope_spans) {
        if let (1, Wire::Delimited(scope), _) = field? {
            for field in Fields::new(buf, scope) {
                match field? {
                    (1, Wire::Delimited(n), _) => name = &buf[n],
                    (2, Wire::Delimited(v), _) => version = &buf[v],
                    _ => {}
                }
            }
        }
    }
    Ok(plan.includes_scope(name).then_some((name, version)))
}

/// Reads one encoded span: its fields, the looked-up attributes into `dims` and, when
/// wanted, its events' ranges.
fn wire_span<'a>(
    buf: &'a [u8],
    range: Range<usize>,
    plan: &Plan,
    dims: &mut [Option<AttrValue<'a>>],
    mut events: Option<&mut Vec<Range<usize>>>,
) -> Result<SpanView<'a>, WireError> {
    let mut view = SpanView::default();
    let looks_up = !dims.is_empty();
    for field in Fields::new(buf, range) {
        match field? {
            (1, Wire::Delimited(id), _) => view.trace_id = &buf[id],
            (2, Wire::Delimited(id), _) => view.span_id = &buf[id],
            (3, Wire::Delimited(state), _) => view.trace_state = &buf[state],
            (5, Wire::Delimited(name), _) => view.name = &buf[name],
            (6, Wire::Varint(kind), _) => view.kind = kind as i32,
            (7, Wire::Fixed64(start), _) => view.start = start,
            (8, Wire::Fixed64(end), _) => view.end = end,
            (9, Wire::Delimited(attribute), _) if looks_up => {
                wire_attribute(buf, attribute, plan, dims)?;
            }
            (11, Wire::Delimited(event), _) => {
                if let Some(events) = events.as_deref_mut() {
                    events.push(event);
                }
            }
            (15, Wire::Delimited(status), _) => view.status = wire_status(buf, status)?,
            _ => {}
        }
    }
    Ok(view)
}

/// The code (field 3) of an encoded `Status`.
fn wire_status(buf: &[u8], range: Range<usize>) -> Result<i32, WireError> {
    let mut code = 0;
    for field in Fields::new(buf, range) {
        if let (3, Wire::Varint(value), _) = field? {
            code = value as i32;
        }
    }
    Ok(code)
}

/// The resource of a decoded `ResourceSpans`.
pub fn proto_resource(resource_spans: &ResourceSpans) -> ResourceInput<'_> {
    let attributes: &[KeyValue] = resource_spans
        .resource
        .as_ref()
        .map_or(&[], |r| &r.attributes);
    ResourceInput {
        attributes: attributes
            .iter()
            .map(|a| (a.key.as_bytes(), AttrValue::Proto(a.value.as_ref())))
            .collect(),
        source: ResourceSource::Proto(attributes),
    }
}

/// Visits every span of a decoded `ResourceSpans`.
fn proto_spans<'a>(
    resource_spans: &'a ResourceSpans,
    plan: &Plan,
    visit: &mut dyn FnMut(&SpanInput<'a, '_>),
) {
    let mut dims = vec![None; plan.names.len()];
    let wants_events = counts_events(plan);
    for scope_spans in &resource_spans.scope_spans {
        let scope = proto_scope(scope_spans.scope.as_ref(), plan);
        for span in &scope_spans.spans {
            if !dims.is_empty() {
                dims.fill(None);
                proto_dims(plan, &span.attributes, &mut dims);
            }
            let events = if wants_events { &span.events[..] } else { &[] };
            visit(&SpanInput {
                view: proto_view(span),
                dims: &dims,
                events: Events::Proto(events),
                scope,
            });
        }
    }
}

fn proto_view(span: &Span) -> SpanView<'_> {
    SpanView {
        name: span.name.as_bytes(),
        kind: span.kind,
        status: span.status.as_ref().map_or(0, |s| s.code),
        start: span.start_time_unix_nano,
        end: span.end_time_unix_nano,
        trace_state: span.trace_state.as_bytes(),
        trace_id: &span.trace_id,
        span_id: &span.span_id,
    }
}

fn proto_scope<'a>(scope: Option<&'a InstrumentationScope>, plan: &Plan) -> Scope<'a> {
    let scope = scope?;
    let name = scope.name.as_bytes();
    plan.includes_scope(name)
        .then_some((name, scope.version.as_bytes()))
}
