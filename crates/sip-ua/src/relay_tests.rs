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
