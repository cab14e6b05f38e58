//! The SIP message: a byte buffer, an index of where each header is, and typed access
//! on demand.
//!
//! [`Message::parse`] reads the start line, finds every header line once (long and
//! compact names, folded lines) and frames the body by Content-Length; it does not look
//! inside header values. Typed accessors ([`Message::top_via`], [`Message::cseq`]...)
//! parse a value when asked, borrowing from the buffer. A proxy that reads five headers
//! of twenty pays for five. [`Message::validate`] checks everything RFC 3261 requires,
//! for the places that must refuse a bad message whole.

use crate::error::ParseError;
use crate::headers::{self, CSeq, Contact, MediaType, NameAddr, Via};
use crate::method::Method;
use crate::name::HeaderName;
use crate::scan::{clip, is_token, parse_u32};
use crate::uri::Uri;
use bytes::Bytes;
use std::fmt;

/// A byte range in the message buffer. u32 keeps the header index small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone)]
enum StartLine {
    Request { method: Method, uri: Span },
    Response { code: u16, reason: Span },
}

/// One entry of the header index.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name: HeaderName,
    name_span: Span,
    value: Span,
}

/// A header as it stands in the message: its name as written and its raw value
/// (leading and trailing white space removed; folded lines still contain their CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderField<'a> {
    /// The recognised name, or `Other`.
    pub name: HeaderName,
    /// The name exactly as written (compact or long, any case).
    pub name_text: &'a str,
    /// The value.
    pub value: &'a str,
}

/// How much a parse may take: a guard against memory and CPU exhaustion.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest whole message accepted.
    pub max_message: usize,
    /// Most header lines accepted.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 65_535,
            max_headers: 256,
        }
    }
}

/// A parsed SIP request or response. Cloning is cheap for the buffer (reference
/// counted) and copies only the small header index.
#[derive(Clone)]
pub struct Message {
    buf: Bytes,
    start: StartLine,
    headers: Vec<Entry>,
    body: Span,
    content_length: Option<usize>,
}

impl Message {
    /// Parses one message from a datagram (or a frame the stream framer cut). With
    /// Content-Length, the body is that many bytes and anything after is ignored
    /// (RFC 3261 §18.3); without it, the body is the rest of the buffer.
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        Self::parse_with(buf, &Limits::default())
    }

    /// [`Message::parse`] with explicit limits.
    pub fn parse_with(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        if buf.len() > limits.max_message {
            return Err(ParseError::malformed(format_args!(
                "message of {} bytes exceeds the limit of {}",
                buf.len(),
                limits.max_message
            )));
        }
        let b = &buf[..];
        // RFC 3261 §7.5: CRLFs before the start line are ignored.
        let mut pos = b.iter().take_while(|c| matches!(c, b'\r' | b'\n')).count();
        let Some(line_end) = memchr::memchr(b'\n', &b[pos..]).map(|i| pos + i) else {
            return Err(ParseError::malformed(format_args!(
                "no end of line after the start line"
            )));
        };
        let line_stop = if line_end > pos && b[line_end - 1] == b'\r' {
            line_end - 1
        } else {
            line_end
        };
        let start = parse_start_line(b, pos, line_stop)?;
        pos = line_end + 1;

        let mut headers = Vec::with_capacity(24);
        let mut content_length: Option<usize> = None;
        let body_start = loop {
            match b.get(pos) {
                None => {
                    return Err(ParseError::malformed(format_args!(
                        "headers not ended by an empty line"
                    )));
                }
                Some(b'\n') => break pos + 1,
                Some(b'\r') if b.get(pos + 1) == Some(&b'\n') => break pos + 2,
                _ => {}
            }
            if headers.len() >= limits.max_headers {
                return Err(ParseError::malformed(format_args!(
                    "more than {} header lines",
                    limits.max_headers
                )));
            }
            let (entry, next) = index_header(b, pos)?;
            if entry.name == HeaderName::ContentLength {
                let v = std::str::from_utf8(&b[entry.value.range()]).unwrap_or("");
                let n = crate::scan::parse_u64(v)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        ParseError::header("Content-Length", format!("\"{v}\" is not a length"))
                    })?;
                if content_length.is_some() {
                    return Err(ParseError::Duplicate("Content-Length"));
                }
                content_length = Some(n);
            }
            headers.push(entry);
            pos = next;
        };
        if let Err(e) = std::str::from_utf8(&b[..body_start]) {
            return Err(ParseError::malformed(format_args!(
                "header section is not valid UTF-8 at byte {}",
                e.valid_up_to()
            )));
        }
        let available = b.len() - body_start;
        let body_len = match content_length {
            Some(n) if n > available => {
                return Err(ParseError::Truncated {
                    declared: n,
                    got: available,
                });
            }
            Some(n) => n,
            None => available,
        };
        let end = body_start + body_len;
        let buf = if end < buf.len() {
            buf.slice(..end)
        } else {
            buf
        };
        Ok(Message {
            buf,
            start,
            headers,
            body: Span::new(body_start, end),
            content_length,
        })
    }

    /// The whole message as it is on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    fn text(&self, s: Span) -> &str {
        // The header section was checked to be UTF-8 in `parse`, and spans end on ASCII
        // delimiters, so this cannot fail; `unwrap_or` keeps that a non-panicking belief.
        std::str::from_utf8(&self.buf[s.range()]).unwrap_or("")
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// The method of a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    /// The Request-URI as written.
    pub fn request_uri_str(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(self.text(*uri)),
            StartLine::Response { .. } => None,
        }
    }
    /// The Request-URI, parsed (it was validated in `parse`).
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        self.request_uri_str().and_then(|s| Uri::parse(s).ok())
    }
    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }
    /// The reason phrase of a response (any UTF-8 text, possibly empty).
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(self.text(*reason)),
            StartLine::Request { .. } => None,
        }
    }
    /// The body: exactly Content-Length bytes, or the rest of the datagram without it.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.range()]
    }
    /// The body as a cheap `Bytes` handle.
    pub fn body_bytes(&self) -> Bytes {
        self.buf.slice(self.body.range())
    }
    /// The Content-Length header's value, when present.
    pub fn content_length(&self) -> Option<usize> {
        self.content_length
    }
    /// Where the headers end and the body starts, in bytes from the start of the buffer.
    pub fn body_offset(&self) -> usize {
        self.body.start as usize
    }

    /// Every header in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderField<'_>> {
        self.headers.iter().map(|e| HeaderField {
            name: e.name,
            name_text: self.text(e.name_span),
            value: self.text(e.value),
        })
    }
    /// How many header lines the message has.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }
    /// The raw value of the first header called `name`.
    pub fn get(&self, name: HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|e| e.name == name)
            .map(|e| self.text(e.value))
    }
    /// The raw values of every header called `name`, in order.
    pub fn get_all(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |e| e.name == name)
            .map(|e| self.text(e.value))
    }
    /// The raw value of the first header with this name, known or not, compact or long.
    pub fn get_by_name<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.get_all_by_name(name).next()
    }
    /// The raw values of every header with this name, known or not.
    pub fn get_all_by_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let known = HeaderName::from_bytes(name.as_bytes());
        self.headers
            .iter()
            .filter(move |e| {
                if known == HeaderName::Other {
                    e.name == HeaderName::Other && self.text(e.name_span).eq_ignore_ascii_case(name)
                } else {
                    e.name == known
                }
            })
            .map(|e| self.text(e.value))
    }
    /// Each header line with its name: the byte range from the start of the name to the
    /// end of the line, terminator and any folded continuation included. For editing a
    /// message in place of rebuilding it (see [`crate::forward`]).
    pub(crate) fn header_lines(
        &self,
    ) -> impl Iterator<Item = (HeaderName, std::ops::Range<usize>)> + '_ {
        let b = &self.buf[..];
        let body = self.body.start as usize;
        // The empty line that ends the headers is CRLF or a bare LF.
        let blank = if body >= 2 && &b[body - 2..body] == b"\r\n" {
            2
        } else {
            1
        };
        let end = body.saturating_sub(blank);
        self.headers.iter().enumerate().map(move |(i, e)| {
            let stop = self
                .headers
                .get(i + 1)
                .map_or(end, |n| n.name_span.start as usize);
            (
                e.name,
                e.name_span.start as usize..stop.max(e.name_span.start as usize),
            )
        })
    }
    /// How many header lines are called `name`.
    pub fn count(&self, name: HeaderName) -> usize {
        self.headers.iter().filter(|e| e.name == name).count()
    }

    fn single(&self, name: HeaderName) -> Result<Option<&str>, ParseError> {
        let mut it = self.get_all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(ParseError::Duplicate(name.label()));
        }
        Ok(first)
    }
    fn required(&self, name: HeaderName) -> Result<&str, ParseError> {
        self.single(name)?.ok_or(ParseError::Missing(name.label()))
    }

    /// Every Via value, top first, across header lines and comma lists.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> {
        self.get_all(HeaderName::Via)
            .flat_map(headers::split_list)
            .map(Via::parse)
    }
    /// The topmost Via: the one a transaction is matched by.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        self.vias()
            .next()
            .unwrap_or(Err(ParseError::Missing("Via")))
    }
    /// From.
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.required(HeaderName::From)?, "From")
    }
    /// To.
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.required(HeaderName::To)?, "To")
    }
    /// Call-ID, checked against its grammar (`word ["@" word]`).
    pub fn call_id(&self) -> Result<&str, ParseError> {
        headers::parse_call_id(self.required(HeaderName::CallId)?)
    }
    /// CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.required(HeaderName::CSeq)?)
    }
    /// Max-Forwards, when present (0–255).
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.single(HeaderName::MaxForwards)?
            .map(headers::parse_max_forwards)
            .transpose()
    }
    /// Expires, when present (delta-seconds, at most 2³²-1).
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.single(HeaderName::Expires)?
            .map(|v| headers::parse_delta("Expires", v))
            .transpose()
    }
    /// Min-Expires, when present.
    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.single(HeaderName::MinExpires)?
            .map(|v| headers::parse_delta("Min-Expires", v))
            .transpose()
    }
    /// RSeq (RFC 3262), when present.
    pub fn rseq(&self) -> Result<Option<u32>, ParseError> {
        self.single(HeaderName::RSeq)?
            .map(|v| headers::parse_delta("RSeq", v))
            .transpose()
    }
    /// RAck (RFC 3262), when present.
    pub fn rack(&self) -> Result<Option<headers::RAck>, ParseError> {
        self.single(HeaderName::RAck)?
            .map(headers::RAck::parse)
            .transpose()
    }
    /// Content-Type, when present.
    pub fn content_type(&self) -> Result<Option<MediaType<'_>>, ParseError> {
        self.single(HeaderName::ContentType)?
            .map(MediaType::parse)
            .transpose()
    }
    /// Every Contact value (`*` is [`Contact::Star`]).
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, ParseError>> {
        self.get_all(HeaderName::Contact)
            .flat_map(headers::split_list)
            .map(Contact::parse)
    }
    /// Every Route value, in order.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.name_addrs(HeaderName::Route, "Route")
    }
    /// Every Record-Route value, in order.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.name_addrs(HeaderName::RecordRoute, "Record-Route")
    }
    /// Every Path value (RFC 3327), in order.
    pub fn paths(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.name_addrs(HeaderName::Path, "Path")
    }
    fn name_addrs(
        &self,
        name: HeaderName,
        label: &'static str,
    ) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> {
        self.get_all(name)
            .flat_map(headers::split_list)
            .map(move |v| NameAddr::parse(v, label))
    }
    /// The option tags or methods of a comma-list header (Allow, Supported, Require,
    /// Proxy-Require, Unsupported, Allow-Events...). An empty header (`Supported:`, as
    /// baresip sends) is an empty list, which the grammar allows (RFC 3261 §25.1).
    pub fn tokens(&self, name: HeaderName) -> impl Iterator<Item = Result<&str, ParseError>> {
        self.get_all(name)
            .filter(|v| !v.trim().is_empty())
            .flat_map(headers::split_list)
            .map(move |t| {
                if crate::scan::is_token_str(t) {
                    Ok(t)
                } else {
                    Err(ParseError::header(
                        name.label(),
                        format!("\"{t}\" is not a token"),
                    ))
                }
            })
    }
    /// Event (RFC 6665), when present.
    pub fn event(&self) -> Result<Option<headers::Event<'_>>, ParseError> {
        self.single(HeaderName::Event)?
            .map(|v| headers::Event::parse(v, "Event"))
            .transpose()
    }
    /// Subscription-State (RFC 6665), when present.
    pub fn subscription_state(&self) -> Result<Option<headers::Event<'_>>, ParseError> {
        self.single(HeaderName::SubscriptionState)?
            .map(|v| headers::Event::parse(v, "Subscription-State"))
            .transpose()
    }
    /// Session-Expires (RFC 4028), when present.
    pub fn session_expires(&self) -> Result<Option<headers::SessionExpires<'_>>, ParseError> {
        self.single(HeaderName::SessionExpires)?
            .map(headers::SessionExpires::parse)
            .transpose()
    }
    /// User-Agent text, when present.
    pub fn user_agent(&self) -> Option<&str> {
        self.get(HeaderName::UserAgent)
    }
    /// Server text, when present.
    pub fn server(&self) -> Option<&str> {
        self.get(HeaderName::Server)
    }

    /// Checks the whole message against RFC 3261: the mandatory headers are there once
    /// each, every header this crate knows parses, CSeq matches the method. A server
    /// runs this before acting on a request and answers the error's
    /// [`ParseError::status_code`].
    pub fn validate(&self) -> Result<(), ParseError> {
        for name in [
            HeaderName::To,
            HeaderName::From,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            self.required(name)?;
        }
        if self.count(HeaderName::Via) == 0 {
            return Err(ParseError::Missing("Via"));
        }
        // One pass: a bit per header name seen.
        const _: () = assert!((HeaderName::Other as u8) < 128, "one bit per header name");
        let mut seen: u128 = 0;
        for e in &self.headers {
            if e.name.is_single() {
                let bit = 1u128 << (e.name as u8);
                if seen & bit != 0 {
                    return Err(ParseError::Duplicate(e.name.label()));
                }
                seen |= bit;
            }
        }
        for v in self.vias() {
            v?;
        }
        self.from()?;
        self.to()?;
        self.call_id()?;
        let cseq = self.cseq()?;
        if let Some(m) = self.method()
            && *m != cseq.method
        {
            return Err(ParseError::CSeqMismatch {
                method: m.to_string(),
                cseq: cseq.method.to_string(),
                unknown_method: !m.is_known(),
            });
        }
        self.max_forwards()?;
        self.expires()?;
        self.min_expires()?;
        self.content_type()?;
        self.rseq()?;
        self.rack()?;
        self.session_expires()?;
        let mut star = false;
        let mut count = 0;
        for c in self.contacts() {
            let c = c?;
            star |= matches!(c, Contact::Star);
            count += 1;
            if let Contact::Addr(a) = c {
                a.expires()?;
            }
        }
        if star && count > 1 {
            return Err(ParseError::header(
                "Contact",
                "\"*\" must be the only Contact value",
            ));
        }
        for r in self
            .routes()
            .chain(self.record_routes())
            .chain(self.paths())
        {
            r?;
        }
        for name in [
            HeaderName::Allow,
            HeaderName::Supported,
            HeaderName::Require,
            HeaderName::ProxyRequire,
            HeaderName::Unsupported,
        ] {
            for t in self.tokens(name) {
                t?;
            }
        }
        if let Some(d) = self.get(HeaderName::Date) {
            headers::check_date(d)?;
        }
        Ok(())
    }
}

fn parse_start_line(b: &[u8], start: usize, stop: usize) -> Result<StartLine, ParseError> {
    let line = &b[start..stop];
    let Ok(text) = std::str::from_utf8(line) else {
        return Err(ParseError::malformed(format_args!(
            "start line is not valid UTF-8"
        )));
    };
    // Compared as bytes: a multi-byte character may straddle byte 4 (found by fuzzing).
    if text
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = text.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("");
        let reason_start = (version.len() + code.len() + 2).min(text.len());
        check_version(version)?;
        if code.len() != 3 || !code.bytes().all(|c| c.is_ascii_digit()) {
            return Err(ParseError::malformed(format_args!(
                "status code \"{}\" is not three digits",
                clip(code)
            )));
        }
        let code: u16 = code.parse().unwrap_or(0);
        if !(100..=699).contains(&code) {
            return Err(ParseError::malformed(format_args!(
                "status code {code} is out of range"
            )));
        }
        if text[reason_start..].bytes().any(|c| c < b' ' && c != b'\t') {
            return Err(ParseError::malformed(format_args!(
                "reason phrase contains control characters"
            )));
        }
        return Ok(StartLine::Response {
            code,
            reason: Span::new(start + reason_start, stop),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version; exactly one SP each
    // (RFC 4475 §3.1.2.9 and §3.1.2.10 show extra or trailing SP; we refuse those).
    let mut parts = text.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::malformed(format_args!(
            "request line \"{}\" is not \"METHOD URI SIP/2.0\" with single spaces",
            clip(text)
        )));
    };
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(ParseError::malformed(format_args!(
            "method \"{}\" is not a token",
            clip(method)
        )));
    }
    if uri.starts_with('<') {
        return Err(ParseError::malformed(format_args!(
            "Request-URI \"{}\" must not be enclosed in <>",
            clip(uri)
        )));
    }
    let parsed =
        Uri::parse(uri).map_err(|e| ParseError::malformed(format_args!("bad Request-URI: {e}")))?;
    if let Uri::Sip(u) = parsed
        && u.headers.is_some()
    {
        return Err(ParseError::malformed(format_args!(
            "Request-URI \"{}\" must not carry headers",
            clip(uri)
        )));
    }
    check_version(version)?;
    let uri_start = start + method.len() + 1;
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: Span::new(uri_start, uri_start + uri.len()),
    })
}

fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let looks_like_version = v.len() > 4
        && v.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/")
        && v.get(4..)
            .and_then(|r| r.split_once('.'))
            .is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            });
    if looks_like_version {
        Err(ParseError::Version(v.to_string()))
    } else {
        Err(ParseError::malformed(format_args!(
            "\"{}\" is not a SIP version",
            clip(v)
        )))
    }
}

/// Indexes the header line starting at `pos`; returns it and where the next line starts.
fn index_header(b: &[u8], pos: usize) -> Result<(Entry, usize), ParseError> {
    let name_end = pos + b[pos..].iter().take_while(|c| is_token(**c)).count();
    if name_end == pos {
        return Err(ParseError::malformed(format_args!(
            "header line {} does not start with a name",
            line_preview(b, pos)
        )));
    }
    let mut i = name_end;
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if b.get(i) != Some(&b':') {
        return Err(ParseError::malformed(format_args!(
            "header line {} has no colon after its name",
            line_preview(b, pos)
        )));
    }
    i += 1;
    // Find the end of the logical line: a LF not followed by SP/HTAB (folding).
    let mut search = i;
    let line_end = loop {
        let Some(lf) = memchr::memchr(b'\n', &b[search..]).map(|x| search + x) else {
            return Err(ParseError::malformed(format_args!(
                "headers not ended by an empty line"
            )));
        };
        if matches!(b.get(lf + 1), Some(b' ' | b'\t')) {
            search = lf + 1;
            continue;
        }
        break lf;
    };
    let mut vs = i;
    let mut ve = line_end;
    while vs < ve && crate::scan::is_lws(b[vs]) {
        vs += 1;
    }
    while ve > vs && crate::scan::is_lws(b[ve - 1]) {
        ve -= 1;
    }
    // A bare CR inside a value would let a header smuggle a line break past us.
    if b[vs..ve]
        .iter()
        .enumerate()
        .any(|(k, c)| *c == b'\r' && b.get(vs + k + 1) != Some(&b'\n'))
    {
        return Err(ParseError::malformed(format_args!(
            "header line {} contains a bare CR",
            line_preview(b, pos)
        )));
    }
    Ok((
        Entry {
            name: HeaderName::from_bytes(&b[pos..name_end]),
            name_span: Span::new(pos, name_end),
            value: Span::new(vs, ve),
        },
        line_end + 1,
    ))
}

fn line_preview(b: &[u8], pos: usize) -> String {
    let end = memchr::memchr(b'\n', &b[pos..]).map_or(b.len(), |x| pos + x);
    let s = String::from_utf8_lossy(&b[pos..end.min(pos + 60)]);
    format!("\"{}\"", s.trim_end())
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("start", &self.start)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// Two messages are equal when they say the same thing: same start line, same headers
/// (names compared as recognised, values as written) in the same order, same body.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        let start_eq = match (&self.start, &other.start) {
            (StartLine::Request { method: a, .. }, StartLine::Request { method: b, .. }) => {
                a == b && self.request_uri_str() == other.request_uri_str()
            }
            (StartLine::Response { code: a, .. }, StartLine::Response { code: b, .. }) => {
                a == b && self.reason() == other.reason()
            }
            _ => false,
        };
        start_eq
            && self.headers.len() == other.headers.len()
            && self.headers().zip(other.headers()).all(|(a, b)| {
                let names = if a.name == HeaderName::Other {
                    b.name == HeaderName::Other && a.name_text.eq_ignore_ascii_case(b.name_text)
                } else {
                    a.name == b.name
                };
                names && a.value == b.value
            })
            && self.body() == other.body()
    }
}

/// Reads a header value as a `u32` of delta-seconds (shared with the typed headers).
pub(crate) fn delta(v: &str) -> Option<u32> {
    parse_u32(v.trim())
}
