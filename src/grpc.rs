//! The parts of gRPC (over HTTP/2) that sieve speaks itself: message framing, status
//! codes, `grpc-message` percent-encoding, `grpc-timeout`, and `google.rpc.Status`
//! details with `RetryInfo`, per the gRPC HTTP/2 protocol spec and OTLP's use of it.
//!
//! sieve frames gRPC itself on top of hyper rather than through tonic's server and client
//! because tonic (0.14) inflates compressed messages with an unbounded copy before it
//! checks the size limit (a compression bomb then costs gigabytes), fixes the gzip level
//! at 6, and would decode every request into prost types; sieve needs the raw request
//! bytes (see [`crate::model`]). tonic remains the OTLP client and server in the tests.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use std::time::Duration;

/// gRPC status codes used here.
pub mod code {
    pub const OK: i32 = 0;
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const DATA_LOSS: i32 = 15;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Whether OTLP says a client should retry after this status. `RESOURCE_EXHAUSTED` is
/// retryable only when the server sent `RetryInfo`.
pub fn is_retryable(code: i32, has_retry_info: bool) -> bool {
    matches!(
        code,
        code::CANCELLED
            | code::DEADLINE_EXCEEDED
            | code::ABORTED
            | code::OUT_OF_RANGE
            | code::UNAVAILABLE
            | code::DATA_LOSS
    ) || (code == code::RESOURCE_EXHAUSTED && has_retry_info)
}

/// The gRPC code for an HTTP status that came without `grpc-status` (gRPC spec's table).
pub fn code_for_http_status(status: u16) -> i32 {
    match status {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// A length-prefixed message: 1 byte compressed flag, 4 bytes big-endian length, data.
pub fn frame(compressed: bool, message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(u8::from(compressed));
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// A gRPC request body that is not exactly one well-formed message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("gRPC message shorter than its 5-byte prefix")]
    Truncated,
    #[error("gRPC message length {declared} does not match the {actual} bytes received")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("gRPC message flag {0} is not 0 or 1")]
    BadFlag(u8),
}

/// Splits a unary request body into (compressed?, message).
pub fn unframe(body: &Bytes) -> Result<(bool, Bytes), FrameError> {
    if body.len() < 5 {
        return Err(FrameError::Truncated);
    }
    let flag = body[0];
    if flag > 1 {
        return Err(FrameError::BadFlag(flag));
    }
    let declared = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if declared != body.len() - 5 {
        return Err(FrameError::LengthMismatch {
            declared,
            actual: body.len() - 5,
        });
    }
    Ok((flag == 1, body.slice(5..)))
}

/// The declared length of the message starting `body` (to refuse oversized ones early).
pub fn declared_length(prefix: &[u8]) -> Option<usize> {
    (prefix.len() >= 5)
        .then(|| u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize)
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// A `google.rpc.Status`, with `RetryInfo` when `retry_after` is set.
pub fn status_message(code: i32, message: &str, retry_after: Option<Duration>) -> RpcStatus {
    let details = retry_after
        .map(|delay| {
            let info = RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: delay.as_secs() as i64,
                    nanos: delay.subsec_nanos() as i32,
                }),
            };
            vec![Any {
                type_url: RETRY_INFO_TYPE.into(),
                value: info.encode_to_vec(),
            }]
        })
        .unwrap_or_default();
    RpcStatus {
        code,
        message: message.into(),
        details,
    }
}

/// The `grpc-status-details-bin` header value for a status.
pub fn status_details_header(status: &RpcStatus) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec())
}

/// The server's `RetryInfo` delay from a `grpc-status-details-bin` header value.
pub fn retry_delay_from_details(header: &str) -> Option<Duration> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let status = RpcStatus::decode(bytes.as_slice()).ok()?;
    let detail = status
        .details
        .iter()
        .find(|d| d.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(detail.value.as_slice())
        .ok()?
        .retry_delay?;
    Some(Duration::new(
        delay.seconds.max(0) as u64,
        delay.nanos.max(0) as u32,
    ))
}

/// Percent-encodes a `grpc-message` value (everything outside printable ASCII, and `%`).
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded `grpc-message`; malformed escapes are kept as they are.
pub fn decode_message(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `grpc-timeout` header value (milliseconds).
pub fn timeout_header(timeout: Duration) -> String {
    format!("{}m", timeout.as_millis().min(99_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let framed = frame(true, b"abc");
        assert_eq!(unframe(&framed), Ok((true, Bytes::from_static(b"abc"))));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut framed = frame(false, b"abc").to_vec();
        framed.push(0);
        assert_eq!(
            unframe(&Bytes::from(framed)),
            Err(FrameError::LengthMismatch {
                declared: 3,
                actual: 4
            })
        );
        assert_eq!(
            unframe(&Bytes::from_static(&[0, 0])),
            Err(FrameError::Truncated)
        );
    }

    #[test]
    fn retry_info_round_trips_through_the_header() {
        let status = status_message(code::UNAVAILABLE, "busy", Some(Duration::from_millis(1500)));
        assert_eq!(
            retry_delay_from_details(&status_details_header(&status)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_delay_from_details("!!"), None);
    }

    #[test]
    fn messages_are_percent_encoded() {
        let text = "queue full: 100% — retry";
        assert_eq!(decode_message(&encode_message(text)), text);
        assert!(encode_message(text).is_ascii());
    }

    #[test]
    fn retryable_codes_follow_otlp() {
        assert!(is_retryable(code::UNAVAILABLE, false));
        assert!(!is_retryable(code::RESOURCE_EXHAUSTED, false));
        assert!(is_retryable(code::RESOURCE_EXHAUSTED, true));
        assert!(!is_retryable(code::INVALID_ARGUMENT, false));
    }
}
