//! The stateful proxy (RFC 3261 §16), sans-IO: it sits on the transaction layer as its
//! TU. Each request that starts a server transaction gets a response context
//! ([`Context`]) with one client transaction per branch; responses are chosen and sent
//! back as §16.7 says; the clock is the `now` of each call, so tests run on a fake one.
//!
//! What a request goes through, in §16's order:
//! 1. validation (§16.3): Max-Forwards 0 gets 483, a request that already went through
//!    us with the same identifying fields gets 482 (loop; a spiral, whose Request-URI
//!    changed, passes); a Proxy-Require option tag we do not support (we support
//!    none) gets 420 with Unsupported;
//! 2. Route processing (§16.4): our own Record-Route values on top of Route are popped
//!    (both of a double Record-Route); a strict router's Request-URI naming us is
//!    replaced by the last Route value;
//! 3. authentication (§22.3): whether a request is initial is decided by its To tag
//!    alone (§12, §16.6), never by its Route set. Every request we would forward that
//!    is not the continuation of a dialog we record-routed (our Record-Route value on
//!    top of Route, signed for its Call-ID) nor an in-dialog request to a local user's
//!    registered contacts needs Proxy-Authorization of a local user, the From user
//!    (407; 403 for another user), unless the source is trusted. So nothing from an
//!    unauthenticated sender is relayed to a host that is not ours, and an unknown
//!    user and an unregistered one get the same 407. What we answer as a UAS
//!    (OPTIONS, methods we do not know) is not challenged, and is answered by us for
//!    unauthenticated senders whoever it is for;
//! 4. targets (§16.5): the next Route when one is left; else, for our domain, the dial
//!    plan decides what an out-of-dialog INVITE or MESSAGE reaches (an extension
//!    number or a name, a rejection; what needs the B2BUA is refused 480 for now),
//!    any other request for a user part reaching the user with that extension or
//!    name; then every binding of the AOR (404 for an unknown user, 480 without
//!    bindings), in parallel,
//!    or serially by q groups when the q-values differ (§16.6); other domains only when
//!    configured, and only for authenticated callers;
//! 5. forwarding (§16.6) by editing bytes ([`sip_core::forward`]): Request-URI, Via
//!    with a branch derived from the request (so loops can be seen), Record-Route on
//!    every initial dialog-creating request (twice when the two sides' transports
//!    differ), Max-Forwards decremented;
//! 6. responses (§16.7): provisionals relayed, every 2xx relayed at once and the other
//!    branches cancelled, a 6xx ends the search; a 3xx's Contacts in our domain (or
//!    allowed foreign addresses) join the target set, at most `max_recursions` times,
//!    and leave the 3xx; otherwise the best final response when all branches are done
//!    (503 becomes 500; a 401/407 carries the challenges of every 401 and 407
//!    received, step 7); Timer C (from the transaction layer) cancels a branch and
//!    counts as 408;
//! 7. CANCEL (§16.10): answered 200, every pending branch cancelled, 487 to the INVITE;
//!    a CANCEL that matches no transaction is forwarded statelessly
//!    ([`Proxy::on_stray_cancel`]) where its INVITE would have gone.
//!
//! ACKs for 2xx and 2xx retransmissions that outlive their transactions are forwarded
//! statelessly (§16.11), routed like any in-dialog request: the ACK's branch is derived
//! from its own, so a retransmitted ACK goes out identical.
//!
//! Next hops are IP addresses (the contacts phones register, our Record-Route values);
//! names are resolved only for foreign domains, which are off by default, so routing a
//! call never waits for DNS.

mod calls;
mod route;

use crate::authenticator::{AuthCheck, Authenticator};
use crate::myself::Myself;
use ipnet::IpNet;
use route::{Hop, Interfaces, RouteInfo};
use sip_core::builder::response_to_with_reason;
use sip_core::forward::{RequestEdit, forward_request, strip_top_via};
use sip_core::headers::{Contact, split_list};
use sip_core::ids::IdGenerator;
use sip_core::transaction::{Timer, TransactionKey, TransactionLayer};
use sip_core::{Flow, HeaderName, Message, Method, Transport, Uri};
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;
use store::{Binding, LocationReader, UserStore};

pub use calls::{CallStats, CallTracker, CallTrackerSettings, WallClock};
pub use route::Interface;

/// What the proxy is configured to do.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Our domain, its aliases (`[registrar] aliases`) and our addresses: Request-URIs
    /// naming them are local.
    pub myself: Myself,
    /// The Server header of the responses we make.
    pub server_name: String,
    /// Challenge local callers (`[proxy] require_auth`).
    pub require_auth: bool,
    /// Sources exempt from the challenge (`[proxy] trusted_networks`).
    pub trusted: Vec<IpNet>,
    /// Forward requests for other domains (`[proxy] forward_foreign_domains`).
    pub forward_foreign: bool,
    /// How many 3xx responses one request may recurse on (`[proxy] max_recursions`); 0
    /// passes every 3xx on to the caller.
    pub max_recursions: u32,
}

/// Counters, for the logs and the admin API.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyStats {
    /// Out-of-dialog INVITEs forwarded to at least one branch.
    pub calls_routed: u64,
    /// Requests forwarded (every branch, in-dialog requests and ACKs included).
    pub requests_forwarded: u64,
    /// Responses sent upstream, relayed or our own, by class: index 1 is 1xx ... 6 is 6xx.
    pub responses: [u64; 7],
    /// 407 challenges sent.
    pub challenges: u64,
    /// Response contexts live now.
    pub contexts: usize,
}

impl ProxyStats {
    /// One compact line for the logs, with the live transactions count beside ours.
    pub fn summary(&self, transactions: usize) -> String {
        let r = &self.responses;
        format!(
            "calls {} forwarded {} responses 1xx {} 2xx {} 3xx {} 4xx {} 5xx {} 6xx {} \
             challenges {} contexts {} transactions {transactions}",
            self.calls_routed,
            self.requests_forwarded,
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            self.challenges,
            self.contexts,
        )
    }
}

/// When to log the counters at info level: when they changed since the last line, at
/// most once per `interval`, so an idle server stays quiet and a busy one writes one
/// line a minute.
#[derive(Debug)]
pub struct StatsLog {
    interval: std::time::Duration,
    last_at: Option<Instant>,
    last: String,
}

impl StatsLog {
    /// Nothing logged yet; the counters start at zero.
    pub fn new(interval: std::time::Duration) -> StatsLog {
        StatsLog {
            interval,
            last_at: None,
            last: ProxyStats::default().summary(0),
        }
    }

    /// The line to log now, if any.
    pub fn due(&mut self, now: Instant, stats: &ProxyStats, transactions: usize) -> Option<String> {
        if self
            .last_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.interval)
        {
            return None;
        }
        let line = stats.summary(transactions);
        if line == self.last {
            return None;
        }
        self.last_at = Some(now);
        self.last.clone_from(&line);
        Some(line)
    }
}

/// What the caller of [`Proxy::on_request`] should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// The proxy answered the request itself (refused, challenged, or a CANCEL matched).
    Answered,
    /// The proxy forwards the request: a context now runs its branches.
    Forwarded,
    /// The request is addressed to this server itself (no user part, or OPTIONS to
    /// us): answer it as a UAS would.
    ForUs,
    /// The request goes to another domain whose name must be resolved (RFC 3263):
    /// locate this URI and hand the targets to [`Proxy::on_resolved`].
    Resolve(String),
    /// An INVITE the dial plan gives the B2BUA (a ring group, a callee who forwards, a
    /// rule with `pbx = true`), from a caller who authenticated: the server transaction
    /// is not the proxy's any more; hand the request to the B2BUA.
    Pbx(Box<PbxCall>),
}

/// A call for the B2BUA, as the proxy decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxCall {
    /// The caller (the From user, authenticated or trusted).
    pub caller: String,
    /// What the dial plan decided.
    pub decision: pbx::Decision,
}

/// Where a B2BUA leg to a local user goes: one registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegTarget {
    /// The Request-URI (the contact).
    pub uri: String,
    /// The Route set (the binding's Path).
    pub routes: Vec<String>,
    /// Where to send.
    pub flow: Flow,
}

/// What the proxy needs from its surroundings for one request.
pub struct Env<'a> {
    /// The transaction layer's clock.
    pub now: Instant,
    /// Wall-clock Unix seconds, for binding expiry and nonces.
    pub unix: u64,
    /// The users (for authentication and 404 vs 480).
    pub users: &'a dyn UserStore,
    /// The server's one authenticator (shared with the registrar: one ban table).
    pub auth: &'a mut Authenticator,
    /// The location service.
    pub location: &'a LocationReader,
}

/// One branch of a context: a client transaction (§16.6).
#[derive(Debug)]
struct Branch {
    key: TransactionKey,
    proceeding: bool,
    done: bool,
    /// Timer C fired and the branch was cancelled: its final response counts as 408.
    timed_out: bool,
    /// A CANCEL is owed as soon as a provisional arrives (§9.1: not before).
    cancel_on_provisional: bool,
    /// Where to try instead if sending fails: a plain binding's Contact address when
    /// the connection it registered over is gone.
    retry: Option<Hop>,
}

/// A response context (§16.7): the request, its branches and the best response so far.
#[derive(Debug)]
struct Context {
    request: Message,
    incoming: Transport,
    /// Where the request came from (our Record-Route value on its side is one it
    /// can reach).
    caller: std::net::IpAddr,
    /// Record-Route this request (dialog-creating, out of dialog).
    record_route: bool,
    /// The Route set to send (our own values popped); `None` keeps the received one.
    routes: Option<Vec<String>>,
    /// Targets not tried yet: q groups, best first (§16.6 serial search).
    pending: VecDeque<Vec<Hop>>,
    branches: Vec<Branch>,
    branch_base: String,
    best: Option<Message>,
    /// Every WWW-Authenticate and Proxy-Authenticate of the 401s and 407s received, in
    /// order: a 401/407 sent upstream carries them all (§16.7 step 7).
    challenges: Vec<(HeaderName, String)>,
    final_sent: bool,
    /// No new branch may start: a 2xx or 6xx arrived, or the caller cancelled.
    stop: bool,
    /// Waiting for RFC 3263 resolution of the Request-URI.
    resolving: bool,
    is_invite: bool,
    /// The caller was authenticated (or trusted): foreign targets are allowed.
    authenticated: bool,
    /// Every target URI in the target set so far: a 3xx Contact already there is not
    /// added again (§16.5).
    targets: Vec<String>,
    /// 3xx responses recursed on so far (bounded by `max_recursions`).
    recursions: u32,
    /// The location service and the clocks when the request came, for 3xx Contacts in
    /// our domain (their bindings are looked up when the 3xx arrives).
    location: LocationReader,
    unix: u64,
    started: Instant,
}

/// The proxy: settings, our addresses, the identifier source and the live contexts.
pub struct Proxy {
    settings: ProxySettings,
    /// The dial plan, swapped by `serve`'s reloader; read once per call.
    dial_plan: crate::dial_plan::DialPlan,
    interfaces: Interfaces,
    /// Whether a B2BUA takes the calls that need one ([`Handled::Pbx`]); without, they
    /// are answered 480.
    b2bua: bool,
    /// Our To tags and the tokens of our Record-Route values.
    ids: IdGenerator,
    contexts: HashMap<TransactionKey, Context>,
    /// Client transaction to (server transaction, branch index).
    branches: HashMap<TransactionKey, (TransactionKey, usize)>,
    stats: ProxyStats,
    /// The calls followed for their call detail records, when they are kept.
    calls: Option<CallTracker>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("settings", &self.settings)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The Via branch prefix of ACKs we forward statelessly.
const STATELESS_ACK: &str = "z9hG4bKsbA";
/// The Via branch prefix of CANCELs we forward statelessly (their answers are relayed).
const STATELESS_CANCEL: &str = "z9hG4bKsbC";

/// Methods whose out-of-dialog request creates a dialog, and so is record-routed.
fn creates_dialog(m: &Method) -> bool {
    matches!(
        m,
        Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
    )
}

impl Proxy {
    /// A proxy advertising `interfaces` (our listening addresses) in Via and
    /// Record-Route, making tags and Record-Route tokens with `ids`.
    pub fn new(settings: ProxySettings, interfaces: Vec<Interface>, ids: IdGenerator) -> Proxy {
        Proxy {
            interfaces: Interfaces::new(interfaces, settings.myself.clone()),
            settings,
            dial_plan: crate::dial_plan::DialPlan::default(),
            b2bua: false,
            ids,
            contexts: HashMap::new(),
            branches: HashMap::new(),
            stats: ProxyStats::default(),
            calls: None,
        }
    }

    /// Keeps a call detail record of every call relayed, through `tracker`.
    pub fn with_call_records(mut self, tracker: CallTracker) -> Proxy {
        self.set_call_records(tracker);
        self
    }

    /// [`Proxy::with_call_records`] on a proxy already in place.
    pub fn set_call_records(&mut self, tracker: CallTracker) {
        self.calls = Some(tracker);
    }

    /// The call records' counters, when they are kept.
    pub fn call_stats(&self) -> Option<CallStats> {
        self.calls.as_ref().map(CallTracker::stats)
    }

    /// Closes the calls whose BYE is long overdue (see [`CallTracker::sweep`]).
    pub fn sweep_calls(&mut self, now: Instant, unix: u64) {
        if let Some(calls) = self.calls.as_mut() {
            calls.sweep(now, unix);
        }
    }

    /// Records every call in progress as ended by the system for `reason`.
    pub fn close_calls(&mut self, now: Instant, reason: &str) {
        if let Some(calls) = self.calls.as_mut() {
            calls.close_all(now, reason);
        }
    }

    /// Routes calls with `plan` (the built-in plan, extensions and names, otherwise).
    pub fn with_dial_plan(mut self, plan: crate::dial_plan::DialPlan) -> Proxy {
        self.dial_plan = plan;
        self
    }

    /// Routes calls with `plan` from now on.
    #[cfg(test)]
    pub fn set_dial_plan(&mut self, plan: crate::dial_plan::DialPlan) {
        self.dial_plan = plan;
    }

    /// Hands the calls that need a B2BUA to the router's ([`Handled::Pbx`]).
    pub fn enable_b2bua(&mut self) {
        self.b2bua = true;
    }

    /// The dial plan in force.
    pub fn dial_plan(&self) -> Arc<pbx::Plan> {
        self.dial_plan.current()
    }

    /// Our domain.
    pub fn domain(&self) -> &str {
        self.settings.myself.domain()
    }

    /// Where a B2BUA leg to local user `user` goes: their registered contacts, best
    /// first (empty when none is registered or reachable).
    pub fn leg_targets(&self, location: &LocationReader, unix: u64, user: &str) -> Vec<LegTarget> {
        let aor = format!("sip:{user}@{}", self.settings.myself.domain());
        let mut bindings = location.lookup(&aor, unix);
        bindings.sort_by(Binding::priority_cmp);
        self.interfaces
            .hops_for_bindings(&bindings)
            .into_iter()
            .flatten()
            .map(|hop| LegTarget {
                uri: hop.request_uri.unwrap_or_else(|| aor.clone()),
                routes: hop.routes.unwrap_or_default(),
                flow: hop.flow,
            })
            .collect()
    }

    /// Whether a call the plan decided needs the B2BUA: a ring group, a rule with
    /// `pbx = true`, or a callee with call forwarding.
    fn needs_b2bua(env: &Env<'_>, decision: &pbx::Decision) -> bool {
        match &decision.action {
            pbx::Action::RingGroup { .. } => true,
            pbx::Action::Extension { target } => {
                decision.pbx
                    || env
                        .users
                        .get(&Self::directory(env, target))
                        .ok()
                        .flatten()
                        .is_some_and(|u| !u.forwarding.is_empty())
            }
            _ => false,
        }
    }

    /// The local user a user part names: the user with that extension, else the name
    /// itself (extensions are digits and never another user's name, so the two cannot
    /// be confused).
    fn directory(env: &Env<'_>, user_part: &str) -> String {
        // Extensions are digits only: a name costs no lookup, and a user whose name is
        // digits is found by name in the users held in memory.
        if !user_part.bytes().all(|b| b.is_ascii_digit())
            || matches!(env.users.get(user_part), Ok(Some(_)))
        {
            return user_part.to_owned();
        }
        match env.users.by_extension(user_part) {
            Ok(Some(u)) => u.name,
            _ => user_part.to_owned(),
        }
    }

    /// The local user a request for `dialled` in our domain goes to. An out-of-dialog
    /// INVITE or MESSAGE is a call (or a message) the dial plan decides, for the caller
    /// who authenticated (or is trusted) as its From user: only such a caller gets
    /// here, so the plan's answers tell nothing to strangers. Anything else reaches
    /// the user with that extension or name. `Err` when the plan answered the request.
    fn local_target(
        &mut self,
        env: &Env<'_>,
        txl: &mut TransactionLayer,
        req: &Incoming<'_>,
        dialled: &str,
    ) -> Result<String, Handled> {
        let is_call = matches!(req.method, Method::Invite | Method::Message);
        if req.to_tag || !is_call {
            return Ok(Self::directory(env, dialled));
        }
        let caller_name = req
            .request
            .from()
            .ok()
            .and_then(|f| f.uri.as_sip().and_then(Self::local_user))
            .unwrap_or_default();
        let extension = env
            .users
            .get(&caller_name)
            .ok()
            .flatten()
            .and_then(|u| u.extension);
        let caller = pbx::Caller {
            name: caller_name,
            extension,
        };
        let now = jiff::Timestamp::from_second(i64::try_from(env.unix).unwrap_or(0))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let plan = self.dial_plan.current();
        let decision = plan.route(dialled, &caller, now);
        let rule = decision.rule.as_ref().map_or_else(
            || "no rule".to_owned(),
            |r| format!("rule {} \"{}\"", r.index, r.name),
        );
        if self.b2bua && req.method == Method::Invite && Self::needs_b2bua(env, &decision) {
            tracing::debug!(caller = %caller.name, dialled, %rule, "dial plan: to the B2BUA");
            return Err(Handled::Pbx(Box::new(PbxCall {
                caller: caller.name,
                decision,
            })));
        }
        match decision.action {
            pbx::Action::Extension { target } => {
                tracing::debug!(caller = %caller.name, dialled, %rule, %target, "dial plan: extension");
                Ok(Self::directory(env, &target))
            }
            pbx::Action::Reject { code, reason } => {
                tracing::info!(caller = %caller.name, dialled, %rule, "dial plan: rejected with {code}");
                let reason = reason.unwrap_or_default();
                self.respond(env, txl, req.key, req.request, code, &reason, &[]);
                Err(Handled::Answered)
            }
            action => {
                let what = action.describe();
                tracing::warn!(
                    caller = %caller.name,
                    dialled,
                    %rule,
                    "dial plan: {what} is not served yet (it needs the B2BUA); answered 480"
                );
                let reason = format!("Temporarily Unavailable ({what} is not served yet)");
                self.respond(env, txl, req.key, req.request, 480, &reason, &[]);
                Err(Handled::Answered)
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            contexts: self.contexts.len(),
            ..self.stats
        }
    }

    /// Whether a SIP URI names this server: our domain (our port or none), or one of
    /// our addresses with a port we listen on there.
    fn names_us(&self, uri: &sip_core::SipUri<'_>) -> bool {
        self.settings.myself.names_us(uri)
    }

    /// The token our Record-Route values carry in the dialog of `call_id`.
    fn rr_token(&self, call_id: &str) -> String {
        self.ids.derive(&[b"rr", call_id.as_bytes()])
    }

    /// Whether Route processing found our Record-Route value signed for this request's
    /// dialog: a dialog we record-routed, which may continue without credentials.
    fn is_our_dialog(&self, request: &Message, info: &RouteInfo) -> bool {
        let Some(token) = info.token.as_deref() else {
            return false;
        };
        let expected = self.rr_token(request.call_id().unwrap_or(""));
        constant_time_eq(token.as_bytes(), expected.as_bytes())
    }

    /// Whether requests from `remote` are exempt from authentication: ourselves, a
    /// trusted network, or everybody when `require_auth` is off.
    fn is_trusted(&self, remote: std::net::SocketAddr) -> bool {
        !self.settings.require_auth
            || self.interfaces.is_own_addr(remote)
            || self
                .settings
                .trusted
                .iter()
                .any(|n| n.contains(&remote.ip()))
    }

    /// The To tag of our responses to `request`: the same for a request and its CANCEL
    /// (RFC 3261 §9.2), unique and unguessable otherwise (§19.3).
    fn our_tag(&self, request: &Message) -> String {
        our_tag(&self.ids, request)
    }

    /// The local user a SIP URI in our domain names, if it has a user part.
    fn local_user(uri: &sip_core::SipUri<'_>) -> Option<String> {
        uri.user_decoded()
            .map(|u| String::from_utf8_lossy(&u).into_owned())
    }

    // ----- requests -----

    /// A request that started server transaction `key` (any method but REGISTER; ACKs
    /// and CANCELs included, though ACKs normally come through [`Proxy::on_ack`]).
    ///
    /// In steps: [`Proxy::validate`] (§16.3 steps 3 and 4, §16.4), whether it is for
    /// the server itself, Proxy-Require (§16.3 step 5), [`Proxy::authenticate_sender`]
    /// (§22.3), [`Proxy::choose_targets`] (§16.5), then [`Proxy::start_forwarding`].
    pub fn on_request(
        &mut self,
        env: &mut Env<'_>,
        txl: &mut TransactionLayer,
        key: TransactionKey,
        request: &Message,
        flow: Flow,
    ) -> Handled {
        // The transaction layer hands only requests here: nothing else to answer.
        let Some(method) = request.method().cloned() else {
            return Handled::Answered;
        };
        if method == Method::Cancel {
            self.on_cancel(env, txl, key, request);
            return Handled::Answered;
        }
        let (branch_base, info) = match self.validate(env, txl, key, request, &method) {
            Ok(valid) => valid,
            Err(handled) => return handled,
        };
        let to_tag = request.to().ok().and_then(|t| t.tag()).is_some();
        let ruri_text = info
            .request_uri
            .clone()
            .unwrap_or_else(|| request.request_uri_str().unwrap_or("").to_owned());
        let ruri = Uri::parse(&ruri_text).ok();
        let ruri_sip = ruri.as_ref().and_then(Uri::as_sip);
        let ruri_is_ours = ruri_sip.is_some_and(|u| self.names_us(u));
        // §16.3 step 5: Proxy-Require. An OPTIONS or an unknown method may still turn
        // out to be answered here as a UAS (where Require counts, not Proxy-Require):
        // those are checked once their targets are known.
        let maybe_for_us = method == Method::Options || (!to_tag && !method.is_known());
        let req = Incoming {
            key,
            request,
            flow,
            method,
            info,
            to_tag,
            ruri_text: &ruri_text,
            ruri_sip,
            ruri_is_ours,
            maybe_for_us,
            branch_base,
        };
        if self.is_for_server(&req) {
            return Handled::ForUs;
        }
        if !req.maybe_for_us && self.refuse_proxy_require(env, txl, key, request) {
            return Handled::Answered;
        }
        let authenticated = match self.authenticate_sender(env, txl, &req) {
            Ok(authenticated) => authenticated,
            Err(handled) => return handled,
        };
        // A call: from here on whatever answers it ends its record. Strangers (never
        // authenticated) leave none.
        if authenticated
            && !req.to_tag
            && req.method == Method::Invite
            && let Some(calls) = self.calls.as_mut()
        {
            let dialled = req
                .ruri_sip
                .filter(|_| req.ruri_is_ours)
                .and_then(Self::local_user)
                .unwrap_or_else(|| req.ruri_text.to_owned());
            calls.invite(env.now, env.unix, request, &dialled);
        }
        let (groups, resolve) = match self.choose_targets(env, txl, &req, authenticated) {
            Ok(targets) => targets,
            Err(handled) => {
                if matches!(handled, Handled::Pbx(_))
                    && let Some(calls) = self.calls.as_mut()
                {
                    // The B2BUA carries the call, and records it.
                    calls.forget(request);
                }
                return handled;
            }
        };
        if req.maybe_for_us && self.refuse_proxy_require(env, txl, key, request) {
            return Handled::Answered;
        }
        self.start_forwarding(env, txl, req, authenticated, groups, resolve)
    }

    /// §16.3 steps 3 (Max-Forwards) and 4 (loops), and §16.4 (Route): the branch base
    /// and what the Route header says, or how the request was handled when it goes no
    /// further.
    fn validate(
        &mut self,
        env: &mut Env<'_>,
        txl: &mut TransactionLayer,
        key: TransactionKey,
        request: &Message,
        method: &Method,
    ) -> Result<(String, RouteInfo), Handled> {
        // §16.3 step 3: Max-Forwards.
        match request.max_forwards() {
            Ok(Some(0)) => {
                // §16.3 step 3: an OPTIONS that can go no further may be answered
                // here; we do so when it is addressed to the server itself (no user
                // part: we are its UAS). One for a user would have to be forwarded:
                // 483, as RFC 4475 §3.3.11 expects of a proxy.
                let for_server = request
                    .request_uri()
                    .as_ref()
                    .and_then(Uri::as_sip)
                    .is_some_and(|u| u.user.is_none());
                if *method == Method::Options && for_server {
                    return Err(Handled::ForUs);
                }
                self.respond(env, txl, key, request, 483, "", &[]);
                return Err(Handled::Answered);
            }
            Ok(_) => {}
            Err(_) => {
                self.respond(
                    env,
                    txl,
                    key,
                    request,
                    400,
                    "Bad Request (Max-Forwards)",
                    &[],
                );
                return Err(Handled::Answered);
            }
        }
        // §16.3 step 4: loops.
        let branch_base = branch_base(request);
        if self.interfaces.has_looped(request, &branch_base) {
            self.respond(env, txl, key, request, 482, "", &[]);
            return Err(Handled::Answered);
        }
        // §16.4: Route processing.
        match RouteInfo::read(request, &self.interfaces) {
            Ok(info) => Ok((branch_base, info)),
            Err(why) => {
                let reason = format!("Bad Request ({why})");
                self.respond(env, txl, key, request, 400, &reason, &[]);
                Err(Handled::Answered)
            }
        }
    }

    /// Whether the request is addressed to the server itself, with nothing to route:
    /// no user part and our name or address (any port: whoever wrote it reached us),
    /// or a scheme we cannot route (416); or the same after our own Route values.
    fn is_for_server(&self, req: &Incoming<'_>) -> bool {
        let info = &req.info;
        let user_less_us = req.ruri_sip.is_some_and(|u| {
            u.user.is_none() && (req.ruri_is_ours || self.interfaces.is_own_host(&u.host))
        });
        if info.remaining.is_empty() && info.popped == 0 && (user_less_us || req.ruri_sip.is_none())
        {
            return true;
        }
        info.remaining.is_empty()
            && req.ruri_is_ours
            && req.ruri_sip.is_some_and(|u| u.user.is_none())
    }

    /// §22.3: who is calling. `Ok(true)` when the sender is trusted or proved who it
    /// is, `Ok(false)` when the request needs no proof (in a dialog through us, or with
    /// nowhere to go); otherwise how the request was handled (challenged, refused, or
    /// for us as a UAS).
    fn authenticate_sender(
        &mut self,
        env: &mut Env<'_>,
        txl: &mut TransactionLayer,
        req: &Incoming<'_>,
    ) -> Result<bool, Handled> {
        let info = &req.info;
        let to_tag = req.to_tag;
        let trusted = self.is_trusted(req.flow.remote);
        if !to_tag && !trusted && req.maybe_for_us {
            // What a UAS answers (OPTIONS 200, unknown method 501) is answered here for
            // whoever did not authenticate, whatever user it names: registered,
            // unregistered and unknown users look the same, and nothing is relayed.
            return Err(Handled::ForUs);
        }
        let our_dialog = to_tag && info.popped > 0 && self.is_our_dialog(req.request, info);
        // In a dialog, a request for a local user's address goes to that user's
        // registered contacts only (SIPp's built-in scenarios send ACK and BYE to the
        // AOR): never off to another host.
        let to_local_contacts = to_tag && info.remaining.is_empty() && req.ruri_is_ours;
        // Whether the request has somewhere to go: what does not is refused below as
        // it is, without asking credentials that would change nothing.
        let would_forward = !info.remaining.is_empty()
            || req.ruri_is_ours
            || (to_tag && (info.popped > 0 || info.request_uri.is_some()))
            || (!to_tag && self.settings.forward_foreign);
        if would_forward && !trusted && !our_dialog && !to_local_contacts {
            return match self.authenticate(env, txl, req.key, req.request, req.flow) {
                Some(()) => Ok(true),
                None => Err(Handled::Answered),
            };
        }
        Ok(trusted)
    }

    /// §16.5: the targets, as groups of hops tried in turn, or a name to resolve
    /// (RFC 3263) first; otherwise how the request was handled (refused, or for us as
    /// a UAS).
    fn choose_targets(
        &mut self,
        env: &mut Env<'_>,
        txl: &mut TransactionLayer,
        req: &Incoming<'_>,
        authenticated: bool,
    ) -> Result<(VecDeque<Vec<Hop>>, Option<String>), Handled> {
        let (key, request, info, to_tag) = (req.key, req.request, &req.info, req.to_tag);
        let method = &req.method;
        let ruri_text = req.ruri_text;
        let mut groups: VecDeque<Vec<Hop>> = VecDeque::new();
        let mut resolve = None;
        if let Some(next) = info.remaining.first() {
            match self.interfaces.hop_to_route(next, ruri_text, info) {
                Some(hop) => groups.push_back(vec![hop]),
                None => {
                    let reason = "Not Found (the next Route cannot be reached)";
                    self.respond(env, txl, key, request, 404, reason, &[]);
                    return Err(Handled::Answered);
                }
            }
        } else if req.ruri_is_ours {
            let Some(dialled) = req.ruri_sip.and_then(Self::local_user) else {
                return Err(Handled::ForUs);
            };
            let user = self.local_target(env, txl, req, &dialled)?;
            if let Some(calls) = self.calls.as_mut() {
                calls.routed_to(request, &user);
            }
            let aor = format!("sip:{user}@{}", self.settings.myself.domain());
            let mut bindings = env.location.lookup(&aor, env.unix);
            if bindings.is_empty() && *method == Method::Options {
                // Keepalives and monitors ping any user at the proxy: we answer.
                return Err(Handled::ForUs);
            }
            if bindings.is_empty() {
                let code = if to_tag {
                    // In a dialog, whoever sent it: one answer for every user.
                    404
                } else if env.users.get(&user).ok().flatten().is_some() {
                    480
                } else {
                    404
                };
                self.respond(env, txl, key, request, code, "", &[]);
                return Err(Handled::Answered);
            }
            bindings.sort_by(Binding::priority_cmp);
            groups = self.interfaces.hops_for_bindings(&bindings);
            if groups.is_empty() {
                let reason = "Temporarily Unavailable (no contact can be reached)";
                self.respond(env, txl, key, request, 480, reason, &[]);
                return Err(Handled::Answered);
            }
        } else if to_tag && (info.popped > 0 || info.request_uri.is_some()) {
            // In a dialog we record-routed (or whose sender authenticated): on to the
            // remote target.
            match self.interfaces.hop_to_uri(ruri_text, info.next_transport) {
                Some(mut hop) => {
                    hop.request_uri = info.request_uri.clone();
                    groups.push_back(vec![hop]);
                }
                None => {
                    let reason = "Not Found (the Request-URI cannot be reached)";
                    self.respond(env, txl, key, request, 404, reason, &[]);
                    return Err(Handled::Answered);
                }
            }
        } else if self.settings.forward_foreign && authenticated && !to_tag {
            match self.interfaces.hop_to_uri(ruri_text, None) {
                Some(hop) => groups.push_back(vec![hop]),
                // A name: RFC 3263 resolution, off this task; on_resolved goes on.
                None => resolve = Some(ruri_text.to_owned()),
            }
        } else if (!to_tag && !method.is_known()) || *method == Method::Options {
            // Not ours to route: a UAS answer (OPTIONS 200, unknown method 501) says
            // the same to the sender without relaying anything.
            return Err(Handled::ForUs);
        } else {
            let reason = if to_tag {
                "Not Found (not a dialog through this proxy)"
            } else {
                "Forbidden (relaying denied)"
            };
            let code = if to_tag { 404 } else { 403 };
            self.respond(env, txl, key, request, code, reason, &[]);
            return Err(Handled::Answered);
        }
        Ok((groups, resolve))
    }

    /// Opens the context that forwards the request to `groups` (or waits for
    /// `resolve` to be located first).
    fn start_forwarding(
        &mut self,
        env: &mut Env<'_>,
        txl: &mut TransactionLayer,
        req: Incoming<'_>,
        authenticated: bool,
        groups: VecDeque<Vec<Hop>>,
        resolve: Option<String>,
    ) -> Handled {
        // §12, §16.6: the To tag alone says whether a request is in a dialog. A Route
        // naming us (phones with an outbound proxy preload it) says nothing about it.
        let out_of_dialog = !req.to_tag;
        let is_invite = req.method == Method::Invite;
        if is_invite && out_of_dialog {
            self.stats.calls_routed += 1;
        }
        if req.method == Method::Bye
            && let Some(calls) = self.calls.as_mut()
        {
            calls.bye(env.now, req.request);
        }
        let mut targets: Vec<String> = vec![req.ruri_text.to_owned()];
        for hop in groups.iter().flatten() {
            if let Some(uri) = &hop.request_uri {
                targets.push(uri.clone());
            }
        }
        let ctx = Context {
            authenticated,
            targets,
            recursions: 0,
            location: env.location.clone(),
            unix: env.unix,
            started: env.now,
            incoming: req.flow.transport,
            caller: req.flow.remote.ip(),
            record_route: out_of_dialog && creates_dialog(&req.method),
            routes: req.info.routes_to_send(),
            pending: groups,
            branches: Vec::new(),
            branch_base: req.branch_base,
            best: None,
            challenges: Vec::new(),
            final_sent: false,
            stop: false,
            resolving: resolve.is_some(),
            is_invite,
            request: req.request.clone(),
        };
        if let Some(uri) = resolve {
            self.contexts.insert(req.key, ctx);
            return Handled::Resolve(uri);
        }
        self.advance(env.now, txl, req.key, ctx);
        Handled::Forwarded
    }

    /// §16.3 step 5: answers 420 with Unsupported when Proxy-Require lists option tags
    /// (we support none there), 400 when it does not parse. Whether it answered.
    fn refuse_proxy_require(
        &mut self,
        env: &Env<'_>,
        txl: &mut TransactionLayer,
        key: TransactionKey,
        request: &Message,
    ) -> bool {
        let mut unsupported: Vec<&str> = Vec::new();
        for tag in request.tokens(HeaderName::ProxyRequire) {
            match tag {
                Ok(t) => {
                    if !unsupported.iter().any(|u| u.eq_ignore_ascii_case(t)) {
                        unsupported.push(t);
                    }
                }
                Err(e) => {
                    let reason = format!("Bad Request ({e})");
                    self.respond(env, txl, key, request, 400, &reason, &[]);
                    return true;
                }
            }
        }
        if unsupported.is_empty() {
            return false;
        }
        let list = unsupported.join(", ");
        self.respond(env, txl, key, request, 420, "", &[("Unsupported", &list)]);
        true
    }

    /// §22.3 for a request we would forward: the Proxy-Authorization of a local user,
    /// who must be the From user. `Some(())` when proven; `None` when the request was
    /// answered (407, or 403, 400, 500).
    fn authenticate(
        &mut self,
        env: &mut Env<'_>,
        txl: &mut TransactionLayer,
        key: TransactionKey,
        request: &Message,
        flow: Flow,
    ) -> Option<()> {
        let checked = env.auth.check(
            env.unix,
            request,
            HeaderName::ProxyAuthorization,
            flow.remote.ip(),
            env.users,
        );
        match checked {
            AuthCheck::User(user) => {
                let from_user = request
                    .from()
                    .ok()
                    .and_then(|f| f.uri.as_sip().and_then(Self::local_user));
                if from_user.as_deref() == Some(user.as_str()) {
                    return Some(());
                }
                self.respond(
                    env,
                    txl,
                    key,
                    request,
                    403,
                    "Forbidden (From is not the authenticated user)",
                    &[],
                );
            }
            AuthCheck::Challenge { stale } => {
                self.stats.challenges += 1;
                let values = env.auth.challenges(env.unix, stale);
                let extra: Vec<(&str, &str)> = values
                    .iter()
                    .map(|v| ("Proxy-Authenticate", v.as_str()))
                    .collect();
                self.respond(env, txl, key, request, 407, "", &extra);
            }
            AuthCheck::Refuse(code, reason) => {
                self.respond(env, txl, key, request, code, &reason, &[]);
            }
        }
        None
    }

    /// An ACK outside any transaction: the ACK to a 2xx (§16.11: forwarded statelessly),
    /// routed like any in-dialog request (see [`Proxy::stateless_hops`]). An ACK is
    /// never answered: one that cannot go anywhere is dropped.
    pub fn on_ack(
        &mut self,
        env: &Env<'_>,
        txl: &mut TransactionLayer,
        request: &Message,
        flow: Flow,
    ) {
        if matches!(request.max_forwards(), Ok(Some(0)) | Err(_)) {
            return;
        }
        let Ok(info) = RouteInfo::read(request, &self.interfaces) else {
            return;
        };
        let hops = self.stateless_hops(env, request, &info, flow);
        if hops.is_empty() {
            tracing::debug!("ACK with no route through us: dropped");
        }
        for hop in hops {
            self.forward_stateless(txl, request, &info, &hop, STATELESS_ACK);
        }
    }

    /// §16.10: a CANCEL that matches no transaction of ours is forwarded statelessly
    /// where its INVITE would have gone: the Route set of a dialog we are in, or the
    /// registered contacts of the local user it names. Responses to it come back
    /// through [`Proxy::on_stray_response`]. The caller checks that no INVITE
    /// transaction matches (`TransactionLayer::find_cancelled`), and hands it here
    /// instead of to the transaction layer, so no state is kept for it.
    pub fn on_stray_cancel(
        &mut self,
        env: &Env<'_>,
        txl: &mut TransactionLayer,
        cancel: &Message,
        flow: Flow,
    ) {
        if matches!(cancel.max_forwards(), Ok(Some(0)) | Err(_)) {
            return;
        }
        let Ok(info) = RouteInfo::read(cancel, &self.interfaces) else {
            return;
        };
        for hop in self.stateless_hops(env, cancel, &info, flow) {
            self.forward_stateless(txl, cancel, &info, &hop, STATELESS_CANCEL);
        }
    }

    /// Where a request forwarded without a transaction (ACK, stray CANCEL) goes: along
    /// the Route set when it is a dialog we record-routed or the sender is trusted; to
    /// the registered contacts of the local user its Request-URI names. Nowhere else:
    /// nobody may use us to relay what cannot be challenged.
    fn stateless_hops(
        &self,
        env: &Env<'_>,
        request: &Message,
        info: &RouteInfo,
        flow: Flow,
    ) -> Vec<Hop> {
        let ruri = info
            .request_uri
            .clone()
            .unwrap_or_else(|| request.request_uri_str().unwrap_or("").to_owned());
        let allowed = self.is_trusted(flow.remote) || self.is_our_dialog(request, info);
        if let Some(next) = info.remaining.first() {
            if !allowed {
                return Vec::new();
            }
            return self
                .interfaces
                .hop_to_route(next, &ruri, info)
                .into_iter()
                .collect();
        }
        let parsed = Uri::parse(&ruri).ok();
        if let Some(sip) = parsed.as_ref().and_then(Uri::as_sip)
            && self.names_us(sip)
        {
            let Some(user) = Self::local_user(sip) else {
                return Vec::new();
            };
            let user = Self::directory(env, &user);
            let aor = format!("sip:{user}@{}", self.settings.myself.domain());
            let mut bindings = env.location.lookup(&aor, env.unix);
            bindings.sort_by(Binding::priority_cmp);
            return self
                .interfaces
                .hops_for_bindings(&bindings)
                .into_iter()
                .flatten()
                .collect();
        }
        if allowed && (info.popped > 0 || info.request_uri.is_some()) {
            return self
                .interfaces
                .hop_to_uri(&ruri, info.next_transport)
                .into_iter()
                .collect();
        }
        Vec::new()
    }

    /// Sends `request` to `hop` without a transaction, with a Via branch derived from
    /// its own (so a retransmission goes out identical) under `prefix`.
    fn forward_stateless(
        &mut self,
        txl: &mut TransactionLayer,
        request: &Message,
        info: &RouteInfo,
        hop: &Hop,
        prefix: &str,
    ) {
        let Some(iface) = self
            .interfaces
            .toward(hop.flow.transport, hop.flow.remote.ip())
        else {
            return;
        };
        let mut h = DefaultHasher::new();
        request
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .unwrap_or("")
            .hash(&mut h);
        request.call_id().unwrap_or("").hash(&mut h);
        hop.flow.remote.hash(&mut h);
        let via = iface.via(&format!("{prefix}{:016x}", h.finish()));
        let routes = info.routes_to_send();
        let route_refs: Option<Vec<&str>> = hop
            .routes
            .as_ref()
            .or(routes.as_ref())
            .map(|r| r.iter().map(String::as_str).collect());
        let edit = RequestEdit {
            request_uri: hop.request_uri.as_deref().or(info.request_uri.as_deref()),
            routes: route_refs.as_deref(),
            via: &via,
            record_route: &[],
        };
        match forward_request(request, &edit) {
            Ok(bytes) => {
                self.stats.requests_forwarded += 1;
                txl.send_stateless(hop.flow, bytes);
            }
            Err(e) => tracing::debug!("not forwarded: {e}"),
        }
    }

    /// §16.10: a CANCEL is answered at once; the INVITE it names, if still in our hands,
    /// has its branches cancelled and gets 487.
    fn on_cancel(
        &mut self,
        env: &Env<'_>,
        txl: &mut TransactionLayer,
        key: TransactionKey,
        cancel: &Message,
    ) {
        let Some(invite_key) = txl.find_cancelled(cancel) else {
            self.respond(env, txl, key, cancel, 481, "", &[]);
            return;
        };
        self.respond(env, txl, key, cancel, 200, "", &[]);
        let Some(mut ctx) = self.contexts.remove(&invite_key) else {
            return;
        };
        ctx.stop = true;
        ctx.pending.clear();
        cancel_branches(env.now, txl, &mut ctx, None);
        if !ctx.final_sent {
            ctx.final_sent = true;
            let request = ctx.request.clone();
            self.respond(env, txl, invite_key, &request, 487, "", &[]);
        }
        self.settle(invite_key, ctx);
    }

    /// The RFC 3263 targets of a request [`Handled::Resolve`] asked for, in the order
    /// to try them (one after the other, §4 of RFC 3263); none when resolution failed.
    pub fn on_resolved(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        server: TransactionKey,
        targets: &[(Transport, std::net::SocketAddr)],
    ) {
        let Some(mut ctx) = self.contexts.remove(&server) else {
            return; // cancelled meanwhile
        };
        ctx.resolving = false;
        for &(transport, remote) in targets {
            let flow = Flow {
                transport,
                remote,
                local: None,
                connection: None,
            };
            ctx.pending.push_back(vec![Hop {
                request_uri: None,
                routes: None,
                flow,
                fallback: None,
            }]);
        }
        if targets.is_empty()
            && let Some(r) = build_response(
                &ctx.request,
                404,
                "Not Found (the domain cannot be resolved)",
                &self.settings.server_name,
                &self.ids,
            )
        {
            keep_best(&mut ctx.best, r);
        }
        self.advance(now, txl, server, ctx);
    }

    // ----- responses and timers -----

    /// A response for client transaction `key`.
    pub fn on_response(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        key: TransactionKey,
        response: Message,
    ) {
        let Some(&(server, index)) = self.branches.get(&key) else {
            // A 2xx retransmission after its context was settled: relay it statelessly
            // (§16.7 step 10's 2xx rule). Anything else (our CANCELs' 200s) stops here.
            let invite = response.cseq().is_ok_and(|c| c.method == Method::Invite);
            if invite && response.status().is_some_and(|c| (200..300).contains(&c)) {
                self.on_stray_response(txl, &response);
            }
            return;
        };
        let Some(mut ctx) = self.contexts.remove(&server) else {
            return;
        };
        let code = response.status().unwrap_or(500);
        if ctx.is_invite
            && let Some(calls) = self.calls.as_mut()
        {
            calls.leg_response(now, &ctx.request, key, code);
        }
        if code < 200 {
            let branch = &mut ctx.branches[index];
            branch.proceeding = true;
            if branch.cancel_on_provisional {
                branch.cancel_on_provisional = false;
                let _ = txl.cancel(now, branch.key);
            }
            if code > 100 && !ctx.final_sent {
                self.relay(now, txl, server, &response);
            }
        } else if code < 300 {
            ctx.branches[index].done = true;
            self.relay(now, txl, server, &response);
            ctx.final_sent = true;
            ctx.stop = true;
            ctx.pending.clear();
            cancel_branches(now, txl, &mut ctx, Some(index));
        } else {
            let branch = &mut ctx.branches[index];
            if !branch.done {
                branch.done = true;
                let timed_out = branch.timed_out;
                let mut chosen = if timed_out {
                    build_response(&ctx.request, 408, "", &self.settings.server_name, &self.ids)
                } else {
                    strip_top_via(&response).and_then(|b| Message::parse(b).ok())
                };
                if (300..400).contains(&code) && !timed_out && !ctx.stop {
                    chosen = chosen.and_then(|r| self.recurse(now, &mut ctx, r));
                }
                if code >= 600 {
                    ctx.stop = true;
                    ctx.pending.clear();
                    cancel_branches(now, txl, &mut ctx, Some(index));
                }
                if let Some(r) = chosen {
                    if matches!(r.status(), Some(401 | 407)) {
                        collect_challenges(&mut ctx.challenges, &r);
                    }
                    keep_best(&mut ctx.best, r);
                }
            }
        }
        self.advance(now, txl, server, ctx);
    }

    /// A transaction timer ran out. Timer C on a branch in Proceeding: cancel it and
    /// count it as 408; B, F, C in Calling: the branch failed with 408.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        key: TransactionKey,
        timer: Timer,
    ) {
        let Some((server, index, mut ctx)) = self.take_branch(key) else {
            return;
        };
        let branch = &mut ctx.branches[index];
        if timer == Timer::C && branch.proceeding && !branch.done {
            branch.timed_out = true;
            if txl.cancel(now, key).is_err() {
                self.fail_branch(now, &mut ctx, index, 408);
            }
        } else if matches!(timer, Timer::B | Timer::C | Timer::F) {
            self.fail_branch(now, &mut ctx, index, 408);
        }
        self.advance(now, txl, server, ctx);
    }

    /// A send failed for client transaction `key` (§16.9: the branch counts as 503).
    /// A branch to a plain binding whose connection is gone is sent again, at once, to
    /// the binding's Contact address instead (a new connection).
    pub fn on_transport_error(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        key: TransactionKey,
    ) {
        let Some((server, index, mut ctx)) = self.take_branch(key) else {
            return;
        };
        let branch = &mut ctx.branches[index];
        let retry = branch.retry.take().filter(|_| !branch.done && !ctx.stop);
        match retry {
            Some(hop) => {
                tracing::debug!(
                    to = %hop.flow.remote,
                    "the binding's connection is gone: trying its Contact address"
                );
                ctx.branches[index].done = true;
                if let Some(calls) = self.calls.as_mut() {
                    calls.leg_response(now, &ctx.request, key, 503);
                }
                self.start_group(now, txl, server, &mut ctx, vec![hop]);
            }
            None => self.fail_branch(now, &mut ctx, index, 503),
        }
        self.advance(now, txl, server, ctx);
    }

    /// Transaction `key` ended: a branch that never got a final response counts as 408;
    /// a server transaction takes its context with it.
    pub fn on_terminated(&mut self, now: Instant, txl: &mut TransactionLayer, key: TransactionKey) {
        if let Some((server, index)) = self.branches.remove(&key) {
            if let Some(mut ctx) = self.contexts.remove(&server) {
                if !ctx.branches[index].done {
                    self.fail_branch(now, &mut ctx, index, 408);
                }
                self.advance(now, txl, server, ctx);
            }
            return;
        }
        if let Some(ctx) = self.contexts.remove(&key) {
            for b in &ctx.branches {
                self.branches.remove(&b.key);
            }
        }
    }

    /// A response no client transaction matched: a 2xx to an INVITE whose transaction
    /// is over (the UAS retransmits it until the ACK). Relayed statelessly if our Via
    /// is on top; anything else is dropped (RFC 6026 §8.9 for a stateful proxy... but
    /// 2xx must get through).
    pub fn on_stray_response(&mut self, txl: &mut TransactionLayer, response: &Message) {
        let Ok(top) = response.top_via() else {
            return;
        };
        let ok = response.status().is_some_and(|c| (200..300).contains(&c));
        // The answer to a CANCEL we forwarded statelessly goes back the same way.
        let to_stray_cancel = top
            .branch()
            .is_some_and(|b| b.starts_with(STATELESS_CANCEL))
            && response.cseq().is_ok_and(|c| c.method == Method::Cancel);
        if !ok && !to_stray_cancel {
            return;
        }
        if !self.interfaces.is_own_via(&top) {
            return;
        }
        let Some(bytes) = strip_top_via(response) else {
            return;
        };
        let Ok(msg) = Message::parse(bytes.clone()) else {
            return;
        };
        if let Some(flow) = route::via_target(&msg) {
            self.count_response(msg.status().unwrap_or(200));
            txl.send_stateless(flow, bytes);
        }
    }

    // ----- internals -----

    /// The context of client transaction `key`, taken out of the table (put it back
    /// with [`Proxy::advance`]), with its server key and the branch's index.
    fn take_branch(&mut self, key: TransactionKey) -> Option<(TransactionKey, usize, Context)> {
        let &(server, index) = self.branches.get(&key)?;
        let ctx = self.contexts.remove(&server)?;
        Some((server, index, ctx))
    }

    fn fail_branch(&mut self, now: Instant, ctx: &mut Context, index: usize, code: u16) {
        let branch = &mut ctx.branches[index];
        if branch.done {
            return;
        }
        branch.done = true;
        if ctx.is_invite
            && let Some(calls) = self.calls.as_mut()
        {
            calls.leg_response(now, &ctx.request, branch.key, code);
        }
        if let Some(r) = build_response(
            &ctx.request,
            code,
            "",
            &self.settings.server_name,
            &self.ids,
        ) {
            keep_best(&mut ctx.best, r);
        }
    }

    /// §16.5 and §16.7 step 4: the Contacts of a 3xx that are in our domain (their
    /// bindings) or allowed targets (other domains by IP address, when foreign
    /// forwarding is on and the caller authenticated) join the target set, tried next;
    /// Contacts already in the set are dropped. Returns the 3xx with the Contacts left
    /// for the response context, or `None` when none is left.
    fn recurse(&mut self, now: Instant, ctx: &mut Context, response: Message) -> Option<Message> {
        if ctx.recursions >= self.settings.max_recursions {
            return Some(response);
        }
        let mut contacts: Vec<(u16, &str)> = response
            .get_all(HeaderName::Contact)
            .flat_map(split_list)
            .map(str::trim)
            .map(|v| {
                let q = match Contact::parse(v) {
                    Ok(Contact::Addr(na)) => na.q().unwrap_or(1000),
                    _ => 1000,
                };
                (q, v)
            })
            .collect();
        // Best q first; equal q's keep their order.
        contacts.sort_by_key(|c| std::cmp::Reverse(c.0));
        let unix = ctx.unix + now.saturating_duration_since(ctx.started).as_secs();
        let mut kept: Vec<&str> = Vec::new();
        let mut added: Vec<Vec<Hop>> = Vec::new();
        let mut recursed = 0;
        for (_, value) in contacts {
            let Ok(Contact::Addr(na)) = Contact::parse(value) else {
                kept.push(value);
                continue;
            };
            if ctx.targets.iter().any(|t| t == na.uri_text) {
                recursed += 1;
                continue;
            }
            match self.redirect_targets(ctx, &na, unix) {
                Some(groups) => {
                    recursed += 1;
                    ctx.targets.push(na.uri_text.to_owned());
                    for hop in groups.iter().flatten() {
                        if let Some(uri) = &hop.request_uri {
                            ctx.targets.push(uri.clone());
                        }
                    }
                    added.extend(groups);
                }
                None => kept.push(value),
            }
        }
        if recursed == 0 {
            return Some(response);
        }
        ctx.recursions += 1;
        for group in added.into_iter().rev() {
            ctx.pending.push_front(group);
        }
        if kept.is_empty() {
            return None;
        }
        let kept: Vec<(HeaderName, &str)> =
            kept.into_iter().map(|v| (HeaderName::Contact, v)).collect();
        edit_headers(&response, &[HeaderName::Contact], &kept).or(Some(response))
    }

    /// The targets a 3xx Contact stands for: the bindings of a user of our domain (a
    /// 480 or 404 for the context when there are none), or the address of an allowed
    /// foreign target. `None`: not ours to follow, left in the 3xx for the caller.
    fn redirect_targets(
        &self,
        ctx: &mut Context,
        contact: &sip_core::headers::NameAddr<'_>,
        unix: u64,
    ) -> Option<VecDeque<Vec<Hop>>> {
        let sip = contact.uri.as_sip()?;
        if self.names_us(sip) {
            let user = Self::local_user(sip)?;
            let aor = format!("sip:{user}@{}", self.settings.myself.domain());
            let mut bindings = ctx.location.lookup(&aor, unix);
            bindings.sort_by(Binding::priority_cmp);
            let groups = self.interfaces.hops_for_bindings(&bindings);
            if groups.is_empty()
                && let Some(r) =
                    build_response(&ctx.request, 480, "", &self.settings.server_name, &self.ids)
            {
                keep_best(&mut ctx.best, r);
            }
            return Some(groups);
        }
        if self.interfaces.is_own_host(&sip.host) {
            return None;
        }
        if self.settings.forward_foreign && ctx.authenticated {
            let hop = self.interfaces.hop_to_uri(contact.uri_text, None)?;
            let hop = Hop {
                request_uri: Some(contact.uri_text.to_owned()),
                ..hop
            };
            return Some(VecDeque::from([vec![hop]]));
        }
        None
    }

    /// Starts the next serial group when every branch is done, sends the best response
    /// when nothing is left to try, and keeps or drops the context.
    fn advance(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        server: TransactionKey,
        mut ctx: Context,
    ) {
        loop {
            if ctx.resolving || ctx.branches.iter().any(|b| !b.done) {
                break;
            }
            if !ctx.stop
                && let Some(group) = ctx.pending.pop_front()
            {
                self.start_group(now, txl, server, &mut ctx, group);
                continue;
            }
            if !ctx.final_sent {
                ctx.final_sent = true;
                let best = ctx.best.take().or_else(|| {
                    build_response(&ctx.request, 408, "", &self.settings.server_name, &self.ids)
                });
                if let Some(mut best) = best {
                    if best.status() == Some(503) {
                        // §16.7 step 6: a 503 would make the caller try elsewhere.
                        if let Some(r) = build_response(
                            &ctx.request,
                            500,
                            "",
                            &self.settings.server_name,
                            &self.ids,
                        ) {
                            best = r;
                        }
                    }
                    if matches!(best.status(), Some(401 | 407))
                        && let Some(merged) = with_challenges(&best, &ctx.challenges)
                    {
                        best = merged;
                    }
                    self.send_up(now, txl, server, best);
                }
            }
            break;
        }
        self.settle(server, ctx);
    }

    /// Keeps the context while it has work, drops it (and its branch index) when done.
    fn settle(&mut self, server: TransactionKey, ctx: Context) {
        let working = !ctx.final_sent || ctx.resolving || ctx.branches.iter().any(|b| !b.done);
        if working {
            self.contexts.insert(server, ctx);
        } else {
            for b in &ctx.branches {
                self.branches.remove(&b.key);
            }
        }
    }

    fn start_group(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        server: TransactionKey,
        ctx: &mut Context,
        group: Vec<Hop>,
    ) {
        for hop in group {
            let index = ctx.branches.len();
            let retry = hop.fallback.map(|flow| Hop {
                flow,
                fallback: None,
                ..hop.clone()
            });
            let code = match self.forward(now, txl, ctx, &hop, index) {
                Ok(key) => {
                    if ctx.is_invite
                        && let Some(calls) = self.calls.as_mut()
                    {
                        let target = hop
                            .request_uri
                            .as_deref()
                            .or(ctx.request.request_uri_str())
                            .unwrap_or("");
                        calls.leg_started(now, &ctx.request, key, target);
                    }
                    self.branches.insert(key, (server, index));
                    ctx.branches.push(Branch {
                        key,
                        proceeding: false,
                        done: false,
                        timed_out: false,
                        cancel_on_provisional: false,
                        retry,
                    });
                    continue;
                }
                Err(code) => code,
            };
            if let Some(r) = build_response(
                &ctx.request,
                code,
                "",
                &self.settings.server_name,
                &self.ids,
            ) {
                keep_best(&mut ctx.best, r);
            }
        }
    }

    /// Sends one branch: the request edited for `hop`, in a new client transaction.
    fn forward(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        ctx: &Context,
        hop: &Hop,
        index: usize,
    ) -> Result<TransactionKey, u16> {
        let out = hop.flow.transport;
        let iface = self
            .interfaces
            .toward(out, hop.flow.remote.ip())
            .ok_or(503u16)?;
        let via = iface.via(&format!("{}.{index}", ctx.branch_base));
        let mut rr: Vec<String> = Vec::new();
        if ctx.record_route {
            let token = self.rr_token(ctx.request.call_id().unwrap_or(""));
            rr.push(iface.record_route(&token));
            // Twice when the caller's side differs: another transport, or (on a
            // wildcard listener) another address of ours that the caller can reach.
            if let Some(inner) = self.interfaces.toward(ctx.incoming, ctx.caller)
                && inner != iface
            {
                rr.push(inner.record_route(&token));
            }
        }
        let rr_refs: Vec<&str> = rr.iter().map(String::as_str).collect();
        let routes: Option<Vec<&str>> = hop
            .routes
            .as_ref()
            .or(ctx.routes.as_ref())
            .map(|r| r.iter().map(String::as_str).collect());
        let edit = RequestEdit {
            request_uri: hop.request_uri.as_deref(),
            routes: routes.as_deref(),
            via: &via,
            record_route: &rr_refs,
        };
        let bytes = forward_request(&ctx.request, &edit).map_err(|_| 500u16)?;
        let msg = Message::parse(bytes).map_err(|_| 500u16)?;
        let key = txl.send_request(now, msg, hop.flow).map_err(|e| {
            tracing::debug!("branch not sent: {e}");
            500u16
        })?;
        self.stats.requests_forwarded += 1;
        Ok(key)
    }

    /// Relays a downstream response upstream, without our Via.
    fn relay(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        server: TransactionKey,
        response: &Message,
    ) {
        let Some(msg) = strip_top_via(response).and_then(|b| Message::parse(b).ok()) else {
            return;
        };
        self.send_up(now, txl, server, msg);
    }

    fn send_up(
        &mut self,
        now: Instant,
        txl: &mut TransactionLayer,
        server: TransactionKey,
        msg: Message,
    ) {
        let code = msg.status().unwrap_or(0);
        if let Some(calls) = self.calls.as_mut() {
            calls.response_sent(now, &msg);
        }
        match txl.send_response(now, server, msg) {
            Ok(()) => self.count_response(code),
            Err(e) => tracing::debug!(code, "response not relayed: {e}"),
        }
    }

    fn count_response(&mut self, code: u16) {
        let class = usize::from(code / 100).min(6);
        self.stats.responses[class] += 1;
    }

    /// Answers server transaction `key` ourselves.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        env: &Env<'_>,
        txl: &mut TransactionLayer,
        key: TransactionKey,
        request: &Message,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let tag = self.our_tag(request);
        let mut b = response_to_with_reason(request, code, reason, Some(&tag));
        for (name, value) in extra {
            b.push(name, value);
        }
        b.push("Server", &self.settings.server_name);
        match b.build() {
            Ok(msg) => self.send_up(env.now, txl, key, msg),
            Err(e) => tracing::error!("we built a response that does not parse: {e}"),
        }
    }
}

/// Cancels every branch still pending except `except` (§16.7 step 10, §16.10): at once
/// when it is Proceeding, when its first provisional arrives otherwise.
fn cancel_branches(
    now: Instant,
    txl: &mut TransactionLayer,
    ctx: &mut Context,
    except: Option<usize>,
) {
    if !ctx.is_invite {
        return;
    }
    for (i, b) in ctx.branches.iter_mut().enumerate() {
        if Some(i) == except || b.done {
            continue;
        }
        if b.proceeding {
            let _ = txl.cancel(now, b.key);
        } else {
            b.cancel_on_provisional = true;
        }
    }
}

/// A response we make to `request` (for a branch that failed), as a parsed message.
fn build_response(
    request: &Message,
    code: u16,
    reason: &str,
    server: &str,
    ids: &IdGenerator,
) -> Option<Message> {
    let tag = our_tag(ids, request);
    let mut b = response_to_with_reason(request, code, reason, Some(&tag));
    b.push("Server", server);
    b.build().ok()
}

/// The To tag of our responses to `request` (see [`Proxy::our_tag`]): keyed by what
/// identifies the request, CSeq method aside, so a CANCEL's 200 and the INVITE's 487
/// share it.
fn our_tag(ids: &IdGenerator, request: &Message) -> String {
    let call_id = request.call_id().unwrap_or("");
    let seq = request.cseq().map(|c| c.seq).unwrap_or(0).to_be_bytes();
    let from_tag = request.from().ok().and_then(|f| f.tag()).unwrap_or("");
    let branch = request
        .top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
        .unwrap_or_default();
    ids.derive(&[
        b"tag",
        call_id.as_bytes(),
        &seq,
        from_tag.as_bytes(),
        branch.as_bytes(),
    ])
}

/// Compares two secrets in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds the challenges of a 401/407 received on a branch to those collected.
fn collect_challenges(into: &mut Vec<(HeaderName, String)>, response: &Message) {
    for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
        for value in response.get_all(name) {
            let value = value.trim();
            if !into.iter().any(|(n, v)| *n == name && v == value) {
                into.push((name, value.to_owned()));
            }
        }
    }
}

/// §16.7 step 7: the 401/407 `best` with every collected challenge it lacks added
/// after its own headers. `None` when nothing is missing.
fn with_challenges(best: &Message, challenges: &[(HeaderName, String)]) -> Option<Message> {
    let missing: Vec<(HeaderName, &str)> = challenges
        .iter()
        .filter(|(name, value)| !best.get_all(*name).any(|v| v.trim() == value))
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    if missing.is_empty() {
        return None;
    }
    edit_headers(best, &[], &missing)
}

/// `msg` with every header line named in `remove` left out (folded continuations
/// included) and the `add` lines appended after the others; the start line, the other
/// lines and the body are copied as they came.
fn edit_headers(
    msg: &Message,
    remove: &[HeaderName],
    add: &[(HeaderName, &str)],
) -> Option<Message> {
    let src = msg.as_bytes();
    let head = src.get(..msg.body_offset())?;
    // The head ends with the empty line; it is written again after the new lines.
    let head = head
        .strip_suffix(b"\r\n")
        .or_else(|| head.strip_suffix(b"\n"))?;
    let mut out = Vec::with_capacity(src.len() + 256);
    let mut dropping = false;
    for (i, line) in head.split_inclusive(|&b| b == b'\n').enumerate() {
        if i > 0 {
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                if dropping {
                    continue;
                }
            } else {
                let name = line.split(|&b| b == b':').next().unwrap_or(b"");
                dropping = remove.contains(&HeaderName::from_bytes(name.trim_ascii()));
                if dropping {
                    continue;
                }
            }
        }
        out.extend_from_slice(line);
    }
    for (name, value) in add {
        out.extend_from_slice(name.label().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(msg.body());
    Message::parse(out.into()).ok()
}

/// §16.7 step 6: 6xx first, then the lowest class; the first of a class wins.
fn keep_best(best: &mut Option<Message>, candidate: Message) {
    let rank = |m: &Message| match m.status().unwrap_or(500) {
        c if c >= 600 => 0,
        c => c / 100,
    };
    let better = match best {
        None => true,
        Some(b) => rank(&candidate) < rank(b),
    };
    if better {
        *best = Some(candidate);
    }
}

/// The branch prefix of a request (§16.6 step 8): a hash of what identifies it, so that
/// the same request coming back (a loop) yields the same value while a spiral (another
/// Request-URI) does not. The received top Via is left out, unlike the RFC's list:
/// after a loop it is another hop's Via, and including it would hide every loop.
fn branch_base(request: &Message) -> String {
    let mut h = DefaultHasher::new();
    request.request_uri_str().unwrap_or("").hash(&mut h);
    request.to().ok().and_then(|t| t.tag()).hash(&mut h);
    request.from().ok().and_then(|f| f.tag()).hash(&mut h);
    request.call_id().unwrap_or("").hash(&mut h);
    request.cseq().map(|c| c.seq).unwrap_or(0).hash(&mut h);
    for v in request.get_all(HeaderName::ProxyRequire) {
        v.hash(&mut h);
    }
    for v in request.get_all(HeaderName::ProxyAuthorization) {
        v.hash(&mut h);
    }
    format!("z9hG4bKsb{:016x}", h.finish())
}

/// A request on its way through [`Proxy::on_request`]: what the steps after
/// validation read.
struct Incoming<'a> {
    key: TransactionKey,
    request: &'a Message,
    flow: Flow,
    method: Method,
    /// What §16.4 found in Route.
    info: RouteInfo,
    /// Whether To has a tag: the request is in a dialog (§12, §16.6).
    to_tag: bool,
    /// The Request-URI to route on (a strict router's last Route, else the request's).
    ruri_text: &'a str,
    ruri_sip: Option<&'a sip_core::SipUri<'a>>,
    /// Whether the Request-URI names us (our domain or address).
    ruri_is_ours: bool,
    /// An OPTIONS or an unknown method out of dialog: may be answered here as a UAS.
    maybe_for_us: bool,
    /// The start of the branch parameter of every branch (§16.6 step 8), from the loop
    /// check (§16.3 step 4).
    branch_base: String,
}

#[cfg(test)]
mod simnet_calls;
#[cfg(test)]
mod simnet_tests;
#[cfg(test)]
mod tests;
