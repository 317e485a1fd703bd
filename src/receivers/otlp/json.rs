//! OTLP/JSON, per the OTLP specification's JSON mapping: trace and span ids as hex, other
//! bytes as base64, enums as integers (or their names, as proto3 JSON allows), 64-bit
//! integers as strings or numbers, doubles also as `"NaN"`/`"Infinity"`, field names in
//! lowerCamelCase or as in the `.proto` files; unknown fields are ignored, as the spec
//! requires of receivers.
//!
//! The body is transcoded in one streaming pass (serde_json's event stream, driven by the
//! message tables in [`crate::model::schema`]) straight into the protobuf wire encoding,
//! so no tree and no prost structs are built: the output is about the size of the input
//! (packed 64-bit arrays, at 8 bytes a number, are the one case where it can reach 4× a
//! `1,` per value), and memory per request stays within that factor of the body. The
//! encoded request then passes the same edge check as protobuf requests
//! ([`crate::model::validate`]), which refuses what the decoder would (nesting too deep,
//! for one).
//!
//! Spans, log records and data points with an id that is not hex of the right length
//! (16 bytes for a trace id, 8 for a span id; an empty id is absent) — their own, or one
//! of their links' or exemplars' — are left out one by one and reported through
//! `partial_success`, as the spec allows.
//!
//! A message's length is written once its content is (one byte reserved, the content
//! moved when the length needs more): a value nested `d` messages deep in large content
//! is moved up to `d` times. serde_json's nesting limit (128 levels) bounds `d`, so a
//! request costs at most a bounded multiple of its size in copying.

use crate::model::schema::{self, Field, Message, Type};
use crate::model::{Admitted, Batch, Invalid, Rejected, Signal};
use base64::Engine;
use bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, WireType};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Transcodes an OTLP/JSON export request of `signal` and checks the result.
pub fn decode(signal: Signal, body: &[u8]) -> Result<Admitted, Invalid> {
    let (encoded, bad_ids) = transcode(signal, body)
        .map_err(|e| Invalid::Syntax(format!("invalid OTLP/JSON {signal} request: {e}")))?;
    let id_rejection = (bad_ids > 0).then(|| {
        Rejected::new(
            signal,
            bad_ids,
            "invalid_id",
            "traceId must be 32 hex digits and spanId or parentSpanId 16 (or empty)",
        )
    });
    let admitted =
        Batch::from_request(signal, Bytes::from(encoded)).map_err(|invalid| match invalid {
            Invalid::AllRefused(all) => Invalid::AllRefused(all.and(id_rejection.clone())),
            other => other,
        })?;
    let rejected = match (admitted.rejected, id_rejection) {
        (Some(checked), ids) => Some(checked.and(ids)),
        (None, ids) => ids,
    };
    match rejected {
        Some(all) if admitted.batch.items() == 0 => Err(Invalid::AllRefused(all)),
        rejected => Ok(Admitted {
            batch: admitted.batch,
            rejected,
        }),
    }
}

/// The protobuf encoding of the request, and how many items were left out for bad ids.
fn transcode(signal: Signal, body: &[u8]) -> Result<(Vec<u8>, usize), serde_json::Error> {
    let mut encoder = Encoder {
        out: Vec::with_capacity(body.len() / 2),
        bad_id: false,
        rejected: 0,
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    MessageSeed {
        message: schema::request(signal),
        encoder: &mut encoder,
    }
    .deserialize(&mut json)?;
    json.end()?;
    Ok((encoder.out, encoder.rejected))
}

/// The protobuf being written, and the state of the item being written.
struct Encoder {
    out: Vec<u8>,
    /// The current item has an invalid id.
    bad_id: bool,
    /// Items left out so far.
    rejected: usize,
}

impl Encoder {
    /// Starts a length-delimited field; `finish` writes its length.
    fn open(&mut self, number: u32) -> usize {
        encode_key(number, WireType::LengthDelimited, &mut self.out);
        self.out.push(0);
        self.out.len()
    }

    /// Writes the length of the field opened at `start` (content from `start` on),
    /// moving the content when the length needs more than one byte.
    fn finish(&mut self, start: usize) {
        let len = self.out.len() - start;
        if len < 0x80 {
            self.out[start - 1] = len as u8;
            return;
        }
        let mut prefix = Vec::with_capacity(10);
        encode_varint(len as u64, &mut prefix);
        self.out.splice(start - 1..start, prefix);
    }

    fn bytes(&mut self, number: u32, value: &[u8]) {
        encode_key(number, WireType::LengthDelimited, &mut self.out);
        encode_varint(value.len() as u64, &mut self.out);
        self.out.extend_from_slice(value);
    }
}

/// Spans, log records and data points: the unit left out when an id is bad.
fn is_item(message: &Message) -> bool {
    [
        &schema::SPAN,
        &schema::LOG_RECORD,
        &schema::NUMBER_DATA_POINT,
        &schema::HISTOGRAM_DATA_POINT,
        &schema::EXPONENTIAL_HISTOGRAM_DATA_POINT,
        &schema::SUMMARY_DATA_POINT,
    ]
    .into_iter()
    .any(|m| std::ptr::eq(m, message))
}

/// A JSON object read as `message`, its fields written to the encoder (without a key).
struct MessageSeed<'e> {
    message: &'static Message,
    encoder: &'e mut Encoder,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an OTLP {} object", self.message.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key_seed(KeySeed(self.message))? {
            match field {
                Some(field) => map.next_value_seed(FieldSeed {
                    field,
                    encoder: &mut *self.encoder,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key, looked up among a message's fields without allocating.
struct KeySeed(&'static Message);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<&'static Field>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<&'static Field>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.json_field(key))
    }
}

/// One field's JSON value: a list for a repeated field, else one value.
struct FieldSeed<'e> {
    field: &'static Field,
    encoder: &'e mut Encoder,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.field.repeated {
            d.deserialize_any(ListVisitor(self))
        } else {
            ValueSeed {
                field: self.field,
                encoder: self.encoder,
                packed: false,
            }
            .deserialize(d)
        }
    }
}

struct ListVisitor<'e>(FieldSeed<'e>);

impl<'de> Visitor<'de> for ListVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of {}", self.0.field.name)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let FieldSeed { field, encoder } = self.0;
        let packed = !matches!(
            field.ty,
            Type::String | Type::Bytes | Type::Id | Type::Message(_)
        );
        let packed_start = packed.then(|| encoder.open(field.number));
        let items = matches!(field.ty, Type::Message(m) if is_item(m));
        loop {
            let start = encoder.out.len();
            let element = ValueSeed {
                field,
                encoder: &mut *encoder,
                packed,
            };
            if seq.next_element_seed(element)?.is_none() {
                break;
            }
            if items && std::mem::take(&mut encoder.bad_id) {
                encoder.out.truncate(start);
                encoder.rejected += 1;
            }
        }
        if let Some(start) = packed_start {
            encoder.finish(start);
        }
        Ok(())
    }
}

/// One value of `field`: written with its key, or bare inside a packed list.
struct ValueSeed<'e> {
    field: &'static Field,
    encoder: &'e mut Encoder,
    packed: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.field.ty {
            Type::Message(message) => d.deserialize_option(MessageField {
                number: self.field.number,
                message,
                encoder: self.encoder,
            }),
            _ => d.deserialize_any(self),
        }
    }
}

impl ValueSeed<'_> {
    /// Writes a number-like value of the field's type.
    fn number<E: de::Error>(self, value: Number) -> Result<(), E> {
        let (number, ty) = (self.field.number, self.field.ty);
        let out = &mut self.encoder.out;
        match ty.wire_type() {
            schema::WireType::Varint if !self.packed => encode_key(number, WireType::Varint, out),
            schema::WireType::Fixed64 if !self.packed => {
                encode_key(number, WireType::SixtyFourBit, out)
            }
            schema::WireType::Fixed32 if !self.packed => {
                encode_key(number, WireType::ThirtyTwoBit, out)
            }
            _ => {}
        }
        let bad = || E::custom(format!("{} is out of range for {}", value, self.field.name));
        match ty {
            Type::Bool => encode_varint(u64::from(value.as_u64().ok_or_else(bad)? != 0), out),
            Type::Int32 | Type::Enum(_) => {
                let v = i32::try_from(value.as_i64().ok_or_else(bad)?).map_err(|_| bad())?;
                encode_varint(i64::from(v) as u64, out)
            }
            Type::Int64 => encode_varint(value.as_i64().ok_or_else(bad)? as u64, out),
            Type::Uint32 => {
                let v = u32::try_from(value.as_u64().ok_or_else(bad)?).map_err(|_| bad())?;
                encode_varint(u64::from(v), out)
            }
            Type::Uint64 => encode_varint(value.as_u64().ok_or_else(bad)?, out),
            Type::Sint32 => {
                let v = i32::try_from(value.as_i64().ok_or_else(bad)?).map_err(|_| bad())?;
                encode_varint(((v << 1) ^ (v >> 31)) as u32 as u64, out)
            }
            Type::Fixed32 => {
                let v = u32::try_from(value.as_u64().ok_or_else(bad)?).map_err(|_| bad())?;
                out.extend_from_slice(&v.to_le_bytes())
            }
            Type::Fixed64 => out.extend_from_slice(&value.as_u64().ok_or_else(bad)?.to_le_bytes()),
            Type::Sfixed64 => out.extend_from_slice(&value.as_i64().ok_or_else(bad)?.to_le_bytes()),
            Type::Double => out.extend_from_slice(&value.as_f64().to_le_bytes()),
            Type::String | Type::Bytes | Type::Id | Type::Message(_) => {
                return Err(E::custom(format!(
                    "{} must not be a number",
                    self.field.name
                )))
            }
        }
        Ok(())
    }

    fn text<E: de::Error>(self, text: &str) -> Result<(), E> {
        let number = self.field.number;
        match self.field.ty {
            Type::String => self.encoder.bytes(number, text.as_bytes()),
            Type::Bytes => {
                let bytes = decode_base64(text)
                    .ok_or_else(|| E::custom(format!("{} is not base64", self.field.name)))?;
                self.encoder.bytes(number, &bytes)
            }
            Type::Id => match decode_id(self.field.name, text) {
                Some(id) if !id.is_empty() => self.encoder.bytes(number, &id),
                Some(_) => {}
                None => self.encoder.bad_id = true,
            },
            Type::Enum(names) => {
                let value = names(text)
                    .map(|v| Number::Signed(i64::from(v)))
                    .or_else(|| Number::parse(text))
                    .ok_or_else(|| {
                        E::custom(format!("{text:?} is not a value of {}", self.field.name))
                    })?;
                return self.number(value);
            }
            _ => {
                let value = Number::parse(text).ok_or_else(|| {
                    E::custom(format!("{text:?} is not a number ({})", self.field.name))
                })?;
                return self.number(value);
            }
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value for {}", self.field.name)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match self.field.ty {
            Type::Bool => self.number(Number::Unsigned(u64::from(v))),
            _ => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(Number::Signed(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(Number::Unsigned(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(Number::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.text(v)
    }
}

/// A message-typed field (or list element): `null` writes nothing.
struct MessageField<'e> {
    number: u32,
    message: &'static Message,
    encoder: &'e mut Encoder,
}

impl<'de> Visitor<'de> for MessageField<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an OTLP {} object", self.message.name)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let start = self.encoder.open(self.number);
        MessageSeed {
            message: self.message,
            encoder: &mut *self.encoder,
        }
        .deserialize(d)?;
        self.encoder.finish(start);
        Ok(())
    }
}

/// A JSON number, or a number given as a string.
#[derive(Clone, Copy)]
enum Number {
    Signed(i64),
    Unsigned(u64),
    Float(f64),
}

impl Number {
    /// Integers as strings (64-bit ones must be), and the special doubles.
    fn parse(text: &str) -> Option<Number> {
        match text {
            "NaN" => Some(Number::Float(f64::NAN)),
            "Infinity" => Some(Number::Float(f64::INFINITY)),
            "-Infinity" => Some(Number::Float(f64::NEG_INFINITY)),
            _ => text
                .parse()
                .map(Number::Unsigned)
                .or_else(|_| text.parse().map(Number::Signed))
                .or_else(|_| text.parse().map(Number::Float))
                .ok(),
        }
    }

    fn as_u64(self) -> Option<u64> {
        match self {
            Number::Unsigned(v) => Some(v),
            Number::Signed(v) => u64::try_from(v).ok(),
            Number::Float(v) if v.fract() == 0.0 && (0.0..1.8446744073709552e19).contains(&v) => {
                Some(v as u64)
            }
            Number::Float(_) => None,
        }
    }

    fn as_i64(self) -> Option<i64> {
        match self {
            Number::Signed(v) => Some(v),
            Number::Unsigned(v) => i64::try_from(v).ok(),
            Number::Float(v)
                if v.fract() == 0.0
                    && (-9.223372036854776e18..9.223372036854776e18).contains(&v) =>
            {
                Some(v as i64)
            }
            Number::Float(_) => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::Signed(v) => v as f64,
            Number::Unsigned(v) => v as f64,
            Number::Float(v) => v,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Number::Signed(v) => v.fmt(f),
            Number::Unsigned(v) => v.fmt(f),
            Number::Float(v) => v.fmt(f),
        }
    }
}

/// A hex id of the length its field requires (16 bytes for trace ids, 8 for span ids),
/// or empty; `None` when it is neither.
fn decode_id(field: &str, text: &str) -> Option<Vec<u8>> {
    let expected = if field.ends_with("trace_id") { 16 } else { 8 };
    if text.is_empty() {
        return Some(Vec::new());
    }
    if text.len() != expected * 2 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Base64 as proto3 JSON allows it: standard or URL-safe alphabet, padded or not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard
        .decode(text)
        .or_else(|_| url_safe.decode(text))
        .ok()
}

#[cfg(test)]
mod tests;
