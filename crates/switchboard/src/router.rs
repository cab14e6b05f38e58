//! The server's protocol core as a sans-IO state machine: every request and response
//! `serve` receives goes through here, to the RFC 3261 transaction layer (except
//! REGISTERs without credentials, challenged statelessly as §8.2.7 advises), and on to
//! the registrar (REGISTER), the stateful proxy (requests for users and dialogs) or
//! `service` (OPTIONS and whatever is addressed to the server itself).
//!
//! The [`Router`] does no I/O and reads no clock: each input comes with the turn's
//! [`Now`], and what it wants done is polled: messages to send, URIs to locate (RFC
//! 3263), storage batches for the writer thread, and when to be woken. The loop that
//! runs it is `sip_net::Driver` (see `serve`); tests run it with a fake clock.
//!
//! Group commit: the REGISTERs of a turn stage their binding changes; the staged changes
//! go out as one batch (one SQLite transaction) after at most [`COMMIT_DELAY`], and the
//! 200s are sent only when the batch is reported stored ([`Router::handle_committed`]).

use crate::b2bua::{B2BUA_TOKEN, B2bEnv, B2bua};
use crate::pbx_records::PbxRecorder;
use crate::proxy::{self, Handled, Proxy};
use crate::registrar::{RegisterOutcome, Registrar};
use crate::service::{self, Answer};
use bytes::Bytes;
use sip_core::ids::IdGenerator;
use sip_core::transaction::{Event, TimerConfig, TransactionKey, TransactionLayer};
use sip_core::{Flow, Message, Method};
use sip_net::driver::NO_TOKEN;
use sip_net::{Incoming, Machine, Now, ResolvedTarget, SendError, Transmit};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use store::{LocationStore, UserStore};

/// The registrar the server runs (its stores chosen by configuration).
pub type BoxedRegistrar = Registrar<Box<dyn LocationStore>, Box<dyn UserStore>>;

/// Group commit: how long a REGISTER's changes may wait for others to share their
/// SQLite transaction. Each commit costs tens of microseconds whatever it holds, so at
/// a few thousand REGISTERs a second sharing it halves the server's CPU per
/// registration, for at most this much more time before the 200.
const COMMIT_DELAY: Duration = Duration::from_millis(1);
/// A batch this large is committed without waiting for `COMMIT_DELAY`.
const MAX_COMMIT: usize = 256;
/// How often expired bindings are swept and statistics logged.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// A REGISTER whose 200 waits for its bindings to be stored.
type Waiting = (TransactionKey, Message, RegisterOutcome);

/// Where the registrar's binding changes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commits {
    /// By a writer thread: batches are polled with [`Router::poll_batch`] and their
    /// outcome reported with [`Router::handle_committed`].
    Background,
    /// By the registrar itself, on the router's turn (a store with nothing to detach).
    InPlace,
}

/// All protocol state of the server: see the module documentation.
pub struct Router {
    transactions: TransactionLayer,
    registrar: BoxedRegistrar,
    /// The registrar's bindings, read by the proxy.
    location: store::LocationReader,
    proxy: Proxy,
    server_name: String,
    /// The To tags of the responses `service` makes.
    ids: IdGenerator,
    commits: Commits,
    /// REGISTERs answered 200 on staged bindings: their responses go out once the
    /// batch holding their changes is stored.
    awaiting_commit: Vec<Waiting>,
    /// REGISTERs whose 200s wait for the batch the writer thread is storing.
    in_commit: Vec<Waiting>,
    /// When the staged REGISTERs are handed to the writer at the latest.
    commit_due: Option<Instant>,
    /// Stopping: what is staged goes out at once.
    stopping: bool,
    /// Messages that belong to no transaction (stateless answers), sent before the
    /// transaction layer's.
    stateless: VecDeque<Transmit>,
    /// RFC 3263 lookups asked for by the proxy: the transaction's token and the URI.
    to_resolve: VecDeque<(u64, String)>,
    /// The batch for the writer thread (one is out at a time).
    batch: Option<store::Batch>,
    next_sweep: Instant,
    proxy_log: proxy::StatsLog,
    /// The calls the dial plan gives the PBX, when there is one: every message whose
    /// Call-ID is one of its legs' goes to it, past our transaction layer.
    b2bua: Option<B2bua>,
    /// The records of the B2BUA's calls, made from its events.
    pbx_records: Option<PbxRecorder>,
    /// The call records' writer, for its counters (metrics).
    cdr_counters: Option<store::CdrSender>,
    /// Requests and responses counted for the admin API's metrics (`router/admin_input.rs`).
    counts: admin_input::SipCounts,
}

impl Router {
    /// A router over these parts; `ids` are keyed by randomness the caller drew. `now`
    /// starts the sweep clock.
    pub fn new(
        now: Now,
        timers: TimerConfig,
        registrar: BoxedRegistrar,
        proxy: Proxy,
        server_name: String,
        ids: IdGenerator,
        commits: Commits,
    ) -> Router {
        Router {
            transactions: TransactionLayer::new(timers),
            location: registrar.reader(),
            registrar,
            proxy,
            server_name,
            ids,
            commits,
            awaiting_commit: Vec::new(),
            in_commit: Vec::new(),
            commit_due: None,
            stopping: false,
            stateless: VecDeque::new(),
            to_resolve: VecDeque::new(),
            batch: None,
            next_sweep: now.instant + SWEEP_EVERY,
            proxy_log: proxy::StatsLog::new(Duration::from_secs(60)),
            b2bua: None,
            pbx_records: None,
            cdr_counters: None,
            counts: admin_input::SipCounts::default(),
        }
    }

    /// Runs the PBX's calls (ring groups, forwarding, `pbx = true` rules) on `b2bua`;
    /// without one the proxy answers them 480.
    pub fn with_b2bua(mut self, b2bua: B2bua) -> Router {
        self.proxy.enable_b2bua();
        self.b2bua = Some(b2bua);
        self
    }

    /// Reports the call records' counters (stored, lost) of the writer `sender` feeds.
    pub fn with_cdr_counters(mut self, sender: store::CdrSender) -> Router {
        self.cdr_counters = Some(sender);
        self
    }

    /// Records the B2BUA's calls with `recorder` (after [`Router::with_b2bua`]).
    pub fn with_pbx_records(mut self, recorder: PbxRecorder) -> Router {
        if let Some(b2bua) = self.b2bua.as_mut() {
            b2bua.record_events();
            self.pbx_records = Some(recorder);
        }
        self
    }

    /// Hands `msg` to the B2BUA when its Call-ID is one of the B2BUA's legs'; gives it
    /// back otherwise.
    fn pass_to_b2bua(&mut self, now: Now, msg: Message, flow: Flow) -> Option<(Message, Flow)> {
        let Some(b2bua) = self.b2bua.as_mut() else {
            return Some((msg, flow));
        };
        if !msg.call_id().is_ok_and(|c| b2bua.owns(c)) {
            return Some((msg, flow));
        }
        let (users, _) = self.registrar.users_and_auth();
        let env = B2bEnv {
            now: now.instant,
            unix: now.unix_secs,
            users,
            location: &self.location,
            proxy: &self.proxy,
        };
        b2bua.on_message(&env, msg, flow);
        None
    }

    /// A message received over `flow`.
    pub fn handle_message(&mut self, now: Now, msg: Message, flow: Flow) {
        if self.registrar.is_banned(flow.remote.ip(), now.unix_secs) {
            // Refused for a while after too many failed authentications; the
            // registrar logged the ban and counts what it refuses.
            return;
        }
        if !msg.is_request() {
            let Some((msg, flow)) = self.pass_to_b2bua(now, msg, flow) else {
                return;
            };
            if let Err(e) = self.transactions.handle_message(now.instant, msg, flow) {
                tracing::debug!(remote = %flow.remote, "response dropped: {e}");
            }
            return;
        }
        self.counts.request(msg.method());
        // A request that fails validation is answered statelessly: it may lack what a
        // transaction is keyed by.
        if let Err(e) = msg.validate() {
            tracing::debug!(remote = %flow.remote, "invalid request: {e}");
            if msg.method() == Some(&Method::Ack) {
                return;
            }
            if let Answer::Respond(resp) = service::answer_invalid(msg.as_bytes(), &e) {
                let target = sip_core::response_target(&flow, &msg);
                self.send_stateless(target, resp);
            }
            return;
        }
        let target = sip_core::response_target(&flow, &msg);
        if let Some(resp) = service::refuse_unmatchable(&msg) {
            self.send_stateless(target, resp);
            return;
        }
        let Some((msg, _)) = self.pass_to_b2bua(now, msg, flow) else {
            return;
        };
        // §16.10: a CANCEL that matches no INVITE of ours is forwarded statelessly,
        // without a transaction of its own.
        if msg.method() == Some(&Method::Cancel) && self.transactions.find_cancelled(&msg).is_none()
        {
            let (users, auth) = self.registrar.users_and_auth();
            let env = proxy::Env {
                now: now.instant,
                unix: now.unix_secs,
                users,
                auth,
                location: &self.location,
            };
            self.proxy
                .on_stray_cancel(&env, &mut self.transactions, &msg, target);
            return;
        }
        // A REGISTER without credentials is challenged without a transaction (RFC 3261
        // §8.2.7): a flood of them leaves no state behind.
        if let Some(outcome) =
            self.registrar
                .answer_statelessly(now.unix_secs, &msg, flow.remote, flow.transport)
        {
            tracing::debug!(status = outcome.status, source = %flow.remote, "REGISTER answered statelessly");
            if let Some(bytes) = outcome.response {
                self.send_stateless(target, bytes);
            }
            return;
        }
        if let Err(e) = self.transactions.handle_message(now.instant, msg, target) {
            tracing::debug!(remote = %flow.remote, "request not taken by the transaction layer: {e}");
        }
    }

    /// Bytes received over `flow` that did not parse.
    pub fn handle_invalid(&mut self, bytes: &Bytes, error: &sip_core::ParseError, flow: Flow) {
        tracing::debug!(remote = %flow.remote, "unparseable message: {error}");
        // An ACK is never answered (RFC 3261 §17.2.1), however broken.
        if bytes.starts_with(b"ACK ") {
            return;
        }
        if let Answer::Respond(resp) = service::answer_invalid(bytes, error) {
            self.send_stateless(flow, resp);
        }
    }

    /// A message of the transaction with this token could not be sent: the proxy tries
    /// another address or counts the branch as 503; an ended transaction is no matter.
    pub fn handle_send_failed(&mut self, now: Now, token: u64) {
        if token == NO_TOKEN {
            return;
        }
        if token & B2BUA_TOKEN != 0 {
            if let Some(b2bua) = self.b2bua.as_mut() {
                let (users, _) = self.registrar.users_and_auth();
                let env = B2bEnv {
                    now: now.instant,
                    unix: now.unix_secs,
                    users,
                    location: &self.location,
                    proxy: &self.proxy,
                };
                b2bua.on_send_failed(&env, token & !B2BUA_TOKEN);
            }
            return;
        }
        let key = TransactionKey::from_token(token);
        let _ = self.transactions.handle_transport_error(now.instant, key);
    }

    /// Timers: the transaction layer's, the commit deadline, the sweep.
    pub fn handle_timeout(&mut self, now: Now) {
        if self
            .transactions
            .poll_timeout()
            .is_some_and(|t| t <= now.instant)
        {
            self.transactions.handle_timeout(now.instant);
        }
        if let Some(b2bua) = self.b2bua.as_mut()
            && b2bua.poll_timeout().is_some_and(|t| t <= now.instant)
        {
            let (users, _) = self.registrar.users_and_auth();
            let env = B2bEnv {
                now: now.instant,
                unix: now.unix_secs,
                users,
                location: &self.location,
                proxy: &self.proxy,
            };
            b2bua.on_timeout(&env);
        }
        // The commit deadline is looked at by `process`.
        if now.instant >= self.next_sweep {
            self.handle_sweep(now);
        }
    }

    /// Expired bindings are removed, and statistics logged.
    pub fn handle_sweep(&mut self, now: Now) {
        self.next_sweep = now.instant + SWEEP_EVERY;
        self.proxy.sweep_calls(now.instant, now.unix_secs);
        if let Some(records) = self.pbx_records.as_mut() {
            records.observe(now.instant, now.unix_secs);
        }
        match self.registrar.sweep(now.unix_secs) {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "expired bindings swept"),
            Ok(_) => {}
            Err(e) => tracing::warn!("sweeping expired bindings failed: {e}"),
        }
        let stats = self.registrar.stats();
        tracing::debug!(
            ?stats,
            bindings = self.registrar.reader().len(),
            "registrar"
        );
        let p = self.proxy.stats();
        tracing::debug!(
            calls_routed = p.calls_routed,
            forwarded = p.requests_forwarded,
            responses = ?p.responses,
            challenges = p.challenges,
            contexts = p.contexts,
            transactions = self.transactions.len(),
            calls = ?self.proxy.call_stats(),
            "proxy"
        );
        if let Some(line) = self.proxy_log.due(now.instant, &p, self.transactions.len()) {
            tracing::info!("proxy: {line}");
        }
        if let Some(b) = &self.b2bua {
            let (started, ended) = b.counts();
            let recording = self.pbx_records.as_ref().map(PbxRecorder::in_progress);
            tracing::debug!(calls = b.calls(), started, ended, ?recording, "b2bua");
        }
    }

    /// What a lookup asked for by [`Router::poll_resolve`] found.
    pub fn handle_resolved(
        &mut self,
        now: Now,
        token: u64,
        targets: &[(sip_core::Transport, std::net::SocketAddr)],
    ) {
        let key = TransactionKey::from_token(token);
        self.proxy
            .on_resolved(now.instant, &mut self.transactions, key, targets);
    }

    /// The writer thread's report on the batch that was out: its REGISTERs get their
    /// 200s, or 500s if it failed (and so do those staged since, built on it).
    pub fn handle_committed(&mut self, now: Now, committed: store::Committed) {
        let stored = self.registrar.end_commit(committed).is_ok();
        let mut done = std::mem::take(&mut self.in_commit);
        if !stored {
            done.append(&mut self.awaiting_commit);
        }
        for (key, request, outcome) in done.drain(..) {
            let outcome = if stored {
                outcome
            } else {
                self.registrar.failed_commit(&request, outcome)
            };
            if let Some(bytes) = outcome.response {
                self.respond(now, key, bytes);
            }
        }
        // Kept for its capacity.
        if self.in_commit.is_empty() {
            self.in_commit = done;
        }
        if !self.awaiting_commit.is_empty() || self.registrar.has_staged() {
            // The next batch gathered meanwhile: out now.
            self.commit_due = Some(now.instant);
        }
    }

    /// Handles the transaction layer's events and commits the staged REGISTERs when
    /// due; `true` if anything was done. The caller sends what the transaction layer
    /// has to send before calling this (its documented order).
    pub fn process(&mut self, now: Now) -> bool {
        let mut progressed = false;
        while let Some(event) = self.transactions.poll_event() {
            progressed = true;
            self.handle_event(now, event);
        }
        if let (Some(b2bua), Some(records)) = (self.b2bua.as_mut(), self.pbx_records.as_mut()) {
            while let Some(event) = b2bua.poll_event() {
                records.on_event(event);
            }
        }
        if !self.awaiting_commit.is_empty() || self.registrar.has_staged() {
            let due = *self.commit_due.get_or_insert(now.instant + COMMIT_DELAY);
            if (now.instant >= due || self.awaiting_commit.len() >= MAX_COMMIT || self.stopping)
                && self.commit_registrations(now)
            {
                progressed = true;
            }
        }
        progressed
    }

    /// The next message to send: stateless answers first, then the transaction layer's,
    /// then the B2BUA's.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = match self.stateless.pop_front() {
            Some(t) => t,
            None => match self.transactions.poll_transmit() {
                Some(t) => Transmit {
                    flow: t.flow,
                    bytes: t.bytes,
                    token: t.key.map_or(NO_TOKEN, TransactionKey::to_token),
                },
                None => self.b2bua.as_mut()?.poll_transmit()?,
            },
        };
        self.counts.sent(&t.bytes);
        Some(t)
    }

    /// The next URI the proxy needs located, with the token of its transaction.
    pub fn poll_resolve(&mut self) -> Option<(u64, String)> {
        self.to_resolve.pop_front()
    }

    /// The batch of binding changes for the writer thread, if one is ready.
    pub fn poll_batch(&mut self) -> Option<store::Batch> {
        self.batch.take()
    }

    /// The earliest of the transaction timers, the commit deadline and the sweep.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_sweep;
        if let Some(x) = self.transactions.poll_timeout() {
            t = t.min(x);
        }
        if let Some(x) = self.b2bua.as_ref().and_then(B2bua::poll_timeout) {
            t = t.min(x);
        }
        // While a batch is out, the next waits for its report (which sets the deadline
        // again), not for a deadline already past: that would wake the loop for nothing.
        if let Some(x) = self.commit_due
            && !self.registrar.commit_in_flight()
        {
            t = t.min(x);
        }
        Some(t)
    }

    /// Stopping: what is staged is committed at once, and its answers sent.
    pub fn begin_stop(&mut self, now: Now) {
        self.stopping = true;
        // The calls still up are recorded now: the records go out with the writer's
        // last batch.
        self.proxy.close_calls(now.instant, "server stopped");
        if let Some(records) = self.pbx_records.as_mut() {
            records.close_all(now.instant, "server stopped");
        }
        self.commit_due = Some(now.instant);
    }

    /// No REGISTER waits for its bindings to be stored.
    pub fn is_settled(&self) -> bool {
        self.awaiting_commit.is_empty()
            && self.in_commit.is_empty()
            && !self.registrar.has_staged()
            && !self.registrar.commit_in_flight()
    }

    /// The transactions open (for tests and statistics).
    #[cfg(test)]
    pub fn transactions(&self) -> usize {
        self.transactions.len()
    }

    /// The bindings in the location service (for tests).
    #[cfg(test)]
    pub fn bindings(&self) -> usize {
        self.location.len()
    }

    /// The proxy's response contexts still open (for tests).
    #[cfg(test)]
    pub fn proxy_contexts(&self) -> usize {
        self.proxy.stats().contexts
    }

    /// The proxy (for tests that give it call records).
    #[cfg(test)]
    pub fn proxy_mut(&mut self) -> &mut Proxy {
        &mut self.proxy
    }

    /// The counters of the proxy's call records (for tests).
    #[cfg(test)]
    pub fn call_stats(&self) -> Option<proxy::CallStats> {
        self.proxy.call_stats()
    }

    /// The B2BUA, if any (for tests).
    #[cfg(test)]
    pub fn b2bua(&self) -> Option<&B2bua> {
        self.b2bua.as_ref()
    }

    /// Hands the proxy what is its: every request but REGISTER and those addressed to
    /// us, and the client-side events. Returns the event when it is not the proxy's.
    fn proxy_event(&mut self, now: Now, event: Event) -> Option<Event> {
        let txl = &mut self.transactions;
        let at = now.instant;
        match event {
            Event::Request { key, request, flow }
                if request.method() != Some(&Method::Register) =>
            {
                let (users, auth) = self.registrar.users_and_auth();
                let mut env = proxy::Env {
                    now: at,
                    unix: now.unix_secs,
                    users,
                    auth,
                    location: &self.location,
                };
                match self.proxy.on_request(&mut env, txl, key, &request, flow) {
                    Handled::Answered | Handled::Forwarded => None,
                    Handled::ForUs => Some(Event::Request { key, request, flow }),
                    Handled::Resolve(uri) => {
                        self.to_resolve.push_back((key.to_token(), uri));
                        None
                    }
                    Handled::Pbx(call) => {
                        // The B2BUA's own transaction takes the INVITE (and its
                        // retransmissions, by Call-ID) from here.
                        match self.b2bua.as_mut() {
                            Some(b2bua) => {
                                txl.forget(key);
                                let b2b_env = B2bEnv {
                                    now: at,
                                    unix: now.unix_secs,
                                    users: env.users,
                                    location: &self.location,
                                    proxy: &self.proxy,
                                };
                                b2bua.take_invite(&b2b_env, request, flow, *call);
                            }
                            None => tracing::error!("a call for the B2BUA, and none runs"),
                        }
                        None
                    }
                }
            }
            Event::Ack { request, flow, .. } => {
                let (users, auth) = self.registrar.users_and_auth();
                let env = proxy::Env {
                    now: at,
                    unix: now.unix_secs,
                    users,
                    auth,
                    location: &self.location,
                };
                self.proxy.on_ack(&env, txl, &request, flow);
                None
            }
            Event::Response { key, response } => {
                self.proxy.on_response(at, txl, key, response);
                None
            }
            Event::Timeout { key, timer } => {
                self.proxy.on_timeout(at, txl, key, timer);
                None
            }
            Event::TransportError { key } => {
                self.proxy.on_transport_error(at, txl, key);
                None
            }
            Event::Terminated { key } => {
                self.proxy.on_terminated(at, txl, key);
                None
            }
            Event::StrayResponse { response, .. } => {
                self.proxy.on_stray_response(txl, &response);
                None
            }
            other => Some(other),
        }
    }

    fn handle_event(&mut self, now: Now, event: Event) {
        let Some(event) = self.proxy_event(now, event) else {
            return;
        };
        let Event::Request { key, request, flow } = event else {
            return;
        };
        let response = if request.method() == Some(&Method::Register) {
            // Changes are staged; `commit_registrations` stores the batch's at once.
            let outcome =
                self.registrar
                    .stage_register(now.unix_secs, &request, flow.remote, flow.transport);
            tracing::debug!(
                status = outcome.status,
                aor = outcome.aor.as_deref().unwrap_or("-"),
                source = %flow.remote,
                "REGISTER"
            );
            if outcome.awaits_commit {
                self.awaiting_commit.push((key, request, outcome));
                return;
            }
            outcome.response
        } else {
            let tag = self.ids.tag();
            match service::answer(&request, &self.server_name, &tag) {
                Answer::Respond(bytes) => Some(bytes),
                Answer::Nothing => None,
            }
        };
        if let Some(bytes) = response {
            self.respond(now, key, bytes);
        }
    }

    /// Group commit: the changes of every REGISTER staged so far go to the writer
    /// thread as one batch (one SQLite transaction: in WAL mode with synchronous=NORMAL,
    /// a write to the log without fsync), and their 200s wait for it
    /// ([`Router::handle_committed`]). One batch is out at a time; while it is, the
    /// next gathers. A 200 never leaves before its bindings are stored. Whether
    /// anything could be sent.
    fn commit_registrations(&mut self, now: Now) -> bool {
        if self.commits == Commits::InPlace {
            return self.commit_here(now);
        }
        if self.registrar.commit_in_flight() {
            if !self.registrar.has_staged() {
                // Nothing new staged: what they wait for is the batch already out.
                self.in_commit.append(&mut self.awaiting_commit);
                self.commit_due = None;
            }
            return false;
        }
        self.commit_due = None;
        match self.registrar.begin_commit() {
            Some(batch) => {
                self.in_commit.append(&mut self.awaiting_commit);
                self.batch = Some(batch);
                // The batch is an output: the driver hands it on in this pass.
                true
            }
            // Nothing staged and nothing out: what they saw is stored already.
            None => {
                let mut ready = std::mem::take(&mut self.awaiting_commit);
                let any = !ready.is_empty();
                for (key, _, outcome) in ready.drain(..) {
                    if let Some(bytes) = outcome.response {
                        self.respond(now, key, bytes);
                    }
                }
                self.awaiting_commit = ready;
                any
            }
        }
    }

    /// Group commit on this turn, for a registrar that stores its own changes.
    fn commit_here(&mut self, now: Now) -> bool {
        self.commit_due = None;
        if self.awaiting_commit.is_empty() {
            return false;
        }
        let stored = self.registrar.commit().is_ok();
        let mut awaiting = std::mem::take(&mut self.awaiting_commit);
        for (key, request, outcome) in awaiting.drain(..) {
            let outcome = if stored {
                outcome
            } else {
                self.registrar.failed_commit(&request, outcome)
            };
            if let Some(bytes) = outcome.response {
                self.respond(now, key, bytes);
            }
        }
        // Kept for its capacity.
        self.awaiting_commit = awaiting;
        true
    }

    /// Hands a response we built to its transaction as it is: its status is read from
    /// the start line we wrote, so the bytes are not parsed a second time.
    fn respond(&mut self, now: Now, key: TransactionKey, bytes: Bytes) {
        let Some(status) = sip_core::builder::status_of_built(&bytes) else {
            tracing::error!("we built a response without a status line");
            return;
        };
        if let Err(e) = self
            .transactions
            .send_built_response(now.instant, key, status, bytes)
        {
            tracing::warn!("response not sent: {e}");
        }
    }

    fn send_stateless(&mut self, flow: Flow, bytes: Bytes) {
        self.stateless.push_back(Transmit {
            flow,
            bytes,
            token: NO_TOKEN,
        });
    }
}

impl Machine for Router {
    type Side = RouterInput;
    type Effect = store::Batch;

    fn handle_incoming(&mut self, now: Now, incoming: Incoming) {
        match incoming {
            Incoming::Message { msg, flow, .. } => self.handle_message(now, msg, flow),
            Incoming::Invalid {
                bytes, error, flow, ..
            } => self.handle_invalid(&bytes, &error, flow),
            _ => {}
        }
    }

    fn handle_send_failed(&mut self, now: Now, token: u64, error: SendError) {
        // Why does not change what the proxy does: the branch failed either way.
        tracing::debug!("send failed: {error}");
        Router::handle_send_failed(self, now, token);
    }

    fn handle_timeout(&mut self, now: Now) {
        Router::handle_timeout(self, now);
    }

    fn handle_resolved(&mut self, now: Now, token: u64, targets: Vec<ResolvedTarget>) {
        let targets: Vec<_> = targets.into_iter().map(|t| (t.transport, t.addr)).collect();
        Router::handle_resolved(self, now, token, &targets);
    }

    fn handle_side(&mut self, now: Now, input: RouterInput) {
        self.handle_input(now, input);
    }

    fn process(&mut self, now: Now) -> bool {
        Router::process(self, now)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Router::poll_transmit(self)
    }

    fn poll_resolve(&mut self) -> Option<(u64, String)> {
        Router::poll_resolve(self)
    }

    fn poll_effect(&mut self) -> Option<store::Batch> {
        self.poll_batch()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Router::poll_timeout(self)
    }

    fn begin_stop(&mut self, now: Now) {
        Router::begin_stop(self, now);
    }

    fn is_settled(&self) -> bool {
        Router::is_settled(self)
    }
}

mod admin_input;
pub use admin_input::{AdminRequest, RouterInput};

#[cfg(test)]
pub(crate) mod sim_node;
#[cfg(test)]
mod tests;
