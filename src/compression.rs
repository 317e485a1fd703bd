//! Request and response body compression: `gzip`, `zstd` and `deflate` (zlib), with the
//! decompressed size bounded while inflating.
//!
//! Inflation reads through `Read::take(limit + 1)`: a compression bomb stops at the limit
//! with [`InflateError::TooLarge`] after at most `limit` bytes of output, never after
//! inflating the whole thing. zstd's window is also capped so a frame header cannot make
//! the decoder allocate more than the limit. gzip uses flate2's `zlib-rs` backend, the
//! fastest maintained pure-Rust deflate; its level is configurable (tonic fixes it at 6).

use serde::Deserialize;
use std::io::{Read, Write};

/// A body encoding named in `Content-Encoding` or `grpc-encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    #[serde(alias = "identity", alias = "")]
    None,
    /// gzip (RFC 1952).
    #[default]
    Gzip,
    /// Zstandard (RFC 8878).
    Zstd,
    /// zlib-wrapped deflate (RFC 1950), as HTTP's `deflate` means.
    Deflate,
}

impl Compression {
    /// Reads a `Content-Encoding`/`grpc-encoding` value; `None` for an unsupported one.
    pub fn from_header(value: &str) -> Option<Compression> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Some(Compression::None),
            "gzip" | "x-gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "deflate" => Some(Compression::Deflate),
            _ => None,
        }
    }

    /// The header value, or `None` for no compression.
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::Deflate => Some("deflate"),
        }
    }

    /// Compresses `data`; `level` of `None` uses sieve's default: gzip and deflate 1 (the
    /// fastest; level 6, tonic's fixed choice, costs several times the CPU: see the
    /// README's load figures), zstd 3.
    pub fn compress(self, data: &[u8], level: Option<i32>) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let level = flate2::Compression::new(level.map_or(1, |l| l.clamp(0, 9) as u32));
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), level);
                encoder
                    .write_all(data)
                    .expect("writing to a Vec cannot fail");
                encoder.finish().expect("writing to a Vec cannot fail")
            }
            Compression::Deflate => {
                let level = flate2::Compression::new(level.map_or(1, |l| l.clamp(0, 9) as u32));
                let mut encoder =
                    flate2::write::ZlibEncoder::new(Vec::with_capacity(data.len() / 4), level);
                encoder
                    .write_all(data)
                    .expect("writing to a Vec cannot fail");
                encoder.finish().expect("writing to a Vec cannot fail")
            }
            Compression::Zstd => compress_zstd(data, level.unwrap_or(3)),
        }
    }

    /// Decompresses `data`, failing once the output would exceed `limit` bytes.
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        match self {
            Compression::None => {
                if data.len() > limit {
                    return Err(InflateError::TooLarge { limit });
                }
                Ok(data.to_vec())
            }
            Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), limit),
            Compression::Deflate => read_bounded(flate2::read::ZlibDecoder::new(data), limit),
            Compression::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::with_buffer(data)
                    .map_err(|e| InflateError::Corrupt(e.to_string()))?;
                decoder
                    .window_log_max(window_log_for(limit))
                    .map_err(|e| InflateError::Corrupt(e.to_string()))?;
                // A frame whose window exceeds the cap declares more content than the
                // limit allows: that is an oversized body, not a corrupt one.
                read_bounded(decoder, limit).map_err(|e| match e {
                    InflateError::Corrupt(m) if m.contains("too much memory") => {
                        InflateError::TooLarge { limit }
                    }
                    other => other,
                })
            }
        }
    }
}

thread_local! {
    /// One zstd context per thread and level: a context holds megabytes of tables, and
    /// creating one per request made RSS climb with concurrent exports.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
}

fn compress_zstd(data: &[u8], level: i32) -> Vec<u8> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((
                level,
                zstd::bulk::Compressor::new(level).expect("zstd accepts levels 1 to 22"),
            ));
        }
        let (_, compressor) = slot.as_mut().expect("set above");
        compressor
            .compress(data)
            .expect("zstd compression of a buffer cannot fail")
    })
}

/// The smallest zstd window (log2) that covers `limit`, at most 8 MiB (2^23, what zstd
/// levels up to 19 use), so a hostile frame header cannot make the decoder allocate more.
fn window_log_for(limit: usize) -> u32 {
    let bits = usize::BITS - limit.max(1).leading_zeros();
    bits.clamp(10, 23)
}

fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| InflateError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(InflateError::TooLarge { limit });
    }
    Ok(out)
}

/// Why a body could not be decompressed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("corrupt compressed body: {0}")]
    Corrupt(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_codec() {
        let data = b"the same words again and again and again".repeat(100);
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Deflate,
        ] {
            let packed = codec.compress(&data, None);
            assert_eq!(
                codec.decompress(&packed, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 64 * 1024 * 1024];
        for codec in [Compression::Gzip, Compression::Zstd, Compression::Deflate] {
            let bomb = codec.compress(&zeros, Some(9));
            assert!(
                bomb.len() < 1024 * 1024,
                "{codec:?} bomb is small: {}",
                bomb.len()
            );
            assert_eq!(
                codec.decompress(&bomb, 1024 * 1024),
                Err(InflateError::TooLarge { limit: 1024 * 1024 }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for codec in [Compression::Gzip, Compression::Zstd, Compression::Deflate] {
            assert!(
                matches!(
                    codec.decompress(b"not compressed at all", 1000),
                    Err(InflateError::Corrupt(_))
                ),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn header_values_parse() {
        assert_eq!(Compression::from_header("GZIP"), Some(Compression::Gzip));
        assert_eq!(
            Compression::from_header("identity"),
            Some(Compression::None)
        );
        assert_eq!(Compression::from_header("br"), None);
    }
}
