//! SIP transactions (RFC 3261 §17, with RFC 6026's Accepted states), sans-IO.
//!
//! A transaction is a request and its responses, made reliable over unreliable transports
//! by retransmission timers. This module holds the four state machines (INVITE and
//! non-INVITE, client and server) and the [`TransactionLayer`], the table that routes
//! each received message to its transaction (§17.1.3, §17.2.3), starts new ones and
//! runs their timers from a single queue.
//!
//! Nothing here touches a socket or a clock. The I/O layer feeds the layer received
//! messages, TU commands and timer ticks, each with an explicit `now`, and the layer
//! answers with [`Transmit`]s (bytes for a flow), [`Event`]s (for the TU) and the next
//! instant it wants to be woken ([`TransactionLayer::poll_timeout`]).
//!
//! # The drain rule
//!
//! After **every** `handle_*`, `send_*` or [`TransactionLayer::cancel`] call:
//!
//! 1. call [`TransactionLayer::poll_transmit`] until it returns `None`, sending each
//!    [`Transmit`] (a send that fails is reported back with
//!    [`TransactionLayer::handle_transport_error`]);
//! 2. call [`TransactionLayer::poll_event`] until it returns `None`, handing each
//!    [`Event`] to the TU (which may call `send_*` again: then start over at 1);
//! 3. sleep until [`TransactionLayer::poll_timeout`] (or the next received message),
//!    then call [`TransactionLayer::handle_timeout`] with the current time.
//!
//! Transmits first, so a response the layer resends on its own leaves before the TU
//! reacts to anything. Calling `handle_timeout` early, late or twice is harmless: a
//! timer fires once, at the first call whose `now` is at or past it.
//!
//! # Example
//!
//! ```
//! use sip_core::transaction::{Event, TransactionLayer, TimerConfig};
//! use sip_core::{Flow, Message, Transport, response_to};
//! use std::time::{Duration, Instant};
//!
//! let now = Instant::now(); // the I/O layer's clock; the core never reads one itself
//! let flow = Flow {
//!     transport: Transport::Udp,
//!     remote: "192.0.2.1:5060".parse().unwrap(),
//!     local: None,
//!     connection: None,
//! };
//! let options = Message::parse(bytes::Bytes::from_static(
//!     b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
//!       Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
//!       Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\n\
//!       From: <sip:alice@example.com>;tag=1928301774\r\n\
//!       Call-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n",
//! )).unwrap();
//!
//! let mut layer = TransactionLayer::new(TimerConfig::default());
//! layer.handle_message(now, options, flow).unwrap();
//! let Some(Event::Request { key, request, .. }) = layer.poll_event() else { panic!() };
//! let ok = response_to(&request, 200, Some("x1")).build().unwrap();
//! layer.send_response(now, key, ok).unwrap();
//! assert!(layer.poll_transmit().is_some()); // the 200 OK
//! // Timer J keeps the transaction 64·T1 to answer retransmissions, then it ends.
//! layer.handle_timeout(layer.poll_timeout().unwrap());
//! assert_eq!(layer.len(), 0);
//! # let _ = Duration::ZERO;
//! ```

mod build;
mod error;
mod key;
mod machine;
mod table;
mod timer;

pub use build::{build_ack, build_cancel};
pub use error::TransactionError;
pub use key::TransactionKey;
pub use timer::{Timer, TimerConfig};

use crate::message::Message;
use crate::method::Method;
use crate::transport::Flow;
use bytes::Bytes;
use machine::{Ctx, Next, Output, TimerEntry, Transaction};
use std::sync::Arc;
use std::time::Instant;
use table::{MatchIndex, Slab};

/// Which of the four machines a transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// INVITE client (RFC 3261 figure 5, RFC 6026).
    InviteClient,
    /// Non-INVITE client (figure 6).
    NonInviteClient,
    /// INVITE server (figure 7, RFC 6026).
    InviteServer,
    /// Non-INVITE server (figure 8).
    NonInviteServer,
}

/// A transaction's state. Which ones a transaction passes through depends on its
/// [`Kind`]; Terminated is never observed because the layer removes a transaction the
/// moment it gets there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// INVITE client: request sent, nothing heard yet.
    Calling,
    /// Non-INVITE client: request sent, nothing heard; non-INVITE server: request
    /// received, no response sent yet.
    Trying,
    /// A provisional response was received (client) or is the last one sent (server).
    Proceeding,
    /// A final response (non-2xx for INVITE) was received or sent; lingering to absorb
    /// retransmissions.
    Completed,
    /// INVITE server: the ACK for a non-2xx arrived; lingering for its retransmissions.
    Confirmed,
    /// INVITE, RFC 6026: a 2xx was received or sent; the TU owns its reliability.
    Accepted,
    /// Finished; the transaction is gone.
    Terminated,
}

/// Bytes to send, and where. `key` names the transaction that sent them, for the I/O
/// layer to report a failed send with [`TransactionLayer::handle_transport_error`];
/// it is `None` for [`TransactionLayer::send_stateless`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a transmit that is not sent is a lost message"]
pub struct Transmit {
    /// Where to send.
    pub flow: Flow,
    /// The message.
    pub bytes: Bytes,
    /// The transaction that sent it.
    pub key: Option<TransactionKey>,
}

/// What the layer tells the TU.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A request that starts a new server transaction. Answer it with
    /// [`TransactionLayer::send_response`] and this `key`. For a CANCEL,
    /// [`TransactionLayer::find_cancelled`] finds the INVITE it cancels.
    Request {
        /// The new server transaction.
        key: TransactionKey,
        /// The request.
        request: Message,
        /// Where it came from (responses go back there).
        flow: Flow,
    },
    /// A response for a client transaction: provisionals, the final response, and in
    /// the INVITE Accepted state every further 2xx (retransmissions and other forks;
    /// the TU ACKs each). Retransmitted non-2xx finals are absorbed and re-ACKed.
    Response {
        /// The client transaction.
        key: TransactionKey,
        /// The response.
        response: Message,
    },
    /// An ACK that the transaction layer does not absorb: the ACK to a 2xx. `key` is
    /// the INVITE server transaction when the ACK matched one in Accepted (RFC 6026
    /// §7.1; RFC 2543 peers, or peers reusing the INVITE branch), `None` when it matched
    /// nothing (the normal RFC 3261 case: the ACK to a 2xx has its own branch). The
    /// dialog layer matches it by dialog.
    Ack {
        /// The INVITE server transaction, when the ACK matched one.
        key: Option<TransactionKey>,
        /// The ACK.
        request: Message,
        /// Where it came from.
        flow: Flow,
    },
    /// A response that matches no client transaction. RFC 6026 §8.9: an element other
    /// than a stateless proxy discards it; it is reported so one can log or forward.
    StrayResponse {
        /// The response.
        response: Message,
        /// Where it came from.
        flow: Flow,
    },
    /// A transaction timer ran out. B, F: no final response, the client transaction
    /// failed (treat as 408, §8.1.3.1). H: the ACK never came. C in Proceeding: no final
    /// response in time; send a CANCEL (the transaction stays 64·T1 for the 487), and C
    /// in Calling ends the transaction like B.
    Timeout {
        /// The transaction.
        key: TransactionKey,
        /// Which timer.
        timer: Timer,
    },
    /// A send for this transaction failed. Client transactions terminate (§17.1.4);
    /// server transactions stay in their state and let their timers end them
    /// (RFC 6026 §8.8).
    TransportError {
        /// The transaction.
        key: TransactionKey,
    },
    /// The transaction reached Terminated and was removed; its key is dead.
    Terminated {
        /// The transaction.
        key: TransactionKey,
    },
}

/// The transaction table: all live client and server transactions, their matching
/// index and their timers. See the [module docs](self) for the drain rule.
#[derive(Debug)]
pub struct TransactionLayer {
    config: TimerConfig,
    /// The transactions; `TransactionKey` addresses them, and a generation bump on
    /// removal invalidates old keys.
    slots: Slab<Transaction>,
    /// Matching key to transaction. Keys are `Arc<str>` shared with the transaction, so
    /// removal needs no recomputation and the key text is allocated once.
    index: MatchIndex,
    out: Output,
    /// Scratch space for due timers, kept to avoid an allocation per tick.
    due: Vec<TimerEntry>,
}

impl Default for TransactionLayer {
    fn default() -> Self {
        Self::new(TimerConfig::default())
    }
}

impl TransactionLayer {
    /// An empty table using `config`'s timer values.
    pub fn new(config: TimerConfig) -> Self {
        TransactionLayer {
            config,
            slots: Slab::new(),
            index: MatchIndex::new(),
            out: Output::default(),
            due: Vec::new(),
        }
    }

    /// The timer values in use.
    pub fn config(&self) -> &TimerConfig {
        &self.config
    }

    /// How many transactions are live.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.slots.len() == 0
    }

    /// Entries in the timer queue, including ones left behind by re-armed or finished
    /// timers that have not surfaced yet (lazy deletion). For diagnostics and tests.
    pub fn scheduled_timers(&self) -> usize {
        self.out.timers.len()
    }

    /// The state of a live transaction.
    pub fn state(&self, key: TransactionKey) -> Option<State> {
        self.get(key).map(|tx| tx.state)
    }

    /// The kind of a live transaction.
    pub fn kind(&self, key: TransactionKey) -> Option<Kind> {
        self.get(key).map(|tx| tx.kind)
    }

    /// The request of a live client transaction or INVITE server transaction (a
    /// non-INVITE server keeps none: the TU got it in [`Event::Request`]).
    pub fn request(&self, key: TransactionKey) -> Option<&Message> {
        self.get(key).and_then(|tx| tx.request.as_ref())
    }

    // ----- inputs -----

    /// A message arrived on `flow`. Requests go to their server transaction (a
    /// retransmission or an ACK) or start one ([`Event::Request`]); an ACK matching
    /// nothing becomes [`Event::Ack`]. Responses go to their client transaction or
    /// become [`Event::StrayResponse`].
    ///
    /// Fails, changing nothing, when the message lacks what matching needs
    /// ([`TransactionError::Unmatchable`]: the peer's fault; answer a request with 400
    /// statelessly if it can be answered at all).
    pub fn handle_message(
        &mut self,
        now: Instant,
        msg: Message,
        flow: Flow,
    ) -> Result<(), TransactionError> {
        let result = if msg.is_request() {
            self.handle_request(now, msg, flow)
        } else {
            self.handle_response(now, msg, flow)
        };
        self.prune();
        result
    }

    fn handle_request(
        &mut self,
        now: Instant,
        msg: Message,
        flow: Flow,
    ) -> Result<(), TransactionError> {
        let is_ack = msg.method() == Some(&Method::Ack);
        let (key_text, rfc2543) =
            key::server_key(&msg, None, false).map_err(TransactionError::Unmatchable)?;
        if let Some(key) = self.index.get(key_text.as_str()) {
            self.step(now, key, |tx, ctx| tx.on_request(ctx, msg, flow, is_ack));
            return Ok(());
        }
        if is_ack {
            // RFC 2543: the ACK to an initial INVITE carries the To tag of our response,
            // which the INVITE (and so its key) lacked. Look up without it and check
            // the tag against the response we sent.
            let found = if rfc2543 {
                self.find_rfc2543_ack(&msg)
            } else {
                None
            };
            if let Some(key) = found {
                self.step(now, key, |tx, ctx| tx.on_request(ctx, msg, flow, true));
                return Ok(());
            }
            self.out.events.push_back(Event::Ack {
                key: None,
                request: msg,
                flow,
            });
            return Ok(());
        }
        let match_key: Arc<str> = key_text.into();
        self.insert_with(now, match_key, |ctx, mk| {
            Transaction::start_server(ctx, msg, flow, mk)
        });
        Ok(())
    }

    fn find_rfc2543_ack(&self, ack: &Message) -> Option<TransactionKey> {
        let (text, _) = key::server_key(ack, None, true).ok()?;
        let key = self.index.get(text.as_str())?;
        let ack_tag = ack.to().ok()?.tag()?;
        let sent = Message::parse(self.get(key)?.last.clone()?).ok()?;
        let ok = sent.to().ok()?.tag() == Some(ack_tag);
        ok.then_some(key)
    }

    fn handle_response(
        &mut self,
        now: Instant,
        msg: Message,
        flow: Flow,
    ) -> Result<(), TransactionError> {
        let key_text = key::client_key(&msg).map_err(TransactionError::Unmatchable)?;
        match self.index.get(key_text.as_str()) {
            Some(key) => self.step(now, key, |tx, ctx| tx.on_response(ctx, msg)),
            None => self.out.events.push_back(Event::StrayResponse {
                response: msg,
                flow,
            }),
        }
        Ok(())
    }

    /// Fires every timer due at `now`. Calling it before anything is due does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Collect first, then fire: a timer re-armed for `now` or earlier (a zero T1)
        // waits for the next call instead of looping here.
        let mut due = std::mem::take(&mut self.due);
        while let Some(top) = self.out.timers.peek() {
            if top.at > now {
                break;
            }
            if let Some(e) = self.out.timers.pop() {
                due.push(e);
            }
        }
        for e in due.drain(..) {
            let live = self
                .get(e.key)
                .is_some_and(|tx| tx.timers.get(e.timer) == Some(e.at));
            if live {
                self.step(now, e.key, |tx, ctx| {
                    tx.timers.clear(e.timer);
                    tx.on_timer(ctx, e.timer)
                });
            }
        }
        self.due = due;
        self.prune();
    }

    /// Sending a message of transaction `key` failed (the [`Transmit::key`]). Reports
    /// [`Event::TransportError`]; client transactions then terminate (§17.1.4), server
    /// transactions stay (RFC 6026 §8.8). An unknown key (the transaction already
    /// ended, which happens on reliable transports) is an error the I/O layer may
    /// ignore.
    pub fn handle_transport_error(
        &mut self,
        now: Instant,
        key: TransactionKey,
    ) -> Result<(), TransactionError> {
        if self.get(key).is_none() {
            return Err(TransactionError::UnknownTransaction(key));
        }
        self.step(now, key, |tx, ctx| tx.on_transport_error(ctx));
        self.prune();
        Ok(())
    }

    /// Starts a client transaction: sends `request` on `flow` and retransmits it as
    /// needed. The request must carry a top Via with an RFC 3261 branch that is unique
    /// (§8.1.1.7), and must not be an ACK (see [`TransactionLayer::send_stateless`]).
    /// Responses come back as [`Event::Response`] with the returned key.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        flow: Flow,
    ) -> Result<TransactionKey, TransactionError> {
        match request.method() {
            None => {
                return Err(TransactionError::WrongKind {
                    expected: "request",
                    got: "response",
                });
            }
            Some(Method::Ack) => return Err(TransactionError::AckIsNotATransaction),
            Some(_) => {}
        }
        let build_err = |source| TransactionError::Build {
            what: "client transaction",
            source,
        };
        let via = request.top_via().map_err(build_err)?;
        let branch = match via.branch() {
            Some(b) if via.has_rfc3261_branch() => b,
            other => return Err(TransactionError::NoBranch(other.map(str::to_owned))),
        };
        let cseq = request.cseq().map_err(build_err)?;
        let key_text = key::client_key_of(branch, &cseq.method);
        if self.index.contains(key_text.as_str()) {
            return Err(TransactionError::DuplicateBranch(branch.to_owned()));
        }
        let key = self.insert_with(now, key_text.into(), |ctx, mk| {
            Transaction::start_client(ctx, request, flow, mk)
        });
        self.prune();
        Ok(key)
    }

    /// Gives server transaction `key` the TU's `response` to send. 2xx to an INVITE
    /// moves it to Accepted, where the TU's 2xx retransmissions are passed on too (the
    /// transaction never retransmits a 2xx itself, RFC 6026); a non-2xx final response
    /// is retransmitted by the transaction until the ACK.
    pub fn send_response(
        &mut self,
        now: Instant,
        key: TransactionKey,
        response: Message,
    ) -> Result<(), TransactionError> {
        let status = response.status().ok_or(TransactionError::WrongKind {
            expected: "response",
            got: "request",
        })?;
        self.send_built_response(now, key, status, response.as_bytes().clone())
    }

    /// [`TransactionLayer::send_response`] for a response the TU wrote itself and knows
    /// the status of (see [`crate::builder::status_of_built`]): the bytes are sent as they
    /// are, without parsing them again.
    pub fn send_built_response(
        &mut self,
        now: Instant,
        key: TransactionKey,
        status: u16,
        bytes: Bytes,
    ) -> Result<(), TransactionError> {
        if self.get(key).is_none() {
            return Err(TransactionError::UnknownTransaction(key));
        }
        let mut result = Ok(());
        self.step(now, key, |tx, ctx| {
            match tx.send_response(ctx, status, bytes) {
                Ok(next) => next,
                Err(e) => {
                    result = Err(e);
                    Next::Stay
                }
            }
        });
        self.prune();
        result
    }

    /// Cancels the INVITE of client transaction `key` (RFC 3261 §9.1): builds the
    /// CANCEL with [`build_cancel`] and starts its own non-INVITE client transaction on
    /// the INVITE's flow, whose key is returned. Allowed only in Proceeding: before any
    /// provisional the CANCEL could overtake the INVITE (wait for one), after a final
    /// response there is nothing to cancel. The INVITE transaction then normally ends
    /// with a 487.
    pub fn cancel(
        &mut self,
        now: Instant,
        key: TransactionKey,
    ) -> Result<TransactionKey, TransactionError> {
        let tx = self
            .get(key)
            .ok_or(TransactionError::UnknownTransaction(key))?;
        if tx.kind != Kind::InviteClient || tx.state != State::Proceeding {
            let action = if tx.state == State::Calling {
                "be cancelled yet: wait for a provisional response (RFC 3261 §9.1)"
            } else {
                "be cancelled: only an INVITE client transaction in Proceeding can"
            };
            return Err(TransactionError::InvalidState {
                key,
                state: tx.state,
                action,
            });
        }
        let flow = tx.flow;
        let invite = tx
            .request
            .as_ref()
            .ok_or(TransactionError::UnknownTransaction(key))?;
        let cancel = build_cancel(invite)?;
        self.send_request(now, cancel, flow)
    }

    /// Queues bytes outside any transaction: the ACK to a 2xx (§13.2.2.4), a stateless
    /// proxy's forwarding, a stateless 400. Comes out of
    /// [`TransactionLayer::poll_transmit`] with `key: None`.
    pub fn send_stateless(&mut self, flow: Flow, bytes: Bytes) {
        self.out.transmits.push_back(Transmit {
            flow,
            bytes,
            key: None,
        });
    }

    /// The INVITE server transaction a received CANCEL cancels (RFC 3261 §9.2: the
    /// CANCEL matches it by the §17.2.3 rules with method INVITE), if it is still live.
    pub fn find_cancelled(&self, cancel: &Message) -> Option<TransactionKey> {
        let (text, _) = key::server_key(cancel, Some(&Method::Invite), false).ok()?;
        let key = self.index.get(text.as_str())?;
        (self.get(key)?.kind == Kind::InviteServer).then_some(key)
    }

    // ----- outputs -----

    /// The next message to send. Drain until `None` after every input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next event for the TU. Drain until `None` after every input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When to call [`TransactionLayer::handle_timeout`] next: the earliest live timer
    /// of any transaction, or `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.out.timers.peek().map(|e| e.at)
    }

    // ----- internals -----

    fn get(&self, key: TransactionKey) -> Option<&Transaction> {
        self.slots.get(key)
    }

    /// Allocates a slot and key, builds the transaction there and indexes it.
    fn insert_with(
        &mut self,
        now: Instant,
        match_key: Arc<str>,
        make: impl FnOnce(&mut Ctx<'_>, Arc<str>) -> Transaction,
    ) -> TransactionKey {
        let key = self.slots.vacant_key();
        let mut ctx = Ctx {
            now,
            key,
            cfg: &self.config,
            out: &mut self.out,
        };
        let tx = make(&mut ctx, match_key.clone());
        self.slots.insert(key, tx);
        self.index.insert(match_key, key);
        key
    }

    /// Runs one step of transaction `key` and removes it if it terminated.
    fn step(
        &mut self,
        now: Instant,
        key: TransactionKey,
        f: impl FnOnce(&mut Transaction, &mut Ctx<'_>) -> Next,
    ) {
        let Some(tx) = self.slots.get_mut(key) else {
            return;
        };
        let mut ctx = Ctx {
            now,
            key,
            cfg: &self.config,
            out: &mut self.out,
        };
        if f(tx, &mut ctx) == Next::Terminate {
            self.remove(key);
        }
    }

    /// Drops a transaction without a word: no response, no event, no timer left. For a
    /// TU that hands the request of a server transaction to another transaction layer
    /// (a proxy passing an INVITE to its B2BUA), which answers it from then on: its
    /// retransmissions must reach that layer, not be absorbed here. `false` when the
    /// key is dead.
    pub fn forget(&mut self, key: TransactionKey) -> bool {
        let Some(tx) = self.slots.remove(key) else {
            return false;
        };
        self.index.remove(&tx.match_key);
        self.prune();
        true
    }

    fn remove(&mut self, key: TransactionKey) {
        let Some(tx) = self.slots.remove(key) else {
            return;
        };
        self.index.remove(&tx.match_key);
        self.out.events.push_back(Event::Terminated { key });
    }

    /// Pops queued timers that no longer match their transaction's table, so that
    /// [`TransactionLayer::poll_timeout`] reports a live timer, not a dead one.
    fn prune(&mut self) {
        while let Some(top) = self.out.timers.peek() {
            let e = *top;
            let live = self
                .get(e.key)
                .is_some_and(|tx| tx.timers.get(e.timer) == Some(e.at));
            if live {
                break;
            }
            self.out.timers.pop();
        }
    }
}
