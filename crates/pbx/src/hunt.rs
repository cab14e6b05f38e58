//! Who rings, in what order, and what happens when nobody answers: the sans-IO engine
//! a B2BUA runs for each call it places, once the dial plan has decided where the call
//! goes. It follows a user's forwarding (unconditional, busy, no answer after N
//! seconds, unreachable) and a ring group's strategy (simultaneous, sequential, round
//! robin) and fallback, detects forwarding loops, and never touches the network: it
//! emits [`Command`]s and takes the outcomes of the legs it asked for, and its own
//! timers, with an explicit `now`.
//!
//! # Wiring it into a B2BUA
//!
//! 1. The caller's INVITE arrives; the plan decides
//!    (`let decision = plan.route(dialled, &caller, now)`).
//! 2. `let mut hunt = Hunt::new(decision, now, &directory)`, where `directory` is the
//!    B2BUA's [`Directory`]: users by extension or name with their [`Forwarding`]
//!    (from the user store), ring groups by name ([`crate::Plan::ring_group`]), the plan
//!    itself for forward targets that are numbers ([`Directory::route`]), and the
//!    round-robin [`Rotation`] it keeps across calls ([`Directory::last_answered`]).
//!    In Switchboard that is `PbxDirectory` (`crates/switchboard/src/pbx_directory.rs`)
//!    over the plan in force, the server's `CachedUsers` and the B2BUA's `Rotation`.
//!    Every action can be given: an extension, a group, a trunk, and also voicemail, IVR
//!    or a rejection, which end the hunt at once ([`Command::Divert`],
//!    [`Command::GiveUp`]).
//! 3. Drain [`Hunt::poll_command`] after every call into the engine, and do what each
//!    command says:
//!    - [`Command::Ring`]: place an outgoing leg (a UAC INVITE) numbered `leg`, to a
//!      local user's registered phones ([`Ring::User`]; the B2BUA forks to all of
//!      them) or out through a trunk ([`Ring::Number`]). `why` says whether it is the
//!      user called, a group member, a fallback or a forward (for Diversion or
//!      History-Info, and the call record).
//!    - [`Command::Cancel`]: CANCEL that leg. Its 487 (or anything else it answers)
//!      need not be reported. If its 2xx crosses the CANCEL, the B2BUA ACKs and BYEs
//!      it: the engine has moved on, and reporting that 2xx does nothing.
//!    - [`Command::Connect`]: that leg answered and won: bridge the caller to it (send
//!      the caller the 2xx with the leg's answer). With `group`, a ring group member
//!      answered: record it in the [`Rotation`] for round robin.
//!    - [`Command::Divert`]: hand the call to voicemail or an IVR menu ([`Action`]).
//!    - [`Command::GiveUp`]: answer the caller with this final status.
//!
//!    Connect, Divert and GiveUp are final: exactly one of them comes, once, unless the
//!    caller gave up first ([`Hunt::cancel`]). Every leg the engine rings is either
//!    reported back with its outcome, or cancelled, or connected, exactly once.
//! 4. Report each leg's final response with [`Hunt::on_leg`] ([`LegOutcome::from_status`]
//!    maps a status code; a leg that cannot be placed at all, for a user with no
//!    registered phone or a transport error, is [`LegOutcome::Unreachable`]). Early
//!    responses (180, 183) are the B2BUA's business: the engine does not need them.
//! 5. Arm a timer for [`Hunt::poll_timeout`] and call [`Hunt::handle_timeout`] when it
//!    fires (a sequential member's time is up, a group's, or a user's no-answer
//!    forwarding is due). Read `poll_timeout` again after every call.
//! 6. When the caller CANCELs, call [`Hunt::cancel`]: every leg still ringing is
//!    cancelled, and the B2BUA answers the caller 487 itself.
//! 7. [`Hunt::is_finished`] is true once the hunt has ended ([`Hunt::end`] says how);
//!    the engine can then be dropped, once its commands are drained.
//!
//! ```
//! use pbx::hunt::{Command, Directory, Forwarding, Hunt, HuntUser, LegOutcome, Ring};
//! use pbx::{Caller, Decision, Plan, RingGroup};
//! use std::time::{Duration, Instant};
//!
//! struct Users;
//! impl Directory for Users {
//!     fn user(&self, who: &str) -> Option<HuntUser> {
//!         // alice (201) forwards to bob when she does not answer within 15 s.
//!         let (name, forwarding) = match who {
//!             "alice" | "201" => ("alice", Forwarding {
//!                 no_answer: Some("bob".into()),
//!                 no_answer_secs: 15,
//!                 ..Forwarding::default()
//!             }),
//!             "bob" | "202" => ("bob", Forwarding::default()),
//!             _ => return None,
//!         };
//!         Some(HuntUser { name: name.into(), forwarding })
//!     }
//!     fn group(&self, _: &str) -> Option<RingGroup> { None }
//!     fn route(&self, number: &str, dialled_by: &str) -> Decision {
//!         let caller = Caller { name: dialled_by.into(), extension: None };
//!         Plan::builtin().route(number, &caller, jiff::Timestamp::UNIX_EPOCH)
//!     }
//! }
//!
//! let t0 = Instant::now();
//! let decision = Plan::builtin().route(
//!     "201",
//!     &Caller { name: "carol".into(), extension: None },
//!     jiff::Timestamp::UNIX_EPOCH,
//! );
//! let mut hunt = Hunt::new(decision, t0, &Users);
//! let Some(Command::Ring { leg: first, to: Ring::User { name }, .. }) = hunt.poll_command() else { panic!() };
//! assert_eq!(name, "alice");
//! assert_eq!(hunt.poll_timeout(), Some(t0 + Duration::from_secs(15)));
//! // Nobody answers: alice's leg is cancelled and bob's rings.
//! hunt.handle_timeout(t0 + Duration::from_secs(15), &Users);
//! assert_eq!(hunt.poll_command(), Some(Command::Cancel { leg: first }));
//! let Some(Command::Ring { leg: second, to: Ring::User { name }, .. }) = hunt.poll_command() else { panic!() };
//! assert_eq!(name, "bob");
//! hunt.on_leg(t0 + Duration::from_secs(17), second, LegOutcome::Answered, &Users);
//! assert_eq!(hunt.poll_command(), Some(Command::Connect { leg: second, group: None }));
//! assert!(hunt.is_finished());
//! ```
//!
//! # What it does
//!
//! - **A user** ([`Action::Extension`]): unconditional forwarding goes to its target at
//!   once, without ringing. Otherwise the user's phones ring; busy (486, 600) follows
//!   the busy forwarding, unreachable (no phone, 408, 480, 503, a transport error) the
//!   unreachable one, and with a no-answer forwarding the leg is cancelled after its
//!   seconds and the target rung (a leg that ends unanswered on its own, a
//!   [`LegOutcome::NoAnswer`], follows it too). Without the matching forwarding, the
//!   caller gets 486 for busy, 480 otherwise, or the code a phone rejected with.
//! - **A forward target** is a user (by extension or name) or else a number, which
//!   the dial plan routes as if the forwarding user dialled it ([`Directory::route`]):
//!   to another user, a group, a trunk, voicemail, an IVR, or a rejection (the call
//!   ends with the plan's code). A target the plan sends to an extension nobody has
//!   ends the call with the code the failure that forwarded it would have had (480 for
//!   unconditional forwarding).
//! - **Loops**: a user or group reached a second time ends the call with 482 (alice
//!   forwards to bob, who forwards to alice), and more than [`MAX_FORWARDS`] forwards
//!   and fallbacks in a row with 483.
//! - **A ring group**: simultaneous rings every member at once for `ring_seconds`;
//!   the first to answer is connected and the others cancelled. Sequential rings one
//!   member at a time for `ring_seconds` each, going on when a member is busy,
//!   unreachable, rejects, or runs out of time. Round robin is sequential starting
//!   after the member who answered the group's last call. Members that are no user are
//!   skipped; two members that are the same user ring once. Members are rung as their
//!   phones: their own forwarding is for calls to them, not to their group. When
//!   nobody answers, the group's fallback runs (a user, with their forwarding; another
//!   group; voicemail, IVR or a rejection), else the caller gets 486 when every member
//!   was busy and 480 otherwise.
//! - **A trunk** ([`Action::Trunk`], or a forward to an outside number): one leg,
//!   [`Ring::Number`]; its failure is the call's.

use crate::plan::{Action, CallerId, Decision, RingGroup, Strategy};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// How many forwards and fallbacks one call may follow before the engine gives up with
/// 483: a chain this long is a mistake, even without a loop.
pub const MAX_FORWARDS: usize = 8;

/// A user's call forwarding: where calls go instead of (or after) ringing their phones.
/// A target is an extension number, a user name, or a number the dial plan routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// Every call, without ringing the user's phones.
    pub always: Option<String>,
    /// When the user's phones answer busy (486, 600).
    pub busy: Option<String>,
    /// When nobody answers within [`Forwarding::no_answer_secs`].
    pub no_answer: Option<String>,
    /// Seconds the phones ring before a no-answer forward.
    pub no_answer_secs: u32,
    /// When the user cannot be reached (no registered phone, 408, 480, 503).
    pub unreachable: Option<String>,
}

impl Forwarding {
    /// Seconds before a no-answer forward, when not given.
    pub const DEFAULT_NO_ANSWER_SECS: u32 = 20;

    /// Whether no forwarding is set.
    pub fn is_empty(&self) -> bool {
        self.always.is_none()
            && self.busy.is_none()
            && self.no_answer.is_none()
            && self.unreachable.is_none()
    }

    /// The target for `kind`, if set.
    pub fn target(&self, kind: ForwardKind) -> Option<&str> {
        match kind {
            ForwardKind::Always => self.always.as_deref(),
            ForwardKind::Busy => self.busy.as_deref(),
            ForwardKind::NoAnswer => self.no_answer.as_deref(),
            ForwardKind::Unreachable => self.unreachable.as_deref(),
        }
    }

    /// For people: `on busy to 202, on no answer after 20 s to 0612345678`; `None` when
    /// nothing is set.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = ForwardKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let target = self.target(kind)?;
                Some(match kind {
                    ForwardKind::NoAnswer => {
                        format!("on no answer after {} s to {target}", self.no_answer_secs)
                    }
                    _ => format!("{} to {target}", kind.describe()),
                })
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

impl Default for Forwarding {
    fn default() -> Forwarding {
        Forwarding {
            always: None,
            busy: None,
            no_answer: None,
            no_answer_secs: Forwarding::DEFAULT_NO_ANSWER_SECS,
            unreachable: None,
        }
    }
}

/// Which forwarding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardKind {
    /// Unconditional.
    Always,
    /// On busy.
    Busy,
    /// On no answer.
    NoAnswer,
    /// On unreachable.
    Unreachable,
}

impl ForwardKind {
    /// Every kind, in the order they are shown.
    pub const ALL: [ForwardKind; 4] = [
        ForwardKind::Always,
        ForwardKind::Busy,
        ForwardKind::NoAnswer,
        ForwardKind::Unreachable,
    ];

    /// Its name in the CLI and JSON: `always`, `busy`, `no_answer`, `unreachable`.
    pub fn name(self) -> &'static str {
        match self {
            ForwardKind::Always => "always",
            ForwardKind::Busy => "busy",
            ForwardKind::NoAnswer => "no_answer",
            ForwardKind::Unreachable => "unreachable",
        }
    }

    /// For people: `always`, `on busy`, `on no answer`, `on unreachable`.
    pub fn describe(self) -> &'static str {
        match self {
            ForwardKind::Always => "always",
            ForwardKind::Busy => "on busy",
            ForwardKind::NoAnswer => "on no answer",
            ForwardKind::Unreachable => "on unreachable",
        }
    }
}

impl fmt::Display for ForwardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A local user as the engine needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntUser {
    /// The user name (what [`Ring::User`] names).
    pub name: String,
    /// Their forwarding.
    pub forwarding: Forwarding,
}

/// What the engine asks of the B2BUA's world while it decides. Every method is a
/// lookup in memory: the engine calls them from its inputs, never later.
pub trait Directory {
    /// The user with this extension number, or else this name.
    fn user(&self, extension_or_name: &str) -> Option<HuntUser>;

    /// The ring group with this name ([`crate::Plan::ring_group`], cloned).
    fn group(&self, name: &str) -> Option<RingGroup>;

    /// What the dial plan does with `number` dialled by the user `dialled_by` (a
    /// forward target that is no user): [`crate::Plan::route`] with that user as the
    /// caller, so their class decides whether they may forward abroad.
    fn route(&self, number: &str, dialled_by: &str) -> Decision;

    /// The member of this group who answered its last call ([`Rotation`]), for round
    /// robin. None by default: every round starts with the first member.
    fn last_answered(&self, group: &str) -> Option<String> {
        let _ = group;
        None
    }
}

/// Which group member answered last, per group: the round-robin state a B2BUA keeps
/// across calls (in memory: after a restart the rounds start again at the first
/// member).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    last: HashMap<String, String>,
}

impl Rotation {
    /// Notes that `member` answered a call to `group` (from [`Command::Connect`]).
    pub fn record(&mut self, answer: &GroupAnswer) {
        self.last
            .insert(answer.group.clone(), answer.member.clone());
    }

    /// The member of `group` who answered last.
    pub fn last_answered(&self, group: &str) -> Option<&str> {
        self.last.get(group).map(String::as_str)
    }
}

/// A leg the engine asked for, numbered from 1 in each [`Hunt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u32);

impl fmt::Display for LegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leg {}", self.0)
    }
}

/// Where a leg goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ring {
    /// The registered phones of this local user (by name).
    User {
        /// The user name.
        name: String,
    },
    /// A number out through a trunk, as the dial plan routed it.
    Number {
        /// The number after the plan's rewriting.
        number: String,
        /// The trunks to try, in order.
        trunks: Vec<String>,
        /// The caller ID the plan gives the call.
        caller_id: CallerId,
    },
}

/// Why a leg rings, or the call is diverted: for Diversion / History-Info headers, the
/// logs and the call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It is who the caller called.
    Called,
    /// A member of this ring group.
    Member {
        /// The group.
        group: String,
    },
    /// This group's fallback: nobody in it answered.
    Fallback {
        /// The group.
        group: String,
    },
    /// The user `by` forwards their calls here.
    Forwarded {
        /// The forwarding user.
        by: String,
        /// Which forwarding.
        kind: ForwardKind,
    },
}

/// A ring group member who answered: what [`Rotation::record`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAnswer {
    /// The group.
    pub group: String,
    /// The member, as listed in the group (`201`, `alice`).
    pub member: String,
}

/// What the engine asks the B2BUA to do; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Place leg `leg` to `to`.
    Ring {
        /// The new leg.
        leg: LegId,
        /// Where.
        to: Ring,
        /// Why.
        why: Why,
    },
    /// Cancel this leg, which is ringing and no longer wanted.
    Cancel {
        /// The leg.
        leg: LegId,
    },
    /// This leg answered and wins: connect the caller to it. Final.
    Connect {
        /// The leg.
        leg: LegId,
        /// The group member who answered, when a group rang.
        group: Option<GroupAnswer>,
    },
    /// Send the call to voicemail or an IVR ([`Action::Voicemail`], [`Action::Ivr`]).
    /// Final.
    Divert {
        /// Where.
        action: Action,
        /// Why.
        why: Why,
    },
    /// Answer the caller with this final status. Final.
    GiveUp {
        /// 400 to 699.
        code: u16,
        /// A reason phrase, for the response and the logs.
        reason: String,
    },
}

/// How a leg ended, as the B2BUA reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegOutcome {
    /// A 2xx.
    Answered,
    /// 486 Busy Here or 600 Busy Everywhere.
    Busy,
    /// It rang and nobody answered before the B2BUA's own limit (Timer C).
    NoAnswer,
    /// It could not be reached: no registered phone, a transport error, 408, 480, 503.
    Unreachable,
    /// Any other final status (603 Decline, 404, ...).
    Rejected(u16),
}

impl LegOutcome {
    /// The outcome of a final response with this status code.
    pub fn from_status(code: u16) -> LegOutcome {
        match code {
            200..=299 => LegOutcome::Answered,
            486 | 600 => LegOutcome::Busy,
            408 | 480 | 503 => LegOutcome::Unreachable,
            _ => LegOutcome::Rejected(code),
        }
    }

    /// The status the caller gets when this ends the call.
    fn code(self) -> u16 {
        match self {
            LegOutcome::Answered => 200,
            LegOutcome::Busy => 486,
            LegOutcome::NoAnswer | LegOutcome::Unreachable => 480,
            LegOutcome::Rejected(code) => code,
        }
    }
}

/// How a hunt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HuntEnd {
    /// This leg answered and was connected.
    Connected(LegId),
    /// The call went to voicemail or an IVR.
    Diverted(Action),
    /// The caller was answered this status.
    GaveUp {
        /// The status.
        code: u16,
        /// Why.
        reason: String,
    },
    /// The caller hung up first ([`Hunt::cancel`]).
    CallerCancelled,
}

/// The standard reason phrase of a final status the engine gives.
fn phrase(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        404 => "Not Found",
        480 => "Temporarily Unavailable",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Call Failed",
    }
}

/// What is ringing now.
#[derive(Debug)]
enum Stage {
    /// Nothing: the hunt is over.
    Over,
    /// One user's phones, on one leg.
    User { user: HuntUser, leg: LegId },
    /// A ring group's members.
    Group(GroupRun),
    /// A number through a trunk, on one leg.
    Number { leg: LegId },
}

/// A ring group being rung.
#[derive(Debug)]
struct GroupRun {
    group: RingGroup,
    /// The members in ringing order (round robin rotated), each with the user it is.
    order: Vec<(String, String)>,
    /// The next of `order` to ring (sequential and round robin).
    next: usize,
    /// Whether every member rung so far answered busy.
    all_busy: bool,
    /// Whether any member was rung at all.
    rang_any: bool,
}

/// One call's hunt; see the module documentation.
#[derive(Debug)]
pub struct Hunt {
    commands: VecDeque<Command>,
    last_leg: u32,
    /// Legs ringing, with the group member each is for.
    live: Vec<(LegId, Option<String>)>,
    stage: Stage,
    timer: Option<Instant>,
    /// Users (`user alice`) and groups (`group sales`) reached so far, in order.
    visited: Vec<String>,
    forwards: usize,
    end: Option<HuntEnd>,
}

impl Hunt {
    /// Starts the hunt for a call the dial plan decided: the first commands are ready
    /// in [`Hunt::poll_command`].
    pub fn new(decision: Decision, now: Instant, directory: &dyn Directory) -> Hunt {
        let mut hunt = Hunt {
            commands: VecDeque::new(),
            last_leg: 0,
            live: Vec::new(),
            stage: Stage::Over,
            timer: None,
            visited: Vec::new(),
            forwards: 0,
            end: None,
        };
        let code_if_nowhere = 404;
        hunt.enter(
            decision.action,
            decision.number,
            decision.caller_id,
            Why::Called,
            code_if_nowhere,
            now,
            directory,
        );
        hunt
    }

    /// The next thing to do, in order.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Hunt::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Whether the hunt has ended (its last commands may still be queued).
    pub fn is_finished(&self) -> bool {
        self.end.is_some()
    }

    /// How it ended.
    pub fn end(&self) -> Option<&HuntEnd> {
        self.end.as_ref()
    }

    /// The legs ringing now.
    pub fn live_legs(&self) -> impl Iterator<Item = LegId> + '_ {
        self.live.iter().map(|(leg, _)| *leg)
    }

    /// The caller hung up (CANCEL): every leg still ringing is cancelled. Does nothing
    /// once the hunt has ended.
    pub fn cancel(&mut self) {
        if self.end.is_some() {
            return;
        }
        self.cancel_all();
        self.finish(HuntEnd::CallerCancelled);
    }

    /// A leg ended with `outcome`. Outcomes of legs that are no longer ringing (already
    /// cancelled, or unknown) are ignored.
    pub fn on_leg(
        &mut self,
        now: Instant,
        leg: LegId,
        outcome: LegOutcome,
        directory: &dyn Directory,
    ) {
        if self.end.is_some() {
            return;
        }
        let Some(i) = self.live.iter().position(|(l, _)| *l == leg) else {
            return;
        };
        let (_, member) = self.live.remove(i);
        if outcome == LegOutcome::Answered {
            let group = match (&self.stage, member) {
                (Stage::Group(run), Some(member)) => Some(GroupAnswer {
                    group: run.group.name.clone(),
                    member,
                }),
                _ => None,
            };
            self.cancel_all();
            self.commands.push_back(Command::Connect { leg, group });
            self.finish(HuntEnd::Connected(leg));
            return;
        }
        match std::mem::replace(&mut self.stage, Stage::Over) {
            Stage::Over => {}
            Stage::User { user, .. } => {
                self.timer = None;
                let kind = match outcome {
                    LegOutcome::Busy => Some(ForwardKind::Busy),
                    LegOutcome::NoAnswer => Some(ForwardKind::NoAnswer),
                    LegOutcome::Unreachable => Some(ForwardKind::Unreachable),
                    LegOutcome::Answered | LegOutcome::Rejected(_) => None,
                };
                self.user_failed(user, kind, outcome.code(), now, directory);
            }
            Stage::Number { .. } => {
                self.timer = None;
                let code = outcome.code();
                self.give_up(code, format!("the number answered {code}"));
            }
            Stage::Group(mut run) => {
                run.all_busy &= outcome == LegOutcome::Busy;
                match run.group.strategy {
                    Strategy::Simultaneous => {
                        if self.live.is_empty() {
                            self.timer = None;
                            self.group_failed(run, now, directory);
                        } else {
                            self.stage = Stage::Group(run);
                        }
                    }
                    Strategy::Sequential | Strategy::RoundRobin => {
                        self.timer = None;
                        self.ring_next_member(run, now, directory);
                    }
                }
            }
        }
    }

    /// The timer of [`Hunt::poll_timeout`] fired (a call before it is due does
    /// nothing).
    pub fn handle_timeout(&mut self, now: Instant, directory: &dyn Directory) {
        match self.timer {
            Some(due) if due <= now => self.timer = None,
            _ => return,
        }
        if self.end.is_some() {
            return;
        }
        match std::mem::replace(&mut self.stage, Stage::Over) {
            Stage::Over => {}
            Stage::User { user, leg } => {
                // Only a no-answer forwarding arms the timer of a user.
                self.cancel_leg(leg);
                self.user_failed(user, Some(ForwardKind::NoAnswer), 480, now, directory);
            }
            Stage::Number { leg } => {
                self.cancel_leg(leg);
                self.give_up(480, "the number did not answer".into());
            }
            Stage::Group(mut run) => {
                run.all_busy = false;
                self.cancel_all();
                match run.group.strategy {
                    Strategy::Simultaneous => self.group_failed(run, now, directory),
                    Strategy::Sequential | Strategy::RoundRobin => {
                        self.ring_next_member(run, now, directory);
                    }
                }
            }
        }
    }

    fn finish(&mut self, end: HuntEnd) {
        self.stage = Stage::Over;
        self.timer = None;
        self.end = Some(end);
    }

    fn give_up(&mut self, code: u16, reason: String) {
        self.cancel_all();
        self.commands.push_back(Command::GiveUp {
            code,
            reason: reason.clone(),
        });
        self.finish(HuntEnd::GaveUp { code, reason });
    }

    fn cancel_leg(&mut self, leg: LegId) {
        if let Some(i) = self.live.iter().position(|(l, _)| *l == leg) {
            self.live.remove(i);
            self.commands.push_back(Command::Cancel { leg });
        }
    }

    fn cancel_all(&mut self) {
        for (leg, _) in std::mem::take(&mut self.live) {
            self.commands.push_back(Command::Cancel { leg });
        }
    }

    fn ring(&mut self, to: Ring, why: Why, member: Option<String>) -> LegId {
        self.last_leg += 1;
        let leg = LegId(self.last_leg);
        self.live.push((leg, member));
        self.commands.push_back(Command::Ring { leg, to, why });
        leg
    }

    /// Goes where `action` says. `code_if_nowhere` is the caller's answer when it
    /// names a user or group that does not exist.
    #[allow(clippy::too_many_arguments)]
    fn enter(
        &mut self,
        action: Action,
        number: String,
        caller_id: CallerId,
        why: Why,
        code_if_nowhere: u16,
        now: Instant,
        directory: &dyn Directory,
    ) {
        match action {
            Action::Extension { target } => match directory.user(&target) {
                Some(user) => self.enter_user(user, why, now, directory),
                None => self.give_up(
                    code_if_nowhere,
                    format!("no user has extension or name {target}"),
                ),
            },
            Action::RingGroup { group } => match directory.group(&group) {
                Some(group) => self.enter_group(group, now, directory),
                None => self.give_up(code_if_nowhere, format!("no ring group {group}")),
            },
            Action::Trunk { trunks } => {
                let leg = self.ring(
                    Ring::Number {
                        number,
                        trunks,
                        caller_id,
                    },
                    why,
                    None,
                );
                self.stage = Stage::Number { leg };
            }
            Action::Voicemail { .. } | Action::Ivr { .. } => {
                self.commands.push_back(Command::Divert {
                    action: action.clone(),
                    why,
                });
                self.finish(HuntEnd::Diverted(action));
            }
            Action::Reject { code, reason } => {
                let reason = reason.unwrap_or_else(|| phrase(code).to_owned());
                self.give_up(code, reason);
            }
        }
    }

    /// Whether `place` was reached before: then the call ends with 482.
    fn looped(&mut self, place: String) -> bool {
        if self.visited.contains(&place) {
            let mut trail = self.visited.join(" -> ");
            trail.push_str(&format!(" -> {place}"));
            self.give_up(482, format!("forwarding loop: {trail}"));
            return true;
        }
        self.visited.push(place);
        false
    }

    fn enter_user(&mut self, user: HuntUser, why: Why, now: Instant, directory: &dyn Directory) {
        if self.looped(format!("user {}", user.name)) {
            return;
        }
        if let Some(target) = user.forwarding.always.clone() {
            self.forward(
                &user.name,
                ForwardKind::Always,
                &target,
                480,
                now,
                directory,
            );
            return;
        }
        let leg = self.ring(
            Ring::User {
                name: user.name.clone(),
            },
            why,
            None,
        );
        if user.forwarding.no_answer.is_some() {
            let secs = u64::from(user.forwarding.no_answer_secs);
            self.timer = Some(now + Duration::from_secs(secs));
        }
        self.stage = Stage::User { user, leg };
    }

    /// The user's phones did not take the call: their forwarding of `kind`, or the
    /// caller gets `code`.
    fn user_failed(
        &mut self,
        user: HuntUser,
        kind: Option<ForwardKind>,
        code: u16,
        now: Instant,
        directory: &dyn Directory,
    ) {
        let target = kind.and_then(|k| Some((k, user.forwarding.target(k)?.to_owned())));
        match target {
            Some((kind, target)) => self.forward(&user.name, kind, &target, code, now, directory),
            None => self.give_up(code, format!("{} did not answer ({code})", user.name)),
        }
    }

    /// Counts a forward or fallback; false (and the call ended with 483) past the limit.
    fn count_forward(&mut self) -> bool {
        self.forwards += 1;
        if self.forwards > MAX_FORWARDS {
            self.give_up(
                483,
                format!(
                    "more than {MAX_FORWARDS} forwards: {}",
                    self.visited.join(" -> ")
                ),
            );
            return false;
        }
        true
    }

    fn forward(
        &mut self,
        by: &str,
        kind: ForwardKind,
        target: &str,
        code: u16,
        now: Instant,
        directory: &dyn Directory,
    ) {
        if !self.count_forward() {
            return;
        }
        let why = Why::Forwarded {
            by: by.to_owned(),
            kind,
        };
        if let Some(user) = directory.user(target) {
            self.enter_user(user, why, now, directory);
            return;
        }
        // A number: where the plan sends it when the forwarding user dials it.
        let decision = directory.route(target, by);
        self.enter(
            decision.action,
            decision.number,
            decision.caller_id,
            why,
            code,
            now,
            directory,
        );
    }

    fn enter_group(&mut self, group: RingGroup, now: Instant, directory: &dyn Directory) {
        if self.looped(format!("group {}", group.name)) {
            return;
        }
        // Members that are no user are skipped, and a user listed twice (by extension
        // and by name) rings once.
        let mut order: Vec<(String, String)> = Vec::new();
        for member in &group.members {
            if let Some(user) = directory.user(member)
                && !order.iter().any(|(_, u)| *u == user.name)
            {
                order.push((member.clone(), user.name));
            }
        }
        if group.strategy == Strategy::RoundRobin
            && let Some(last) = directory.last_answered(&group.name)
            && let Some(i) = order.iter().position(|(m, _)| *m == last)
        {
            let n = order.len();
            order.rotate_left((i + 1) % n);
        }
        let mut run = GroupRun {
            group,
            order,
            next: 0,
            all_busy: true,
            rang_any: false,
        };
        match run.group.strategy {
            Strategy::Simultaneous => {
                let why = Why::Member {
                    group: run.group.name.clone(),
                };
                for (member, name) in run.order.clone() {
                    self.ring(Ring::User { name }, why.clone(), Some(member));
                }
                if self.live.is_empty() {
                    self.group_failed(run, now, directory);
                    return;
                }
                run.rang_any = true;
                self.timer = Some(now + Duration::from_secs(u64::from(run.group.ring_seconds)));
                self.stage = Stage::Group(run);
            }
            Strategy::Sequential | Strategy::RoundRobin => {
                self.ring_next_member(run, now, directory);
            }
        }
    }

    fn ring_next_member(&mut self, mut run: GroupRun, now: Instant, directory: &dyn Directory) {
        let Some((member, name)) = run.order.get(run.next).cloned() else {
            self.group_failed(run, now, directory);
            return;
        };
        run.next += 1;
        run.rang_any = true;
        let why = Why::Member {
            group: run.group.name.clone(),
        };
        self.ring(Ring::User { name }, why, Some(member));
        self.timer = Some(now + Duration::from_secs(u64::from(run.group.ring_seconds)));
        self.stage = Stage::Group(run);
    }

    fn group_failed(&mut self, run: GroupRun, now: Instant, directory: &dyn Directory) {
        let code = if run.all_busy && run.rang_any {
            486
        } else {
            480
        };
        let group = run.group.name;
        match run.group.fallback {
            None => self.give_up(code, format!("nobody in ring group {group} answered")),
            Some(fallback) => {
                if !self.count_forward() {
                    return;
                }
                let why = Why::Fallback {
                    group: group.clone(),
                };
                // A fallback is never a trunk (the plan refuses one), so the number and
                // caller ID go unused.
                let caller_id = CallerId {
                    number: group.clone(),
                    name: group,
                };
                self.enter(
                    fallback,
                    String::new(),
                    caller_id,
                    why,
                    code,
                    now,
                    directory,
                );
            }
        }
    }
}
