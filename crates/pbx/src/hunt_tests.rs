//! The hunt engine on a fake clock: each strategy, each forwarding, loops, fallbacks,
//! and a property test that whatever the legs do, every leg ends once and so does the
//! hunt.
#![allow(clippy::unwrap_used)]

use crate::hunt::*;
use crate::plan::Strategy as GroupStrategy;
use crate::plan::{Action, CallerClass, CallerId, Decision, RingGroup};
use proptest::prelude::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Users (name, extension, forwarding), groups, and a plan of its own for numbers:
/// `9…` goes out through carrier1, `8NAME` rings the group NAME, `vmX` is X's
/// voicemail, anything else is refused 404.
#[derive(Debug, Default)]
struct Dir {
    users: Vec<(String, Option<String>, Forwarding)>,
    groups: Vec<RingGroup>,
    rotation: Rotation,
}

impl Dir {
    fn user(mut self, name: &str, ext: Option<&str>, forwarding: Forwarding) -> Dir {
        self.users
            .push((name.into(), ext.map(str::to_owned), forwarding));
        self
    }

    fn group(
        mut self,
        name: &str,
        strategy: GroupStrategy,
        members: &[&str],
        fallback: Option<Action>,
    ) -> Dir {
        self.groups.push(RingGroup {
            name: name.into(),
            line: 0,
            strategy,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            ring_seconds: 10,
            fallback,
        });
        self
    }
}

impl Directory for Dir {
    fn user(&self, who: &str) -> Option<HuntUser> {
        let found = self
            .users
            .iter()
            .find(|(_, ext, _)| ext.as_deref() == Some(who))
            .or_else(|| self.users.iter().find(|(name, _, _)| name == who))?;
        Some(HuntUser {
            name: found.0.clone(),
            forwarding: found.2.clone(),
        })
    }

    fn group(&self, name: &str) -> Option<RingGroup> {
        self.groups.iter().find(|g| g.name == name).cloned()
    }

    fn route(&self, number: &str, dialled_by: &str) -> Decision {
        let action = if number.starts_with('9') {
            Action::Trunk {
                trunks: vec!["carrier1".into()],
            }
        } else if let Some(group) = number.strip_prefix('8') {
            Action::RingGroup {
                group: group.into(),
            }
        } else if let Some(mailbox) = number.strip_prefix("vm") {
            Action::Voicemail {
                mailbox: mailbox.into(),
            }
        } else {
            Action::Reject {
                code: 404,
                reason: None,
            }
        };
        decision(number, action, dialled_by)
    }

    fn last_answered(&self, group: &str) -> Option<String> {
        self.rotation.last_answered(group).map(str::to_owned)
    }
}

fn decision(number: &str, action: Action, caller: &str) -> Decision {
    Decision {
        dialled: number.into(),
        caller_class: CallerClass::International,
        rule: None,
        number: number.into(),
        action,
        caller_id: CallerId {
            number: caller.into(),
            name: caller.into(),
        },
        pbx: false,
    }
}

fn extension(target: &str) -> Decision {
    decision(
        target,
        Action::Extension {
            target: target.into(),
        },
        "caller",
    )
}

fn group_call(group: &str) -> Decision {
    decision(
        "0",
        Action::RingGroup {
            group: group.into(),
        },
        "caller",
    )
}

fn drain(h: &mut Hunt) -> Vec<Command> {
    std::iter::from_fn(|| h.poll_command()).collect()
}

fn rings(commands: &[Command]) -> Vec<(LegId, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Ring {
                leg,
                to: Ring::User { name },
                ..
            } => Some((*leg, name.clone())),
            _ => None,
        })
        .collect()
}

fn secs(t: Instant, s: u64) -> Instant {
    t + Duration::from_secs(s)
}

fn plain() -> Forwarding {
    Forwarding::default()
}

fn three() -> Dir {
    Dir::default()
        .user("alice", Some("201"), plain())
        .user("bob", Some("202"), plain())
        .user("carol", None, plain())
}

#[test]
fn simultaneous_first_answer_wins_and_the_others_are_cancelled() {
    let dir = three().group(
        "reception",
        GroupStrategy::Simultaneous,
        &["201", "bob", "carol", "nobody", "alice"],
        None,
    );
    let t = Instant::now();
    let mut h = Hunt::new(group_call("reception"), t, &dir);
    let c = drain(&mut h);
    let r = rings(&c);
    let names: Vec<&str> = r.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        ["alice", "bob", "carol"],
        "unknown skipped, alice once"
    );
    assert!(c.iter().all(|c| matches!(
        c,
        Command::Ring { why: Why::Member { group }, .. } if group == "reception"
    )));
    assert_eq!(h.poll_timeout(), Some(secs(t, 10)));
    let (alice, bob, carol) = (r[0].0, r[1].0, r[2].0);
    h.on_leg(secs(t, 1), alice, LegOutcome::Busy, &dir);
    assert!(drain(&mut h).is_empty());
    h.on_leg(secs(t, 2), carol, LegOutcome::Answered, &dir);
    assert_eq!(
        drain(&mut h),
        [
            Command::Cancel { leg: bob },
            Command::Connect {
                leg: carol,
                group: Some(GroupAnswer {
                    group: "reception".into(),
                    member: "carol".into()
                })
            }
        ]
    );
    assert_eq!(h.end(), Some(&HuntEnd::Connected(carol)));
    // bob's 200 crossed the CANCEL: the engine has moved on.
    h.on_leg(secs(t, 2), bob, LegOutcome::Answered, &dir);
    h.handle_timeout(secs(t, 10), &dir);
    assert!(drain(&mut h).is_empty());
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn simultaneous_out_of_time_runs_the_fallback_and_all_busy_is_486() {
    let dir = three()
        .group(
            "sales",
            GroupStrategy::Simultaneous,
            &["alice", "bob"],
            Some(Action::Voicemail {
                mailbox: "200".into(),
            }),
        )
        .group("busy", GroupStrategy::Simultaneous, &["alice", "bob"], None);
    let t = Instant::now();
    let mut h = Hunt::new(group_call("sales"), t, &dir);
    let r = rings(&drain(&mut h));
    h.handle_timeout(secs(t, 9), &dir);
    assert!(drain(&mut h).is_empty(), "not due yet");
    h.handle_timeout(secs(t, 10), &dir);
    assert_eq!(
        drain(&mut h),
        [
            Command::Cancel { leg: r[0].0 },
            Command::Cancel { leg: r[1].0 },
            Command::Divert {
                action: Action::Voicemail {
                    mailbox: "200".into()
                },
                why: Why::Fallback {
                    group: "sales".into()
                }
            }
        ]
    );
    let mut h = Hunt::new(group_call("busy"), t, &dir);
    let r = rings(&drain(&mut h));
    h.on_leg(t, r[0].0, LegOutcome::Busy, &dir);
    h.on_leg(t, r[1].0, LegOutcome::Busy, &dir);
    assert!(matches!(
        drain(&mut h).as_slice(),
        [Command::GiveUp { code: 486, .. }]
    ));
    let mut h = Hunt::new(group_call("busy"), t, &dir);
    let r = rings(&drain(&mut h));
    h.on_leg(t, r[0].0, LegOutcome::Busy, &dir);
    h.on_leg(t, r[1].0, LegOutcome::Unreachable, &dir);
    assert!(matches!(
        drain(&mut h).as_slice(),
        [Command::GiveUp { code: 480, .. }]
    ));
}

#[test]
fn sequential_rings_each_member_in_turn_then_the_fallback_group() {
    let dir = three()
        .group(
            "first",
            GroupStrategy::Sequential,
            &["alice", "bob"],
            Some(Action::RingGroup {
                group: "second".into(),
            }),
        )
        .group("second", GroupStrategy::Sequential, &["carol"], None);
    let t = Instant::now();
    let mut h = Hunt::new(group_call("first"), t, &dir);
    let r = rings(&drain(&mut h));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, "alice");
    // alice does not answer in time: cancelled, bob rings.
    h.handle_timeout(secs(t, 10), &dir);
    let c = drain(&mut h);
    assert_eq!(c[0], Command::Cancel { leg: r[0].0 });
    let bob = rings(&c);
    assert_eq!(bob[0].1, "bob");
    assert_eq!(h.poll_timeout(), Some(secs(t, 20)));
    // bob is busy: at once the fallback group's carol, with her own time.
    h.on_leg(secs(t, 12), bob[0].0, LegOutcome::Busy, &dir);
    let c = drain(&mut h);
    assert!(
        matches!(&c[..], [Command::Ring { to: Ring::User { name }, why: Why::Member { group }, .. }] if name == "carol" && group == "second"),
        "{c:?}"
    );
    assert_eq!(h.poll_timeout(), Some(secs(t, 22)));
    h.handle_timeout(secs(t, 22), &dir);
    let c = drain(&mut h);
    assert!(
        matches!(c.last(), Some(Command::GiveUp { code: 480, reason }) if reason == "nobody in ring group second answered"),
        "{c:?}"
    );
    assert!(h.is_finished());
}

#[test]
fn round_robin_starts_after_the_last_to_answer() {
    let mut dir = three().group(
        "support",
        GroupStrategy::RoundRobin,
        &["201", "202", "carol"],
        None,
    );
    let t = Instant::now();
    let first = |dir: &Dir| {
        let mut h = Hunt::new(group_call("support"), t, dir);
        let c = drain(&mut h);
        (h, rings(&c)[0].clone())
    };
    let (_, (_, name)) = first(&dir);
    assert_eq!(name, "alice", "no rotation yet: the first member");
    // bob (202) answers a call: the next starts with carol, then wraps to alice.
    let (mut h, (leg, _)) = first(&dir);
    h.handle_timeout(secs(t, 10), &dir);
    let bob = rings(&drain(&mut h))[0].0;
    h.on_leg(secs(t, 11), bob, LegOutcome::Answered, &dir);
    let c = drain(&mut h);
    let Some(Command::Connect {
        group: Some(answer),
        ..
    }) = c.last()
    else {
        panic!("{c:?}")
    };
    assert_eq!(answer.member, "202");
    assert_ne!(leg, bob);
    dir.rotation.record(answer);
    assert_eq!(first(&dir).1.1, "carol");
    dir.rotation.record(&GroupAnswer {
        group: "support".into(),
        member: "carol".into(),
    });
    assert_eq!(first(&dir).1.1, "alice");
}

#[test]
fn forwarding_busy_no_answer_unreachable_and_always() {
    let dir = Dir::default()
        .user(
            "alice",
            Some("201"),
            Forwarding {
                busy: Some("202".into()),
                no_answer: Some("bob".into()),
                no_answer_secs: 15,
                unreachable: Some("90612345678".into()),
                ..plain()
            },
        )
        .user("bob", Some("202"), plain())
        .user(
            "away",
            None,
            Forwarding {
                always: Some("vm200".into()),
                ..plain()
            },
        );
    let t = Instant::now();
    let start = || {
        let mut h = Hunt::new(extension("201"), t, &dir);
        let leg = rings(&drain(&mut h))[0].0;
        (h, leg)
    };
    let forwarded = |kind| Why::Forwarded {
        by: "alice".into(),
        kind,
    };
    // Busy: bob rings, forwarded by alice.
    let (mut h, leg) = start();
    assert_eq!(h.poll_timeout(), Some(secs(t, 15)));
    h.on_leg(t, leg, LegOutcome::from_status(486), &dir);
    let c = drain(&mut h);
    assert_eq!(
        c,
        [Command::Ring {
            leg: LegId(2),
            to: Ring::User { name: "bob".into() },
            why: forwarded(ForwardKind::Busy)
        }]
    );
    assert_eq!(h.poll_timeout(), None, "bob has no no-answer timer");
    // No answer in 15 s: cancelled, then bob.
    let (mut h, leg) = start();
    h.handle_timeout(secs(t, 15), &dir);
    let c = drain(&mut h);
    assert_eq!(c[0], Command::Cancel { leg });
    assert!(matches!(&c[1], Command::Ring { why, .. } if *why == forwarded(ForwardKind::NoAnswer)));
    // Unreachable: out through the trunk.
    let (mut h, leg) = start();
    h.on_leg(t, leg, LegOutcome::from_status(480), &dir);
    let c = drain(&mut h);
    assert_eq!(
        c,
        [Command::Ring {
            leg: LegId(2),
            to: Ring::Number {
                number: "90612345678".into(),
                trunks: vec!["carrier1".into()],
                caller_id: CallerId {
                    number: "alice".into(),
                    name: "alice".into()
                }
            },
            why: forwarded(ForwardKind::Unreachable)
        }]
    );
    h.on_leg(t, LegId(2), LegOutcome::Busy, &dir);
    assert!(matches!(
        drain(&mut h).as_slice(),
        [Command::GiveUp { code: 486, .. }]
    ));
    // Declined: no forwarding for that, the caller gets the code.
    let (mut h, leg) = start();
    h.on_leg(t, leg, LegOutcome::from_status(603), &dir);
    assert!(matches!(
        drain(&mut h).as_slice(),
        [Command::GiveUp { code: 603, .. }]
    ));
    // Always: no ring at all, straight to voicemail.
    let mut h = Hunt::new(extension("away"), t, &dir);
    assert_eq!(
        drain(&mut h),
        [Command::Divert {
            action: Action::Voicemail {
                mailbox: "200".into()
            },
            why: Why::Forwarded {
                by: "away".into(),
                kind: ForwardKind::Always
            }
        }]
    );
    assert!(h.is_finished());
}

#[test]
fn without_forwarding_the_caller_gets_the_failure() {
    let dir = Dir::default().user("bob", Some("202"), plain()).user(
        "gone",
        None,
        Forwarding {
            busy: Some("nobody".into()),
            always: None,
            ..plain()
        },
    );
    let t = Instant::now();
    for (outcome, code) in [
        (LegOutcome::Busy, 486),
        (LegOutcome::NoAnswer, 480),
        (LegOutcome::Unreachable, 480),
        (LegOutcome::Rejected(603), 603),
    ] {
        let mut h = Hunt::new(extension("bob"), t, &dir);
        let leg = rings(&drain(&mut h))[0].0;
        h.on_leg(t, leg, outcome, &dir);
        let c = drain(&mut h);
        assert!(
            matches!(c.as_slice(), [Command::GiveUp { code: c, .. }] if *c == code),
            "{outcome:?}: {c:?}"
        );
    }
    // A forward target that leads nowhere: the plan refuses "nobody" with 404.
    let mut h = Hunt::new(extension("gone"), t, &dir);
    let leg = rings(&drain(&mut h))[0].0;
    h.on_leg(t, leg, LegOutcome::Busy, &dir);
    assert!(matches!(
        drain(&mut h).as_slice(),
        [Command::GiveUp { code: 404, .. }]
    ));
    // Calling nobody.
    let mut h = Hunt::new(extension("299"), t, &dir);
    assert_eq!(
        drain(&mut h),
        [Command::GiveUp {
            code: 404,
            reason: "no user has extension or name 299".into()
        }]
    );
}

#[test]
fn loops_and_long_chains_end_the_call() {
    let fw = |always: Option<&str>, no_answer: Option<&str>| Forwarding {
        always: always.map(str::to_owned),
        no_answer: no_answer.map(str::to_owned),
        ..plain()
    };
    let dir = Dir::default()
        .user("alice", Some("201"), fw(Some("bob"), None))
        .user("bob", Some("202"), fw(Some("201"), None))
        .user("carol", None, fw(None, Some("dave")))
        .user("dave", None, fw(None, Some("carol")))
        .user("eve", None, fw(Some("8g"), None))
        .group(
            "g",
            GroupStrategy::Simultaneous,
            &["carol"],
            Some(Action::Extension {
                target: "eve".into(),
            }),
        );
    let t = Instant::now();
    let mut h = Hunt::new(extension("alice"), t, &dir);
    assert_eq!(
        drain(&mut h),
        [Command::GiveUp {
            code: 482,
            reason: "forwarding loop: user alice -> user bob -> user alice".into()
        }]
    );
    // carol and dave forward to each other on no answer: carol rings, dave rings, and
    // then carol would again: the call ends.
    let mut h = Hunt::new(extension("carol"), t, &dir);
    let carol = rings(&drain(&mut h))[0].0;
    h.handle_timeout(secs(t, 20), &dir);
    let dave = rings(&drain(&mut h))[0].0;
    assert_ne!(carol, dave);
    h.handle_timeout(secs(t, 40), &dir);
    let c = drain(&mut h);
    assert_eq!(c[0], Command::Cancel { leg: dave });
    assert!(matches!(&c[1], Command::GiveUp { code: 482, .. }), "{c:?}");
    assert_eq!(c.len(), 2);
    // A group whose fallback forwards back to the group.
    let mut h = Hunt::new(group_call("g"), t, &dir);
    let leg = rings(&drain(&mut h))[0].0;
    h.on_leg(t, leg, LegOutcome::Busy, &dir);
    assert!(
        matches!(drain(&mut h).as_slice(), [Command::GiveUp { code: 482, reason }] if reason == "forwarding loop: group g -> user eve -> group g")
    );
    // A chain of ten unconditional forwards, no loop: 483 after MAX_FORWARDS.
    let mut dir = Dir::default();
    for i in 0..10 {
        dir = dir.user(
            &format!("u{i}"),
            None,
            fw(Some(&format!("u{}", i + 1)), None),
        );
    }
    let mut h = Hunt::new(extension("u0"), t, &dir);
    let c = drain(&mut h);
    assert!(
        matches!(c.as_slice(), [Command::GiveUp { code: 483, .. }]),
        "{c:?}"
    );
}

#[test]
fn the_caller_hanging_up_cancels_every_leg() {
    let dir = three().group("all", GroupStrategy::Simultaneous, &["alice", "bob"], None);
    let t = Instant::now();
    let mut h = Hunt::new(group_call("all"), t, &dir);
    let r = rings(&drain(&mut h));
    h.cancel();
    assert_eq!(
        drain(&mut h),
        [
            Command::Cancel { leg: r[0].0 },
            Command::Cancel { leg: r[1].0 }
        ]
    );
    assert_eq!(h.end(), Some(&HuntEnd::CallerCancelled));
    assert_eq!(h.poll_timeout(), None);
    h.cancel();
    h.on_leg(t, r[0].0, LegOutcome::Answered, &dir);
    assert!(drain(&mut h).is_empty());
}

#[test]
fn other_actions_ring_a_trunk_divert_or_reject() {
    let dir = Dir::default();
    let t = Instant::now();
    let mut h = Hunt::new(
        decision(
            "0044207",
            Action::Trunk {
                trunks: vec!["c1".into(), "c2".into()],
            },
            "alice",
        ),
        t,
        &dir,
    );
    let c = drain(&mut h);
    assert!(
        matches!(&c[..], [Command::Ring { leg, to: Ring::Number { number, .. }, why: Why::Called }] if number == "0044207" && *leg == LegId(1))
    );
    h.on_leg(t, LegId(1), LegOutcome::Answered, &dir);
    assert_eq!(
        drain(&mut h),
        [Command::Connect {
            leg: LegId(1),
            group: None
        }]
    );
    let mut h = Hunt::new(
        decision(
            "1",
            Action::Reject {
                code: 403,
                reason: None,
            },
            "a",
        ),
        t,
        &dir,
    );
    assert_eq!(
        drain(&mut h),
        [Command::GiveUp {
            code: 403,
            reason: "Forbidden".into()
        }]
    );
    let mut h = Hunt::new(
        decision(
            "*500",
            Action::Ivr {
                menu: "main".into(),
            },
            "a",
        ),
        t,
        &dir,
    );
    assert!(matches!(
        drain(&mut h).as_slice(),
        [Command::Divert {
            why: Why::Called,
            ..
        }]
    ));
}

#[test]
fn forwarding_is_described_for_people() {
    assert_eq!(plain().describe(), None);
    let f = Forwarding {
        busy: Some("202".into()),
        no_answer: Some("0612".into()),
        no_answer_secs: 25,
        ..plain()
    };
    assert_eq!(
        f.describe().unwrap(),
        "on busy to 202, on no answer after 25 s to 0612"
    );
    assert_eq!(LegOutcome::from_status(200), LegOutcome::Answered);
    assert_eq!(LegOutcome::from_status(600), LegOutcome::Busy);
    assert_eq!(LegOutcome::from_status(503), LegOutcome::Unreachable);
    assert_eq!(LegOutcome::from_status(404), LegOutcome::Rejected(404));
}

// ---- The property test ----

/// A directory drawn at random: five users whose forwarding points anywhere (each
/// other, groups, outside numbers, voicemail, nowhere), two groups of any strategy
/// whose members and fallbacks are drawn too.
fn arb_dir() -> impl Strategy<Value = (Dir, Decision)> {
    let target = prop_oneof![
        (0..5usize).prop_map(|i| format!("u{i}")),
        (0..5usize).prop_map(|i| format!("20{i}")),
        (0..2usize).prop_map(|i| format!("8g{i}")),
        Just("9000".to_owned()),
        Just("vm1".to_owned()),
        Just("ghost".to_owned()),
    ];
    let forwarding = (
        proptest::option::weighted(0.2, target.clone()),
        proptest::option::weighted(0.4, target.clone()),
        proptest::option::weighted(0.4, target.clone()),
        1..40u32,
        proptest::option::weighted(0.4, target.clone()),
    )
        .prop_map(
            |(always, busy, no_answer, no_answer_secs, unreachable)| Forwarding {
                always,
                busy,
                no_answer,
                no_answer_secs,
                unreachable,
            },
        );
    let strategy = prop_oneof![
        Just(GroupStrategy::Simultaneous),
        Just(GroupStrategy::Sequential),
        Just(GroupStrategy::RoundRobin),
    ];
    let fallback = proptest::option::of(prop_oneof![
        (0..6usize).prop_map(|i| Action::Extension {
            target: format!("u{i}")
        }),
        (0..2usize).prop_map(|i| Action::RingGroup {
            group: format!("g{i}")
        }),
        Just(Action::Voicemail {
            mailbox: "1".into()
        }),
        Just(Action::Reject {
            code: 486,
            reason: None
        }),
    ]);
    let member = prop_oneof![
        (0..6usize).prop_map(|i| format!("u{i}")),
        (0..5usize).prop_map(|i| format!("20{i}"))
    ];
    let group = (
        strategy,
        proptest::collection::vec(member, 0..5),
        1..30u32,
        fallback,
    );
    let start = prop_oneof![
        (0..6usize).prop_map(|i| Action::Extension {
            target: format!("u{i}")
        }),
        (0..2usize).prop_map(|i| Action::RingGroup {
            group: format!("g{i}")
        }),
        Just(Action::Trunk {
            trunks: vec!["t".into()]
        }),
    ];
    (
        proptest::collection::vec(forwarding, 5),
        proptest::collection::vec(group, 2),
        proptest::option::of(0..6usize),
        start,
    )
        .prop_map(|(forwardings, groups, last, start)| {
            let mut dir = Dir::default();
            for (i, f) in forwardings.into_iter().enumerate() {
                dir = dir.user(&format!("u{i}"), Some(&format!("20{i}")), f);
            }
            for (i, (strategy, members, ring_seconds, fallback)) in groups.into_iter().enumerate() {
                let name = format!("g{i}");
                if let Some(last) = last {
                    dir.rotation.record(&GroupAnswer {
                        group: name.clone(),
                        member: format!("u{last}"),
                    });
                }
                dir.groups.push(RingGroup {
                    name,
                    line: 0,
                    strategy,
                    members,
                    ring_seconds,
                    fallback,
                });
            }
            (dir, decision("x", start, "caller"))
        })
}

/// What the test does next to the hunt.
#[derive(Debug, Clone)]
enum Step {
    /// The leg at this index of those ringing ends so.
    Leg(usize, LegOutcome),
    /// A leg already over (or never started) reports something: ignored.
    Late(u32, LegOutcome),
    /// Time moves on to the timer, or by these seconds when none is armed.
    Time(u64),
    /// The caller hangs up.
    Hangup,
}

fn arb_outcome() -> impl Strategy<Value = LegOutcome> {
    prop_oneof![
        Just(LegOutcome::Answered),
        Just(LegOutcome::Busy),
        Just(LegOutcome::NoAnswer),
        Just(LegOutcome::Unreachable),
        Just(LegOutcome::Rejected(603)),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..8usize, arb_outcome()).prop_map(|(i, o)| Step::Leg(i, o)),
        2 => (0..12u32, arb_outcome()).prop_map(|(i, o)| Step::Late(i, o)),
        4 => (0..30u64).prop_map(Step::Time),
        1 => Just(Step::Hangup),
    ]
}

/// The legs as the B2BUA sees them, checked against every command.
#[derive(Default)]
struct Legs {
    started: Vec<LegId>,
    /// Ended by their own outcome, a Cancel or a Connect: each once.
    ended: HashSet<LegId>,
    finals: usize,
}

impl Legs {
    fn ringing(&self) -> Vec<LegId> {
        self.started
            .iter()
            .copied()
            .filter(|l| !self.ended.contains(l))
            .collect()
    }

    fn take(&mut self, h: &mut Hunt) -> Result<(), TestCaseError> {
        while let Some(c) = h.poll_command() {
            match c {
                Command::Ring { leg, .. } => {
                    prop_assert_eq!(self.finals, 0, "a ring after the end");
                    prop_assert!(!self.started.contains(&leg), "{} reused", leg);
                    self.started.push(leg);
                }
                Command::Cancel { leg } | Command::Connect { leg, .. } => {
                    prop_assert!(self.started.contains(&leg), "{} never rang", leg);
                    prop_assert!(self.ended.insert(leg), "{} ended twice", leg);
                    if matches!(c, Command::Connect { .. }) {
                        self.finals += 1;
                    }
                }
                Command::Divert { .. } | Command::GiveUp { .. } => self.finals += 1,
            }
        }
        prop_assert!(self.finals <= 1, "more than one final command");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the legs answer, and whenever time moves or the caller hangs up: every
    /// leg started is cancelled, connected or reported ended, once; the first answer
    /// on a ringing leg is the one connected; and the hunt ends, with one final command
    /// (none when the caller hung up) and nothing left ringing.
    #[test]
    fn every_leg_ends_once_and_the_hunt_ends(
        (dir, start) in arb_dir(),
        steps in proptest::collection::vec(arb_step(), 0..40),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut h = Hunt::new(start, now, &dir);
        let mut legs = Legs::default();
        legs.take(&mut h)?;
        let drive = |h: &mut Hunt, legs: &mut Legs, now: &mut Instant, step: Step| -> Result<(), TestCaseError> {
            match step {
                Step::Leg(i, outcome) => {
                    let ringing = legs.ringing();
                    if ringing.is_empty() {
                        return Ok(());
                    }
                    let leg = ringing[i % ringing.len()];
                    // An answered leg ends with the engine's Connect; any other outcome
                    // ends it here.
                    if outcome != LegOutcome::Answered {
                        legs.ended.insert(leg);
                    }
                    let was_finished = h.is_finished();
                    h.on_leg(*now, leg, outcome, &dir);
                    legs.take(h)?;
                    if outcome == LegOutcome::Answered && !was_finished {
                        prop_assert_eq!(h.end(), Some(&HuntEnd::Connected(leg)));
                    }
                }
                Step::Late(n, outcome) => {
                    let leg = LegId(n);
                    if legs.ringing().contains(&leg) {
                        return Ok(());
                    }
                    h.on_leg(*now, leg, outcome, &dir);
                    prop_assert!(h.poll_command().is_none(), "a late outcome did something");
                }
                Step::Time(s) => {
                    *now = h.poll_timeout().unwrap_or(*now + Duration::from_secs(s)).max(*now);
                    h.handle_timeout(*now, &dir);
                    legs.take(h)?;
                }
                Step::Hangup => {
                    let was_finished = h.is_finished();
                    h.cancel();
                    legs.take(h)?;
                    if !was_finished {
                        prop_assert_eq!(h.end(), Some(&HuntEnd::CallerCancelled));
                    }
                }
            }
            Ok(())
        };
        for step in steps {
            drive(&mut h, &mut legs, &mut now, step)?;
        }
        // Then nobody answers: timers fire, ringing legs end unanswered. The hunt must
        // end within a bounded number of turns.
        for _ in 0..200 {
            if h.is_finished() {
                break;
            }
            let step = if h.poll_timeout().is_some() {
                Step::Time(0)
            } else {
                Step::Leg(0, LegOutcome::NoAnswer)
            };
            drive(&mut h, &mut legs, &mut now, step)?;
        }
        prop_assert!(h.is_finished(), "the hunt did not end: {:?}", h);
        prop_assert!(legs.ringing().is_empty(), "legs left ringing: {:?}", legs.ringing());
        prop_assert_eq!(h.live_legs().count(), 0);
        prop_assert_eq!(h.poll_timeout(), None);
        let expected_finals = usize::from(h.end() != Some(&HuntEnd::CallerCancelled));
        prop_assert_eq!(legs.finals, expected_finals);
        prop_assert!(now <= t0 + Duration::from_secs(200 * 40 + 40 * 30));
    }
}
