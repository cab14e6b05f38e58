//! Where responses go (RFC 3261 §18.2.2, RFC 3581) and the `received`/`rport` stamp a
//! server puts on the top Via of each request it receives (RFC 3261 §18.2.1).
//!
//! Pure rules, no sockets: the I/O layer (sip-net's `Endpoint`) calls [`stamp_via`] on
//! every request it receives, before delivering it, so the service sees (and
//! `response_to` copies) a Via that already says where the request really came from,
//! and [`response_target`] tells whoever answers where the response goes. Services
//! never stamp.

use crate::headers::split_list;
use crate::{Flow, HeaderName, Message, ParseError, Transport};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::{IpAddr, SocketAddr};

/// Where to send a response to `request`, which arrived over `request_flow`.
///
/// - Over a connection-oriented transport: the connection the request came on
///   (RFC 3261 §18.2.2). If that connection has closed by the time of sending,
///   the I/O layer opens a new one to the same address.
/// - Over UDP: the `received` address (else the packet's source address), and the port
///   from `rport` when the client asked for it (RFC 3581 §4), else the Via sent-by port,
///   else 5060. A top Via that does not parse falls back to the packet's source.
///
/// `maddr` (multicast responses) is not supported: the response goes unicast.
pub fn response_target(request_flow: &Flow, request: &Message) -> Flow {
    if request_flow.transport != Transport::Udp {
        return *request_flow;
    }
    let Ok(via) = request.top_via() else {
        return *request_flow;
    };
    let ip = via
        .received()
        .and_then(|r| r.parse::<IpAddr>().ok())
        .unwrap_or(request_flow.remote.ip());
    let port = match via.rport() {
        Some(Some(port)) => port,
        // `rport` without a value: the stamp was not applied; the source port is what
        // the client wants.
        Some(None) => request_flow.remote.port(),
        None => via.port.unwrap_or(5060),
    };
    Flow {
        remote: SocketAddr::new(ip, port),
        connection: None,
        ..*request_flow
    }
}

/// Adds `received=` (when the sent-by host is not the source IP, or when `rport` asks
/// for it) and fills in `rport=` (when present without a value) on the top Via of a
/// request that came from `source`, as RFC 3261 §18.2.1 and RFC 3581 §4 require.
///
/// Returns `Ok(None)` when nothing needs changing (the common case for clients with
/// correct addresses), so no bytes are copied. Otherwise the message is rewritten with
/// only the top Via element changed, and parsed again.
pub fn stamp_via(request: &Message, source: SocketAddr) -> Result<Option<Message>, ParseError> {
    if !request.is_request() {
        return Ok(None);
    }
    let via = request.top_via()?;
    let wants_rport = matches!(via.rport(), Some(None));
    let host_matches = via.host.ip() == Some(source.ip());
    let received_ok = via
        .received()
        .and_then(|r| r.parse::<IpAddr>().ok())
        .is_some_and(|r| r == source.ip());
    if !wants_rport && (host_matches || received_ok) {
        return Ok(None);
    }
    // Locate the top Via element in the buffer: header values are slices of it.
    let buf = request.as_bytes();
    let Some(field) = request.headers().find(|f| f.name == HeaderName::Via) else {
        return Err(ParseError::Missing("Via"));
    };
    let Some(element) = split_list(field.value).next() else {
        return Err(ParseError::Missing("Via"));
    };
    let start = offset_in(buf, element.as_bytes())
        .ok_or_else(|| ParseError::Malformed("Via is not inside the message".into()))?;
    let end = start + element.len();

    let mut new = String::with_capacity(element.len() + 40);
    new.push_str(&format!(
        "{}/{}/{} {}",
        via.protocol.0, via.protocol.1, via.transport, via.host
    ));
    if let Some(port) = via.port {
        new.push_str(&format!(":{port}"));
    }
    for (name, value) in via.params.iter() {
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        new.push(';');
        new.push_str(name);
        if let Some(v) = value {
            new.push('=');
            new.push_str(v);
        }
    }
    // RFC 3581 §4: with rport, received is added even when it equals sent-by.
    if wants_rport || !host_matches {
        new.push_str(&format!(";received={}", source.ip()));
    }
    match via.rport() {
        Some(None) => new.push_str(&format!(";rport={}", source.port())),
        Some(Some(p)) => new.push_str(&format!(";rport={p}")),
        None => {}
    }
    let mut out = BytesMut::with_capacity(buf.len() + 48);
    out.put_slice(&buf[..start]);
    out.put_slice(new.as_bytes());
    out.put_slice(&buf[end..]);
    Message::parse(out.freeze()).map(Some)
}

/// Rewrites the transport token of the top Via (`SIP/2.0/UDP` to `SIP/2.0/TCP`), as
/// RFC 3261 §18.1.1 requires when a large request moves from UDP to TCP. Returns the
/// bytes unchanged when there is no top Via to edit.
pub fn rewrite_via_transport(msg: &Bytes, to: Transport) -> Bytes {
    let Ok(parsed) = Message::parse(msg.clone()) else {
        return msg.clone();
    };
    let Ok(via) = parsed.top_via() else {
        return msg.clone();
    };
    let Some(start) = offset_in(msg, via.transport.as_bytes()) else {
        return msg.clone();
    };
    let end = start + via.transport.len();
    let mut out = BytesMut::with_capacity(msg.len() + 4);
    out.put_slice(&msg[..start]);
    out.put_slice(to.via_token().as_bytes());
    out.put_slice(&msg[end..]);
    out.freeze()
}

/// Where `part` (a sub-slice of `whole`) starts in `whole`.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let base = whole.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    (p >= base && p + part.len() <= base + whole.len()).then(|| p - base)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(via: &str) -> Message {
        let text = format!(
            "OPTIONS sip:a@example.com SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP second;branch=z9hG4bK2\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text)).unwrap()
    }

    fn udp(remote: &str) -> Flow {
        Flow {
            transport: Transport::Udp,
            remote: remote.parse().unwrap(),
            local: None,
            connection: None,
        }
    }

    #[test]
    fn stamps_received_and_rport() {
        let m = req("SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1");
        let src: SocketAddr = "192.0.2.4:40000".parse().unwrap();
        let s = stamp_via(&m, src).unwrap().unwrap();
        let v = s.top_via().unwrap();
        assert_eq!(v.received(), Some("192.0.2.4"));
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(s.vias().count(), 2);
        assert_eq!(response_target(&udp("192.0.2.4:40000"), &s).remote, src);
    }

    #[test]
    fn no_stamp_when_sent_by_is_the_source() {
        let m = req("SIP/2.0/UDP 192.0.2.4:5070;branch=z9hG4bK1");
        assert!(
            stamp_via(&m, "192.0.2.4:5070".parse().unwrap())
                .unwrap()
                .is_none()
        );
        // Without rport, the response goes to the sent-by port.
        let t = response_target(&udp("192.0.2.4:6000"), &m);
        assert_eq!(t.remote, "192.0.2.4:5070".parse().unwrap());
    }

    #[test]
    fn received_without_rport_uses_sent_by_port() {
        let m = req("SIP/2.0/UDP host.example.com;branch=z9hG4bK1");
        let s = stamp_via(&m, "192.0.2.9:7000".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(s.top_via().unwrap().received(), Some("192.0.2.9"));
        let t = response_target(&udp("192.0.2.9:7000"), &s);
        assert_eq!(t.remote, "192.0.2.9:5060".parse().unwrap());
    }

    #[test]
    fn transport_rewrite() {
        let m = req("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1");
        let b = rewrite_via_transport(m.as_bytes(), Transport::Tcp);
        let m2 = Message::parse(b).unwrap();
        assert_eq!(m2.top_via().unwrap().transport, "TCP");
    }
}
