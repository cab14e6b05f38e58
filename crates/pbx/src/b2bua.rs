//! One call through the PBX, as a back-to-back user agent sees it, sans-IO: an A leg
//! (the caller's INVITE, which we answer as a UAS) and B legs (INVITEs we place as a
//! UAC), driven by the [`Hunt`] engine that decides who rings. It does no SIP itself:
//! the SIP side (in Switchboard, `sip-ua`'s signalling-only legs) reports what each leg
//! did ([`B2bCall::on_progress`], [`B2bCall::on_answered`], ...) and carries out the
//! [`B2bCommand`]s polled from [`B2bCall::poll_command`]. What happened, for a call
//! record, is polled as [`B2bEvent`]s.
//!
//! - The caller's offer goes to every B leg the hunt rings; the first leg that answers
//!   wins: the caller gets a 2xx with that leg's answer and the other legs a CANCEL.
//!   Early media (a 183 with SDP) from the first leg that sends one is passed on.
//! - Each leg rings at most [`B2bCall::ring_timeout`]; then it is cancelled and counts
//!   as not answered (the hunt may forward or ring the next group member).
//! - Once connected, an offer from either side (re-INVITE or UPDATE: hold, resume, a
//!   new codec) is relayed to the other side and its answer (or refusal) back. While one
//!   is on its way, an offer from the other side is refused with 491, as a user agent
//!   whose offer is outstanding does (RFC 3261 §14.2, RFC 3311).
//! - A BYE (or a session that expired) on either side ends the call: the other side
//!   gets a BYE. A CANCEL from the caller cancels every leg still ringing.
//! - [`B2bCall::is_finished`] is true once the caller has its final answer and every
//!   leg has ended: nothing of the call is left to keep.

use crate::hunt::{Command, Directory, GroupAnswer, Hunt, LegId, LegOutcome, Ring, Why};
use crate::plan::Decision;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// A session description as the SIP side carries it (the text of an SDP body).
pub type Sdp = String;

/// Which side of the call something is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The caller's leg (we are its UAS).
    A,
    /// A leg we placed (we are its UAC).
    B(LegId),
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::A => f.write_str("caller"),
            Side::B(leg) => write!(f, "{leg}"),
        }
    }
}

/// How an offer reached us, and so how it is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferMethod {
    /// A re-INVITE.
    Invite,
    /// An UPDATE (RFC 3311).
    Update,
}

/// Why a side hung up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// It sent BYE.
    Bye,
    /// Its session timer expired without a refresh (RFC 4028).
    SessionExpired,
    /// It never ACKed our 2xx, or a request in its dialog got 408/481 or no answer.
    Lost,
}

impl HangupReason {
    /// For logs and call records: `bye`, `session expired`, `lost`.
    pub fn name(self) -> &'static str {
        match self {
            HangupReason::Bye => "bye",
            HangupReason::SessionExpired => "session expired",
            HangupReason::Lost => "lost",
        }
    }
}

/// What the SIP side must do for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B2bCommand {
    /// Place leg `leg`: an INVITE to `to` offering `sdp` (the caller's offer; `None`
    /// when the caller sent none, for a delayed offer).
    Place {
        /// The new leg.
        leg: LegId,
        /// Where it goes.
        to: Ring,
        /// Why it rings (for Diversion or History-Info).
        why: Why,
        /// The offer.
        sdp: Option<Sdp>,
    },
    /// CANCEL this ringing leg.
    Cancel {
        /// The leg.
        leg: LegId,
    },
    /// Send the caller a provisional response (180, or 183 with early media).
    Progress {
        /// 180 or 183.
        status: u16,
        /// The early answer, when a leg sent one.
        sdp: Option<Sdp>,
    },
    /// Answer the caller 200 with this answer (the winning leg's).
    Answer {
        /// The answer.
        sdp: Option<Sdp>,
    },
    /// Answer the caller with this final failure.
    Reject {
        /// 400 to 699.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// Hang this side up (BYE).
    Bye {
        /// The side.
        side: Side,
    },
    /// Send this side an offer (re-INVITE or UPDATE), from the other side.
    Offer {
        /// Where it goes.
        to: Side,
        /// The offer.
        sdp: Sdp,
        /// How.
        method: OfferMethod,
    },
    /// Answer the offer this side made (200 with the SDP).
    AnswerOffer {
        /// The side whose offer it answers.
        to: Side,
        /// The answer.
        sdp: Sdp,
    },
    /// Refuse the offer this side made with this status (491 on glare, or the far
    /// end's refusal).
    RefuseOffer {
        /// The side whose offer is refused.
        to: Side,
        /// The status.
        status: u16,
    },
}

/// What happened, for a call detail record (each polled with the time it happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B2bEvent {
    /// The call started.
    Started {
        /// The caller's user name.
        caller: String,
        /// The number dialled.
        dialled: String,
        /// The caller's Call-ID.
        call_id: String,
    },
    /// A leg was placed.
    LegPlaced {
        /// The leg.
        leg: LegId,
        /// Where.
        to: Ring,
        /// Why.
        why: Why,
    },
    /// A leg rings (its first provisional response above 100).
    LegRinging {
        /// The leg.
        leg: LegId,
        /// 180 or 183.
        status: u16,
    },
    /// A leg answered.
    LegAnswered {
        /// The leg.
        leg: LegId,
    },
    /// A leg ended without being connected: its final status (487 once cancelled, 408
    /// when it did not answer in time).
    LegFailed {
        /// The leg.
        leg: LegId,
        /// The status.
        status: u16,
    },
    /// The caller was connected to this leg.
    Answered {
        /// The leg.
        leg: LegId,
        /// The ring group member who answered, when a group rang (for
        /// [`crate::hunt::Rotation::record`]).
        group: Option<GroupAnswer>,
    },
    /// The call ended.
    Ended {
        /// Who ended it (`None` when nobody answered: the PBX gave up).
        by: Option<Side>,
        /// The final status the caller got: 200 when answered, else the failure
        /// (487 when the caller cancelled).
        status: u16,
        /// Why, in words.
        reason: String,
    },
}

/// Where a B leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    /// INVITE sent, no final response.
    Ringing,
    /// CANCEL sent (or to be): its final response is awaited.
    Cancelling,
    /// Answered and connected to the caller.
    Connected,
}

#[derive(Debug)]
struct Leg {
    state: LegState,
    /// When it gives up ringing.
    deadline: Instant,
    /// Its answer, kept from its 2xx until the hunt connects it.
    answer: Option<Sdp>,
    ringing: bool,
}

/// Where the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerState {
    /// Not answered yet.
    Waiting,
    /// Answered (200 sent).
    Connected,
    /// It has its final answer or hung up: nothing more goes to it.
    Done,
}

/// One call; see the module documentation.
#[derive(Debug)]
pub struct B2bCall {
    hunt: Hunt,
    caller: CallerState,
    offer: Option<Sdp>,
    legs: BTreeMap<LegId, Leg>,
    /// The leg the caller is connected to.
    connected: Option<LegId>,
    /// The side whose offer is on its way to the other side.
    offering: Option<Side>,
    /// The early answer passed to the caller (only one leg's early media is).
    early_from: Option<LegId>,
    /// Whether the caller was told it rings.
    progress_sent: bool,
    ring_timeout: Duration,
    commands: VecDeque<B2bCommand>,
    events: VecDeque<(Instant, B2bEvent)>,
    ended: bool,
}

/// Who called what: the start of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStart {
    /// The caller's user name.
    pub caller: String,
    /// The number dialled.
    pub dialled: String,
    /// The caller's Call-ID.
    pub call_id: String,
    /// The caller's offer (the INVITE's SDP), if any.
    pub offer: Option<Sdp>,
}

impl B2bCall {
    /// The longest a leg rings by default before it is cancelled as not answered.
    pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(30);

    /// Starts the call the dial plan decided (`decision`): the first legs to place are
    /// in [`B2bCall::poll_command`]. Each leg rings at most `ring_timeout`.
    pub fn new(
        start: CallStart,
        decision: Decision,
        ring_timeout: Duration,
        now: Instant,
        directory: &dyn Directory,
    ) -> B2bCall {
        let hunt = Hunt::new(decision, now, directory);
        let mut call = B2bCall {
            hunt,
            caller: CallerState::Waiting,
            offer: start.offer,
            legs: BTreeMap::new(),
            connected: None,
            offering: None,
            early_from: None,
            progress_sent: false,
            ring_timeout,
            commands: VecDeque::new(),
            events: VecDeque::new(),
            ended: false,
        };
        call.events.push_back((
            now,
            B2bEvent::Started {
                caller: start.caller,
                dialled: start.dialled,
                call_id: start.call_id,
            },
        ));
        call.drain_hunt(now);
        call
    }

    /// How long each leg rings at most.
    pub fn ring_timeout(&self) -> Duration {
        self.ring_timeout
    }

    /// The next thing for the SIP side to do, in order.
    pub fn poll_command(&mut self) -> Option<B2bCommand> {
        self.commands.pop_front()
    }

    /// The next thing that happened, with when.
    pub fn poll_event(&mut self) -> Option<(Instant, B2bEvent)> {
        self.events.pop_front()
    }

    /// When [`B2bCall::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let legs = self
            .legs
            .values()
            .filter(|l| l.state == LegState::Ringing)
            .map(|l| l.deadline)
            .min();
        [legs, self.hunt.poll_timeout()].into_iter().flatten().min()
    }

    /// Whether the call is over: the caller has its final answer or hung up, every leg
    /// has ended, and every command was polled. The SIP side drops it then.
    pub fn is_finished(&self) -> bool {
        self.caller == CallerState::Done && self.legs.is_empty() && self.commands.is_empty()
    }

    /// The legs not ended yet (ringing, being cancelled or connected).
    pub fn live_legs(&self) -> usize {
        self.legs.len()
    }

    /// The leg the caller is connected to.
    pub fn connected_leg(&self) -> Option<LegId> {
        self.connected
    }

    /// Time passed: legs that rang too long are cancelled, and the hunt's timers run.
    pub fn handle_timeout(&mut self, now: Instant, directory: &dyn Directory) {
        let late: Vec<LegId> = self
            .legs
            .iter()
            .filter(|(_, l)| l.state == LegState::Ringing && l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for leg in late {
            self.cancel_leg(leg);
            self.hunt.on_leg(now, leg, LegOutcome::NoAnswer, directory);
        }
        self.hunt.handle_timeout(now, directory);
        self.drain_hunt(now);
    }

    /// Leg `leg` sent a provisional response (`sdp`: its early answer, if any).
    pub fn on_progress(&mut self, leg: LegId, status: u16, sdp: Option<Sdp>, now: Instant) {
        if status <= 100 || self.caller != CallerState::Waiting {
            return;
        }
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if l.state != LegState::Ringing {
            return;
        }
        let first = !l.ringing;
        l.ringing = true;
        if first {
            self.events
                .push_back((now, B2bEvent::LegRinging { leg, status }));
        }
        match sdp {
            Some(sdp) if self.early_from.is_none() || self.early_from == Some(leg) => {
                self.early_from = Some(leg);
                self.progress_sent = true;
                self.commands.push_back(B2bCommand::Progress {
                    status: 183,
                    sdp: Some(sdp),
                });
            }
            _ if !self.progress_sent => {
                self.progress_sent = true;
                self.commands
                    .push_back(B2bCommand::Progress { status, sdp: None });
            }
            _ => {}
        }
    }

    /// Leg `leg` answered (2xx; the SIP side ACKs it) with `sdp`.
    pub fn on_answered(
        &mut self,
        leg: LegId,
        sdp: Option<Sdp>,
        now: Instant,
        directory: &dyn Directory,
    ) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        match l.state {
            LegState::Ringing if self.caller == CallerState::Waiting => {
                l.answer = sdp;
                self.events.push_back((now, B2bEvent::LegAnswered { leg }));
                self.hunt.on_leg(now, leg, LegOutcome::Answered, directory);
                self.drain_hunt(now);
            }
            LegState::Connected => {}
            // Its 2xx crossed our CANCEL, or the caller is gone: it has lost.
            _ => {
                self.legs.remove(&leg);
                self.commands
                    .push_back(B2bCommand::Bye { side: Side::B(leg) });
                self.events
                    .push_back((now, B2bEvent::LegFailed { leg, status: 487 }));
            }
        }
        // The hunt might not connect it (it moved on): then it is hung up.
        if let Some(l) = self.legs.get(&leg)
            && l.state == LegState::Ringing
        {
            self.legs.remove(&leg);
            self.commands
                .push_back(B2bCommand::Bye { side: Side::B(leg) });
        }
    }

    /// Leg `leg` ended without an answer: its final status (408 when it timed out, 503
    /// when it could not be sent or there is no phone to ring).
    pub fn on_failed(&mut self, leg: LegId, status: u16, now: Instant, directory: &dyn Directory) {
        let Some(l) = self.legs.remove(&leg) else {
            return;
        };
        if l.state == LegState::Connected {
            // A connected leg ends with a hang-up, not a failure.
            self.legs.insert(leg, l);
            return;
        }
        self.events
            .push_back((now, B2bEvent::LegFailed { leg, status }));
        if l.state == LegState::Ringing {
            self.hunt
                .on_leg(now, leg, LegOutcome::from_status(status), directory);
        }
        self.drain_hunt(now);
    }

    /// The caller sent CANCEL (the SIP side answered it 200): every ringing leg is
    /// cancelled and the caller gets 487.
    pub fn on_caller_cancel(&mut self, now: Instant) {
        if self.caller != CallerState::Waiting {
            return;
        }
        self.hunt.cancel();
        self.drain_hunt(now);
        let ringing: Vec<LegId> = self.legs.keys().copied().collect();
        for leg in ringing {
            self.cancel_leg(leg);
        }
        self.reject(487, "Request Terminated".into(), None, now);
    }

    /// `side` hung up (BYE received, answered by the SIP side; or its session is
    /// lost): the other side gets a BYE, or a CANCEL while it rings.
    pub fn on_hangup(&mut self, side: Side, reason: HangupReason, now: Instant) {
        match side {
            Side::A => {
                if self.caller == CallerState::Done {
                    return;
                }
                if self.caller == CallerState::Waiting {
                    // A BYE before our 2xx is not for an INVITE we answered: treat it as
                    // the caller giving up.
                    self.on_caller_cancel(now);
                    return;
                }
                self.caller = CallerState::Done;
                if let Some(leg) = self.connected.take() {
                    self.legs.remove(&leg);
                    self.commands
                        .push_back(B2bCommand::Bye { side: Side::B(leg) });
                }
                self.end(Some(Side::A), 200, reason.name().to_owned(), now);
            }
            Side::B(leg) => {
                if self.connected != Some(leg) {
                    return;
                }
                self.connected = None;
                self.legs.remove(&leg);
                if self.caller == CallerState::Connected {
                    self.caller = CallerState::Done;
                    self.commands.push_back(B2bCommand::Bye { side: Side::A });
                }
                self.end(Some(side), 200, reason.name().to_owned(), now);
            }
        }
    }

    /// `side` sent an offer (re-INVITE or UPDATE with SDP) in the connected call: it
    /// goes to the other side, unless an offer is already on its way (491).
    pub fn on_offer(&mut self, side: Side, sdp: Sdp, method: OfferMethod) {
        let Some(other) = self.other_side(side) else {
            // Not connected (yet, or any more): refused as a request we cannot serve.
            self.commands.push_back(B2bCommand::RefuseOffer {
                to: side,
                status: 491,
            });
            return;
        };
        if self.offering.is_some() {
            self.commands.push_back(B2bCommand::RefuseOffer {
                to: side,
                status: 491,
            });
            return;
        }
        self.offering = Some(side);
        self.commands.push_back(B2bCommand::Offer {
            to: other,
            sdp,
            method,
        });
    }

    /// `side` answered the offer relayed to it: the answer goes back.
    pub fn on_offer_answered(&mut self, side: Side, sdp: Sdp) {
        let Some(from) = self.offering_to(side) else {
            return;
        };
        self.offering = None;
        self.commands
            .push_back(B2bCommand::AnswerOffer { to: from, sdp });
    }

    /// `side` refused the offer relayed to it with `status` (491 on glare, 488...): the
    /// refusal goes back to the side that offered.
    pub fn on_offer_refused(&mut self, side: Side, status: u16) {
        let Some(from) = self.offering_to(side) else {
            return;
        };
        self.offering = None;
        self.commands
            .push_back(B2bCommand::RefuseOffer { to: from, status });
    }

    /// The side whose offer went to `side`.
    fn offering_to(&self, side: Side) -> Option<Side> {
        let from = self.offering?;
        (self.other_side(from) == Some(side)).then_some(from)
    }

    /// The far side of `side` in the connected call.
    fn other_side(&self, side: Side) -> Option<Side> {
        let leg = self.connected?;
        if self.caller != CallerState::Connected {
            return None;
        }
        match side {
            Side::A => Some(Side::B(leg)),
            Side::B(l) if l == leg => Some(Side::A),
            Side::B(_) => None,
        }
    }

    fn cancel_leg(&mut self, leg: LegId) {
        if let Some(l) = self.legs.get_mut(&leg)
            && l.state == LegState::Ringing
        {
            l.state = LegState::Cancelling;
            self.commands.push_back(B2bCommand::Cancel { leg });
        }
    }

    /// Carries out what the hunt asked for.
    fn drain_hunt(&mut self, now: Instant) {
        while let Some(command) = self.hunt.poll_command() {
            match command {
                Command::Ring { leg, to, why } => {
                    if self.caller != CallerState::Waiting {
                        continue;
                    }
                    self.legs.insert(
                        leg,
                        Leg {
                            state: LegState::Ringing,
                            deadline: now + self.ring_timeout,
                            answer: None,
                            ringing: false,
                        },
                    );
                    self.events.push_back((
                        now,
                        B2bEvent::LegPlaced {
                            leg,
                            to: to.clone(),
                            why: why.clone(),
                        },
                    ));
                    self.commands.push_back(B2bCommand::Place {
                        leg,
                        to,
                        why,
                        sdp: self.offer.clone(),
                    });
                }
                Command::Cancel { leg } => self.cancel_leg(leg),
                Command::Connect { leg, group } => {
                    let Some(l) = self.legs.get_mut(&leg) else {
                        continue;
                    };
                    if self.caller != CallerState::Waiting {
                        continue;
                    }
                    l.state = LegState::Connected;
                    let sdp = l.answer.take();
                    self.connected = Some(leg);
                    self.caller = CallerState::Connected;
                    self.commands.push_back(B2bCommand::Answer { sdp });
                    self.events
                        .push_back((now, B2bEvent::Answered { leg, group }));
                }
                Command::Divert { action, .. } => {
                    let what = action.describe();
                    self.reject(
                        480,
                        format!("Temporarily Unavailable ({what} is not served yet)"),
                        None,
                        now,
                    );
                }
                Command::GiveUp { code, reason } => self.reject(code, reason, None, now),
            }
        }
    }

    /// The caller gets a final failure (once).
    fn reject(&mut self, code: u16, reason: String, by: Option<Side>, now: Instant) {
        if self.caller != CallerState::Waiting {
            return;
        }
        self.caller = CallerState::Done;
        self.commands.push_back(B2bCommand::Reject {
            code,
            reason: reason.clone(),
        });
        let by = by.or((code == 487).then_some(Side::A));
        self.end(by, code, reason, now);
    }

    fn end(&mut self, by: Option<Side>, status: u16, reason: String, now: Instant) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.events
            .push_back((now, B2bEvent::Ended { by, status, reason }));
    }
}

#[cfg(test)]
#[path = "b2bua_tests.rs"]
mod tests;
