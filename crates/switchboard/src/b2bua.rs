//! The server's back-to-back user agent: the calls the proxy hands over
//! ([`crate::proxy::Handled::Pbx`]: a ring group, a callee who forwards, a dial plan rule
//! with `pbx = true`). Each call is a `pbx::b2bua` machine (the hunt: who rings, who
//! wins, offers relayed both ways) carried out on `sip-ua`'s signalling-only legs (a
//! [`Relay`] with its own transaction and dialog layers): the caller's INVITE is the A
//! leg, and each leg the hunt rings is an INVITE to each phone the callee registered,
//! with the caller's SDP, so that media flows directly between the phones.
//!
//! Sans-IO like the router that owns it: every input comes with the time, and what to
//! send is polled. The router gives it every message whose Call-ID is one of its legs'
//! ([`B2bua::owns`]) and sends what it polls with [`B2BUA_TOKEN`] marked in the token,
//! so that a failed send comes back here.

use crate::pbx_directory::PbxDirectory;
use crate::proxy::{PbxCall, Proxy};
use pbx::Plan;
use pbx::b2bua::{B2bCall, B2bCommand, B2bEvent, CallStart, HangupReason, OfferMethod, Side};
use pbx::hunt::{LegId, Ring, Rotation};
use sip_core::transaction::TransactionKey;
use sip_core::{Flow, Message};
use sip_ua::relay::{
    LegEnd, LegKey, OfferKind, Placement, Relay, RelayEvent, RelaySettings, RequestId,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{LocationReader, UserStore};

/// The bit that marks the send tokens of the B2BUA's transactions (a transaction key's
/// token has its generation in the high half, which never grows this large).
pub const B2BUA_TOKEN: u64 = 1 << 63;

/// How the B2BUA runs its calls (`[pbx]` in the configuration).
#[derive(Debug, Clone)]
pub struct B2buaSettings {
    /// How long a leg rings before it counts as not answered.
    pub ring_timeout: Duration,
    /// Our signalling addresses, the Contact user and the User-Agent, the session
    /// timer and the transaction timers of the legs.
    pub relay: RelaySettings,
}

/// What the B2BUA reads of the server for one input.
pub struct B2bEnv<'a> {
    /// The time.
    pub now: Instant,
    /// Wall-clock Unix seconds (bindings, the dial plan's time windows).
    pub unix: u64,
    /// The users (forwarding, extensions).
    pub users: &'a (dyn UserStore + 'static),
    /// The registered contacts.
    pub location: &'a LocationReader,
    /// The proxy: our domain, the dial plan, where a binding's requests go.
    pub proxy: &'a Proxy,
}

impl B2bEnv<'_> {
    fn timestamp(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(i64::try_from(self.unix).unwrap_or(0))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// What happened to a call, for its record: the machine's event with the call's number,
/// the time, and the Call-ID it concerns (the caller's for `Started`, the leg's for
/// `LegPlaced`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// When.
    pub at: Instant,
    /// The call (numbered from 1 in this B2BUA).
    pub call: u64,
    /// What.
    pub event: B2bEvent,
    /// The Call-ID it concerns, when it names a leg.
    pub call_id: Option<String>,
}

/// One call: its machine and its legs.
struct Call {
    machine: B2bCall,
    /// The caller's leg.
    a: LegKey,
    /// The legs the hunt rang, each an INVITE to every phone the user registered.
    b: HashMap<LegId, Forks>,
    /// The plan in force when the call started: a reload does not change a call under
    /// way.
    plan: Arc<Plan>,
    /// The From of the legs we place (the plan's caller ID).
    from: String,
    /// The caller's Call-ID, for the logs.
    call_id: String,
}

/// The INVITEs of one leg of the hunt: one to each phone the user registered, as the
/// proxy forks. The first to answer is the leg's; the others are cancelled (or hung up,
/// if they answer too), and the leg fails only once all have, with the best failure.
#[derive(Debug, Default)]
struct Forks {
    /// The INVITEs not ended (ringing, being cancelled, or the winner).
    live: Vec<LegKey>,
    /// The one that answered first.
    winner: Option<LegKey>,
    /// The leg was cancelled: so was each INVITE.
    cancelled: bool,
    /// The best failure so far.
    failure: Option<u16>,
}

impl Forks {
    /// Notes a failure: busy wins over the rest (the caller learns the user is busy),
    /// then the lowest status (RFC 3261 §16.7's choice, roughly).
    fn failed(&mut self, leg: LegKey, status: u16) {
        self.live.retain(|k| *k != leg);
        self.failure = Some(match self.failure {
            None => status,
            Some(old) if matches!(old, 486 | 600) => old,
            Some(_) if matches!(status, 486 | 600) => status,
            Some(old) => old.min(status),
        });
    }
}

/// The B2BUA; see the module documentation.
pub struct B2bua {
    relay: Relay,
    ring_timeout: Duration,
    calls: HashMap<u64, Call>,
    /// Every live leg: its call and side.
    legs: HashMap<LegKey, (u64, Side)>,
    /// INVITEs handed over whose A leg is not up yet, by Call-ID.
    waiting: HashMap<String, PbxCall>,
    /// Round robin: which member answered each group's last call.
    rotation: Rotation,
    /// When each call's machine wants the time (stale entries are skipped).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// INFO and MESSAGE carried to the other leg: the one sent, and the one received
    /// that its final response answers.
    relayed: HashMap<RequestId, RequestId>,
    next_call: u64,
    /// Events for call records, when asked for ([`B2bua::record_events`]).
    events: Option<VecDeque<CallEvent>>,
    /// Calls started and ended, for the logs.
    started: u64,
    ended: u64,
}

impl B2bua {
    /// A B2BUA with nothing under way; `seed` must be fresh random bytes.
    pub fn new(settings: B2buaSettings, seed: [u8; 32]) -> B2bua {
        B2bua {
            relay: Relay::new(settings.relay, seed),
            ring_timeout: settings.ring_timeout,
            calls: HashMap::new(),
            legs: HashMap::new(),
            waiting: HashMap::new(),
            rotation: Rotation::default(),
            timers: BinaryHeap::new(),
            relayed: HashMap::new(),
            next_call: 1,
            events: None,
            started: 0,
            ended: 0,
        }
    }

    /// Keeps what happens to each call for [`B2bua::poll_event`] (call records).
    pub fn record_events(&mut self) {
        self.events.get_or_insert_with(VecDeque::new);
    }

    /// What happened to a call (its number and the time), when recorded.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.as_mut()?.pop_front()
    }

    /// Whether a message with this Call-ID is for the B2BUA.
    pub fn owns(&self, call_id: &str) -> bool {
        self.relay.owns(call_id) || self.waiting.contains_key(call_id)
    }

    /// Calls under way.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Whether nothing is left: no call, no leg, no transaction or dialog.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.legs.is_empty()
            && self.waiting.is_empty()
            && self.relay.is_idle()
    }

    /// An INVITE the proxy handed over (its transaction forgotten by the router's
    /// layer): the B2BUA's own transaction takes it.
    pub fn take_invite(&mut self, env: &B2bEnv<'_>, invite: Message, flow: Flow, call: PbxCall) {
        let Ok(call_id) = invite.call_id().map(str::to_owned) else {
            return;
        };
        self.waiting.insert(call_id.clone(), call);
        self.relay.on_message(invite, flow, env.now);
        self.process(env);
        // Taken at once by the A leg; an INVITE the relay's transaction layer refused
        // leaves nothing behind.
        self.waiting.remove(&call_id);
    }

    /// A message for one of our legs ([`B2bua::owns`]).
    pub fn on_message(&mut self, env: &B2bEnv<'_>, msg: Message, flow: Flow) {
        self.relay.on_message(msg, flow, env.now);
        self.process(env);
    }

    /// Sending for the transaction with this token (without [`B2BUA_TOKEN`]) failed.
    pub fn on_send_failed(&mut self, env: &B2bEnv<'_>, token: u64) {
        self.relay
            .on_transport_error(TransactionKey::from_token(token), env.now);
        self.process(env);
    }

    /// The next message to send, with its token marked.
    pub fn poll_transmit(&mut self) -> Option<sip_net::Transmit> {
        let t = self.relay.poll_transmit()?;
        Some(sip_net::Transmit {
            flow: t.flow,
            bytes: t.bytes,
            token: t
                .key
                .map_or(sip_net::driver::NO_TOKEN, |k| k.to_token() | B2BUA_TOKEN),
        })
    }

    /// When [`B2bua::on_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.timers.peek().map(|Reverse((at, _))| *at);
        [self.relay.poll_timeout(), calls]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time passed: the legs' timers and the calls' (ringing too long, the hunt's).
    pub fn on_timeout(&mut self, env: &B2bEnv<'_>) {
        let now = env.now;
        if self.relay.poll_timeout().is_some_and(|t| t <= now) {
            self.relay.on_timeout(now);
        }
        while let Some(Reverse((at, cid))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(mut call) = self.calls.remove(&cid) else {
                continue;
            };
            if call.machine.poll_timeout().is_some_and(|t| t <= now) {
                let plan = Arc::clone(&call.plan);
                let dir = self.directory(env, &plan);
                call.machine.handle_timeout(now, &dir);
            }
            self.run(env, cid, call);
        }
        self.process(env);
    }

    fn directory<'a>(
        &'a self,
        env: &B2bEnv<'a>,
        plan: &'a Plan,
    ) -> PbxDirectory<'a, dyn UserStore> {
        PbxDirectory {
            plan,
            users: env.users,
            rotation: Some(&self.rotation),
            now: env.timestamp(),
        }
    }

    /// Handles what the legs reported.
    fn process(&mut self, env: &B2bEnv<'_>) {
        while let Some(event) = self.relay.poll_event() {
            self.on_relay_event(env, event);
        }
    }

    fn on_relay_event(&mut self, env: &B2bEnv<'_>, event: RelayEvent) {
        let now = env.now;
        if let RelayEvent::Incoming { leg, invite, .. } = &event {
            self.start_call(env, *leg, invite);
            return;
        }
        if let RelayEvent::RequestAnswered { id, status, .. } = &event {
            // The other leg's answer to an INFO or MESSAGE goes back to its sender.
            if let Some(incoming) = self.relayed.remove(id) {
                self.relay.answer_request(incoming, *status, now);
            }
            return;
        }
        let leg = event.leg();
        let Some(&(cid, side)) = self.legs.get(&leg) else {
            // A leg whose call is over (its CANCEL's 487, say): nothing to carry; one
            // that answers after all is hung up.
            self.orphan(leg, &event, now);
            return;
        };
        let Some(mut call) = self.calls.remove(&cid) else {
            self.legs.remove(&leg);
            self.orphan(leg, &event, now);
            return;
        };
        let event = match side {
            Side::A => Some(event),
            Side::B(l) => self.fork_event(&mut call, l, leg, event, now),
        };
        let plan = Arc::clone(&call.plan);
        if let Some(event) = event {
            let dir = self.directory(env, &plan);
            let m = &mut call.machine;
            match (event, side) {
                (RelayEvent::Progress { status, sdp, .. }, Side::B(l)) => {
                    m.on_progress(l, status, sdp, now);
                }
                (RelayEvent::Answered { sdp, .. }, Side::B(l)) => {
                    m.on_answered(l, sdp, now, &dir);
                }
                (RelayEvent::Failed { status, .. }, Side::B(l)) => {
                    m.on_failed(l, status, now, &dir);
                }
                (RelayEvent::Cancelled { .. }, Side::A) => m.on_caller_cancel(now),
                (RelayEvent::AckAnswer { sdp, .. }, Side::A) => m.on_caller_ack(sdp),
                (RelayEvent::Request { id, request, .. }, side) => {
                    // INFO (DTMF) or MESSAGE: to the phone on the other side, whose
                    // final response comes back; none while the call is not up.
                    let sent = m
                        .peer(side)
                        .and_then(|peer| leg_of(&call, peer))
                        .and_then(|to| self.relay.relay_request(to, &request, now));
                    match sent {
                        Some(out) => {
                            self.relayed.insert(out, id);
                        }
                        None => self.relay.answer_request(id, 481, now),
                    }
                }
                (RelayEvent::Offer { sdp, kind, .. }, side) => {
                    let method = match kind {
                        OfferKind::Invite => OfferMethod::Invite,
                        OfferKind::Update => OfferMethod::Update,
                    };
                    m.on_offer(side, sdp, method);
                }
                (RelayEvent::OfferAnswered { sdp, .. }, side) => m.on_offer_answered(side, sdp),
                (RelayEvent::OfferRefused { status, .. }, side) => {
                    m.on_offer_refused(side, status);
                }
                (RelayEvent::Ended { why, .. }, side) => {
                    let reason = match why {
                        LegEnd::Bye => HangupReason::Bye,
                        LegEnd::SessionExpired => HangupReason::SessionExpired,
                        LegEnd::NoAck => HangupReason::Lost,
                    };
                    m.on_hangup(side, reason, now);
                }
                _ => {}
            }
        }
        if !self.relay_has(leg) {
            self.legs.remove(&leg);
        }
        self.run(env, cid, call);
    }

    /// What an event of one INVITE of hunt leg `l` means for the leg: `None` when it
    /// is of no concern to the call (a losing fork), else the event to give the machine.
    fn fork_event(
        &mut self,
        call: &mut Call,
        l: LegId,
        key: LegKey,
        event: RelayEvent,
        now: Instant,
    ) -> Option<RelayEvent> {
        let forks = call.b.get_mut(&l)?;
        if let Some(winner) = forks.winner
            && winner != key
        {
            // A fork that lost: it ends on its own (its 487), or is hung up.
            match event {
                RelayEvent::Answered { .. } => {
                    self.relay.hang_up(key, now);
                    forks.live.retain(|k| *k != key);
                }
                RelayEvent::Failed { .. } | RelayEvent::Ended { .. } => {
                    forks.live.retain(|k| *k != key);
                }
                RelayEvent::Offer { .. } => self.relay.refuse_offer(key, 491, now),
                RelayEvent::Request { id, .. } => self.relay.answer_request(id, 481, now),
                _ => {}
            }
            return None;
        }
        match event {
            RelayEvent::Answered { .. } if forks.winner.is_none() => {
                forks.winner = Some(key);
                if !forks.cancelled {
                    forks.cancelled = true;
                    for other in forks.live.clone() {
                        if other != key {
                            self.relay.hang_up(other, now);
                        }
                    }
                }
                Some(event)
            }
            RelayEvent::Failed { status, .. } => {
                forks.failed(key, status);
                if forks.live.is_empty() && forks.winner.is_none() {
                    let status = forks.failure.unwrap_or(status);
                    Some(RelayEvent::Failed { leg: key, status })
                } else {
                    None
                }
            }
            RelayEvent::Ended { .. } => {
                forks.live.retain(|k| *k != key);
                Some(event)
            }
            other => Some(other),
        }
    }

    /// An event of a leg no call has any more: one that answers is hung up, an offer
    /// refused.
    fn orphan(&mut self, leg: LegKey, event: &RelayEvent, now: Instant) {
        match event {
            RelayEvent::Request { id, .. } => self.relay.answer_request(*id, 481, now),
            RelayEvent::Answered { .. } => self.relay.hang_up(leg, now),
            RelayEvent::Offer { .. } => self.relay.refuse_offer(leg, 491, now),
            _ => {}
        }
    }

    /// Whether the relay still has this leg.
    fn relay_has(&self, leg: LegKey) -> bool {
        self.relay.call_id(leg).is_some()
    }

    /// The caller's INVITE is up as leg `a`: the call starts as the proxy decided.
    fn start_call(&mut self, env: &B2bEnv<'_>, a: LegKey, invite: &Message) {
        let call_id = invite.call_id().unwrap_or("").to_owned();
        let Some(handed) = self.waiting.remove(&call_id) else {
            // Not handed over by the proxy: nothing decided for it.
            self.relay.reject(a, 481, "", env.now);
            return;
        };
        let cid = self.next_call;
        self.next_call += 1;
        self.started += 1;
        let offer = has_sdp(invite).then(|| String::from_utf8_lossy(invite.body()).into_owned());
        let domain = env.proxy.domain().to_owned();
        let caller_id = &handed.decision.caller_id;
        let from = if caller_id.name.is_empty() {
            format!("<sip:{}@{domain}>", caller_id.number)
        } else {
            format!(
                "\"{}\" <sip:{}@{domain}>",
                caller_id.name.replace('"', ""),
                caller_id.number
            )
        };
        let plan = env.proxy.dial_plan();
        tracing::info!(
            call = cid,
            caller = %handed.caller,
            dialled = %handed.decision.dialled,
            call_id = %call_id,
            "B2BUA: call from {} to {} ({})",
            handed.caller,
            handed.decision.dialled,
            handed.decision.action.describe()
        );
        let start = CallStart {
            caller: handed.caller,
            dialled: handed.decision.dialled.clone(),
            call_id: call_id.clone(),
            offer,
        };
        let machine = {
            let dir = self.directory(env, &plan);
            B2bCall::new(start, handed.decision, self.ring_timeout, env.now, &dir)
        };
        self.legs.insert(a, (cid, Side::A));
        let call = Call {
            machine,
            a,
            b: HashMap::new(),
            plan,
            from,
            call_id,
        };
        self.run(env, cid, call);
    }

    /// Carries out what the call's machine asks, notes its events and its timer, and
    /// keeps the call unless it is over.
    fn run(&mut self, env: &B2bEnv<'_>, cid: u64, mut call: Call) {
        let now = env.now;
        while let Some(command) = call.machine.poll_command() {
            match command {
                B2bCommand::Place { leg, to, sdp, .. } => {
                    if let Err(status) = self.place(env, cid, &mut call, leg, &to, sdp) {
                        let plan = Arc::clone(&call.plan);
                        let dir = self.directory(env, &plan);
                        call.machine.on_failed(leg, status, now, &dir);
                    }
                }
                B2bCommand::Cancel { leg } => {
                    if let Some(forks) = call.b.get_mut(&leg)
                        && !forks.cancelled
                    {
                        forks.cancelled = true;
                        for k in forks.live.clone() {
                            self.relay.hang_up(k, now);
                        }
                    }
                }
                B2bCommand::Progress { status, sdp } => {
                    self.relay.progress(call.a, status, sdp, now);
                }
                B2bCommand::Answer { sdp } => self.relay.answer(call.a, sdp, now),
                B2bCommand::Ack { leg, sdp } => {
                    if let Some(k) = leg_of(&call, Side::B(leg)) {
                        self.relay.ack(k, sdp, now);
                    }
                }
                B2bCommand::Reject { code, reason } => {
                    self.relay.reject(call.a, code, &reason, now);
                    self.legs.remove(&call.a);
                }
                B2bCommand::Bye { side } => {
                    if let Some(k) = leg_of(&call, side) {
                        self.relay.hang_up(k, now);
                        self.legs.remove(&k);
                        if let Side::B(l) = side
                            && let Some(forks) = call.b.get_mut(&l)
                        {
                            forks.live.retain(|x| *x != k);
                        }
                    }
                }
                B2bCommand::Offer { to, sdp, method } => {
                    if let Some(k) = leg_of(&call, to) {
                        let kind = match method {
                            OfferMethod::Invite => OfferKind::Invite,
                            OfferMethod::Update => OfferKind::Update,
                        };
                        self.relay.offer(k, sdp, kind, now);
                    }
                }
                B2bCommand::AnswerOffer { to, sdp } => {
                    if let Some(k) = leg_of(&call, to) {
                        self.relay.answer_offer(k, sdp, now);
                    }
                }
                B2bCommand::RefuseOffer { to, status } => {
                    if let Some(k) = leg_of(&call, to) {
                        self.relay.refuse_offer(k, status, now);
                    }
                }
            }
        }
        while let Some((at, event)) = call.machine.poll_event() {
            self.note(cid, &call, at, event);
        }
        if call.machine.is_finished() {
            self.ended += 1;
            self.legs.remove(&call.a);
            for forks in call.b.values() {
                for k in &forks.live {
                    self.legs.remove(k);
                }
            }
            return;
        }
        if let Some(at) = call.machine.poll_timeout() {
            self.timers.push(Reverse((at, cid)));
        }
        self.calls.insert(cid, call);
    }

    /// Places leg `leg` of call `cid`: an INVITE to each phone the callee registered.
    /// `Err` is the status the leg fails with (480: nobody registered; 503: none can
    /// be sent, or a number through a trunk, which the B2BUA does not serve).
    fn place(
        &mut self,
        env: &B2bEnv<'_>,
        cid: u64,
        call: &mut Call,
        leg: LegId,
        to: &Ring,
        sdp: Option<String>,
    ) -> Result<(), u16> {
        let Ring::User { name } = to else {
            tracing::info!(call = cid, "B2BUA: {leg} to a trunk: not served yet");
            return Err(503);
        };
        let targets = env.proxy.leg_targets(env.location, env.unix, name);
        if targets.is_empty() {
            tracing::debug!(call = cid, user = %name, "B2BUA: {leg}: nobody registered");
            return Err(480);
        }
        let mut forks = Forks::default();
        for target in targets {
            let placement = Placement {
                uri: target.uri,
                to: format!("<sip:{name}@{}>", env.proxy.domain()),
                from: call.from.clone(),
                routes: target.routes,
                flow: target.flow,
                sdp: sdp.clone(),
                headers: Vec::new(),
            };
            match self.relay.place(placement, env.now) {
                Ok(k) => {
                    forks.live.push(k);
                    self.legs.insert(k, (cid, Side::B(leg)));
                }
                Err(e) => tracing::warn!(call = cid, "B2BUA: {leg} to {name}: {e}"),
            }
        }
        if forks.live.is_empty() {
            return Err(503);
        }
        call.b.insert(leg, forks);
        Ok(())
    }

    /// Logs what happened, keeps it for call records, and notes who answered a group.
    fn note(&mut self, cid: u64, call: &Call, at: Instant, event: B2bEvent) {
        match &event {
            B2bEvent::Answered { leg, group } => {
                if let Some(g) = group {
                    self.rotation.record(g);
                }
                tracing::info!(call = cid, call_id = %call.call_id, "B2BUA: answered on {leg}");
            }
            B2bEvent::Ended { by, status, reason } => {
                let by = by.map_or_else(|| "the PBX".to_owned(), |s| s.to_string());
                tracing::info!(
                    call = cid,
                    call_id = %call.call_id,
                    status,
                    "B2BUA: call ended by {by} ({reason})"
                );
            }
            other => tracing::debug!(call = cid, "B2BUA: {other:?}"),
        }
        if let Some(events) = self.events.as_mut() {
            let call_id = match &event {
                B2bEvent::Started { call_id, .. } => Some(call_id.clone()),
                B2bEvent::LegPlaced { leg, .. } => call
                    .b
                    .get(leg)
                    .and_then(|f| f.live.first())
                    .and_then(|k| self.relay.call_id(*k))
                    .map(str::to_owned),
                _ => None,
            };
            events.push_back(CallEvent {
                at,
                call: cid,
                event,
                call_id,
            });
        }
    }

    /// Calls started and ended since the start (for the logs and tests).
    pub fn counts(&self) -> (u64, u64) {
        (self.started, self.ended)
    }
}

/// The relay leg of a side of a call (for a leg of the hunt, the INVITE that answered).
fn leg_of(call: &Call, side: Side) -> Option<LegKey> {
    match side {
        Side::A => Some(call.a),
        Side::B(l) => call.b.get(&l).and_then(|f| f.winner),
    }
}

fn has_sdp(msg: &Message) -> bool {
    !msg.body().is_empty()
        && msg
            .content_type()
            .ok()
            .flatten()
            .is_some_and(|ct| ct.is("application", "sdp"))
}
