//! Two relays back to back on a fake clock: one places a leg, the other answers it;
//! offers both ways, glare, CANCEL, BYE, and nothing left at the end.
#![allow(clippy::unwrap_used)]

use super::*;

const X: &str = "10.0.0.1:5060";
const Y: &str = "10.0.0.2:5060";

fn udp(addr: &str) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
        local: None,
        connection: None,
    }
}

fn relay(addr: &str, seed: u8) -> Relay {
    Relay::new(
        RelaySettings {
            local: LocalAddrs {
                udp: Some(addr.parse().unwrap()),
                tcp: None,
            },
            listeners: Vec::new(),
            contact_user: "b2bua".into(),
            user_agent: "test".into(),
            session_expires: Some(90),
            timers: TimerConfig::default(),
        },
        [seed; 32],
    )
}

fn sdp(version: u32, direction: &str) -> String {
    format!(
        "v=0\r\no=- 1 {version} IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\na={direction}\r\n"
    )
}

/// Carries everything each relay sends to the other until both are quiet.
fn pump(x: &mut Relay, y: &mut Relay, now: Instant) {
    loop {
        let mut moved = false;
        while let Some(t) = x.poll_transmit() {
            moved = true;
            y.on_message(Message::parse(t.bytes).unwrap(), udp(X), now);
        }
        while let Some(t) = y.poll_transmit() {
            moved = true;
            x.on_message(Message::parse(t.bytes).unwrap(), udp(Y), now);
        }
        if !moved {
            return;
        }
    }
}

fn events(r: &mut Relay) -> Vec<RelayEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

/// Runs both relays' timers for `secs` seconds, a tenth of a second at a time.
fn run(x: &mut Relay, y: &mut Relay, from: Instant, secs: u64) -> Instant {
    let mut now = from;
    for _ in 0..secs * 10 {
        now += Duration::from_millis(100);
        x.on_timeout(now);
        y.on_timeout(now);
        pump(x, y, now);
    }
    now
}

fn place(x: &mut Relay, offer: Option<String>, now: Instant) -> LegKey {
    x.place(
        Placement {
            uri: format!("sip:b2bua@{Y}"),
            to: "<sip:201@test>".into(),
            from: "\"Dave\" <sip:dave@test>".into(),
            routes: Vec::new(),
            flow: udp(Y),
            sdp: offer,
            headers: vec![("X-Test".into(), "1".into())],
        },
        now,
    )
    .unwrap()
}

/// X places a leg to Y, which rings and answers: (X's leg, Y's leg).
fn connected(x: &mut Relay, y: &mut Relay, now: Instant) -> (LegKey, LegKey) {
    let xl = place(x, Some(sdp(1, "sendrecv")), now);
    pump(x, y, now);
    let evs = events(y);
    let RelayEvent::Incoming {
        leg: yl, invite, ..
    } = &evs[0]
    else {
        panic!("{evs:?}");
    };
    let yl = *yl;
    assert_eq!(invite.get_by_name("X-Test"), Some("1"));
    assert_eq!(invite.body(), sdp(1, "sendrecv").as_bytes());
    y.progress(yl, 180, None, now);
    pump(x, y, now);
    let evs = events(x);
    assert!(
        matches!(
            evs[..],
            [RelayEvent::Progress {
                status: 180,
                sdp: None,
                ..
            }]
        ),
        "{evs:?}"
    );
    y.answer(yl, Some(sdp(7, "sendrecv")), now);
    pump(x, y, now);
    let evs = events(x);
    match &evs[..] {
        [RelayEvent::Answered { leg, sdp: Some(s) }] => {
            assert_eq!(*leg, xl);
            assert_eq!(*s, sdp(7, "sendrecv"));
        }
        _ => panic!("{evs:?}"),
    }
    (xl, yl)
}

#[test]
fn call_offer_both_ways_and_bye() {
    let mut x = relay(X, 1);
    let mut y = relay(Y, 2);
    let t0 = Instant::now();
    let (xl, yl) = connected(&mut x, &mut y, t0);
    assert!(x.owns(x.call_id(xl).unwrap()));
    assert_eq!(x.call_id(xl), y.call_id(yl));

    // X holds: Y sees the offer, answers it, X gets the answer.
    x.offer(xl, sdp(2, "sendonly"), OfferKind::Invite, t0);
    pump(&mut x, &mut y, t0);
    let evs = events(&mut y);
    assert!(
        matches!(&evs[..], [RelayEvent::Offer { sdp, kind: OfferKind::Invite, .. }] if sdp.contains("sendonly")),
        "{evs:?}"
    );
    y.answer_offer(yl, sdp(8, "recvonly"), t0);
    pump(&mut x, &mut y, t0);
    let evs = events(&mut x);
    assert!(
        matches!(&evs[..], [RelayEvent::OfferAnswered { sdp, .. }] if sdp.contains("recvonly")),
        "{evs:?}"
    );

    // Y resumes with UPDATE.
    y.offer(yl, sdp(9, "sendrecv"), OfferKind::Update, t0);
    pump(&mut x, &mut y, t0);
    let evs = events(&mut x);
    assert!(
        matches!(
            &evs[..],
            [RelayEvent::Offer {
                kind: OfferKind::Update,
                ..
            }]
        ),
        "{evs:?}"
    );
    x.answer_offer(xl, sdp(3, "sendrecv"), t0);
    pump(&mut x, &mut y, t0);
    assert!(matches!(
        events(&mut y)[..],
        [RelayEvent::OfferAnswered { .. }]
    ));

    // The session timers refresh each leg on their own: nothing to relay.
    let t1 = run(&mut x, &mut y, t0, 200);
    assert!(events(&mut x).is_empty());
    assert!(events(&mut y).is_empty());
    assert_eq!((x.legs(), y.legs()), (1, 1));

    y.hang_up(yl, t1);
    pump(&mut x, &mut y, t1);
    let evs = events(&mut x);
    assert!(
        matches!(
            evs[..],
            [RelayEvent::Ended {
                why: LegEnd::Bye,
                ..
            }]
        ),
        "{evs:?}"
    );
    run(&mut x, &mut y, t1, 40);
    assert!(x.is_idle(), "x left something");
    assert!(y.is_idle(), "y left something");
}

#[test]
fn glare_gets_491_on_both_sides() {
    let mut x = relay(X, 3);
    let mut y = relay(Y, 4);
    let t0 = Instant::now();
    let (xl, yl) = connected(&mut x, &mut y, t0);
    x.offer(xl, sdp(2, "sendonly"), OfferKind::Invite, t0);
    y.offer(yl, sdp(8, "sendonly"), OfferKind::Invite, t0);
    pump(&mut x, &mut y, t0);
    let ex = events(&mut x);
    let ey = events(&mut y);
    assert!(
        matches!(ex[..], [RelayEvent::OfferRefused { status: 491, .. }]),
        "{ex:?}"
    );
    assert!(
        matches!(ey[..], [RelayEvent::OfferRefused { status: 491, .. }]),
        "{ey:?}"
    );
    x.hang_up(xl, t0);
    pump(&mut x, &mut y, t0);
    assert!(matches!(events(&mut y)[..], [RelayEvent::Ended { .. }]));
    run(&mut x, &mut y, t0, 40);
    assert!(x.is_idle() && y.is_idle());
}

#[test]
fn cancel_before_the_answer() {
    let mut x = relay(X, 5);
    let mut y = relay(Y, 6);
    let t0 = Instant::now();
    let xl = place(&mut x, Some(sdp(1, "sendrecv")), t0);
    pump(&mut x, &mut y, t0);
    let yl = events(&mut y)[0].leg();
    x.hang_up(xl, t0);
    pump(&mut x, &mut y, t0);
    let ey = events(&mut y);
    assert!(
        matches!(ey[..], [RelayEvent::Cancelled { leg }] if leg == yl),
        "{ey:?}"
    );
    let ex = events(&mut x);
    assert!(
        matches!(ex[..], [RelayEvent::Failed { status: 487, .. }]),
        "{ex:?}"
    );
    run(&mut x, &mut y, t0, 40);
    assert!(x.is_idle() && y.is_idle());
}

#[test]
fn rejected_leg_fails_with_its_status() {
    let mut x = relay(X, 7);
    let mut y = relay(Y, 8);
    let t0 = Instant::now();
    let _ = place(&mut x, None, t0);
    pump(&mut x, &mut y, t0);
    let yl = events(&mut y)[0].leg();
    y.reject(yl, 486, "", t0);
    pump(&mut x, &mut y, t0);
    let ex = events(&mut x);
    assert!(
        matches!(ex[..], [RelayEvent::Failed { status: 486, .. }]),
        "{ex:?}"
    );
    run(&mut x, &mut y, t0, 40);
    assert!(x.is_idle() && y.is_idle());
}

#[test]
fn no_response_fails_with_408() {
    let mut x = relay(X, 9);
    let t0 = Instant::now();
    let _ = place(&mut x, None, t0);
    let mut now = t0;
    // Timer B (64·T1), then the Call-ID's 64·T1 of lingering.
    for _ in 0..700 {
        now += Duration::from_millis(100);
        x.on_timeout(now);
        while x.poll_transmit().is_some() {}
    }
    let ex = events(&mut x);
    assert!(
        matches!(ex[..], [RelayEvent::Failed { status: 408, .. }]),
        "{ex:?}"
    );
    assert!(x.is_idle());
}

#[test]
fn late_offer_the_ack_carries_the_answer_given_later() {
    let mut x = relay(X, 11);
    let mut y = relay(Y, 12);
    let t0 = Instant::now();
    let xl = place(&mut x, None, t0);
    pump(&mut x, &mut y, t0);
    let evs = events(&mut y);
    let RelayEvent::Incoming {
        leg: yl, invite, ..
    } = &evs[0]
    else {
        panic!("{evs:?}");
    };
    let yl = *yl;
    assert!(invite.body().is_empty());
    // Y's 2xx offers; X reports the offer and does not ACK yet.
    y.answer(yl, Some(sdp(7, "sendrecv")), t0);
    pump(&mut x, &mut y, t0);
    let evs = events(&mut x);
    match &evs[..] {
        [RelayEvent::Answered { leg, sdp: Some(s) }] => {
            assert_eq!(*leg, xl);
            assert_eq!(*s, sdp(7, "sendrecv"));
        }
        _ => panic!("{evs:?}"),
    }
    assert!(events(&mut y).is_empty(), "no ACK before the answer exists");
    // The 2xx is retransmitted meanwhile; still no ACK.
    let t1 = run(&mut x, &mut y, t0, 2);
    assert!(events(&mut y).is_empty());
    // The answer arrives (from the other leg): the ACK carries it.
    x.ack(xl, Some(sdp(3, "sendrecv")), t1);
    pump(&mut x, &mut y, t1);
    let evs = events(&mut y);
    match &evs[..] {
        [RelayEvent::AckAnswer { leg, sdp: Some(s) }] => {
            assert_eq!(*leg, yl);
            assert_eq!(*s, sdp(3, "sendrecv"));
        }
        _ => panic!("{evs:?}"),
    }
    // The call stays up (no missing-ACK BYE), retransmitted 2xx or not.
    let t2 = run(&mut x, &mut y, t1, 40);
    assert!(events(&mut x).is_empty());
    assert!(events(&mut y).is_empty());
    x.hang_up(xl, t2);
    pump(&mut x, &mut y, t2);
    let evs = events(&mut y);
    assert!(
        matches!(
            evs[..],
            [RelayEvent::Ended {
                why: LegEnd::Bye,
                ..
            }]
        ),
        "{evs:?}"
    );
    run(&mut x, &mut y, t2, 40);
    assert!(x.is_idle(), "x left something");
    assert!(y.is_idle(), "y left something");
}

#[test]
fn a_leg_on_tls_or_ws_is_signed_with_that_listener() {
    let mut x = Relay::new(
        RelaySettings {
            local: LocalAddrs {
                udp: Some(X.parse().unwrap()),
                tcp: Some("10.0.0.1:5060".parse().unwrap()),
            },
            listeners: vec![
                (Transport::Tls, "10.0.0.1:5061".parse().unwrap()),
                (Transport::Ws, "10.0.0.1:8080".parse().unwrap()),
            ],
            contact_user: "b2bua".into(),
            user_agent: "test".into(),
            session_expires: None,
            timers: TimerConfig::default(),
        },
        [21; 32],
    );
    let now = Instant::now();
    for (transport, via, contact) in [
        (
            Transport::Tls,
            "SIP/2.0/TLS 10.0.0.1:5061;",
            "<sip:b2bua@10.0.0.1:5061;transport=tls>",
        ),
        (
            Transport::Ws,
            "SIP/2.0/WS 10.0.0.1:8080;",
            "<sip:b2bua@10.0.0.1:8080;transport=ws>",
        ),
        (
            Transport::Tcp,
            "SIP/2.0/TCP 10.0.0.1:5060;",
            "<sip:b2bua@10.0.0.1:5060;transport=tcp>",
        ),
    ] {
        x.place(
            Placement {
                uri: format!("sip:alice@{Y}"),
                to: "<sip:201@test>".into(),
                from: "<sip:dave@test>".into(),
                routes: Vec::new(),
                flow: Flow {
                    transport,
                    ..udp(Y)
                },
                sdp: Some(sdp(1, "sendrecv")),
                headers: Vec::new(),
            },
            now,
        )
        .unwrap();
        let invite = Message::parse(x.poll_transmit().unwrap().bytes).unwrap();
        let got_via = invite.get_by_name("Via").unwrap();
        assert!(got_via.starts_with(via), "{got_via}");
        assert_eq!(invite.get_by_name("Contact"), Some(contact));
    }
}

#[test]
fn info_and_message_go_to_the_app_and_their_answers_come_back() {
    let mut x = relay(X, 31);
    let mut y = relay(Y, 32);
    let t0 = Instant::now();
    let (xl, yl) = connected(&mut x, &mut y, t0);
    // x relays an INFO (from its other leg, here made up) to y's far end.
    let dtmf = Message::parse(Bytes::from_static(
        b"INFO sip:b2bua@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx\r\n\
          From: <sip:a@test>;tag=1\r\nTo: <sip:b@test>;tag=2\r\nCall-ID: other\r\n\
          CSeq: 5 INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\n\
          Signal=5\r\nDuration=160\r\n",
    ))
    .unwrap();
    let rid = x.relay_request(xl, &dtmf, t0).unwrap();
    pump(&mut x, &mut y, t0);
    let evs = events(&mut y);
    let (id, request) = match &evs[..] {
        [RelayEvent::Request { leg, id, request }] => {
            assert_eq!(*leg, yl);
            (*id, request.clone())
        }
        _ => panic!("{evs:?}"),
    };
    assert_eq!(request.method(), Some(&Method::Info));
    assert_eq!(
        request.get_by_name("Content-Type"),
        Some("application/dtmf-relay")
    );
    assert_eq!(request.body(), b"Signal=5\r\nDuration=160\r\n");
    // Nothing answered until the app says so; then its status goes back.
    assert!(events(&mut x).is_empty());
    y.answer_request(id, 415, t0);
    pump(&mut x, &mut y, t0);
    let evs = events(&mut x);
    match &evs[..] {
        [RelayEvent::RequestAnswered { leg, id, status }] => {
            assert_eq!((*leg, *id, *status), (xl, rid, 415));
        }
        _ => panic!("{evs:?}"),
    }
    // A MESSAGE the other way, left unanswered until the leg ends: 481.
    let text = Message::parse(Bytes::from_static(
        b"MESSAGE sip:b2bua@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKy\r\n\
          From: <sip:a@test>;tag=1\r\nTo: <sip:b@test>;tag=2\r\nCall-ID: other\r\n\
          CSeq: 6 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
    ))
    .unwrap();
    let rid = y.relay_request(yl, &text, t0).unwrap();
    pump(&mut x, &mut y, t0);
    let evs = events(&mut x);
    assert!(
        matches!(&evs[..], [RelayEvent::Request { request, .. }] if request.body() == b"hi"),
        "{evs:?}"
    );
    x.hang_up(xl, t0);
    pump(&mut x, &mut y, t0);
    let evs = events(&mut y);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            RelayEvent::RequestAnswered { id, status: 481, .. } if *id == rid
        )),
        "{evs:?}"
    );
    run(&mut x, &mut y, t0, 40);
    assert!(x.is_idle(), "x left something");
    assert!(y.is_idle(), "y left something");
}
