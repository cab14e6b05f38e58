//! Property tests: whatever the builder writes parses back to what was built, and a
//! parsed message written out again parses to an equal message.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use sip_core::headers::{Contact, Via};
use sip_core::{HeaderName, Host, Message, MessageBuilder, Method, Uri};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,15}"
}
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<[u16; 8]>().prop_map(|g| {
            let a = std::net::Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
            format!("[{a}]")
        }),
    ]
}
fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,12}",
        "\\+[0-9]{6,12}",
        "[a-z]{1,4}%[0-9A-F]{2}[a-z]{0,4}"
    ]
}
fn uri_params() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    proptest::collection::vec(
        (
            "[a-z][a-z0-9-]{0,8}",
            proptest::option::of("[a-zA-Z0-9.-]{1,10}"),
        ),
        0..4,
    )
}

#[derive(Debug, Clone)]
struct GenUri {
    secure: bool,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    params: Vec<(String, Option<String>)>,
}

impl GenUri {
    fn text(&self) -> String {
        let mut s = String::from(if self.secure { "sips:" } else { "sip:" });
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        for (k, v) in &self.params {
            s.push(';');
            s.push_str(k);
            if let Some(v) = v {
                s.push('=');
                s.push_str(v);
            }
        }
        s
    }
}

fn gen_uri() -> impl Strategy<Value = GenUri> {
    (
        any::<bool>(),
        proptest::option::of(user()),
        host(),
        proptest::option::of(any::<u16>()),
        uri_params(),
    )
        .prop_map(|(secure, user, host, port, params)| GenUri {
            secure,
            user,
            host,
            port,
            params,
        })
}

fn check_uri(g: &GenUri, u: &Uri<'_>) {
    let sip = u.as_sip().expect("sip uri");
    assert_eq!(sip.secure, g.secure);
    assert_eq!(sip.user, g.user.as_deref());
    assert_eq!(
        sip.host.to_string().to_ascii_lowercase(),
        g.host.to_ascii_lowercase()
    );
    assert_eq!(sip.port, g.port);
    let got: Vec<(String, Option<String>)> = sip
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
    assert_eq!(got, g.params);
}

#[derive(Debug, Clone)]
struct GenMessage {
    request: Option<(String, GenUri)>,
    status: (u16, String),
    via_host: String,
    via_port: Option<u16>,
    branch: String,
    from: GenUri,
    from_display: Option<String>,
    from_tag: String,
    to: GenUri,
    call_id: String,
    cseq: u32,
    max_forwards: u8,
    contacts: Vec<(GenUri, Option<u32>)>,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
}

fn gen_message() -> impl Strategy<Value = GenMessage> {
    let request = proptest::option::of((
        prop_oneof![
            Just("INVITE".to_string()),
            Just("REGISTER".to_string()),
            Just("MESSAGE".to_string()),
            "[A-Z]{3,10}"
        ],
        gen_uri(),
    ));
    (
        (
            request,
            (100u16..700, "[A-Za-z ]{0,20}"),
            host(),
            proptest::option::of(1u16..),
            "[a-zA-Z0-9]{1,20}",
        ),
        (
            gen_uri(),
            proptest::option::of("[A-Za-z0-9 .,'@<>-]{0,20}"),
            token(),
            gen_uri(),
        ),
        (
            "[a-zA-Z0-9.!%*_+`'~()<>:\"/?{}-]{1,20}(@[a-z0-9.]{1,12})?",
            any::<u32>(),
            any::<u8>(),
        ),
        proptest::collection::vec((gen_uri(), proptest::option::of(any::<u32>())), 0..3),
        proptest::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,30}"), 0..5),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(
            |(
                (request, status, via_host, via_port, branch),
                (from, from_display, from_tag, to),
                (call_id, cseq, mf),
                contacts,
                extra,
                body,
            )| {
                GenMessage {
                    request,
                    status,
                    via_host,
                    via_port,
                    branch,
                    from,
                    from_display,
                    from_tag,
                    to,
                    call_id,
                    cseq,
                    max_forwards: mf,
                    contacts,
                    extra,
                    body,
                }
            },
        )
}

fn build(g: &GenMessage) -> Message {
    let method = g.request.as_ref().map(|(m, _)| Method::from_token(m));
    let mut b = match &g.request {
        Some((_, uri)) => MessageBuilder::request(method.as_ref().unwrap(), &uri.text()),
        None => MessageBuilder::response(g.status.0, g.status.1.trim()),
    };
    let port = g.via_port.map(|p| format!(":{p}")).unwrap_or_default();
    b.push(
        "Via",
        format_args!(
            "SIP/2.0/UDP {}{port};branch=z9hG4bK{};rport",
            g.via_host, g.branch
        ),
    );
    match &g.from_display {
        Some(d) => b.push(
            "From",
            format_args!(
                "{} <{}>;tag={}",
                sip_core::scan::quote(d),
                g.from.text(),
                g.from_tag
            ),
        ),
        None => b.push(
            "From",
            format_args!("<{}>;tag={}", g.from.text(), g.from_tag),
        ),
    }
    b.push("To", format_args!("<{}>", g.to.text()));
    b.push("Call-ID", &g.call_id);
    let cseq_method = method.clone().unwrap_or(Method::Invite);
    b.push("CSeq", format_args!("{} {}", g.cseq, cseq_method));
    b.push("Max-Forwards", g.max_forwards);
    for (c, exp) in &g.contacts {
        match exp {
            Some(e) => b.push("Contact", format_args!("<{}>;expires={e}", c.text())),
            None => b.push("Contact", format_args!("<{}>", c.text())),
        }
    }
    for (n, v) in &g.extra {
        b.push(n, v.trim());
    }
    if !g.body.is_empty() {
        b = b.body("application/octet-stream", Bytes::from(g.body.clone()));
    }
    b.build().expect("built message parses")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn built_messages_parse_to_what_was_built(g in gen_message()) {
        let m = build(&g);
        m.validate().unwrap();
        match &g.request {
            Some((method, uri)) => {
                prop_assert_eq!(m.method().unwrap().as_str(), method.as_str());
                check_uri(uri, &m.request_uri().unwrap());
            }
            None => {
                prop_assert_eq!(m.status(), Some(g.status.0));
            }
        }
        let via: Via = m.top_via().unwrap();
        prop_assert_eq!(via.branch().map(str::to_string), Some(format!("z9hG4bK{}", g.branch)));
        prop_assert_eq!(via.port, g.via_port);
        prop_assert_eq!(via.rport(), Some(None));
        if g.via_host.starts_with('[') {
            prop_assert!(matches!(via.host, Host::V6(_)));
        }
        let from = m.from().unwrap();
        check_uri(&g.from, &from.uri);
        prop_assert_eq!(from.tag(), Some(g.from_tag.as_str()));
        prop_assert_eq!(from.display_name_text().map(|d| d.into_owned()), g.from_display.clone());
        check_uri(&g.to, &m.to().unwrap().uri);
        prop_assert_eq!(m.call_id().unwrap(), g.call_id.as_str());
        prop_assert_eq!(m.cseq().unwrap().seq, g.cseq);
        prop_assert_eq!(m.max_forwards().unwrap(), Some(g.max_forwards));
        let contacts: Vec<Contact> = m.contacts().map(|c| c.unwrap()).collect();
        prop_assert_eq!(contacts.len(), g.contacts.len());
        for (c, (gu, exp)) in contacts.iter().zip(&g.contacts) {
            let Contact::Addr(a) = c else { panic!("star") };
            check_uri(gu, &a.uri);
            prop_assert_eq!(a.expires().unwrap(), *exp);
        }
        for (n, v) in &g.extra {
            prop_assert!(m.get_all_by_name(n).any(|x| x == v.trim()));
        }
        prop_assert_eq!(m.body(), &g.body[..]);
        prop_assert_eq!(m.get(HeaderName::ContentLength).map(str::to_string), Some(g.body.len().to_string()));
    }

    #[test]
    fn parse_of_written_equals_parsed(g in gen_message()) {
        let m = build(&g);
        let again = Message::parse(m.as_bytes().clone()).unwrap();
        prop_assert_eq!(&again, &m);
    }

    #[test]
    fn uris_round_trip_through_display(g in gen_uri()) {
        let text = g.text();
        let u = Uri::parse(&text).unwrap();
        check_uri(&g, &u);
        let written = u.to_string();
        let again = Uri::parse(&written).unwrap();
        prop_assert_eq!(again, u);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = Message::parse(Bytes::from(data)) {
            let _ = m.validate();
            let _ = m.top_via();
            let _ = m.contacts().count();
        }
    }
}

#[test]
fn builder_refuses_header_injection() {
    let r = MessageBuilder::request(&Method::Options, "sip:a@b")
        .header("Subject", "hi\r\nVia: SIP/2.0/UDP evil")
        .build();
    assert!(r.unwrap_err().to_string().contains("line break"));
    let r = MessageBuilder::request(&Method::Options, "sip:a@b")
        .header("Bad Name", "x")
        .build();
    assert!(r.unwrap_err().to_string().contains("not a token"));
}

#[test]
fn response_to_copies_what_rfc3261_says() {
    let req = Message::parse(Bytes::from_static(
        b"INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK2\r\nRecord-Route: <sip:p.example.test;lr>\r\nFrom: <sip:alice@example.test>;tag=a\r\nTo: <sip:bob@example.test>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    let trying = sip_core::response_to(&req, 100, Some("x")).build().unwrap();
    assert_eq!(trying.to().unwrap().tag(), None, "no To tag on 100");
    assert_eq!(trying.vias().count(), 2);
    assert_eq!(trying.record_routes().count(), 0);
    let ok = sip_core::response_to(&req, 200, Some("b7"))
        .build()
        .unwrap();
    assert_eq!(ok.reason(), Some("OK"));
    assert_eq!(ok.to().unwrap().tag(), Some("b7"));
    assert_eq!(ok.cseq().unwrap().seq, 7);
    assert_eq!(ok.call_id().unwrap(), "c1");
    assert_eq!(ok.record_routes().count(), 1);
    assert_eq!(ok.get(HeaderName::MaxForwards), None);
    ok.validate().unwrap();
}

#[test]
fn error_response_to_raw_answers_duplicates_with_one_of_each() {
    let path = format!(
        "{}/../../../shared/torture/invalid/multi01.dat",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(path).unwrap();
    let resp = sip_core::builder::error_response_to_raw(&raw, 400, "Bad Request").unwrap();
    let m = Message::parse(resp).unwrap();
    m.validate().unwrap();
    assert_eq!(m.count(HeaderName::CallId), 1);
    assert_eq!(m.count(HeaderName::From), 1);
    assert_eq!(m.count(HeaderName::To), 1);
    assert_eq!(m.count(HeaderName::CSeq), 1);
}
