//! The four state machines of RFC 3261 §17 (figures 5–8) as amended by RFC 6026
//! (figures 5 and 7 gain the Accepted state). One struct serves all four: they share
//! their data (a request, a flow, a last message, a timer table) and differ in how they
//! react, which the `match` on kind and state below spells out case by case.

use super::build::build_ack;
use super::table::TimerQueue;
use super::timer::{Timer, TimerConfig, TimerTable};
use super::{Event, Kind, State, TransactionError, TransactionKey, Transmit};
use crate::builder::response_to;
use crate::message::Message;
use crate::method::Method;
use crate::transport::Flow;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One entry of the layer's timer queue, ordered by when it is due. Entries are never
/// removed early: a transaction that re-arms or clears a timer leaves its old entry
/// behind, and the entry is skipped when it surfaces because it no longer equals the
/// transaction's table (lazy deletion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerEntry {
    pub(crate) at: Instant,
    pub(crate) key: TransactionKey,
    pub(crate) timer: Timer,
}

/// What the machines produce, owned by the layer and lent to a machine for one step.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) timers: TimerQueue,
}

/// Everything one step of a machine needs besides the machine itself.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Instant,
    pub(crate) key: TransactionKey,
    pub(crate) cfg: &'a TimerConfig,
    pub(crate) out: &'a mut Output,
}

/// Whether the transaction lives on after a step. `Terminate` makes the layer remove it
/// at once (RFC 3261: "destroyed immediately" on entering Terminated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Next {
    Stay,
    Terminate,
}

/// One transaction.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub(crate) kind: Kind,
    pub(crate) state: State,
    /// Clients: where the request goes. Servers: where the request came from, which is
    /// where responses go (§18.2.2; the I/O layer applies received/rport).
    pub(crate) flow: Flow,
    /// The request. Kept by clients (retransmission, ACK, CANCEL) and INVITE servers
    /// (100 Trying); a non-INVITE server never needs it again, so it keeps nothing.
    pub(crate) request: Option<Message>,
    /// Servers: the last response sent, resent on request retransmissions. INVITE
    /// clients: the ACK sent for a non-2xx final response, resent on its retransmissions.
    pub(crate) last: Option<Bytes>,
    pub(crate) timers: TimerTable,
    /// The current retransmit interval of timer A, E or G.
    pub(crate) interval: Duration,
    /// The matching key this transaction is indexed under, to unindex it on removal.
    pub(crate) match_key: Arc<str>,
}

impl Transaction {
    fn arm(&mut self, ctx: &mut Ctx<'_>, timer: Timer, after: Duration) {
        let at = ctx.now + after;
        self.timers.set(timer, at);
        ctx.out.timers.push(TimerEntry {
            at,
            key: ctx.key,
            timer,
        });
    }

    fn send(&self, ctx: &mut Ctx<'_>, bytes: Bytes) {
        ctx.out.transmits.push_back(Transmit {
            flow: self.flow,
            bytes,
            key: Some(ctx.key),
        });
    }

    fn resend_last(&self, ctx: &mut Ctx<'_>) {
        if let Some(b) = &self.last {
            self.send(ctx, b.clone());
        }
    }

    fn resend_request(&self, ctx: &mut Ctx<'_>) {
        if let Some(r) = &self.request {
            self.send(ctx, r.as_bytes().clone());
        }
    }

    fn unreliable(&self) -> bool {
        !self.flow.transport.is_reliable()
    }

    /// Enters a lingering state: arms the linger timer, or ends the transaction at once
    /// when the timer is zero (reliable transports), rather than keeping it for a tick.
    fn linger(&mut self, ctx: &mut Ctx<'_>, timer: Timer) -> Next {
        let d = ctx.cfg.linger(timer, self.flow.transport);
        if d.is_zero() {
            Next::Terminate
        } else {
            self.arm(ctx, timer, d);
            Next::Stay
        }
    }

    fn event(ctx: &mut Ctx<'_>, e: Event) {
        ctx.out.events.push_back(e);
    }

    // ----- starting -----

    /// Starts a client transaction (§17.1.1.2, §17.1.2.2): sends the request and arms
    /// the retransmit and timeout timers.
    pub(crate) fn start_client(
        ctx: &mut Ctx<'_>,
        request: Message,
        flow: Flow,
        match_key: Arc<str>,
    ) -> Transaction {
        let invite = request.method() == Some(&Method::Invite);
        let mut tx = Transaction {
            kind: if invite {
                Kind::InviteClient
            } else {
                Kind::NonInviteClient
            },
            state: if invite {
                State::Calling
            } else {
                State::Trying
            },
            flow,
            request: Some(request),
            last: None,
            timers: TimerTable::default(),
            interval: ctx.cfg.t1,
            match_key,
        };
        tx.resend_request(ctx);
        let (retransmit, timeout) = if invite {
            (Timer::A, Timer::B)
        } else {
            (Timer::E, Timer::F)
        };
        if tx.unreliable() {
            tx.arm(ctx, retransmit, ctx.cfg.t1);
        }
        tx.arm(ctx, timeout, ctx.cfg.t1x64());
        if let (true, Some(c)) = (invite, ctx.cfg.timer_c) {
            tx.arm(ctx, Timer::C, c);
        }
        tx
    }

    /// Starts a server transaction (§17.2.1, §17.2.2) and hands the request to the TU.
    pub(crate) fn start_server(
        ctx: &mut Ctx<'_>,
        request: Message,
        flow: Flow,
        match_key: Arc<str>,
    ) -> Transaction {
        let invite = request.method() == Some(&Method::Invite);
        let mut tx = Transaction {
            kind: if invite {
                Kind::InviteServer
            } else {
                Kind::NonInviteServer
            },
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            flow,
            request: invite.then(|| request.clone()),
            last: None,
            timers: TimerTable::default(),
            interval: ctx.cfg.t1,
            match_key,
        };
        if let (true, Some(d)) = (invite, ctx.cfg.trying_delay) {
            tx.arm(ctx, Timer::Trying, d);
        }
        Self::event(
            ctx,
            Event::Request {
                key: ctx.key,
                request,
                flow,
            },
        );
        tx
    }

    // ----- client side -----

    /// A response matched this client transaction (§17.1.1.2, §17.1.2.2, RFC 6026 §7.2).
    pub(crate) fn on_response(&mut self, ctx: &mut Ctx<'_>, response: Message) -> Next {
        let Some(code) = response.status() else {
            return Next::Stay;
        };
        let key = ctx.key;
        match (self.kind, self.state) {
            (Kind::NonInviteClient, State::Trying | State::Proceeding) => {
                if code < 200 {
                    self.state = State::Proceeding;
                    Self::event(ctx, Event::Response { key, response });
                    Next::Stay
                } else {
                    self.state = State::Completed;
                    self.timers.clear_all();
                    Self::event(ctx, Event::Response { key, response });
                    self.linger(ctx, Timer::K)
                }
            }
            (Kind::InviteClient, State::Calling | State::Proceeding) => {
                if code < 200 {
                    if self.state == State::Calling {
                        // No more retransmissions once the far end is heard from, and
                        // timer B only guards Calling.
                        self.state = State::Proceeding;
                        self.timers.clear(Timer::A);
                        self.timers.clear(Timer::B);
                    }
                    if let Some(c) = ctx.cfg.timer_c {
                        self.arm(ctx, Timer::C, c);
                    }
                    Self::event(ctx, Event::Response { key, response });
                    Next::Stay
                } else if code < 300 {
                    // RFC 6026: the TU ACKs a 2xx; the transaction only waits in Accepted
                    // to pass up retransmissions and other forks' 2xx.
                    self.state = State::Accepted;
                    self.timers.clear_all();
                    Self::event(ctx, Event::Response { key, response });
                    self.arm(ctx, Timer::M, ctx.cfg.t1x64());
                    Next::Stay
                } else {
                    self.state = State::Completed;
                    self.timers.clear_all();
                    // A response we matched but cannot ACK (no To) still completes the
                    // transaction; the far end's retransmissions then stop at its timer H.
                    let ack = self.request.as_ref().map(|inv| build_ack(inv, &response));
                    if let Some(Ok(ack)) = ack {
                        let bytes = ack.as_bytes().clone();
                        self.send(ctx, bytes.clone());
                        self.last = Some(bytes);
                    }
                    Self::event(ctx, Event::Response { key, response });
                    self.linger(ctx, Timer::D)
                }
            }
            (Kind::InviteClient, State::Completed) => {
                // §17.1.1.2: a retransmitted final response is re-ACKed, not passed up.
                if code >= 300 {
                    self.resend_last(ctx);
                }
                Next::Stay
            }
            (Kind::InviteClient, State::Accepted) => {
                if (200..300).contains(&code) {
                    Self::event(ctx, Event::Response { key, response });
                }
                Next::Stay
            }
            // Non-INVITE Completed absorbs retransmissions; servers get no responses.
            _ => Next::Stay,
        }
    }

    // ----- server side -----

    /// A request (a retransmission, or an ACK for an INVITE) matched this server
    /// transaction (§17.2.1, §17.2.2, RFC 6026 §7.1).
    pub(crate) fn on_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: Message,
        flow: Flow,
        is_ack: bool,
    ) -> Next {
        match (self.kind, self.state, is_ack) {
            (Kind::NonInviteServer, State::Proceeding | State::Completed, false)
            | (Kind::InviteServer, State::Proceeding | State::Completed, false) => {
                self.resend_last(ctx);
                Next::Stay
            }
            (Kind::InviteServer, State::Completed, true) => {
                self.state = State::Confirmed;
                self.timers.clear_all();
                self.linger(ctx, Timer::I)
            }
            (Kind::InviteServer, State::Accepted, true) => {
                // RFC 6026 §7.1: the ACK to a 2xx goes to the TU, never absorbed.
                Self::event(
                    ctx,
                    Event::Ack {
                        key: Some(ctx.key),
                        request,
                        flow,
                    },
                );
                Next::Stay
            }
            // Non-INVITE Trying, INVITE Confirmed and Accepted absorb retransmissions
            // (RFC 6026: the TU retransmits its own 2xx); an ACK before any final
            // response acknowledges nothing.
            _ => Next::Stay,
        }
    }

    /// The TU's response for this server transaction.
    pub(crate) fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        code: u16,
        bytes: Bytes,
    ) -> Result<Next, TransactionError> {
        let invalid = |state, action| TransactionError::InvalidState {
            key: ctx.key,
            state,
            action,
        };
        match (self.kind, self.state) {
            (Kind::NonInviteServer, State::Trying | State::Proceeding) => {
                self.send(ctx, bytes.clone());
                self.last = Some(bytes);
                if code < 200 {
                    self.state = State::Proceeding;
                    Ok(Next::Stay)
                } else {
                    self.state = State::Completed;
                    Ok(self.linger(ctx, Timer::J))
                }
            }
            (Kind::InviteServer, State::Proceeding) => {
                // Any response from the TU means it is alive: no 100 Trying from us.
                self.timers.clear(Timer::Trying);
                self.send(ctx, bytes.clone());
                self.last = Some(bytes);
                if code < 200 {
                    Ok(Next::Stay)
                } else if code < 300 {
                    self.state = State::Accepted;
                    self.arm(ctx, Timer::L, ctx.cfg.t1x64());
                    Ok(Next::Stay)
                } else {
                    self.state = State::Completed;
                    if self.unreliable() {
                        self.interval = ctx.cfg.t1;
                        self.arm(ctx, Timer::G, ctx.cfg.t1);
                    }
                    self.arm(ctx, Timer::H, ctx.cfg.t1x64());
                    Ok(Next::Stay)
                }
            }
            (Kind::InviteServer, State::Accepted) if (200..300).contains(&code) => {
                // RFC 6026 §8.7: the TU's 2xx retransmissions pass straight through.
                self.send(ctx, bytes);
                Ok(Next::Stay)
            }
            (Kind::InviteServer, State::Accepted) => Err(invalid(
                self.state,
                "send a non-2xx response after a 2xx; only 2xx retransmissions may follow",
            )),
            (Kind::InviteClient | Kind::NonInviteClient, state) => Err(invalid(
                state,
                "send a response: it is a client transaction",
            )),
            (_, state) => Err(invalid(
                state,
                "send another response after its final response",
            )),
        }
    }

    // ----- both -----

    /// A timer of this transaction fired. The layer has already cleared its slot.
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) -> Next {
        let key = ctx.key;
        match (timer, self.state) {
            (Timer::A, State::Calling) => {
                // §17.1.1.2: INVITE retransmit intervals double without the T2 cap that
                // non-INVITE requests have; timer B ends them after 64·T1.
                self.resend_request(ctx);
                self.interval = self.interval.saturating_mul(2);
                self.arm(ctx, Timer::A, self.interval);
                Next::Stay
            }
            (Timer::E, State::Trying) => {
                self.resend_request(ctx);
                self.interval = (self.interval.saturating_mul(2)).min(ctx.cfg.t2);
                self.arm(ctx, Timer::E, self.interval);
                Next::Stay
            }
            (Timer::E, State::Proceeding) => {
                // §17.1.2.2: once a provisional arrived, retransmit every T2.
                self.resend_request(ctx);
                self.arm(ctx, Timer::E, ctx.cfg.t2);
                Next::Stay
            }
            (Timer::G, State::Completed) => {
                self.resend_last(ctx);
                self.interval = (self.interval.saturating_mul(2)).min(ctx.cfg.t2);
                self.arm(ctx, Timer::G, self.interval);
                Next::Stay
            }
            (Timer::Trying, State::Proceeding) if self.last.is_none() => {
                // §17.2.1: the TU has been silent for 200 ms, so stop the client's
                // INVITE retransmissions with our own 100 Trying.
                let trying = self
                    .request
                    .as_ref()
                    .map(|r| response_to(r, 100, None).into_bytes());
                if let Some(Ok(bytes)) = trying {
                    self.send(ctx, bytes.clone());
                    self.last = Some(bytes);
                }
                Next::Stay
            }
            (Timer::C, State::Proceeding) => {
                // §16.6 step 11 / §16.8: the TU should CANCEL now. Give the CANCEL's 487
                // 64·T1 to arrive (§9.1), then give up as timer B would.
                Self::event(ctx, Event::Timeout { key, timer });
                self.arm(ctx, Timer::B, ctx.cfg.t1x64());
                Next::Stay
            }
            (Timer::B | Timer::C, State::Calling | State::Proceeding)
            | (Timer::F, State::Trying | State::Proceeding)
            | (Timer::H, State::Completed) => {
                Self::event(ctx, Event::Timeout { key, timer });
                Next::Terminate
            }
            (Timer::D | Timer::J | Timer::K, State::Completed)
            | (Timer::I, State::Confirmed)
            | (Timer::L | Timer::M, State::Accepted) => Next::Terminate,
            // A timer left over from an earlier state: nothing to do.
            _ => Next::Stay,
        }
    }

    /// Sending one of this transaction's messages failed (§17.1.4, §17.2.4).
    pub(crate) fn on_transport_error(&mut self, ctx: &mut Ctx<'_>) -> Next {
        Self::event(ctx, Event::TransportError { key: ctx.key });
        match self.kind {
            Kind::InviteClient | Kind::NonInviteClient => Next::Terminate,
            // RFC 6026 §8.8 replaces §17.2.4: a server transaction stays in its state
            // and lets its timers end it, so it still absorbs retransmissions.
            Kind::InviteServer | Kind::NonInviteServer => Next::Stay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table holds one of these per slot: a guard against it quietly growing.
    /// (336 bytes on 64-bit Linux when written: a Message, a Flow, the timer table.)
    #[test]
    fn transaction_stays_small() {
        assert!(
            size_of::<Transaction>() <= 352,
            "{}",
            size_of::<Transaction>()
        );
        assert_eq!(size_of::<TimerTable>(), 4 * size_of::<Option<Instant>>());
    }
}
