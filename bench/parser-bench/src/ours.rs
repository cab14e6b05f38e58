//! The proxy work through `sip-core`: an index of header lines at parse time, then each
//! header parsed on demand, borrowing from the buffer.

use crate::{Failure, Fields, fail};
use bytes::Bytes;
use sip_core::{Message, Method};
use std::hint::black_box;

/// Parses `buf` and reads the proxy headers; `f` sees them before the message is dropped.
pub fn proxy_read<R>(buf: &Bytes, f: impl FnOnce(Fields<'_, Method>) -> R) -> Result<R, Failure> {
    // A clone of `Bytes` is a reference count, the same as handing a received datagram
    // to the parser.
    let msg = Message::parse(buf.clone()).map_err(|e| fail("parse", e))?;
    let via = msg.top_via().map_err(|e| fail("Via", e))?;
    let from = msg.from().map_err(|e| fail("From", e))?;
    let to = msg.to().map_err(|e| fail("To", e))?;
    let call_id = msg.call_id().map_err(|e| fail("Call-ID", e))?;
    let cseq = msg.cseq().map_err(|e| fail("CSeq", e))?;
    let max_forwards = msg.max_forwards().map_err(|e| fail("Max-Forwards", e))?;
    let mut routes = 0;
    for route in msg.routes() {
        // black_box: the parsed route must not be optimised away, as a proxy uses it.
        black_box(route.map_err(|e| fail("Route", e))?);
        routes += 1;
    }
    Ok(f(Fields {
        branch: via.branch(),
        from_tag: from.tag(),
        to_tag: to.tag(),
        call_id,
        cseq: cseq.seq,
        method: cseq.method,
        max_forwards: max_forwards.map(u32::from),
        routes,
    }))
}
