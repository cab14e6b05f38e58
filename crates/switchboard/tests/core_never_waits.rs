//! The server's one protocol task never waits on the network: a call to a phone whose
//! TCP contact accepts no connection (a listener whose backlog is full, so the kernel
//! drops the SYNs and the connect hangs until `connect_timeout`) must not delay anybody
//! else. While that connect hangs, 50 other users register over UDP, and every one of
//! them is answered within 100 ms.
#![allow(clippy::unwrap_used)]

mod common;
use common::{Server, ServerOptions, black_hole};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn register(sock: &UdpSocket, server: u16, user: &str, contact: &str, n: u32) {
    let me = sock.local_addr().unwrap();
    let msg = format!(
        "REGISTER sip:example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-reg-{user}-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@example.test>;tag=r{n}\r\n\
         To: <sip:{user}@example.test>\r\nCall-ID: reg-{user}@test\r\nCSeq: {n} REGISTER\r\n\
         Contact: <{contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", server)).unwrap();
}

/// The status of the next final response on `sock`, within `limit`.
fn final_status(sock: &UdpSocket, limit: Duration) -> Option<u16> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => return None,
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = text.get(8..11)?.parse().ok()?;
        if text.starts_with("SIP/2.0 ") && code >= 200 {
            return Some(code);
        }
    }
}

#[test]
fn registrations_are_answered_while_a_connect_hangs() {
    // Users and phones register without passwords here: what is measured is the wait.
    let mut server = Server::start_stopped(ServerOptions {
        extra_toml:
            "[registrar]\nrequire_auth = false\n[proxy]\ntrusted_networks = [\"127.0.0.1\"]\n"
                .into(),
        ..Default::default()
    });
    let users: String = std::iter::once("bob".to_string())
        .chain((0..50).map(|i| format!("user{i}")))
        .map(|u| format!("{u},pw-{u}\n"))
        .collect();
    let list = server.dir.path().join("users.csv");
    std::fs::write(&list, users).unwrap();
    let out = server.cli(&["user", "import", list.to_str().unwrap()]);
    assert!(out.status.success(), "user import: {out:?}");
    server.spawn();
    let (_listener, _fillers, hole) = black_hole();

    // bob's phone says it takes calls over TCP at the black hole.
    let bob = UdpSocket::bind("127.0.0.1:0").unwrap();
    let contact = format!("sip:bob@{hole};transport=tcp");
    register(&bob, server.port, "bob", &contact, 1);
    assert_eq!(final_status(&bob, Duration::from_secs(5)), Some(200));

    // A call to bob: the proxy must open a TCP connection to the black hole.
    let alice = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = alice.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:bob@example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-call-1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:carol@elsewhere.test>;tag=c1\r\nTo: <sip:bob@example.test>\r\n\
         Call-ID: call-1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    alice
        .send_to(invite.as_bytes(), ("127.0.0.1", server.port))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));

    // Meanwhile, 50 users register; each is answered quickly.
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let user = format!("user{i}");
        let contact = format!("sip:{user}@{}", phone.local_addr().unwrap());
        let sent = Instant::now();
        register(&phone, server.port, &user, &contact, 1);
        let status = final_status(&phone, Duration::from_secs(10));
        let took = sent.elapsed();
        assert_eq!(status, Some(200), "{user}: log:\n{}", server.log());
        assert!(
            took < Duration::from_millis(100),
            "{user} waited {took:?} for its 200 while a connect hung\nlog:\n{}",
            server.log()
        );
        slowest = slowest.max(took);
    }
    eprintln!("slowest REGISTER while the connect hung: {slowest:?}");

    // The call itself ends with a final response once the connect gives up.
    let status = final_status(&alice, Duration::from_secs(15));
    assert!(
        status.is_some_and(|c| c >= 400),
        "the caller got {status:?}\nlog:\n{}",
        server.log()
    );
}
