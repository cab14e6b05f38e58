//! Properties checked on arbitrary input. Each function must never panic for any input
//! unless sip-core has a bug: a panic inside sip-core, or a broken invariant (asserted
//! here), is what the fuzzer reports.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and by the regression test
//! `crates/sip-core/tests/fuzz_regressions.rs` (which includes this file by path).

use bytes::Bytes;
use sip_core::framing::{Frame, FramerLimits, StreamFramer};
use sip_core::headers::{self, NameAddr};
use sip_core::sdp::SessionDescription;
use sip_core::{HeaderName, Message, Uri};

/// Every header name the typed accessor `tokens` is meant for.
const TOKEN_HEADERS: [HeaderName; 6] = [
    HeaderName::AllowEvents,
    HeaderName::Allow,
    HeaderName::Supported,
    HeaderName::Require,
    HeaderName::ProxyRequire,
    HeaderName::Unsupported,
];

/// `parse_message`: parse, validate, call every typed accessor; a message that parses
/// must parse again from its own bytes to an equal message.
pub fn check_message(data: &[u8]) {
    let Ok(msg) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = msg.validate();
    exercise_accessors(&msg);

    let again = Message::parse(msg.as_bytes().clone());
    match again {
        Ok(again) => {
            assert_eq!(again, msg, "re-parsing a message's own bytes changed it");
            assert_eq!(
                again.as_bytes(),
                msg.as_bytes(),
                "re-parse changed the bytes"
            );
            assert_eq!(again.body(), msg.body(), "re-parse changed the body");
        }
        Err(e) => panic!("a parsed message's own bytes do not parse again: {e}"),
    }
}

fn exercise_accessors(msg: &Message) {
    let _ = msg.is_request();
    let _ = msg.method();
    let _ = msg.status();
    let _ = msg.reason();
    if let Some(uri) = msg.request_uri() {
        check_uri_roundtrip(&uri);
    }
    let body = msg.body();
    assert!(
        body.len() <= msg.as_bytes().len(),
        "body longer than the message"
    );
    assert_eq!(msg.body_bytes(), body, "body_bytes differs from body");
    assert!(
        msg.body_offset() <= msg.as_bytes().len(),
        "body offset past the end"
    );
    if let Some(n) = msg.content_length() {
        assert_eq!(n, body.len(), "body length differs from Content-Length");
    }
    let mut count = 0;
    for h in msg.headers() {
        count += 1;
        let _ = msg.get_by_name(h.name_text);
        let _ = msg.get_all_by_name(h.name_text).count();
        let _ = msg.get(h.name);
        let _ = msg.count(h.name);
    }
    assert_eq!(
        count,
        msg.header_count(),
        "header_count differs from headers()"
    );

    for via in msg.vias().flatten() {
        let _ = (
            via.branch(),
            via.received(),
            via.rport(),
            via.has_rfc3261_branch(),
        );
        let _ = via.host.ip();
        let _ = via.to_string();
    }
    let _ = msg.top_via();
    for na in [msg.from(), msg.to()].into_iter().flatten() {
        exercise_name_addr(&na);
    }
    let _ = msg.call_id();
    if let Ok(cseq) = msg.cseq() {
        let _ = cseq.to_string();
    }
    let _ = msg.max_forwards();
    let _ = msg.expires();
    let _ = msg.min_expires();
    let _ = msg.rseq();
    let _ = msg.rack();
    if let Ok(Some(ct)) = msg.content_type() {
        let _ = ct.is("application", "sdp");
    }
    for contact in msg.contacts().flatten() {
        if let headers::Contact::Addr(na) = contact {
            exercise_name_addr(&na);
        }
    }
    for na in msg
        .routes()
        .chain(msg.record_routes())
        .chain(msg.paths())
        .flatten()
    {
        exercise_name_addr(&na);
    }
    for name in TOKEN_HEADERS {
        let _ = msg.tokens(name).count();
    }
    let _ = msg.event();
    let _ = msg.subscription_state();
    if let Ok(Some(se)) = msg.session_expires() {
        let _ = se.refresher();
    }
    let _ = msg.user_agent();
    let _ = msg.server();
    let _ = format!("{msg:?}");
    // An SDP body goes through the SDP checks too.
    check_sdp(body);
}

fn exercise_name_addr(na: &NameAddr<'_>) {
    let _ = (na.tag(), na.display_name_text(), na.expires(), na.q());
    let _ = na.to_string();
    check_uri_roundtrip(&na.uri);
}

/// `uri`: a URI that parses is written back and must parse again to an equal URI.
pub fn check_uri(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = Uri::parse(s) {
        check_uri_roundtrip(&uri);
    }
}

fn check_uri_roundtrip(uri: &Uri<'_>) {
    let _ = uri.scheme();
    if let Some(sip) = uri.as_sip() {
        let _ = (sip.user_decoded(), sip.transport(), sip.lr(), sip.maddr());
        let _ = sip.host.ip();
    }
    let text = uri.to_string();
    match Uri::parse(&text) {
        Ok(again) => assert_eq!(&again, uri, "URI changed through {text:?}"),
        Err(e) => panic!("URI written as {text:?} does not parse again: {e}"),
    }
}

/// `sdp`: a description that parses is written and must parse again to an equal one.
pub fn check_sdp(data: &[u8]) {
    let Ok(sdp) = SessionDescription::parse(data) else {
        return;
    };
    let _ = sdp.direction();
    for m in &sdp.media {
        let _ = sdp.effective_direction(m);
        let _ = sdp.effective_connection(m);
        let _ = (
            m.rtpmaps().count(),
            m.ptime(),
            m.rtcp(),
            m.fmtp(0),
            m.rtpmap(0),
        );
    }
    let _ = (sdp.rtpmaps().count(), sdp.ptime(), sdp.rtcp());
    let written = sdp.to_bytes();
    match SessionDescription::parse(&written) {
        Ok(again) => assert_eq!(
            again,
            sdp,
            "SDP changed through {:?}",
            String::from_utf8_lossy(&written)
        ),
        Err(e) => panic!(
            "SDP written as {:?} does not parse again: {e}",
            String::from_utf8_lossy(&written)
        ),
    }
}

/// `framer`: the first byte gives how many chunk sizes follow (0–7), each next byte a
/// chunk size (1–256); the rest is the stream, pushed in chunks of those sizes in turn
/// (all at once when there are none). Checked: the framer never holds more than its
/// limits allow, frames never add up to more than the stream, each message is within the
/// limits and starts where the previous frame ended; and cutting the same stream into
/// different chunks yields the same messages.
pub fn check_framer(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(first % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let sizes: Vec<usize> = sizes.iter().map(|b| usize::from(*b) + 1).collect();
    // Small limits so that fuzz inputs reach them; the defaults as well.
    let small = FramerLimits {
        max_headers: 256,
        max_body: 512,
    };
    for limits in [small, FramerLimits::default()] {
        let chunked = run_framer(stream, &sizes, limits);
        let whole = run_framer(stream, &[], limits);
        let one_by_one = run_framer(stream, &[1], limits);
        assert_eq!(
            chunked.messages, whole.messages,
            "messages depend on how the stream is cut (chunks {sizes:?})"
        );
        assert_eq!(
            one_by_one.messages, whole.messages,
            "messages differ when the stream arrives byte by byte"
        );
        assert_eq!(chunked.failed, whole.failed, "error depends on chunking");
        assert_eq!(
            one_by_one.failed, whole.failed,
            "error differs byte by byte"
        );
    }
}

#[derive(Debug)]
struct FramerRun {
    /// The messages, each with its leading CR/LF removed: how line ends between
    /// messages are cut into pings and pongs legitimately depends on chunking.
    messages: Vec<Vec<u8>>,
    failed: bool,
}

fn run_framer(stream: &[u8], sizes: &[usize], limits: FramerLimits) -> FramerRun {
    let mut framer = StreamFramer::new(limits);
    let mut consumed = 0usize; // bytes handed out as frames (or skipped line ends)
    let mut pushed = 0usize;
    let mut messages = Vec::new();
    let mut sizes_cycle = sizes.iter().copied().cycle();
    while pushed < stream.len() {
        let size = sizes_cycle
            .next()
            .unwrap_or(stream.len())
            .min(stream.len() - pushed);
        framer.push(&stream[pushed..pushed + size]);
        pushed += size;
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    let len = match &frame {
                        Frame::Message(m) => {
                            assert!(!m.is_empty(), "empty message frame");
                            assert!(
                                m.len() <= limits.max_headers + limits.max_body,
                                "message of {} bytes beyond the limits {limits:?}",
                                m.len()
                            );
                            // Line ends skipped before the message are not in the frame.
                            let at = stream[consumed..pushed]
                                .windows(m.len())
                                .position(|w| w == &m[..])
                                .map(|p| consumed + p);
                            let at = match at {
                                Some(at) => at,
                                None => panic!("message frame is not the next bytes of the stream"),
                            };
                            assert!(
                                stream[consumed..at].iter().all(|c| *c == b'\n'),
                                "bytes other than LF skipped before a message"
                            );
                            consumed = at;
                            let start = m.iter().take_while(|c| matches!(c, b'\r' | b'\n')).count();
                            messages.push(m[start..].to_vec());
                            m.len()
                        }
                        Frame::Ping | Frame::Pong => {
                            let text: &[u8] = if frame == Frame::Ping {
                                b"\r\n\r\n"
                            } else {
                                b"\r\n"
                            };
                            // Lone LFs are skipped without a frame.
                            while consumed < pushed && stream[consumed] == b'\n' {
                                consumed += 1;
                            }
                            assert!(
                                stream[consumed..pushed].starts_with(text),
                                "keep-alive frame is not the next bytes of the stream"
                            );
                            text.len()
                        }
                    };
                    consumed += len;
                    assert!(
                        consumed <= pushed,
                        "frames add up to {consumed} bytes but only {pushed} were pushed"
                    );
                }
                Ok(None) => break,
                Err(_) => {
                    return FramerRun {
                        messages,
                        failed: true,
                    };
                }
            }
        }
        assert!(
            framer.buffered() <= limits.max_headers + limits.max_body + size,
            "framer holds {} bytes, limits {limits:?}, last chunk {size}",
            framer.buffered()
        );
        assert!(
            framer.buffered() <= pushed,
            "framer holds more than was pushed"
        );
    }
    FramerRun {
        messages,
        failed: false,
    }
}
