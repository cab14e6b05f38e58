#![allow(clippy::unwrap_used)]
use super::*;
use sip_core::auth::{Algorithm, Challenge, answer_challenge};
use store::{MemoryLocationStore, MemoryUserStore, User};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const T0: u64 = 1_700_000_000;
const DOMAIN: &str = "example.test";

type Reg = Registrar<MemoryLocationStore, MemoryUserStore>;

fn src() -> SocketAddr {
    "192.0.2.10:5060".parse().unwrap()
}

fn registrar(require_auth: bool) -> Reg {
    let settings = RegistrarSettings {
        domain: DOMAIN.into(),
        rules: RegistrarConfig {
            aliases: vec!["sip.example.test".into()],
            require_auth,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 1800,
            max_auth_failures: 3,
            auth_failure_window_secs: 60,
            ban_secs: 300,
            nonce_lifetime_secs: 300,
            digest_algorithms: vec!["SHA-256".into(), "MD5".into()],
        },
        ..RegistrarSettings::default()
    };
    let mut users = MemoryUserStore::default();
    for (name, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        users
            .add(&User::new(name, DOMAIN, pw, T0).unwrap())
            .unwrap();
    }
    Registrar::new(settings, MemoryLocationStore::default(), users, KEY, T0).unwrap()
}

/// A REGISTER from `user`; `lines` are extra header lines (Contact, Expires...).
fn register(user: &str, call_id: &str, cseq: u32, lines: &[&str]) -> Message {
    register_to(
        "sip:example.test",
        &format!("<sip:{user}@{DOMAIN}>"),
        call_id,
        cseq,
        lines,
    )
}

fn register_to(ruri: &str, to: &str, call_id: &str, cseq: u32, lines: &[&str]) -> Message {
    let mut extra = String::new();
    for l in lines {
        extra.push_str(l);
        extra.push_str("\r\n");
    }
    let text = format!(
        "REGISTER {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{call_id}{cseq}\r\n\
         Max-Forwards: 70\r\n\
         To: {to}\r\n\
         From: {to};tag=ft{cseq}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).unwrap()
}

fn send(reg: &mut Reg, now: u64, req: &Message) -> Message {
    let out = reg.handle_register(now, req, src(), Transport::Udp);
    let resp = Message::parse(out.response.unwrap()).unwrap();
    assert_eq!(resp.status(), Some(out.status));
    resp.validate().unwrap();
    resp
}

/// The (URI, expires) of each Contact of a response, in order.
fn bound(resp: &Message) -> Vec<(String, u32)> {
    resp.contacts()
        .map(|c| match c.unwrap() {
            Contact::Addr(na) => (na.uri_text.to_owned(), na.expires().unwrap().unwrap()),
            Contact::Star => panic!("* in a response"),
        })
        .collect()
}

const AOR: &str = "sip:alice@example.test";

#[test]
fn register_refresh_expiry_and_sweep() {
    let mut reg = registrar(false);
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            1,
            &[
                "Contact: <sip:alice@192.0.2.10:5060>",
                "Expires: 600",
                "User-Agent: Phone/1",
            ],
        ),
    );
    assert_eq!(r.status(), Some(200));
    assert_eq!(bound(&r), [("sip:alice@192.0.2.10:5060".to_owned(), 600)]);
    assert_eq!(
        r.get(HeaderName::Date),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    assert!(r.to().unwrap().tag().is_some());
    let b = &reg.reader().lookup(AOR, T0)[0];
    assert_eq!(
        (
            b.cseq,
            b.call_id.as_str(),
            b.transport,
            b.source,
            b.user_agent.as_deref()
        ),
        (1, "c1", Transport::Udp, src(), Some("Phone/1"))
    );
    // The expiry counts down.
    let r = send(&mut reg, T0 + 100, &register("alice", "c1", 2, &[]));
    assert_eq!(bound(&r), [("sip:alice@192.0.2.10:5060".to_owned(), 500)]);
    // A refresh restarts it, and records the new CSeq.
    let r = send(
        &mut reg,
        T0 + 200,
        &register(
            "alice",
            "c1",
            3,
            &["Contact: <sip:alice@192.0.2.10:5060>;expires=300"],
        ),
    );
    assert_eq!(bound(&r)[0].1, 300);
    assert_eq!(reg.reader().lookup(AOR, T0 + 200)[0].cseq, 3);
    // Gone once expired, even before a sweep; the sweep deletes it.
    assert_eq!(reg.reader().lookup(AOR, T0 + 499).len(), 1);
    assert!(reg.reader().lookup(AOR, T0 + 500).is_empty());
    assert_eq!(reg.reader().len(), 1);
    assert_eq!(reg.sweep(T0 + 500).unwrap(), 1);
    assert!(reg.reader().is_empty());
    let r = send(&mut reg, T0 + 500, &register("alice", "c1", 4, &[]));
    assert!(bound(&r).is_empty());
}

#[test]
fn expiry_from_param_then_header_then_default_capped_at_max() {
    let mut reg = registrar(false);
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            1,
            &[
                "Contact: <sip:a@192.0.2.1>;expires=120, <sip:a@192.0.2.2>",
                "Expires: 240",
            ],
        ),
    );
    let mut b = bound(&r);
    b.sort();
    assert_eq!(
        b,
        [
            ("sip:a@192.0.2.1".into(), 120),
            ("sip:a@192.0.2.2".into(), 240)
        ]
    );
    let r = send(
        &mut reg,
        T0,
        &register("bob", "c2", 1, &["Contact: <sip:b@192.0.2.3>"]),
    );
    assert_eq!(bound(&r)[0].1, 1800, "the configured default");
    let r = send(
        &mut reg,
        T0,
        &register(
            "bob",
            "c2",
            2,
            &["Contact: <sip:b@192.0.2.3>;expires=86400"],
        ),
    );
    assert_eq!(bound(&r)[0].1, 3600, "capped at max_expires");
}

#[test]
fn several_contacts_are_listed_by_q() {
    let mut reg = registrar(false);
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            1,
            &[
                "Contact: <sip:low@192.0.2.1>;q=0.1",
                "Contact: <sip:mid@192.0.2.2>;q=0.5, <sip:top@192.0.2.3>;q=1.0",
            ],
        ),
    );
    let uris: Vec<String> = bound(&r).into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        uris,
        [
            "sip:top@192.0.2.3",
            "sip:mid@192.0.2.2",
            "sip:low@192.0.2.1"
        ]
    );
    assert!(r.get(HeaderName::Contact).unwrap().contains(";q=1"));
    let q: Vec<Option<u16>> = reg.reader().lookup(AOR, T0).iter().map(|b| b.q).collect();
    assert_eq!(q, [Some(1000), Some(500), Some(100)]);
    assert_eq!(format_q(250), "0.25");
    assert_eq!(format_q(0), "0");
    let r = send(
        &mut reg,
        T0,
        &register("alice", "c1", 2, &["Contact: <sip:x@h>;q=2"]),
    );
    assert_eq!(r.status(), Some(400));
}

#[test]
fn star_removes_all_and_is_checked() {
    let mut reg = registrar(false);
    send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            1,
            &["Contact: <sip:a@192.0.2.1>, <sip:a@192.0.2.2>"],
        ),
    );
    assert_eq!(reg.reader().lookup(AOR, T0).len(), 2);
    for (lines, why) in [
        (&["Contact: *"][..], "Expires: 0"),
        (&["Contact: *", "Expires: 60"][..], "Expires: 0"),
        (
            &["Contact: *, <sip:a@192.0.2.3>", "Expires: 0"][..],
            "only Contact",
        ),
    ] {
        let r = send(&mut reg, T0, &register("alice", "c1", 2, lines));
        assert_eq!(r.status(), Some(400), "{lines:?}");
        assert!(r.reason().unwrap().contains(why), "{:?}", r.reason());
    }
    assert_eq!(
        reg.reader().lookup(AOR, T0).len(),
        2,
        "a refused request changes nothing"
    );
    let r = send(
        &mut reg,
        T0 + 5,
        &register("alice", "c9", 1, &["Contact: *", "Expires: 0"]),
    );
    assert_eq!(r.status(), Some(200));
    assert!(bound(&r).is_empty());
    assert!(reg.reader().lookup(AOR, T0 + 5).is_empty());
}

#[test]
fn expires_zero_removes_one_binding() {
    let mut reg = registrar(false);
    send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            1,
            &["Contact: <sip:a@192.0.2.1>, <sip:a@192.0.2.2>"],
        ),
    );
    // The URI is matched by RFC 3261 comparison: host case does not matter.
    let r = send(
        &mut reg,
        T0,
        &register("alice", "c1", 2, &["Contact: <sip:a@192.0.2.1>;expires=0"]),
    );
    assert_eq!(bound(&r), [("sip:a@192.0.2.2".to_owned(), 1800)]);
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            3,
            &["Contact: <sip:a@192.0.2.2;TRANSPORT=udp>", "Expires: 0"],
        ),
    );
    assert_eq!(
        bound(&r).len(),
        1,
        "transport must match when one side has it"
    );
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            4,
            &["Contact: <sip:a@192.0.2.2>", "Expires: 0"],
        ),
    );
    assert!(bound(&r).is_empty());
    assert!(uris_equal("sip:a@EXAMPLE.test;x=1", "sip:a@example.test"));
    assert!(!uris_equal("sip:A@example.test", "sip:a@example.test"));
    assert!(!uris_equal("sip:a@example.test:5060", "sip:a@example.test"));
    assert!(!uris_equal(
        "sip:a@h;transport=tcp",
        "sip:a@h;transport=udp"
    ));
    assert!(uris_equal("sip:%61@h", "sip:a@h"));
}

#[test]
fn too_brief_gets_423_with_min_expires() {
    let mut reg = registrar(false);
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            1,
            &["Contact: <sip:a@192.0.2.1>;expires=30, <sip:a@192.0.2.2>"],
        ),
    );
    assert_eq!(r.status(), Some(423));
    assert_eq!(r.min_expires().unwrap(), Some(60));
    assert!(reg.reader().lookup(AOR, T0).is_empty(), "nothing was bound");
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            2,
            &["Contact: <sip:a@192.0.2.1>", "Expires: 59"],
        ),
    );
    assert_eq!(r.status(), Some(423));
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            3,
            &["Contact: <sip:a@192.0.2.1>", "Expires: 60"],
        ),
    );
    assert_eq!(r.status(), Some(200));
}

#[test]
fn call_id_and_cseq_ordering() {
    let mut reg = registrar(false);
    let c = "Contact: <sip:a@192.0.2.1>";
    assert_eq!(
        send(&mut reg, T0, &register("alice", "c1", 5, &[c])).status(),
        Some(200)
    );
    for cseq in [5, 4] {
        let r = send(
            &mut reg,
            T0,
            &register("alice", "c1", cseq, &[c, "Expires: 0"]),
        );
        assert_eq!(r.status(), Some(500), "CSeq {cseq}");
        assert!(
            r.reason().unwrap().contains("out-of-order"),
            "{:?}",
            r.reason()
        );
    }
    let r = send(
        &mut reg,
        T0,
        &register("alice", "c1", 4, &["Contact: *", "Expires: 0"]),
    );
    assert_eq!(r.status(), Some(500));
    assert_eq!(reg.reader().lookup(AOR, T0).len(), 1);
    // Another Call-ID (the phone rebooted) may update whatever its CSeq.
    let r = send(&mut reg, T0, &register("alice", "c2", 1, &[c]));
    assert_eq!(r.status(), Some(200));
    assert_eq!(reg.reader().lookup(AOR, T0)[0].call_id, "c2");
    // A query is not an update: no ordering applies.
    assert_eq!(
        send(&mut reg, T0, &register("alice", "c2", 1, &[])).status(),
        Some(200)
    );
}

#[test]
fn path_is_stored_and_echoed_when_supported() {
    let mut reg = registrar(false);
    let path = "Path: <sip:edge.example.test;lr>, <sip:core.example.test;lr>";
    let r = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            1,
            &["Contact: <sip:a@192.0.2.1>", path, "Supported: path"],
        ),
    );
    assert_eq!(r.status(), Some(200));
    assert_eq!(
        r.get(HeaderName::Path),
        Some("<sip:edge.example.test;lr>, <sip:core.example.test;lr>")
    );
    assert_eq!(
        reg.reader().lookup(AOR, T0)[0].path,
        ["<sip:edge.example.test;lr>", "<sip:core.example.test;lr>"]
    );
    // RFC 3327 §5.3's recommended policy: a Path the UA did not ask for is refused.
    let r = send(
        &mut reg,
        T0,
        &register("alice", "c1", 2, &["Contact: <sip:a@192.0.2.1>", path]),
    );
    assert_eq!(r.status(), Some(420));
    assert_eq!(r.get(HeaderName::Unsupported), Some("path"));
    let r = send(
        &mut reg,
        T0,
        &register("alice", "c1", 3, &["Contact: <sip:a@192.0.2.1>"]),
    );
    assert!(r.get(HeaderName::Path).is_none());
    let r = send(
        &mut reg,
        T0,
        &register("alice", "c1", 4, &["Require: gruu"]),
    );
    assert_eq!(r.status(), Some(420));
    assert_eq!(r.get(HeaderName::Unsupported), Some("gruu"));
}

#[test]
fn same_instance_and_reg_id_replace_the_binding() {
    let mut reg = registrar(false);
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
    let first = format!("Contact: <sip:a@192.0.2.1:5060;transport=tcp>;{inst};reg-id=1");
    let r = send(
        &mut reg,
        T0,
        &register("alice", "c1", 1, &[&first, "Supported: outbound, path"]),
    );
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.get(HeaderName::Require), Some("outbound"));
    assert!(
        r.get(HeaderName::Contact).unwrap().contains(
            ";+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1"
        )
    );
    // Same instance and reg-id from a new address (new flow after a NAT rebinding):
    // the old binding goes, even from another Call-ID.
    let moved = format!("Contact: <sip:a@192.0.2.1:6000;transport=tcp>;{inst};reg-id=1");
    let r = send(&mut reg, T0 + 10, &register("alice", "c2", 1, &[&moved]));
    assert_eq!(
        bound(&r),
        [("sip:a@192.0.2.1:6000;transport=tcp".to_owned(), 1800)]
    );
    assert!(
        r.get(HeaderName::Require).is_none(),
        "no Supported: outbound this time"
    );
    // Another reg-id of the same instance is a second flow, kept beside the first.
    let second = format!("Contact: <sip:a@192.0.2.1:6001;transport=tcp>;{inst};reg-id=2");
    let r = send(&mut reg, T0 + 20, &register("alice", "c3", 1, &[&second]));
    assert_eq!(bound(&r).len(), 2);
    let b = reg.reader().lookup(AOR, T0 + 20);
    assert!(b.iter().all(
        |b| b.instance_id.as_deref() == Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>")
    ));
    // Two reg-id contacts with a non-zero expiry in one REGISTER: 400 (RFC 5626 §6).
    let both = format!("{first}, <sip:a@192.0.2.1:7000>;{inst};reg-id=3");
    let r = send(&mut reg, T0 + 30, &register("alice", "c4", 1, &[&both]));
    assert_eq!(r.status(), Some(400));
    // A reg-id without an instance is ignored.
    let r = send(
        &mut reg,
        T0 + 30,
        &register("bob", "c5", 1, &["Contact: <sip:b@192.0.2.9>;reg-id=1"]),
    );
    assert_eq!(r.status(), Some(200));
    assert_eq!(
        reg.reader().lookup("sip:bob@example.test", T0 + 30)[0].reg_id,
        None
    );
}

#[test]
fn outbound_needs_an_outbound_first_hop() {
    let mut reg = registrar(false);
    let inst = "+sip.instance=\"<urn:uuid:1>\"";
    let text = |extra: &str| {
        format!(
            "REGISTER sip:example.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP edge.example.test;branch=z9hG4bKe1\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKu1\r\n\
             Max-Forwards: 69\r\nTo: <sip:alice@example.test>\r\n\
             From: <sip:alice@example.test>;tag=1\r\nCall-ID: ob1\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:a@192.0.2.10>;{inst};reg-id=1\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    let msg = |extra: &str| Message::parse(Bytes::from(text(extra))).unwrap();
    let r = send(&mut reg, T0, &msg("Supported: outbound\r\n"));
    assert_eq!(r.status(), Some(439));
    let r = send(&mut reg, T0, &msg(""));
    assert_eq!(r.status(), Some(200), "reg-id ignored");
    assert_eq!(reg.reader().lookup(AOR, T0)[0].reg_id, None);
    let r = send(
        &mut reg,
        T0,
        &msg("Supported: outbound, path\r\nPath: <sip:edge.example.test;lr;ob>\r\n"),
    );
    assert_eq!(r.status(), Some(500), "same Call-ID and CSeq as before");
}

#[test]
fn a_query_lists_the_bindings_and_changes_nothing() {
    let mut reg = registrar(false);
    send(
        &mut reg,
        T0,
        &register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]),
    );
    let r = send(&mut reg, T0 + 30, &register("alice", "q1", 1, &[]));
    assert_eq!(r.status(), Some(200));
    assert_eq!(bound(&r), [("sip:a@192.0.2.1".to_owned(), 1770)]);
    assert_eq!(reg.reader().lookup(AOR, T0)[0].call_id, "c1");
}

#[test]
fn addresses_that_are_not_ours_or_not_aors() {
    let mut reg = registrar(false);
    let c = "Contact: <sip:a@192.0.2.1>";
    let cases = [
        ("sip:example.test", "<tel:+15551234>", 400),
        ("sip:example.test", "<sip:alice@other.test>", 404),
        ("sip:example.test", "<sip:carol@example.test>", 404),
        ("sip:example.test", "<sip:example.test>", 404),
        ("sip:other.test", "<sip:alice@other.test>", 403),
        ("tel:+15551234", "<sip:alice@example.test>", 416),
        // Aliases and IP literals in the Request-URI are ours; the To alias maps to
        // the canonical AOR.
        ("sip:192.0.2.200", "<sip:alice@example.test>", 200),
        (
            "sips:SIP.example.test",
            "<sips:alice@sip.example.test>",
            200,
        ),
    ];
    for (cseq, (ruri, to, code)) in (1..).zip(cases) {
        let r = send(&mut reg, T0, &register_to(ruri, to, "c1", cseq, &[c]));
        assert_eq!(r.status(), Some(code), "{ruri} {to}: {:?}", r.reason());
    }
    assert_eq!(reg.reader().aor_count(), 1);
    assert_eq!(reg.reader().lookup(AOR, T0).len(), 1);
}

/// A registrar that knows it listens on 127.0.0.1:5060 (UDP) and on every address
/// of a host with 192.0.2.7 on 5070 (TCP), with the alias `::1`.
fn listening_registrar(require_auth: bool) -> Reg {
    let me = Myself::new(
        DOMAIN,
        &["sip.example.test".into(), "::1".into()],
        &[
            (Transport::Udp, "127.0.0.1:5060".parse().unwrap()),
            (Transport::Tcp, "0.0.0.0:5070".parse().unwrap()),
        ],
        &["127.0.0.1".parse().unwrap(), "192.0.2.7".parse().unwrap()],
    );
    registrar(require_auth).with_myself(me)
}

#[test]
fn an_aor_at_one_of_our_addresses_is_in_our_domain() {
    // Issue 12, defect 5: `phone --server 127.0.0.1:5060` registers alice@127.0.0.1,
    // answered 404 "not a domain of this registrar".
    let mut reg = listening_registrar(false);
    let c = "Contact: <sip:a@192.0.2.1>";
    let cases = [
        ("sip:127.0.0.1:5060", "<sip:alice@127.0.0.1>", 200),
        ("sip:127.0.0.1", "<sip:alice@127.0.0.1:5060>", 200),
        ("sip:192.0.2.7:5070", "<sip:alice@192.0.2.7>", 200),
        // Defect 13: bob@[::1] with the alias ::1, however the address is written.
        ("sip:[::1]", "<sip:bob@[::1]>", 200),
        ("sip:[::1]", "<sip:bob@[0:0::1]>", 200),
        // Not us.
        ("sip:127.0.0.1", "<sip:alice@192.0.2.99>", 404),
    ];
    for (cseq, (ruri, to, code)) in (1..).zip(cases) {
        let r = send(&mut reg, T0, &register_to(ruri, to, "c5", cseq, &[c]));
        assert_eq!(r.status(), Some(code), "{ruri} {to}: {:?}", r.reason());
    }
    assert_eq!(reg.reader().lookup(AOR, T0).len(), 1);
    assert_eq!(reg.reader().lookup("sip:bob@example.test", T0).len(), 1);
}

#[test]
fn a_digest_uri_naming_us_is_accepted_one_naming_others_is_not() {
    // Issue 12, defect 6: SIPp's [authentication] signs the server's address while
    // the Request-URI names the domain.
    let mut reg = listening_registrar(true);
    let c = "Contact: <sip:a@192.0.2.1>";
    let mut cseq = 1;
    for (digest_uri, code) in [
        ("sip:127.0.0.1:5060", 200),
        ("sip:sip.example.test", 200),
        ("sip:192.0.2.99:5060", 400),
        ("sip:127.0.0.1:5999", 400),
    ] {
        let r = send(&mut reg, T0, &register("alice", "c6", cseq, &[c]));
        cseq += 1;
        let ch = challenges(&r);
        let md5 = ch
            .iter()
            .find(|c| c.as_digest().unwrap().algorithm() == Some(Algorithm::Md5))
            .unwrap();
        let creds =
            answer_challenge(md5, "alice", "alice-pw", "REGISTER", digest_uri, "0a4f", 1).unwrap();
        let auth = format!("Authorization: {creds}");
        let r = send(&mut reg, T0, &register("alice", "c6", cseq, &[c, &auth]));
        cseq += 1;
        assert_eq!(r.status(), Some(code), "{digest_uri}: {:?}", r.reason());
    }
}

#[test]
fn to_tags_are_stable_per_request_and_keyed() {
    // Issue 12, defect 8: one source of tags; a retransmission gets the same.
    let mut reg = registrar(true);
    let req = register("alice", "c8", 1, &[]);
    let a = send(&mut reg, T0, &req);
    let b = send(&mut reg, T0, &req);
    let tag = a.to().unwrap().tag().unwrap().to_owned();
    assert_eq!(b.to().unwrap().tag(), Some(tag.as_str()));
    assert_eq!(tag.len(), 24);
    let other = send(&mut reg, T0, &register("alice", "c8", 2, &[]));
    assert_ne!(other.to().unwrap().tag(), Some(tag.as_str()));
}

// ---- authentication ----

fn challenges(resp: &Message) -> Vec<Challenge<'static>> {
    resp.get_all(HeaderName::WwwAuthenticate)
        .map(|v| Challenge::parse(v).unwrap().into_owned())
        .collect()
}

fn answer(ch: &Challenge<'_>, user: &str, pw: &str, nc: u32) -> String {
    let creds =
        answer_challenge(ch, user, pw, "REGISTER", "sip:example.test", "0a4f113b", nc).unwrap();
    format!("Authorization: {creds}")
}

/// The response text with nonces blanked, to compare the form of two challenges.
fn masked(resp: &Message) -> String {
    let text = String::from_utf8_lossy(resp.as_bytes()).into_owned();
    let mut out = String::new();
    for part in text.split("nonce=\"") {
        if out.is_empty() {
            out.push_str(part);
        } else {
            out.push_str("nonce=\"N");
            out.push_str(&part[part.find('"').unwrap()..]);
        }
    }
    out
}

#[test]
fn challenge_offers_sha256_then_md5_and_both_answers_work() {
    let mut reg = registrar(true);
    let c = "Contact: <sip:a@192.0.2.1>";
    let r = send(&mut reg, T0, &register("alice", "c1", 1, &[c]));
    assert_eq!(r.status(), Some(401));
    let ch = challenges(&r);
    let algs: Vec<_> = ch
        .iter()
        .map(|c| c.as_digest().unwrap().algorithm())
        .collect();
    assert_eq!(algs, [Some(Algorithm::Sha256), Some(Algorithm::Md5)]);
    for c in &ch {
        let d = c.as_digest().unwrap();
        assert_eq!(d.realm, DOMAIN);
        assert_eq!(d.qop, [sip_core::auth::Qop::Auth]);
        assert!(!d.stale);
    }
    assert!(reg.reader().is_empty());
    let r = send(
        &mut reg,
        T0 + 1,
        &register(
            "alice",
            "c1",
            2,
            &[c, &answer(&ch[1], "alice", "alice-pw", 1)],
        ),
    );
    assert_eq!(r.status(), Some(200), "MD5: {:?}", r.reason());
    // Both challenges carry one nonce, so the next answer takes the next count.
    let r = send(
        &mut reg,
        T0 + 2,
        &register(
            "alice",
            "c1",
            3,
            &[c, &answer(&ch[0], "alice", "alice-pw", 2)],
        ),
    );
    assert_eq!(r.status(), Some(200), "SHA-256: {:?}", r.reason());
    let r = send(
        &mut reg,
        T0 + 3,
        &register(
            "alice",
            "c1",
            4,
            &[c, &answer(&ch[0], "alice", "alice-pw", 3)],
        ),
    );
    assert_eq!(r.status(), Some(200));
    let s = reg.stats();
    assert_eq!((s.challenges, s.accepted, s.auth_failures), (1, 3, 0));
    // Authenticated as bob, bob may not touch alice's bindings.
    let r = send(
        &mut reg,
        T0 + 4,
        &register("alice", "c1", 5, &[c, &answer(&ch[0], "bob", "bob-pw", 4)]),
    );
    assert_eq!(r.status(), Some(403));
}

#[test]
fn unknown_user_and_wrong_password_look_the_same() {
    let mut reg = registrar(true);
    let c = "Contact: <sip:a@192.0.2.1>";
    let ch = challenges(&send(&mut reg, T0, &register("alice", "c1", 1, &[c])));
    let wrong = send(
        &mut reg,
        T0,
        &register("alice", "c1", 2, &[c, &answer(&ch[0], "alice", "guess", 1)]),
    );
    let ch = challenges(&wrong);
    let unknown = send(
        &mut reg,
        T0,
        &register(
            "alice",
            "c1",
            2,
            &[c, &answer(&ch[0], "mallory", "guess", 1)],
        ),
    );
    assert_eq!(wrong.status(), Some(401));
    assert_eq!(masked(&wrong), masked(&unknown));
    assert_ne!(
        wrong.as_bytes(),
        unknown.as_bytes(),
        "fresh nonces each time"
    );
    assert_eq!(reg.stats().auth_failures, 2);
}

#[test]
fn stale_nonce_and_replayed_count() {
    let mut reg = registrar(true);
    let c = "Contact: <sip:a@192.0.2.1>";
    let ch = challenges(&send(&mut reg, T0, &register("alice", "c1", 1, &[c])));
    let late = register(
        "alice",
        "c1",
        2,
        &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
    );
    let r = send(&mut reg, T0 + 300, &late);
    assert_eq!(r.status(), Some(401));
    assert!(challenges(&r).iter().all(|c| c.as_digest().unwrap().stale));
    assert_eq!(reg.stats().auth_failures, 0, "a stale nonce is no failure");
    // Replay: the very same authorized request a second time.
    let ch = challenges(&r);
    let req = register(
        "alice",
        "c1",
        3,
        &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
    );
    assert_eq!(send(&mut reg, T0 + 301, &req).status(), Some(200));
    let r = send(&mut reg, T0 + 302, &req);
    assert_eq!(r.status(), Some(401));
    assert!(!challenges(&r)[0].as_digest().unwrap().stale);
    assert_eq!(reg.stats().auth_failures, 1);
}

#[test]
fn only_requests_without_credentials_are_answered_statelessly() {
    let c = "Contact: <sip:a@192.0.2.1>";
    let mut reg = registrar(true);
    let bare = register("alice", "c1", 1, &[c]);
    let outcome = reg
        .answer_statelessly(T0, &bare, src(), Transport::Udp)
        .expect("a request without credentials is challenged statelessly");
    assert_eq!((outcome.status, outcome.awaits_commit), (401, false));
    let ch = challenges(&Message::parse(outcome.response.unwrap()).unwrap());
    let answered = register(
        "alice",
        "c1",
        2,
        &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
    );
    assert!(
        reg.answer_statelessly(T0, &answered, src(), Transport::Udp)
            .is_none()
    );
    // Nothing is challenged when authentication is off: everything is stateful.
    let mut open = registrar(false);
    assert!(
        open.answer_statelessly(T0, &bare, src(), Transport::Udp)
            .is_none()
    );
}

#[test]
fn a_source_that_keeps_failing_is_banned_for_a_while() {
    let mut reg = registrar(true);
    let c = "Contact: <sip:a@192.0.2.1>";
    let mut ch = challenges(&send(&mut reg, T0, &register("alice", "c1", 1, &[c])));
    for i in 0..3 {
        let r = send(
            &mut reg,
            T0 + i,
            &register("alice", "c1", 2, &[c, &answer(&ch[0], "alice", "nope", 1)]),
        );
        assert_eq!(r.status(), Some(401));
        ch = challenges(&r);
    }
    assert!(reg.is_banned(src().ip(), T0 + 3));
    assert_eq!(reg.stats().bans, 1);
    // Even the right password is refused during the ban.
    let good = register(
        "alice",
        "c1",
        3,
        &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
    );
    let r = send(&mut reg, T0 + 10, &good);
    assert_eq!(r.status(), Some(403));
    assert_eq!(reg.stats().refused_banned, 1);
    // Another source is not affected.
    let other: SocketAddr = "198.51.100.1:5060".parse().unwrap();
    let out = reg.handle_register(
        T0 + 10,
        &register("alice", "c9", 1, &[c]),
        other,
        Transport::Udp,
    );
    assert_eq!(out.status, 401);
    // Lifted after ban_secs (counted from the third failure, at T0 + 2).
    assert!(reg.is_banned(src().ip(), T0 + 2 + 299));
    reg.sweep(T0 + 2 + 300).unwrap();
    assert!(!reg.is_banned(src().ip(), T0 + 2 + 300));
    let ch = challenges(&send(&mut reg, T0 + 302, &register("alice", "c1", 3, &[c])));
    let r = send(
        &mut reg,
        T0 + 303,
        &register(
            "alice",
            "c1",
            4,
            &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
        ),
    );
    assert_eq!(r.status(), Some(200));
}

// ---- storage ----

/// A location store whose writes fail on demand.
#[derive(Default)]
struct Flaky {
    inner: MemoryLocationStore,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LocationStore for Flaky {
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Corrupt {
                what: "test",
                detail: "disk full".into(),
            });
        }
        self.inner.apply(changes)
    }
    fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError> {
        self.inner.lookup(aor, now)
    }
    fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError> {
        self.inner.list_all(now)
    }
    fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
        self.inner.sweep(now)
    }
}

/// A registrar without authentication over a store whose writes fail while the
/// returned flag is set, with these users.
fn flaky_registrar(
    names: &[&str],
) -> (
    Registrar<Flaky, MemoryUserStore>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let flaky = Flaky::default();
    let fail = std::sync::Arc::clone(&flaky.fail);
    let settings = RegistrarSettings {
        domain: DOMAIN.into(),
        rules: RegistrarConfig {
            require_auth: false,
            ..RegistrarConfig::default()
        },
        ..RegistrarSettings::default()
    };
    let mut users = MemoryUserStore::default();
    for name in names {
        users
            .add(&User::new(name, DOMAIN, "pw", T0).unwrap())
            .unwrap();
    }
    let reg = Registrar::new(settings, flaky, users, KEY, T0).unwrap();
    (reg, fail)
}

#[test]
fn a_failed_write_is_a_500_and_changes_nothing() {
    let (mut reg, fail) = flaky_registrar(&["alice"]);
    let req = register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]);
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = reg.handle_register(T0, &req, src(), Transport::Tcp);
    assert_eq!(out.status, 500);
    assert!(reg.reader().is_empty());
    assert_eq!(reg.stats().store_errors, 1);
    fail.store(false, std::sync::atomic::Ordering::Relaxed);
    let out = reg.handle_register(T0, &req, src(), Transport::Tcp);
    assert_eq!(out.status, 200);
    assert_eq!(out.aor.as_deref(), Some(AOR));
}

#[test]
fn staged_registers_share_one_commit_and_fail_together() {
    let (mut reg, fail) = flaky_registrar(&["alice", "bob"]);
    let reader = reg.reader();
    let stage = |reg: &mut Registrar<Flaky, MemoryUserStore>, req: &Message| {
        let out = reg.stage_register(T0, req, src(), Transport::Udp);
        let resp = Message::parse(out.response.clone().unwrap()).unwrap();
        (out, resp)
    };
    // Two REGISTERs of one AOR and one of another, handled before one commit: the
    // second sees the first's binding, its CSeq is checked against it, and every
    // 200 awaits the commit; nothing is visible to readers before it.
    let (a1, _) = stage(
        &mut reg,
        &register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]),
    );
    let (a2, r2) = stage(
        &mut reg,
        &register("alice", "c2", 1, &["Contact: <sip:a@192.0.2.2>"]),
    );
    let (old, _) = stage(
        &mut reg,
        &register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]),
    );
    let (b1, _) = stage(
        &mut reg,
        &register("bob", "c3", 1, &["Contact: <sip:b@192.0.2.3>"]),
    );
    let (query, _) = stage(&mut reg, &register("bob", "c4", 1, &[]));
    assert_eq!(
        (a1.status, a2.status, b1.status, query.status),
        (200, 200, 200, 200)
    );
    assert!(a1.awaits_commit && a2.awaits_commit && b1.awaits_commit);
    assert!(
        query.awaits_commit,
        "a query listing staged bindings waits too"
    );
    assert_eq!(bound(&r2).len(), 2);
    assert_eq!(
        (old.status, old.awaits_commit),
        (500, false),
        "CSeq not newer than the staged one"
    );
    assert!(reader.is_empty());
    reg.commit().unwrap();
    assert_eq!(reader.lookup(AOR, T0).len(), 2);
    assert_eq!(reader.len(), 3);
    assert_eq!(reg.stats().accepted, 4);

    // A batch whose commit fails: its 200s become 500s and nothing is stored.
    let req = register("alice", "c1", 2, &["Contact: <sip:a@192.0.2.1>;expires=0"]);
    let (gone, _) = stage(&mut reg, &req);
    assert!(gone.awaits_commit);
    let challenge_free = stage(
        &mut reg,
        &register("carol", "c5", 1, &["Contact: <sip:c@x>"]),
    )
    .0;
    assert_eq!(
        (challenge_free.status, challenge_free.awaits_commit),
        (404, false)
    );
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reg.commit().is_err());
    let failed = reg.failed_commit(&req, gone);
    assert_eq!(failed.status, 500);
    let resp = Message::parse(failed.response.unwrap()).unwrap();
    resp.validate().unwrap();
    assert_eq!(resp.status(), Some(500));
    assert_eq!(reg.stats().store_errors, 1);
    assert_eq!(reg.stats().accepted, 4);
    assert_eq!(reader.lookup(AOR, T0).len(), 2);
    fail.store(false, std::sync::atomic::Ordering::Relaxed);
    // The failed batch left nothing staged behind.
    let (again, r) = stage(&mut reg, &register("alice", "c2", 2, &[]));
    assert!(!again.awaits_commit);
    assert_eq!(bound(&r).len(), 2);
}

#[test]
fn batches_stored_beside_the_registrar() {
    let (mut reg, fail) = flaky_registrar(&["alice", "bob"]);
    let reader = reg.reader();
    let mut backend = reg.detach_location_backend().unwrap();
    // As the writer thread would: apply the batch to the backend, report back.
    let mut store = |batch: store::Batch| store::Committed {
        id: batch.id,
        result: backend.apply(&batch.changes),
    };
    let a = register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]);
    let out = reg.stage_register(T0, &a, src(), Transport::Udp);
    assert!(out.awaits_commit);
    let batch = reg.begin_commit().unwrap();
    assert!(reg.commit_in_flight() && reg.begin_commit().is_none());
    // Staged while the first batch is out: sees it, waits for the next.
    let b = register("alice", "c1", 2, &["Contact: <sip:a@192.0.2.2>"]);
    let out_b = reg.stage_register(T0, &b, src(), Transport::Udp);
    assert_eq!(
        bound(&Message::parse(out_b.response.clone().unwrap()).unwrap()).len(),
        2
    );
    assert!(reader.is_empty(), "nothing shows before it is stored");
    reg.end_commit(store(batch)).unwrap();
    assert_eq!(reader.lookup(AOR, T0).len(), 1);

    // The second batch fails: its 200 becomes a 500, and what was staged after it
    // goes with it.
    let batch = reg.begin_commit().unwrap();
    let c = register("bob", "c2", 1, &["Contact: <sip:b@192.0.2.3>"]);
    let out_c = reg.stage_register(T0, &c, src(), Transport::Udp);
    assert!(out_c.awaits_commit);
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reg.end_commit(store(batch)).is_err());
    assert_eq!(reg.failed_commit(&b, out_b).status, 500);
    assert_eq!(reg.failed_commit(&c, out_c).status, 500);
    assert!(!reg.has_staged() && !reg.commit_in_flight());
    assert_eq!(reader.lookup(AOR, T0).len(), 1);
    assert_eq!(reg.stats().store_errors, 1);
    assert_eq!(reg.stats().accepted, 1);
    assert!(matches!(reg.commit(), Err(StoreError::Detached)));
}

#[test]
fn bindings_survive_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.db");
    let open = || {
        let loc = store::SqliteLocationStore::open(&path, store::Durability::Process).unwrap();
        let users = store::SqliteUserStore::open(&path).unwrap();
        let settings = RegistrarSettings {
            domain: DOMAIN.into(),
            ..RegistrarSettings::default()
        };
        Registrar::new(settings, loc, users, KEY, T0).unwrap()
    };
    let mut reg = open();
    let mut users = store::SqliteUserStore::open(&path).unwrap();
    users
        .add(&User::new("alice", DOMAIN, "alice-pw", T0).unwrap())
        .unwrap();
    let c = "Contact: <sip:a@192.0.2.1>";
    let out = reg.handle_register(T0, &register("alice", "c1", 1, &[c]), src(), Transport::Udp);
    let ch = challenges(&Message::parse(out.response.unwrap()).unwrap());
    let req = register(
        "alice",
        "c1",
        2,
        &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
    );
    assert_eq!(
        reg.handle_register(T0, &req, src(), Transport::Udp).status,
        200
    );
    drop(reg);
    let reg = open();
    let b = reg.reader().lookup(AOR, T0 + 1);
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].cseq, b[0].expires_at), (2, T0 + 3600));
}

#[test]
fn the_registrar_can_move_to_its_own_thread() {
    fn send<T: Send + 'static>() {}
    send::<Registrar<Box<dyn LocationStore>, Box<dyn UserStore>>>();
    send::<Registrar<store::SqliteLocationStore, store::SqliteUserStore>>();
}

#[test]
fn dates() {
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(1_289_690_940), "Sat, 13 Nov 2010 23:29:00 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
}
