//! Writing messages: a builder that produces correct wire bytes, and the RFC 3261
//! §8.2.6 response builder every server needs. What the builder writes is parsed back
//! before it is handed out, so a built [`Message`] is as trustworthy as a received one.

use crate::error::ParseError;
use crate::message::Message;
use crate::method::Method;
use crate::name::HeaderName;
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::{self, Write as _};

/// Builds a request or response header by header.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    head: BytesMut,
    body: Option<(String, Bytes)>,
    error: Option<String>,
}

/// The reason phrase RFC 3261 §21 gives a status code (or a generic one per class).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match code / 100 {
            1 => "Progress",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

impl MessageBuilder {
    /// Starts a request line.
    pub fn request(method: &Method, uri: &str) -> Self {
        let mut b = Self::empty();
        let _ = write!(b, "{method} {uri} SIP/2.0\r\n");
        if uri.bytes().any(|c| c <= b' ') {
            b.error = Some(format!("Request-URI \"{uri}\" contains white space"));
        }
        b
    }

    /// Starts a status line; an empty `reason` takes the standard phrase.
    pub fn response(code: u16, reason: &str) -> Self {
        let mut b = Self::empty();
        let reason = if reason.is_empty() {
            reason_phrase(code)
        } else {
            reason
        };
        let _ = write!(b, "SIP/2.0 {code} {reason}\r\n");
        if reason.bytes().any(|c| c == b'\r' || c == b'\n') {
            b.error = Some("reason phrase contains a line break".into());
        }
        b
    }

    fn empty() -> Self {
        MessageBuilder {
            head: BytesMut::with_capacity(512),
            body: None,
            error: None,
        }
    }

    /// Appends a header. A name that is not a token or a value with a line break is an
    /// error reported by [`MessageBuilder::build`]: the builder never writes a message
    /// whose header could smuggle in another header.
    pub fn header(mut self, name: &str, value: impl fmt::Display) -> Self {
        self.push(name, value);
        self
    }

    /// Appends a header by its known name.
    pub fn typed(self, name: HeaderName, value: impl fmt::Display) -> Self {
        let n = name.as_str().unwrap_or("X-Unknown");
        self.header(n, value)
    }

    /// [`MessageBuilder::header`] through `&mut self`, for loops.
    pub fn push(&mut self, name: &str, value: impl fmt::Display) {
        if !crate::scan::is_token_str(name) {
            self.error
                .get_or_insert(format!("header name \"{name}\" is not a token"));
            return;
        }
        let start = self.head.len();
        let _ = write!(self, "{name}: {value}");
        if self.head[start..]
            .iter()
            .any(|c| *c == b'\r' || *c == b'\n')
        {
            self.head.truncate(start);
            self.error
                .get_or_insert(format!("value of header {name} contains a line break"));
            return;
        }
        self.head.put_slice(b"\r\n");
    }

    /// Sets the body and its Content-Type. Content-Length is always written by `build`.
    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.body = Some((content_type.to_string(), body.into()));
        self
    }

    /// The finished bytes: headers, Content-Type (with a body), Content-Length, body.
    pub fn into_bytes(mut self) -> Result<Bytes, ParseError> {
        if let Some(e) = self.error.take() {
            return Err(ParseError::Malformed(e));
        }
        let body = match self.body.take() {
            Some((ct, body)) => {
                self.push("Content-Type", ct);
                body
            }
            None => Bytes::new(),
        };
        if let Some(e) = self.error.take() {
            return Err(ParseError::Malformed(e));
        }
        let _ = write!(self, "Content-Length: {}\r\n\r\n", body.len());
        self.head.put_slice(&body);
        Ok(self.head.freeze())
    }

    /// Writes and parses the message.
    pub fn build(self) -> Result<Message, ParseError> {
        Message::parse(self.into_bytes()?)
    }
}

impl fmt::Write for MessageBuilder {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.head.put_slice(s.as_bytes());
        Ok(())
    }
}

/// Starts a response to `request` as RFC 3261 §8.2.6.2 requires: every Via, From,
/// To, Call-ID and CSeq copied; a To tag added when `to_tag` is given and the request
/// had none (never on 100 Trying, which the caller simply does not pass a tag for).
/// Record-Route is copied for 18x/2xx to dialog-creating requests (§12.1.1).
/// The status code of a response this crate's builder wrote (`SIP/2.0 NNN ...`), read
/// from its start line without parsing the message: for handing our own responses to
/// [`crate::transaction::TransactionLayer::send_built_response`]. `None` when the bytes
/// do not start like a response.
pub fn status_of_built(bytes: &[u8]) -> Option<u16> {
    match bytes.strip_prefix(b"SIP/2.0 ")? {
        [a, b, c, b' ', ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

pub fn response_to(request: &Message, code: u16, to_tag: Option<&str>) -> MessageBuilder {
    let mut b = MessageBuilder::response(code, "");
    copy_response_headers(request, &mut b, code, to_tag);
    b
}

/// [`response_to`] with a reason phrase of the caller's choosing.
pub fn response_to_with_reason(
    request: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> MessageBuilder {
    let mut b = MessageBuilder::response(code, reason);
    copy_response_headers(request, &mut b, code, to_tag);
    b
}

fn copy_response_headers(
    request: &Message,
    b: &mut MessageBuilder,
    code: u16,
    to_tag: Option<&str>,
) {
    for f in request.headers() {
        let value = crate::scan::unfold(f.value);
        let value = value.as_ref();
        match f.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                b.push(f.name.as_str().unwrap_or(f.name_text), value)
            }
            HeaderName::To => {
                let has_tag = request.to().ok().and_then(|t| t.tag()).is_some();
                match to_tag {
                    Some(tag) if !has_tag && code > 100 => {
                        b.push("To", format_args!("{};tag={tag}", f.value))
                    }
                    _ => b.push("To", f.value),
                }
            }
            HeaderName::RecordRoute if (101..300).contains(&code) => {
                b.push("Record-Route", f.value)
            }
            HeaderName::Timestamp if code == 100 => b.push("Timestamp", f.value),
            _ => {}
        }
    }
}

/// Forms an error response to a request that could not be parsed, by copying the raw
/// Via, From, To, Call-ID and CSeq lines RFC 3261 §8.2.6 needs, as many of them as the
/// request has (RFC 4475 §3.3.1: "ideally, it will respond with a 400" even to a request
/// without Call-ID, From and To). Returns `None` for a response (a response is never
/// answered), for bytes whose first line is not a request line (`METHOD SP ...`: noise
/// is not answered, so the server cannot be used to reflect it), and when neither a
/// Via nor a Call-ID is there: nothing would let the sender match the answer.
pub fn error_response_to_raw(raw: &[u8], code: u16, reason: &str) -> Option<Bytes> {
    if raw.len() >= 4 && raw[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    if !looks_like_request_line(raw) {
        return None;
    }
    let head_end = memchr::memmem::find(raw, b"\r\n\r\n").unwrap_or(raw.len());
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let mut b = MessageBuilder::response(code, reason);
    let mut seen = [false; 5];
    let mut lines = head.split('\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let mut value = line.trim_end_matches('\r').to_string();
        // Unfold continuation lines into one.
        while let Some(next) = lines.peek() {
            if next.starts_with([' ', '\t']) {
                value.push(' ');
                value.push_str(next.trim());
                lines.next();
            } else {
                break;
            }
        }
        let Some((name, v)) = value.split_once(':') else {
            continue;
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes());
        let slot = match name {
            HeaderName::Via => 0,
            HeaderName::From => 1,
            HeaderName::To => 2,
            HeaderName::CallId => 3,
            HeaderName::CSeq => 4,
            _ => continue,
        };
        // Every Via goes back; of the single-valued ones only the first, so that the
        // answer to a message with duplicates (RFC 4475 §3.3.8) is itself well formed.
        if slot > 0 && seen[slot] {
            continue;
        }
        seen[slot] = true;
        b.push(name.as_str().unwrap_or("X"), v.trim());
    }
    // A Via addresses the answer (and lets the sender match it); a Call-ID at least
    // names the request it answers.
    if seen[0] || seen[3] {
        b.into_bytes().ok()
    } else {
        None
    }
}

/// Whether `raw` starts with a method token followed by a space: what a request line
/// that went wrong later still looks like.
fn looks_like_request_line(raw: &[u8]) -> bool {
    let method_len = raw
        .iter()
        .take_while(|&&c| crate::scan::is_token(c))
        .count();
    method_len > 0 && raw.get(method_len) == Some(&b' ')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_of_built_reads_the_start_line() {
        let request = Message::parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let built = response_to(&request, 486, Some("t")).build().unwrap();
        assert_eq!(status_of_built(built.as_bytes()), Some(486));
        assert_eq!(status_of_built(b"SIP/2.0 20 OK\r\n"), None);
        assert_eq!(status_of_built(b"OPTIONS sip:a@b SIP/2.0\r\n"), None);
    }

    #[test]
    fn error_responses_copy_what_there_is() {
        // RFC 4475 §3.3.1 (insuf.dat): no Call-ID, From or To; the Via addresses a 400.
        let insuf = b"INVITE sip:user@example.com SIP/2.0\r\nCSeq: 193942 INVITE\r\nVia: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\r\nl: 0\r\n\r\n";
        let r =
            Message::parse(error_response_to_raw(insuf, 400, "Bad Request (x)").unwrap()).unwrap();
        assert_eq!(r.status(), Some(400));
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bKkdj.insuf"));
        assert_eq!(r.cseq().unwrap().seq, 193942);
        // No Via but a Call-ID: still answered (to the source, by the caller).
        let no_via = b"INVITE sip:alan@jasomi.com\r\nCall-ID: t.1@192.0.2.1\r\n\r\n";
        let r = error_response_to_raw(no_via, 400, "Bad Request (x)").unwrap();
        assert!(r.starts_with(b"SIP/2.0 400 "));
        // Neither: nothing to match an answer with. Noise and responses: never answered.
        assert!(
            error_response_to_raw(b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n", 400, "x")
                .is_none()
        );
        assert!(error_response_to_raw(b"\x16\x03\x01garbage Call-ID: x\r\n", 400, "x").is_none());
        assert!(error_response_to_raw(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n", 400, "x").is_none());
    }
}
