//! Unit tests of transfer on the fake clock: the REFER we send and the NOTIFYs we
//! follow (transferor), the REFER we obey with its NOTIFYs (transferee), and INVITEs
//! with Replaces (target).

use super::*;

const CAROL: &str = "127.0.0.1:5090";

fn notify_from_bob(to_tag: &str, seq: u32, call_id: &str, event: &str, frag: &str) -> Message {
    bob_request(Method::Notify, Some(to_tag), seq, call_id)
        .header("Event", event)
        .header("Subscription-State", "terminated;reason=noresource")
        .body("message/sipfrag;version=2.0", format!("{frag}\r\n"))
        .build()
        .unwrap()
}

#[test]
fn a_refer_is_accepted_notified_and_followed_with_referred_by() {
    let (mut p, invite) = answered_caller(call_task());
    let call_id = invite.call_id().unwrap().to_owned();
    let our_tag = invite.from().unwrap().tag().unwrap().to_owned();
    p.events();
    let refer = bob_request(Method::Refer, Some(&our_tag), 1, &call_id)
        .header("Refer-To", format!("<sip:carol@{CAROL}>"))
        .header("Referred-By", "<sip:bob@example.test>")
        .build()
        .unwrap();
    p.receive(refer);
    let sent = p.take_sent();
    assert!(sent.iter().any(|m| m.status() == Some(202)), "{sent:?}");
    let notify = sent
        .iter()
        .find(|m| m.method() == Some(&Method::Notify))
        .unwrap();
    assert_eq!(notify.call_id().unwrap(), call_id);
    assert_eq!(notify.to().unwrap().tag(), Some("b1"));
    assert_eq!(notify.get(HeaderName::Event), Some("refer"));
    assert_eq!(
        notify.get(HeaderName::SubscriptionState),
        Some("active;expires=60")
    );
    assert!(
        notify
            .content_type()
            .unwrap()
            .unwrap()
            .is("message", "sipfrag")
    );
    assert_eq!(body_text(notify), "SIP/2.0 100 Trying\r\n");
    let new_invite = sent
        .iter()
        .find(|m| m.method() == Some(&Method::Invite))
        .unwrap()
        .clone();
    assert_eq!(
        new_invite.request_uri_str(),
        Some(format!("sip:carol@{CAROL}").as_str())
    );
    assert_ne!(new_invite.call_id().unwrap(), call_id);
    assert_eq!(
        new_invite.get(HeaderName::ReferredBy),
        Some("<sip:bob@example.test>")
    );
    // RFC 3891 §6.1: we say we take Replaces.
    assert!(
        new_invite
            .tokens(HeaderName::Supported)
            .any(|t| t.is_ok_and(|t| t == "replaces"))
    );
    // A second call has its own media session.
    assert!(body_text(&new_invite).contains(&format!("m=audio {} ", RTP_PORT + 2)));
    let names = p.event_names();
    assert!(names.contains(&"transfer requested"), "{names:?}");
    assert!(names.contains(&"calling"), "{names:?}");

    // Carol rings: NOTIFYed. Carol answers: NOTIFYed 200, the subscription over.
    p.receive_from(reply(&new_invite, 180, Some("c1")).build().unwrap(), CAROL);
    let ringing = p.sent_request(Method::Notify);
    assert_eq!(body_text(&ringing), "SIP/2.0 180 Ringing\r\n");
    p.receive_from(reply_sdp(&new_invite, 200, "c1", "sendrecv"), CAROL);
    let sent = p.take_sent();
    assert!(sent.iter().any(|m| m.method() == Some(&Method::Ack)));
    let done = sent
        .iter()
        .find(|m| m.method() == Some(&Method::Notify))
        .unwrap();
    assert_eq!(body_text(done), "SIP/2.0 200 OK\r\n");
    assert_eq!(
        done.get(HeaderName::SubscriptionState),
        Some("terminated;reason=noresource")
    );
    assert!(p.event_names().contains(&"transferred"));

    // Bob does not hang up: we do, 2 s later; the call to carol goes on.
    p.advance(Duration::from_secs(2));
    let bye = p.sent_request(Method::Bye);
    assert_eq!(bye.call_id().unwrap(), call_id);
    p.receive(reply(&bye, 200, Some("b1")).build().unwrap());
    let ended: Vec<PhoneEvent> = p
        .events()
        .into_iter()
        .filter(|e| e.name == "ended")
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].detail.as_deref(), Some("transferred"));
    assert_eq!(p.core.calls(), 1);
    assert_eq!(p.core.finished(), None, "the call to carol is the task now");
}

#[test]
fn a_refer_with_replaces_in_its_uri_sends_replaces() {
    let (mut p, invite) = answered_caller(call_task());
    let call_id = invite.call_id().unwrap().to_owned();
    let our_tag = invite.from().unwrap().tag().unwrap().to_owned();
    let refer = bob_request(Method::Refer, Some(&our_tag), 1, &call_id)
        .header(
            "Refer-To",
            format!("<sip:carol@{CAROL}?Replaces=x%40y%3Bto-tag%3Dc9%3Bfrom-tag%3Db9>"),
        )
        .build()
        .unwrap();
    p.receive(refer);
    let new_invite = p.sent_request(Method::Invite);
    assert_eq!(
        new_invite.get_by_name("Replaces"),
        Some("x@y;to-tag=c9;from-tag=b9")
    );
    // Without Referred-By in the REFER, the referrer is its From.
    assert_eq!(
        new_invite.get(HeaderName::ReferredBy),
        Some("<sip:bob@example.test>")
    );
}

#[test]
fn a_refer_without_one_refer_to_gets_400_and_outside_a_call_481() {
    let (mut p, invite) = answered_caller(call_task());
    let call_id = invite.call_id().unwrap().to_owned();
    let our_tag = invite.from().unwrap().tag().unwrap().to_owned();
    let refer = bob_request(Method::Refer, Some(&our_tag), 1, &call_id)
        .build()
        .unwrap();
    p.receive(refer);
    let _ = p.sent_response(400);
    let refer = bob_request(Method::Refer, Some("nope"), 2, "other@bob")
        .header("Refer-To", format!("<sip:carol@{CAROL}>"))
        .build()
        .unwrap();
    p.receive(refer);
    let _ = p.sent_response(481);
    assert_eq!(p.core.calls(), 1);
}

/// Bob's call answered by a phone whose script transfers it blind to carol after 1 s.
fn transferring_callee() -> (Phone, String) {
    let mut p = Phone::new(false, Task::Answer(answer_task()));
    p.core.set_transfer_script(TransferScript {
        to: Some("sip:carol@example.test".into()),
        after: Some(1.0),
        ..TransferScript::default()
    });
    let invite = bob_request(Method::Invite, None, 1, "call-1@bob")
        .body("application/sdp", sdp(41000, "sendrecv"))
        .build()
        .unwrap();
    p.receive(invite);
    let ok = p.sent_response(200);
    let tag = ok.to().unwrap().tag().unwrap().to_owned();
    p.receive(
        bob_request(Method::Ack, Some(&tag), 1, "call-1@bob")
            .build()
            .unwrap(),
    );
    p.events();
    (p, tag)
}

#[test]
fn the_script_refers_the_call_and_a_notified_200_ends_it() {
    let (mut p, tag) = transferring_callee();
    p.advance(Duration::from_millis(900));
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Refer))
    );
    p.advance(Duration::from_millis(100));
    let refer = p.sent_request(Method::Refer);
    assert_eq!(refer.call_id().unwrap(), "call-1@bob");
    assert_eq!(
        refer.get(HeaderName::ReferTo),
        Some("<sip:carol@example.test>")
    );
    assert_eq!(
        refer.get(HeaderName::ReferredBy),
        Some("<sip:alice@example.test>")
    );
    p.receive(reply(&refer, 202, Some("b1")).build().unwrap());
    let events = p.events();
    assert_eq!(events[0].name, "transferring");
    assert_eq!(
        events[1].detail.as_deref(),
        Some("SIP/2.0 202 Accepted"),
        "{events:?}"
    );

    // Another event package is not ours; a refer NOTIFY is answered and followed.
    p.receive(notify_from_bob(
        &tag,
        2,
        "call-1@bob",
        "presence",
        "SIP/2.0 100 Trying",
    ));
    let _ = p.sent_response(489);
    p.receive(notify_from_bob(
        &tag,
        3,
        "call-1@bob",
        "refer",
        "SIP/2.0 180 Ringing",
    ));
    let _ = p.sent_response(200);
    assert_eq!(p.events()[0].detail.as_deref(), Some("SIP/2.0 180 Ringing"));
    p.receive(notify_from_bob(
        &tag,
        4,
        "call-1@bob",
        "refer",
        "SIP/2.0 200 OK",
    ));
    let sent = p.take_sent();
    assert!(sent.iter().any(|m| m.status() == Some(200)));
    let bye = sent
        .iter()
        .find(|m| m.method() == Some(&Method::Bye))
        .unwrap();
    p.receive(reply(bye, 200, Some("b1")).build().unwrap());
    let events = p.events();
    assert!(events.iter().any(|e| e.name == "transferred"));
    assert!(
        events
            .iter()
            .any(|e| e.name == "ended" && e.detail.as_deref() == Some("transferred"))
    );
    assert_eq!(p.core.finished(), Some(exit::OK));
}

#[test]
fn a_failed_transfer_is_reported_and_the_call_stays() {
    let (mut p, tag) = transferring_callee();
    p.advance(Duration::from_secs(1));
    let refer = p.sent_request(Method::Refer);
    p.receive(reply(&refer, 202, Some("b1")).build().unwrap());
    p.receive(notify_from_bob(
        &tag,
        2,
        "call-1@bob",
        "refer",
        "SIP/2.0 486 Busy Here",
    ));
    let sent = p.take_sent();
    assert!(sent.iter().all(|m| m.method() != Some(&Method::Bye)));
    let events = p.events();
    let failed = events.iter().find(|e| e.name == "transfer failed").unwrap();
    assert_eq!(failed.detail.as_deref(), Some("SIP/2.0 486 Busy Here"));
    assert_eq!(p.core.calls(), 1);
    // A refused REFER is a failure too.
    p.core.transfer(
        *p.core.calls.keys().next().unwrap(),
        "sip:dave@example.test",
        p.now,
    );
    p.drain();
    let refer = p.sent_request(Method::Refer);
    p.receive(reply(&refer, 403, Some("b1")).build().unwrap());
    assert!(p.events().iter().any(
        |e| e.name == "transfer failed" && e.detail.as_deref() == Some("SIP/2.0 403 Forbidden")
    ));
    assert_eq!(p.core.calls(), 1);
}

#[test]
fn an_invite_with_replaces_takes_over_the_call_it_names() {
    let (mut p, _, tag) = answered_callee(None);
    p.events();
    let replacing = |seq: u32, replaces: String| {
        bob_request(Method::Invite, None, seq, "call-2@alice")
            .header("Replaces", replaces)
            .body("application/sdp", sdp(42000, "sendrecv"))
            .build()
            .unwrap()
    };
    // No such dialog: 481; an early-only replacement of a confirmed call: 486. (CSeqs
    // apart from the first INVITE's: the harness derives Via branches from them.)
    p.receive(replacing(11, "call-1@bob;to-tag=nope;from-tag=b1".into()));
    let _ = p.sent_response(481);
    p.receive(replacing(
        12,
        format!("call-1@bob;to-tag={tag};from-tag=b1;early-only"),
    ));
    let _ = p.sent_response(486);
    assert_eq!(p.core.calls(), 1);

    // The right dialog: answered at once (the phone has room for one call, yet this
    // one is taken), and the old call hung up.
    p.receive(replacing(
        13,
        format!("call-1@bob;to-tag={tag};from-tag=b1"),
    ));
    let sent = p.take_sent();
    assert!(sent.iter().all(|m| m.status() != Some(180)));
    let ok = sent.iter().find(|m| m.status() == Some(200)).unwrap();
    assert_eq!(ok.call_id().unwrap(), "call-2@alice");
    let bye = sent
        .iter()
        .find(|m| m.method() == Some(&Method::Bye))
        .unwrap();
    assert_eq!(bye.call_id().unwrap(), "call-1@bob");
    p.receive(reply(bye, 200, Some("b1")).build().unwrap());
    let events = p.events();
    assert!(events.iter().any(|e| e.name == "replacing"));
    assert!(
        events
            .iter()
            .any(|e| e.name == "ended" && e.detail.as_deref() == Some("replaced"))
    );
    assert_eq!(p.core.calls(), 1);
    assert_eq!(p.core.finished(), None);
}

#[test]
fn enter_transfers_the_call_up_to_the_transfer_target() {
    let mut p = Phone::new(false, Task::Answer(answer_task()));
    p.core.set_transfer_script(TransferScript {
        to: Some("sip:carol@example.test".into()),
        ..TransferScript::default()
    });
    let invite = bob_request(Method::Invite, None, 1, "call-1@bob")
        .body("application/sdp", sdp(41000, "sendrecv"))
        .build()
        .unwrap();
    p.receive(invite);
    let _ = p.sent_response(200);
    // No --transfer-after: nothing happens by itself.
    p.advance(Duration::from_secs(10));
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Refer))
    );
    p.core.on_enter(p.now);
    p.drain();
    let refer = p.sent_request(Method::Refer);
    assert_eq!(
        refer.get(HeaderName::ReferTo),
        Some("<sip:carol@example.test>")
    );
}
