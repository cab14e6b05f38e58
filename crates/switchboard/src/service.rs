//! What `serve` answers, decided without I/O: a request in, a response out. The
//! transport and transaction layers deliver requests here and send what comes back.
//!
//! Here are the requests the proxy does not route: those addressed to the server itself
//! (no user part), OPTIONS (RFC 3261 §11), and methods it never heard of that go
//! nowhere. OPTIONS gets 200; any other method the answer RFC 3261 §8.2.1 prescribes
//! for a method the server does not offer as a UAS: 405 with Allow for methods it
//! knows, 501 for methods it has never heard of. REGISTER is the registrar's.

use sip_core::builder::{error_response_to_raw, response_to, response_to_with_reason};
use sip_core::{HeaderName, Message, Method, ParseError, Uri};

/// Methods `serve` takes from phones (the Allow header of its OPTIONS answer): the
/// registrar's, and every method the proxy routes to its users and along dialogs
/// (RFC 3261 §11: OPTIONS tells what the server can do for the requests sent to it).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, MESSAGE, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, PRACK";
/// Methods the server answers itself, as the resource named by a Request-URI without a
/// user part (the Allow header of a 405 there, RFC 3261 §8.2.1).
pub const ALLOW_HERE: &str = "REGISTER, OPTIONS";
/// Option tags we support (the Supported header).
pub const SUPPORTED: &str = "path, outbound";

/// The answer to one incoming message.
#[derive(Debug)]
pub enum Answer {
    /// Send this response.
    Respond(bytes::Bytes),
    /// Nothing to send (ACK, a response, or a message that cannot be answered).
    Nothing,
}

/// Decides the answer to a request that passed [`Message::validate`] (`serve` validates
/// every request once, before the transaction layer; one that fails goes to
/// [`answer_invalid`]). `server` is our Server header text.
pub fn answer(msg: &Message, server: &str, to_tag: &str) -> Answer {
    let Some(method) = msg.method() else {
        return Answer::Nothing;
    };
    if *method == Method::Ack {
        return Answer::Nothing;
    }
    // RFC 3261 §8.2.2.1: a scheme we do not serve gets 416.
    if let Some(Uri::Other { .. } | Uri::Tel(_)) = msg.request_uri() {
        return respond(msg, 416, server, to_tag, &[]);
    }
    // §8.2.2.3: we support no extension a UAS could be required to (CANCEL and ACK exempt).
    if *method != Method::Cancel {
        let required: Vec<&str> = msg
            .tokens(HeaderName::Require)
            .filter_map(Result::ok)
            .filter(|t| !SUPPORTED.split(", ").any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !required.is_empty() {
            let unsupported = required.join(", ");
            return respond(
                msg,
                420,
                server,
                to_tag,
                &[("Unsupported", unsupported.as_str())],
            );
        }
    }
    match method {
        Method::Options => respond(
            msg,
            200,
            server,
            to_tag,
            &[
                ("Allow", ALLOW),
                ("Accept", "application/sdp"),
                ("Supported", SUPPORTED),
            ],
        ),
        m if m.is_known() => respond(msg, 405, server, to_tag, &[("Allow", ALLOW_HERE)]),
        _ => respond(msg, 501, server, to_tag, &[("Allow", ALLOW_HERE)]),
    }
}

/// Refuses, without a transaction, a request that validated but cannot be handled as a
/// transaction: a top Via branch that is the bare RFC 3261 magic cookie `z9hG4bK`
/// (RFC 4475 §3.2.1) claims RFC 3261 matching and carries no identifier to match on, so
/// every such request would look like a retransmission of the first. 400, naming it.
pub fn refuse_unmatchable(msg: &Message) -> Option<bytes::Bytes> {
    let via = msg.top_via().ok()?;
    if !via
        .branch()
        .is_some_and(|b| b.eq_ignore_ascii_case("z9hG4bK"))
    {
        return None;
    }
    let b = response_to_with_reason(
        msg,
        400,
        "Bad Request (Via branch is only the magic cookie z9hG4bK)",
        None,
    );
    b.into_bytes().ok()
}

/// The answer to bytes that did not parse, or parsed but did not validate: the error's
/// status (400, 501, 505) with the fault in the reason phrase, when the message holds
/// enough to address a response; otherwise nothing.
pub fn answer_invalid(raw: &[u8], error: &ParseError) -> Answer {
    match error_response_to_raw(raw, error.status_code(), &error.reason_phrase()) {
        Some(bytes) => Answer::Respond(bytes),
        None => Answer::Nothing,
    }
}

fn respond(msg: &Message, code: u16, server: &str, to_tag: &str, extra: &[(&str, &str)]) -> Answer {
    let mut b = if code == 200 {
        response_to(msg, code, Some(to_tag))
    } else {
        response_to_with_reason(msg, code, "", Some(to_tag))
    };
    for (name, value) in extra {
        b.push(name, value);
    }
    b.push("Server", server);
    match b.into_bytes() {
        Ok(bytes) => Answer::Respond(bytes),
        // The request validated, so its copied headers are sound; a failure here would
        // be our own bug, and the only safe answer is none.
        Err(_) => Answer::Nothing,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;

    fn torture(name: &str) -> Bytes {
        let p = format!(
            "{}/../../../shared/torture/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Bytes::from(std::fs::read(p).unwrap())
    }

    fn answer_to(bytes: Bytes) -> Option<Message> {
        // As serve does: parse, validate, then answer.
        let a = match Message::parse(bytes.clone()).and_then(|m| m.validate().map(|()| m)) {
            Ok(m) => answer(&m, "Switchboard/test", "t1"),
            Err(e) => answer_invalid(&bytes, &e),
        };
        match a {
            Answer::Respond(b) => Some(Message::parse(b).unwrap()),
            Answer::Nothing => None,
        }
    }

    #[test]
    fn options_gets_200_with_capabilities() {
        let r = answer_to(torture("valid/transports.dat")).unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.get(HeaderName::Allow), Some(ALLOW));
        for routed in [
            "INVITE",
            "MESSAGE",
            "BYE",
            "CANCEL",
            "SUBSCRIBE",
            "REGISTER",
        ] {
            assert!(ALLOW.split(", ").any(|m| m == routed), "{routed}");
        }
        assert_eq!(r.get(HeaderName::Accept), Some("application/sdp"));
        assert_eq!(r.vias().count(), 5);
        assert_eq!(r.to().unwrap().tag(), Some("t1"));
        r.validate().unwrap();
    }

    #[test]
    fn a_bare_magic_cookie_branch_is_refused() {
        let m = Message::parse(torture("valid/badbranch.dat")).unwrap();
        m.validate().unwrap();
        let r = Message::parse(refuse_unmatchable(&m).unwrap()).unwrap();
        assert_eq!(r.status(), Some(400));
        assert!(r.reason().unwrap().contains("magic cookie"));
        let ok = Message::parse(torture("valid/zeromf.dat")).unwrap();
        assert!(refuse_unmatchable(&ok).is_none());
    }

    #[test]
    fn torture_requests_get_the_rfc_answers() {
        let cases = [
            ("valid/esc02.dat", Some(501)),
            ("valid/intmeth.dat", Some(501)),
            ("valid/bext01.dat", Some(420)),
            ("valid/unkscm.dat", Some(416)),
            ("valid/novelsc.dat", Some(416)),
            ("valid/wsinv.dat", Some(405)),
            ("valid/dblreq.dat", Some(405)),
            ("invalid/badvers.dat", Some(505)),
            ("invalid/mismatch02.dat", Some(501)),
            ("invalid/scalar02.dat", Some(400)),
            ("invalid/badinv01.dat", Some(400)),
            ("invalid/lwsstart.dat", Some(400)),
            ("invalid/quotbal.dat", Some(400)),
            ("invalid/insuf.dat", Some(400)),
            ("invalid/test.dat", Some(400)),
            ("invalid/bigcode.dat", None),
            ("invalid/scalarlg.dat", None),
            ("valid/bcast.dat", None),
        ];
        for (file, code) in cases {
            let got = answer_to(torture(file)).map(|r| r.status().unwrap());
            assert_eq!(got, code, "{file}");
        }
        let r = answer_to(torture("valid/bext01.dat")).unwrap();
        assert_eq!(
            r.get(HeaderName::Unsupported),
            Some("nothingSupportsThis, nothingSupportsThisEither")
        );
        let r = answer_to(torture("invalid/insuf.dat")).unwrap();
        assert_eq!(r.cseq().unwrap().seq, 193942, "the CSeq it had is copied");

        let r = answer_to(torture("invalid/scalar02.dat")).unwrap();
        assert!(
            r.reason().unwrap().contains("bad CSeq header"),
            "{:?}",
            r.reason()
        );
    }
}
