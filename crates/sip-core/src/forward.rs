//! Forwarding by editing bytes (RFC 3261 §16.6, §16.7 step 3): a proxy copies the
//! message it received and changes only what it must, instead of rebuilding it.
//!
//! - [`forward_request`]: a new Request-URI, our Via on top, Record-Route on top, the
//!   Route set replaced (popped) when asked, Max-Forwards decremented (70 when absent);
//!   every other header line and the body are copied as they came.
//! - [`strip_top_via`]: a response with the topmost Via value removed, the rest copied.
//!
//! Both work from the header index [`Message::parse`] built, so no header is parsed
//! again except Max-Forwards and the first Via.

use crate::error::ParseError;
use crate::headers::split_list;
use crate::message::Message;
use crate::name::HeaderName;
use bytes::{BufMut, Bytes, BytesMut};

/// What a proxy changes in a request it forwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEdit<'a> {
    /// The new Request-URI; `None` keeps the received one.
    pub request_uri: Option<&'a str>,
    /// The new Route set, in order (each `<uri>` with parameters); `None` keeps the
    /// received Route lines as they are. An empty slice removes every Route.
    pub routes: Option<&'a [&'a str]>,
    /// The value of the Via to put on top (`SIP/2.0/UDP host:port;branch=...`).
    pub via: &'a str,
    /// Record-Route values to put on top, in order (the first ends up topmost).
    pub record_route: &'a [&'a str],
}

/// The request `msg` as forwarded with `edit` applied (RFC 3261 §16.6 steps 2–8).
///
/// Fails only when `msg` is not a request or its Max-Forwards does not parse; a
/// Max-Forwards of 0 is the caller's to refuse (483) before forwarding, and is kept at 0.
pub fn forward_request(msg: &Message, edit: &RequestEdit<'_>) -> Result<Bytes, ParseError> {
    let (Some(method), Some(received_uri)) = (msg.method(), msg.request_uri_str()) else {
        return Err(ParseError::malformed(format_args!(
            "only a request can be forwarded"
        )));
    };
    let max_forwards = msg.max_forwards()?;
    let src = msg.as_bytes();
    let uri = edit.request_uri.unwrap_or(received_uri);
    let extra = 64
        + uri.len()
        + edit.via.len()
        + edit
            .record_route
            .iter()
            .map(|r| r.len() + 16)
            .sum::<usize>()
        + edit
            .routes
            .map_or(0, |r| r.iter().map(|v| v.len() + 2).sum::<usize>());
    let mut out = BytesMut::with_capacity(src.len() + extra);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(uri.as_bytes());
    out.put_slice(b" SIP/2.0\r\n");
    out.put_slice(b"Via: ");
    out.put_slice(edit.via.as_bytes());
    out.put_slice(b"\r\n");
    for rr in edit.record_route {
        out.put_slice(b"Record-Route: ");
        out.put_slice(rr.as_bytes());
        out.put_slice(b"\r\n");
    }
    let mut routes_written = false;
    let write_routes = |out: &mut BytesMut| {
        if let Some(routes) = edit.routes
            && !routes.is_empty()
        {
            out.put_slice(b"Route: ");
            for (i, r) in routes.iter().enumerate() {
                if i > 0 {
                    out.put_slice(b", ");
                }
                out.put_slice(r.as_bytes());
            }
            out.put_slice(b"\r\n");
        }
    };
    for (name, range) in msg.header_lines() {
        match name {
            HeaderName::MaxForwards => {
                let n = max_forwards.unwrap_or(70).saturating_sub(1);
                out.put_slice(format!("Max-Forwards: {n}\r\n").as_bytes());
            }
            HeaderName::Route if edit.routes.is_some() => {
                // The new set takes the place of the first Route line.
                if !routes_written {
                    routes_written = true;
                    write_routes(&mut out);
                }
            }
            _ => out.put_slice(&src[range]),
        }
    }
    if !routes_written {
        write_routes(&mut out);
    }
    if max_forwards.is_none() {
        out.put_slice(b"Max-Forwards: 70\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(msg.body());
    Ok(out.freeze())
}

/// The response `msg` with its topmost Via value removed (RFC 3261 §16.7 step 3), the
/// rest copied. `None` when it has no Via to remove.
pub fn strip_top_via(msg: &Message) -> Option<Bytes> {
    let src = msg.as_bytes();
    let (_, range) = msg.header_lines().find(|(n, _)| *n == HeaderName::Via)?;
    let value = msg.get(HeaderName::Via)?;
    let rest: Vec<&str> = split_list(value).skip(1).map(str::trim).collect();
    let mut out = BytesMut::with_capacity(src.len());
    out.put_slice(&src[..range.start]);
    if !rest.is_empty() {
        out.put_slice(b"Via: ");
        out.put_slice(rest.join(", ").as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(&src[range.end..]);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1, SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKa0\r\n\
        Max-Forwards: 69\r\n\
        Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>\r\n\
        Route: <sip:10.0.0.3;lr>\r\n\
        To: <sip:bob@example.test>\r\n\
        From: <sip:alice@example.test>;tag=f1\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 INVITE\r\n\
        X-Odd:   kept   as   is\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    fn parse(s: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    #[test]
    fn request_is_edited_and_the_rest_copied() {
        let msg = parse(INVITE);
        let routes = ["<sip:10.0.0.2;lr>", "<sip:10.0.0.3;lr>"];
        let out = forward_request(
            &msg,
            &RequestEdit {
                request_uri: Some("sip:bob@192.0.2.7:5062"),
                routes: Some(&routes),
                via: "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKp1",
                record_route: &["<sip:10.0.0.1;transport=tcp;lr>", "<sip:10.0.0.1;lr>"],
            },
        )
        .unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            "INVITE sip:bob@192.0.2.7:5062 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKp1\r\n\
             Record-Route: <sip:10.0.0.1;transport=tcp;lr>\r\n\
             Record-Route: <sip:10.0.0.1;lr>\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1, SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKa0\r\n\
             Max-Forwards: 68\r\n\
             Route: <sip:10.0.0.2;lr>, <sip:10.0.0.3;lr>\r\n\
             To: <sip:bob@example.test>\r\n\
             From: <sip:alice@example.test>;tag=f1\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 INVITE\r\n\
             X-Odd:   kept   as   is\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: 4\r\n\r\nv=0\n"
        );
        let m = Message::parse(out).unwrap();
        m.validate().unwrap();
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKp1"));
        assert_eq!(m.body(), b"v=0\n");
    }

    #[test]
    fn routes_removed_max_forwards_added_uri_kept() {
        let msg = parse(
            "MESSAGE sip:bob@192.0.2.7 SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\n\
             Route: <sip:10.0.0.1;lr>\nTo: <sip:bob@x>\nFrom: <sip:a@x>;tag=1\nCall-ID: c\n\
             CSeq: 2 MESSAGE\nContent-Length: 2\n\nhi",
        );
        let out = forward_request(
            &msg,
            &RequestEdit {
                routes: Some(&[]),
                via: "SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKp",
                ..RequestEdit::default()
            },
        )
        .unwrap();
        let m = Message::parse(out).unwrap();
        m.validate().unwrap();
        assert_eq!(m.request_uri_str(), Some("sip:bob@192.0.2.7"));
        assert_eq!(m.count(HeaderName::Route), 0);
        assert_eq!(m.max_forwards().unwrap(), Some(70));
        assert_eq!(m.vias().count(), 2);
        assert_eq!(m.body(), b"hi");
    }

    #[test]
    fn top_via_is_stripped_from_responses() {
        let resp = parse(
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKp, SIP/2.0/UDP a;branch=z9hG4bKa\r\n\
             Via: SIP/2.0/UDP b;branch=z9hG4bKb\r\nTo: <sip:b@x>;tag=2\r\nFrom: <sip:a@x>;tag=1\r\n\
             Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        let once = Message::parse(strip_top_via(&resp).unwrap()).unwrap();
        let branches: Vec<_> = once
            .vias()
            .map(|v| v.unwrap().branch().unwrap().to_owned())
            .collect();
        assert_eq!(branches, ["z9hG4bKa", "z9hG4bKb"]);
        let twice = Message::parse(strip_top_via(&once).unwrap()).unwrap();
        assert_eq!(twice.top_via().unwrap().branch(), Some("z9hG4bKb"));
        assert_eq!(twice.count(HeaderName::Via), 1);
        let none = Message::parse(strip_top_via(&twice).unwrap()).unwrap();
        assert!(strip_top_via(&none).is_none());
    }
}
