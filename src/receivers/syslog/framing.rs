//! TCP framing per RFC 6587: octet counting (`MSG-LEN SP MSG`, §3.4.1) and non-transparent
//! framing (messages ended by LF, or NUL, §3.4.2). Each frame's method is chosen by its
//! first byte: a digit starts octet counting, anything else is non-transparent, so
//! senders may use either on the same port.
//!
//! Limits: a frame longer than `max_message_size` is truncated (the rest skipped, not
//! buffered) or rejected, as configured. A length prefix that is not a number of at most
//! ten digits cannot be resynchronised: it ends the connection. Buffered data never
//! exceeds `max_message_size` plus one read.

use bytes::{Buf, BytesMut};

/// What to do with a message longer than `max_message_size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// Keep the first `max_message_size` bytes (counted as truncated).
    #[default]
    Truncate,
    /// Drop the message (counted).
    Reject,
}

/// The byte that ends a non-transparently framed message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub enum Trailer {
    /// Line feed (a preceding CR is removed too).
    #[default]
    LF,
    /// NUL.
    NUL,
}

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message; `truncated` when it was cut at `max_message_size`.
    Message { bytes: Vec<u8>, truncated: bool },
    /// A message over the limit that was dropped.
    Rejected,
}

/// A framing error after which the stream cannot be followed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FramingError {
    /// The octet count is not a number of at most 10 digits followed by a space.
    BadLength,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Skipping the rest of an oversized octet-counted frame.
    Skipping(u64),
    /// Skipping the rest of an oversized non-transparent frame up to its trailer.
    SkippingToTrailer,
}

pub struct Decoder {
    trailer: u8,
    max: usize,
    oversize: Oversize,
    state: State,
}

impl Decoder {
    pub fn new(trailer: Trailer, max: usize, oversize: Oversize) -> Decoder {
        let trailer = match trailer {
            Trailer::LF => b'\n',
            Trailer::NUL => 0,
        };
        Decoder {
            trailer,
            max,
            oversize,
            state: State::Idle,
        }
    }

    /// The next frame from `buf`, consuming it; `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        loop {
            match self.state {
                State::Skipping(left) => {
                    let n = left.min(buf.len() as u64);
                    buf.advance(n as usize);
                    if n < left {
                        self.state = State::Skipping(left - n);
                        return Ok(None);
                    }
                    self.state = State::Idle;
                }
                State::SkippingToTrailer => match buf.iter().position(|&b| b == self.trailer) {
                    Some(end) => {
                        buf.advance(end + 1);
                        self.state = State::Idle;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
                State::Idle => {
                    while buf
                        .first()
                        .is_some_and(|&b| b == self.trailer || b == b'\r' || b == b'\n')
                    {
                        buf.advance(1);
                    }
                    return match buf.first() {
                        None => Ok(None),
                        Some(b) if b.is_ascii_digit() => self.octet_counted(buf),
                        Some(_) => Ok(self.non_transparent(buf)),
                    };
                }
            }
        }
    }

    fn octet_counted(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        let Some(space) = buf.iter().take(11).position(|&b| b == b' ') else {
            if buf.len() > 10 || buf.iter().any(|b| !b.is_ascii_digit()) {
                return Err(FramingError::BadLength);
            }
            return Ok(None);
        };
        let digits = &buf[..space];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::BadLength);
        }
        let length: u64 = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(FramingError::BadLength)?;
        let length_usize = usize::try_from(length).unwrap_or(usize::MAX);
        if length_usize > self.max {
            return Ok(match self.oversize {
                Oversize::Truncate if buf.len() < space + 1 + self.max => None,
                Oversize::Truncate => {
                    buf.advance(space + 1);
                    self.state = State::Skipping(length - self.max as u64);
                    Some(Frame::Message {
                        bytes: buf.split_to(self.max).to_vec(),
                        truncated: true,
                    })
                }
                Oversize::Reject => {
                    buf.advance(space + 1);
                    self.state = State::Skipping(length);
                    Some(Frame::Rejected)
                }
            });
        }
        if buf.len() < space + 1 + length_usize {
            return Ok(None);
        }
        buf.advance(space + 1);
        Ok(Some(Frame::Message {
            bytes: buf.split_to(length_usize).to_vec(),
            truncated: false,
        }))
    }

    fn non_transparent(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let limit = buf.len().min(self.max + 1);
        match buf[..limit].iter().position(|&b| b == self.trailer) {
            Some(end) => {
                let mut bytes = buf.split_to(end + 1).to_vec();
                bytes.pop();
                if self.trailer == b'\n' && bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                Some(Frame::Message {
                    bytes,
                    truncated: false,
                })
            }
            None if buf.len() > self.max => {
                self.state = State::SkippingToTrailer;
                match self.oversize {
                    Oversize::Truncate => Some(Frame::Message {
                        bytes: buf.split_to(self.max).to_vec(),
                        truncated: true,
                    }),
                    Oversize::Reject => {
                        buf.advance(self.max);
                        Some(Frame::Rejected)
                    }
                }
            }
            None => None,
        }
    }

    /// At end of stream: a non-transparent message without its trailer is still a message;
    /// a partial octet-counted frame is reported as truncated.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Result<Frame, &'static str>> {
        if buf.is_empty() || self.state != State::Idle {
            return None;
        }
        if buf[0].is_ascii_digit() {
            buf.clear();
            return Some(Err("truncated_frame"));
        }
        let mut bytes = buf.split().to_vec();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        Some(Ok(Frame::Message {
            bytes,
            truncated: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(decoder: &mut Decoder, input: &[u8]) -> Vec<Result<Frame, FramingError>> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    fn message(text: &str) -> Result<Frame, FramingError> {
        Ok(Frame::Message {
            bytes: text.as_bytes().to_vec(),
            truncated: false,
        })
    }

    #[test]
    fn octet_counting_keeps_newlines_inside_a_message() {
        let mut d = Decoder::new(Trailer::LF, 100, Oversize::Truncate);
        assert_eq!(
            frames(&mut d, b"11 hello\nworld5 again"),
            vec![message("hello\nworld"), message("again")]
        );
    }

    #[test]
    fn lf_framing_splits_lines_and_drops_cr() {
        let mut d = Decoder::new(Trailer::LF, 100, Oversize::Truncate);
        assert_eq!(
            frames(&mut d, b"<1>a\r\n<2>b\n\n<3>c"),
            vec![message("<1>a"), message("<2>b")]
        );
        let mut rest = BytesMut::from(&b"<3>c"[..]);
        assert_eq!(
            d.finish(&mut rest),
            Some(Ok(Frame::Message {
                bytes: b"<3>c".to_vec(),
                truncated: false
            }))
        );
    }

    #[test]
    fn nul_trailer() {
        let mut d = Decoder::new(Trailer::NUL, 100, Oversize::Truncate);
        assert_eq!(
            frames(&mut d, b"<1>a\nb\0<2>c\0"),
            vec![message("<1>a\nb"), message("<2>c")]
        );
    }

    #[test]
    fn split_reads_reassemble() {
        let mut d = Decoder::new(Trailer::LF, 100, Oversize::Truncate);
        let mut buf = BytesMut::from(&b"12 hello"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b" world!");
        assert_eq!(
            d.decode(&mut buf),
            Ok(Some(Frame::Message {
                bytes: b"hello world!".to_vec(),
                truncated: false
            }))
        );
    }

    #[test]
    fn oversized_frames_are_truncated_or_rejected_without_buffering() {
        let mut d = Decoder::new(Trailer::LF, 4, Oversize::Truncate);
        assert_eq!(
            frames(&mut d, b"10 abcdefghij3 xyz"),
            vec![
                Ok(Frame::Message {
                    bytes: b"abcd".to_vec(),
                    truncated: true
                }),
                message("xyz")
            ]
        );
        let mut d = Decoder::new(Trailer::LF, 4, Oversize::Reject);
        assert_eq!(
            frames(&mut d, b"abcdefgh\nok\n"),
            vec![Ok(Frame::Rejected), message("ok")]
        );
    }

    #[test]
    fn a_huge_length_prefix_is_truncated_not_allocated() {
        let mut d = Decoder::new(Trailer::LF, 8, Oversize::Truncate);
        let out = frames(&mut d, b"9223372036 0123456789");
        assert_eq!(
            out,
            vec![Ok(Frame::Message {
                bytes: b"01234567".to_vec(),
                truncated: true
            })]
        );
        let mut d = Decoder::new(Trailer::LF, 8, Oversize::Truncate);
        assert_eq!(
            frames(&mut d, b"9223372036854775808 x"),
            vec![Err(FramingError::BadLength)]
        );
        assert_eq!(
            frames(
                &mut Decoder::new(Trailer::LF, 8, Oversize::Truncate),
                b"12x4 hi"
            ),
            vec![Err(FramingError::BadLength)]
        );
    }

    #[test]
    fn a_partial_octet_frame_at_eof_is_reported() {
        let mut d = Decoder::new(Trailer::LF, 100, Oversize::Truncate);
        let mut buf = BytesMut::from(&b"20 short"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.finish(&mut buf), Some(Err("truncated_frame")));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = Decoder::new(Trailer::LF, 32, Oversize::Truncate);
            let mut buf = BytesMut::new();
            for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(Frame::Message { bytes, .. })) => prop_assert!(bytes.len() <= 32),
                        Ok(Some(Frame::Rejected)) => {}
                        Ok(None) => break,
                        Err(_) => { buf.clear(); d = Decoder::new(Trailer::LF, 32, Oversize::Truncate); break }
                    }
                }
                prop_assert!(buf.len() <= 32 + 64 + 11);
            }
        }
    }
}
