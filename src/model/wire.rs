//! A walk over the protobuf wire format of OTLP export requests, without decoding.
//!
//! Follows the protobuf encoding spec (varints, the four wire types proto3 uses, length
//! delimited sub-messages). The walk descends only along the path to the items:
//! `request.resource_* (1) → scope_* (2) → span/log_record (2)` for traces and logs and
//! `… → metric (2) → gauge|sum|histogram|exponential_histogram|summary (5,7,9,10,11) →
//! data_points (1)` for metrics. Each item's own fields are walked one level to check
//! their framing. Field numbers outside those paths are skipped as unknown fields are.
//! This is the walk for counting and cutting; the full check of everything inside an
//! item (UTF-8, nesting, wire types of known fields) is [`super::validate`], built on
//! the same [`Fields`] reader.

use bytes::Bytes;
use std::ops::Range;

use super::Signal;

/// Why a buffer is not a well-formed export request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated varint at byte {0}")]
    TruncatedVarint(usize),
    #[error("varint longer than 64 bits at byte {0}")]
    VarintOverflow(usize),
    #[error("field key larger than 32 bits at byte {0}")]
    InvalidKey(usize),
    #[error("length {len} at byte {at} runs past the end of its message")]
    LengthOverrun { at: usize, len: u64 },
    #[error("truncated fixed-width field at byte {0}")]
    TruncatedFixed(usize),
    #[error("unsupported wire type {wire_type} at byte {at}")]
    WireType { at: usize, wire_type: u8 },
    #[error("field number 0 at byte {0}")]
    FieldZero(usize),
    #[error("field {field} at byte {at} should be a sub-message")]
    NotAMessage { at: usize, field: u32 },
}

impl WireError {
    /// The same error for a read that started `offset` bytes further on.
    fn at(self, offset: usize) -> WireError {
        match self {
            WireError::TruncatedVarint(at) => WireError::TruncatedVarint(at + offset),
            WireError::VarintOverflow(at) => WireError::VarintOverflow(at + offset),
            other => other,
        }
    }
}

/// Reads one varint from the start of `bytes`: its value and its length. Offsets in the
/// error are relative to `bytes`.
#[inline]
pub fn read_varint(bytes: &[u8]) -> Result<(u64, usize), WireError> {
    // most keys and lengths are one byte
    if let Some(&byte) = bytes.first() {
        if byte < 0x80 {
            return Ok((u64::from(byte), 1));
        }
    }
    let mut value: u64 = 0;
    for (index, &byte) in bytes.iter().take(10).enumerate() {
        if index == 9 && byte > 1 {
            return Err(WireError::VarintOverflow(0));
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, index + 1));
        }
    }
    Err(WireError::TruncatedVarint(0))
}

/// One field's value as the wire format frames it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// Byte range (within the walked buffer) of a length-delimited value.
    Delimited(Range<usize>),
}

/// One field record: its number, its value and the byte range of the whole record.
pub type Field = (u32, Value, Range<usize>);

/// Iterates over the fields of one message held in `buf[range]`.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Fields {
            buf,
            pos: range.start,
            end: range.end,
        }
    }

    /// A varint as protobuf decoders accept it: at most 10 bytes, the 10th at most 1
    /// (so the value fits in 64 bits).
    fn varint(&mut self) -> Result<u64, WireError> {
        let (value, len) =
            read_varint(&self.buf[self.pos..self.end]).map_err(|e| e.at(self.pos))?;
        self.pos += len;
        Ok(value)
    }

    /// The next `N` bytes, little-endian as fixed-width fields are.
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.buf[..self.end]
            .get(self.pos..self.pos + N)
            .ok_or(WireError::TruncatedFixed(self.pos))?;
        self.pos += N;
        Ok(bytes.try_into().expect("N bytes"))
    }

    /// The next field: its number, its value and the byte range of the whole record.
    #[inline]
    fn next_field(&mut self) -> Option<Result<Field, WireError>> {
        if self.pos >= self.end {
            return None;
        }
        if let Some(field) = self.short_field() {
            return Some(Ok(field));
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<Field, WireError> {
        let record_start = self.pos;
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireError::InvalidKey(record_start));
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(WireError::FieldZero(record_start));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.fixed()?)),
            5 => Value::Fixed32(u32::from_le_bytes(self.fixed()?)),
            2 => {
                let at = self.pos;
                let len = self.varint()?;
                if len > (self.end - self.pos) as u64 {
                    return Err(WireError::LengthOverrun { at, len });
                }
                let start = self.pos;
                self.pos += len as usize;
                Value::Delimited(start..self.pos)
            }
            other => {
                return Err(WireError::WireType {
                    at: record_start,
                    wire_type: other as u8,
                })
            }
        };
        Ok((field, value, record_start..self.pos))
    }

    /// The next field when its key, and its length or varint value, are one byte each
    /// (most fields of real messages): read without the general path's checks, which
    /// such bytes cannot fail. `None` leaves the position as it was.
    #[inline]
    fn short_field(&mut self) -> Option<Field> {
        let record_start = self.pos;
        let [key, next, ..] = self.buf[record_start..self.end] else {
            return None;
        };
        if !(8..0x80).contains(&key) || next >= 0x80 {
            return None;
        }
        let value = match key & 7 {
            0 => {
                self.pos += 2;
                Value::Varint(u64::from(next))
            }
            2 => {
                let start = record_start + 2;
                let end = start + usize::from(next);
                if end > self.end {
                    return None;
                }
                self.pos = end;
                Value::Delimited(start..end)
            }
            _ => return None,
        };
        Some((u32::from(key >> 3), value, record_start..self.pos))
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<Field, WireError>;

    /// The next field; after an error, none.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let next = self.next_field();
        if matches!(next, Some(Err(_))) {
            self.pos = self.end;
        }
        next
    }
}

/// Calls `visit` with the range of every sub-message in field `wanted` of the message at
/// `range`, checking the framing of every other field on the way.
fn for_each_message(
    buf: &[u8],
    range: Range<usize>,
    wanted: &[u32],
    mut visit: impl FnMut(Range<usize>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut fields = Fields::new(buf, range);
    while let Some(next) = fields.next_field() {
        let (field, value, record) = next?;
        if wanted.contains(&field) {
            match value {
                Value::Delimited(inner) => visit(inner)?,
                _ => {
                    return Err(WireError::NotAMessage {
                        at: record.start,
                        field,
                    })
                }
            }
        }
    }
    Ok(())
}

/// Counts the fields of one item message, which checks its framing one level deep.
fn check_item(buf: &[u8], range: Range<usize>) -> Result<(), WireError> {
    let mut fields = Fields::new(buf, range);
    while let Some(next) = fields.next_field() {
        next?;
    }
    Ok(())
}

/// Items (spans, metric data points, log records) in one resource record.
fn count_in_resource(
    signal: Signal,
    buf: &[u8],
    resource: Range<usize>,
) -> Result<usize, WireError> {
    let mut count = 0;
    for_each_message(buf, resource, &[2], |scope| match signal {
        Signal::Traces | Signal::Logs => for_each_message(buf, scope, &[2], |item| {
            check_item(buf, item)?;
            count += 1;
            Ok(())
        }),
        Signal::Metrics => for_each_message(buf, scope, &[2], |metric| {
            for_each_message(buf, metric, &[5, 7, 9, 10, 11], |data| {
                for_each_message(buf, data, &[1], |point| {
                    check_item(buf, point)?;
                    count += 1;
                    Ok(())
                })
            })
        }),
    })?;
    Ok(count)
}

/// Counts the items in a serialized export request, checking its structure on the way.
pub fn count_items(signal: Signal, buf: &[u8]) -> Result<usize, WireError> {
    let mut count = 0;
    for_each_message(buf, 0..buf.len(), &[1], |resource| {
        count += count_in_resource(signal, buf, resource)?;
        Ok(())
    })?;
    Ok(count)
}

/// A top-level record of an export request and the items it holds.
struct Record {
    bytes: Bytes,
    items: usize,
}

fn records(signal: Signal, chunk: &Bytes) -> Result<Vec<Record>, WireError> {
    let mut fields = Fields::new(chunk, 0..chunk.len());
    let mut out = Vec::new();
    while let Some(next) = fields.next_field() {
        let (field, value, record) = next?;
        let items = match (field, value) {
            (1, Value::Delimited(inner)) => count_in_resource(signal, chunk, inner)?,
            _ => 0,
        };
        out.push(Record {
            bytes: chunk.slice(record),
            items,
        });
    }
    Ok(out)
}

/// Where a batch's resource records go when a pipeline's workers each own some of its
/// resources: see [`shard_by_resource`].
#[derive(Debug, PartialEq, Eq)]
pub enum Shards {
    /// Every record goes to this shard (the batch goes whole).
    One(usize),
    /// Per shard that gets records: the shard, its records, their items.
    Several(Vec<(usize, Vec<Bytes>, usize)>),
}

/// A stable hash of a resource (its encoding): equal resources from one sender go to
/// the same shard in every request.
pub fn resource_hash(encoded_resource: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(encoded_resource)
}

/// The bytes of a resource record's `resource` field (empty when it has none).
fn resource_bytes(buf: &[u8], record: Range<usize>) -> Result<&[u8], WireError> {
    let mut fields = Fields::new(buf, record);
    while let Some(next) = fields.next_field() {
        if let (1, Value::Delimited(resource), _) = next? {
            return Ok(&buf[resource]);
        }
    }
    Ok(&[])
}

/// Divides encoded chunks among `shards` by resource (the hash of each resource
/// record's `resource` bytes), so that one resource's data always reaches the same
/// shard. Items are counted only when the records go to more than one shard. `None`
/// when a chunk does not parse.
pub fn shard_by_resource(signal: Signal, chunks: &[Bytes], shards: usize) -> Option<Shards> {
    divide_by_resource(signal, chunks, |resource| {
        (resource_hash(resource) % shards as u64) as usize
    })
}

/// Divides encoded chunks by resource record: `shard_of` says where each record goes
/// from its `resource` bytes (empty when it has none). Items are counted only when the
/// records go to more than one shard. `None` when a chunk does not parse.
pub fn divide_by_resource(
    signal: Signal,
    chunks: &[Bytes],
    mut shard_of: impl FnMut(&[u8]) -> usize,
) -> Option<Shards> {
    let mut records = Vec::new();
    for (at, chunk) in chunks.iter().enumerate() {
        let mut fields = Fields::new(chunk, 0..chunk.len());
        while let Some(next) = fields.next_field() {
            if let (1, Value::Delimited(inner), record) = next.ok()? {
                let shard = shard_of(resource_bytes(chunk, inner.clone()).ok()?);
                records.push((shard, at, inner, record));
            }
        }
    }
    let first = records.first().map_or(0, |r| r.0);
    if records.iter().all(|r| r.0 == first) {
        return Some(Shards::One(first));
    }
    let mut by_shard: Vec<(usize, Vec<Bytes>, usize)> = Vec::new();
    for (shard, at, inner, record) in records {
        let items = count_in_resource(signal, &chunks[at], inner).ok()?;
        let bytes = chunks[at].slice(record);
        match by_shard.iter_mut().find(|(s, _, _)| *s == shard) {
            Some((_, parts, count)) => {
                parts.push(bytes);
                *count += items;
            }
            None => by_shard.push((shard, vec![bytes], items)),
        }
    }
    Some(Shards::Several(by_shard))
}

/// Encoded chunks divided in two at a resource-record boundary.
pub struct Split {
    pub front: Vec<Bytes>,
    pub back: Vec<Bytes>,
    pub back_items: usize,
}

/// Divides encoded chunks at resource-record boundaries so that the front holds at most
/// `max_items` items, or `None` when the first resource alone holds more than
/// `max_items` (the caller decodes then).
pub fn split_records(signal: Signal, chunks: &[Bytes], max_items: usize) -> Option<Split> {
    let mut front = Vec::new();
    let mut back = Vec::new();
    let mut front_items = 0;
    let mut back_items = 0;
    for chunk in chunks {
        if !back.is_empty() {
            back_items += count_items(signal, chunk).ok()?;
            back.push(chunk.clone());
            continue;
        }
        for record in records(signal, chunk).ok()? {
            if back.is_empty() && front_items + record.items <= max_items {
                front_items += record.items;
                front.push(record.bytes);
            } else {
                back_items += record.items;
                back.push(record.bytes);
            }
        }
    }
    if front_items == 0 && back_items > 0 {
        return None;
    }
    Some(Split {
        front,
        back,
        back_items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_request_has_no_items() {
        assert_eq!(count_items(Signal::Traces, &[]), Ok(0));
    }

    #[test]
    fn length_past_the_end_is_rejected() {
        // field 1, wire type 2, length 100, but only 2 bytes follow
        let buf = [0x0a, 100, 1, 2];
        assert_eq!(
            count_items(Signal::Traces, &buf),
            Err(WireError::LengthOverrun { at: 1, len: 100 })
        );
    }

    #[test]
    fn huge_length_prefix_is_rejected_not_allocated() {
        let mut buf = vec![0x0a];
        buf.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            count_items(Signal::Logs, &buf),
            Err(WireError::LengthOverrun { .. })
        ));
    }

    #[test]
    fn group_wire_type_is_rejected() {
        let buf = [0x0b];
        assert_eq!(
            count_items(Signal::Metrics, &buf),
            Err(WireError::WireType {
                at: 0,
                wire_type: 3
            })
        );
    }

    #[test]
    fn resource_field_that_is_a_varint_is_rejected() {
        let buf = [0x08, 1];
        assert_eq!(
            count_items(Signal::Traces, &buf),
            Err(WireError::NotAMessage { at: 0, field: 1 })
        );
    }

    #[test]
    fn unknown_top_level_fields_are_skipped() {
        let buf = [0x10, 5, 0x1a, 1, 0];
        assert_eq!(count_items(Signal::Traces, &buf), Ok(0));
    }
}
