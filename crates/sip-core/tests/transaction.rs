//! Transaction layer tests (RFC 3261 §17, RFC 6026), driven by a fake clock: a base
//! `Instant` taken once plus `Duration`s. No network, no sleeping.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use sip_core::name::HeaderName;
use sip_core::transaction::{
    Event, Kind, State, Timer, TimerConfig, TransactionError, TransactionLayer, Transmit,
    build_ack, build_cancel,
};
use sip_core::{Flow, Message, Method, Transport, response_to};
use std::time::{Duration, Instant};

// ----- helpers -----

fn flow(transport: Transport) -> Flow {
    Flow {
        transport,
        remote: "192.0.2.1:5060".parse().unwrap(),
        local: None,
        connection: None,
    }
}

fn udp() -> Flow {
    flow(Transport::Udp)
}

fn tcp() -> Flow {
    flow(Transport::Tcp)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A request with a magic-cookie branch; `extra` is inserted as extra header lines.
fn request(method: &str, branch: &str, seq: u32, extra: &str) -> Message {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         {extra}\
         Max-Forwards: 70\r\n\
         To: Bob <sip:bob@example.com>\r\n\
         From: Alice <sip:alice@example.com>;tag=a1\r\n\
         Call-ID: call-{branch}@192.0.2.1\r\n\
         CSeq: {seq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).unwrap()
}

fn respond(req: &Message, code: u16) -> Message {
    let tag = (code > 100).then_some("b2");
    response_to(req, code, tag).build().unwrap()
}

fn transmits(layer: &mut TransactionLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| layer.poll_transmit()).collect()
}

fn events(layer: &mut TransactionLayer) -> Vec<Event> {
    std::iter::from_fn(|| layer.poll_event()).collect()
}

/// Transmits with the instant they left.
type Sent = Vec<(Instant, Transmit)>;
/// Events with the instant they came.
type Seen = Vec<(Instant, Event)>;

/// Runs the clock through every timer up to `until`, following `poll_timeout` as an
/// I/O driver would, and returns the instants at which something was sent, plus every
/// event, in order.
fn run_until(layer: &mut TransactionLayer, until: Instant) -> (Sent, Seen) {
    let (mut tx, mut ev) = (Vec::new(), Vec::new());
    while let Some(t) = layer.poll_timeout() {
        if t > until {
            break;
        }
        layer.handle_timeout(t);
        tx.extend(transmits(layer).into_iter().map(|x| (t, x)));
        ev.extend(events(layer).into_iter().map(|e| (t, e)));
    }
    (tx, ev)
}

fn offsets(base: Instant, sent: &[(Instant, Transmit)]) -> Vec<u64> {
    sent.iter()
        .map(|(t, _)| (*t - base).as_millis() as u64)
        .collect()
}

/// A server transaction for a received request; returns its key.
fn serve(
    layer: &mut TransactionLayer,
    now: Instant,
    req: &Message,
    f: Flow,
) -> sip_core::transaction::TransactionKey {
    layer.handle_message(now, req.clone(), f).unwrap();
    match events(layer).as_slice() {
        [Event::Request { key, .. }] => *key,
        other => panic!("expected one Request event, got {other:?}"),
    }
}

fn has_timeout(ev: &[(Instant, Event)], timer: Timer) -> Option<Instant> {
    ev.iter().find_map(|(t, e)| match e {
        Event::Timeout { timer: x, .. } if *x == timer => Some(*t),
        _ => None,
    })
}

fn terminated_at(ev: &[(Instant, Event)]) -> Option<Instant> {
    ev.iter()
        .find_map(|(t, e)| matches!(e, Event::Terminated { .. }).then_some(*t))
}

// ----- non-INVITE client: timers E, F, K -----

#[test]
fn non_invite_client_udp_retransmits_doubling_to_t2_then_timer_f() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let key = layer
        .send_request(base, request("OPTIONS", "z9hG4bKe1", 1, ""), udp())
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    assert_eq!(layer.kind(key), Some(Kind::NonInviteClient));
    let (sent, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    // E: 500, 1000, 2000, 4000 (T2), 4000, ... until F at 64·T1 = 32 s.
    assert_eq!(
        offsets(base, &sent),
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        has_timeout(&ev, Timer::F),
        Some(base + Duration::from_secs(32))
    );
    assert_eq!(terminated_at(&ev), Some(base + Duration::from_secs(32)));
    assert_eq!(layer.len(), 0);
    assert_eq!(layer.scheduled_timers(), 0);
}

#[test]
fn non_invite_client_retransmits_every_t2_in_proceeding() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = request("REGISTER", "z9hG4bKe2", 1, "");
    layer.send_request(base, req.clone(), udp()).unwrap();
    let _ = transmits(&mut layer);
    layer.handle_timeout(base + ms(500));
    assert_eq!(transmits(&mut layer).len(), 1);
    layer
        .handle_message(base + ms(600), respond(&req, 100), udp())
        .unwrap();
    assert!(matches!(
        events(&mut layer).as_slice(),
        [Event::Response { .. }]
    ));
    // E was armed for 1500 before the provisional; from then on it is T2.
    let (sent, _) = run_until(&mut layer, base + ms(10_000));
    assert_eq!(offsets(base, &sent), vec![1500, 5500, 9500]);
}

#[test]
fn non_invite_client_tcp_never_retransmits_and_times_out_with_f() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    layer
        .send_request(base, request("OPTIONS", "z9hG4bKe3", 1, ""), tcp())
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    let (sent, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    assert!(sent.is_empty());
    assert_eq!(
        has_timeout(&ev, Timer::F),
        Some(base + Duration::from_secs(32))
    );
    assert_eq!(layer.len(), 0);
}

#[test]
fn non_invite_client_timer_k_udp_t4_tcp_zero() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = request("OPTIONS", "z9hG4bKk1", 1, "");
    let key = layer.send_request(base, req.clone(), udp()).unwrap();
    layer
        .handle_message(base + ms(100), respond(&req, 200), udp())
        .unwrap();
    let ev = events(&mut layer);
    assert!(
        matches!(&ev[..], [Event::Response { key: k, response }] if *k == key && response.status() == Some(200))
    );
    assert_eq!(layer.state(key), Some(State::Completed));
    // A retransmitted 200 is absorbed.
    layer
        .handle_message(base + ms(200), respond(&req, 200), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty());
    let (_, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    assert_eq!(terminated_at(&ev), Some(base + ms(5100)));

    let req = request("OPTIONS", "z9hG4bKk2", 1, "");
    layer.send_request(base, req.clone(), tcp()).unwrap();
    layer
        .handle_message(base + ms(100), respond(&req, 200), tcp())
        .unwrap();
    assert!(matches!(
        &events(&mut layer)[..],
        [Event::Response { .. }, Event::Terminated { .. }]
    ));
    assert_eq!(layer.len(), 0);
}

// ----- INVITE client: timers A, B, C, D, M -----

#[test]
fn invite_client_udp_timer_a_doubles_then_timer_b() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    layer
        .send_request(base, request("INVITE", "z9hG4bKa1", 1, ""), udp())
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    let (sent, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    // A: 500, 1000, 2000, 4000, 8000, 16000: INVITE intervals are not capped by T2.
    assert_eq!(
        offsets(base, &sent),
        vec![500, 1500, 3500, 7500, 15500, 31500]
    );
    assert_eq!(
        has_timeout(&ev, Timer::B),
        Some(base + Duration::from_secs(32))
    );
    assert_eq!(layer.len(), 0);
    // Timer C's entry is left behind in the heap until it surfaces; it is not live.
    assert_eq!(layer.poll_timeout(), None);
}

#[test]
fn invite_client_tcp_no_retransmission() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    layer
        .send_request(base, request("INVITE", "z9hG4bKa2", 1, ""), tcp())
        .unwrap();
    let _ = transmits(&mut layer);
    let (sent, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    assert!(sent.is_empty());
    assert_eq!(
        has_timeout(&ev, Timer::B),
        Some(base + Duration::from_secs(32))
    );
}

#[test]
fn invite_client_provisional_stops_retransmission_and_resets_timer_c() {
    let base = Instant::now();
    let cfg = TimerConfig {
        timer_c: Some(Duration::from_secs(180)),
        ..TimerConfig::default()
    };
    let mut layer = TransactionLayer::new(cfg);
    let req = request("INVITE", "z9hG4bKc1", 1, "");
    let key = layer.send_request(base, req.clone(), udp()).unwrap();
    let _ = transmits(&mut layer);
    let t = base + Duration::from_secs(10);
    layer.handle_message(t, respond(&req, 180), udp()).unwrap();
    assert_eq!(layer.state(key), Some(State::Proceeding));
    let (sent, ev) = run_until(&mut layer, base + Duration::from_secs(400));
    assert!(sent.is_empty(), "no retransmission in Proceeding");
    // C was reset by the 180: 10 s + 180 s. The transaction waits 64·T1 more for the
    // CANCEL's 487, then gives up with B.
    assert_eq!(
        has_timeout(&ev, Timer::C),
        Some(t + Duration::from_secs(180))
    );
    assert_eq!(
        has_timeout(&ev, Timer::B),
        Some(t + Duration::from_secs(180 + 32))
    );
    assert_eq!(layer.len(), 0);
}

#[test]
fn invite_client_non_2xx_generates_ack_with_the_right_headers() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = Message::parse(Bytes::from_static(
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
          Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
          Via: SIP/2.0/UDP bigbox3.site3.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1\r\n\
          Route: <sip:p1.example.com;lr>\r\n\
          Route: <sip:p2.example.com;lr>\r\n\
          Max-Forwards: 70\r\n\
          To: Bob <sip:bob@biloxi.example.com>\r\n\
          From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
          Call-ID: a84b4c76e66710\r\n\
          CSeq: 314159 INVITE\r\n\
          Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
          Content-Length: 0\r\n\r\n",
    ))
    .unwrap();
    let key = layer.send_request(base, invite.clone(), udp()).unwrap();
    let _ = transmits(&mut layer);
    let busy = respond(&invite, 486);
    layer
        .handle_message(base + ms(100), busy.clone(), udp())
        .unwrap();
    let ev = events(&mut layer);
    assert!(
        matches!(&ev[..], [Event::Response { key: k, response }] if *k == key && response.status() == Some(486))
    );
    let sent = transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    let ack = Message::parse(sent[0].bytes.clone()).unwrap();
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.request_uri_str(), Some("sip:bob@biloxi.example.com"));
    assert_eq!(ack.call_id().unwrap(), "a84b4c76e66710");
    assert_eq!(
        ack.get(HeaderName::From),
        Some("Alice <sip:alice@atlanta.example.com>;tag=1928301774")
    );
    // The To of the response, with the UAS's tag.
    assert_eq!(ack.get(HeaderName::To), busy.get(HeaderName::To));
    assert_eq!(ack.to().unwrap().tag(), Some("b2"));
    assert_eq!(ack.get(HeaderName::CSeq), Some("314159 ACK"));
    let vias: Vec<_> = ack.get_all(HeaderName::Via).collect();
    assert_eq!(
        vias,
        vec!["SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8"]
    );
    let routes: Vec<_> = ack.get_all(HeaderName::Route).collect();
    assert_eq!(
        routes,
        vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    assert_eq!(ack.get(HeaderName::Contact), None);
    assert_eq!(ack, build_ack(&invite, &busy).unwrap());

    // A retransmitted 486 is re-ACKed and not passed up.
    layer
        .handle_message(base + ms(600), busy.clone(), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty());
    let again = transmits(&mut layer);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, sent[0].bytes);

    // Timer D: 32 s over UDP.
    let (_, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    assert_eq!(
        terminated_at(&ev),
        Some(base + ms(100) + Duration::from_secs(32))
    );
}

#[test]
fn invite_client_timer_d_is_zero_over_tcp() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKd2", 1, "");
    layer.send_request(base, invite.clone(), tcp()).unwrap();
    let _ = transmits(&mut layer);
    layer
        .handle_message(base + ms(10), respond(&invite, 404), tcp())
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 1, "the ACK");
    assert!(matches!(
        &events(&mut layer)[..],
        [Event::Response { .. }, Event::Terminated { .. }]
    ));
    assert_eq!(layer.len(), 0);
}

#[test]
fn invite_client_2xx_goes_up_and_accepted_passes_retransmissions() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKm1", 1, "");
    let key = layer.send_request(base, invite.clone(), udp()).unwrap();
    let _ = transmits(&mut layer);
    let ok = respond(&invite, 200);
    layer
        .handle_message(base + ms(100), ok.clone(), udp())
        .unwrap();
    assert!(matches!(&events(&mut layer)[..], [Event::Response { key: k, .. }] if *k == key));
    assert!(
        transmits(&mut layer).is_empty(),
        "the TU ACKs a 2xx, not the transaction"
    );
    assert_eq!(layer.state(key), Some(State::Accepted));
    // The 2xx retransmission goes up again so the TU can re-ACK.
    layer
        .handle_message(base + ms(600), ok.clone(), udp())
        .unwrap();
    assert!(matches!(&events(&mut layer)[..], [Event::Response { .. }]));
    assert!(transmits(&mut layer).is_empty());
    // A late 486 (another fork) is not passed up in Accepted.
    layer
        .handle_message(base + ms(700), respond(&invite, 486), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty());
    // Timer M: 64·T1.
    let (_, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    assert_eq!(
        terminated_at(&ev),
        Some(base + ms(100) + Duration::from_secs(32))
    );
    assert_eq!(layer.len(), 0);
}

// ----- INVITE server: 100 Trying, G, H, I, L -----

#[test]
fn invite_server_sends_100_trying_after_200ms() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKt1", 1, "");
    let key = serve(&mut layer, base, &invite, udp());
    assert_eq!(layer.poll_timeout(), Some(base + ms(200)));
    layer.handle_timeout(base + ms(199));
    assert!(transmits(&mut layer).is_empty());
    layer.handle_timeout(base + ms(200));
    let sent = transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].key, Some(key));
    let trying = Message::parse(sent[0].bytes.clone()).unwrap();
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.to().unwrap().tag(), None);
    // A retransmitted INVITE gets the 100 again.
    layer
        .handle_message(base + ms(500), invite.clone(), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty());
    assert_eq!(transmits(&mut layer)[0].bytes, sent[0].bytes);
}

#[test]
fn invite_server_no_100_when_tu_sends_a_provisional_first() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKt2", 1, "");
    let key = serve(&mut layer, base, &invite, udp());
    layer
        .send_response(base + ms(50), key, respond(&invite, 180))
        .unwrap();
    let ringing = transmits(&mut layer);
    assert_eq!(ringing.len(), 1);
    layer.handle_timeout(base + ms(300));
    assert!(transmits(&mut layer).is_empty());
    // Request retransmission absorbed, the last response (180) resent.
    layer
        .handle_message(base + ms(500), invite.clone(), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty());
    let resent = transmits(&mut layer);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].bytes, ringing[0].bytes);
}

#[test]
fn invite_server_non_2xx_retransmits_with_g_until_h() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKg1", 1, "");
    let key = serve(&mut layer, base, &invite, udp());
    layer
        .send_response(base, key, respond(&invite, 486))
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    assert_eq!(layer.state(key), Some(State::Completed));
    let (sent, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    // G: 500, 1000, 2000, 4000 (T2), 4000, ... until H at 64·T1.
    assert_eq!(
        offsets(base, &sent),
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        has_timeout(&ev, Timer::H),
        Some(base + Duration::from_secs(32))
    );
    assert_eq!(layer.len(), 0);
}

#[test]
fn invite_server_ack_absorbed_confirmed_then_timer_i() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKi1", 1, "");
    let key = serve(&mut layer, base, &invite, udp());
    let busy = respond(&invite, 486);
    layer.send_response(base, key, busy.clone()).unwrap();
    let _ = transmits(&mut layer);
    // An INVITE retransmission in Completed gets the 486 again.
    layer
        .handle_message(base + ms(100), invite.clone(), udp())
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    let ack = build_ack(&invite, &busy).unwrap();
    layer
        .handle_message(base + ms(700), ack.clone(), udp())
        .unwrap();
    assert!(
        events(&mut layer).is_empty(),
        "the ACK to a non-2xx is absorbed"
    );
    assert_eq!(layer.state(key), Some(State::Confirmed));
    // ACK retransmissions are absorbed too, and G stopped.
    layer.handle_message(base + ms(800), ack, udp()).unwrap();
    let (sent, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    assert!(sent.is_empty());
    assert!(has_timeout(&ev, Timer::H).is_none());
    assert_eq!(
        terminated_at(&ev),
        Some(base + ms(700) + Duration::from_secs(5))
    );
}

#[test]
fn invite_server_timer_i_zero_over_tcp_and_no_g() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKi2", 1, "");
    let key = serve(&mut layer, base, &invite, tcp());
    let busy = respond(&invite, 603);
    layer.send_response(base, key, busy.clone()).unwrap();
    let _ = transmits(&mut layer);
    // No G over TCP: the next timer is H.
    assert_eq!(layer.poll_timeout(), Some(base + Duration::from_secs(32)));
    let ack = build_ack(&invite, &busy).unwrap();
    layer.handle_message(base + ms(10), ack, tcp()).unwrap();
    assert!(matches!(
        &events(&mut layer)[..],
        [Event::Terminated { .. }]
    ));
    assert_eq!(layer.len(), 0);
}

#[test]
fn invite_server_2xx_accepted_absorbs_invites_passes_ack_timer_l() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKl1", 1, "");
    let key = serve(&mut layer, base, &invite, udp());
    let ok = respond(&invite, 200);
    layer.send_response(base + ms(10), key, ok.clone()).unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    assert_eq!(layer.state(key), Some(State::Accepted));
    // INVITE retransmissions are absorbed: no response, nothing to the TU.
    layer
        .handle_message(base + ms(500), invite.clone(), udp())
        .unwrap();
    assert!(transmits(&mut layer).is_empty());
    assert!(events(&mut layer).is_empty());
    // The transaction never retransmits the 2xx; the TU does, through it.
    let (sent, _) = run_until(&mut layer, base + ms(5000));
    assert!(sent.is_empty());
    layer
        .send_response(base + ms(5000), key, ok.clone())
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    // A non-2xx after a 2xx is the TU's mistake.
    let err = layer
        .send_response(base + ms(5000), key, respond(&invite, 500))
        .unwrap_err();
    assert!(matches!(
        err,
        TransactionError::InvalidState {
            state: State::Accepted,
            ..
        }
    ));
    // An ACK that matches the transaction in Accepted goes to the TU.
    let ack = request("ACK", "z9hG4bKl1", 1, "");
    layer.handle_message(base + ms(5100), ack, udp()).unwrap();
    assert!(matches!(&events(&mut layer)[..], [Event::Ack { key: Some(k), .. }] if *k == key));
    // A 2xx ACK with its own branch matches nothing: a stray ACK for the dialog layer.
    let ack = request("ACK", "z9hG4bKother", 1, "");
    layer.handle_message(base + ms(5100), ack, udp()).unwrap();
    assert!(matches!(
        &events(&mut layer)[..],
        [Event::Ack { key: None, .. }]
    ));
    // Timer L: 64·T1 from the 2xx, on every transport.
    let (_, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    assert_eq!(
        terminated_at(&ev),
        Some(base + ms(10) + Duration::from_secs(32))
    );
    assert_eq!(layer.len(), 0);
}

// ----- non-INVITE server: J -----

#[test]
fn non_invite_server_absorbs_retransmissions_and_lingers_for_timer_j() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = request("OPTIONS", "z9hG4bKj1", 1, "");
    let key = serve(&mut layer, base, &req, udp());
    // Retransmission in Trying: absorbed, nothing to resend yet.
    layer
        .handle_message(base + ms(500), req.clone(), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty());
    assert!(transmits(&mut layer).is_empty());
    layer
        .send_response(base + ms(600), key, respond(&req, 200))
        .unwrap();
    let ok = transmits(&mut layer);
    // Retransmission in Completed: the 200 again.
    layer
        .handle_message(base + ms(1500), req.clone(), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty());
    assert_eq!(transmits(&mut layer)[0].bytes, ok[0].bytes);
    let err = layer
        .send_response(base + ms(1600), key, respond(&req, 500))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "transaction {key} is Completed and cannot send another response after its final response"
        )
    );
    let (_, ev) = run_until(&mut layer, base + Duration::from_secs(60));
    assert_eq!(
        terminated_at(&ev),
        Some(base + ms(600) + Duration::from_secs(32))
    );
    assert_eq!(layer.len(), 0);
}

#[test]
fn non_invite_server_timer_j_zero_over_tcp() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = request("BYE", "z9hG4bKj2", 2, "");
    let key = serve(&mut layer, base, &req, tcp());
    layer.send_response(base, key, respond(&req, 200)).unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    assert!(matches!(&events(&mut layer)[..], [Event::Terminated { key: k }] if *k == key));
    assert_eq!(layer.len(), 0);
    // Too late now.
    assert_eq!(
        layer.send_response(base, key, respond(&req, 200)),
        Err(TransactionError::UnknownTransaction(key))
    );
}

// ----- matching -----

#[test]
fn server_matching_uses_sent_by_and_method() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let a = request("OPTIONS", "z9hG4bKsame", 1, "");
    serve(&mut layer, base, &a, udp());
    // Same branch, different sent-by: another client's transaction.
    let text = String::from_utf8(a.as_bytes().to_vec())
        .unwrap()
        .replace("192.0.2.1:5060", "198.51.100.7:5060");
    let b = Message::parse(Bytes::from(text)).unwrap();
    serve(&mut layer, base, &b, udp());
    // Sent-by compares case-insensitively with the default port filled in.
    let text = String::from_utf8(a.as_bytes().to_vec())
        .unwrap()
        .replace("192.0.2.1:5060", "192.0.2.1");
    layer
        .handle_message(base, Message::parse(Bytes::from(text)).unwrap(), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty(), "retransmission of the first");
    assert_eq!(layer.len(), 2);
}

#[test]
fn cancel_is_its_own_server_transaction_and_finds_its_invite() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request("INVITE", "z9hG4bKcx", 1, "");
    let inv_key = serve(&mut layer, base, &invite, udp());
    let cancel = build_cancel(&invite).unwrap();
    let cancel_key = serve(&mut layer, base + ms(50), &cancel, udp());
    assert_ne!(inv_key, cancel_key);
    assert_eq!(layer.kind(cancel_key), Some(Kind::NonInviteServer));
    assert_eq!(layer.find_cancelled(&cancel), Some(inv_key));
    assert_eq!(layer.state(inv_key), Some(State::Proceeding));
    // Each answers on its own.
    layer
        .send_response(base + ms(60), cancel_key, respond(&cancel, 200))
        .unwrap();
    layer
        .send_response(base + ms(60), inv_key, respond(&invite, 487))
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 2);
    assert_eq!(layer.state(inv_key), Some(State::Completed));
    assert_eq!(layer.state(cancel_key), Some(State::Completed));
}

#[test]
fn client_cancel_shares_the_branch_and_responses_find_their_transaction() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = request(
        "INVITE",
        "z9hG4bKcc",
        7,
        "Route: <sip:p1.example.com;lr>\r\n",
    );
    let inv_key = layer.send_request(base, invite.clone(), udp()).unwrap();
    let _ = transmits(&mut layer);
    // Before a provisional, CANCEL must wait (§9.1).
    let err = layer.cancel(base, inv_key).unwrap_err();
    assert!(matches!(
        err,
        TransactionError::InvalidState {
            state: State::Calling,
            ..
        }
    ));
    layer
        .handle_message(base + ms(100), respond(&invite, 180), udp())
        .unwrap();
    let _ = events(&mut layer);
    let cancel_key = layer.cancel(base + ms(200), inv_key).unwrap();
    let sent = transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    let cancel = Message::parse(sent[0].bytes.clone()).unwrap();
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.request_uri_str(), invite.request_uri_str());
    assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bKcc"));
    assert_eq!(cancel.get_all(HeaderName::Via).count(), 1);
    assert_eq!(cancel.get(HeaderName::CSeq), Some("7 CANCEL"));
    for h in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::Route,
    ] {
        assert_eq!(cancel.get(h), invite.get(h), "{h:?}");
    }
    // 200 to the CANCEL goes to the CANCEL transaction, 487 to the INVITE.
    layer
        .handle_message(base + ms(300), respond(&cancel, 200), udp())
        .unwrap();
    assert!(matches!(&events(&mut layer)[..], [Event::Response { key, .. }] if *key == cancel_key));
    layer
        .handle_message(base + ms(300), respond(&invite, 487), udp())
        .unwrap();
    assert!(matches!(&events(&mut layer)[..], [Event::Response { key, .. }] if *key == inv_key));
    assert_eq!(layer.state(inv_key), Some(State::Completed));
}

fn rfc2543_request(method: &str, seq_method: &str, to_tag: &str) -> Message {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.9:5060\r\n\
         To: <sip:bob@example.com>{to_tag}\r\n\
         From: <sip:alice@example.com>;tag=old1\r\n\
         Call-ID: 2543call@192.0.2.9\r\n\
         CSeq: 5 {seq_method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).unwrap()
}

#[test]
fn rfc2543_matching_without_magic_cookie() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = rfc2543_request("INVITE", "INVITE", "");
    let key = serve(&mut layer, base, &invite, udp());
    // A retransmission (same Request-URI, tags, Call-ID, CSeq, Via) matches.
    layer
        .handle_message(base + ms(100), invite.clone(), udp())
        .unwrap();
    assert!(events(&mut layer).is_empty());
    assert_eq!(layer.len(), 1);
    layer
        .send_response(base + ms(150), key, respond(&invite, 486))
        .unwrap();
    // An ACK with another To tag is not ours.
    let stranger = rfc2543_request("ACK", "ACK", ";tag=zz");
    layer
        .handle_message(base + ms(200), stranger, udp())
        .unwrap();
    assert!(matches!(
        &events(&mut layer)[..],
        [Event::Ack { key: None, .. }]
    ));
    // The ACK carrying our response's To tag matches and is absorbed.
    let ack = rfc2543_request("ACK", "ACK", ";tag=b2");
    layer.handle_message(base + ms(200), ack, udp()).unwrap();
    assert!(events(&mut layer).is_empty());
    assert_eq!(layer.state(key), Some(State::Confirmed));
    // A different CSeq method (a non-INVITE with the same fields) is another transaction.
    let bye = rfc2543_request("BYE", "BYE", ";tag=b2");
    serve(&mut layer, base + ms(300), &bye, udp());
    assert_eq!(layer.len(), 2);
}

#[test]
fn rfc2543_ack_to_2xx_in_accepted_goes_to_tu() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let invite = rfc2543_request("INVITE", "INVITE", "");
    let key = serve(&mut layer, base, &invite, udp());
    layer
        .send_response(base, key, respond(&invite, 200))
        .unwrap();
    let ack = rfc2543_request("ACK", "ACK", ";tag=b2");
    layer.handle_message(base + ms(100), ack, udp()).unwrap();
    assert!(matches!(&events(&mut layer)[..], [Event::Ack { key: Some(k), .. }] if *k == key));
}

#[test]
fn stray_response_is_reported() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = request("OPTIONS", "z9hG4bKnone", 1, "");
    layer
        .handle_message(base, respond(&req, 200), udp())
        .unwrap();
    assert!(matches!(
        &events(&mut layer)[..],
        [Event::StrayResponse { .. }]
    ));
    assert_eq!(layer.len(), 0);
}

// ----- transport errors -----

#[test]
fn transport_error_terminates_client_and_keeps_server() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let key = layer
        .send_request(base, request("INVITE", "z9hG4bKte", 1, ""), tcp())
        .unwrap();
    let sent = transmits(&mut layer);
    assert_eq!(sent[0].key, Some(key));
    layer.handle_transport_error(base + ms(1), key).unwrap();
    assert!(matches!(
        &events(&mut layer)[..],
        [Event::TransportError { key: a }, Event::Terminated { key: b }] if *a == key && *b == key
    ));
    assert_eq!(layer.len(), 0);
    assert_eq!(
        layer.handle_transport_error(base, key),
        Err(TransactionError::UnknownTransaction(key))
    );

    // RFC 6026 §8.8: the server transaction stays, its timers end it.
    let invite = request("INVITE", "z9hG4bKts", 1, "");
    let key = serve(&mut layer, base, &invite, udp());
    layer
        .send_response(base, key, respond(&invite, 500))
        .unwrap();
    layer.handle_transport_error(base + ms(1), key).unwrap();
    assert!(matches!(
        &events(&mut layer)[..],
        [Event::TransportError { .. }]
    ));
    assert_eq!(layer.state(key), Some(State::Completed));
}

// ----- API misuse -----

#[test]
fn send_request_refuses_bad_requests_with_a_hint() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let err = layer
        .send_request(base, request("OPTIONS", "old-style", 1, ""), udp())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "request has no RFC 3261 branch in its top Via (got Some(\"old-style\")); generate one starting with z9hG4bK"
    );
    assert_eq!(
        layer.send_request(base, request("ACK", "z9hG4bKack", 1, ""), udp()),
        Err(TransactionError::AckIsNotATransaction)
    );
    let req = request("OPTIONS", "z9hG4bKdup", 1, "");
    layer.send_request(base, req.clone(), udp()).unwrap();
    assert_eq!(
        layer.send_request(base, req.clone(), udp()),
        Err(TransactionError::DuplicateBranch("z9hG4bKdup".into()))
    );
    let resp = respond(&req, 200);
    assert!(matches!(
        layer.send_request(base, resp, udp()),
        Err(TransactionError::WrongKind { .. })
    ));
    let no_via = Message::parse(Bytes::from_static(
        b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    assert!(matches!(
        layer.handle_message(base, no_via, udp()),
        Err(TransactionError::Unmatchable(_))
    ));
}

#[test]
fn early_and_repeated_timeouts_are_harmless() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    layer
        .send_request(base, request("OPTIONS", "z9hG4bKno", 1, ""), udp())
        .unwrap();
    let _ = transmits(&mut layer);
    layer.handle_timeout(base + ms(10));
    layer.handle_timeout(base + ms(10));
    assert!(transmits(&mut layer).is_empty());
    layer.handle_timeout(base + ms(500));
    layer.handle_timeout(base + ms(500));
    assert_eq!(transmits(&mut layer).len(), 1);
}

// ----- burst -----

/// 100,000 transactions of every kind over UDP, created and completed, then the clock
/// run past every timer: the table and the timer heap end empty.
#[test]
fn burst_of_100k_transactions_leaves_nothing_behind() {
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    let f = udp();
    let mut terminated = 0usize;
    let mut count = |layer: &mut TransactionLayer| {
        while layer.poll_transmit().is_some() {}
        for e in std::iter::from_fn(|| layer.poll_event()) {
            if matches!(e, Event::Terminated { .. }) {
                terminated += 1;
            }
        }
    };
    let n = 100_000u32;
    let mut peak = 0;
    for i in 0..n {
        let now = base + Duration::from_micros(u64::from(i) * 10);
        let branch = format!("z9hG4bKburst{i}");
        match i % 6 {
            0 => {
                // Non-INVITE server: request in, 200 out, timer J.
                let req = request("OPTIONS", &branch, i, "");
                layer.handle_message(now, req.clone(), f).unwrap();
                let Some(Event::Request { key, .. }) = layer.poll_event() else {
                    panic!("no request event")
                };
                layer.send_response(now, key, respond(&req, 200)).unwrap();
            }
            1 => {
                // INVITE server, rejected and ACKed: G, H, I.
                let req = request("INVITE", &branch, i, "");
                layer.handle_message(now, req.clone(), f).unwrap();
                let Some(Event::Request { key, .. }) = layer.poll_event() else {
                    panic!("no request event")
                };
                let busy = respond(&req, 486);
                layer.send_response(now, key, busy.clone()).unwrap();
                layer
                    .handle_message(now, build_ack(&req, &busy).unwrap(), f)
                    .unwrap();
            }
            2 => {
                // INVITE server, accepted: L.
                let req = request("INVITE", &branch, i, "");
                layer.handle_message(now, req.clone(), f).unwrap();
                let Some(Event::Request { key, .. }) = layer.poll_event() else {
                    panic!("no request event")
                };
                layer.send_response(now, key, respond(&req, 200)).unwrap();
            }
            3 => {
                // Non-INVITE client: request out, response in, timer K.
                let req = request("MESSAGE", &branch, i, "");
                layer.send_request(now, req.clone(), f).unwrap();
                layer.handle_message(now, respond(&req, 200), f).unwrap();
            }
            4 => {
                // INVITE client, rejected: ACK, D.
                let req = request("INVITE", &branch, i, "");
                layer.send_request(now, req.clone(), f).unwrap();
                layer.handle_message(now, respond(&req, 180), f).unwrap();
                layer.handle_message(now, respond(&req, 486), f).unwrap();
            }
            _ => {
                // INVITE client, accepted: M.
                let req = request("INVITE", &branch, i, "");
                layer.send_request(now, req.clone(), f).unwrap();
                layer.handle_message(now, respond(&req, 200), f).unwrap();
            }
        }
        count(&mut layer);
        peak = peak.max(layer.len());
    }
    assert_eq!(peak, n as usize, "every transaction lingers over UDP");
    while let Some(t) = layer.poll_timeout() {
        layer.handle_timeout(t);
        count(&mut layer);
    }
    assert_eq!(terminated, n as usize);
    assert_eq!(layer.len(), 0);
    assert!(layer.is_empty());
    assert_eq!(
        layer.scheduled_timers(),
        0,
        "no timer entries, live or stale"
    );
    assert_eq!(layer.poll_timeout(), None);
}

/// `forget` drops an INVITE server transaction silently: no event, no timer, and a
/// retransmission of the INVITE starts a new transaction (for the layer it was handed
/// to, in a B2BUA, the same happens there).
#[test]
fn forget_drops_a_server_transaction_silently() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKfg1", 1, "");
    layer.handle_message(t0, invite.clone(), udp()).unwrap();
    let key = match &events(&mut layer)[..] {
        [Event::Request { key, .. }] => *key,
        other => panic!("{other:?}"),
    };
    assert!(layer.forget(key));
    assert!(!layer.forget(key), "a dead key");
    assert!(layer.is_empty());
    assert!(layer.poll_timeout().is_none());
    assert!(events(&mut layer).is_empty(), "no Terminated");
    layer.handle_message(t0 + ms(500), invite, udp()).unwrap();
    assert!(matches!(events(&mut layer)[..], [Event::Request { .. }]));
}
