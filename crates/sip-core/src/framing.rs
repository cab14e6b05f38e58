//! Cutting a byte stream (TCP, TLS, WebSocket text) into SIP messages by Content-Length
//! (RFC 3261 §18.3), with limits so that a peer cannot make us buffer without end, and
//! with the CRLF keep-alives of RFC 5626 §3.5.1 recognised between messages.

use bytes::{Buf, Bytes, BytesMut};

/// What the framer found next in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message: headers and exactly Content-Length bytes of body.
    Message(Bytes),
    /// A double-CRLF keep-alive ping; answer it with a single CRLF.
    Ping,
    /// A single-CRLF keep-alive pong.
    Pong,
}

/// Why the stream cannot be read any further. Every one of these is fatal for the
/// connection: without a trustworthy Content-Length the next message's start is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The header section grew past the limit without an empty line.
    #[error("header section exceeds {limit} bytes")]
    HeadersTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// A message on a stream without Content-Length (RFC 3261 §18.3 makes it mandatory).
    #[error("message without Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length that is not a number, or two that disagree.
    #[error("bad Content-Length: {0}")]
    BadContentLength(String),
    /// A body larger than the limit.
    #[error("body of {declared} bytes exceeds the limit of {limit}")]
    BodyTooLarge {
        /// Content-Length as declared.
        declared: usize,
        /// The limit in force.
        limit: usize,
    },
}

/// Limits on what one message may occupy.
#[derive(Debug, Clone, Copy)]
pub struct FramerLimits {
    /// Largest header section (start line and headers).
    pub max_headers: usize,
    /// Largest body.
    pub max_body: usize,
}

impl Default for FramerLimits {
    fn default() -> Self {
        FramerLimits {
            max_headers: 16 * 1024,
            max_body: 64 * 1024,
        }
    }
}

/// A push framer: feed it what arrives, take out what is complete.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: BytesMut,
    limits: FramerLimits,
    /// How far the search for the end of headers got, so that a message arriving byte
    /// by byte is not scanned again from the start each time (quadratic work).
    scanned: usize,
}

impl StreamFramer {
    /// A framer with the given limits.
    pub fn new(limits: FramerLimits) -> Self {
        StreamFramer {
            buf: BytesMut::new(),
            limits,
            scanned: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held, waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Keep-alives and stray line ends between messages.
        loop {
            match &self.buf[..] {
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    self.buf.advance(4);
                    self.scanned = 0;
                    return Ok(Some(Frame::Ping));
                }
                // Could still become a ping: wait for the next byte.
                [b'\r'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                // A CRLF that does not start a ping is a pong, whatever follows it, so
                // that how the stream was split never changes the answer (found by fuzzing).
                [b'\r', b'\n', ..] => {
                    self.buf.advance(2);
                    self.scanned = 0;
                    return Ok(Some(Frame::Pong));
                }
                [b'\n', ..] => {
                    self.buf.advance(1);
                    self.scanned = 0;
                }
                _ => break,
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let Some(body_start) = self.find_headers_end() else {
            if self.buf.len() > self.limits.max_headers {
                return Err(FramingError::HeadersTooLarge {
                    limit: self.limits.max_headers,
                });
            }
            return Ok(None);
        };
        if body_start > self.limits.max_headers {
            return Err(FramingError::HeadersTooLarge {
                limit: self.limits.max_headers,
            });
        }
        let length = content_length(&self.buf[..body_start])?;
        if length > self.limits.max_body {
            return Err(FramingError::BodyTooLarge {
                declared: length,
                limit: self.limits.max_body,
            });
        }
        let total = body_start + length;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.scanned = 0;
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }

    /// Finds the empty line (CRLF CRLF, or LF LF from lax peers); returns where the body starts.
    fn find_headers_end(&mut self) -> Option<usize> {
        let b = &self.buf[..];
        let from = self.scanned.saturating_sub(3);
        for i in memchr::memchr_iter(b'\n', &b[from..]).map(|i| from + i) {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        self.scanned = b.len();
        None
    }
}

/// Finds Content-Length (or `l`) in a header section. Only its own lines are read.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    for line in head.split(|c| *c == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|c| *c == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = trim(&line[colon + 1..]);
            let text = String::from_utf8_lossy(value);
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(crate::scan::parse_u64)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| FramingError::BadContentLength(format!("\"{text}\"")))?;
            if found.is_some_and(|f| f != n) {
                return Err(FramingError::BadContentLength(format!(
                    "two values, {} and {n}",
                    found.unwrap_or_default()
                )));
            }
            found = Some(n);
        }
    }
    found.ok_or(FramingError::MissingContentLength)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn many_messages_in_one_read() {
        let mut f = StreamFramer::default();
        let mut data = Vec::new();
        for _ in 0..3 {
            data.extend_from_slice(OPTIONS);
        }
        f.push(&data);
        for _ in 0..3 {
            assert_eq!(
                f.next_frame(),
                Ok(Some(Frame::Message(Bytes::from_static(OPTIONS))))
            );
        }
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn one_message_across_many_reads() {
        let mut f = StreamFramer::default();
        for (i, byte) in OPTIONS.iter().enumerate() {
            f.push(&[*byte]);
            let got = f.next_frame();
            if i + 1 < OPTIONS.len() {
                assert_eq!(got, Ok(None), "complete too early at byte {i}");
            } else {
                assert_eq!(got, Ok(Some(Frame::Message(Bytes::from_static(OPTIONS)))));
            }
        }
    }

    #[test]
    fn keepalives_between_messages() {
        let mut f = StreamFramer::default();
        f.push(b"\r\n\r\n");
        f.push(OPTIONS);
        f.push(b"\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Pong)));
        assert_eq!(f.next_frame(), Ok(None));
    }

    #[test]
    fn crlf_then_cr_frames_the_same_however_split() {
        // Fuzzer find: "\r\n\rL:0\n\n" once framed differently whole and byte by byte.
        let input = b"\r\n\rL:0\n\n";
        let frames = |chunks: Vec<&[u8]>| {
            let mut f = StreamFramer::default();
            let mut out = Vec::new();
            for c in chunks {
                f.push(c);
                while let Ok(Some(fr)) = f.next_frame() {
                    out.push(fr);
                }
            }
            (out, f.next_frame())
        };
        let whole = frames(vec![&input[..]]);
        let bytewise = frames(input.chunks(1).collect());
        assert_eq!(whole, bytewise);
        assert_eq!(whole.0.first(), Some(&Frame::Pong));
        let mut f = StreamFramer::default();
        f.push(b"\r\n\r");
        assert_eq!(f.next_frame(), Ok(None), "may still become a ping");
        f.push(b"\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
    }

    #[test]
    fn limits_and_errors() {
        let mut f = StreamFramer::new(FramerLimits {
            max_headers: 64,
            max_body: 10,
        });
        f.push(&[b'A'; 100]);
        assert_eq!(
            f.next_frame(),
            Err(FramingError::HeadersTooLarge { limit: 64 })
        );

        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::MissingContentLength));

        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n");
        assert_eq!(
            f.next_frame(),
            Err(FramingError::BadContentLength("\"-999\"".into()))
        );

        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\n");
        assert_eq!(
            f.next_frame(),
            Err(FramingError::BadContentLength(
                "two values, 13 and 5".into()
            ))
        );

        let mut f = StreamFramer::new(FramerLimits {
            max_headers: 1024,
            max_body: 10,
        });
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 9999\r\n\r\n");
        assert_eq!(
            f.next_frame(),
            Err(FramingError::BodyTooLarge {
                declared: 9999,
                limit: 10
            })
        );
    }
}
