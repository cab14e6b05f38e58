//! The proxy work through `rsip` 0.4: `SipMessage::try_from(&[u8])` splits the message
//! into a `Header` enum of untyped headers (each value copied into a `String`), then each
//! header the proxy needs is turned into its typed form with `typed()`, as rsip's docs do.

use crate::{Failure, Fields, fail};
use bytes::Bytes;
use rsip::headers::ToTypedHeader;
use rsip::message::{HasHeaders, HeadersExt};
use rsip::{Header, SipMessage};
use std::hint::black_box;

/// Parses `buf` and reads the proxy headers; `f` sees them before the message is dropped.
pub fn proxy_read<R>(
    buf: &Bytes,
    f: impl FnOnce(Fields<'_, rsip::Method>) -> R,
) -> Result<R, Failure> {
    let msg = SipMessage::try_from(&buf[..]).map_err(|e| fail("parse", e))?;
    let via = msg
        .via_header()
        .and_then(|v| v.typed())
        .map_err(|e| fail("Via", e))?;
    // `tag()` on the untyped header parses the whole From/To and clones the tag out.
    let from_tag = msg
        .from_header()
        .and_then(|h| h.tag())
        .map_err(|e| fail("From", e))?;
    let to_tag = msg
        .to_header()
        .and_then(|h| h.tag())
        .map_err(|e| fail("To", e))?;
    // rsip has no typed Call-ID: its value is the header's text.
    let call_id = msg.call_id_header().map_err(|e| fail("Call-ID", e))?;
    let cseq = msg
        .cseq_header()
        .and_then(|h| h.typed())
        .map_err(|e| fail("CSeq", e))?;
    // A missing Max-Forwards is an error in rsip's accessor; responses have none, so
    // absent is `None` here, as in the others, and only a malformed one fails.
    let max_forwards = match msg.max_forwards_header() {
        Ok(h) => Some(h.num().map_err(|e| fail("Max-Forwards", e))?),
        Err(_) => None,
    };
    let mut routes = 0;
    for header in msg.headers().iter() {
        if let Header::Route(route) = header {
            let route = route.typed().map_err(|e| fail("Route", e))?;
            routes += route.uris().len();
            black_box(route);
        }
    }
    Ok(f(Fields {
        branch: via.branch().map(|b| b.value()),
        from_tag: from_tag.as_ref().map(|t| t.value()),
        to_tag: to_tag.as_ref().map(|t| t.value()),
        call_id: rsip::headers::UntypedHeader::value(call_id),
        cseq: cseq.seq,
        method: cseq.method,
        max_forwards,
        routes,
    }))
}
