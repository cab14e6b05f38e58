//! The dialog layer: every dialog of a user agent (or of both legs of a B2BUA) in one
//! table, with the timers RFC 3261 and RFC 4028 give them. See [`DialogLayer`].

use super::{Dialog, DialogError, DialogId, DialogState, Refusal, SessionTimer};
use super::{Refresher, SessionTimerAction};
use crate::ids::IdGenerator;
use crate::message::Message;
use crate::method::Method;
use crate::transaction::{TimerConfig, Transmit};
use crate::transport::{Flow, Transport};
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Our end of a dialog, as the application chooses it when the dialog is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEnd {
    /// Our Contact URI (without `<>`): the remote target the far end sends to.
    pub contact: String,
    /// The Via of our requests without branch and parameters:
    /// `SIP/2.0/UDP 192.0.2.1:5060`. The layer adds a fresh `branch` and `rport`.
    pub via: String,
    /// Where requests in the dialog go when its next hop has no numeric address (an
    /// outbound proxy, or the address the dialog-creating request came from).
    pub fallback: Flow,
    /// The transport for a numeric next hop whose URI names none.
    pub transport: Transport,
}

/// What to do with a 2xx to an INVITE from a second fork once a first one confirmed a
/// dialog (RFC 3261 §13.2.2.4: each 2xx creates its own dialog, and each is ACKed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForkPolicy {
    /// ACK it and hang it up with a BYE at once: one call is enough (a phone). Its
    /// retransmissions get the same ACK and no second BYE.
    #[default]
    HangUp,
    /// ACK it and keep the dialog: the application decides ([`ResponseOutcome::Forked`]).
    Keep,
}

/// Why the layer ended a dialog on its own ([`DialogEvent::Terminated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationReason {
    /// Our 2xx to an INVITE got no ACK in 64·T1 (RFC 3261 §13.3.1.4): BYE sent.
    NoAck,
    /// The far end did not refresh the session in time (RFC 4028 §10): BYE sent.
    SessionExpired,
    /// A 2xx from a second fork, hung up under [`ForkPolicy::HangUp`]: ACK and BYE sent.
    ExtraFork,
    /// An early dialog that no 2xx confirmed: the INVITE got a final non-2xx response,
    /// or 64·T1 passed since another fork's 2xx (RFC 3261 §13.2.2.4).
    NotConfirmed,
}

/// What the layer reports on its own, from a timer or as a consequence of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialogEvent {
    /// We refresh this dialog's session (RFC 4028) and the time has come: send a
    /// re-INVITE or UPDATE, then [`DialogLayer::session_refreshed`] on its 2xx. The
    /// timer counts from now again, so an unanswered refresh is asked for again.
    RefreshDue {
        /// The dialog.
        id: DialogId,
    },
    /// The layer ended the dialog (the BYE it sent, if any, came out of
    /// [`DialogLayer::poll_transmit`] before this event). The id is dead.
    Terminated {
        /// The dialog.
        id: DialogId,
        /// Why.
        reason: TerminationReason,
    },
}

/// What to send ([`DialogLayer::poll_transmit`]).
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a transmit that is not sent is a lost message"]
pub enum DialogTransmit {
    /// Bytes sent outside any transaction: the ACK to a 2xx (§13.2.2.4) or a
    /// retransmission of our 2xx (§13.3.1.4). `key` is `None`.
    Stateless(Transmit),
    /// A request the layer sends on its own inside a dialog (the BYE after a missing
    /// ACK, an expired session or an extra fork): start a client transaction for it
    /// ([`crate::transaction::TransactionLayer::send_request`]) on `flow`.
    Request {
        /// The dialog it was sent in (already ended in the layer).
        id: DialogId,
        /// The request.
        request: Message,
        /// Where it goes.
        flow: Flow,
    },
}

/// What a response fed to [`DialogLayer::handle_response`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// A 1xx with a To tag to an INVITE we sent: the early dialog it belongs to (made
    /// now or before).
    Early(DialogId),
    /// The first 2xx to an INVITE we sent: the dialog is confirmed and the ACK queued.
    Confirmed(DialogId),
    /// A 2xx again for a dialog the INVITE already confirmed (the first, or a fork kept
    /// under [`ForkPolicy::Keep`]): the ACK queued again.
    Retransmission(DialogId),
    /// A 2xx from another fork, hung up under [`ForkPolicy::HangUp`] (ACK and BYE
    /// queued, the dialog ended), or its retransmission (ACK queued again).
    ExtraForkEnded(DialogId),
    /// A 2xx from another fork kept under [`ForkPolicy::Keep`]: a second confirmed
    /// dialog, ACKed.
    Forked(DialogId),
    /// A final non-2xx to an INVITE we sent: its early dialogs are gone.
    Failed,
    /// A response to a request we sent inside this dialog: the remote target refreshed
    /// by a 2xx to a target refresh, a 2xx to a re-INVITE ACKed (again, for a
    /// retransmission).
    InDialog(DialogId),
    /// A response that belongs to no INVITE we told the layer of and no dialog.
    Unknown,
}

/// Our 2xx to an INVITE, sent again until its ACK (RFC 3261 §13.3.1.4).
#[derive(Debug, Clone)]
struct OkRetransmit {
    bytes: Bytes,
    flow: Flow,
    cseq: u32,
    interval: Duration,
    next: Instant,
    until: Instant,
}

/// One dialog and what the layer keeps beside it.
#[derive(Debug)]
struct Entry {
    dialog: Dialog,
    local: LocalEnd,
    /// Where requests in the dialog go (§12.2.1.1's next hop, see [`route_flow`]).
    flow: Flow,
    /// UAS: our 2xx until its ACK.
    ok: Option<OkRetransmit>,
    /// UAC: the last ACK we sent to a 2xx (CSeq and bytes), sent again for a
    /// retransmitted 2xx.
    ack: Option<(u32, Bytes)>,
    /// UAC: the CSeq of the INVITE whose 2xx awaits [`DialogLayer::send_held_ack`].
    held_ack: Option<u32>,
    session: Option<SessionTimer>,
}

/// The INVITE set up by [`DialogLayer::invite_sent`]: what a UAC needs to form the
/// dialogs its responses create, and the forks hung up.
#[derive(Debug)]
struct UacInvite {
    invite: Message,
    cseq: u32,
    local: LocalEnd,
    /// Dialogs its responses created (early or confirmed), by remote tag.
    dialogs: Vec<String>,
    /// The remote tag of the first 2xx.
    confirmed: Option<String>,
    /// Forks hung up: remote tag, the ACK and where it went.
    ended_forks: Vec<(String, Bytes, Flow)>,
    /// 64·T1 after the first 2xx: the early dialogs left are ended and this record
    /// forgotten (the INVITE transaction passes on no 2xx after that, RFC 6026 Timer M).
    expires: Option<Instant>,
    /// The first 2xx is not ACKed until [`DialogLayer::send_held_ack`].
    hold_ack: bool,
}

/// (Call-ID, local tag): an INVITE we sent and every dialog it creates share them.
type InviteKey = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Retransmit our 2xx, or give up on its ACK.
    Ok(DialogId),
    /// The session timer.
    Session(DialogId),
    /// The end of an INVITE's fork window.
    Invite(InviteKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TimerEntry {
    at: Instant,
    target: Target,
}

impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Earliest first in a max-heap.
        other.at.cmp(&self.at)
    }
}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Every dialog of a user agent, sans-IO, in the shape of the
/// [`TransactionLayer`](crate::transaction::TransactionLayer): fed what is received,
/// the application's commands and the time, each with an explicit `now`; polled for
/// what to send, for events and for when to be woken.
///
/// It keeps, per dialog ([`DialogId`]): the §12 state ([`Dialog`]), where its requests
/// go, our 2xx retransmitted until its ACK (§13.3.1.4, on the [`TimerConfig`]'s T1 and
/// T2, a BYE after 64·T1), the last ACK sent (again for a retransmitted 2xx), and the
/// RFC 4028 session timer. Per INVITE we sent ([`DialogLayer::invite_sent`]): the early
/// dialogs its provisional responses create, the dialog its first 2xx confirms, and the
/// 2xx of other forks ([`ForkPolicy`]).
///
/// It sits beside the transaction layer, not on it: in-dialog requests and responses
/// travel in transactions the application runs; it hands them to this layer
/// ([`DialogLayer::handle_request`], [`DialogLayer::handle_response`]) and ACKs to 2xx,
/// which are no transaction, too.
///
/// # Inputs, outputs and the drain rule
///
/// What an input does to the dialog it concerns is its return value (a refusal to
/// send, the dialog a response created). What the layer does on its own, on a timer or
/// to a dialog other than the one asked about, comes out of the polls. After **every**
/// `handle_*` call or command:
///
/// 1. call [`DialogLayer::poll_transmit`] until `None`, sending each
///    [`DialogTransmit`] (a [`DialogTransmit::Request`] starts a client transaction);
/// 2. call [`DialogLayer::poll_event`] until `None`;
/// 3. wake at [`DialogLayer::poll_timeout`] and call [`DialogLayer::handle_timeout`].
///
/// Transmits first, so that the BYE of a dialog the layer ended is on its way before
/// the application hears of the end. `handle_timeout` early, late or twice is harmless.
///
/// Requests the application asks for ([`DialogLayer::request`], [`DialogLayer::end`])
/// are returned to it to send, so that it keeps their transaction keys.
///
/// Nothing here reads a clock or draws a random number: branches come from the
/// [`IdGenerator`] given to [`DialogLayer::new`], tags and first CSeq numbers from the
/// application.
///
/// # Example
///
/// A UAS answers an INVITE; the layer sends the 2xx again until the ACK.
///
/// ```
/// use sip_core::dialog::{DialogLayer, DialogTransmit, LocalEnd};
/// use sip_core::ids::IdGenerator;
/// use sip_core::transaction::TimerConfig;
/// use sip_core::{Flow, Message, Transport, response_to};
/// use std::time::{Duration, Instant};
///
/// let alice = Flow {
///     transport: Transport::Udp,
///     remote: "192.0.2.1:5060".parse().unwrap(),
///     local: None,
///     connection: None,
/// };
/// let invite = Message::parse(bytes::Bytes::from_static(
///     b"INVITE sip:bob@192.0.2.4 SIP/2.0\r\n\
///       Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
///       Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\n\
///       From: <sip:alice@example.com>;tag=1928301774\r\n\
///       Call-ID: a84b4c76e66710\r\nCSeq: 1 INVITE\r\n\
///       Contact: <sip:alice@192.0.2.1>\r\nContent-Length: 0\r\n\r\n",
/// )).unwrap();
/// let now = Instant::now(); // the I/O layer's clock
/// let mut layer = DialogLayer::new(TimerConfig::default(), IdGenerator::new(&[7; 32]).unwrap());
/// let local = LocalEnd {
///     contact: "sip:bob@192.0.2.4".into(),
///     via: "SIP/2.0/UDP 192.0.2.4:5060".into(),
///     fallback: alice,
///     transport: Transport::Udp,
/// };
/// let id = layer.create_uas(&invite, "b0b", 1, local).unwrap();
/// let ok = response_to(&invite, 200, Some("b0b"))
///     .header("Contact", "<sip:bob@192.0.2.4>")
///     .build()
///     .unwrap();
/// // The 2xx goes out through the INVITE server transaction; the layer repeats it.
/// layer.send_2xx(now, &id, &ok, alice).unwrap();
/// layer.handle_timeout(now + Duration::from_millis(500)); // T1
/// assert!(matches!(layer.poll_transmit(), Some(DialogTransmit::Stateless(_))));
/// ```
#[derive(Debug)]
pub struct DialogLayer {
    config: TimerConfig,
    forks: ForkPolicy,
    ids: IdGenerator,
    dialogs: HashMap<DialogId, Entry>,
    invites: HashMap<InviteKey, UacInvite>,
    timers: BinaryHeap<TimerEntry>,
    transmits: VecDeque<DialogTransmit>,
    events: VecDeque<DialogEvent>,
}

impl DialogLayer {
    /// An empty layer on `config`'s T1 and T2, drawing Via branches from `ids`.
    pub fn new(config: TimerConfig, ids: IdGenerator) -> DialogLayer {
        DialogLayer {
            config,
            forks: ForkPolicy::default(),
            ids,
            dialogs: HashMap::new(),
            invites: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// What to do with a second fork's 2xx (default [`ForkPolicy::HangUp`]).
    pub fn set_fork_policy(&mut self, policy: ForkPolicy) {
        self.forks = policy;
    }

    /// How many dialogs are live.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// Whether no dialog and no INVITE we sent are left.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty() && self.invites.is_empty()
    }

    /// How many INVITEs we sent are still tracked (see [`DialogLayer::invite_sent`]).
    pub fn invites(&self) -> usize {
        self.invites.len()
    }

    /// A live dialog's state.
    pub fn get(&self, id: &DialogId) -> Option<&Dialog> {
        self.dialogs.get(id).map(|e| &e.dialog)
    }

    /// Where requests in a live dialog go.
    pub fn flow(&self, id: &DialogId) -> Option<Flow> {
        self.dialogs.get(id).map(|e| e.flow)
    }

    /// The session timer of a live dialog, if it has one.
    pub fn session_timer(&self, id: &DialogId) -> Option<&SessionTimer> {
        self.dialogs.get(id).and_then(|e| e.session.as_ref())
    }

    /// The live dialogs of a Call-ID (both legs of a B2BUA have their own Call-IDs;
    /// one Call-ID has several dialogs after forking).
    pub fn dialogs_of_call<'a>(&'a self, call_id: &'a str) -> impl Iterator<Item = &'a DialogId> {
        self.dialogs.keys().filter(move |id| id.call_id == call_id)
    }

    // ----- UAC -----

    /// We sent `invite` (or sent it again, with credentials): its provisional and 2xx
    /// responses will create dialogs ([`DialogLayer::handle_response`]) with `local`
    /// as our end. Call it for every new CSeq of the INVITE.
    pub fn invite_sent(&mut self, invite: &Message, local: LocalEnd) -> Result<(), DialogError> {
        let call_id = invite.call_id()?.to_owned();
        let tag = invite
            .from()?
            .tag()
            .ok_or(DialogError::NoTag("From"))?
            .to_owned();
        let cseq = invite.cseq()?.seq;
        let key = (call_id, tag);
        match self.invites.get_mut(&key) {
            Some(u) => {
                u.invite = invite.clone();
                u.cseq = cseq;
                u.local = local;
            }
            None => {
                self.invites.insert(
                    key,
                    UacInvite {
                        invite: invite.clone(),
                        cseq,
                        local,
                        dialogs: Vec::new(),
                        confirmed: None,
                        ended_forks: Vec::new(),
                        expires: None,
                        hold_ack: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// The first 2xx to the INVITE told of with [`DialogLayer::invite_sent`] (Call-ID,
    /// our tag) is not ACKed here but by [`DialogLayer::send_held_ack`]: the INVITE
    /// offered nothing, so the ACK carries the answer to the 2xx's offer, which comes
    /// from elsewhere (a B2BUA's other leg). Its retransmissions are ignored until then.
    pub fn hold_first_ack(&mut self, call_id: &str, local_tag: &str) {
        let key = (call_id.to_owned(), local_tag.to_owned());
        if let Some(u) = self.invites.get_mut(&key) {
            u.hold_ack = true;
        }
    }

    /// Sends the ACK held for dialog `id`'s 2xx ([`DialogLayer::hold_first_ack`]), with
    /// this body (content type, bytes) if any; it is also sent again for any
    /// retransmitted 2xx. `Err` when the dialog is gone or no ACK is held.
    pub fn send_held_ack(
        &mut self,
        id: &DialogId,
        body: Option<(&str, Bytes)>,
    ) -> Result<(), DialogError> {
        let branch = self.ids.branch();
        let entry = self.dialogs.get_mut(id).ok_or(DialogError::NoDialog)?;
        let seq = entry.held_ack.take().ok_or(DialogError::NoDialog)?;
        let via = format!("{};branch={branch};rport", entry.local.via);
        let mut b = entry.dialog.ack(seq, &via);
        if let Some((content_type, bytes)) = body {
            b = b.body(content_type, bytes);
        }
        let ack = b.into_bytes()?;
        entry.ack = Some((seq, ack.clone()));
        let flow = entry.flow;
        self.stateless(flow, ack);
        Ok(())
    }

    /// Our INVITE got no final response (it timed out, could not be sent, or the
    /// application gave up on it): its early dialogs and its record are forgotten. A
    /// dialog it confirmed stays.
    pub fn forget_invite(&mut self, call_id: &str, local_tag: &str) {
        let key = (call_id.to_owned(), local_tag.to_owned());
        if let Some(u) = self.invites.remove(&key) {
            for tag in u.dialogs {
                let id = DialogId {
                    call_id: call_id.to_owned(),
                    local_tag: local_tag.to_owned(),
                    remote_tag: tag,
                };
                if self
                    .dialogs
                    .get(&id)
                    .is_some_and(|e| e.dialog.state == DialogState::Early)
                {
                    self.dialogs.remove(&id);
                }
            }
        }
        self.prune();
    }

    /// A response to a request we sent: to an INVITE told of with
    /// [`DialogLayer::invite_sent`] (dialogs created, confirmed, ACKed, forks handled),
    /// or to a request inside a dialog (target refresh; a 2xx to a re-INVITE ACKed).
    pub fn handle_response(&mut self, now: Instant, response: &Message) -> ResponseOutcome {
        let outcome = self.on_response(now, response);
        self.prune();
        outcome
    }

    fn on_response(&mut self, now: Instant, response: &Message) -> ResponseOutcome {
        let Some(status) = response.status() else {
            return ResponseOutcome::Unknown;
        };
        let (Ok(call_id), Ok(from), Ok(cseq)) =
            (response.call_id(), response.from(), response.cseq())
        else {
            return ResponseOutcome::Unknown;
        };
        let Some(local_tag) = from.tag() else {
            return ResponseOutcome::Unknown;
        };
        let key = (call_id.to_owned(), local_tag.to_owned());
        let initial = cseq.method == Method::Invite
            && self.invites.get(&key).is_some_and(|u| u.cseq == cseq.seq);
        if initial {
            return self.on_invite_response(now, key, status, response);
        }
        let Some(id) = DialogId::of_received(response) else {
            return ResponseOutcome::Unknown;
        };
        let Some(entry) = self.dialogs.get_mut(&id) else {
            return ResponseOutcome::Unknown;
        };
        entry.dialog.receive_response(response, false);
        entry.flow = route_flow(&entry.dialog, &entry.local);
        if cseq.method == Method::Invite && (200..300).contains(&status) {
            // Every 2xx to a re-INVITE is ACKed, retransmissions included.
            let via = format!("{};branch={};rport", entry.local.via, self.ids.branch());
            let flow = entry.flow;
            if let Ok(ack) = entry.dialog.ack(cseq.seq, &via).into_bytes() {
                entry.ack = Some((cseq.seq, ack.clone()));
                self.stateless(flow, ack);
            }
        }
        ResponseOutcome::InDialog(id)
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        key: InviteKey,
        status: u16,
        response: &Message,
    ) -> ResponseOutcome {
        let remote_tag = response.to().ok().and_then(|t| t.tag()).map(str::to_owned);
        if status >= 300 {
            self.end_early_dialogs(&key);
            self.invites.remove(&key);
            return ResponseOutcome::Failed;
        }
        let Some(remote_tag) = remote_tag else {
            return ResponseOutcome::Unknown;
        };
        let id = DialogId {
            call_id: key.0.clone(),
            local_tag: key.1.clone(),
            remote_tag: remote_tag.clone(),
        };
        if status < 200 {
            if status == 100 {
                return ResponseOutcome::Unknown;
            }
            if !self.dialogs.contains_key(&id) && !self.create_uac(&key, response) {
                return ResponseOutcome::Unknown;
            }
            if let Some(e) = self.dialogs.get_mut(&id) {
                e.dialog.receive_response(response, true);
                e.flow = route_flow(&e.dialog, &e.local);
            }
            return ResponseOutcome::Early(id);
        }
        let Some(u) = self.invites.get(&key) else {
            return ResponseOutcome::Unknown;
        };
        let invite_seq = u.cseq;
        let u_hold_ack = u.hold_ack;
        if let Some((_, ack, flow)) = u.ended_forks.iter().find(|(t, _, _)| *t == remote_tag) {
            let (ack, flow) = (ack.clone(), *flow);
            self.stateless(flow, ack);
            return ResponseOutcome::ExtraForkEnded(id);
        }
        let first = u.confirmed.is_none();
        if !first && self.is_confirmed(&id) {
            // A retransmission (of the first 2xx, or of a fork kept): its ACK again.
            if let Some((_, ack)) = self.dialogs.get(&id).and_then(|e| e.ack.clone())
                && let Some(flow) = self.flow(&id)
            {
                self.stateless(flow, ack);
            }
            return ResponseOutcome::Retransmission(id);
        }
        if !self.dialogs.contains_key(&id) && !self.create_uac(&key, response) {
            return ResponseOutcome::Unknown;
        }
        let Some(entry) = self.dialogs.get_mut(&id) else {
            return ResponseOutcome::Unknown;
        };
        entry.dialog.receive_response(response, true);
        let via = format!("{};branch={};rport", entry.local.via, self.ids.branch());
        entry.flow = route_flow(&entry.dialog, &entry.local);
        let flow = entry.flow;
        if first && u_hold_ack {
            entry.held_ack = Some(invite_seq);
            let expires = now + self.config.t1x64();
            if let Some(u) = self.invites.get_mut(&key) {
                u.confirmed = Some(remote_tag);
                u.expires = Some(expires);
            }
            self.arm(expires, Target::Invite(key));
            return ResponseOutcome::Confirmed(id);
        }
        let ack = match entry.dialog.ack(invite_seq, &via).into_bytes() {
            Ok(ack) => ack,
            Err(_) => return ResponseOutcome::Unknown,
        };
        entry.ack = Some((invite_seq, ack.clone()));
        self.stateless(flow, ack.clone());
        if first {
            let expires = now + self.config.t1x64();
            if let Some(u) = self.invites.get_mut(&key) {
                u.confirmed = Some(remote_tag);
                u.expires = Some(expires);
            }
            self.arm(expires, Target::Invite(key));
            return ResponseOutcome::Confirmed(id);
        }
        if self.forks == ForkPolicy::Keep {
            return ResponseOutcome::Forked(id);
        }
        // One call is enough: ACKed above, now BYE (RFC 3261 §13.2.2.4).
        if let Some(u) = self.invites.get_mut(&key) {
            u.ended_forks.push((remote_tag, ack, flow));
        }
        self.bye_and_end(id.clone(), TerminationReason::ExtraFork);
        ResponseOutcome::ExtraForkEnded(id)
    }

    fn is_confirmed(&self, id: &DialogId) -> bool {
        self.get(id)
            .is_some_and(|d| d.state == DialogState::Confirmed)
    }

    fn create_uac(&mut self, key: &InviteKey, response: &Message) -> bool {
        let Some(u) = self.invites.get_mut(key) else {
            return false;
        };
        let Ok(dialog) = Dialog::from_uac(&u.invite, response, &u.local.contact) else {
            return false;
        };
        let flow = route_flow(&dialog, &u.local);
        u.dialogs.push(dialog.id.remote_tag.clone());
        let entry = Entry {
            local: u.local.clone(),
            flow,
            dialog,
            ok: None,
            ack: None,
            held_ack: None,
            session: None,
        };
        self.dialogs.insert(entry.dialog.id.clone(), entry);
        true
    }

    fn end_early_dialogs(&mut self, key: &InviteKey) {
        let Some(u) = self.invites.get(key) else {
            return;
        };
        let ids: Vec<DialogId> = u
            .dialogs
            .iter()
            .map(|t| DialogId {
                call_id: key.0.clone(),
                local_tag: key.1.clone(),
                remote_tag: t.clone(),
            })
            .collect();
        for id in ids {
            if self
                .dialogs
                .get(&id)
                .is_some_and(|e| e.dialog.state == DialogState::Early)
            {
                self.dialogs.remove(&id);
                self.events.push_back(DialogEvent::Terminated {
                    id,
                    reason: TerminationReason::NotConfirmed,
                });
            }
        }
    }

    // ----- UAS -----

    /// The early dialog a UAS forms as it answers `request` (a dialog-creating INVITE)
    /// with a tag of ours, `local_tag`; `local_seq` starts our CSeq numbering.
    pub fn create_uas(
        &mut self,
        request: &Message,
        local_tag: &str,
        local_seq: u32,
        local: LocalEnd,
    ) -> Result<DialogId, DialogError> {
        let dialog = Dialog::from_uas(request, local_tag, &local.contact, local_seq)?;
        let id = dialog.id.clone();
        let flow = route_flow(&dialog, &local);
        self.dialogs.insert(
            id.clone(),
            Entry {
                dialog,
                local,
                flow,
                ok: None,
                ack: None,
                held_ack: None,
                session: None,
            },
        );
        Ok(id)
    }

    /// We answered an INVITE in dialog `id` (the dialog-creating one or a re-INVITE)
    /// with `response`, a 2xx the application gave its server transaction: the dialog
    /// is confirmed, and the layer sends the 2xx again to `flow` from T1, doubling up
    /// to T2, until the ACK with its CSeq arrives ([`DialogLayer::handle_request`]).
    /// With no ACK in 64·T1 the dialog ends with a BYE
    /// ([`TerminationReason::NoAck`]).
    pub fn send_2xx(
        &mut self,
        now: Instant,
        id: &DialogId,
        response: &Message,
        flow: Flow,
    ) -> Result<(), DialogError> {
        let t1 = self.config.t1;
        let entry = self.dialogs.get_mut(id).ok_or(DialogError::NoDialog)?;
        let cseq = response.cseq()?.seq;
        entry.dialog.state = DialogState::Confirmed;
        entry.ok = Some(OkRetransmit {
            bytes: response.as_bytes().clone(),
            flow,
            cseq,
            interval: t1,
            next: now + t1,
            until: now + t1 * 64,
        });
        self.arm(now + t1, Target::Ok(id.clone()));
        self.prune();
        Ok(())
    }

    /// A request the far end sent inside a dialog (To tag present), ACK included:
    /// checks it against the dialog (§12.2.2: CSeq order, target refresh). An ACK with
    /// the CSeq of our 2xx stops its retransmission; a BYE ends the dialog (answer it
    /// 200). `Err` is the response to send: 481 for no such dialog, 500 for a CSeq out
    /// of order (never answer an ACK, whatever this says).
    pub fn handle_request(
        &mut self,
        _now: Instant,
        request: &Message,
    ) -> Result<DialogId, Refusal> {
        let no_dialog = Refusal {
            status: 481,
            reason: "Call/Transaction Does Not Exist",
        };
        let id = DialogId::of_received(request).ok_or(no_dialog.clone())?;
        let entry = self.dialogs.get_mut(&id).ok_or(no_dialog)?;
        entry.dialog.receive_request(request)?;
        entry.flow = route_flow(&entry.dialog, &entry.local);
        match request.method() {
            Some(Method::Ack) => {
                let seq = request.cseq().map(|c| c.seq).ok();
                if entry.ok.as_ref().is_some_and(|r| Some(r.cseq) == seq) {
                    entry.ok = None;
                }
            }
            Some(Method::Bye) => {
                self.dialogs.remove(&id);
            }
            _ => {}
        }
        self.prune();
        Ok(id)
    }

    // ----- both -----

    /// Starts a request in dialog `id` (§12.2.1.1), with a fresh Via branch, and says
    /// where it goes: add a body and headers, build it and start its client transaction.
    /// Not for ACK (the layer sends those) or CANCEL (the transaction layer builds it).
    pub fn request(
        &mut self,
        id: &DialogId,
        method: &Method,
    ) -> Result<(crate::MessageBuilder, Flow), DialogError> {
        let entry = self.dialogs.get_mut(id).ok_or(DialogError::NoDialog)?;
        let via = format!("{};branch={};rport", entry.local.via, self.ids.branch());
        Ok((entry.dialog.request(method, &via), entry.flow))
    }

    /// Ends dialog `id` from our side: its BYE, to send in a client transaction, and
    /// where. The dialog is gone at once (§15: the session ends when the BYE is passed
    /// to its transaction); a request the far end sends in it after this gets 481.
    pub fn end(&mut self, id: &DialogId) -> Result<(Message, Flow), DialogError> {
        let (b, flow) = self.request(id, &Method::Bye)?;
        self.dialogs.remove(id);
        self.prune();
        let bye = b.build()?;
        Ok((bye, flow))
    }

    /// Forgets dialog `id` without a word to the far end: an early dialog of a call
    /// refused or cancelled, a dialog the BYE of the far end ended.
    pub fn remove(&mut self, id: &DialogId) {
        self.dialogs.remove(id);
        self.prune();
    }

    /// Sets (or clears) the RFC 4028 session timer of dialog `id` (from the 2xx that
    /// negotiated it: [`SessionTimer::from_response`]).
    pub fn set_session_timer(&mut self, id: &DialogId, timer: Option<SessionTimer>) {
        let Some(entry) = self.dialogs.get_mut(id) else {
            return;
        };
        entry.session = timer;
        if let Some(t) = timer {
            self.arm(t.deadline(), Target::Session(id.clone()));
        }
        self.prune();
    }

    /// A session refresh of dialog `id` succeeded at `now` (a 2xx to a re-INVITE or
    /// UPDATE, sent or received): the session timer starts over.
    pub fn session_refreshed(&mut self, now: Instant, id: &DialogId) {
        let Some(t) = self.dialogs.get_mut(id).and_then(|e| e.session.as_mut()) else {
            return;
        };
        t.refreshed(now);
        let at = t.deadline();
        self.arm(at, Target::Session(id.clone()));
        self.prune();
    }

    /// Fires every timer due at `now`: 2xx retransmissions and their 64·T1 limit,
    /// session timers, the end of an INVITE's fork window.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(top) = self.timers.peek() {
            if top.at > now {
                break;
            }
            if let Some(e) = self.timers.pop() {
                due.push(e);
            }
        }
        for e in due {
            if !self.is_live(&e) {
                continue;
            }
            match e.target {
                Target::Ok(id) => self.on_ok_timer(now, id),
                Target::Session(id) => self.on_session_timer(now, id),
                Target::Invite(key) => {
                    self.end_early_dialogs(&key);
                    self.invites.remove(&key);
                }
            }
        }
        self.prune();
    }

    fn on_ok_timer(&mut self, now: Instant, id: DialogId) {
        let t2 = self.config.t2;
        let Some(r) = self.dialogs.get_mut(&id).and_then(|e| e.ok.as_mut()) else {
            return;
        };
        if now >= r.until {
            if let Some(e) = self.dialogs.get_mut(&id) {
                e.ok = None;
            }
            self.bye_and_end(id, TerminationReason::NoAck);
            return;
        }
        let (flow, bytes) = (r.flow, r.bytes.clone());
        r.interval = (r.interval * 2).min(t2);
        r.next = (now + r.interval).min(r.until);
        let next = r.next;
        self.stateless(flow, bytes);
        self.arm(next, Target::Ok(id));
    }

    fn on_session_timer(&mut self, now: Instant, id: DialogId) {
        let Some(t) = self.dialogs.get_mut(&id).and_then(|e| e.session.as_mut()) else {
            return;
        };
        match t.poll(now) {
            None => {}
            Some(SessionTimerAction::Refresh) => {
                // Asked for again at the next half interval if no refresh succeeds.
                t.refresher = Refresher::Us;
                t.refreshed(now);
                let at = t.deadline();
                self.arm(at, Target::Session(id.clone()));
                self.events.push_back(DialogEvent::RefreshDue { id });
            }
            Some(SessionTimerAction::Expire) => {
                self.bye_and_end(id, TerminationReason::SessionExpired)
            }
        }
    }

    /// Sends BYE in dialog `id` on the layer's own account and ends it.
    fn bye_and_end(&mut self, id: DialogId, reason: TerminationReason) {
        if let Ok((request, flow)) = self.end(&id) {
            self.transmits.push_back(DialogTransmit::Request {
                id: id.clone(),
                request,
                flow,
            });
        }
        self.dialogs.remove(&id);
        self.events
            .push_back(DialogEvent::Terminated { id, reason });
    }

    // ----- outputs -----

    /// The next message to send. Drain until `None` after every input.
    pub fn poll_transmit(&mut self) -> Option<DialogTransmit> {
        self.transmits.pop_front()
    }

    /// The next event. Drain until `None` after every input, after the transmits.
    pub fn poll_event(&mut self) -> Option<DialogEvent> {
        self.events.pop_front()
    }

    /// When to call [`DialogLayer::handle_timeout`] next, `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|e| e.at)
    }

    // ----- internals -----

    fn stateless(&mut self, flow: Flow, bytes: Bytes) {
        self.transmits
            .push_back(DialogTransmit::Stateless(Transmit {
                flow,
                bytes,
                key: None,
            }));
    }

    fn arm(&mut self, at: Instant, target: Target) {
        self.timers.push(TimerEntry { at, target });
    }

    /// Whether a queued timer is still wanted: its dialog or INVITE lives and still
    /// waits for that instant (timers re-armed or ended are left in the queue and
    /// skipped here).
    fn is_live(&self, e: &TimerEntry) -> bool {
        match &e.target {
            Target::Ok(id) => self
                .dialogs
                .get(id)
                .and_then(|d| d.ok.as_ref())
                .is_some_and(|r| r.next == e.at || r.until == e.at),
            Target::Session(id) => self
                .dialogs
                .get(id)
                .and_then(|d| d.session.as_ref())
                .is_some_and(|t| t.deadline() == e.at),
            Target::Invite(key) => self
                .invites
                .get(key)
                .is_some_and(|u| u.expires == Some(e.at)),
        }
    }

    /// Pops dead timers off the top, so that [`DialogLayer::poll_timeout`] names a live
    /// one.
    fn prune(&mut self) {
        while let Some(top) = self.timers.peek() {
            if self.is_live(top) {
                break;
            }
            self.timers.pop();
        }
    }
}

/// Where requests in `dialog` go: straight to its next hop (§12.2.1.1: the first Route,
/// else the remote target) when that has a numeric address, over the transport its URI
/// names or else `local.transport`; otherwise to `local.fallback` (a host name needs
/// RFC 3263, which is the I/O layer's).
pub fn route_flow(dialog: &Dialog, local: &LocalEnd) -> Flow {
    numeric_next_hop(&dialog.next_hop(), local.transport).unwrap_or(local.fallback)
}

fn numeric_next_hop(uri: &str, default: Transport) -> Option<Flow> {
    let parsed = crate::Uri::parse(uri.trim()).ok()?;
    let sip = parsed.as_sip()?;
    let named = match sip.transport() {
        Some(t) => Some(Transport::from_token(t)?),
        None => None,
    };
    let for_port = match named {
        Some(t) => t,
        None if sip.secure => Transport::Tls,
        None => Transport::Udp,
    };
    let ip = sip.host.ip()?;
    let port = sip.port.unwrap_or_else(|| for_port.default_port());
    Some(Flow {
        transport: named.unwrap_or(default),
        remote: SocketAddr::new(ip, port),
        local: None,
        connection: None,
    })
}
