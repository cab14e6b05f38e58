//! RFC 4475 (torture tests) and RFC 5118 (IPv6 torture tests), run on the exact messages
//! in `../shared/torture`: every valid one parses with the meaning the RFC gives it, and
//! every invalid one is refused with an error that names the fault and earns the
//! response code the RFC asks for.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use sip_core::headers::Contact;
use sip_core::{HeaderName, Host, Message, Method, ParseError, Uri};
use std::path::PathBuf;

fn torture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/torture")
}

fn load(name: &str) -> Bytes {
    let path = torture_dir().join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn parse(name: &str) -> Message {
    let m = Message::parse(load(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    m
}

fn refuse(name: &str) -> ParseError {
    match Message::parse(load(name)).and_then(|m| m.validate()) {
        Ok(()) => panic!("{name} was accepted"),
        Err(e) => e,
    }
}

/// Every file in INDEX.tsv gets the outcome the index gives it: valid ones parse and
/// validate; invalid requests are refused with the given code; invalid responses are
/// refused (and so dropped, since a response is never answered).
#[test]
fn every_indexed_message_gets_its_outcome() {
    let index = std::fs::read_to_string(torture_dir().join("INDEX.tsv")).unwrap();
    let mut checked = 0;
    for row in index.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, expected) = (cols[0], cols[2]);
        let bytes = load(file);
        let is_response = bytes.starts_with(b"SIP/");
        let outcome = Message::parse(bytes).and_then(|m| m.validate());
        if expected.starts_with("valid") {
            assert!(outcome.is_ok(), "{file}: {outcome:?}");
        } else {
            let err = outcome.expect_err(file);
            let code = expected.trim_start_matches("invalid:");
            if code == "drop" {
                assert!(is_response, "{file}: only responses are dropped");
            } else {
                assert_eq!(err.status_code().to_string(), code, "{file}: {err}");
            }
            assert!(!err.to_string().is_empty());
        }
        checked += 1;
    }
    assert_eq!(checked, 62, "the corpus has 62 messages");
}

#[test]
fn wsinv_short_tortuous_invite() {
    // RFC 4475 §3.1.1.1: folding, LWS around colons, mixed case and compact names.
    let m = parse("valid/wsinv.dat");
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(m.to().unwrap().tag(), Some("1918181833n"));
    let from = m.from().unwrap();
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(from.display_name_text().unwrap(), "J Rosenberg \\\"");
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let via = m.top_via().unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!(via.host, Host::V4("192.0.2.2".parse().unwrap()));
    assert_eq!(via.branch(), Some("390skdjuw"));
    assert_eq!(m.get(HeaderName::Subject), Some(""));
    assert_eq!(
        m.get_by_name("newfangledheader"),
        Some("newfangled value\r\n continued newfangled value")
    );
    assert_eq!(m.body().len(), 150);
    let ct = m.content_type().unwrap().unwrap();
    assert!(ct.is("application", "sdp"));
    let uri = m.request_uri().unwrap();
    assert!(uri.as_sip().unwrap().params.contains("unknownparam"));
}

#[test]
fn intmeth_unusual_method_and_characters() {
    // RFC 4475 §3.1.1.2.
    let m = parse("valid/intmeth.dat");
    let method = m.method().unwrap();
    assert_eq!(
        method.as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert!(!method.is_known());
    let uri = m.request_uri().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!(
        sip.user,
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        sip.password,
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    let to = m.to().unwrap();
    assert_eq!(to.display_name_text().unwrap(), "BEL:\x07 NUL:\0 DEL:\x7f");
    assert_eq!(
        m.from().unwrap().display_name,
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(m.from().unwrap().tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        m.call_id().unwrap(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    );
    assert_eq!(
        m.get_by_name("extensionHeader-!.%*+_`'~"),
        Some("\u{FEFF}\u{5927}\u{505C}\u{96FB}")
    );
}

#[test]
fn esc01_escapes_are_kept_and_decoded_once() {
    // RFC 4475 §3.1.1.3.
    let m = parse("valid/esc01.dat");
    let uri = m.request_uri().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!(&*sip.user_decoded().unwrap(), b"sips:user@example.com");
    let to = m.to().unwrap();
    assert_eq!(&*to.uri.as_sip().unwrap().user_decoded().unwrap(), b"user");
    let from = m.from().unwrap();
    assert_eq!(
        &*from.uri.as_sip().unwrap().user_decoded().unwrap(),
        b"I have spaces"
    );
    let Contact::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!()
    };
    let params = c.uri.as_sip().unwrap().params;
    // name=value%25%34%31 is "value%41" after one decoding, never "valueA".
    let raw = params.get("n%61me").unwrap().unwrap();
    assert_eq!(&*sip_core::scan::percent_decode(raw), b"value%41");
}

#[test]
fn escnull_keeps_nul_in_users() {
    // RFC 4475 §3.1.1.4: two distinct contacts, %00 decodes to NUL without truncation.
    let m = parse("valid/escnull.dat");
    let users: Vec<Vec<u8>> = m
        .contacts()
        .map(|c| match c.unwrap() {
            Contact::Addr(a) => a.uri.as_sip().unwrap().user_decoded().unwrap().into_owned(),
            Contact::Star => panic!(),
        })
        .collect();
    assert_eq!(users, vec![vec![0u8], vec![0, 0]]);
    let to = m.to().unwrap();
    assert_eq!(
        &*to.uri.as_sip().unwrap().user_decoded().unwrap(),
        b"null-\0-null"
    );
}

#[test]
fn esc02_percent_is_not_an_escape_in_tokens() {
    // RFC 4475 §3.1.1.5: unknown method, C%6Fntact is not Contact.
    let m = parse("valid/esc02.dat");
    assert_eq!(m.method().unwrap().as_str(), "RE%47IST%45R");
    assert_ne!(m.method(), Some(&Method::Register));
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(
        m.get_by_name("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
    assert_eq!(m.to().unwrap().display_name_text().unwrap(), "%Z%45");
}

#[test]
fn lwsdisp_display_name_without_space() {
    let m = parse("valid/lwsdisp.dat");
    let from = m.from().unwrap();
    assert_eq!(from.display_name, Some("caller"));
    assert_eq!(from.tag(), Some("323"));
}

#[test]
fn longreq_long_values() {
    let m = parse("valid/longreq.dat");
    assert!(m.from().unwrap().tag().unwrap().len() > 100);
    assert_eq!(m.vias().count(), 34);
    assert_eq!(m.body().len(), 150);
}

#[test]
fn dblreq_trailing_octets_ignored() {
    // RFC 4475 §3.1.1.8: only the REGISTER is processed.
    let m = parse("valid/dblreq.dat");
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.body(), b"");
    assert!(!m.as_bytes().windows(6).any(|w| w == b"INVITE"));
    assert_eq!(
        m.call_id().unwrap(),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    );
}

#[test]
fn semiuri_semicolon_in_user() {
    let m = parse("valid/semiuri.dat");
    let uri = m.request_uri().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!(sip.user, Some("user;par=u%40example.net"));
    assert_eq!(sip.host, Host::Name("example.com"));
    assert!(sip.params.is_empty());
}

#[test]
fn transports_are_opaque_tokens() {
    let m = parse("valid/transports.dat");
    let t: Vec<&str> = m.vias().map(|v| v.unwrap().transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

#[test]
fn mpart01_binary_body_framed_by_length() {
    let m = parse("valid/mpart01.dat");
    assert_eq!(m.body().len(), 553);
    assert!(m.content_type().unwrap().unwrap().is("multipart", "mixed"));
}

#[test]
fn unreason_and_noreason() {
    let m = parse("valid/unreason.dat");
    assert_eq!(m.status(), Some(200));
    assert_eq!(
        m.reason(),
        Some(
            "= 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{43d}\u{43e}\u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{442}\u{44c} - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}"
        )
    );
    let m = parse("valid/noreason.dat");
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(""));
}

#[test]
fn invalid_messages_name_their_fault() {
    let cases = [
        ("invalid/badinv01.dat", "bad Via header"),
        ("invalid/clerr.dat", "Content-Length says 9999"),
        ("invalid/ncl.dat", "\"-999\""),
        ("invalid/scalar02.dat", "bad CSeq header"),
        ("invalid/scalarlg.dat", "bad CSeq header"),
        ("invalid/quotbal.dat", "unterminated quoted display name"),
        ("invalid/ltgtruri.dat", "must not be enclosed in <>"),
        ("invalid/lwsruri.dat", "single spaces"),
        ("invalid/lwsstart.dat", "single spaces"),
        ("invalid/trws.dat", "single spaces"),
        ("invalid/escruri.dat", "must not carry headers"),
        ("invalid/baddate.dat", "in GMT"),
        ("invalid/regbadct.dat", "must be enclosed in <>"),
        ("invalid/badaspec.dat", "white space inside"),
        ("invalid/badvers.dat", "SIP/7.0"),
        ("invalid/mismatch01.dat", "does not match request method"),
        ("invalid/mismatch02.dat", "NEWMETHOD"),
        ("invalid/bigcode.dat", "4294967301"),
        ("invalid/insuf.dat", "missing"),
        ("invalid/multi01.dat", "more than one"),
        ("invalid/mcl01.dat", "Content-Length"),
        ("invalid/test.dat", "INVITE sip:alan@jasomi.com"),
        ("invalid/ipv6-bad.dat", "bad port"),
    ];
    for (file, needle) in cases {
        let e = refuse(file).to_string();
        assert!(e.contains(needle), "{file}: \"{e}\" lacks \"{needle}\"");
    }
    assert_eq!(refuse("invalid/badvers.dat").status_code(), 505);
    assert_eq!(refuse("invalid/mismatch02.dat").status_code(), 501);
    assert_eq!(refuse("invalid/mismatch01.dat").status_code(), 400);
    let reason = refuse("invalid/scalar02.dat").reason_phrase();
    assert!(
        reason.starts_with("Bad Request (bad CSeq header"),
        "{reason}"
    );
}

#[test]
fn baddn_fault_is_the_display_name() {
    // The archive copy of baddn lacks the final empty line; with it restored, the fault
    // found is the one RFC 4475 §3.1.2.15 describes: an unquoted display name with a comma.
    let mut bytes = load("invalid/baddn.dat").to_vec();
    bytes.extend_from_slice(b"\r\n");
    let e = Message::parse(Bytes::from(bytes))
        .and_then(|m| m.validate())
        .unwrap_err();
    assert!(
        e.to_string().contains("bad From header") || e.to_string().contains("bad To header"),
        "{e}"
    );
}

#[test]
fn application_level_rejections_have_what_they_need() {
    // §3.2.1: a branch that is only the magic cookie is not an RFC 3261 branch.
    let m = parse("valid/badbranch.dat");
    assert!(!m.top_via().unwrap().has_rfc3261_branch());
    // §3.3.2, §3.3.3: unknown schemes are kept, to be answered 416.
    let m = parse("valid/unkscm.dat");
    assert!(matches!(
        m.request_uri(),
        Some(Uri::Other {
            scheme: "nobodyKnowsThisScheme",
            ..
        })
    ));
    let m = parse("valid/novelsc.dat");
    assert_eq!(m.request_uri().unwrap().scheme(), "soap.beep");
    // §3.3.4: non-SIP URIs in To, From, Contact parse; the registrar refuses them.
    let m = parse("valid/unksm2.dat");
    assert_eq!(m.to().unwrap().uri.scheme(), "isbn");
    assert_eq!(m.from().unwrap().uri.scheme(), "http");
    // §3.3.5: unknown option tags listed, to be answered 420 with Unsupported.
    let m = parse("valid/bext01.dat");
    let req: Vec<&str> = m.tokens(HeaderName::Require).map(|t| t.unwrap()).collect();
    assert_eq!(req, ["nothingSupportsThis", "nothingSupportsThisEither"]);
    assert_eq!(m.tokens(HeaderName::ProxyRequire).count(), 2);
    // §3.3.6: unknown body type, to be answered 415.
    let m = parse("valid/invut.dat");
    assert!(!m.content_type().unwrap().unwrap().is("application", "sdp"));
    // §3.3.7: an Authorization of an unknown scheme is kept verbatim.
    let m = parse("valid/regaut01.dat");
    assert!(
        m.get(HeaderName::Authorization)
            .unwrap()
            .starts_with("NoOneKnowsThisScheme")
    );
    // §3.3.10: the broadcast Via is visible to whoever must drop it.
    let m = parse("valid/bcast.dat");
    let second = m.vias().nth(1).unwrap().unwrap();
    assert_eq!(second.host, Host::V4(std::net::Ipv4Addr::BROADCAST));
    // §3.3.11: Max-Forwards 0, to be answered 483 by a proxy.
    assert_eq!(parse("valid/zeromf.dat").max_forwards().unwrap(), Some(0));
    // §3.3.15: Accept without application/sdp, to be answered 406.
    let m = parse("valid/sdp01.dat");
    assert_eq!(m.get(HeaderName::Accept), Some("text/nobodyKnowsThis"));
}

#[test]
fn contact_params_belong_where_the_brackets_say() {
    // §3.3.12: without <>, ;unknownparam is a contact parameter.
    let m = parse("valid/cparam01.dat");
    let Contact::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!()
    };
    assert!(c.params.contains("unknownparam"));
    assert!(c.uri.as_sip().unwrap().params.is_empty());
    // §3.3.13: inside <>, it is a URI parameter.
    let m = parse("valid/cparam02.dat");
    let Contact::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!()
    };
    assert!(c.params.is_empty());
    assert!(c.uri.as_sip().unwrap().params.contains("unknownparam"));
    // §3.3.14: an escaped header in a bracketed compact Contact is kept.
    let m = parse("valid/regescrt.dat");
    let Contact::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(
        c.uri.as_sip().unwrap().headers,
        Some("Route=%3Csip:sip.example.com%3E")
    );
    assert_eq!(m.content_length(), Some(0));
}

#[test]
fn inv2543_old_syntax_is_accepted() {
    // §3.4.1: no branch, no From tag, no Content-Length, no Max-Forwards.
    let m = parse("valid/inv2543.dat");
    assert_eq!(m.top_via().unwrap().branch(), None);
    assert_eq!(m.from().unwrap().tag(), None);
    assert_eq!(m.content_length(), None);
    assert_eq!(m.max_forwards().unwrap(), None);
    assert!(m.body().starts_with(b"v=0"));
}

#[test]
fn rfc5118_ipv6_references() {
    // §4.1
    let m = parse("valid/ipv6-good.dat");
    let uri = m.request_uri().unwrap();
    assert_eq!(uri.as_sip().unwrap().host, Host::V6("2001:db8::10"));
    assert_eq!(m.top_via().unwrap().host, Host::V6("2001:db8::9:1"));
    // §4.3: port inside the brackets is part of the address.
    let m = parse("valid/port-ambiguous.dat");
    let uri = m.request_uri().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!((sip.host, sip.port), (Host::V6("2001:db8::10:5070"), None));
    // §4.4
    let m = parse("valid/port-unambiguous.dat");
    let uri = m.request_uri().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!((sip.host, sip.port), (Host::V6("2001:db8::10"), Some(5070)));
    // §4.5: received with and without brackets reads the same.
    for f in [
        "valid/via-received-param-with-delim.dat",
        "valid/via-received-param-no-delim.dat",
    ] {
        assert_eq!(
            parse(f).top_via().unwrap().received(),
            Some("2001:db8::9:255"),
            "{f}"
        );
    }
    // §4.7
    let m = parse("valid/mult-ip-in-header.dat");
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias[0].port, Some(6050));
    assert_eq!(vias[1].host, Host::V4("192.0.2.1".parse().unwrap()));
    assert_eq!(vias[2].received(), Some("192.0.2.200"));
    // §4.9
    let m = parse("valid/ipv4-mapped-ipv6.dat");
    assert!(m.top_via().unwrap().host.ip().is_some());
    // §4.10: the three-colon form is tolerated, the two-colon one is a real address.
    let m = parse("valid/ipv6-bug-abnf-3-colons.dat");
    let uri = m.request_uri().unwrap();
    assert_eq!(uri.as_sip().unwrap().host, Host::V6("2001:db8:::192.0.2.1"));
    let m = parse("valid/ipv6-correct-abnf-2-colons.dat");
    let uri = m.request_uri().unwrap();
    assert_eq!(
        uri.as_sip().unwrap().host.ip(),
        Some("2001:db8::192.0.2.1".parse().unwrap())
    );
}

#[test]
fn rfc5118_sdp_bodies() {
    use sip_core::sdp::SessionDescription;
    for f in [
        "valid/ipv6-in-sdp.dat",
        "valid/mult-ip-in-sdp.dat",
        "valid/ipv4-mapped-ipv6.dat",
    ] {
        let m = parse(f);
        let sdp = SessionDescription::parse(m.body()).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!sdp.media.is_empty(), "{f}");
    }
    let m = parse("valid/mult-ip-in-sdp.dat");
    let sdp = SessionDescription::parse(m.body()).unwrap();
    let addrs: Vec<_> = sdp
        .media
        .iter()
        .map(|md| sdp.effective_connection(md).unwrap().ip().unwrap())
        .collect();
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "{addrs:?}");
}

/// baresip 1.0 sends `Supported:` with no option tag: an empty list, which RFC 3261
/// §25.1 allows (`Supported = "Supported" HCOLON [option-tag *(COMMA option-tag)]`).
#[test]
fn empty_supported_is_an_empty_list() {
    let m = Message::parse(Bytes::from_static(
        b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
          Via: SIP/2.0/UDP 127.0.0.1:25090;branch=z9hG4bK7c04;rport\r\n\
          Max-Forwards: 70\r\nTo: <sip:bob@127.0.0.1>\r\nFrom: <sip:a@127.0.0.1>;tag=1e\r\n\
          Call-ID: 2118\r\nCSeq: 1 INVITE\r\nSupported:\r\nAllow: \r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    assert_eq!(m.validate(), Ok(()));
    assert_eq!(m.tokens(sip_core::HeaderName::Supported).count(), 0);
}
