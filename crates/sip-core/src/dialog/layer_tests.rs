//! The dialog layer's rules, each on a fake clock.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::response_to;
use crate::transaction::TimerConfig;
use crate::transport::{Flow, Transport};
use bytes::Bytes;
use std::time::{Duration, Instant};

const ALICE: &str = "192.0.2.1:5060";
const BOB: &str = "192.0.2.4:5060";

fn parse(s: &str) -> Message {
    Message::parse(Bytes::from(s.replace('\n', "\r\n"))).unwrap()
}

fn udp(addr: &str) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
        local: None,
        connection: None,
    }
}

fn layer() -> DialogLayer {
    let config = TimerConfig {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        ..TimerConfig::default()
    };
    DialogLayer::new(config, crate::ids::IdGenerator::new(&[9u8; 32]).unwrap())
}

fn local(me: &str, fallback: &str) -> LocalEnd {
    LocalEnd {
        contact: format!("sip:me@{me}"),
        via: format!("SIP/2.0/UDP {me}"),
        fallback: udp(fallback),
        transport: Transport::Udp,
    }
}

/// Alice's INVITE, as Bob receives it (and as Alice sent it).
fn invite() -> Message {
    parse(&format!(
        "INVITE sip:bob@{BOB} SIP/2.0\n\
         Via: SIP/2.0/UDP {ALICE};branch=z9hG4bKinv1\n\
         Max-Forwards: 70\n\
         To: <sip:bob@example.com>\n\
         From: <sip:alice@example.com>;tag=a1\n\
         Call-ID: call-1\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:alice@{ALICE}>\n\
         Content-Length: 0\n\n"
    ))
}

/// Bob's response with his tag `tag` and a Contact on `contact`.
fn answer(invite: &Message, status: u16, tag: &str, contact: &str) -> Message {
    response_to(invite, status, Some(tag))
        .header("Contact", format!("<sip:bob@{contact}>"))
        .build()
        .unwrap()
}

/// A request from Alice inside Bob's dialog (Bob's tag `b1`).
fn from_alice(method: &str, seq: u32, contact: Option<&str>) -> Message {
    let contact = contact
        .map(|c| format!("Contact: <sip:alice@{c}>\n"))
        .unwrap_or_default();
    parse(&format!(
        "{method} sip:bob@{BOB} SIP/2.0\n\
         Via: SIP/2.0/UDP {ALICE};branch=z9hG4bK{method}{seq}\n\
         Max-Forwards: 70\n\
         To: <sip:bob@example.com>;tag=b1\n\
         From: <sip:alice@example.com>;tag=a1\n\
         Call-ID: call-1\n\
         CSeq: {seq} {method}\n{contact}\
         Content-Length: 0\n\n"
    ))
}

fn drain(l: &mut DialogLayer) -> Vec<DialogTransmit> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

fn events(l: &mut DialogLayer) -> Vec<DialogEvent> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn stateless(t: &DialogTransmit) -> Message {
    match t {
        DialogTransmit::Stateless(t) => Message::parse(t.bytes.clone()).unwrap(),
        other => panic!("not stateless: {other:?}"),
    }
}

/// Runs every timer up to `until`, collecting what was sent and when.
fn run(l: &mut DialogLayer, until: Instant, t0: Instant) -> Vec<(u128, DialogTransmit)> {
    let mut sent = Vec::new();
    while let Some(at) = l.poll_timeout().filter(|at| *at <= until) {
        l.handle_timeout(at);
        for t in drain(l) {
            sent.push((at.duration_since(t0).as_millis(), t));
        }
    }
    sent
}

/// Bob has answered Alice's INVITE with a 2xx at `t0`: (layer, dialog, the 2xx).
fn bob_answered(t0: Instant) -> (DialogLayer, DialogId, Message) {
    let mut l = layer();
    let inv = invite();
    let id = l.create_uas(&inv, "b1", 100, local(BOB, ALICE)).unwrap();
    assert_eq!(l.get(&id).unwrap().state, DialogState::Early);
    let ok = answer(&inv, 200, "b1", BOB);
    l.send_2xx(t0, &id, &ok, udp(ALICE)).unwrap();
    assert_eq!(l.get(&id).unwrap().state, DialogState::Confirmed);
    assert!(
        drain(&mut l).is_empty(),
        "the first 2xx is the transaction's"
    );
    (l, id, ok)
}

#[test]
fn our_2xx_goes_again_from_t1_doubling_to_t2() {
    let t0 = Instant::now();
    let (mut l, _, ok) = bob_answered(t0);
    let sent = run(&mut l, t0 + Duration::from_millis(2000), t0);
    let at: Vec<u128> = sent.iter().map(|(at, _)| *at).collect();
    // +100, +200, +400, then T2 (400) each time.
    assert_eq!(at, [100, 300, 700, 1100, 1500, 1900]);
    for (_, t) in &sent {
        let DialogTransmit::Stateless(t) = t else {
            panic!()
        };
        assert_eq!(t.bytes, *ok.as_bytes());
        assert_eq!(t.flow, udp(ALICE));
    }
}

#[test]
fn the_ack_stops_the_2xx_and_a_late_one_changes_nothing() {
    let t0 = Instant::now();
    let (mut l, id, _) = bob_answered(t0);
    run(&mut l, t0 + Duration::from_millis(150), t0);
    assert_eq!(
        l.handle_request(t0, &from_alice("ACK", 1, None)),
        Ok(id.clone())
    );
    assert_eq!(l.poll_timeout(), None, "nothing left to time");
    assert!(run(&mut l, t0 + Duration::from_secs(60), t0).is_empty());
    assert_eq!(l.len(), 1);
    assert!(events(&mut l).is_empty());
}

#[test]
fn no_ack_in_64_t1_ends_the_dialog_with_a_bye() {
    let t0 = Instant::now();
    let (mut l, id, _) = bob_answered(t0);
    let sent = run(&mut l, t0 + Duration::from_millis(6399), t0);
    assert!(
        sent.iter()
            .all(|(_, t)| matches!(t, DialogTransmit::Stateless(_)))
    );
    assert!(l.get(&id).is_some());
    let sent = run(&mut l, t0 + Duration::from_millis(6400), t0);
    let [
        (
            6400,
            DialogTransmit::Request {
                id: bye_id,
                request,
                flow,
            },
        ),
    ] = sent.as_slice()
    else {
        panic!("{sent:?}")
    };
    assert_eq!(*bye_id, id);
    assert_eq!(request.method(), Some(&Method::Bye));
    assert_eq!(request.cseq().unwrap().seq, 101);
    assert_eq!(
        request.request_uri_str(),
        Some(format!("sip:alice@{ALICE}").as_str())
    );
    assert!(request.top_via().unwrap().has_rfc3261_branch());
    assert_eq!(*flow, udp(ALICE));
    assert_eq!(
        events(&mut l),
        [DialogEvent::Terminated {
            id,
            reason: TerminationReason::NoAck
        }]
    );
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn a_request_out_of_cseq_order_gets_500_and_no_dialog_481() {
    let t0 = Instant::now();
    let (mut l, id, _) = bob_answered(t0);
    l.handle_request(t0, &from_alice("ACK", 1, None)).unwrap();
    assert_eq!(
        l.handle_request(t0, &from_alice("INFO", 5, None)),
        Ok(id.clone())
    );
    let old = l
        .handle_request(t0, &from_alice("INFO", 4, None))
        .unwrap_err();
    assert_eq!(old.status, 500);
    let mut stranger = from_alice("BYE", 6, None).as_bytes().to_vec();
    let text = String::from_utf8(stranger.clone())
        .unwrap()
        .replace("call-1", "call-2");
    stranger = text.into_bytes();
    let stranger = Message::parse(Bytes::from(stranger)).unwrap();
    assert_eq!(l.handle_request(t0, &stranger).unwrap_err().status, 481);
    // A BYE ends the dialog; another request in it then gets 481.
    assert_eq!(l.handle_request(t0, &from_alice("BYE", 6, None)), Ok(id));
    assert!(l.is_empty());
    let late = l
        .handle_request(t0, &from_alice("INFO", 7, None))
        .unwrap_err();
    assert_eq!(late.status, 481);
}

#[test]
fn a_target_refresh_moves_where_requests_go() {
    let t0 = Instant::now();
    let (mut l, id, _) = bob_answered(t0);
    l.handle_request(t0, &from_alice("ACK", 1, None)).unwrap();
    assert_eq!(l.flow(&id), Some(udp(ALICE)));
    let reinvite = from_alice("INVITE", 2, Some("198.51.100.7:5070"));
    l.handle_request(t0, &reinvite).unwrap();
    assert_eq!(l.flow(&id), Some(udp("198.51.100.7:5070")));
    let (b, flow) = l.request(&id, &Method::Bye).unwrap();
    assert_eq!(flow, udp("198.51.100.7:5070"));
    let bye = b.build().unwrap();
    assert_eq!(bye.request_uri_str(), Some("sip:alice@198.51.100.7:5070"));
    // A request without a Contact refreshes nothing.
    l.handle_request(t0, &from_alice("INFO", 3, None)).unwrap();
    assert_eq!(l.flow(&id), Some(udp("198.51.100.7:5070")));
}

#[test]
fn the_2xx_to_our_reinvite_is_acked_each_time_and_refreshes_the_target() {
    let t0 = Instant::now();
    let (mut l, id, _) = bob_answered(t0);
    l.handle_request(t0, &from_alice("ACK", 1, None)).unwrap();
    let (b, _) = l.request(&id, &Method::Invite).unwrap();
    let reinvite = b.build().unwrap();
    // Alice's 2xx carries her tag as To (our request's To) and a new Contact.
    let ok = response_to(&reinvite, 200, None)
        .header("Contact", "<sip:alice@198.51.100.9:5060>")
        .build()
        .unwrap();
    assert_eq!(
        l.handle_response(t0, &ok),
        ResponseOutcome::InDialog(id.clone())
    );
    let sent = drain(&mut l);
    let ack = stateless(&sent[0]);
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq().unwrap().seq, reinvite.cseq().unwrap().seq);
    assert_eq!(ack.request_uri_str(), Some("sip:alice@198.51.100.9:5060"));
    assert_eq!(l.handle_response(t0, &ok), ResponseOutcome::InDialog(id));
    assert_eq!(drain(&mut l).len(), 1, "a retransmitted 2xx is ACKed again");
}

#[test]
fn session_timer_asks_for_a_refresh_at_half_and_ends_an_unrefreshed_session() {
    let t0 = Instant::now();
    let (mut l, id, _) = bob_answered(t0);
    l.handle_request(t0, &from_alice("ACK", 1, None)).unwrap();
    l.set_session_timer(&id, Some(SessionTimer::new(90, Refresher::Us, t0)));
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(45)));
    run(&mut l, t0 + Duration::from_secs(45), t0);
    assert_eq!(events(&mut l), [DialogEvent::RefreshDue { id: id.clone() }]);
    // The refresh succeeds a second later: the next is due 45 s after that.
    l.session_refreshed(t0 + Duration::from_secs(46), &id);
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(91)));

    // The far end refreshes, and stops: 90 - min(32, 30) = 60 s after the last one.
    l.set_session_timer(
        &id,
        Some(SessionTimer::new(
            90,
            Refresher::Them,
            t0 + Duration::from_secs(100),
        )),
    );
    assert!(run(&mut l, t0 + Duration::from_secs(159), t0).is_empty());
    assert!(events(&mut l).is_empty());
    let sent = run(&mut l, t0 + Duration::from_secs(160), t0);
    assert!(
        matches!(&sent[..], [(_, DialogTransmit::Request { request, .. })]
        if request.method() == Some(&Method::Bye))
    );
    assert_eq!(
        events(&mut l),
        [DialogEvent::Terminated {
            id,
            reason: TerminationReason::SessionExpired
        }]
    );
    assert!(l.is_empty());
}

/// Alice's side: her INVITE told to a fresh layer.
fn alice_calling() -> (DialogLayer, Message) {
    let mut l = layer();
    let inv = invite();
    l.invite_sent(&inv, local(ALICE, "192.0.2.99:5060"))
        .unwrap();
    (l, inv)
}

#[test]
fn the_first_2xx_confirms_and_is_acked_a_second_fork_is_acked_and_hung_up() {
    let t0 = Instant::now();
    let (mut l, inv) = alice_calling();
    let ok1 = answer(&inv, 200, "b1", BOB);
    let first = l.handle_response(t0, &ok1);
    let ResponseOutcome::Confirmed(id1) = first.clone() else {
        panic!("{first:?}")
    };
    assert_eq!(id1.remote_tag, "b1");
    let sent = drain(&mut l);
    let ack = stateless(&sent[0]);
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq().unwrap().to_string(), "1 ACK");
    assert_eq!(ack.to().unwrap().tag(), Some("b1"));
    // Straight to the numeric Contact, not the fallback.
    let DialogTransmit::Stateless(t) = &sent[0] else {
        panic!()
    };
    assert_eq!(t.flow, udp(BOB));

    let ok2 = answer(&inv, 200, "b2", "192.0.2.5:5090");
    let ResponseOutcome::ExtraForkEnded(id2) = l.handle_response(t0, &ok2) else {
        panic!()
    };
    let sent = drain(&mut l);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let ack2 = stateless(&sent[0]);
    assert_eq!(ack2.to().unwrap().tag(), Some("b2"));
    assert_eq!(ack2.request_uri_str(), Some("sip:bob@192.0.2.5:5090"));
    let DialogTransmit::Request {
        request: bye, flow, ..
    } = &sent[1]
    else {
        panic!()
    };
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.to().unwrap().tag(), Some("b2"));
    assert_eq!(*flow, udp("192.0.2.5:5090"));
    assert_eq!(
        events(&mut l),
        [DialogEvent::Terminated {
            id: id2.clone(),
            reason: TerminationReason::ExtraFork
        }]
    );

    // Retransmissions: each its own ACK again, no second BYE.
    assert_eq!(
        l.handle_response(t0, &ok2),
        ResponseOutcome::ExtraForkEnded(id2)
    );
    let sent = drain(&mut l);
    assert_eq!(sent.len(), 1);
    assert_eq!(stateless(&sent[0]).to().unwrap().tag(), Some("b2"));
    assert_eq!(
        l.handle_response(t0, &ok1),
        ResponseOutcome::Retransmission(id1.clone())
    );
    let sent = drain(&mut l);
    assert_eq!(stateless(&sent[0]).to().unwrap().tag(), Some("b1"));

    // 64·T1 later the INVITE is forgotten; the call's dialog stays.
    run(&mut l, t0 + Duration::from_millis(6400), t0);
    assert_eq!(l.invites(), 0);
    assert_eq!(l.len(), 1);
    assert!(l.get(&id1).is_some());
}

#[test]
fn a_second_fork_can_be_kept() {
    let t0 = Instant::now();
    let (mut l, inv) = alice_calling();
    l.set_fork_policy(ForkPolicy::Keep);
    l.handle_response(t0, &answer(&inv, 200, "b1", BOB));
    let ok2 = answer(&inv, 200, "b2", "192.0.2.5:5090");
    let ResponseOutcome::Forked(id2) = l.handle_response(t0, &ok2) else {
        panic!()
    };
    let sent = drain(&mut l);
    assert_eq!(sent.len(), 2, "two ACKs, no BYE: {sent:?}");
    assert!(
        sent.iter()
            .all(|t| matches!(t, DialogTransmit::Stateless(_)))
    );
    assert_eq!(l.len(), 2);
    assert_eq!(
        l.handle_response(t0, &ok2),
        ResponseOutcome::Retransmission(id2)
    );
}

#[test]
fn early_dialogs_of_two_forks_one_confirmed_the_other_ends_after_64_t1() {
    let t0 = Instant::now();
    let (mut l, inv) = alice_calling();
    let ringing1 = answer(&inv, 180, "b1", BOB);
    let ringing2 = answer(&inv, 180, "b2", "192.0.2.5:5090");
    let ResponseOutcome::Early(e1) = l.handle_response(t0, &ringing1) else {
        panic!()
    };
    let ResponseOutcome::Early(e2) = l.handle_response(t0, &ringing2) else {
        panic!()
    };
    assert_eq!(
        l.handle_response(t0, &ringing1),
        ResponseOutcome::Early(e1.clone())
    );
    assert_eq!(l.len(), 2);
    assert_eq!(l.get(&e1).unwrap().state, DialogState::Early);
    // Requests in an early dialog (a PRACK, say) go to its own fork.
    let (_, flow) = l.request(&e2, &Method::Prack).unwrap();
    assert_eq!(flow, udp("192.0.2.5:5090"));

    // The 2xx of the first fork, with a Record-Route: the route set is fixed now.
    let ok = response_to(&inv, 200, Some("b1"))
        .header("Contact", format!("<sip:bob@{BOB}>"))
        .header("Record-Route", "<sip:192.0.2.50;lr>")
        .build()
        .unwrap();
    assert_eq!(
        l.handle_response(t0, &ok),
        ResponseOutcome::Confirmed(e1.clone())
    );
    assert_eq!(l.get(&e1).unwrap().state, DialogState::Confirmed);
    assert_eq!(l.flow(&e1), Some(udp("192.0.2.50:5060")));
    assert!(events(&mut l).is_empty());
    run(&mut l, t0 + Duration::from_millis(6400), t0);
    assert_eq!(
        events(&mut l),
        [DialogEvent::Terminated {
            id: e2,
            reason: TerminationReason::NotConfirmed
        }]
    );
    assert_eq!(l.len(), 1);
    assert_eq!(l.invites(), 0);
}

#[test]
fn a_final_failure_ends_the_early_dialogs_and_forgetting_an_invite_leaves_nothing() {
    let t0 = Instant::now();
    let (mut l, inv) = alice_calling();
    let ResponseOutcome::Early(e1) = l.handle_response(t0, &answer(&inv, 183, "b1", BOB)) else {
        panic!()
    };
    let busy = response_to(&inv, 486, Some("b1")).build().unwrap();
    assert_eq!(l.handle_response(t0, &busy), ResponseOutcome::Failed);
    assert_eq!(
        events(&mut l),
        [DialogEvent::Terminated {
            id: e1,
            reason: TerminationReason::NotConfirmed
        }]
    );
    assert!(l.is_empty());

    let (mut l, inv) = alice_calling();
    l.handle_response(t0, &answer(&inv, 180, "b1", BOB));
    l.forget_invite("call-1", "a1");
    assert!(l.is_empty());
    assert_eq!(
        l.handle_response(t0, &answer(&inv, 200, "b1", BOB)),
        ResponseOutcome::Unknown
    );
    assert!(drain(&mut l).is_empty());
}

#[test]
fn ending_a_dialog_gives_its_bye_and_forgets_it() {
    let t0 = Instant::now();
    let (mut l, id, _) = bob_answered(t0);
    let (bye, flow) = l.end(&id).unwrap();
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.from().unwrap().tag(), Some("b1"));
    assert_eq!(flow, udp(ALICE));
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None, "no 2xx retransmission left");
    assert_eq!(l.end(&id).unwrap_err(), DialogError::NoDialog);
}
