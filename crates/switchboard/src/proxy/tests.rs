//! The proxy on a fake clock: a transaction layer, in-memory users and bindings, and
//! messages in and out as bytes. No sockets. What depends on timers and the network
//! (forking, CANCEL, Timer C, retransmission, loss) is tested on SimNet instead, in
//! `simnet_tests`.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use bytes::Bytes;
use sip_core::transaction::{Event, TimerConfig, Transmit};
use std::net::SocketAddr;
use std::time::Duration;
use store::{CachedStore, Change, LocationStore, MemoryLocationStore, MemoryUserStore, User};

const UNIX: u64 = 1_800_000_000;
const CALLER: &str = "192.0.2.1:5060";

struct Harness {
    now: Instant,
    txl: TransactionLayer,
    proxy: Proxy,
    /// The server's one authenticator, lent to the proxy as `serve` does.
    auth: Authenticator,
    users: MemoryUserStore,
    /// Requests the proxy handed back to be answered as a UAS.
    for_us: Vec<Message>,
    location: CachedStore<MemoryLocationStore>,
    sent: Vec<Transmit>,
    /// Lookups the proxy asked for: (server transaction, URI).
    resolve: Vec<(TransactionKey, String)>,
}

fn flow(addr: &str) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
        local: None,
        connection: None,
    }
}

/// `user`'s binding to `contact`, registered 10 s ago from `source` for 600 s.
fn binding(user: &str, contact: &str, transport: Transport, source: &str) -> Binding {
    Binding {
        aor: format!("sip:{user}@example.test"),
        contact: contact.into(),
        expires_at: UNIX + 600,
        q: None,
        call_id: format!("reg-{contact}"),
        cseq: 1,
        transport,
        source: source.parse().unwrap(),
        path: vec![],
        instance_id: None,
        reg_id: None,
        user_agent: None,
        registered_at: UNIX - 10,
    }
}

impl Harness {
    fn new(require_auth: bool) -> Harness {
        Self::with(require_auth, false)
    }

    fn with(require_auth: bool, forward_foreign: bool) -> Harness {
        let listeners = [
            (Transport::Udp, "10.0.0.1:5060".parse().unwrap()),
            (Transport::Tcp, "10.0.0.1:5060".parse().unwrap()),
        ];
        Self::listening(require_auth, forward_foreign, &listeners, &[])
    }

    /// A proxy bound to `listeners` (wildcards own `host` addresses) with `aliases`.
    fn listening(
        require_auth: bool,
        forward_foreign: bool,
        listeners: &[(Transport, SocketAddr)],
        aliases: &[&str],
    ) -> Harness {
        let host: Vec<std::net::IpAddr> = ["127.0.0.1", "::1", "10.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let aliases: Vec<String> = aliases.iter().map(|a| a.to_string()).collect();
        let myself = Myself::new("example.test", &aliases, listeners, &host);
        let settings = ProxySettings {
            myself,
            server_name: "Switchboard/test".into(),
            require_auth,
            trusted: vec![],
            forward_foreign,
            max_recursions: 2,
        };
        let ifaces = listeners
            .iter()
            .map(|(t, a)| Interface::new(*t, *a, "example.test"))
            .collect();
        let auth = Authenticator::new("example.test", &["MD5".into()], &[7u8; 32], 300)
            .unwrap()
            .with_bans(3, 60, 600);
        let mut users = MemoryUserStore::default();
        for name in ["alice", "bob", "carol"] {
            users
                .add(&User::new(name, "example.test", "pw", UNIX).unwrap())
                .unwrap();
        }
        let timers = TimerConfig {
            timer_c: Some(Duration::from_secs(10)),
            ..TimerConfig::default()
        };
        Harness {
            now: Instant::now(),
            txl: TransactionLayer::new(timers),
            proxy: Proxy::new(settings, ifaces, IdGenerator::new(&[9u8; 16]).unwrap()),
            auth,
            users,
            for_us: Vec::new(),
            location: CachedStore::new(MemoryLocationStore::default(), UNIX).unwrap(),
            sent: Vec::new(),
            resolve: Vec::new(),
        }
    }

    fn bind(&mut self, user: &str, contact: &str, q: Option<u16>, age: u64) {
        self.upsert(Binding {
            q,
            registered_at: UNIX - age,
            ..binding(user, contact, Transport::Udp, "192.0.2.99:5060")
        });
    }

    fn upsert(&mut self, binding: Binding) {
        self.location.apply(&[Change::Upsert(binding)]).unwrap();
    }

    /// The caller INVITEs bob; returns the first request forwarded.
    fn invite_bob(&mut self) -> Message {
        self.recv(CALLER, &invite("sip:bob@example.test", ""));
        self.take()[0].1.clone()
    }

    /// Feeds bytes received from `from`, then runs the proxy until quiet.
    fn recv(&mut self, from: &str, text: &str) {
        let msg = Message::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap();
        self.txl.handle_message(self.now, msg, flow(from)).unwrap();
        self.pump();
    }

    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.txl.poll_transmit() {
                progressed = true;
                self.sent.push(t);
            }
            while let Some(event) = self.txl.poll_event() {
                progressed = true;
                let reader = self.location.reader();
                let mut env = Env {
                    now: self.now,
                    unix: UNIX,
                    users: &self.users,
                    auth: &mut self.auth,
                    location: &reader,
                };
                let txl = &mut self.txl;
                match event {
                    Event::Request { key, request, flow } => {
                        match self.proxy.on_request(&mut env, txl, key, &request, flow) {
                            Handled::Answered | Handled::Forwarded => {}
                            Handled::Resolve(uri) => self.resolve.push((key, uri)),
                            Handled::ForUs => self.for_us.push(request),
                            Handled::Pbx(call) => panic!("no B2BUA here: {call:?}"),
                        }
                    }
                    Event::Ack { request, flow, .. } => {
                        self.proxy.on_ack(&env, txl, &request, flow)
                    }
                    Event::Response { key, response } => {
                        self.proxy.on_response(self.now, txl, key, response)
                    }
                    Event::Timeout { key, timer } => {
                        self.proxy.on_timeout(self.now, txl, key, timer)
                    }
                    Event::TransportError { key } => {
                        self.proxy.on_transport_error(self.now, txl, key)
                    }
                    Event::Terminated { key } => self.proxy.on_terminated(self.now, txl, key),
                    Event::StrayResponse { response, .. } => {
                        self.proxy.on_stray_response(txl, &response)
                    }
                    _ => {}
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// The send of `t` fails (a closed connection); runs the proxy until quiet.
    fn send_fails(&mut self, t: &Transmit) {
        self.txl
            .handle_transport_error(self.now, t.key.unwrap())
            .unwrap();
        self.pump();
    }

    /// What was sent since the last call, as it was handed to the transport.
    fn take_transmits(&mut self) -> Vec<Transmit> {
        self.sent.drain(..).collect()
    }

    /// The messages sent since the last call, with where they went.
    fn take(&mut self) -> Vec<(SocketAddr, Message)> {
        self.sent
            .drain(..)
            .map(|t| (t.flow.remote, Message::parse(t.bytes).unwrap()))
            .collect()
    }
}

pub(super) fn invite(ruri: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKc1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:dave@elsewhere.test>;tag=f1\r\n\
         To: <sip:bob@example.test>\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:dave@{CALLER}>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// The callee's response to the forwarded request `req`, as bytes.
pub(super) fn answer(req: &Message, code: u16, tag: &str) -> String {
    let mut b = sip_core::builder::response_to_with_reason(req, code, "", Some(tag));
    b.push("Contact", "<sip:bob@192.0.2.20:5060>");
    String::from_utf8(b.into_bytes().unwrap().to_vec()).unwrap()
}

fn codes(sent: &[(SocketAddr, Message)]) -> Vec<String> {
    sent.iter()
        .map(|(a, m)| match m.status() {
            Some(c) => format!("{c}>{a}"),
            None => format!("{}>{a}", m.method().unwrap().as_str()),
        })
        .collect()
}

#[test]
fn refusals_404_480_483_482_and_403() {
    let mut h = Harness::new(false);
    h.recv(CALLER, &invite("sip:nobody@example.test", ""));
    assert_eq!(codes(&h.take()), ["404>192.0.2.1:5060"]);
    h.recv(
        CALLER,
        &invite("sip:carol@example.test", "").replace("z9hG4bKc1", "z9hG4bKc2"),
    );
    assert_eq!(codes(&h.take()), ["480>192.0.2.1:5060"]);
    h.recv(
        CALLER,
        &invite("sip:bob@example.test", "")
            .replace("z9hG4bKc1", "z9hG4bKc3")
            .replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(codes(&h.take()), ["483>192.0.2.1:5060"]);
    // An OPTIONS for a user cannot be forwarded either (RFC 4475 §3.3.11, zeromf).
    let options = invite("sip:bob@example.test", "")
        .replace("INVITE", "OPTIONS")
        .replace("z9hG4bKc1", "z9hG4bKc6")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    h.recv(CALLER, &options);
    assert_eq!(codes(&h.take()), ["483>192.0.2.1:5060"]);
    // A foreign domain from a caller nobody authenticated.
    h.recv(
        CALLER,
        &invite("sip:bob@elsewhere.test", "").replace("z9hG4bKc1", "z9hG4bKc4"),
    );
    assert_eq!(codes(&h.take()), ["403>192.0.2.1:5060"]);

    // The request as we would forward it, come back unchanged: a loop.
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    let original = invite("sip:bob@example.test", "").replace("z9hG4bKc1", "z9hG4bKc5");
    h.recv(CALLER, &original);
    let fwd = h.take()[0].1.clone();
    let ours = fwd.top_via().unwrap().to_string();
    let looped = original.replace(
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc5",
        &format!("Via: SIP/2.0/UDP 192.0.2.30;branch=z9hG4bKz\r\nVia: {ours}\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc5"),
    );
    h.recv("192.0.2.30:5060", &looped);
    assert_eq!(codes(&h.take()), ["482>192.0.2.30:5060"]);
}

#[test]
fn local_callers_are_challenged_with_407() {
    let mut h = Harness::new(true);
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    let from_alice = invite("sip:bob@example.test", "")
        .replace("<sip:dave@elsewhere.test>", "<sip:alice@example.test>");
    h.recv(CALLER, &from_alice);
    let out = h.take();
    assert_eq!(codes(&out), ["407>192.0.2.1:5060"]);
    let challenge = out[0].1.get(HeaderName::ProxyAuthenticate).unwrap();
    assert!(
        challenge.starts_with("Digest ") && challenge.contains("MD5"),
        "{challenge}"
    );
    // A caller from another domain is challenged the same (it was let through,
    // issue 12): only a local user's credentials let a request through.
    h.recv(
        CALLER,
        &invite("sip:bob@example.test", "").replace("z9hG4bKc1", "z9hG4bKc9"),
    );
    assert_eq!(codes(&h.take()), ["407>192.0.2.1:5060"]);
}

#[test]
fn in_dialog_requests_follow_the_route_set_and_ack_goes_statelessly() {
    let mut h = Harness::new(true);
    let token = h.proxy.rr_token("call-1");
    let bye = format!(
        "BYE sip:bob@192.0.2.20:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKb1\r\nMax-Forwards: 70\r\n\
        Route: <sip:10.0.0.1:5060;transport=udp;lr;sbd={token}>\r\n\
        From: <sip:alice@example.test>;tag=f1\r\nTo: <sip:bob@example.test>;tag=ta\r\n\
        Call-ID: call-1\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let bye = bye.as_str();
    h.recv(CALLER, bye);
    let out = h.take();
    assert_eq!(codes(&out), ["BYE>192.0.2.20:5060"]);
    assert_eq!(out[0].1.count(HeaderName::Route), 0, "our Route is popped");
    assert_eq!(out[0].1.count(HeaderName::RecordRoute), 0);
    let ack = bye
        .replace("BYE sip", "ACK sip")
        .replace("3 BYE", "2 ACK")
        .replace("z9hG4bKb1", "z9hG4bKa1");
    h.recv(CALLER, &ack);
    h.recv(CALLER, &ack);
    let out = h.take();
    assert_eq!(codes(&out), ["ACK>192.0.2.20:5060", "ACK>192.0.2.20:5060"]);
    assert_eq!(
        out[0].1.as_bytes(),
        out[1].1.as_bytes(),
        "same ACK, same bytes"
    );
    // Not through us: refused, and never relayed.
    let stranger = bye
        .replace(
            &format!("Route: <sip:10.0.0.1:5060;transport=udp;lr;sbd={token}>\r\n"),
            "",
        )
        .replace("z9hG4bKb1", "z9hG4bKb2");
    h.recv(CALLER, &stranger);
    assert_eq!(codes(&h.take()), ["404>192.0.2.1:5060"]);
}

#[test]
fn foreign_domains_only_when_configured_and_by_rfc3263_targets() {
    let mut h = Harness::with(false, true);
    h.recv(CALLER, &invite("sip:bob@elsewhere.test", ""));
    assert!(h.take().is_empty(), "nothing leaves before resolution");
    let (key, uri) = h.resolve.pop().unwrap();
    assert_eq!(uri, "sip:bob@elsewhere.test");
    let targets = [
        (Transport::Udp, "192.0.2.50:5060".parse().unwrap()),
        (Transport::Udp, "192.0.2.51:5060".parse().unwrap()),
    ];
    h.proxy.on_resolved(h.now, &mut h.txl, key, &targets);
    h.pump();
    let out = h.take();
    assert_eq!(
        codes(&out),
        ["INVITE>192.0.2.50:5060"],
        "one target at a time"
    );
    assert_eq!(out[0].1.request_uri_str(), Some("sip:bob@elsewhere.test"));
    let first = out[0].1.clone();
    h.recv("192.0.2.50:5060", &answer(&first, 503, "t1"));
    let out = h.take();
    assert_eq!(
        codes(&out),
        ["ACK>192.0.2.50:5060", "INVITE>192.0.2.51:5060"]
    );

    // No target: 404.
    h.recv(
        CALLER,
        &invite("sip:bob@nowhere.test", "").replace("z9hG4bKc1", "z9hG4bKn1"),
    );
    let (key, _) = h.resolve.pop().unwrap();
    h.proxy.on_resolved(h.now, &mut h.txl, key, &[]);
    h.pump();
    assert_eq!(codes(&h.take()), ["404>192.0.2.1:5060"]);

    // With authentication required, an unauthenticated caller from another domain
    // never leaves for another domain.
    let mut h = Harness::with(true, true);
    h.recv(CALLER, &invite("sip:bob@192.0.2.50", ""));
    assert_eq!(codes(&h.take()), ["407>192.0.2.1:5060"]);
    assert!(h.resolve.is_empty());
}

#[test]
fn strict_routers_on_both_sides() {
    let mut h = Harness::new(false);
    // From a strict router: our Record-Route value is the Request-URI and the remote
    // target is the last Route (§16.4).
    let from_strict = "BYE sip:10.0.0.1:5060;transport=udp SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\n\
        Route: <sip:bob@192.0.2.20:5060>\r\n\
        From: <sip:alice@example.test>;tag=f1\r\nTo: <sip:bob@example.test>;tag=ta\r\n\
        Call-ID: call-s\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n";
    h.recv(CALLER, from_strict);
    let out = h.take();
    assert_eq!(codes(&out), ["BYE>192.0.2.20:5060"]);
    assert_eq!(out[0].1.request_uri_str(), Some("sip:bob@192.0.2.20:5060"));
    assert_eq!(out[0].1.count(HeaderName::Route), 0);

    // To a strict router: the next Route (no lr) becomes the Request-URI and the
    // Request-URI goes to the end of Route (§16.6 step 6).
    let to_strict = "BYE sip:bob@192.0.2.20:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKs2\r\nMax-Forwards: 70\r\n\
        Route: <sip:10.0.0.1:5060;transport=udp;lr>, <sip:192.0.2.40:5060>, <sip:192.0.2.41;lr>\r\n\
        From: <sip:alice@example.test>;tag=f1\r\nTo: <sip:bob@example.test>;tag=ta\r\n\
        Call-ID: call-s\r\nCSeq: 4 BYE\r\nContent-Length: 0\r\n\r\n";
    h.recv(CALLER, to_strict);
    let out = h.take();
    assert_eq!(codes(&out), ["BYE>192.0.2.40:5060"]);
    assert_eq!(out[0].1.request_uri_str(), Some("sip:192.0.2.40:5060"));
    let routes: Vec<String> = out[0].1.routes().map(|r| r.unwrap().to_string()).collect();
    assert_eq!(routes, ["<sip:192.0.2.41;lr>", "<sip:bob@192.0.2.20:5060>"]);
}

/// The callee's `code` response to `req` with extra header lines.
fn answer_with(req: &Message, code: u16, tag: &str, headers: &[(&str, &str)]) -> String {
    let mut b = sip_core::builder::response_to_with_reason(req, code, "", Some(tag));
    for (name, value) in headers {
        b.push(name, value);
    }
    String::from_utf8(b.into_bytes().unwrap().to_vec()).unwrap()
}

#[test]
fn a_forwarded_401_or_407_carries_every_branch_challenge() {
    let mut h = Harness::new(false);
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    h.bind("bob", "sip:bob@192.0.2.21:5060", None, 20);
    h.bind("bob", "sip:bob@192.0.2.22:5060", None, 30);
    h.recv(CALLER, &invite("sip:bob@example.test", ""));
    let out = h.take();
    assert_eq!(out.len(), 3);
    let (a, b, c) = (out[0].1.clone(), out[1].1.clone(), out[2].1.clone());
    let www_a = r#"Digest realm="a.test", nonce="na", algorithm=MD5"#;
    let www_a2 = r#"Digest realm="a.test", nonce="na2", algorithm=SHA-256"#;
    let proxy_b = r#"Digest realm="b.test", nonce="nb""#;
    h.recv(
        "192.0.2.20:5060",
        &answer_with(
            &a,
            401,
            "ta",
            &[("WWW-Authenticate", www_a), ("WWW-Authenticate", www_a2)],
        ),
    );
    h.recv(
        "192.0.2.21:5060",
        &answer_with(&b, 407, "tb", &[("Proxy-Authenticate", proxy_b)]),
    );
    h.take();
    h.recv("192.0.2.22:5060", &answer_with(&c, 486, "tc", &[]));
    let out = h.take();
    let up: Vec<_> = out
        .iter()
        .filter(|(a, _)| a.to_string() == CALLER)
        .collect();
    assert_eq!(up.len(), 1, "{:?}", codes(&out));
    let resp = &up[0].1;
    // 401 and 407 are both 4xx like the 486; the first of the class (the 401) wins.
    assert_eq!(resp.status(), Some(401));
    let www: Vec<&str> = resp.get_all(HeaderName::WwwAuthenticate).collect();
    assert_eq!(www, [www_a, www_a2]);
    let proxy: Vec<&str> = resp.get_all(HeaderName::ProxyAuthenticate).collect();
    assert_eq!(proxy, [proxy_b]);
    assert_eq!(resp.vias().count(), 1);
}

#[test]
fn proxy_require_with_an_unknown_option_gets_420_with_unsupported() {
    let mut h = Harness::new(false);
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    h.recv(
        CALLER,
        &invite(
            "sip:bob@example.test",
            "Proxy-Require: foo, bar\r\nProxy-Require: foo\r\nRequire: baz\r\n",
        ),
    );
    let out = h.take();
    assert_eq!(codes(&out), ["420>192.0.2.1:5060"]);
    assert_eq!(out[0].1.get(HeaderName::Unsupported), Some("foo, bar"));
    assert_eq!(h.proxy.stats().calls_routed, 0);
    // Require is for the UAS: the proxy passes it on.
    h.recv(
        CALLER,
        &invite("sip:bob@example.test", "Require: baz\r\n").replace("z9hG4bKc1", "z9hG4bKr2"),
    );
    let out = h.take();
    assert_eq!(codes(&out), ["INVITE>192.0.2.20:5060"]);
    assert_eq!(out[0].1.get(HeaderName::Require), Some("baz"));
}

#[test]
fn counters_are_logged_when_they_change_at_most_once_per_interval() {
    let t0 = Instant::now();
    let mut log = StatsLog::new(Duration::from_secs(60));
    let mut stats = ProxyStats::default();
    assert_eq!(log.due(t0, &stats, 0), None, "idle: nothing to say");
    stats.calls_routed = 1;
    stats.responses[2] = 1;
    assert_eq!(
        log.due(t0 + Duration::from_secs(15), &stats, 3).as_deref(),
        Some(
            "calls 1 forwarded 0 responses 1xx 0 2xx 1 3xx 0 4xx 0 5xx 0 6xx 0 \
             challenges 0 contexts 0 transactions 3"
        )
    );
    stats.calls_routed = 2;
    assert_eq!(log.due(t0 + Duration::from_secs(30), &stats, 3), None);
    assert!(log.due(t0 + Duration::from_secs(75), &stats, 3).is_some());
    assert_eq!(log.due(t0 + Duration::from_secs(200), &stats, 3), None);
}

#[test]
fn a_3xx_to_a_local_user_is_recursed_on_and_foreign_contacts_are_passed_on() {
    let mut h = Harness::new(false);
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    h.bind("carol", "sip:carol@192.0.2.30:5060", None, 10);
    let to_bob = h.invite_bob();
    let contacts = "<sip:carol@example.test>;q=0.9, <sip:x@203.0.113.9>;q=0.5";
    h.recv(
        "192.0.2.20:5060",
        &answer_with(&to_bob, 302, "tb", &[("Contact", contacts)]),
    );
    let out = h.take();
    assert_eq!(
        codes(&out),
        ["ACK>192.0.2.20:5060", "INVITE>192.0.2.30:5060"]
    );
    let to_carol = out[1].1.clone();
    assert_eq!(
        to_carol.request_uri_str(),
        Some("sip:carol@192.0.2.30:5060")
    );
    assert!(
        to_carol
            .top_via()
            .unwrap()
            .branch()
            .unwrap()
            .ends_with(".1")
    );
    h.recv("192.0.2.30:5060", &answer_with(&to_carol, 486, "tc", &[]));
    let out = h.take();
    assert_eq!(codes(&out), ["ACK>192.0.2.30:5060", "302>192.0.2.1:5060"]);
    // The 3xx beats the 486, without the Contact we recursed on (§16.7 step 4).
    let contacts: Vec<&str> = out[1].1.get_all(HeaderName::Contact).collect();
    assert_eq!(contacts, ["<sip:x@203.0.113.9>;q=0.5"]);
    assert_eq!(h.proxy.stats().contexts, 0);
}

#[test]
fn recursion_is_bounded_and_skips_targets_already_tried() {
    let mut h = Harness::new(false); // max_recursions 2
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    h.bind("carol", "sip:carol@192.0.2.30:5060", None, 10);
    h.bind("dave", "sip:dave@192.0.2.40:5060", None, 10);
    let to_bob = h.invite_bob();
    let redirect = |req: &Message, to: &str| {
        answer_with(
            req,
            302,
            "t",
            &[("Contact", &format!("<sip:{to}@example.test>"))],
        )
    };
    h.recv("192.0.2.20:5060", &redirect(&to_bob, "carol"));
    let to_carol = h.take()[1].1.clone();
    assert_eq!(
        to_carol.request_uri_str(),
        Some("sip:carol@192.0.2.30:5060")
    );
    // carol sends us back to bob: already in the target set, so nothing to try and
    // nothing left in the 3xx.
    h.recv(
        "192.0.2.30:5060",
        &answer_with(
            &to_carol,
            302,
            "t",
            &[("Contact", "<sip:bob@example.test>, <sip:dave@example.test>")],
        ),
    );
    let out = h.take();
    assert_eq!(
        codes(&out),
        ["ACK>192.0.2.30:5060", "INVITE>192.0.2.40:5060"]
    );
    let to_dave = out[1].1.clone();
    // A third 3xx is over the bound of 2: passed on as the best response.
    h.recv("192.0.2.40:5060", &redirect(&to_dave, "carol"));
    let out = h.take();
    assert_eq!(codes(&out), ["ACK>192.0.2.40:5060", "302>192.0.2.1:5060"]);
    assert_eq!(
        out[1].1.get(HeaderName::Contact),
        Some("<sip:carol@example.test>")
    );

    // With recursion off, the first 3xx goes to the caller as it came.
    let mut h = Harness::new(false);
    h.proxy.settings.max_recursions = 0;
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    h.bind("carol", "sip:carol@192.0.2.30:5060", None, 10);
    let to_bob = h.invite_bob();
    h.recv("192.0.2.20:5060", &redirect(&to_bob, "carol"));
    assert_eq!(
        codes(&h.take()),
        ["ACK>192.0.2.20:5060", "302>192.0.2.1:5060"]
    );
}

/// bob registered over TCP from `source`, with `contact`; an outbound binding (RFC
/// 5626) when `outbound`.
fn bind_tcp(h: &mut Harness, contact: &str, source: &str, outbound: bool) {
    h.upsert(Binding {
        instance_id: outbound.then(|| "<urn:uuid:00000000-0000-0000-0000-000000000001>".into()),
        reg_id: outbound.then_some(1),
        ..binding("bob", contact, Transport::Tcp, source)
    });
}

#[test]
fn a_closed_tcp_flow_falls_back_to_the_contact_unless_outbound() {
    let mut h = Harness::new(false);
    bind_tcp(
        &mut h,
        "sip:bob@192.0.2.20:5070;transport=tcp",
        "192.0.2.20:40001",
        false,
    );
    h.recv(CALLER, &invite("sip:bob@example.test", ""));
    let sent = h.take_transmits();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].flow.remote.to_string(), "192.0.2.20:40001");
    assert_eq!(sent[0].flow.transport, Transport::Tcp);
    // The connection it registered over is gone: the send fails.
    h.send_fails(&sent[0]);
    let sent = h.take_transmits();
    let what: Vec<String> = sent
        .iter()
        .map(|t| {
            format!(
                "{} {:?}",
                t.flow.remote,
                Message::parse(t.bytes.clone()).unwrap().status()
            )
        })
        .collect();
    assert_eq!(sent.len(), 1, "{what:?}");
    assert_eq!(
        sent[0].flow.remote.to_string(),
        "192.0.2.20:5070",
        "{what:?}"
    );
    assert_eq!(sent[0].flow.transport, Transport::Tcp);
    let retried = Message::parse(sent[0].bytes.clone()).unwrap();
    assert_eq!(
        retried.request_uri_str(),
        Some("sip:bob@192.0.2.20:5070;transport=tcp")
    );
    assert!(retried.top_via().unwrap().branch().unwrap().ends_with(".1"));
    // That one fails too: the caller gets 500 (§16.7 step 6: never 503).
    h.send_fails(&sent[0]);
    assert_eq!(codes(&h.take()), ["500>192.0.2.1:5060"]);

    // An outbound binding's flow is the only way to it (RFC 5626 §5.3).
    let mut h = Harness::new(false);
    bind_tcp(
        &mut h,
        "sip:bob@192.0.2.20:5070;transport=tcp;ob",
        "192.0.2.20:40001",
        true,
    );
    h.recv(CALLER, &invite("sip:bob@example.test", ""));
    let sent = h.take_transmits();
    assert_eq!(sent[0].flow.remote.to_string(), "192.0.2.20:40001");
    h.send_fails(&sent[0]);
    assert_eq!(codes(&h.take()), ["500>192.0.2.1:5060"]);
}

#[test]
fn proxy_require_counts_only_when_proxying() {
    // An OPTIONS for another domain is answered here as a UAS (Require counts there,
    // RFC 4475 §3.3.1): not ours to refuse for Proxy-Require.
    let mut h = Harness::new(false);
    let options = invite("sip:user@elsewhere.test", "Proxy-Require: foo\r\n")
        .replace("INVITE sip", "OPTIONS sip")
        .replace("1 INVITE", "1 OPTIONS");
    let msg = Message::parse(Bytes::copy_from_slice(options.as_bytes())).unwrap();
    h.txl.handle_message(h.now, msg, flow(CALLER)).unwrap();
    let Some(Event::Request { key, request, flow }) = h.txl.poll_event() else {
        panic!("no request");
    };
    let reader = h.location.reader();
    let mut env = Env {
        now: h.now,
        unix: UNIX,
        users: &h.users,
        auth: &mut h.auth,
        location: &reader,
    };
    let handled = h
        .proxy
        .on_request(&mut env, &mut h.txl, key, &request, flow);
    assert_eq!(handled, Handled::ForUs);
    // The same OPTIONS to a registered user is proxied: 420.
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    h.recv(
        CALLER,
        &options
            .replace("sip:user@elsewhere.test", "sip:bob@example.test")
            .replace("z9hG4bKc1", "z9hG4bKo2"),
    );
    assert_eq!(codes(&h.take()), ["420>192.0.2.1:5060"]);
}

// ----- issue 12: authentication, relaying, enumeration, bans, "myself" -----

/// `text` with `Proxy-Authorization` answering `challenge_from` (a 407) as `user`
/// (password "pw"), and the branch changed to `branch`.
fn authorized(text: &str, challenge_from: &Message, user: &str, branch: &str) -> String {
    let value = challenge_from.get(HeaderName::ProxyAuthenticate).unwrap();
    let ch = sip_core::auth::Challenge::parse(value).unwrap();
    let msg = Message::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap();
    let method = msg.method().unwrap().as_str().to_owned();
    let uri = msg.request_uri_str().unwrap().to_owned();
    let creds =
        sip_core::auth::answer_challenge(&ch, user, "pw", &method, &uri, "c0ffee", 1).unwrap();
    text.replace("z9hG4bKc1", branch).replace(
        "Content-Length: 0\r\n",
        &format!("Proxy-Authorization: {creds}\r\nContent-Length: 0\r\n"),
    )
}

/// `method` (INVITE, MESSAGE, SUBSCRIBE) from `from` to `ruri`, with extra lines.
fn request(method: &str, ruri: &str, from: &str, extra: &str) -> String {
    invite(ruri, extra)
        .replace("INVITE sip", &format!("{method} sip"))
        .replace("1 INVITE", &format!("1 {method}"))
        .replace("<sip:dave@elsewhere.test>", from)
}

const ALICE: &str = "<sip:alice@example.test>";
const DAVE: &str = "<sip:dave@elsewhere.test>";

#[test]
fn a_preloaded_route_naming_us_does_not_skip_authentication_or_record_route() {
    // Defect 1: an initial request with Route: <sip:US;lr> was taken for in-dialog.
    let mut h = Harness::new(true);
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    let route = "Route: <sip:10.0.0.1:5060;lr>\r\n";
    for (i, method) in ["INVITE", "MESSAGE", "SUBSCRIBE"].into_iter().enumerate() {
        for from in [ALICE, DAVE] {
            let text = request(method, "sip:bob@example.test", from, route)
                .replace("z9hG4bKc1", &format!("z9hG4bKp{i}{}", from.len()));
            h.recv(CALLER, &text);
            assert_eq!(codes(&h.take()), ["407>192.0.2.1:5060"], "{method} {from}");
        }
    }
    // Authenticated, the INVITE is forwarded, our Route popped, and record-routed.
    let text = request("INVITE", "sip:bob@example.test", ALICE, route);
    h.recv(CALLER, &text);
    let challenge = h.take().remove(0).1;
    h.recv(CALLER, &authorized(&text, &challenge, "alice", "z9hG4bKa2"));
    let out = h.take();
    assert_eq!(codes(&out), ["INVITE>192.0.2.20:5060"]);
    assert_eq!(out[0].1.count(HeaderName::Route), 0);
    assert!(
        out[0]
            .1
            .get(HeaderName::RecordRoute)
            .unwrap()
            .starts_with("<sip:10.0.0.1:5060;transport=udp;lr;sbd=")
    );
    assert_eq!(h.proxy.stats().calls_routed, 1);
}

#[test]
fn nothing_unauthenticated_is_relayed_by_route_or_request_uri() {
    // Defect 2: a Route to another host, or our Route and a foreign Request-URI.
    let mut h = Harness::with(true, false);
    let cases = [
        (
            "sip:bob@example.test",
            "Route: <sip:192.0.2.45:45099;lr>\r\n",
            "407",
        ),
        (
            "sip:+15551234567@192.0.2.46",
            "Route: <sip:10.0.0.1:5060;lr>\r\n",
            "403",
        ),
        ("sip:+15551234567@192.0.2.46", "", "403"),
    ];
    for (i, (ruri, route, code)) in cases.into_iter().enumerate() {
        for from in [
            DAVE,
            ALICE,
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
        ] {
            let text = request("INVITE", ruri, from, route)
                .replace("z9hG4bKc1", &format!("z9hG4bKr{i}{}", from.len()));
            h.recv(CALLER, &text);
            assert_eq!(
                codes(&h.take()),
                [format!("{code}>192.0.2.1:5060")],
                "{ruri} {route} {from}"
            );
        }
    }
    // A To tag does not open the way: not our dialog (no token of ours).
    for (i, route) in [
        "Route: <sip:10.0.0.1:5060;lr>\r\n",
        "Route: <sip:10.0.0.1:5060;transport=udp;lr;sbd=forged>\r\n",
        "Route: <sip:192.0.2.45:45099;lr>\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let text = request("INVITE", "sip:+15551234567@192.0.2.46", DAVE, route)
            .replace(
                "To: <sip:bob@example.test>",
                "To: <sip:bob@example.test>;tag=x",
            )
            .replace("z9hG4bKc1", &format!("z9hG4bKd{i}"));
        h.recv(CALLER, &text);
        assert_eq!(codes(&h.take()), ["407>192.0.2.1:5060"], "{route}");
        let ack = text
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK");
        h.recv(CALLER, &ack);
        assert!(h.take().is_empty(), "an ACK is dropped, never relayed");
    }
}

#[test]
fn unauthenticated_senders_cannot_tell_real_users_from_made_up_ones() {
    // Defect 3: 480 for a real unregistered user, 404 for a made-up one.
    let mut h = Harness::new(true);
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    for method in ["INVITE", "MESSAGE", "SUBSCRIBE"] {
        let mut answers = Vec::new();
        for user in ["bob", "carol", "nobody"] {
            let text = request(method, &format!("sip:{user}@example.test"), DAVE, "")
                .replace("z9hG4bKc1", &format!("z9hG4bK{method}{user}"));
            h.recv(CALLER, &text);
            let out = h.take();
            assert_eq!(codes(&out), ["407>192.0.2.1:5060"], "{method} {user}");
            let resp = &out[0].1;
            answers.push((
                resp.reason().map(str::to_owned),
                resp.count(HeaderName::ProxyAuthenticate),
            ));
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    }
    // OPTIONS is answered here for everybody unauthenticated, registered or not.
    for user in ["bob", "carol", "nobody"] {
        let text = request("OPTIONS", &format!("sip:{user}@example.test"), DAVE, "")
            .replace("z9hG4bKc1", &format!("z9hG4bKo{user}"));
        h.recv(CALLER, &text);
        assert!(h.take().is_empty());
    }
    assert_eq!(h.for_us.len(), 3);
}

#[test]
fn failed_407_answers_ban_the_source() {
    // Defect 4: the proxy's failures count towards the one ban table.
    let mut h = Harness::new(true);
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    let text = request("INVITE", "sip:bob@example.test", ALICE, "");
    h.recv(CALLER, &text);
    let mut challenge = h.take().remove(0).1;
    let ip = CALLER.parse::<SocketAddr>().unwrap().ip();
    for i in 0..3 {
        assert!(!h.auth.is_banned(ip, UNIX));
        let wrong = authorized(&text, &challenge, "alice", &format!("z9hG4bKw{i}"))
            .replace("username=\"alice\"", "username=\"mallory\"");
        h.recv(CALLER, &wrong);
        let out = h.take();
        assert_eq!(codes(&out), ["407>192.0.2.1:5060"]);
        challenge = out[0].1.clone();
    }
    assert!(h.auth.is_banned(ip, UNIX));
    assert_eq!(h.auth.stats().bans, 1);
}

#[test]
fn a_wildcard_listener_pops_its_own_route_and_routes_to_phones_on_other_ports() {
    // Defect 9: on 0.0.0.0:5060, Route <sip:127.0.0.1:5060;lr> is us (no 482 loop), and
    // with the alias 127.0.0.1 a BYE to a phone at 127.0.0.1:5070 goes to the phone.
    let listeners = [
        (Transport::Udp, "0.0.0.0:5060".parse().unwrap()),
        (Transport::Tcp, "0.0.0.0:5060".parse().unwrap()),
    ];
    let mut h = Harness::listening(false, false, &listeners, &["127.0.0.1", "::1"]);
    h.bind("bob", "sip:bob@127.0.0.1:5070", None, 10);
    let text = request(
        "INVITE",
        "sip:bob@example.test",
        ALICE,
        "Route: <sip:127.0.0.1:5060;lr>\r\n",
    );
    h.recv(CALLER, &text);
    let out = h.take();
    assert_eq!(codes(&out), ["INVITE>127.0.0.1:5070"]);
    assert_eq!(out[0].1.count(HeaderName::Route), 0);
    // Each side is given an address of ours it can reach, not the domain: loopback for
    // the phone on loopback, the host's other address for the caller at 192.0.2.1.
    let token = h.proxy.rr_token("call-1");
    let rr: Vec<&str> = out[0].1.get_all(HeaderName::RecordRoute).collect();
    let rr = rr.join(", ");
    assert_eq!(
        rr,
        format!(
            "<sip:127.0.0.1:5060;transport=udp;lr;sbd={token}>, \
             <sip:10.0.0.1:5060;transport=udp;lr;sbd={token}>"
        )
    );
    assert!(
        out[0]
            .1
            .top_via()
            .unwrap()
            .to_string()
            .contains("127.0.0.1:5060")
    );
    let bye = request("BYE", "sip:bob@127.0.0.1:5070", ALICE, "")
        .replace(
            "To: <sip:bob@example.test>",
            "To: <sip:bob@example.test>;tag=t",
        )
        .replace("z9hG4bKc1", "z9hG4bKbye");
    let token = h.proxy.rr_token("call-1");
    let bye = bye.replace(
        "Content-Length",
        &format!("Route: <sip:example.test:5060;transport=udp;lr;sbd={token}>\r\nContent-Length"),
    );
    h.recv(CALLER, &bye);
    assert_eq!(codes(&h.take()), ["BYE>127.0.0.1:5070"]);
    // bob@[::1] is bob of our domain (the alias ::1), in any spelling.
    h.recv(
        CALLER,
        &request("MESSAGE", "sip:bob@[0::1]", ALICE, "").replace("z9hG4bKc1", "z9hG4bKv6"),
    );
    assert_eq!(codes(&h.take()), ["MESSAGE>127.0.0.1:5070"]);
}

#[test]
fn an_ack_to_the_aor_is_routed_like_a_bye_and_a_stray_cancel_is_forwarded() {
    let mut h = Harness::new(true);
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    // SIPp's built-in uac sends ACK and BYE for the 2xx to the callee's AOR.
    let ack = request("ACK", "sip:bob@example.test", ALICE, "").replace(
        "To: <sip:bob@example.test>",
        "To: <sip:bob@example.test>;tag=t",
    );
    h.recv(CALLER, &ack);
    let out = h.take();
    assert_eq!(codes(&out), ["ACK>192.0.2.20:5060"]);
    assert_eq!(out[0].1.request_uri_str(), Some("sip:bob@192.0.2.20:5060"));
    let bye = ack.replace("ACK sip", "BYE sip").replace("1 ACK", "2 BYE");
    h.recv(CALLER, &bye);
    assert_eq!(codes(&h.take()), ["BYE>192.0.2.20:5060"]);

    // §16.10: a CANCEL matching no transaction goes statelessly where its INVITE
    // would have, and its answer comes back the same way.
    let cancel = request("CANCEL", "sip:bob@example.test", ALICE, "");
    let msg = Message::parse(Bytes::copy_from_slice(cancel.as_bytes())).unwrap();
    assert!(h.txl.find_cancelled(&msg).is_none());
    let reader = h.location.reader();
    let env = Env {
        now: h.now,
        unix: UNIX,
        users: &h.users,
        auth: &mut h.auth,
        location: &reader,
    };
    h.proxy
        .on_stray_cancel(&env, &mut h.txl, &msg, flow(CALLER));
    h.pump();
    let out = h.take();
    assert_eq!(codes(&out), ["CANCEL>192.0.2.20:5060"]);
    h.recv("192.0.2.20:5060", &answer(&out[0].1, 481, "tb"));
    assert_eq!(codes(&h.take()), ["481>192.0.2.1:5060"]);
}

#[test]
fn our_to_tags_are_keyed_and_differ_per_request() {
    // Defect 8: the proxy made "sbp1", "sbp2"... in every run, and "sbpx" always.
    let mut h = Harness::new(true);
    let mut tags = Vec::new();
    for i in 0..3 {
        h.recv(
            CALLER,
            &request("INVITE", "sip:bob@example.test", DAVE, "")
                .replace("z9hG4bKc1", &format!("z9hG4bKt{i}"))
                .replace("call-1", &format!("call-{i}")),
        );
        let out = h.take();
        tags.push(out[0].1.to().unwrap().tag().unwrap().to_owned());
    }
    assert!(
        tags.iter().all(|t| t.len() == 24 && !t.starts_with("sbp")),
        "{tags:?}"
    );
    assert!(tags[0] != tags[1] && tags[1] != tags[2], "{tags:?}");
}

/// Issue 14: an extension number reaches its user; the dial plan's rejections are
/// answered and what needs the B2BUA gets 480; none of it before authentication.
#[test]
fn extension_numbers_and_dial_plan_answers() {
    let mut h = Harness::new(false);
    h.users.set_extension("bob", Some("202")).unwrap();
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    h.recv(CALLER, &invite("sip:202@example.test", ""));
    let out = h.take();
    assert_eq!(codes(&out), ["INVITE>192.0.2.20:5060"]);
    assert_eq!(out[0].1.request_uri_str(), Some("sip:bob@192.0.2.20:5060"));

    // Nobody has 299: 404, as for an unknown name.
    h.recv(CALLER, &another("sip:299@example.test", "2"));
    assert_eq!(codes(&h.take()), ["404>192.0.2.1:5060"]);

    let plan = pbx::Plan::parse(
        "[[rule]]\nprefix = \"0044\"\naction = \"reject\"\ncode = 403\nreason = \"Not to the UK\"\n\
         [[rule]]\nprefix = \"00\"\naction = \"trunk\"\ntrunk = \"carrier1\"\n\
         [[rule]]\npattern = \"_!\"\naction = \"extension\"\n",
        "plan.toml",
    )
    .unwrap();
    h.proxy.dial_plan = crate::dial_plan::DialPlan::new(plan);
    h.recv(CALLER, &another("sip:00441234@example.test", "3"));
    let out = h.take();
    assert_eq!(codes(&out), ["403>192.0.2.1:5060"]);
    assert_eq!(out[0].1.reason(), Some("Not to the UK"));
    h.recv(CALLER, &another("sip:00331234@example.test", "4"));
    let out = h.take();
    assert_eq!(codes(&out), ["480>192.0.2.1:5060"]);
    assert_eq!(
        out[0].1.reason(),
        Some("Temporarily Unavailable (trunk carrier1 is not served yet)")
    );
    h.recv(CALLER, &another("sip:202@example.test", "5"));
    assert_eq!(codes(&h.take()), ["INVITE>192.0.2.20:5060"]);

    // A stranger gets the same 407 whatever the number: nothing of the plan shows.
    let mut h = Harness::new(true);
    h.users.set_extension("bob", Some("202")).unwrap();
    h.bind("bob", "sip:bob@192.0.2.20:5060", None, 10);
    h.proxy.dial_plan = crate::dial_plan::DialPlan::new(
        pbx::Plan::parse(
            "[[rule]]\nprefix = \"00\"\naction = \"reject\"\ncode = 403\n[[rule]]\npattern = \"_!\"\naction = \"extension\"\n",
            "p.toml",
        )
        .unwrap(),
    );
    for (i, n) in ["202", "299", "0044", "bob"].iter().enumerate() {
        let text = another(&format!("sip:{n}@example.test"), &format!("s{i}"));
        h.recv(CALLER, &text);
        assert_eq!(codes(&h.take()), ["407>192.0.2.1:5060"], "{n}");
    }
}

/// An INVITE of its own call (Call-ID and branch from `id`) to `ruri`.
fn another(ruri: &str, id: &str) -> String {
    invite(ruri, "")
        .replace("call-1", &format!("call-{id}"))
        .replace("z9hG4bKc1", &format!("z9hG4bKc{id}"))
}
