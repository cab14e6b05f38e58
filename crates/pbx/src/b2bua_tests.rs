//! The call machine on a fake clock: answer, busy, no answer, the caller's CANCEL, BYE
//! from each side, offers relayed both ways and 491 on glare, a ring group where the
//! first answer wins, a sequential group's timeout, forward on no answer, and that
//! every call is finished (nothing left) at its end.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::hunt::{Forwarding, HuntUser};
use crate::plan::{Action, CallerClass, CallerId, RingGroup, Strategy};

#[derive(Default)]
struct Dir {
    users: Vec<(&'static str, &'static str, Forwarding)>,
    groups: Vec<RingGroup>,
}

impl Dir {
    fn with_users() -> Dir {
        Dir {
            users: vec![
                ("alice", "201", Forwarding::default()),
                ("bob", "202", Forwarding::default()),
                ("carol", "203", Forwarding::default()),
            ],
            groups: Vec::new(),
        }
    }

    fn group(mut self, name: &str, strategy: Strategy, members: &[&str], secs: u32) -> Dir {
        self.groups.push(RingGroup {
            name: name.into(),
            line: 0,
            strategy,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            ring_seconds: secs,
            fallback: None,
        });
        self
    }
}

impl Directory for Dir {
    fn user(&self, who: &str) -> Option<HuntUser> {
        let (name, _, forwarding) = self
            .users
            .iter()
            .find(|(name, ext, _)| *ext == who || *name == who)?;
        Some(HuntUser {
            name: (*name).into(),
            forwarding: forwarding.clone(),
        })
    }

    fn group(&self, name: &str) -> Option<RingGroup> {
        self.groups.iter().find(|g| g.name == name).cloned()
    }

    fn route(&self, number: &str, _: &str) -> Decision {
        decision(Action::Extension {
            target: number.into(),
        })
    }
}

fn decision(action: Action) -> Decision {
    Decision {
        dialled: "201".into(),
        caller_class: CallerClass::Internal,
        rule: None,
        number: "201".into(),
        action,
        caller_id: CallerId {
            number: "100".into(),
            name: "caller".into(),
        },
        pbx: true,
    }
}

fn start() -> CallStart {
    CallStart {
        caller: "dave".into(),
        dialled: "201".into(),
        call_id: "a-call@test".into(),
        offer: Some("offer-a".into()),
    }
}

fn call_to(action: Action, dir: &Dir, t0: Instant) -> B2bCall {
    B2bCall::new(start(), decision(action), Duration::from_secs(30), t0, dir)
}

fn ext(target: &str) -> Action {
    Action::Extension {
        target: target.into(),
    }
}

fn commands(call: &mut B2bCall) -> Vec<B2bCommand> {
    std::iter::from_fn(|| call.poll_command()).collect()
}

fn events(call: &mut B2bCall) -> Vec<B2bEvent> {
    std::iter::from_fn(|| call.poll_event())
        .map(|(_, e)| e)
        .collect()
}

fn placed(cmds: &[B2bCommand]) -> Vec<(LegId, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            B2bCommand::Place {
                leg,
                to: Ring::User { name },
                sdp,
                ..
            } => {
                assert_eq!(
                    sdp.as_deref(),
                    Some("offer-a"),
                    "the caller's offer goes on"
                );
                Some((*leg, name.clone()))
            }
            _ => None,
        })
        .collect()
}

fn ended(evs: &[B2bEvent]) -> Option<(Option<Side>, u16)> {
    evs.iter().find_map(|e| match e {
        B2bEvent::Ended { by, status, .. } => Some((*by, *status)),
        _ => None,
    })
}

/// Places a call to alice and has her answer: the connected call and her leg.
fn answered_call(dir: &Dir, t0: Instant) -> (B2bCall, LegId) {
    let mut call = call_to(ext("201"), dir, t0);
    let legs = placed(&commands(&mut call));
    assert_eq!(legs.len(), 1);
    let leg = legs[0].0;
    call.on_progress(leg, 180, None, t0);
    assert_eq!(
        commands(&mut call),
        [B2bCommand::Progress {
            status: 180,
            sdp: None
        }]
    );
    call.on_answered(
        leg,
        Some("answer-b".into()),
        t0 + Duration::from_secs(2),
        dir,
    );
    assert_eq!(
        commands(&mut call),
        [B2bCommand::Answer {
            sdp: Some("answer-b".into())
        }]
    );
    (call, leg)
}

#[test]
fn answer_then_caller_hangs_up() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let (mut call, leg) = answered_call(&dir, t0);
    let evs = events(&mut call);
    assert!(matches!(evs[0], B2bEvent::Started { ref call_id, .. } if call_id == "a-call@test"));
    assert!(evs.contains(&B2bEvent::LegRinging { leg, status: 180 }));
    assert!(evs.contains(&B2bEvent::Answered { leg, group: None }));
    assert!(!call.is_finished());
    call.on_hangup(Side::A, HangupReason::Bye, t0 + Duration::from_secs(10));
    assert_eq!(
        commands(&mut call),
        [B2bCommand::Bye { side: Side::B(leg) }]
    );
    assert_eq!(ended(&events(&mut call)), Some((Some(Side::A), 200)));
    assert!(call.is_finished());
}

#[test]
fn answer_then_callee_hangs_up() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let (mut call, leg) = answered_call(&dir, t0);
    call.on_hangup(
        Side::B(leg),
        HangupReason::Bye,
        t0 + Duration::from_secs(10),
    );
    assert_eq!(commands(&mut call), [B2bCommand::Bye { side: Side::A }]);
    assert_eq!(ended(&events(&mut call)), Some((Some(Side::B(leg)), 200)));
    assert!(call.is_finished());
    // A late BYE from the caller, crossing ours, changes nothing.
    call.on_hangup(Side::A, HangupReason::Bye, t0 + Duration::from_secs(10));
    assert!(commands(&mut call).is_empty());
    assert!(call.is_finished());
}

#[test]
fn busy_is_passed_to_the_caller() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let mut call = call_to(ext("201"), &dir, t0);
    let leg = placed(&commands(&mut call))[0].0;
    call.on_failed(leg, 486, t0, &dir);
    let cmds = commands(&mut call);
    assert!(
        matches!(cmds[..], [B2bCommand::Reject { code: 486, .. }]),
        "{cmds:?}"
    );
    let evs = events(&mut call);
    assert!(evs.contains(&B2bEvent::LegFailed { leg, status: 486 }));
    assert_eq!(ended(&evs), Some((None, 486)));
    assert!(call.is_finished());
}

#[test]
fn no_answer_cancels_after_the_ring_timeout() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let mut call = call_to(ext("201"), &dir, t0);
    let leg = placed(&commands(&mut call))[0].0;
    assert_eq!(call.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    call.handle_timeout(t0 + Duration::from_secs(29), &dir);
    assert!(commands(&mut call).is_empty());
    call.handle_timeout(t0 + Duration::from_secs(30), &dir);
    let cmds = commands(&mut call);
    assert_eq!(cmds[0], B2bCommand::Cancel { leg });
    assert!(
        matches!(cmds[1], B2bCommand::Reject { code: 480, .. }),
        "{cmds:?}"
    );
    // The caller has its answer; the leg is still to end (its 487).
    assert!(!call.is_finished());
    call.on_failed(leg, 487, t0 + Duration::from_secs(30), &dir);
    assert!(call.is_finished());
    assert_eq!(call.poll_timeout(), None);
}

#[test]
fn caller_cancel_cancels_the_legs() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let mut call = call_to(ext("201"), &dir, t0);
    let leg = placed(&commands(&mut call))[0].0;
    call.on_progress(leg, 180, None, t0);
    let _ = commands(&mut call);
    call.on_caller_cancel(t0 + Duration::from_secs(3));
    let cmds = commands(&mut call);
    assert_eq!(cmds[0], B2bCommand::Cancel { leg });
    assert!(
        matches!(cmds[1], B2bCommand::Reject { code: 487, .. }),
        "{cmds:?}"
    );
    assert_eq!(ended(&events(&mut call)), Some((Some(Side::A), 487)));
    // The leg's 2xx crosses the CANCEL: it is hung up.
    call.on_answered(leg, Some("late".into()), t0 + Duration::from_secs(3), &dir);
    assert_eq!(
        commands(&mut call),
        [B2bCommand::Bye { side: Side::B(leg) }]
    );
    assert!(call.is_finished());
}

#[test]
fn hold_and_resume_relayed_both_ways() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let (mut call, leg) = answered_call(&dir, t0);
    // The caller holds: its offer goes to the callee, the answer back.
    call.on_offer(Side::A, "sendonly".into(), OfferMethod::Invite);
    assert_eq!(
        commands(&mut call),
        [B2bCommand::Offer {
            to: Side::B(leg),
            sdp: "sendonly".into(),
            method: OfferMethod::Invite
        }]
    );
    call.on_offer_answered(Side::B(leg), "recvonly".into());
    assert_eq!(
        commands(&mut call),
        [B2bCommand::AnswerOffer {
            to: Side::A,
            sdp: "recvonly".into()
        }]
    );
    // The callee resumes with UPDATE.
    call.on_offer(Side::B(leg), "sendrecv".into(), OfferMethod::Update);
    assert_eq!(
        commands(&mut call),
        [B2bCommand::Offer {
            to: Side::A,
            sdp: "sendrecv".into(),
            method: OfferMethod::Update
        }]
    );
    call.on_offer_answered(Side::A, "sendrecv-a".into());
    assert_eq!(
        commands(&mut call),
        [B2bCommand::AnswerOffer {
            to: Side::B(leg),
            sdp: "sendrecv-a".into()
        }]
    );
}

#[test]
fn glare_is_answered_491() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let (mut call, leg) = answered_call(&dir, t0);
    call.on_offer(Side::A, "hold".into(), OfferMethod::Invite);
    let _ = commands(&mut call);
    // The callee offers while the caller's offer is on its way to it.
    call.on_offer(Side::B(leg), "other".into(), OfferMethod::Invite);
    assert_eq!(
        commands(&mut call),
        [B2bCommand::RefuseOffer {
            to: Side::B(leg),
            status: 491
        }]
    );
    // And the callee answers ours 491 too (its own glare): the caller learns it.
    call.on_offer_refused(Side::B(leg), 491);
    assert_eq!(
        commands(&mut call),
        [B2bCommand::RefuseOffer {
            to: Side::A,
            status: 491
        }]
    );
    // The caller tries again after its wait: relayed.
    call.on_offer(Side::A, "hold".into(), OfferMethod::Invite);
    assert!(matches!(
        commands(&mut call)[..],
        [B2bCommand::Offer { .. }]
    ));
}

#[test]
fn simultaneous_group_first_answer_wins() {
    let dir = Dir::with_users().group("sales", Strategy::Simultaneous, &["201", "202", "203"], 20);
    let t0 = Instant::now();
    let mut call = call_to(
        Action::RingGroup {
            group: "sales".into(),
        },
        &dir,
        t0,
    );
    let legs = placed(&commands(&mut call));
    let names: Vec<&str> = legs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    for (leg, _) in &legs {
        call.on_progress(*leg, 180, None, t0);
    }
    // One 180 reaches the caller.
    assert_eq!(commands(&mut call).len(), 1);
    let bob = legs[1].0;
    call.on_answered(
        bob,
        Some("bob-sdp".into()),
        t0 + Duration::from_secs(4),
        &dir,
    );
    let cmds = commands(&mut call);
    assert!(cmds.contains(&B2bCommand::Cancel { leg: legs[0].0 }));
    assert!(cmds.contains(&B2bCommand::Cancel { leg: legs[2].0 }));
    assert!(cmds.contains(&B2bCommand::Answer {
        sdp: Some("bob-sdp".into())
    }));
    assert_eq!(call.connected_leg(), Some(bob));
    let evs = events(&mut call);
    assert!(evs.contains(&B2bEvent::Answered {
        leg: bob,
        group: Some(crate::hunt::GroupAnswer {
            group: "sales".into(),
            member: "202".into()
        })
    }));
    call.on_failed(legs[0].0, 487, t0 + Duration::from_secs(4), &dir);
    call.on_failed(legs[2].0, 487, t0 + Duration::from_secs(4), &dir);
    assert_eq!(call.live_legs(), 1);
    call.on_hangup(Side::B(bob), HangupReason::Bye, t0 + Duration::from_secs(9));
    let _ = commands(&mut call);
    assert!(call.is_finished());
}

#[test]
fn sequential_group_moves_on_after_its_time() {
    let dir = Dir::with_users().group("desk", Strategy::Sequential, &["201", "202"], 5);
    let t0 = Instant::now();
    let mut call = call_to(
        Action::RingGroup {
            group: "desk".into(),
        },
        &dir,
        t0,
    );
    let first = placed(&commands(&mut call));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, "alice");
    assert_eq!(call.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    call.handle_timeout(t0 + Duration::from_secs(5), &dir);
    let cmds = commands(&mut call);
    assert_eq!(cmds[0], B2bCommand::Cancel { leg: first[0].0 });
    let second = placed(&cmds);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].1, "bob");
    // Alice's 487 arrives after bob started ringing: nothing changes.
    call.on_failed(first[0].0, 487, t0 + Duration::from_secs(5), &dir);
    assert!(commands(&mut call).is_empty());
    call.on_answered(second[0].0, None, t0 + Duration::from_secs(7), &dir);
    assert_eq!(commands(&mut call), [B2bCommand::Answer { sdp: None }]);
    call.on_hangup(
        Side::A,
        HangupReason::SessionExpired,
        t0 + Duration::from_secs(60),
    );
    let _ = commands(&mut call);
    assert!(call.is_finished());
}

#[test]
fn forward_on_no_answer() {
    let mut dir = Dir::with_users();
    dir.users[0].2 = Forwarding {
        no_answer: Some("203".into()),
        no_answer_secs: 8,
        ..Forwarding::default()
    };
    let t0 = Instant::now();
    let mut call = call_to(ext("201"), &dir, t0);
    let alice = placed(&commands(&mut call))[0].0;
    assert_eq!(call.poll_timeout(), Some(t0 + Duration::from_secs(8)));
    call.handle_timeout(t0 + Duration::from_secs(8), &dir);
    let cmds = commands(&mut call);
    assert_eq!(cmds[0], B2bCommand::Cancel { leg: alice });
    let carol = placed(&cmds);
    assert_eq!(carol[0].1, "carol");
    call.on_failed(alice, 487, t0 + Duration::from_secs(8), &dir);
    call.on_answered(
        carol[0].0,
        Some("c".into()),
        t0 + Duration::from_secs(9),
        &dir,
    );
    assert_eq!(
        commands(&mut call),
        [B2bCommand::Answer {
            sdp: Some("c".into())
        }]
    );
    assert_eq!(call.connected_leg(), Some(carol[0].0));
}

#[test]
fn early_media_from_one_leg_only() {
    let dir = Dir::with_users().group("g", Strategy::Simultaneous, &["201", "202"], 20);
    let t0 = Instant::now();
    let mut call = call_to(Action::RingGroup { group: "g".into() }, &dir, t0);
    let legs = placed(&commands(&mut call));
    call.on_progress(legs[0].0, 183, Some("early-1".into()), t0);
    call.on_progress(legs[1].0, 183, Some("early-2".into()), t0);
    assert_eq!(
        commands(&mut call),
        [B2bCommand::Progress {
            status: 183,
            sdp: Some("early-1".into())
        }]
    );
}

#[test]
fn unknown_extension_is_rejected_at_once() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let mut call = call_to(ext("299"), &dir, t0);
    let cmds = commands(&mut call);
    assert!(
        matches!(cmds[..], [B2bCommand::Reject { code: 404, .. }]),
        "{cmds:?}"
    );
    assert!(call.is_finished());
}

#[test]
fn offers_before_the_answer_are_refused() {
    let dir = Dir::with_users();
    let t0 = Instant::now();
    let mut call = call_to(ext("201"), &dir, t0);
    let leg = placed(&commands(&mut call))[0].0;
    call.on_offer(Side::B(leg), "x".into(), OfferMethod::Update);
    assert_eq!(
        commands(&mut call),
        [B2bCommand::RefuseOffer {
            to: Side::B(leg),
            status: 491
        }]
    );
}
