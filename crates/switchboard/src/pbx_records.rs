//! Call detail records for the calls the B2BUA carries: the [`CallEvent`]s of each call
//! (`pbx::b2bua::B2bEvent`: started, legs placed, ringing, answered or failed, the
//! answer, the end) made into one [`cdr::CallRecord`] per call, of kind `pbx`, handed to
//! a [`RecordSink`] when the call ends.
//!
//! Each leg of the hunt is a leg of the record (a ring group's members, a forward's
//! target), with the Call-ID of the B2BUA's INVITE; the callee is who the caller called
//! (a user) or, for a ring group, the member who answered. Sans-IO: the events carry
//! their instants, made wall-clock by a [`WallClock`].

use crate::b2bua::CallEvent;
use crate::proxy::WallClock;
use cdr::{CallKind, HangupBy, OpenCall, RecordSink};
use pbx::b2bua::{B2bEvent, Side};
use pbx::hunt::{LegId, Ring, Why};
use std::collections::HashMap;
use std::time::Instant;

/// One call of the B2BUA being recorded.
struct Open {
    call: OpenCall,
    /// The hunt's legs: their index in the record, and the user each rings.
    legs: Vec<(LegId, usize, Option<String>)>,
}

impl Open {
    fn leg(&self, leg: LegId) -> Option<(usize, Option<&str>)> {
        self.legs
            .iter()
            .find(|(l, _, _)| *l == leg)
            .map(|(_, i, user)| (*i, user.as_deref()))
    }
}

/// The B2BUA's calls being recorded, by the B2BUA's call number.
pub struct PbxRecorder {
    calls: HashMap<u64, Open>,
    sink: Box<dyn RecordSink>,
    clock: WallClock,
}

impl PbxRecorder {
    /// A recorder handing records to `sink`.
    pub fn new(clock: WallClock, sink: Box<dyn RecordSink>) -> PbxRecorder {
        PbxRecorder {
            calls: HashMap::new(),
            sink,
            clock,
        }
    }

    /// Calls being recorded.
    pub fn in_progress(&self) -> usize {
        self.calls.len()
    }

    /// A reading of the wall clock (see [`WallClock::observe`]).
    pub fn observe(&mut self, now: Instant, unix_secs: u64) {
        self.clock.observe(now, unix_secs);
    }

    /// What happened to a call.
    pub fn on_event(&mut self, e: CallEvent) {
        let at = self.clock.ms(e.at);
        if let B2bEvent::Started {
            caller,
            dialled,
            call_id,
        } = &e.event
        {
            let call = OpenCall::new(CallKind::Pbx, caller, dialled, call_id, at);
            self.calls.insert(
                e.call,
                Open {
                    call,
                    legs: Vec::new(),
                },
            );
            return;
        }
        let Some(open) = self.calls.get_mut(&e.call) else {
            return;
        };
        match e.event {
            B2bEvent::Started { .. } => {}
            B2bEvent::LegPlaced { leg, to, why } => {
                let (target, user) = match &to {
                    Ring::User { name } => (name.clone(), Some(name.clone())),
                    Ring::Number { number, trunks, .. } => {
                        if let Some(trunk) = trunks.first() {
                            open.call.set_trunk(trunk);
                        }
                        (number.clone(), None)
                    }
                };
                if matches!(why, Why::Called)
                    && let Some(user) = &user
                {
                    open.call.set_callee(user);
                }
                let call_id = e.call_id.as_deref().unwrap_or("");
                let index = open.call.leg_started(&target, call_id, at);
                open.legs.push((leg, index, user));
            }
            B2bEvent::LegRinging { leg, .. } => {
                if let Some((i, _)) = open.leg(leg) {
                    open.call.leg_ringing(i);
                    open.call.ringing();
                }
            }
            B2bEvent::LegAnswered { leg } => {
                if let Some((i, _)) = open.leg(leg) {
                    open.call.leg_answered(i, at);
                }
            }
            B2bEvent::LegFailed { leg, status } => {
                if let Some((i, _)) = open.leg(leg) {
                    open.call.leg_ended(i, Some(status), at);
                }
            }
            B2bEvent::Answered { leg, .. } => {
                if let Some((i, user)) = open.leg(leg) {
                    let user = user.map(str::to_owned);
                    open.call.leg_answered(i, at);
                    if let Some(user) = user {
                        open.call.set_callee(&user);
                    }
                }
                open.call.answered(at);
            }
            B2bEvent::Ended { by, status, reason } => {
                let Some(open) = self.calls.remove(&e.call) else {
                    return;
                };
                let by = by.map(|side| match side {
                    Side::A => HangupBy::Caller,
                    Side::B(_) => HangupBy::Callee,
                });
                let record = if open.call.is_answered() {
                    open.call
                        .finish_hangup(by.unwrap_or(HangupBy::System), &reason, at)
                } else {
                    let mut r = open.call.finish_unanswered(status, &reason, at);
                    if let Some(by) = by {
                        r.hangup_by = by;
                    }
                    r
                };
                self.sink.record(record);
            }
        }
    }

    /// Records every call in progress as ended by the system for `reason` (the server
    /// is stopping).
    pub fn close_all(&mut self, now: Instant, reason: &str) {
        let at = self.clock.ms(now);
        for (_, open) in self.calls.drain() {
            self.sink
                .record(open.call.finish_hangup(HangupBy::System, reason, at));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cdr::{CallRecord, Disposition};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn event(t0: Instant, ms: u64, call: u64, event: B2bEvent, call_id: Option<&str>) -> CallEvent {
        CallEvent {
            at: t0 + Duration::from_millis(ms),
            call,
            event,
            call_id: call_id.map(str::to_owned),
        }
    }

    fn user(name: &str) -> Ring {
        Ring::User { name: name.into() }
    }

    #[test]
    fn a_ring_group_call_answered_by_one_member() {
        let records: Arc<Mutex<Vec<CallRecord>>> = Arc::default();
        let t0 = Instant::now();
        let mut rec = PbxRecorder::new(WallClock::new(t0, 1_000_000), Box::new(records.clone()));
        let member = |group: &str| Why::Member {
            group: group.into(),
        };
        for e in [
            event(
                t0,
                0,
                1,
                B2bEvent::Started {
                    caller: "bob".into(),
                    dialled: "600".into(),
                    call_id: "a-leg".into(),
                },
                Some("a-leg"),
            ),
            event(
                t0,
                5,
                1,
                B2bEvent::LegPlaced {
                    leg: LegId(1),
                    to: user("alice"),
                    why: member("sales"),
                },
                Some("b1"),
            ),
            event(
                t0,
                5,
                1,
                B2bEvent::LegPlaced {
                    leg: LegId(2),
                    to: user("carol"),
                    why: member("sales"),
                },
                Some("b2"),
            ),
            event(
                t0,
                100,
                1,
                B2bEvent::LegRinging {
                    leg: LegId(2),
                    status: 180,
                },
                None,
            ),
            event(t0, 900, 1, B2bEvent::LegAnswered { leg: LegId(1) }, None),
            event(
                t0,
                900,
                1,
                B2bEvent::Answered {
                    leg: LegId(1),
                    group: None,
                },
                None,
            ),
            event(
                t0,
                950,
                1,
                B2bEvent::LegFailed {
                    leg: LegId(2),
                    status: 487,
                },
                None,
            ),
        ] {
            rec.on_event(e);
        }
        assert_eq!(rec.in_progress(), 1);
        rec.on_event(event(
            t0,
            3_000,
            1,
            B2bEvent::Ended {
                by: Some(Side::B(LegId(1))),
                status: 200,
                reason: "bye".into(),
            },
            None,
        ));
        assert_eq!(rec.in_progress(), 0);
        let r = records.lock().unwrap().pop().unwrap();
        assert_eq!(r.kind, CallKind::Pbx);
        assert_eq!((r.caller.as_str(), r.dialled.as_str()), ("bob", "600"));
        assert_eq!(
            r.callee.as_deref(),
            Some("alice"),
            "the member who answered"
        );
        assert_eq!(
            (r.disposition, r.hangup_by),
            (Disposition::Answered, HangupBy::Callee)
        );
        assert_eq!(r.hangup_reason, "bye");
        assert_eq!(
            (r.answer_ms, r.end_ms, r.billable_secs()),
            (Some(1_000_900), 1_003_000, 3)
        );
        assert_eq!(r.call_ids, ["a-leg", "b1", "b2"]);
        let legs: Vec<_> = r
            .legs
            .iter()
            .map(|l| (l.target.as_str(), l.status))
            .collect();
        assert_eq!(legs, [("alice", Some(200)), ("carol", Some(487))]);
    }

    #[test]
    fn unanswered_cancelled_and_stopped_calls() {
        let records: Arc<Mutex<Vec<CallRecord>>> = Arc::default();
        let t0 = Instant::now();
        let mut rec = PbxRecorder::new(WallClock::new(t0, 0), Box::new(records.clone()));
        let start = |call, dialled: &str| {
            event(
                t0,
                0,
                call,
                B2bEvent::Started {
                    caller: "bob".into(),
                    dialled: dialled.into(),
                    call_id: format!("a{call}"),
                },
                None,
            )
        };
        // Busy: the callee's 486 reaches the caller.
        rec.on_event(start(1, "201"));
        rec.on_event(event(
            t0,
            1,
            1,
            B2bEvent::LegPlaced {
                leg: LegId(1),
                to: user("alice"),
                why: Why::Called,
            },
            Some("b"),
        ));
        rec.on_event(event(
            t0,
            9,
            1,
            B2bEvent::LegFailed {
                leg: LegId(1),
                status: 486,
            },
            None,
        ));
        rec.on_event(event(
            t0,
            9,
            1,
            B2bEvent::Ended {
                by: None,
                status: 486,
                reason: "Busy Here".into(),
            },
            None,
        ));
        // The caller cancels.
        rec.on_event(start(2, "201"));
        rec.on_event(event(
            t0,
            9,
            2,
            B2bEvent::Ended {
                by: Some(Side::A),
                status: 487,
                reason: "Request Terminated".into(),
            },
            None,
        ));
        // Up when the server stops; an event for a call never started is ignored.
        rec.on_event(start(3, "202"));
        rec.on_event(event(
            t0,
            9,
            7,
            B2bEvent::LegAnswered { leg: LegId(1) },
            None,
        ));
        rec.close_all(t0 + Duration::from_secs(1), "server stopped");
        let r = std::mem::take(&mut *records.lock().unwrap());
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].disposition, r[0].hangup_by),
            (Disposition::Busy, HangupBy::Callee)
        );
        assert_eq!(r[0].callee.as_deref(), Some("alice"));
        assert_eq!(r[0].hangup_reason, "486 Busy Here");
        assert_eq!(
            (r[1].disposition, r[1].hangup_by),
            (Disposition::Cancelled, HangupBy::Caller)
        );
        assert_eq!(
            (r[2].disposition, r[2].hangup_by),
            (Disposition::Failed, HangupBy::System)
        );
        assert_eq!(r[2].hangup_reason, "server stopped");
    }
}
