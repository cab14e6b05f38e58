//! Issue 12 end to end: the real `switchboard serve`, on its default wildcard listen
//! address (0.0.0.0) and on 127.0.0.1, against raw UDP phones written here, SIPp,
//! svwar and `switchboard phone`:
//!
//! - an unauthenticated INVITE, MESSAGE or SUBSCRIBE with a preloaded
//!   `Route: <sip:127.0.0.1:PORT;lr>` gets 407, and once authenticated is forwarded
//!   with our Record-Route (and on 0.0.0.0 the Route is ours: no 482 loop);
//! - no Route or Request-URI makes the server relay an unauthenticated request to a
//!   host that is not ours (a UDP socket there hears nothing);
//! - svwar finds no user, by INVITE or REGISTER;
//! - failed 407 answers ban the source, and are logged at warn with source and user;
//! - `switchboard phone --server 127.0.0.1:PORT` (domain = the server's address)
//!   registers, and so does SIPp's `[authentication]` with the server's address as
//!   digest uri, with the default digest algorithms;
//! - a malformed ACK gets no answer; To tags differ across restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use bytes::Bytes;
use common::{Server, ServerOptions, binary, free_port, sipp};
use sip_core::auth::{Challenge, answer_challenge};
use sip_core::{HeaderName, Message};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The two ways `serve` is run: its default wildcard address and a specific one.
const LISTEN: [&str; 2] = ["0.0.0.0", "127.0.0.1"];

fn start(listen_ip: &'static str, extra_toml: &str) -> Server {
    Server::start_on(
        listen_ip,
        ServerOptions {
            users: ["alice", "bob", "carol"]
                .iter()
                .map(|u| (u.to_string(), format!("{u}-pw")))
                .collect(),
            extra_toml: extra_toml.into(),
            ..ServerOptions::default()
        },
    )
}

/// A phone written by hand: one UDP socket on loopback.
struct Phone {
    sock: UdpSocket,
    server: SocketAddr,
}

static BRANCH: AtomicU32 = AtomicU32::new(0);

fn branch() -> String {
    format!("z9hG4bKe2e{}", BRANCH.fetch_add(1, Ordering::Relaxed))
}

impl Phone {
    fn new(server: &Server) -> Phone {
        Phone::at(server, UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    fn at(server: &Server, sock: UdpSocket) -> Phone {
        Phone {
            sock,
            server: format!("127.0.0.1:{}", server.port).parse().unwrap(),
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// A request from this phone: `from` is `user@host`; `extra` header lines.
    fn request(
        &self,
        method: &str,
        ruri: &str,
        from: &str,
        call: &str,
        cseq: u32,
        extra: &str,
    ) -> String {
        let port = self.port();
        let ip = self.sock.local_addr().unwrap().ip();
        let to = match method {
            "REGISTER" => format!("<sip:{from}>"),
            _ => format!("<{ruri}>"),
        };
        format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {ip}:{port};branch={};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{from}>;tag=f{}\r\n\
             To: {to}\r\n\
             Call-ID: {call}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{}@{ip}:{port}>\r\n\
             {extra}Content-Length: 0\r\n\r\n",
            branch(),
            // A tag is a token: no '@' from the Call-ID.
            call.bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))),
            from.split('@').next().unwrap(),
        )
    }

    fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.server).unwrap();
    }

    /// The next message within `wait`, 100 Trying skipped.
    fn recv(&self, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                return None;
            };
            let msg = Message::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
            if msg.status() != Some(100) {
                return Some(msg);
            }
        }
    }

    /// Sends and returns the final response (within 5 s). A final response to an
    /// INVITE is acknowledged.
    fn transact(&self, text: &str) -> Message {
        self.send(text);
        let resp = self
            .recv(Duration::from_secs(5))
            .expect("an answer within 5 s");
        if text.starts_with("INVITE ") && resp.status().unwrap_or(0) >= 300 {
            self.ack(text, &resp);
        }
        resp
    }

    /// The ACK of a non-2xx final response to `invite` (same branch, RFC 3261 §17.1.1.3).
    fn ack(&self, invite: &str, resp: &Message) {
        let ruri = invite.split(' ').nth(1).unwrap();
        let mut ack = format!("ACK {ruri} SIP/2.0\r\n");
        for line in invite.split("\r\n").skip(1) {
            if line.starts_with("Via:")
                || line.starts_with("From:")
                || line.starts_with("Call-ID:")
                || line.starts_with("Route:")
            {
                ack.push_str(line);
                ack.push_str("\r\n");
            }
            if let Some(rest) = line.strip_prefix("CSeq: ") {
                let n = rest.split(' ').next().unwrap();
                ack.push_str(&format!("CSeq: {n} ACK\r\n"));
            }
        }
        ack.push_str(&format!(
            "To: {}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            resp.get(HeaderName::To).unwrap()
        ));
        self.send(&ack);
    }

    /// Registers `user` (password `USER-pw`) with this phone's address as Contact.
    fn register(&self, user: &str) {
        let from = format!("{user}@example.test");
        let call = format!("reg-{user}-{}", self.port());
        let r = self.transact(&self.request("REGISTER", "sip:example.test", &from, &call, 1, ""));
        assert_eq!(r.status(), Some(401));
        let auth = answer(
            &r,
            HeaderName::WwwAuthenticate,
            user,
            "REGISTER",
            "sip:example.test",
        );
        let text = self.request(
            "REGISTER",
            "sip:example.test",
            &from,
            &call,
            2,
            &format!("Authorization: {auth}\r\n"),
        );
        let r = self.transact(&text);
        assert_eq!(r.status(), Some(200), "{r:?}");
    }
}

/// Credentials answering the challenge in `resp`'s `header`, password `USER-pw`.
fn answer(resp: &Message, header: HeaderName, user: &str, method: &str, uri: &str) -> String {
    let ch = Challenge::parse(resp.get(header).expect("a challenge")).unwrap();
    answer_challenge(&ch, user, &format!("{user}-pw"), method, uri, "e2ecafe", 1)
        .unwrap()
        .to_string()
}

#[test]
fn a_preloaded_route_is_challenged_and_record_routed_once_authenticated() {
    for ip in LISTEN {
        let server = start(ip, "");
        let route = format!("Route: <sip:127.0.0.1:{};lr>\r\n", server.port);
        let bob = Phone::new(&server);
        bob.register("bob");
        let alice = Phone::new(&server);
        for (i, method) in ["INVITE", "MESSAGE", "SUBSCRIBE"].into_iter().enumerate() {
            for from in ["alice@example.test", "mallory@elsewhere.test"] {
                let text = alice.request(
                    method,
                    "sip:bob@example.test",
                    from,
                    &format!("pre-{i}-{from}"),
                    1,
                    &route,
                );
                let r = alice.transact(&text);
                assert_eq!(r.status(), Some(407), "{ip}: {method} from {from}: {r:?}");
            }
        }
        assert!(
            bob.recv(Duration::from_millis(300)).is_none(),
            "{ip}: nothing reached bob"
        );
        // Authenticated: forwarded to bob, our Route popped (on 0.0.0.0 it is ours too,
        // not a loop), our Record-Route added.
        let first = alice.request(
            "INVITE",
            "sip:bob@example.test",
            "alice@example.test",
            "pre-ok",
            1,
            &route,
        );
        let r = alice.transact(&first);
        assert_eq!(r.status(), Some(407));
        let auth = answer(
            &r,
            HeaderName::ProxyAuthenticate,
            "alice",
            "INVITE",
            "sip:bob@example.test",
        );
        let second = alice.request(
            "INVITE",
            "sip:bob@example.test",
            "alice@example.test",
            "pre-ok",
            2,
            &format!("{route}Proxy-Authorization: {auth}\r\n"),
        );
        alice.send(&second);
        let got = bob
            .recv(Duration::from_secs(5))
            .expect("the INVITE reaches bob");
        assert_eq!(got.method().map(|m| m.as_str()), Some("INVITE"), "{ip}");
        assert_eq!(got.count(HeaderName::Route), 0, "{ip}: our Route popped");
        let rr = got.get(HeaderName::RecordRoute).expect("record-routed");
        // On 0.0.0.0 too, an address the phones on loopback reach, not the domain.
        assert!(rr.starts_with("<sip:127.0.0.1:"), "{ip}: {rr}");
        assert!(
            rr.contains(&format!(":{};transport=udp;lr;sbd=", server.port)),
            "{ip}: {rr}"
        );
        // Nothing came back to alice but a provisional: no 482 loop.
        if let Some(m) = alice.recv(Duration::from_millis(300)) {
            assert!(m.status().is_some_and(|c| c < 200), "{ip}: {m:?}");
        }
    }
}

#[test]
fn nothing_unauthenticated_is_relayed_to_a_host_that_is_not_ours() {
    for ip in LISTEN {
        let server = start(ip, "");
        let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = elsewhere.local_addr().unwrap().port();
        let elsewhere = Phone::at(&server, elsewhere);
        let mallory = Phone::new(&server);
        let cases = [
            // A Route to another host.
            (
                "sip:bob@example.test".to_owned(),
                format!("Route: <sip:127.0.0.1:{other};lr>\r\n"),
            ),
            // Our Route, and a Request-URI elsewhere.
            (
                format!("sip:+15551234567@127.0.0.1:{other}"),
                format!("Route: <sip:127.0.0.1:{};lr>\r\n", server.port),
            ),
            (format!("sip:+15551234567@127.0.0.1:{other}"), String::new()),
        ];
        for (i, (ruri, route)) in cases.iter().enumerate() {
            for from in ["mallory@elsewhere.test", "anonymous@anonymous.invalid"] {
                let text =
                    mallory.request("INVITE", ruri, from, &format!("relay-{i}-{from}"), 1, route);
                let r = mallory.transact(&text);
                assert!(
                    matches!(r.status(), Some(403 | 407)),
                    "{ip}: {ruri} {route}: {r:?}"
                );
            }
        }
        assert!(
            elsewhere.recv(Duration::from_millis(500)).is_none(),
            "{ip}: something was relayed to 127.0.0.1:{other}"
        );
    }
}

/// The extensions svwar reports for `users` (a dictionary), scanning with `method`.
/// `--force`: scan even though the server challenges an unknown extension (svwar stops
/// there by default, which would say nothing about what it could tell apart).
fn svwar(
    server: &Server,
    method: &str,
    domain: Option<&str>,
    users: &[&str],
) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let dict = dir.path().join("users.txt");
    std::fs::write(&dict, users.join("\n")).unwrap();
    let out = Command::new("timeout")
        .args([
            "60",
            "svwar",
            "--force",
            "-v",
            "-b",
            "127.0.0.1",
            "-x",
            "127.0.0.1",
        ])
        .arg("-P")
        .arg(free_port().to_string())
        .args(["-p", &server.port.to_string(), "-m", method, "-d"])
        .arg(&dict)
        .args(domain.map(|d| format!("--domain={d}")))
        .arg("127.0.0.1")
        .current_dir(dir.path())
        .output()
        .expect("svwar is installed (scripts/test installs sipvicious)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    // The scan did run: svwar saw a SIP server there (-v says so).
    assert!(
        out.status.success() && text.contains("SIP device found"),
        "svwar did not scan: {text}"
    );
    // The table's rows: "| alice     | weird          |".
    let found = text
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .map(|e| e.trim().to_owned())
        .filter(|e| users.contains(&e.as_str()))
        .collect();
    (found, text)
}

#[test]
fn svwar_finds_no_user() {
    // Real users (alice unregistered, bob registered, carol) and made-up ones: svwar
    // must report them all alike, whether it calls them all "found" or none.
    let users = ["alice", "bob", "carol", "nobody", "admin", "100"];
    for ip in LISTEN {
        let server = start(ip, "");
        Phone::new(&server).register("bob");
        // INVITE to user@127.0.0.1 (svwar's default, From = To), REGISTER to the domain.
        for (method, domain) in [("INVITE", None), ("REGISTER", Some("example.test"))] {
            let (found, report) = svwar(&server, method, domain, &users);
            let nobody = found.iter().any(|f| f == "nobody");
            for user in users {
                assert_eq!(
                    found.iter().any(|f| f == user),
                    nobody,
                    "{ip}: svwar -m {method} tells {user} from nobody: {found:?}\n{report}"
                );
            }
        }
    }
}

#[test]
fn unauthenticated_senders_get_one_answer_for_every_user() {
    for ip in LISTEN {
        let server = start(ip, "");
        Phone::new(&server).register("bob");
        let mallory = Phone::new(&server);
        for method in ["INVITE", "MESSAGE", "SUBSCRIBE"] {
            let mut answers = Vec::new();
            for user in ["bob", "carol", "nobody"] {
                let call = format!("enum-{method}-{user}");
                let text = mallory.request(
                    method,
                    &format!("sip:{user}@example.test"),
                    "mallory@elsewhere.test",
                    &call,
                    1,
                    "",
                );
                let r = mallory.transact(&text);
                answers.push((r.status(), r.reason().map(str::to_owned)));
            }
            assert!(
                answers.iter().all(|a| a.0 == Some(407) && *a == answers[0]),
                "{ip}: {method}: {answers:?}"
            );
        }
    }
}

#[test]
fn failed_407_answers_ban_the_source_and_are_logged() {
    let server = start(
        "127.0.0.1",
        "[registrar]\nmax_auth_failures = 3\nban_secs = 60\n",
    );
    Phone::new(&server).register("bob");
    let alice = Phone::new(&server);
    let mut cseq = 1;
    let first = alice.request(
        "INVITE",
        "sip:bob@example.test",
        "alice@example.test",
        "ban",
        cseq,
        "",
    );
    let mut r = alice.transact(&first);
    for _ in 0..3 {
        assert_eq!(r.status(), Some(407));
        let ch = Challenge::parse(r.get(HeaderName::ProxyAuthenticate).unwrap()).unwrap();
        let wrong = answer_challenge(
            &ch,
            "alice",
            "guess",
            "INVITE",
            "sip:bob@example.test",
            "x",
            1,
        )
        .unwrap();
        cseq += 1;
        let text = alice.request(
            "INVITE",
            "sip:bob@example.test",
            "alice@example.test",
            "ban",
            cseq,
            &format!("Proxy-Authorization: {wrong}\r\n"),
        );
        r = alice.transact(&text);
    }
    assert_eq!(r.status(), Some(407));
    // Banned: nothing is answered any more, not even an OPTIONS (the 407 comes again:
    // our ACK of it was dropped too).
    alice.send(&alice.request(
        "OPTIONS",
        "sip:127.0.0.1",
        "alice@example.test",
        "ban2",
        1,
        "",
    ));
    let deadline = Instant::now() + Duration::from_millis(800);
    while let Some(m) = alice.recv(deadline.saturating_duration_since(Instant::now())) {
        let method = m.cseq().unwrap().method;
        assert_eq!(
            method.as_str(),
            "INVITE",
            "a banned source is answered: {m:?}"
        );
    }
    // Another source (127.0.0.2) still is.
    let other = Phone::at(&server, UdpSocket::bind("127.0.0.2:0").unwrap());
    let r = other.transact(&other.request(
        "OPTIONS",
        "sip:127.0.0.1",
        "carol@example.test",
        "ban3",
        1,
        "",
    ));
    assert_eq!(r.status(), Some(200));
    let log = server.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    assert!(!failures.is_empty(), "{log}");
    assert!(
        failures
            .iter()
            .all(|l| l.contains("WARN") && l.contains("source=127.0.0.1"))
    );
    assert!(failures[0].contains("user=alice"), "{}", failures[0]);
    assert!(failures.len() < 3, "rate-limited: {failures:?}");
    let ban = log
        .lines()
        .find(|l| l.contains("banning source"))
        .expect("the ban is logged");
    assert!(
        ban.contains("WARN") && ban.contains("source=127.0.0.1") && ban.contains("user=alice"),
        "{ban}"
    );
}

#[test]
fn the_phone_registers_with_the_server_address_as_its_domain() {
    for ip in LISTEN {
        let server = start(ip, "");
        let target = format!("127.0.0.1:{}", server.port);
        let out = Command::new("timeout")
            .arg("20")
            .arg(binary())
            .args([
                "phone",
                "--user",
                "alice",
                "--password",
                "alice-pw",
                "--server",
                &target,
            ])
            .args(["options", &format!("sip:{target}")])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("registered: sip:alice@127.0.0.1"),
            "{ip}: {text}\n{}",
            server.log()
        );
        // That is alice@example.test; the phone removes its binding when it exits.
    }
}

#[test]
fn sipp_authentication_with_the_server_address_as_digest_uri_registers() {
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/proxy_register.xml");
    for ip in LISTEN {
        let server = start(ip, "");
        let port = free_port();
        let contact = format!("sip:alice@127.0.0.1:{port}");
        // No -auth_uri: SIPp signs sip:127.0.0.1:PORT, the address it sends to, while
        // the Request-URI names the domain. Default digest algorithms.
        let (code, out) = sipp(
            &scenario,
            server.port,
            &[
                "-m",
                "1",
                "-p",
                &port.to_string(),
                "-key",
                "user",
                "alice",
                "-au",
                "alice",
                "-ap",
                "alice-pw",
                "-key",
                "contact",
                &contact,
                "-key",
                "q",
                "1.0",
            ],
            Duration::from_secs(10),
        );
        assert_eq!(code, 0, "{ip}: {out}\n{}", server.log());
    }
}

#[test]
fn a_malformed_ack_is_never_answered() {
    let server = start("127.0.0.1", "");
    let phone = Phone::new(&server);
    for method in ["ACK", "OPTIONS"] {
        let text = phone
            .request(
                method,
                "sip:bob@example.test",
                "alice@example.test",
                "bad",
                1,
                "",
            )
            .replace(&format!("CSeq: 1 {method}"), &format!("CSeq: x {method}"));
        phone.send(&text);
        let got = phone.recv(Duration::from_millis(600));
        match method {
            "ACK" => assert!(got.is_none(), "an ACK was answered: {got:?}"),
            _ => assert_eq!(got.and_then(|m| m.status()), Some(400)),
        }
    }
}

#[test]
fn to_tags_differ_across_runs() {
    // Two runs of the server (the proxy's 407 had "sbp1" in every run).
    let mut tags = Vec::new();
    for _ in 0..2 {
        let server = start("127.0.0.1", "");
        let phone = Phone::new(&server);
        for method in ["INVITE", "OPTIONS"] {
            let ruri = if method == "OPTIONS" {
                "sip:127.0.0.1"
            } else {
                "sip:bob@example.test"
            };
            let r =
                phone.transact(&phone.request(method, ruri, "alice@example.test", "tag", 1, ""));
            tags.push(r.to().unwrap().tag().unwrap().to_owned());
        }
    }
    let unique: std::collections::HashSet<&String> = tags.iter().collect();
    assert_eq!(unique.len(), tags.len(), "{tags:?}");
}

#[test]
fn a_bye_to_a_phone_on_our_address_goes_to_the_phone() {
    // Defect 9: with `aliases = ["127.0.0.1"]` a BYE to a phone's Contact at 127.0.0.1
    // (another port) was answered 404 by the server, so calls never ended at the far
    // end. A dialog we record-routed continues without credentials.
    for ip in LISTEN {
        let server = start(ip, "[registrar]\naliases = [\"127.0.0.1\", \"::1\"]\n");
        let bob = Phone::new(&server);
        bob.register("bob");
        let alice = Phone::new(&server);
        let first = alice.request(
            "INVITE",
            "sip:bob@example.test",
            "alice@example.test",
            "dlg",
            1,
            "",
        );
        let r = alice.transact(&first);
        let auth = answer(
            &r,
            HeaderName::ProxyAuthenticate,
            "alice",
            "INVITE",
            "sip:bob@example.test",
        );
        let second = alice.request(
            "INVITE",
            "sip:bob@example.test",
            "alice@example.test",
            "dlg",
            2,
            &format!("Proxy-Authorization: {auth}\r\n"),
        );
        alice.send(&second);
        let invite = bob
            .recv(Duration::from_secs(5))
            .expect("the INVITE reaches bob");
        let mut ok = sip_core::response_to(&invite, 200, Some("bobtag"));
        ok.push("Contact", format!("<sip:bob@127.0.0.1:{}>", bob.port()));
        bob.send(std::str::from_utf8(&ok.into_bytes().unwrap()).unwrap());
        let ok = alice
            .recv(Duration::from_secs(5))
            .expect("the 200 reaches alice");
        assert_eq!(ok.status(), Some(200), "{ip}");
        let route = ok
            .get(HeaderName::RecordRoute)
            .expect("record-routed")
            .to_owned();
        let to = ok.get(HeaderName::To).unwrap().to_owned();
        let ack = alice
            .request(
                "ACK",
                &format!("sip:bob@127.0.0.1:{}", bob.port()),
                "alice@example.test",
                "dlg",
                2,
                &format!("Route: {route}\r\n"),
            )
            .replace("To: <sip:bob@127.0.0.1", "X-Old-To: <sip:bob@127.0.0.1")
            .replace(
                "Max-Forwards: 70\r\n",
                &format!("Max-Forwards: 70\r\nTo: {to}\r\n"),
            );
        alice.send(&ack);
        let got = bob
            .recv(Duration::from_secs(5))
            .expect("the ACK reaches bob");
        assert_eq!(got.method().map(|m| m.as_str()), Some("ACK"), "{ip}");
        // bob hangs up: a BYE to alice's Contact (127.0.0.1, her port), which is not
        // registered, along the route set.
        let from = ok.get(HeaderName::From).unwrap();
        let bye = format!(
            "BYE sip:alice@127.0.0.1:{} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{};branch={};rport\r\n\
             Max-Forwards: 70\r\nRoute: {route}\r\n\
             From: {to}\r\nTo: {from}\r\nCall-ID: dlg\r\nCSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n",
            alice.port(),
            bob.port(),
            branch(),
        );
        bob.send(&bye);
        let got = alice.recv(Duration::from_secs(5));
        let got = got.unwrap_or_else(|| panic!("{ip}: the BYE did not reach alice"));
        assert_eq!(
            got.method().map(|m| m.as_str()),
            Some("BYE"),
            "{ip}: {got:?}"
        );
    }
}
