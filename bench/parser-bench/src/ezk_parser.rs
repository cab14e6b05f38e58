//! The proxy work through `ezk-sip-types` 0.6. The crate has no whole-message parse
//! function: its transport layer (`ezk-sip-core`) assembles a message from the crate's
//! public pieces, `PullParser` (header lines, with folding), `MessageLine` (start line)
//! and `Line` (name and value) into `Headers`, and frames the body by Content-Length.
//! [`parse`] does the same with the same calls. Typed headers are then decoded on demand
//! with `Headers::get_named`/`get`, which is its lazy API.

use crate::{Failure, Fields, fail};
use bytes::Bytes;
use ezk_sip_types::header::typed::{
    CSeq, CallID, ContentLength, FromTo, MaxForwards, Routing, Via,
};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::{Headers, Method, Name};
use std::hint::black_box;

/// A message as ezk's transport layer hands it to the stack.
#[derive(Debug)]
pub struct EzkMessage {
    /// Request or status line.
    pub line: MessageLine,
    /// Every header, values as `BytesStr`.
    pub headers: Headers,
    /// The body, framed by Content-Length (or the rest of the datagram without it).
    pub body: Bytes,
}

/// Parses a whole datagram the way ezk's transport does.
pub fn parse(buf: &Bytes) -> Result<EzkMessage, Failure> {
    let mut lines = PullParser::new(buf, 0);
    let mut line = None;
    // ezk's own transport starts from `Headers::new()`; reserving like our parser does
    // (24 entries) only helps it, so the comparison does not hinge on Vec growth.
    let mut headers = Headers::with_capacity(24);
    for item in &mut lines {
        let raw = item.map_err(|_| Failure("parse: incomplete message head".into()))?;
        let text = std::str::from_utf8(raw).map_err(|e| fail("parse", e))?;
        if line.is_none() {
            let (_, l) = MessageLine::parse(buf)(text)
                .map_err(|e| fail("parse: start line", format!("{e:?}")))?;
            line = Some(l);
        } else {
            let (_, l) =
                Line::parse(buf, text).map_err(|e| fail("parse: header line", format!("{e:?}")))?;
            headers.insert(l.name, l.value);
        }
    }
    let line = line.ok_or_else(|| Failure("parse: empty message".into()))?;
    let head_end = lines.head_end();
    let body = match headers.try_get_named::<ContentLength>() {
        Some(Ok(len)) if buf.len() >= head_end + len.0 => buf.slice(head_end..head_end + len.0),
        Some(Ok(_)) => return Err(Failure("parse: body shorter than Content-Length".into())),
        Some(Err(e)) => return Err(fail("Content-Length", e)),
        None => buf.slice(head_end..),
    };
    Ok(EzkMessage {
        line,
        headers,
        body,
    })
}

/// Parses `buf` and reads the proxy headers; `f` sees them before the message is dropped.
pub fn proxy_read<R>(buf: &Bytes, f: impl FnOnce(Fields<'_, Method>) -> R) -> Result<R, Failure> {
    let msg = parse(buf)?;
    let h = &msg.headers;
    // `get_named::<Via>` decodes the first Via value: the top one.
    let via: Via = h.get_named().map_err(|e| fail("Via", e))?;
    let from: FromTo = h.get(Name::FROM).map_err(|e| fail("From", e))?;
    let to: FromTo = h.get(Name::TO).map_err(|e| fail("To", e))?;
    let call_id: CallID = h.get_named().map_err(|e| fail("Call-ID", e))?;
    let cseq: CSeq = h.get_named().map_err(|e| fail("CSeq", e))?;
    let max_forwards = h
        .try_get_named::<MaxForwards>()
        .transpose()
        .map_err(|e| fail("Max-Forwards", e))?;
    // `Vec<Routing>` decodes every Route line and every comma-separated value in each.
    let routes = match h.try_get::<Vec<Routing>>(Name::ROUTE) {
        Some(r) => r.map_err(|e| fail("Route", e))?,
        None => Vec::new(),
    };
    let route_count = routes.len();
    black_box(routes);
    Ok(f(Fields {
        branch: via.params.get_val("branch").map(|b| b.as_str()),
        from_tag: from.tag.as_deref(),
        to_tag: to.tag.as_deref(),
        call_id: call_id.0.as_str(),
        cseq: cseq.cseq,
        method: cseq.method,
        max_forwards: max_forwards.map(|m| u32::from(m.0)),
        routes: route_count,
    }))
}
