//! Signalling-only call legs, for a back-to-back user agent: a [`Relay`] runs any number
//! of calls as UAS (the caller's INVITE, [`RelayEvent::Incoming`]) or UAC
//! ([`Relay::place`]) with no media of their own. The SDP each leg offers or answers
//! comes from outside (the other leg's), and everything the far end does that the
//! other leg must hear of is reported as a [`RelayEvent`]: provisional responses and
//! early media, the answer, a failure, the caller's CANCEL, an offer in a re-INVITE or
//! UPDATE (hold, resume, a new codec) and its answer or refusal, and the end of the
//! call (BYE, an expired session, a missing ACK).
//!
//! What is one leg's own business is done here: its dialog (the dialog layer's ACKs,
//! 2xx retransmissions, CSeq and route set), RFC 4028 session timers per leg (asked for
//! in the INVITEs we place, honoured in those we answer, refreshed with the leg's own
//! SDP unchanged), refreshes from the far end (the very SDP it already sent, or none)
//! answered without bothering the other leg, and
//! 491 to an offer while another is outstanding on the same leg.
//!
//! Like the rest of the crate it is sans-IO: fed messages and the time, polled for what
//! to send ([`Relay::poll_transmit`]), what happened ([`Relay::poll_event`]) and when to
//! be woken ([`Relay::poll_timeout`]).

use super::*;

/// How a relay signs and addresses what it sends.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Our listening addresses (Via, Contact).
    pub local: LocalAddrs,
    /// The user part of our Contact.
    pub contact_user: String,
    /// The User-Agent of the requests we place.
    pub user_agent: String,
    /// The Session-Expires asked for in the INVITEs we place (RFC 4028); `None` asks
    /// none.
    pub session_expires: Option<u32>,
    /// The transaction timers; the 2xx retransmission follows T1 and T2 too.
    pub timers: TimerConfig,
}

/// One leg of a [`Relay`]. Never reused within one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegKey(u64);

impl std::fmt::Display for LegKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "leg {}", self.0)
    }
}

/// An INVITE to place ([`Relay::place`]).
#[derive(Debug, Clone)]
pub struct Placement {
    /// The Request-URI.
    pub uri: String,
    /// The To header value (without tag).
    pub to: String,
    /// The From header value (without tag): the caller ID the leg presents.
    pub from: String,
    /// Route header values to put first (a Path learnt at registration).
    pub routes: Vec<String>,
    /// Where the INVITE goes.
    pub flow: Flow,
    /// The offer, if any (the caller's).
    pub sdp: Option<String>,
    /// More headers (Diversion, History-Info...).
    pub headers: Vec<(String, String)>,
}

/// How an offer arrived or is to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferKind {
    /// In a re-INVITE.
    Invite,
    /// In an UPDATE.
    Update,
}

/// Why a leg ended on the far end's side (or the dialog layer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEnd {
    /// The far end sent BYE (answered 200).
    Bye,
    /// Its session was not refreshed in time: BYE sent.
    SessionExpired,
    /// Our 2xx got no ACK: BYE sent.
    NoAck,
}

/// What happened on a leg.
#[derive(Debug, Clone)]
pub enum RelayEvent {
    /// A new call: the caller's INVITE (answer it with [`Relay::progress`],
    /// [`Relay::answer`] or [`Relay::reject`]).
    Incoming {
        /// The new leg.
        leg: LegKey,
        /// The INVITE.
        invite: Message,
        /// Where it came from.
        flow: Flow,
    },
    /// A leg we placed sent a provisional response above 100.
    Progress {
        /// The leg.
        leg: LegKey,
        /// Its status.
        status: u16,
        /// Its early answer, if it carried SDP.
        sdp: Option<String>,
    },
    /// A leg we placed answered (its 2xx is ACKed).
    Answered {
        /// The leg.
        leg: LegKey,
        /// Its answer.
        sdp: Option<String>,
    },
    /// A leg we placed failed: its final status (408 for no response, 503 when it could
    /// not be sent). The leg is gone.
    Failed {
        /// The leg.
        leg: LegKey,
        /// The status.
        status: u16,
    },
    /// The caller cancelled (answered 200, the INVITE 487). The leg is gone.
    Cancelled {
        /// The leg.
        leg: LegKey,
    },
    /// The far end of an answered leg made an offer: answer it with
    /// [`Relay::answer_offer`] or refuse it with [`Relay::refuse_offer`].
    Offer {
        /// The leg.
        leg: LegKey,
        /// The offer.
        sdp: String,
        /// How it came.
        kind: OfferKind,
    },
    /// The offer sent with [`Relay::offer`] was answered.
    OfferAnswered {
        /// The leg.
        leg: LegKey,
        /// The answer.
        sdp: String,
    },
    /// The offer sent with [`Relay::offer`] was refused (491 on glare, 488...) or got no
    /// answer (408).
    OfferRefused {
        /// The leg.
        leg: LegKey,
        /// The status.
        status: u16,
    },
    /// The leg ended from its side. The leg is gone.
    Ended {
        /// The leg.
        leg: LegKey,
        /// Why.
        why: LegEnd,
    },
}

impl RelayEvent {
    /// The leg it is about.
    pub fn leg(&self) -> LegKey {
        match self {
            RelayEvent::Incoming { leg, .. }
            | RelayEvent::Progress { leg, .. }
            | RelayEvent::Answered { leg, .. }
            | RelayEvent::Failed { leg, .. }
            | RelayEvent::Cancelled { leg }
            | RelayEvent::Offer { leg, .. }
            | RelayEvent::OfferAnswered { leg, .. }
            | RelayEvent::OfferRefused { leg, .. }
            | RelayEvent::Ended { leg, .. } => *leg,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    /// UAS: INVITE received, no final response; UAC: INVITE sent, none received.
    Setup,
    /// Answered.
    Answered,
}

#[derive(Debug)]
struct Leg {
    role: Role,
    state: LegState,
    call_id: String,
    local_tag: String,
    /// UAS: the INVITE server transaction; UAC: the INVITE client transaction.
    invite_key: Option<TransactionKey>,
    /// UAS: the INVITE received.
    request: Option<Message>,
    dialog: Option<DialogId>,
    flow: Flow,
    /// The SDP we last sent on this leg, and the far end's last.
    local_sdp: Option<String>,
    remote_sdp: Option<String>,
    /// Our offer on its way to the far end (its client transaction).
    offer_out: Option<TransactionKey>,
    /// The far end's offer awaiting our answer: its server transaction, request and how.
    offer_in: Option<(TransactionKey, Message, OfferKind)>,
    /// UAC: a CANCEL asked for before any provisional (sent with the first one).
    cancel_wanted: bool,
}

/// What a client transaction of the relay is for.
#[derive(Debug, Clone, Copy)]
enum RelayPending {
    Invite(LegKey),
    /// Our offer (`refresh`: the session as it is, for the session timer).
    Offer {
        leg: LegKey,
        refresh: bool,
    },
    Other,
}

/// The signalling-only legs of a B2BUA; see the module documentation.
pub struct Relay {
    s: RelaySettings,
    txl: TransactionLayer,
    dialogs: DialogLayer,
    ids: IdGenerator,
    rng: ChaCha20Rng,
    legs: HashMap<LegKey, Leg>,
    by_call_id: HashMap<String, LegKey>,
    pending: HashMap<TransactionKey, RelayPending>,
    /// Call-IDs of legs that ended, still ours until then: retransmissions, the ACK to
    /// a final failure and the answer to our BYE still come in them.
    lingering: HashMap<String, Instant>,
    /// The same, in the order they expire.
    linger_order: VecDeque<(Instant, String)>,
    events: VecDeque<RelayEvent>,
    next_leg: u64,
}

impl Relay {
    /// A relay; `seed` must be fresh random bytes (tags, branches, Call-IDs).
    pub fn new(s: RelaySettings, seed: [u8; 32]) -> Relay {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        #[allow(clippy::expect_used)]
        let ids = IdGenerator::new(&key).expect("a 32-byte key is long enough");
        rng.fill_bytes(&mut key);
        #[allow(clippy::expect_used)]
        let dialog_ids = IdGenerator::new(&key).expect("a 32-byte key is long enough");
        Relay {
            txl: TransactionLayer::new(s.timers),
            dialogs: DialogLayer::new(s.timers, dialog_ids),
            s,
            ids,
            rng,
            legs: HashMap::new(),
            by_call_id: HashMap::new(),
            pending: HashMap::new(),
            lingering: HashMap::new(),
            linger_order: VecDeque::new(),
            events: VecDeque::new(),
            next_leg: 1,
        }
    }

    // ----- the driver's side -----

    /// Whether messages with this Call-ID are the relay's: a leg's, or one that ended
    /// lately.
    pub fn owns(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id) || self.lingering.contains_key(call_id)
    }

    /// A message received on `flow` (requests already validated by the caller).
    pub fn on_message(&mut self, msg: Message, flow: Flow, now: Instant) {
        let target = if msg.is_request() {
            sip_core::response_target(&flow, &msg)
        } else {
            flow
        };
        if let Err(e) = self.txl.handle_message(now, msg, target) {
            tracing::debug!("relay: message not taken: {e}");
        }
        self.process(now);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txl.poll_transmit()
    }

    /// What happened, in order.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// Sending for transaction `key` failed.
    pub fn on_transport_error(&mut self, key: TransactionKey, now: Instant) {
        let _ = self.txl.handle_transport_error(now, key);
        self.process(now);
    }

    /// When [`Relay::on_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.txl.poll_timeout(),
            self.dialogs.poll_timeout(),
            self.linger_order.front().map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed.
    pub fn on_timeout(&mut self, now: Instant) {
        self.txl.handle_timeout(now);
        self.dialogs.handle_timeout(now);
        while self.linger_order.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((at, call_id)) = self.linger_order.pop_front()
                && self.lingering.get(&call_id) == Some(&at)
            {
                self.lingering.remove(&call_id);
            }
        }
        self.process(now);
    }

    /// Whether nothing is left: no leg, transaction, dialog or Call-ID kept.
    pub fn is_idle(&self) -> bool {
        self.legs.is_empty()
            && self.txl.is_empty()
            && self.dialogs.is_empty()
            && self.pending.is_empty()
            && self.lingering.is_empty()
            && self.linger_order.is_empty()
            && self.by_call_id.is_empty()
    }

    /// The legs up.
    pub fn legs(&self) -> usize {
        self.legs.len()
    }

    /// The Call-ID of a leg.
    pub fn call_id(&self, leg: LegKey) -> Option<&str> {
        self.legs.get(&leg).map(|l| l.call_id.as_str())
    }

    // ----- commands -----

    /// Places a leg: an INVITE as `p` says. `Err` when it cannot be built or sent (the
    /// leg never existed).
    pub fn place(&mut self, p: Placement, now: Instant) -> Result<LegKey, String> {
        let call_id = format!("{}@{}", self.ids.next_id(), self.s.local.ip());
        let local_tag = self.ids.tag();
        let transport = p.flow.transport;
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            transport.via_token(),
            self.s.local.for_transport(transport),
            self.ids.branch()
        );
        let cseq = (self.rng.next_u32() >> 2).max(1);
        let mut b = MessageBuilder::request(&Method::Invite, &p.uri);
        b.push("Via", via);
        b.push("Max-Forwards", 70);
        for r in &p.routes {
            b.push("Route", r);
        }
        b.push("From", format_args!("{};tag={local_tag}", p.from));
        b.push("To", &p.to);
        b.push("Call-ID", &call_id);
        b.push("CSeq", format_args!("{cseq} INVITE"));
        b.push("Contact", format_args!("<{}>", self.contact(transport)));
        b.push("Allow", ALLOW);
        b.push("Supported", "timer");
        if let Some(se) = self.s.session_expires {
            b.push("Session-Expires", format_args!("{se};refresher=uac"));
            b.push("Min-SE", 90);
        }
        for (n, v) in &p.headers {
            b.push(n, v);
        }
        b.push("User-Agent", &self.s.user_agent);
        if let Some(sdp) = &p.sdp {
            b = b.body("application/sdp", Bytes::from(sdp.clone().into_bytes()));
        }
        let invite = b
            .build()
            .map_err(|e| format!("cannot build the INVITE: {e}"))?;
        let local = self.local_end(p.flow);
        self.dialogs
            .invite_sent(&invite, local)
            .map_err(|e| format!("the INVITE forms no dialog: {e}"))?;
        let key = match self.txl.send_request(now, invite, p.flow) {
            Ok(k) => k,
            Err(e) => {
                self.dialogs.forget_invite(&call_id, &local_tag);
                return Err(format!("cannot send the INVITE: {e}"));
            }
        };
        let leg = self.new_leg(Role::Uac, call_id, local_tag, p.flow);
        if let Some(l) = self.legs.get_mut(&leg) {
            l.invite_key = Some(key);
            l.local_sdp = p.sdp;
        }
        self.pending.insert(key, RelayPending::Invite(leg));
        Ok(leg)
    }

    /// Tells the caller of an incoming leg it rings (180) or has early media (183 with
    /// `sdp`).
    pub fn progress(&mut self, leg: LegKey, status: u16, sdp: Option<String>, now: Instant) {
        let Some(l) = self.legs.get(&leg) else {
            return;
        };
        if l.role != Role::Uas || l.state != LegState::Setup {
            return;
        }
        let (Some(key), Some(req)) = (l.invite_key, l.request.clone()) else {
            return;
        };
        let tag = l.local_tag.clone();
        let contact = self.contact(l.flow.transport);
        let mut b = response_to(&req, status, Some(tag.as_str()));
        b.push("Contact", format_args!("<{contact}>"));
        if let Some(sdp) = sdp {
            b = b.body("application/sdp", Bytes::from(sdp.into_bytes()));
        }
        self.send_response(key, b, now);
    }

    /// Answers an incoming leg 200 with `sdp`: the call is up on this leg.
    pub fn answer(&mut self, leg: LegKey, sdp: Option<String>, now: Instant) {
        let Some(l) = self.legs.get(&leg) else {
            return;
        };
        if l.role != Role::Uas || l.state != LegState::Setup {
            return;
        }
        let (Some(key), Some(req), Some(id)) = (l.invite_key, l.request.clone(), l.dialog.clone())
        else {
            return;
        };
        let tag = l.local_tag.clone();
        let flow = sip_core::response_target(&l.flow, &req);
        let contact = self.contact(l.flow.transport);
        let mut b = response_to(&req, 200, Some(tag.as_str()));
        b.push("Contact", format_args!("<{contact}>"));
        b.push("Allow", ALLOW);
        b.push("Supported", "timer");
        if let Ok(Some(se)) = req.session_expires() {
            let refresher = se.refresher().unwrap_or("uac").to_ascii_lowercase();
            b.push(
                "Session-Expires",
                format_args!("{};refresher={refresher}", se.delta),
            );
            if tokens_contain(&req, HeaderName::Supported, "timer") {
                b.push("Require", "timer");
            }
        }
        if let Some(sdp) = &sdp {
            b = b.body("application/sdp", Bytes::from(sdp.clone().into_bytes()));
        }
        let ok = match b.build() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("relay: built a 2xx that does not parse: {e}");
                return;
            }
        };
        if let Err(e) = self.txl.send_response(now, key, ok.clone()) {
            tracing::debug!("relay: 2xx not sent: {e}");
        }
        if let Err(e) = self.dialogs.send_2xx(now, &id, &ok, flow) {
            tracing::debug!("relay: 2xx not retransmitted: {e}");
        }
        self.dialogs
            .set_session_timer(&id, SessionTimer::from_response(&ok, false, now));
        if let Some(l) = self.legs.get_mut(&leg) {
            l.state = LegState::Answered;
            l.local_sdp = sdp;
            l.remote_sdp = has_sdp(&req).then(|| body_text(&req));
            l.request = None;
        }
        self.send_dialog_transmits(now);
    }

    /// Refuses an incoming leg with a final failure; the leg is gone.
    pub fn reject(&mut self, leg: LegKey, code: u16, reason: &str, now: Instant) {
        let Some(l) = self.legs.get(&leg) else {
            return;
        };
        if l.role != Role::Uas || l.state != LegState::Setup {
            return;
        }
        if let (Some(key), Some(req)) = (l.invite_key, l.request.clone()) {
            let tag = l.local_tag.clone();
            let b = if reason.is_empty() {
                response_to(&req, code, Some(tag.as_str()))
            } else {
                sip_core::builder::response_to_with_reason(&req, code, reason, Some(tag.as_str()))
            };
            self.send_response(key, b, now);
        }
        self.remove_leg(leg, now);
    }

    /// Hangs a leg up: BYE when answered, CANCEL while a leg we placed rings, 480 while
    /// an incoming one does. The leg is gone (no event follows) except a placed leg
    /// being cancelled, which ends with [`RelayEvent::Failed`] (487) or, if its 2xx
    /// crosses the CANCEL, [`RelayEvent::Answered`].
    pub fn hang_up(&mut self, leg: LegKey, now: Instant) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        match (l.state, l.role) {
            (LegState::Answered, _) => {
                let id = l.dialog.clone();
                if let Some(id) = id {
                    match self.dialogs.end(&id) {
                        Ok((bye, flow)) => match self.txl.send_request(now, bye, flow) {
                            Ok(key) => {
                                self.pending.insert(key, RelayPending::Other);
                            }
                            Err(e) => tracing::debug!("relay: BYE not sent: {e}"),
                        },
                        Err(e) => tracing::debug!("relay: BYE not built: {e}"),
                    }
                }
                self.remove_leg(leg, now);
            }
            (LegState::Setup, Role::Uac) => {
                let key = l.invite_key;
                match key.map(|k| self.txl.cancel(now, k)) {
                    Some(Ok(k)) => {
                        self.pending.insert(k, RelayPending::Other);
                    }
                    // No provisional yet: the CANCEL goes with the first one (§9.1).
                    _ => {
                        if let Some(l) = self.legs.get_mut(&leg) {
                            l.cancel_wanted = true;
                        }
                    }
                }
            }
            (LegState::Setup, Role::Uas) => self.reject(leg, 480, "", now),
        }
    }

    /// Sends the far end of an answered leg an offer (the other leg's), in a re-INVITE
    /// or UPDATE. Its answer comes as [`RelayEvent::OfferAnswered`] or
    /// [`RelayEvent::OfferRefused`].
    pub fn offer(&mut self, leg: LegKey, sdp: String, kind: OfferKind, now: Instant) {
        let busy = self
            .legs
            .get(&leg)
            .is_none_or(|l| l.state != LegState::Answered || l.offer_out.is_some());
        if busy {
            // Ours is still out on this leg: as if the far end refused with 491.
            self.events
                .push_back(RelayEvent::OfferRefused { leg, status: 491 });
            return;
        }
        self.send_offer(leg, sdp, kind, false, now);
    }

    /// Answers the far end's offer ([`RelayEvent::Offer`]) with `sdp`.
    pub fn answer_offer(&mut self, leg: LegKey, sdp: String, now: Instant) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some((key, req, kind)) = l.offer_in.take() else {
            return;
        };
        l.local_sdp = Some(sdp.clone());
        let id = l.dialog.clone();
        let flow = sip_core::response_target(&l.flow, &req);
        let transport = l.flow.transport;
        let contact = self.contact(transport);
        let mut b = response_to(&req, 200, None);
        b.push("Contact", format_args!("<{contact}>"));
        if let Ok(Some(se)) = req.session_expires() {
            let refresher = se.refresher().unwrap_or("uac").to_ascii_lowercase();
            b.push(
                "Session-Expires",
                format_args!("{};refresher={refresher}", se.delta),
            );
        }
        b = b.body("application/sdp", Bytes::from(sdp.into_bytes()));
        let Ok(ok) = b.build() else {
            return;
        };
        if let Err(e) = self.txl.send_response(now, key, ok.clone()) {
            tracing::debug!("relay: answer not sent: {e}");
        }
        if kind == OfferKind::Invite
            && let Some(id) = id
        {
            let _ = self.dialogs.send_2xx(now, &id, &ok, flow);
        }
        self.send_dialog_transmits(now);
    }

    /// Refuses the far end's offer with `status` (491, 488...).
    pub fn refuse_offer(&mut self, leg: LegKey, status: u16, now: Instant) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some((key, req, _)) = l.offer_in.take() else {
            return;
        };
        self.send_response(key, response_to(&req, status, None), now);
    }

    // ----- inside -----

    fn new_leg(&mut self, role: Role, call_id: String, local_tag: String, flow: Flow) -> LegKey {
        let leg = LegKey(self.next_leg);
        self.next_leg += 1;
        self.by_call_id.insert(call_id.clone(), leg);
        self.legs.insert(
            leg,
            Leg {
                role,
                state: LegState::Setup,
                call_id,
                local_tag,
                invite_key: None,
                request: None,
                dialog: None,
                flow,
                local_sdp: None,
                remote_sdp: None,
                offer_out: None,
                offer_in: None,
                cancel_wanted: false,
            },
        );
        leg
    }

    /// Drops a leg: its dialog and (for a leg we placed) its early dialogs; its Call-ID
    /// stays ours for 64·T1 for what is still on its way.
    fn remove_leg(&mut self, leg: LegKey, now: Instant) {
        let Some(l) = self.legs.remove(&leg) else {
            return;
        };
        if let Some(id) = &l.dialog {
            self.dialogs.remove(id);
        }
        if l.role == Role::Uac {
            self.dialogs.forget_invite(&l.call_id, &l.local_tag);
        }
        if self.by_call_id.get(&l.call_id) == Some(&leg) {
            self.by_call_id.remove(&l.call_id);
        }
        let until = now + self.s.timers.t1 * 64;
        self.lingering.insert(l.call_id.clone(), until);
        self.linger_order.push_back((until, l.call_id));
    }

    fn contact(&self, transport: Transport) -> String {
        let addr = self.s.local.for_transport(transport);
        match transport {
            Transport::Udp => format!("sip:{}@{addr}", self.s.contact_user),
            t => format!(
                "sip:{}@{addr};transport={}",
                self.s.contact_user,
                t.name().to_ascii_lowercase()
            ),
        }
    }

    fn local_end(&self, fallback: Flow) -> LocalEnd {
        let transport = fallback.transport;
        LocalEnd {
            contact: self.contact(transport),
            via: format!(
                "SIP/2.0/{} {}",
                transport.via_token(),
                self.s.local.for_transport(transport)
            ),
            fallback,
            transport,
        }
    }

    fn send_response(&mut self, key: TransactionKey, b: MessageBuilder, now: Instant) {
        match b.build() {
            Ok(msg) => {
                if let Err(e) = self.txl.send_response(now, key, msg) {
                    tracing::debug!("relay: response not sent: {e}");
                }
            }
            Err(e) => tracing::warn!("relay: built a response that does not parse: {e}"),
        }
    }

    fn respond(&mut self, key: TransactionKey, req: &Message, code: u16, now: Instant) {
        let tag = self.ids.tag();
        self.send_response(key, response_to(req, code, Some(tag.as_str())), now);
    }

    /// Handles what the transaction and dialog layers reported, until nothing is left.
    fn process(&mut self, now: Instant) {
        loop {
            let mut any = false;
            while let Some(event) = self.txl.poll_event() {
                any = true;
                self.on_event(event, now);
            }
            any |= self.pump_dialogs(now);
            if !any {
                return;
            }
        }
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Request { key, request, flow } => self.on_request(key, request, flow, now),
            Event::Response { key, response } => self.on_response(key, &response, now),
            Event::Ack { request, .. } => {
                // Stops our 2xx; an answer in it (to an offer in our 2xx) is not
                // relayed: we only offer in a 2xx the SDP the far end already has.
                let _ = self.dialogs.handle_request(now, &request);
            }
            Event::Timeout { key, .. } => self.on_failed(key, 408, now),
            Event::TransportError { key } => self.on_failed(key, 503, now),
            Event::Terminated { key } => {
                self.pending.remove(&key);
            }
            _ => {}
        }
    }

    /// A client transaction got no final response.
    fn on_failed(&mut self, key: TransactionKey, status: u16, now: Instant) {
        let Some(p) = self.pending.get(&key).copied() else {
            return;
        };
        match p {
            RelayPending::Invite(leg) => {
                // Timer C: no final response in time; a CANCEL gets one (487).
                if status == 408
                    && self.txl.state(key) == Some(sip_core::transaction::State::Proceeding)
                    && let Ok(k) = self.txl.cancel(now, key)
                {
                    self.pending.insert(k, RelayPending::Other);
                    return;
                }
                self.pending.remove(&key);
                if self
                    .legs
                    .get(&leg)
                    .is_some_and(|l| l.state == LegState::Setup)
                {
                    self.remove_leg(leg, now);
                    self.events.push_back(RelayEvent::Failed { leg, status });
                }
            }
            RelayPending::Offer { leg, refresh } => {
                self.pending.remove(&key);
                if let Some(l) = self.legs.get_mut(&leg) {
                    l.offer_out = None;
                }
                if !refresh {
                    self.events
                        .push_back(RelayEvent::OfferRefused { leg, status });
                }
            }
            RelayPending::Other => {
                self.pending.remove(&key);
            }
        }
    }

    fn on_request(&mut self, key: TransactionKey, request: Message, flow: Flow, now: Instant) {
        let Some(method) = request.method().cloned() else {
            return;
        };
        let in_dialog = request.to().ok().and_then(|t| t.tag()).is_some();
        if in_dialog && method != Method::Cancel {
            self.on_in_dialog(key, &method, &request, now);
            return;
        }
        match method {
            Method::Invite => self.on_invite(key, request, flow, now),
            Method::Cancel => self.on_cancel(key, &request, now),
            Method::Ack => {}
            _ => self.respond(key, &request, 481, now),
        }
    }

    fn on_invite(&mut self, key: TransactionKey, request: Message, flow: Flow, now: Instant) {
        let call_id = request.call_id().unwrap_or("").to_owned();
        if self.by_call_id.contains_key(&call_id) {
            // A second INVITE in a Call-ID we have (a loop, or a merged request).
            self.respond(key, &request, 482, now);
            return;
        }
        let local_tag = self.ids.tag();
        let local_seq = (self.rng.next_u32() >> 2).max(1);
        let local = self.local_end(flow);
        let dialog = match self
            .dialogs
            .create_uas(&request, &local_tag, local_seq, local)
        {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("relay: INVITE refused: {e}");
                self.respond(key, &request, 400, now);
                return;
            }
        };
        self.send_response(key, response_to(&request, 100, None), now);
        let leg = self.new_leg(Role::Uas, call_id, local_tag, flow);
        if let Some(l) = self.legs.get_mut(&leg) {
            l.invite_key = Some(key);
            l.request = Some(request.clone());
            l.dialog = Some(dialog);
        }
        self.events.push_back(RelayEvent::Incoming {
            leg,
            invite: request,
            flow,
        });
    }

    fn on_cancel(&mut self, key: TransactionKey, cancel: &Message, now: Instant) {
        let cancelled = self.txl.find_cancelled(cancel);
        let leg = cancel
            .call_id()
            .ok()
            .and_then(|c| self.by_call_id.get(c).copied())
            .filter(|leg| {
                self.legs.get(leg).is_some_and(|l| {
                    l.role == Role::Uas
                        && l.state == LegState::Setup
                        && cancelled.is_some()
                        && l.invite_key == cancelled
                })
            });
        let Some(leg) = leg else {
            self.respond(key, cancel, 481, now);
            return;
        };
        self.send_response(key, response_to(cancel, 200, None), now);
        self.reject(leg, 487, "", now);
        self.events.push_back(RelayEvent::Cancelled { leg });
    }

    fn on_in_dialog(
        &mut self,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        let leg = request
            .call_id()
            .ok()
            .and_then(|c| self.by_call_id.get(c).copied());
        let checked = self.dialogs.handle_request(now, request);
        let leg = match (leg, checked) {
            (Some(leg), Ok(id))
                if self.legs.get(&leg).and_then(|l| l.dialog.as_ref()) == Some(&id) =>
            {
                leg
            }
            (_, Err(r)) if r.status != 481 => {
                let b =
                    sip_core::builder::response_to_with_reason(request, r.status, r.reason, None);
                self.send_response(key, b, now);
                return;
            }
            _ => {
                self.respond(key, request, 481, now);
                return;
            }
        };
        match method {
            Method::Bye => {
                self.send_response(key, response_to(request, 200, None), now);
                // The dialog layer ended the dialog with the BYE.
                if let Some(l) = self.legs.get_mut(&leg) {
                    l.dialog = None;
                }
                self.remove_leg(leg, now);
                self.events.push_back(RelayEvent::Ended {
                    leg,
                    why: LegEnd::Bye,
                });
            }
            Method::Invite | Method::Update => self.on_remote_offer(leg, key, method, request, now),
            Method::Options | Method::Info => {
                self.send_response(key, response_to(request, 200, None), now);
            }
            Method::Prack => self.respond(key, request, 481, now),
            Method::Extension(_) => self.respond(key, request, 501, now),
            _ => {
                let mut b = response_to(request, 405, None);
                b.push("Allow", ALLOW);
                self.send_response(key, b, now);
            }
        }
    }

    /// A re-INVITE or UPDATE from the far end of a leg: a refresh answered here, or an
    /// offer reported (491 while one is outstanding either way).
    fn on_remote_offer(
        &mut self,
        leg: LegKey,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        let Some(l) = self.legs.get(&leg) else {
            return;
        };
        let Some(id) = l.dialog.clone() else {
            return;
        };
        let kind = if *method == Method::Update {
            OfferKind::Update
        } else {
            OfferKind::Invite
        };
        if l.state != LegState::Answered || l.offer_out.is_some() || l.offer_in.is_some() {
            let mut b = response_to(request, 491, None);
            if l.state != LegState::Answered {
                b = response_to(request, 500, None);
                b.push("Retry-After", 1);
            }
            self.send_response(key, b, now);
            return;
        }
        // The session timer follows the request's Session-Expires, or starts over.
        if let Ok(Some(se)) = request.session_expires() {
            let refresher = if se
                .refresher()
                .is_some_and(|r| r.eq_ignore_ascii_case("uas"))
            {
                Refresher::Us
            } else {
                Refresher::Them
            };
            self.dialogs
                .set_session_timer(&id, Some(SessionTimer::new(se.delta, refresher, now)));
        } else {
            self.dialogs.session_refreshed(now, &id);
        }
        let offer = has_sdp(request).then(|| body_text(request));
        let unchanged = match (&offer, &l.remote_sdp) {
            // The same session description again: a refresh. Anything else is relayed,
            // even with the same version (phones that change the direction without
            // bumping it exist).
            (Some(new), Some(old)) => new == old,
            (None, _) => true,
            _ => false,
        };
        if unchanged {
            // A refresh: the session as it is, answered with ours as it is.
            let answer = l.local_sdp.clone();
            let flow = sip_core::response_target(&l.flow, request);
            let contact = self.contact(l.flow.transport);
            let mut b = response_to(request, 200, None);
            b.push("Contact", format_args!("<{contact}>"));
            if let Ok(Some(se)) = request.session_expires() {
                let refresher = se.refresher().unwrap_or("uac").to_ascii_lowercase();
                b.push(
                    "Session-Expires",
                    format_args!("{};refresher={refresher}", se.delta),
                );
            }
            // An UPDATE without SDP gets none back; a re-INVITE gets ours.
            if let Some(sdp) = answer.filter(|_| offer.is_some() || kind == OfferKind::Invite) {
                b = b.body("application/sdp", Bytes::from(sdp.into_bytes()));
            }
            let Ok(ok) = b.build() else {
                return;
            };
            if let Err(e) = self.txl.send_response(now, key, ok.clone()) {
                tracing::debug!("relay: refresh answer not sent: {e}");
            }
            if kind == OfferKind::Invite {
                let _ = self.dialogs.send_2xx(now, &id, &ok, flow);
            }
            return;
        }
        let Some(sdp) = offer else {
            return;
        };
        if let Some(l) = self.legs.get_mut(&leg) {
            l.remote_sdp = Some(sdp.clone());
            l.offer_in = Some((key, request.clone(), kind));
        }
        self.events.push_back(RelayEvent::Offer { leg, sdp, kind });
    }

    fn send_offer(
        &mut self,
        leg: LegKey,
        sdp: String,
        kind: OfferKind,
        refresh: bool,
        now: Instant,
    ) {
        let Some(id) = self.legs.get(&leg).and_then(|l| l.dialog.clone()) else {
            return;
        };
        // The refresher stays who it was: we are this request's UAC.
        let session_expires = self.dialogs.session_timer(&id).map(|t| {
            let who = if t.refresher == Refresher::Us {
                "uac"
            } else {
                "uas"
            };
            (t.interval, who)
        });
        let method = match kind {
            OfferKind::Invite => Method::Invite,
            OfferKind::Update => Method::Update,
        };
        let (mut b, flow) = match self.dialogs.request(&id, &method) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("relay: cannot build the offer: {e}");
                return;
            }
        };
        let transport = self
            .legs
            .get(&leg)
            .map_or(Transport::Udp, |l| l.flow.transport);
        b.push("Contact", format_args!("<{}>", self.contact(transport)));
        if let Some((se, who)) = session_expires {
            b.push("Session-Expires", format_args!("{se};refresher={who}"));
            b.push("Supported", "timer");
        }
        let Ok(msg) = b
            .body("application/sdp", Bytes::from(sdp.clone().into_bytes()))
            .build()
        else {
            return;
        };
        match self.txl.send_request(now, msg, flow) {
            Ok(key) => {
                self.pending
                    .insert(key, RelayPending::Offer { leg, refresh });
                if let Some(l) = self.legs.get_mut(&leg) {
                    l.offer_out = Some(key);
                    l.local_sdp = Some(sdp);
                }
            }
            Err(e) => {
                tracing::debug!("relay: offer not sent: {e}");
                if !refresh {
                    self.events
                        .push_back(RelayEvent::OfferRefused { leg, status: 503 });
                }
            }
        }
    }

    fn on_response(&mut self, key: TransactionKey, response: &Message, now: Instant) {
        let Some(p) = self.pending.get(&key).copied() else {
            // ACK the 2xx of a leg we no longer want (the dialog layer knows the
            // INVITE until its fork window ends).
            let _ = self.dialogs.handle_response(now, response);
            self.send_dialog_transmits(now);
            return;
        };
        let status = response.status().unwrap_or(0);
        match p {
            RelayPending::Invite(leg) => self.on_invite_response(leg, key, response, status, now),
            RelayPending::Offer { leg, refresh } => {
                if status < 200 {
                    return;
                }
                let outcome = self.dialogs.handle_response(now, response);
                self.send_dialog_transmits(now);
                let Some(l) = self.legs.get_mut(&leg) else {
                    return;
                };
                if l.offer_out != Some(key) {
                    // A retransmitted 2xx to a re-INVITE: ACKed again, nothing more.
                    return;
                }
                l.offer_out = None;
                if (200..300).contains(&status) {
                    if let ResponseOutcome::InDialog(id) = &outcome {
                        self.dialogs.session_refreshed(now, id);
                    }
                    let sdp = has_sdp(response).then(|| body_text(response));
                    if let Some(l) = self.legs.get_mut(&leg)
                        && sdp.is_some()
                    {
                        l.remote_sdp = sdp.clone();
                    }
                    if !refresh {
                        match sdp {
                            Some(sdp) => self
                                .events
                                .push_back(RelayEvent::OfferAnswered { leg, sdp }),
                            None => self
                                .events
                                .push_back(RelayEvent::OfferRefused { leg, status: 488 }),
                        }
                    }
                } else if !refresh {
                    self.events
                        .push_back(RelayEvent::OfferRefused { leg, status });
                }
            }
            RelayPending::Other => {}
        }
    }

    fn on_invite_response(
        &mut self,
        leg: LegKey,
        key: TransactionKey,
        response: &Message,
        status: u16,
        now: Instant,
    ) {
        let outcome = self.dialogs.handle_response(now, response);
        self.send_dialog_transmits(now);
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if l.invite_key != Some(key) {
            return;
        }
        match status {
            100..=199 => {
                if let ResponseOutcome::Early(id) = outcome
                    && l.dialog.is_none()
                {
                    l.dialog = Some(id);
                }
                if l.cancel_wanted {
                    l.cancel_wanted = false;
                    if let Ok(k) = self.txl.cancel(now, key) {
                        self.pending.insert(k, RelayPending::Other);
                    }
                    return;
                }
                if status > 100 {
                    let sdp = has_sdp(response).then(|| body_text(response));
                    self.events
                        .push_back(RelayEvent::Progress { leg, status, sdp });
                }
            }
            200..=299 => {
                let ResponseOutcome::Confirmed(id) = outcome else {
                    // A retransmission or another fork's 2xx: ACKed (and hung up) by
                    // the dialog layer.
                    return;
                };
                if let Some(flow) = self.dialogs.flow(&id) {
                    l.flow = flow;
                }
                l.dialog = Some(id.clone());
                l.state = LegState::Answered;
                l.cancel_wanted = false;
                let sdp = has_sdp(response).then(|| body_text(response));
                l.remote_sdp = sdp.clone();
                self.dialogs
                    .set_session_timer(&id, SessionTimer::from_response(response, true, now));
                self.events.push_back(RelayEvent::Answered { leg, sdp });
            }
            _ => {
                if l.state != LegState::Setup {
                    return;
                }
                self.pending.remove(&key);
                self.remove_leg(leg, now);
                self.events.push_back(RelayEvent::Failed { leg, status });
            }
        }
    }

    fn leg_of_dialog(&self, id: &DialogId) -> Option<LegKey> {
        let leg = *self.by_call_id.get(&id.call_id)?;
        (self.legs.get(&leg)?.dialog.as_ref() == Some(id)).then_some(leg)
    }

    fn pump_dialogs(&mut self, now: Instant) -> bool {
        let mut any = self.send_dialog_transmits(now);
        while let Some(event) = self.dialogs.poll_event() {
            any = true;
            match event {
                DialogEvent::RefreshDue { id } => {
                    let Some(leg) = self.leg_of_dialog(&id) else {
                        continue;
                    };
                    let Some(l) = self.legs.get(&leg) else {
                        continue;
                    };
                    if l.offer_out.is_some() || l.offer_in.is_some() {
                        // An offer under way refreshes the session when answered.
                        continue;
                    }
                    if let Some(sdp) = l.local_sdp.clone() {
                        self.send_offer(leg, sdp, OfferKind::Invite, true, now);
                    }
                }
                DialogEvent::Terminated { id, reason } => {
                    let Some(leg) = self.leg_of_dialog(&id) else {
                        continue;
                    };
                    let why = match reason {
                        TerminationReason::NoAck => LegEnd::NoAck,
                        TerminationReason::SessionExpired => LegEnd::SessionExpired,
                        _ => continue,
                    };
                    if let Some(l) = self.legs.get_mut(&leg) {
                        l.dialog = None;
                    }
                    self.remove_leg(leg, now);
                    self.events.push_back(RelayEvent::Ended { leg, why });
                }
                _ => {}
            }
        }
        any
    }

    fn send_dialog_transmits(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(t) = self.dialogs.poll_transmit() {
            any = true;
            match t {
                DialogTransmit::Stateless(t) => self.txl.send_stateless(t.flow, t.bytes),
                DialogTransmit::Request { request, flow, .. } => {
                    match self.txl.send_request(now, request, flow) {
                        Ok(key) => {
                            self.pending.insert(key, RelayPending::Other);
                        }
                        Err(e) => tracing::debug!("relay: in-dialog request not sent: {e}"),
                    }
                }
            }
        }
        any
    }
}

/// The body of a message as text (SDP is text; anything else is replaced).
fn body_text(msg: &Message) -> String {
    String::from_utf8_lossy(msg.body()).into_owned()
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
