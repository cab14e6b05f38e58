//! The registrar (RFC 3261 §10.3), sans-IO: a REGISTER in, a response out, with the
//! bindings stored durably in between.
//!
//! [`Registrar::handle_register`] takes the request, where it came from and an explicit
//! `now` (Unix seconds; nothing here reads the clock), and returns the response to send.
//! The registrar owns its [`LocationStore`] (behind a [`CachedStore`]) and commits to it
//! before it returns a 200, so "a 200 OK is sent only after the binding is stored
//! durably" holds by construction: if the write fails, the answer is a 500 and nothing
//! changed. The store is synchronous, so the I/O shell runs the registrar on its own
//! thread (or in `spawn_blocking`), which also gives the in-order, one-at-a-time
//! processing §10.3 asks for. Routing reads go through [`Registrar::reader`], which never
//! waits for the disk. Users are read from a [`CachedUsers`] copy in memory.
//!
//! Group commit: a server handling many REGISTERs at once calls
//! [`Registrar::stage_register`] for each, which checks it against the bindings staged by
//! the ones before, and then [`Registrar::commit`] once: one SQLite transaction for all.
//! A 200 built on staged bindings says so (`awaits_commit`) and is held until that
//! commit returned; if the commit fails, [`Registrar::failed_commit`] turns it into the
//! 500 a single failed write gets.
//!
//! What it does, in §10.3's order:
//! 1. the Request-URI must be `sip:`/`sips:` (else 416) and name this registrar: the
//!    configured domain, an alias, or an IP literal (the request reached us, so an address
//!    can only mean us). Another domain gets **403**: we hold no bindings for it and do
//!    not forward REGISTERs, and 404 would wrongly claim its user does not exist;
//! 2. `Require` must only name `path` or `outbound` (else 420 with `Unsupported`);
//! 3. digest authentication ([`sip_core::auth::Verifier`]): SHA-256 and MD5 challenges,
//!    qop=auth, expiring nonces (`stale=true`), no replayed `nc`; an unknown user and a
//!    wrong password get the same fresh 401, and a source that fails too often is banned
//!    for a while (403 until the ban ends);
//! 4. the authenticated user may only change its own AOR (else 403);
//! 5. the To URI must be `sip:`/`sips:` (else 400) in our domain (else **404**, as step 5
//!    prescribes for an AOR not valid for the Request-URI's domain), and, without
//!    authentication, a known user (else 404). The canonical AOR is `sip:USER@DOMAIN`;
//! 6. `Contact: *` needs `Expires: 0` and no other Contact (else 400) and removes all;
//! 7. each contact's expiry comes from its `expires` parameter, the Expires header or the
//!    default, is capped at the maximum, and is refused with 423 + Min-Expires when below
//!    the minimum; Call-ID/CSeq ordering refuses a REGISTER that is not newer than what a
//!    binding recorded, with the **500** §10.3 names for a failed update (step 7: "the
//!    update MUST be aborted and the request fails ... MUST fail with a 500"); all changes
//!    commit together or not at all;
//! 8. the 200 lists every current binding with its remaining `expires`, and a Date.
//!
//! Path (RFC 3327 §5.3) is stored with the binding and echoed in the 200; a Path from a
//! UA that did not say `Supported: path` gets the recommended 420. Outbound (RFC 5626 §6):
//! a contact with `+sip.instance` and `reg-id` is keyed by (AOR, instance, reg-id) and
//! replaces the binding with the same pair; the checks of §6 (reg-id without instance is
//! ignored, several reg-id contacts refused, 439 when the first hop lacks outbound) apply.

use crate::authenticator::{AuthCheck, Authenticator};
use crate::config::RegistrarConfig;
use crate::myself::Myself;
use bytes::Bytes;
use sip_core::builder::{error_response_to_raw, response_to_with_reason};
use sip_core::headers::{Contact, NameAddr};
use sip_core::ids::IdGenerator;
use sip_core::scan::unquote;
use sip_core::{HeaderName, Host, Message, Method, SipUri, Transport, Uri};
use std::net::{IpAddr, SocketAddr};
use store::{
    Binding, CachedStore, CachedUsers, Change, LocationReader, LocationStore, StoreError, UserStore,
};

/// How long a REGISTER may ask to be bound when it does not say: RFC 3261 §10.3 step 7
/// allows 423 only for intervals under an hour.
const ONE_HOUR: u32 = 3600;
/// The reason phrase of the 500 for a store that failed.
const STORAGE_FAILED: &str = "Server Internal Error (storage unavailable)";
/// Longest User-Agent kept with a binding.
const MAX_USER_AGENT: usize = 256;

/// What the registrar needs to know: the served domain and Server header from `[sip]`,
/// and the `[registrar]` section as configured (one set of keys and defaults, in
/// `config.rs`).
#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    /// The domain of local users and the digest realm (`[sip] domain`).
    pub domain: String,
    /// The Server header (`[sip] server_name`).
    pub server_name: String,
    /// `[registrar]`: expiry bounds, authentication, bans, nonces, aliases.
    pub rules: RegistrarConfig,
}

/// Whether the Authorization `uri` names the same resource as the Request-URI: equal
/// text, or SIP URIs with the same scheme, user and host (the port may differ).
pub(crate) fn digest_uri_matches(digest_uri: &str, request_uri: Option<&str>) -> bool {
    let Some(request_uri) = request_uri else {
        return false;
    };
    if digest_uri == request_uri {
        return true;
    }
    match (Uri::parse(digest_uri), Uri::parse(request_uri)) {
        (Ok(Uri::Sip(a)), Ok(Uri::Sip(b))) => {
            a.secure == b.secure
                && a.user == b.user
                && a.host.to_string().eq_ignore_ascii_case(&b.host.to_string())
        }
        _ => false,
    }
}

/// An algorithm a challenge can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// SHA-256 (RFC 8760).
    Sha256,
    /// MD5 (RFC 3261).
    Md5,
}

impl DigestAlgorithm {
    /// Reads a configured name (`SHA-256` or `MD5`, any case).
    pub fn from_name(s: &str) -> Option<DigestAlgorithm> {
        if s.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else if s.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else {
            None
        }
    }
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        let sip = crate::config::SipConfig::default();
        RegistrarSettings {
            domain: sip.domain,
            server_name: sip.server_name,
            rules: RegistrarConfig::default(),
        }
    }
}

impl RegistrarSettings {
    /// The settings from the configuration file.
    pub fn from_config(config: &crate::config::Config) -> RegistrarSettings {
        RegistrarSettings {
            domain: config.sip.domain.clone(),
            server_name: config.sip.server_name.clone(),
            rules: config.registrar.clone(),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrarStats {
    /// REGISTER requests handled.
    pub requests: u64,
    /// 200 OK sent (registrations, refreshes, removals and queries).
    pub accepted: u64,
    /// 401 challenges sent.
    pub challenges: u64,
    /// Credentials that failed: unknown user, wrong password, replayed nonce count.
    pub auth_failures: u64,
    /// Sources banned.
    pub bans: u64,
    /// Requests refused because their source was banned.
    pub refused_banned: u64,
    /// Storage errors (answered 500).
    pub store_errors: u64,
}

/// Why a registrar could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    /// The nonce key is unusable.
    #[error("registrar nonce key: {0}")]
    Key(#[from] sip_core::auth::AuthError),
    /// The location store could not be loaded.
    #[error("registrar location store: {0}")]
    Store(#[from] StoreError),
}

/// What [`Registrar::handle_register`] decided.
#[derive(Debug)]
#[must_use]
pub struct RegisterOutcome {
    /// The status code answered.
    pub status: u16,
    /// The response to send back over the request's flow; `None` when the request holds
    /// too little to address a response.
    pub response: Option<Bytes>,
    /// The canonical AOR the request was about, once known.
    pub aor: Option<String>,
    /// Whether the response may only be sent after the next [`Registrar::commit`]
    /// (see [`Registrar::stage_register`]).
    pub awaits_commit: bool,
}

/// Extra headers of a response, in order.
type Headers = Vec<(&'static str, String)>;

/// A refusal on the way: status, reason phrase (standard when `None`), extra headers.
#[derive(Debug)]
struct Refusal {
    code: u16,
    reason: Option<String>,
    headers: Headers,
}

impl Refusal {
    fn new(code: u16) -> Refusal {
        Refusal {
            code,
            reason: None,
            headers: Vec::new(),
        }
    }
    fn because(code: u16, reason: impl Into<String>) -> Refusal {
        // A reason phrase is one line: whatever text we quote in it must not break that.
        let reason: String = reason
            .into()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Refusal {
            code,
            reason: Some(reason),
            headers: Vec::new(),
        }
    }
    fn with(mut self, name: &'static str, value: impl Into<String>) -> Refusal {
        self.headers.push((name, value.into()));
        self
    }
}

/// The registrar: settings, the location store with its cache, the users, the digest
/// verifier and the table of failing sources.
pub struct Registrar<L: LocationStore, U: UserStore> {
    settings: RegistrarSettings,
    location: CachedStore<L>,
    users: CachedUsers<U>,
    auth: Authenticator,
    stats: RegistrarStats,
    /// 200s built on staged changes, waiting for the next commit.
    awaiting_commit: u64,
    /// Makes the To tags.
    ids: IdGenerator,
    /// Our domain, aliases and addresses.
    myself: Myself,
}

impl<L: LocationStore, U: UserStore> std::fmt::Debug for Registrar<L, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("settings", &self.settings)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<L: LocationStore, U: UserStore> Registrar<L, U> {
    /// A registrar over these stores. `nonce_key` (at least 16 random bytes) keys the
    /// nonces; nodes sharing a location service should share it, so a nonce from one is
    /// good at another. The bindings current at `now` are loaded into memory.
    pub fn new(
        settings: RegistrarSettings,
        location: L,
        users: U,
        nonce_key: &[u8],
        now: u64,
    ) -> Result<Registrar<L, U>, RegistrarError> {
        let myself = Myself::new(&settings.domain, &settings.rules.aliases, &[], &[]);
        let auth = Authenticator::new(
            &settings.domain,
            &settings.rules.digest_algorithms,
            nonce_key,
            settings.rules.nonce_lifetime_secs,
        )?
        .with_bans(
            settings.rules.max_auth_failures,
            settings.rules.auth_failure_window_secs,
            settings.rules.ban_secs,
        );
        // The nonce key passed the authenticator's length check, which is the longer.
        let ids = IdGenerator::new(nonce_key).map_err(|_| {
            RegistrarError::Key(sip_core::auth::AuthError::WeakKey {
                len: nonce_key.len(),
            })
        })?;
        Ok(Registrar {
            auth,
            location: CachedStore::new(location, now)?,
            users: CachedUsers::new(users, now)?,
            settings,
            stats: RegistrarStats::default(),
            awaiting_commit: 0,
            ids,
            myself,
        })
    }

    /// Knows us by `myself` too (the addresses we listen on, besides the domain and
    /// aliases of the settings): a REGISTER for `user@ADDRESS` is for `user@DOMAIN`,
    /// and a digest `uri` naming us is accepted.
    pub fn with_myself(mut self, myself: Myself) -> Self {
        self.auth = self.auth.with_myself(myself.clone());
        self.myself = myself;
        self
    }

    /// The users and the authenticator, lent to the proxy: one table of failures and
    /// bans for every method and both challenge kinds.
    pub fn users_and_auth(&mut self) -> (&CachedUsers<U>, &mut Authenticator) {
        (&self.users, &mut self.auth)
    }

    /// A read handle on the bindings for routing: cheap to clone, usable from any thread.
    pub fn reader(&self) -> LocationReader {
        self.location.reader()
    }

    /// The counters.
    pub fn stats(&self) -> RegistrarStats {
        let auth = self.auth.stats();
        RegistrarStats {
            auth_failures: auth.failures,
            bans: auth.bans,
            ..self.stats
        }
    }

    /// The settings in force.
    #[allow(dead_code)] // for the admin API
    pub fn settings(&self) -> &RegistrarSettings {
        &self.settings
    }

    /// Whether `ip` is banned at `now`: the I/O shell may drop all its traffic early.
    pub fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        self.auth.is_banned(ip, now)
    }

    /// Housekeeping, to call every few seconds: deletes expired bindings (returns how
    /// many), forgets expired nonces, lifts ended bans.
    pub fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
        self.auth.sweep(now);
        self.location.sweep(now)
    }

    /// Handles one REGISTER that arrived from `source` over `transport`, at `now`.
    ///
    /// Any change to the bindings is stored before this returns; send the response only
    /// after, and from the same thread of control, so responses keep the request order.
    /// [`Registrar::stage_register`] is the same with the store's commit left to the
    /// caller, so that many REGISTERs share one (what `serve` does).
    #[allow(dead_code)] // the one-at-a-time form, for the tests and callers without batches
    pub fn handle_register(
        &mut self,
        now: u64,
        req: &Message,
        source: SocketAddr,
        transport: Transport,
    ) -> RegisterOutcome {
        // A banned source is refused before anything is looked at (in `stage_register`).
        if !self.auth.is_banned(source.ip(), now)
            && let Err(e) = req.validate()
        {
            self.stats.requests += 1;
            let code = e.status_code();
            return RegisterOutcome {
                status: code,
                response: error_response_to_raw(req.as_bytes(), code, &e.reason_phrase()),
                aor: None,
                awaits_commit: false,
            };
        }
        let outcome = self.stage_register(now, req, source, transport);
        if outcome.awaits_commit && self.commit().is_err() {
            return self.failed_commit(req, outcome);
        }
        outcome
    }

    /// Answers a REGISTER that carries no Authorization header, when authentication is
    /// required: it is challenged (or refused for an earlier fault) and nothing is
    /// staged, so the answer may be sent without a server transaction. RFC 3261 §8.2.7
    /// has challenges sent statelessly, so that a flood of unauthenticated requests
    /// leaves no state behind; a retransmission is challenged again, with a fresh nonce.
    /// `None`: the request must go through a transaction and
    /// [`Registrar::stage_register`]. (Credentials only for other realms, rare, take
    /// that path too and are challenged there: deciding here only on the header's
    /// presence spares every answered REGISTER a second parse of its credentials.)
    pub fn answer_statelessly(
        &mut self,
        now: u64,
        req: &Message,
        source: SocketAddr,
        transport: Transport,
    ) -> Option<RegisterOutcome> {
        if !self.settings.rules.require_auth
            || req.method() != Some(&Method::Register)
            || req.get(HeaderName::Authorization).is_some()
        {
            return None;
        }
        let outcome = self.stage_register(now, req, source, transport);
        // Without credentials `process` stops at the challenge, before any staging; were
        // that ever to change, the 200 would still wait for its bindings to be stored.
        if outcome.awaits_commit && self.commit().is_err() {
            return Some(self.failed_commit(req, outcome));
        }
        Some(outcome)
    }

    /// Handles one REGISTER like [`Registrar::handle_register`], except that its changes
    /// to the bindings are only staged: they count for the REGISTERs handled after it,
    /// and are stored by the next [`Registrar::commit`].
    ///
    /// The request must have passed [`Message::validate`] (a server validates every
    /// request before its transaction layer takes it): it is not checked again here.
    /// An invalid one is still answered, never a panic, but perhaps with a less precise
    /// status.
    ///
    /// When the outcome `awaits_commit`, its response (a 200) must not be sent before
    /// that commit returned `Ok`; if the commit fails, send
    /// [`Registrar::failed_commit`]'s response instead. Other outcomes (challenges,
    /// refusals) may be sent at once.
    pub fn stage_register(
        &mut self,
        now: u64,
        req: &Message,
        source: SocketAddr,
        transport: Transport,
    ) -> RegisterOutcome {
        self.stats.requests += 1;
        if self.auth.is_banned(source.ip(), now) {
            self.stats.refused_banned += 1;
            return RegisterOutcome {
                status: 403,
                response: error_response_to_raw(
                    req.as_bytes(),
                    403,
                    "Forbidden (too many failed authentications)",
                ),
                aor: None,
                awaits_commit: false,
            };
        }
        let mut aor = None;
        let result = self.process(now, req, source, transport, &mut aor);
        let (code, reason, headers) = match result {
            Ok(headers) => (200, None, headers),
            Err(r) => (r.code, r.reason, r.headers),
        };
        // A 200 lists the AOR's bindings: if some of them are staged, it is true only
        // once they are stored.
        let awaits_commit =
            code == 200 && aor.as_deref().is_some_and(|a| self.location.is_staged(a));
        match code {
            200 => self.stats.accepted += 1,
            401 => self.stats.challenges += 1,
            _ => {}
        }
        if awaits_commit {
            self.awaiting_commit += 1;
        }
        RegisterOutcome {
            status: code,
            response: self.respond(req, code, reason.as_deref(), &headers),
            aor,
            awaits_commit,
        }
    }

    /// Stores every change staged by [`Registrar::stage_register`] since the last
    /// commit, in one transaction. On an error nothing is stored, and every outcome
    /// that awaited this commit must be answered with [`Registrar::failed_commit`].
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let awaiting = std::mem::take(&mut self.awaiting_commit);
        if let Err(e) = self.location.commit_staged() {
            self.stats.store_errors += 1;
            tracing::error!(error = %e, requests = awaiting, "registrar: storing bindings failed; answering 500");
            return Err(e);
        }
        Ok(())
    }

    /// Hands the location backend over to a writer thread (`store::BackgroundWriter`):
    /// from then on changes are stored through [`Registrar::begin_commit`] and
    /// [`Registrar::end_commit`], beside the caller. `None` if already handed over.
    pub fn detach_location_backend(&mut self) -> Option<L> {
        self.location.detach_backend()
    }

    /// The staged changes as a batch for the writer thread, unless one is in flight or
    /// nothing is staged. The outcomes that awaited a commit until now wait for this
    /// batch's [`Registrar::end_commit`].
    pub fn begin_commit(&mut self) -> Option<store::Batch> {
        let batch = self.location.begin_commit()?;
        self.awaiting_commit = 0;
        Some(batch)
    }

    /// Whether changes are staged and not yet handed out as a batch.
    pub fn has_staged(&self) -> bool {
        self.location.has_staged()
    }

    /// Whether a batch from [`Registrar::begin_commit`] is out.
    pub fn commit_in_flight(&self) -> bool {
        self.location.commit_in_flight()
    }

    /// The writer's report on a batch. `Ok`: its bindings are stored and readers see
    /// them; the outcomes that waited for it may be sent. An error: nothing of it, nor of
    /// what was staged since, is stored; every outcome that waited for it or was staged
    /// since must be answered with [`Registrar::failed_commit`].
    pub fn end_commit(&mut self, committed: store::Committed) -> Result<(), StoreError> {
        let result = self.location.end_commit(committed.id, committed.result);
        if let Err(e) = &result {
            self.awaiting_commit = 0;
            self.stats.store_errors += 1;
            tracing::error!(error = %e, "registrar: storing bindings failed; answering 500");
        }
        result
    }

    /// What replaces an outcome whose changes a failed [`Registrar::commit`] did not
    /// store: a 500, as when the store fails for a single REGISTER.
    pub fn failed_commit(&mut self, req: &Message, outcome: RegisterOutcome) -> RegisterOutcome {
        if outcome.status == 200 {
            self.stats.accepted -= 1;
        }
        let refusal = Refusal::because(500, STORAGE_FAILED);
        RegisterOutcome {
            status: 500,
            response: self.respond(req, 500, refusal.reason.as_deref(), &refusal.headers),
            aor: outcome.aor,
            awaits_commit: false,
        }
    }

    /// The response to `req` with this status, reason (standard when `None`) and extra
    /// headers, a To tag and our Server header.
    fn respond(
        &self,
        req: &Message,
        code: u16,
        reason: Option<&str>,
        headers: &Headers,
    ) -> Option<Bytes> {
        let tag = self.to_tag(req);
        let mut b = response_to_with_reason(req, code, reason.unwrap_or(""), Some(&tag));
        for (name, value) in headers {
            b.push(name, value);
        }
        b.push("Server", &self.settings.server_name);
        // The request validated, so the copied headers are sound and ours are built
        // from checked values: an error here would be our bug; answer nothing then.
        b.into_bytes().ok()
    }

    /// §10.3 steps 1 to 8; `Ok` carries the headers of the 200.
    fn process(
        &mut self,
        now: u64,
        req: &Message,
        source: SocketAddr,
        transport: Transport,
        aor_out: &mut Option<String>,
    ) -> Result<Headers, Refusal> {
        if req.method() != Some(&Method::Register) {
            return Err(Refusal::new(405).with("Allow", "REGISTER"));
        }
        // Step 1: is the Request-URI ours?
        let Some(Uri::Sip(ruri)) = req.request_uri() else {
            return Err(Refusal::new(416));
        };
        if !self.is_us(&ruri.host) {
            return Err(Refusal::because(
                403,
                "Forbidden (domain not served by this registrar)",
            ));
        }
        // Step 2: extensions the UA requires.
        let unsupported: Vec<&str> = req
            .tokens(HeaderName::Require)
            .filter_map(Result::ok)
            .filter(|t| !t.eq_ignore_ascii_case("path") && !t.eq_ignore_ascii_case("outbound"))
            .collect();
        if !unsupported.is_empty() {
            return Err(Refusal::new(420).with("Unsupported", unsupported.join(", ")));
        }
        // Step 5, first half: the AOR, needed to know whom to authenticate for.
        let to = req
            .to()
            .map_err(|e| Refusal::because(400, e.reason_phrase()))?;
        let Uri::Sip(to_uri) = to.uri else {
            return Err(Refusal::because(
                400,
                "Bad Request (To is not a sip or sips URI)",
            ));
        };
        if !self.is_our_domain(&to_uri.host) {
            return Err(Refusal::because(
                404,
                "Not Found (not a domain of this registrar)",
            ));
        }
        let user =
            aor_user(&to_uri).ok_or_else(|| Refusal::because(404, "Not Found (no such user)"))?;
        // Steps 3 and 4.
        if self.settings.rules.require_auth {
            let who = self.authenticate(now, req, source)?;
            if who != user {
                return Err(Refusal::because(
                    403,
                    "Forbidden (may not register this address-of-record)",
                ));
            }
        } else {
            match self.users.get_at(&user, now) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(Refusal::because(404, "Not Found (no such user)")),
                Err(e) => return Err(self.store_failed(&e)),
            }
        }
        let aor = format!("sip:{user}@{}", self.settings.domain.to_ascii_lowercase());
        *aor_out = Some(aor.clone());

        let mut contacts = Vec::new();
        for c in req.contacts() {
            contacts.push(c.map_err(|e| Refusal::because(400, e.reason_phrase()))?);
        }
        let current = self
            .location
            .lookup(&aor, now)
            .map_err(|e| self.store_failed(&e))?;
        let mut extra = Vec::new();
        if !contacts.is_empty() {
            let call_id = req
                .call_id()
                .map_err(|e| Refusal::because(400, e.reason_phrase()))?;
            let cseq = req
                .cseq()
                .map_err(|e| Refusal::because(400, e.reason_phrase()))?
                .seq;
            let expires_header = req
                .expires()
                .map_err(|e| Refusal::because(400, e.reason_phrase()))?;
            let changes = if contacts.iter().any(|c| matches!(c, Contact::Star)) {
                // Step 6.
                if contacts.len() > 1 {
                    return Err(Refusal::because(
                        400,
                        "Bad Request (Contact: * must be the only Contact)",
                    ));
                }
                if expires_header != Some(0) {
                    return Err(Refusal::because(
                        400,
                        "Bad Request (Contact: * needs Expires: 0)",
                    ));
                }
                for b in &current {
                    check_order(b, call_id, cseq)?;
                }
                vec![Change::RemoveAll { aor: aor.clone() }]
            } else {
                let input = RequestFacts {
                    aor: &aor,
                    call_id,
                    cseq,
                    expires_header,
                    source,
                    transport,
                    now,
                };
                let (changes, headers) = self.plan(req, &input, &contacts, &current)?;
                extra = headers;
                changes
            };
            // Step 7's commit: all or nothing, staged here and stored by `commit`
            // before the 200 may be sent.
            self.location.stage(changes);
        }
        // Step 8: every current binding, best first.
        let bindings = self
            .location
            .lookup(&aor, now)
            .map_err(|e| self.store_failed(&e))?;
        let mut headers: Headers = bindings
            .iter()
            .map(|b| ("Contact", contact_value(b, now)))
            .collect();
        headers.extend(extra);
        headers.push(("Date", http_date(now)));
        Ok(headers)
    }

    /// Step 7 for a list of contact addresses: the changes to make and the extra headers
    /// of the 200 (Path echo, Require: outbound).
    fn plan(
        &self,
        req: &Message,
        facts: &RequestFacts<'_>,
        contacts: &[Contact<'_>],
        current: &[Binding],
    ) -> Result<(Vec<Change>, Headers), Refusal> {
        let supported = |tag: &str| {
            req.tokens(HeaderName::Supported)
                .filter_map(Result::ok)
                .any(|t| t.eq_ignore_ascii_case(tag))
        };
        let mut headers = Vec::new();

        // Path (RFC 3327 §5.3).
        let mut path = Vec::new();
        let mut first_path_ob = false;
        for (i, p) in req.paths().enumerate() {
            let p = p.map_err(|e| Refusal::because(400, e.reason_phrase()))?;
            if i == 0 {
                first_path_ob = p.uri.as_sip().is_some_and(|u| u.params.contains("ob"));
            }
            path.push(route_value(&p));
        }
        if !path.is_empty() {
            if !supported("path") {
                return Err(Refusal::new(420).with("Unsupported", "path"));
            }
            headers.push(("Path", path.join(", ")));
        }

        // Outbound (RFC 5626 §6): is outbound processing possible at all?
        let first_hop = req.vias().count() == 1;
        let outbound_ok = first_hop || first_path_ob;

        let mut parsed = Vec::with_capacity(contacts.len());
        for c in contacts {
            let Contact::Addr(na) = c else { continue };
            parsed.push(self.parse_contact(na, facts)?);
        }
        if parsed.iter().any(|c| c.reg_id.is_some()) {
            if !outbound_ok {
                if supported("outbound") {
                    return Err(Refusal::new(439));
                }
                for c in &mut parsed {
                    c.reg_id = None;
                }
            } else if parsed.iter().filter(|c| c.expires > 0).count() > 1 {
                return Err(Refusal::because(
                    400,
                    "Bad Request (several Contacts with a non-zero expiry and a reg-id)",
                ));
            }
        }
        // 423 before any change: "It then skips the remaining steps".
        let min = self.settings.rules.min_expires;
        if parsed
            .iter()
            .any(|c| c.expires > 0 && c.expires < ONE_HOUR && c.expires < min)
        {
            return Err(Refusal::new(423).with("Min-Expires", min.to_string()));
        }
        let user_agent = req.user_agent().map(|ua| {
            let mut ua: String = ua
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if ua.len() > MAX_USER_AGENT {
                let mut end = MAX_USER_AGENT;
                while !ua.is_char_boundary(end) {
                    end -= 1;
                }
                ua.truncate(end);
            }
            ua
        });

        let mut changes = Vec::new();
        let mut used_reg_id = false;
        for c in parsed {
            let matched: Vec<&Binding> = current.iter().filter(|b| c.matches(b)).collect();
            for b in &matched {
                check_order(b, facts.call_id, facts.cseq)?;
            }
            for b in &matched {
                // A binding found by instance/reg-id under another URI is replaced; one
                // under the same URI is overwritten by the upsert (or removed below).
                if b.contact != c.uri || c.expires == 0 {
                    changes.push(Change::Remove {
                        aor: b.aor.clone(),
                        contact: b.contact.clone(),
                    });
                }
            }
            if c.expires == 0 {
                continue;
            }
            used_reg_id |= c.reg_id.is_some();
            let granted = c.expires.min(self.settings.rules.max_expires);
            changes.push(Change::Upsert(Binding {
                aor: facts.aor.to_owned(),
                contact: c.uri,
                expires_at: facts.now + u64::from(granted),
                q: c.q,
                call_id: facts.call_id.to_owned(),
                cseq: facts.cseq,
                transport: facts.transport,
                source: facts.source,
                path: path.clone(),
                instance_id: c.instance_id,
                reg_id: c.reg_id,
                user_agent: user_agent.clone(),
                registered_at: facts.now,
            }));
        }
        if used_reg_id && supported("outbound") {
            headers.push(("Require", "outbound".into()));
        }
        Ok((changes, headers))
    }

    /// One Contact address with its requested expiry and outbound identity.
    fn parse_contact(
        &self,
        na: &NameAddr<'_>,
        facts: &RequestFacts<'_>,
    ) -> Result<NewContact, Refusal> {
        let bad = |what: String| Refusal::because(400, format!("Bad Request ({what})"));
        let expires = na
            .expires()
            .map_err(|e| Refusal::because(400, e.reason_phrase()))?
            .or(facts.expires_header)
            .unwrap_or(self.settings.rules.default_expires);
        let q = match na.params.get("q") {
            None => None,
            Some(v) => Some(
                na.q()
                    .ok_or_else(|| bad(format!("q \"{}\" is not a qvalue", v.unwrap_or(""))))?,
            ),
        };
        let instance_id = match na.params.get("+sip.instance") {
            None => None,
            Some(Some(v)) => Some(unquote(v).into_owned()),
            Some(None) => return Err(bad("+sip.instance without a value".into())),
        };
        let reg_id = match na.params.get("reg-id") {
            None => None,
            Some(v) => Some(
                v.and_then(|v| v.parse::<u32>().ok())
                    .filter(|r| *r > 0)
                    .ok_or_else(|| {
                        bad(format!("reg-id \"{}\" is not 1 to 2^31-1", v.unwrap_or("")))
                    })?,
            ),
        };
        Ok(NewContact {
            uri: na.uri_text.to_owned(),
            expires,
            q,
            // RFC 5626 §6: a reg-id without an instance-id is ignored.
            reg_id: reg_id.filter(|_| instance_id.is_some()),
            instance_id,
        })
    }

    /// Steps 3 and 4's authentication: the user name the credentials prove, or the
    /// refusal to send (a challenge, mostly).
    fn authenticate(
        &mut self,
        now: u64,
        req: &Message,
        source: SocketAddr,
    ) -> Result<String, Refusal> {
        let users = &mut self.users;
        let checked = self.auth.check_from(
            now,
            req,
            HeaderName::Authorization,
            Some(source.ip()),
            |name| users.get_at(name, now),
        );
        match checked {
            Ok(AuthCheck::User(name)) => Ok(name),
            Ok(AuthCheck::Challenge { stale }) => Err(self.challenge(now, stale)),
            Ok(AuthCheck::Refuse(code, reason)) => Err(Refusal::because(code, reason)),
            Err(e) => Err(self.store_failed(&e)),
        }
    }

    /// A 401 with one fresh nonce for each configured algorithm (RFC 8760 §2.4:
    /// strongest first, unless configured otherwise). Every 401 has this one form,
    /// whatever led to it.
    fn challenge(&self, now: u64, stale: bool) -> Refusal {
        let mut refusal = Refusal::new(401);
        for value in self.auth.challenges(now, stale) {
            refusal = refusal.with("WWW-Authenticate", value);
        }
        refusal
    }

    fn store_failed(&mut self, e: &StoreError) -> Refusal {
        self.stats.store_errors += 1;
        tracing::error!(error = %e, "registrar: storage failed; answering 500");
        Refusal::because(500, STORAGE_FAILED)
    }

    /// Whether a Request-URI host names this registrar: an IP literal (the request
    /// reached us, so an address can only mean us, even one NAT put in front of us),
    /// or what [`Registrar::is_our_domain`] accepts.
    fn is_us(&self, host: &Host<'_>) -> bool {
        matches!(host, Host::V4(_) | Host::V6(_)) || self.is_our_domain(host)
    }

    /// Whether a host is ours for an address of record: the domain, an alias, or an
    /// address we listen on (`phone --server 127.0.0.1:5060` registers
    /// `alice@127.0.0.1`, which is `alice@DOMAIN`).
    fn is_our_domain(&self, host: &Host<'_>) -> bool {
        self.myself.is_own_host(host)
    }

    /// A To tag stable across retransmissions of one request (the challenges are
    /// stateless, RFC 3261 §8.2.7) and unguessable by others (RFC 3261 §19.3).
    fn to_tag(&self, req: &Message) -> String {
        let call_id = req.call_id().unwrap_or("");
        let seq = req.cseq().map(|c| c.seq).unwrap_or(0).to_be_bytes();
        let from_tag = req.from().ok().and_then(|f| f.tag()).unwrap_or("");
        self.ids
            .derive(&[call_id.as_bytes(), &seq, from_tag.as_bytes()])
    }
}

/// What one REGISTER says about every binding it makes.
struct RequestFacts<'a> {
    aor: &'a str,
    call_id: &'a str,
    cseq: u32,
    expires_header: Option<u32>,
    source: SocketAddr,
    transport: Transport,
    now: u64,
}

/// A Contact address of the request, checked.
#[derive(Debug)]
struct NewContact {
    uri: String,
    expires: u32,
    q: Option<u16>,
    instance_id: Option<String>,
    reg_id: Option<u32>,
}

impl NewContact {
    /// Whether this contact refers to an existing binding: by (instance-id, reg-id) for
    /// outbound (RFC 5626 §6), by instance-id alone for a GRUU-style contact without
    /// reg-id (RFC 5627), and always by URI (RFC 3261 §19.1.4), which is also the store's
    /// key.
    fn matches(&self, b: &Binding) -> bool {
        let by_instance = match (&self.instance_id, self.reg_id) {
            (Some(i), Some(r)) => b.instance_id.as_ref() == Some(i) && b.reg_id == Some(r),
            (Some(i), None) => b.instance_id.as_ref() == Some(i) && b.reg_id.is_none(),
            (None, _) => false,
        };
        by_instance || b.contact == self.uri || uris_equal(&b.contact, &self.uri)
    }
}

/// §10.3 steps 6 and 7: a REGISTER on the same Call-ID must be newer than the binding.
fn check_order(b: &Binding, call_id: &str, cseq: u32) -> Result<(), Refusal> {
    if b.call_id == call_id && cseq <= b.cseq {
        return Err(Refusal::because(
            500,
            format!(
                "Server Internal Error (out-of-order REGISTER: CSeq {cseq} is not above {})",
                b.cseq
            ),
        ));
    }
    Ok(())
}

/// The user part of an AOR, unescaped, if it can name a user (§10.3 step 5's canonical
/// form drops the parameters and decodes escapes).
fn aor_user(uri: &SipUri<'_>) -> Option<String> {
    let raw = uri.user_decoded()?;
    let user = String::from_utf8(raw.into_owned()).ok()?;
    store::check_user_name(&user).ok()?;
    Some(user)
}

/// RFC 3261 §19.1.4 URI equality, for SIP URIs: scheme, user and password exactly,
/// host without case, same port (absent is not 5060), the parameters `transport`, `user`,
/// `ttl`, `method` and `maddr` equal when either has them, any other parameter equal
/// when both have it. Other schemes compare as case-insensitive text.
fn uris_equal(a: &str, b: &str) -> bool {
    let (Ok(Uri::Sip(x)), Ok(Uri::Sip(y))) = (Uri::parse(a), Uri::parse(b)) else {
        return a.eq_ignore_ascii_case(b);
    };
    if x.secure != y.secure
        || x.user_decoded() != y.user_decoded()
        || x.password != y.password
        || !x.host.to_string().eq_ignore_ascii_case(&y.host.to_string())
        || x.port != y.port
    {
        return false;
    }
    const MUST_MATCH: [&str; 5] = ["transport", "user", "ttl", "method", "maddr"];
    let same = |n: &str| {
        let (p, q) = (x.params.get(n), y.params.get(n));
        match (p, q) {
            (Some(p), Some(q)) => p.unwrap_or("").eq_ignore_ascii_case(q.unwrap_or("")),
            (None, None) => true,
            _ => !MUST_MATCH.iter().any(|m| m.eq_ignore_ascii_case(n)),
        }
    };
    x.params.iter().all(|(n, _)| same(n)) && y.params.iter().all(|(n, _)| same(n))
}

/// A Path value as stored and echoed: `<uri>;params`, without display name or line folds.
fn route_value(na: &NameAddr<'_>) -> String {
    let mut s = format!("<{}>", na.uri_text);
    if !na.params.is_empty() {
        s.push(';');
        s.extend(na.params.as_str().chars().filter(|c| !c.is_whitespace()));
    }
    s
}

/// A Contact of the 200: the URI, its remaining expiry, q and the outbound identity.
fn contact_value(b: &Binding, now: u64) -> String {
    let mut s = format!("<{}>;expires={}", b.contact, b.expires_in(now));
    if let Some(q) = b.q {
        s.push_str(";q=");
        s.push_str(&format_q(q));
    }
    if let Some(i) = &b.instance_id {
        s.push_str(";+sip.instance=");
        s.push_str(&sip_core::scan::quote(i));
    }
    if let Some(r) = b.reg_id {
        s.push_str(&format!(";reg-id={r}"));
    }
    s
}

/// A qvalue in thousandths written as RFC 3261 writes it: 1, 0.5, 0.25, 0.
fn format_q(q: u16) -> String {
    if q >= 1000 {
        return "1".into();
    }
    let s = format!("0.{q:03}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// An RFC 1123 date (the SIP Date header, RFC 3261 §20.17) for Unix seconds.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = usize::try_from(month - 1)
        .ok()
        .and_then(|m| MONTHS.get(m))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {day:02} {mon} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sip_core::auth::{Algorithm, Challenge, respond};
    use store::{MemoryLocationStore, MemoryUserStore, User};

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T0: u64 = 1_700_000_000;
    const DOMAIN: &str = "example.test";

    type Reg = Registrar<MemoryLocationStore, MemoryUserStore>;

    fn src() -> SocketAddr {
        "192.0.2.10:5060".parse().unwrap()
    }

    fn registrar(require_auth: bool) -> Reg {
        let settings = RegistrarSettings {
            domain: DOMAIN.into(),
            rules: RegistrarConfig {
                aliases: vec!["sip.example.test".into()],
                require_auth,
                min_expires: 60,
                max_expires: 3600,
                default_expires: 1800,
                max_auth_failures: 3,
                auth_failure_window_secs: 60,
                ban_secs: 300,
                nonce_lifetime_secs: 300,
                digest_algorithms: vec!["SHA-256".into(), "MD5".into()],
            },
            ..RegistrarSettings::default()
        };
        let mut users = MemoryUserStore::default();
        for (name, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
            users
                .add(&User::new(name, DOMAIN, pw, T0).unwrap())
                .unwrap();
        }
        Registrar::new(settings, MemoryLocationStore::default(), users, KEY, T0).unwrap()
    }

    /// A REGISTER from `user`; `lines` are extra header lines (Contact, Expires...).
    fn register(user: &str, call_id: &str, cseq: u32, lines: &[&str]) -> Message {
        register_to(
            "sip:example.test",
            &format!("<sip:{user}@{DOMAIN}>"),
            call_id,
            cseq,
            lines,
        )
    }

    fn register_to(ruri: &str, to: &str, call_id: &str, cseq: u32, lines: &[&str]) -> Message {
        let mut extra = String::new();
        for l in lines {
            extra.push_str(l);
            extra.push_str("\r\n");
        }
        let text = format!(
            "REGISTER {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{call_id}{cseq}\r\n\
             Max-Forwards: 70\r\n\
             To: {to}\r\n\
             From: {to};tag=ft{cseq}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text)).unwrap()
    }

    fn send(reg: &mut Reg, now: u64, req: &Message) -> Message {
        let out = reg.handle_register(now, req, src(), Transport::Udp);
        let resp = Message::parse(out.response.unwrap()).unwrap();
        assert_eq!(resp.status(), Some(out.status));
        resp.validate().unwrap();
        resp
    }

    /// The (URI, expires) of each Contact of a response, in order.
    fn bound(resp: &Message) -> Vec<(String, u32)> {
        resp.contacts()
            .map(|c| match c.unwrap() {
                Contact::Addr(na) => (na.uri_text.to_owned(), na.expires().unwrap().unwrap()),
                Contact::Star => panic!("* in a response"),
            })
            .collect()
    }

    const AOR: &str = "sip:alice@example.test";

    #[test]
    fn register_refresh_expiry_and_sweep() {
        let mut reg = registrar(false);
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                1,
                &[
                    "Contact: <sip:alice@192.0.2.10:5060>",
                    "Expires: 600",
                    "User-Agent: Phone/1",
                ],
            ),
        );
        assert_eq!(r.status(), Some(200));
        assert_eq!(bound(&r), [("sip:alice@192.0.2.10:5060".to_owned(), 600)]);
        assert_eq!(
            r.get(HeaderName::Date),
            Some("Tue, 14 Nov 2023 22:13:20 GMT")
        );
        assert!(r.to().unwrap().tag().is_some());
        let b = &reg.reader().lookup(AOR, T0)[0];
        assert_eq!(
            (
                b.cseq,
                b.call_id.as_str(),
                b.transport,
                b.source,
                b.user_agent.as_deref()
            ),
            (1, "c1", Transport::Udp, src(), Some("Phone/1"))
        );
        // The expiry counts down.
        let r = send(&mut reg, T0 + 100, &register("alice", "c1", 2, &[]));
        assert_eq!(bound(&r), [("sip:alice@192.0.2.10:5060".to_owned(), 500)]);
        // A refresh restarts it, and records the new CSeq.
        let r = send(
            &mut reg,
            T0 + 200,
            &register(
                "alice",
                "c1",
                3,
                &["Contact: <sip:alice@192.0.2.10:5060>;expires=300"],
            ),
        );
        assert_eq!(bound(&r)[0].1, 300);
        assert_eq!(reg.reader().lookup(AOR, T0 + 200)[0].cseq, 3);
        // Gone once expired, even before a sweep; the sweep deletes it.
        assert_eq!(reg.reader().lookup(AOR, T0 + 499).len(), 1);
        assert!(reg.reader().lookup(AOR, T0 + 500).is_empty());
        assert_eq!(reg.reader().len(), 1);
        assert_eq!(reg.sweep(T0 + 500).unwrap(), 1);
        assert!(reg.reader().is_empty());
        let r = send(&mut reg, T0 + 500, &register("alice", "c1", 4, &[]));
        assert!(bound(&r).is_empty());
    }

    #[test]
    fn expiry_from_param_then_header_then_default_capped_at_max() {
        let mut reg = registrar(false);
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                1,
                &[
                    "Contact: <sip:a@192.0.2.1>;expires=120, <sip:a@192.0.2.2>",
                    "Expires: 240",
                ],
            ),
        );
        let mut b = bound(&r);
        b.sort();
        assert_eq!(
            b,
            [
                ("sip:a@192.0.2.1".into(), 120),
                ("sip:a@192.0.2.2".into(), 240)
            ]
        );
        let r = send(
            &mut reg,
            T0,
            &register("bob", "c2", 1, &["Contact: <sip:b@192.0.2.3>"]),
        );
        assert_eq!(bound(&r)[0].1, 1800, "the configured default");
        let r = send(
            &mut reg,
            T0,
            &register(
                "bob",
                "c2",
                2,
                &["Contact: <sip:b@192.0.2.3>;expires=86400"],
            ),
        );
        assert_eq!(bound(&r)[0].1, 3600, "capped at max_expires");
    }

    #[test]
    fn several_contacts_are_listed_by_q() {
        let mut reg = registrar(false);
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                1,
                &[
                    "Contact: <sip:low@192.0.2.1>;q=0.1",
                    "Contact: <sip:mid@192.0.2.2>;q=0.5, <sip:top@192.0.2.3>;q=1.0",
                ],
            ),
        );
        let uris: Vec<String> = bound(&r).into_iter().map(|(u, _)| u).collect();
        assert_eq!(
            uris,
            [
                "sip:top@192.0.2.3",
                "sip:mid@192.0.2.2",
                "sip:low@192.0.2.1"
            ]
        );
        assert!(r.get(HeaderName::Contact).unwrap().contains(";q=1"));
        let q: Vec<Option<u16>> = reg.reader().lookup(AOR, T0).iter().map(|b| b.q).collect();
        assert_eq!(q, [Some(1000), Some(500), Some(100)]);
        assert_eq!(format_q(250), "0.25");
        assert_eq!(format_q(0), "0");
        let r = send(
            &mut reg,
            T0,
            &register("alice", "c1", 2, &["Contact: <sip:x@h>;q=2"]),
        );
        assert_eq!(r.status(), Some(400));
    }

    #[test]
    fn star_removes_all_and_is_checked() {
        let mut reg = registrar(false);
        send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                1,
                &["Contact: <sip:a@192.0.2.1>, <sip:a@192.0.2.2>"],
            ),
        );
        assert_eq!(reg.reader().lookup(AOR, T0).len(), 2);
        for (lines, why) in [
            (&["Contact: *"][..], "Expires: 0"),
            (&["Contact: *", "Expires: 60"][..], "Expires: 0"),
            (
                &["Contact: *, <sip:a@192.0.2.3>", "Expires: 0"][..],
                "only Contact",
            ),
        ] {
            let r = send(&mut reg, T0, &register("alice", "c1", 2, lines));
            assert_eq!(r.status(), Some(400), "{lines:?}");
            assert!(r.reason().unwrap().contains(why), "{:?}", r.reason());
        }
        assert_eq!(
            reg.reader().lookup(AOR, T0).len(),
            2,
            "a refused request changes nothing"
        );
        let r = send(
            &mut reg,
            T0 + 5,
            &register("alice", "c9", 1, &["Contact: *", "Expires: 0"]),
        );
        assert_eq!(r.status(), Some(200));
        assert!(bound(&r).is_empty());
        assert!(reg.reader().lookup(AOR, T0 + 5).is_empty());
    }

    #[test]
    fn expires_zero_removes_one_binding() {
        let mut reg = registrar(false);
        send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                1,
                &["Contact: <sip:a@192.0.2.1>, <sip:a@192.0.2.2>"],
            ),
        );
        // The URI is matched by RFC 3261 comparison: host case does not matter.
        let r = send(
            &mut reg,
            T0,
            &register("alice", "c1", 2, &["Contact: <sip:a@192.0.2.1>;expires=0"]),
        );
        assert_eq!(bound(&r), [("sip:a@192.0.2.2".to_owned(), 1800)]);
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                3,
                &["Contact: <sip:a@192.0.2.2;TRANSPORT=udp>", "Expires: 0"],
            ),
        );
        assert_eq!(
            bound(&r).len(),
            1,
            "transport must match when one side has it"
        );
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                4,
                &["Contact: <sip:a@192.0.2.2>", "Expires: 0"],
            ),
        );
        assert!(bound(&r).is_empty());
        assert!(uris_equal("sip:a@EXAMPLE.test;x=1", "sip:a@example.test"));
        assert!(!uris_equal("sip:A@example.test", "sip:a@example.test"));
        assert!(!uris_equal("sip:a@example.test:5060", "sip:a@example.test"));
        assert!(!uris_equal(
            "sip:a@h;transport=tcp",
            "sip:a@h;transport=udp"
        ));
        assert!(uris_equal("sip:%61@h", "sip:a@h"));
    }

    #[test]
    fn too_brief_gets_423_with_min_expires() {
        let mut reg = registrar(false);
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                1,
                &["Contact: <sip:a@192.0.2.1>;expires=30, <sip:a@192.0.2.2>"],
            ),
        );
        assert_eq!(r.status(), Some(423));
        assert_eq!(r.min_expires().unwrap(), Some(60));
        assert!(reg.reader().lookup(AOR, T0).is_empty(), "nothing was bound");
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                2,
                &["Contact: <sip:a@192.0.2.1>", "Expires: 59"],
            ),
        );
        assert_eq!(r.status(), Some(423));
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                3,
                &["Contact: <sip:a@192.0.2.1>", "Expires: 60"],
            ),
        );
        assert_eq!(r.status(), Some(200));
    }

    #[test]
    fn call_id_and_cseq_ordering() {
        let mut reg = registrar(false);
        let c = "Contact: <sip:a@192.0.2.1>";
        assert_eq!(
            send(&mut reg, T0, &register("alice", "c1", 5, &[c])).status(),
            Some(200)
        );
        for cseq in [5, 4] {
            let r = send(
                &mut reg,
                T0,
                &register("alice", "c1", cseq, &[c, "Expires: 0"]),
            );
            assert_eq!(r.status(), Some(500), "CSeq {cseq}");
            assert!(
                r.reason().unwrap().contains("out-of-order"),
                "{:?}",
                r.reason()
            );
        }
        let r = send(
            &mut reg,
            T0,
            &register("alice", "c1", 4, &["Contact: *", "Expires: 0"]),
        );
        assert_eq!(r.status(), Some(500));
        assert_eq!(reg.reader().lookup(AOR, T0).len(), 1);
        // Another Call-ID (the phone rebooted) may update whatever its CSeq.
        let r = send(&mut reg, T0, &register("alice", "c2", 1, &[c]));
        assert_eq!(r.status(), Some(200));
        assert_eq!(reg.reader().lookup(AOR, T0)[0].call_id, "c2");
        // A query is not an update: no ordering applies.
        assert_eq!(
            send(&mut reg, T0, &register("alice", "c2", 1, &[])).status(),
            Some(200)
        );
    }

    #[test]
    fn path_is_stored_and_echoed_when_supported() {
        let mut reg = registrar(false);
        let path = "Path: <sip:edge.example.test;lr>, <sip:core.example.test;lr>";
        let r = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                1,
                &["Contact: <sip:a@192.0.2.1>", path, "Supported: path"],
            ),
        );
        assert_eq!(r.status(), Some(200));
        assert_eq!(
            r.get(HeaderName::Path),
            Some("<sip:edge.example.test;lr>, <sip:core.example.test;lr>")
        );
        assert_eq!(
            reg.reader().lookup(AOR, T0)[0].path,
            ["<sip:edge.example.test;lr>", "<sip:core.example.test;lr>"]
        );
        // RFC 3327 §5.3's recommended policy: a Path the UA did not ask for is refused.
        let r = send(
            &mut reg,
            T0,
            &register("alice", "c1", 2, &["Contact: <sip:a@192.0.2.1>", path]),
        );
        assert_eq!(r.status(), Some(420));
        assert_eq!(r.get(HeaderName::Unsupported), Some("path"));
        let r = send(
            &mut reg,
            T0,
            &register("alice", "c1", 3, &["Contact: <sip:a@192.0.2.1>"]),
        );
        assert!(r.get(HeaderName::Path).is_none());
        let r = send(
            &mut reg,
            T0,
            &register("alice", "c1", 4, &["Require: gruu"]),
        );
        assert_eq!(r.status(), Some(420));
        assert_eq!(r.get(HeaderName::Unsupported), Some("gruu"));
    }

    #[test]
    fn same_instance_and_reg_id_replace_the_binding() {
        let mut reg = registrar(false);
        let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
        let first = format!("Contact: <sip:a@192.0.2.1:5060;transport=tcp>;{inst};reg-id=1");
        let r = send(
            &mut reg,
            T0,
            &register("alice", "c1", 1, &[&first, "Supported: outbound, path"]),
        );
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.get(HeaderName::Require), Some("outbound"));
        assert!(r.get(HeaderName::Contact).unwrap().contains(
            ";+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1"
        ));
        // Same instance and reg-id from a new address (new flow after a NAT rebinding):
        // the old binding goes, even from another Call-ID.
        let moved = format!("Contact: <sip:a@192.0.2.1:6000;transport=tcp>;{inst};reg-id=1");
        let r = send(&mut reg, T0 + 10, &register("alice", "c2", 1, &[&moved]));
        assert_eq!(
            bound(&r),
            [("sip:a@192.0.2.1:6000;transport=tcp".to_owned(), 1800)]
        );
        assert!(
            r.get(HeaderName::Require).is_none(),
            "no Supported: outbound this time"
        );
        // Another reg-id of the same instance is a second flow, kept beside the first.
        let second = format!("Contact: <sip:a@192.0.2.1:6001;transport=tcp>;{inst};reg-id=2");
        let r = send(&mut reg, T0 + 20, &register("alice", "c3", 1, &[&second]));
        assert_eq!(bound(&r).len(), 2);
        let b = reg.reader().lookup(AOR, T0 + 20);
        assert!(
            b.iter().all(|b| b.instance_id.as_deref()
                == Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"))
        );
        // Two reg-id contacts with a non-zero expiry in one REGISTER: 400 (RFC 5626 §6).
        let both = format!("{first}, <sip:a@192.0.2.1:7000>;{inst};reg-id=3");
        let r = send(&mut reg, T0 + 30, &register("alice", "c4", 1, &[&both]));
        assert_eq!(r.status(), Some(400));
        // A reg-id without an instance is ignored.
        let r = send(
            &mut reg,
            T0 + 30,
            &register("bob", "c5", 1, &["Contact: <sip:b@192.0.2.9>;reg-id=1"]),
        );
        assert_eq!(r.status(), Some(200));
        assert_eq!(
            reg.reader().lookup("sip:bob@example.test", T0 + 30)[0].reg_id,
            None
        );
    }

    #[test]
    fn outbound_needs_an_outbound_first_hop() {
        let mut reg = registrar(false);
        let inst = "+sip.instance=\"<urn:uuid:1>\"";
        let text = |extra: &str| {
            format!(
                "REGISTER sip:example.test SIP/2.0\r\n\
                 Via: SIP/2.0/UDP edge.example.test;branch=z9hG4bKe1\r\n\
                 Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKu1\r\n\
                 Max-Forwards: 69\r\nTo: <sip:alice@example.test>\r\n\
                 From: <sip:alice@example.test>;tag=1\r\nCall-ID: ob1\r\nCSeq: 1 REGISTER\r\n\
                 Contact: <sip:a@192.0.2.10>;{inst};reg-id=1\r\n{extra}Content-Length: 0\r\n\r\n"
            )
        };
        let msg = |extra: &str| Message::parse(Bytes::from(text(extra))).unwrap();
        let r = send(&mut reg, T0, &msg("Supported: outbound\r\n"));
        assert_eq!(r.status(), Some(439));
        let r = send(&mut reg, T0, &msg(""));
        assert_eq!(r.status(), Some(200), "reg-id ignored");
        assert_eq!(reg.reader().lookup(AOR, T0)[0].reg_id, None);
        let r = send(
            &mut reg,
            T0,
            &msg("Supported: outbound, path\r\nPath: <sip:edge.example.test;lr;ob>\r\n"),
        );
        assert_eq!(r.status(), Some(500), "same Call-ID and CSeq as before");
    }

    #[test]
    fn a_query_lists_the_bindings_and_changes_nothing() {
        let mut reg = registrar(false);
        send(
            &mut reg,
            T0,
            &register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]),
        );
        let r = send(&mut reg, T0 + 30, &register("alice", "q1", 1, &[]));
        assert_eq!(r.status(), Some(200));
        assert_eq!(bound(&r), [("sip:a@192.0.2.1".to_owned(), 1770)]);
        assert_eq!(reg.reader().lookup(AOR, T0)[0].call_id, "c1");
    }

    #[test]
    fn addresses_that_are_not_ours_or_not_aors() {
        let mut reg = registrar(false);
        let c = "Contact: <sip:a@192.0.2.1>";
        let cases = [
            ("sip:example.test", "<tel:+15551234>", 400),
            ("sip:example.test", "<sip:alice@other.test>", 404),
            ("sip:example.test", "<sip:carol@example.test>", 404),
            ("sip:example.test", "<sip:example.test>", 404),
            ("sip:other.test", "<sip:alice@other.test>", 403),
            ("tel:+15551234", "<sip:alice@example.test>", 416),
            // Aliases and IP literals in the Request-URI are ours; the To alias maps to
            // the canonical AOR.
            ("sip:192.0.2.200", "<sip:alice@example.test>", 200),
            (
                "sips:SIP.example.test",
                "<sips:alice@sip.example.test>",
                200,
            ),
        ];
        for (cseq, (ruri, to, code)) in (1..).zip(cases) {
            let r = send(&mut reg, T0, &register_to(ruri, to, "c1", cseq, &[c]));
            assert_eq!(r.status(), Some(code), "{ruri} {to}: {:?}", r.reason());
        }
        assert_eq!(reg.reader().aor_count(), 1);
        assert_eq!(reg.reader().lookup(AOR, T0).len(), 1);
    }

    /// A registrar that knows it listens on 127.0.0.1:5060 (UDP) and on every address
    /// of a host with 192.0.2.7 on 5070 (TCP), with the alias `::1`.
    fn listening_registrar(require_auth: bool) -> Reg {
        let me = Myself::new(
            DOMAIN,
            &["sip.example.test".into(), "::1".into()],
            &[
                (Transport::Udp, "127.0.0.1:5060".parse().unwrap()),
                (Transport::Tcp, "0.0.0.0:5070".parse().unwrap()),
            ],
            &["127.0.0.1".parse().unwrap(), "192.0.2.7".parse().unwrap()],
        );
        registrar(require_auth).with_myself(me)
    }

    #[test]
    fn an_aor_at_one_of_our_addresses_is_in_our_domain() {
        // Issue 12, defect 5: `phone --server 127.0.0.1:5060` registers alice@127.0.0.1,
        // answered 404 "not a domain of this registrar".
        let mut reg = listening_registrar(false);
        let c = "Contact: <sip:a@192.0.2.1>";
        let cases = [
            ("sip:127.0.0.1:5060", "<sip:alice@127.0.0.1>", 200),
            ("sip:127.0.0.1", "<sip:alice@127.0.0.1:5060>", 200),
            ("sip:192.0.2.7:5070", "<sip:alice@192.0.2.7>", 200),
            // Defect 13: bob@[::1] with the alias ::1, however the address is written.
            ("sip:[::1]", "<sip:bob@[::1]>", 200),
            ("sip:[::1]", "<sip:bob@[0:0::1]>", 200),
            // Not us.
            ("sip:127.0.0.1", "<sip:alice@192.0.2.99>", 404),
        ];
        for (cseq, (ruri, to, code)) in (1..).zip(cases) {
            let r = send(&mut reg, T0, &register_to(ruri, to, "c5", cseq, &[c]));
            assert_eq!(r.status(), Some(code), "{ruri} {to}: {:?}", r.reason());
        }
        assert_eq!(reg.reader().lookup(AOR, T0).len(), 1);
        assert_eq!(reg.reader().lookup("sip:bob@example.test", T0).len(), 1);
    }

    #[test]
    fn a_digest_uri_naming_us_is_accepted_one_naming_others_is_not() {
        // Issue 12, defect 6: SIPp's [authentication] signs the server's address while
        // the Request-URI names the domain.
        let mut reg = listening_registrar(true);
        let c = "Contact: <sip:a@192.0.2.1>";
        let mut cseq = 1;
        for (digest_uri, code) in [
            ("sip:127.0.0.1:5060", 200),
            ("sip:sip.example.test", 200),
            ("sip:192.0.2.99:5060", 400),
            ("sip:127.0.0.1:5999", 400),
        ] {
            let r = send(&mut reg, T0, &register("alice", "c6", cseq, &[c]));
            cseq += 1;
            let ch = challenges(&r);
            let md5 = ch
                .iter()
                .find(|c| c.as_digest().unwrap().algorithm() == Some(Algorithm::Md5))
                .unwrap();
            let creds =
                respond(md5, "alice", "alice-pw", "REGISTER", digest_uri, "0a4f", 1).unwrap();
            let auth = format!("Authorization: {creds}");
            let r = send(&mut reg, T0, &register("alice", "c6", cseq, &[c, &auth]));
            cseq += 1;
            assert_eq!(r.status(), Some(code), "{digest_uri}: {:?}", r.reason());
        }
    }

    #[test]
    fn to_tags_are_stable_per_request_and_keyed() {
        // Issue 12, defect 8: one source of tags; a retransmission gets the same.
        let mut reg = registrar(true);
        let req = register("alice", "c8", 1, &[]);
        let a = send(&mut reg, T0, &req);
        let b = send(&mut reg, T0, &req);
        let tag = a.to().unwrap().tag().unwrap().to_owned();
        assert_eq!(b.to().unwrap().tag(), Some(tag.as_str()));
        assert_eq!(tag.len(), 24);
        let other = send(&mut reg, T0, &register("alice", "c8", 2, &[]));
        assert_ne!(other.to().unwrap().tag(), Some(tag.as_str()));
    }

    // ---- authentication ----

    fn challenges(resp: &Message) -> Vec<Challenge<'static>> {
        resp.get_all(HeaderName::WwwAuthenticate)
            .map(|v| Challenge::parse(v).unwrap().into_owned())
            .collect()
    }

    fn answer(ch: &Challenge<'_>, user: &str, pw: &str, nc: u32) -> String {
        let creds = respond(ch, user, pw, "REGISTER", "sip:example.test", "0a4f113b", nc).unwrap();
        format!("Authorization: {creds}")
    }

    /// The response text with nonces blanked, to compare the form of two challenges.
    fn masked(resp: &Message) -> String {
        let text = String::from_utf8_lossy(resp.as_bytes()).into_owned();
        let mut out = String::new();
        for part in text.split("nonce=\"") {
            if out.is_empty() {
                out.push_str(part);
            } else {
                out.push_str("nonce=\"N");
                out.push_str(&part[part.find('"').unwrap()..]);
            }
        }
        out
    }

    #[test]
    fn challenge_offers_sha256_then_md5_and_both_answers_work() {
        let mut reg = registrar(true);
        let c = "Contact: <sip:a@192.0.2.1>";
        let r = send(&mut reg, T0, &register("alice", "c1", 1, &[c]));
        assert_eq!(r.status(), Some(401));
        let ch = challenges(&r);
        let algs: Vec<_> = ch
            .iter()
            .map(|c| c.as_digest().unwrap().algorithm())
            .collect();
        assert_eq!(algs, [Some(Algorithm::Sha256), Some(Algorithm::Md5)]);
        for c in &ch {
            let d = c.as_digest().unwrap();
            assert_eq!(d.realm, DOMAIN);
            assert_eq!(d.qop, [sip_core::auth::Qop::Auth]);
            assert!(!d.stale);
        }
        assert!(reg.reader().is_empty());
        let r = send(
            &mut reg,
            T0 + 1,
            &register(
                "alice",
                "c1",
                2,
                &[c, &answer(&ch[1], "alice", "alice-pw", 1)],
            ),
        );
        assert_eq!(r.status(), Some(200), "MD5: {:?}", r.reason());
        // Both challenges carry one nonce, so the next answer takes the next count.
        let r = send(
            &mut reg,
            T0 + 2,
            &register(
                "alice",
                "c1",
                3,
                &[c, &answer(&ch[0], "alice", "alice-pw", 2)],
            ),
        );
        assert_eq!(r.status(), Some(200), "SHA-256: {:?}", r.reason());
        let r = send(
            &mut reg,
            T0 + 3,
            &register(
                "alice",
                "c1",
                4,
                &[c, &answer(&ch[0], "alice", "alice-pw", 3)],
            ),
        );
        assert_eq!(r.status(), Some(200));
        let s = reg.stats();
        assert_eq!((s.challenges, s.accepted, s.auth_failures), (1, 3, 0));
        // Authenticated as bob, bob may not touch alice's bindings.
        let r = send(
            &mut reg,
            T0 + 4,
            &register("alice", "c1", 5, &[c, &answer(&ch[0], "bob", "bob-pw", 4)]),
        );
        assert_eq!(r.status(), Some(403));
    }

    #[test]
    fn unknown_user_and_wrong_password_look_the_same() {
        let mut reg = registrar(true);
        let c = "Contact: <sip:a@192.0.2.1>";
        let ch = challenges(&send(&mut reg, T0, &register("alice", "c1", 1, &[c])));
        let wrong = send(
            &mut reg,
            T0,
            &register("alice", "c1", 2, &[c, &answer(&ch[0], "alice", "guess", 1)]),
        );
        let ch = challenges(&wrong);
        let unknown = send(
            &mut reg,
            T0,
            &register(
                "alice",
                "c1",
                2,
                &[c, &answer(&ch[0], "mallory", "guess", 1)],
            ),
        );
        assert_eq!(wrong.status(), Some(401));
        assert_eq!(masked(&wrong), masked(&unknown));
        assert_ne!(
            wrong.as_bytes(),
            unknown.as_bytes(),
            "fresh nonces each time"
        );
        assert_eq!(reg.stats().auth_failures, 2);
    }

    #[test]
    fn stale_nonce_and_replayed_count() {
        let mut reg = registrar(true);
        let c = "Contact: <sip:a@192.0.2.1>";
        let ch = challenges(&send(&mut reg, T0, &register("alice", "c1", 1, &[c])));
        let late = register(
            "alice",
            "c1",
            2,
            &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
        );
        let r = send(&mut reg, T0 + 300, &late);
        assert_eq!(r.status(), Some(401));
        assert!(challenges(&r).iter().all(|c| c.as_digest().unwrap().stale));
        assert_eq!(reg.stats().auth_failures, 0, "a stale nonce is no failure");
        // Replay: the very same authorized request a second time.
        let ch = challenges(&r);
        let req = register(
            "alice",
            "c1",
            3,
            &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
        );
        assert_eq!(send(&mut reg, T0 + 301, &req).status(), Some(200));
        let r = send(&mut reg, T0 + 302, &req);
        assert_eq!(r.status(), Some(401));
        assert!(!challenges(&r)[0].as_digest().unwrap().stale);
        assert_eq!(reg.stats().auth_failures, 1);
    }

    #[test]
    fn only_requests_without_credentials_are_answered_statelessly() {
        let c = "Contact: <sip:a@192.0.2.1>";
        let mut reg = registrar(true);
        let bare = register("alice", "c1", 1, &[c]);
        let outcome = reg
            .answer_statelessly(T0, &bare, src(), Transport::Udp)
            .expect("a request without credentials is challenged statelessly");
        assert_eq!((outcome.status, outcome.awaits_commit), (401, false));
        let ch = challenges(&Message::parse(outcome.response.unwrap()).unwrap());
        let answered = register(
            "alice",
            "c1",
            2,
            &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
        );
        assert!(
            reg.answer_statelessly(T0, &answered, src(), Transport::Udp)
                .is_none()
        );
        // Nothing is challenged when authentication is off: everything is stateful.
        let mut open = registrar(false);
        assert!(
            open.answer_statelessly(T0, &bare, src(), Transport::Udp)
                .is_none()
        );
    }

    #[test]
    fn a_source_that_keeps_failing_is_banned_for_a_while() {
        let mut reg = registrar(true);
        let c = "Contact: <sip:a@192.0.2.1>";
        let mut ch = challenges(&send(&mut reg, T0, &register("alice", "c1", 1, &[c])));
        for i in 0..3 {
            let r = send(
                &mut reg,
                T0 + i,
                &register("alice", "c1", 2, &[c, &answer(&ch[0], "alice", "nope", 1)]),
            );
            assert_eq!(r.status(), Some(401));
            ch = challenges(&r);
        }
        assert!(reg.is_banned(src().ip(), T0 + 3));
        assert_eq!(reg.stats().bans, 1);
        // Even the right password is refused during the ban.
        let good = register(
            "alice",
            "c1",
            3,
            &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
        );
        let r = send(&mut reg, T0 + 10, &good);
        assert_eq!(r.status(), Some(403));
        assert_eq!(reg.stats().refused_banned, 1);
        // Another source is not affected.
        let other: SocketAddr = "198.51.100.1:5060".parse().unwrap();
        let out = reg.handle_register(
            T0 + 10,
            &register("alice", "c9", 1, &[c]),
            other,
            Transport::Udp,
        );
        assert_eq!(out.status, 401);
        // Lifted after ban_secs (counted from the third failure, at T0 + 2).
        assert!(reg.is_banned(src().ip(), T0 + 2 + 299));
        reg.sweep(T0 + 2 + 300).unwrap();
        assert!(!reg.is_banned(src().ip(), T0 + 2 + 300));
        let ch = challenges(&send(&mut reg, T0 + 302, &register("alice", "c1", 3, &[c])));
        let r = send(
            &mut reg,
            T0 + 303,
            &register(
                "alice",
                "c1",
                4,
                &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
            ),
        );
        assert_eq!(r.status(), Some(200));
    }

    // ---- storage ----

    /// A location store whose writes fail on demand.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryLocationStore,
        fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl LocationStore for Flaky {
        fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StoreError::Corrupt {
                    what: "test",
                    detail: "disk full".into(),
                });
            }
            self.inner.apply(changes)
        }
        fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError> {
            self.inner.lookup(aor, now)
        }
        fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError> {
            self.inner.list_all(now)
        }
        fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
            self.inner.sweep(now)
        }
    }

    /// A registrar without authentication over a store whose writes fail while the
    /// returned flag is set, with these users.
    fn flaky_registrar(
        names: &[&str],
    ) -> (
        Registrar<Flaky, MemoryUserStore>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        let flaky = Flaky::default();
        let fail = std::sync::Arc::clone(&flaky.fail);
        let settings = RegistrarSettings {
            domain: DOMAIN.into(),
            rules: RegistrarConfig {
                require_auth: false,
                ..RegistrarConfig::default()
            },
            ..RegistrarSettings::default()
        };
        let mut users = MemoryUserStore::default();
        for name in names {
            users
                .add(&User::new(name, DOMAIN, "pw", T0).unwrap())
                .unwrap();
        }
        let reg = Registrar::new(settings, flaky, users, KEY, T0).unwrap();
        (reg, fail)
    }

    #[test]
    fn a_failed_write_is_a_500_and_changes_nothing() {
        let (mut reg, fail) = flaky_registrar(&["alice"]);
        let req = register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]);
        fail.store(true, std::sync::atomic::Ordering::Relaxed);
        let out = reg.handle_register(T0, &req, src(), Transport::Tcp);
        assert_eq!(out.status, 500);
        assert!(reg.reader().is_empty());
        assert_eq!(reg.stats().store_errors, 1);
        fail.store(false, std::sync::atomic::Ordering::Relaxed);
        let out = reg.handle_register(T0, &req, src(), Transport::Tcp);
        assert_eq!(out.status, 200);
        assert_eq!(out.aor.as_deref(), Some(AOR));
    }

    #[test]
    fn staged_registers_share_one_commit_and_fail_together() {
        let (mut reg, fail) = flaky_registrar(&["alice", "bob"]);
        let reader = reg.reader();
        let stage = |reg: &mut Registrar<Flaky, MemoryUserStore>, req: &Message| {
            let out = reg.stage_register(T0, req, src(), Transport::Udp);
            let resp = Message::parse(out.response.clone().unwrap()).unwrap();
            (out, resp)
        };
        // Two REGISTERs of one AOR and one of another, handled before one commit: the
        // second sees the first's binding, its CSeq is checked against it, and every
        // 200 awaits the commit; nothing is visible to readers before it.
        let (a1, _) = stage(
            &mut reg,
            &register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]),
        );
        let (a2, r2) = stage(
            &mut reg,
            &register("alice", "c2", 1, &["Contact: <sip:a@192.0.2.2>"]),
        );
        let (old, _) = stage(
            &mut reg,
            &register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]),
        );
        let (b1, _) = stage(
            &mut reg,
            &register("bob", "c3", 1, &["Contact: <sip:b@192.0.2.3>"]),
        );
        let (query, _) = stage(&mut reg, &register("bob", "c4", 1, &[]));
        assert_eq!(
            (a1.status, a2.status, b1.status, query.status),
            (200, 200, 200, 200)
        );
        assert!(a1.awaits_commit && a2.awaits_commit && b1.awaits_commit);
        assert!(
            query.awaits_commit,
            "a query listing staged bindings waits too"
        );
        assert_eq!(bound(&r2).len(), 2);
        assert_eq!(
            (old.status, old.awaits_commit),
            (500, false),
            "CSeq not newer than the staged one"
        );
        assert!(reader.is_empty());
        reg.commit().unwrap();
        assert_eq!(reader.lookup(AOR, T0).len(), 2);
        assert_eq!(reader.len(), 3);
        assert_eq!(reg.stats().accepted, 4);

        // A batch whose commit fails: its 200s become 500s and nothing is stored.
        let req = register("alice", "c1", 2, &["Contact: <sip:a@192.0.2.1>;expires=0"]);
        let (gone, _) = stage(&mut reg, &req);
        assert!(gone.awaits_commit);
        let challenge_free = stage(
            &mut reg,
            &register("carol", "c5", 1, &["Contact: <sip:c@x>"]),
        )
        .0;
        assert_eq!(
            (challenge_free.status, challenge_free.awaits_commit),
            (404, false)
        );
        fail.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reg.commit().is_err());
        let failed = reg.failed_commit(&req, gone);
        assert_eq!(failed.status, 500);
        let resp = Message::parse(failed.response.unwrap()).unwrap();
        resp.validate().unwrap();
        assert_eq!(resp.status(), Some(500));
        assert_eq!(reg.stats().store_errors, 1);
        assert_eq!(reg.stats().accepted, 4);
        assert_eq!(reader.lookup(AOR, T0).len(), 2);
        fail.store(false, std::sync::atomic::Ordering::Relaxed);
        // The failed batch left nothing staged behind.
        let (again, r) = stage(&mut reg, &register("alice", "c2", 2, &[]));
        assert!(!again.awaits_commit);
        assert_eq!(bound(&r).len(), 2);
    }

    #[test]
    fn batches_stored_beside_the_registrar() {
        let (mut reg, fail) = flaky_registrar(&["alice", "bob"]);
        let reader = reg.reader();
        let mut backend = reg.detach_location_backend().unwrap();
        // As the writer thread would: apply the batch to the backend, report back.
        let mut store = |batch: store::Batch| store::Committed {
            id: batch.id,
            result: backend.apply(&batch.changes),
        };
        let a = register("alice", "c1", 1, &["Contact: <sip:a@192.0.2.1>"]);
        let out = reg.stage_register(T0, &a, src(), Transport::Udp);
        assert!(out.awaits_commit);
        let batch = reg.begin_commit().unwrap();
        assert!(reg.commit_in_flight() && reg.begin_commit().is_none());
        // Staged while the first batch is out: sees it, waits for the next.
        let b = register("alice", "c1", 2, &["Contact: <sip:a@192.0.2.2>"]);
        let out_b = reg.stage_register(T0, &b, src(), Transport::Udp);
        assert_eq!(
            bound(&Message::parse(out_b.response.clone().unwrap()).unwrap()).len(),
            2
        );
        assert!(reader.is_empty(), "nothing shows before it is stored");
        reg.end_commit(store(batch)).unwrap();
        assert_eq!(reader.lookup(AOR, T0).len(), 1);

        // The second batch fails: its 200 becomes a 500, and what was staged after it
        // goes with it.
        let batch = reg.begin_commit().unwrap();
        let c = register("bob", "c2", 1, &["Contact: <sip:b@192.0.2.3>"]);
        let out_c = reg.stage_register(T0, &c, src(), Transport::Udp);
        assert!(out_c.awaits_commit);
        fail.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reg.end_commit(store(batch)).is_err());
        assert_eq!(reg.failed_commit(&b, out_b).status, 500);
        assert_eq!(reg.failed_commit(&c, out_c).status, 500);
        assert!(!reg.has_staged() && !reg.commit_in_flight());
        assert_eq!(reader.lookup(AOR, T0).len(), 1);
        assert_eq!(reg.stats().store_errors, 1);
        assert_eq!(reg.stats().accepted, 1);
        assert!(matches!(reg.commit(), Err(StoreError::Detached)));
    }

    #[test]
    fn bindings_survive_a_restart_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        let open = || {
            let loc = store::SqliteLocationStore::open(&path, store::Durability::Process).unwrap();
            let users = store::SqliteUserStore::open(&path).unwrap();
            let settings = RegistrarSettings {
                domain: DOMAIN.into(),
                ..RegistrarSettings::default()
            };
            Registrar::new(settings, loc, users, KEY, T0).unwrap()
        };
        let mut reg = open();
        let mut users = store::SqliteUserStore::open(&path).unwrap();
        users
            .add(&User::new("alice", DOMAIN, "alice-pw", T0).unwrap())
            .unwrap();
        let c = "Contact: <sip:a@192.0.2.1>";
        let out = reg.handle_register(T0, &register("alice", "c1", 1, &[c]), src(), Transport::Udp);
        let ch = challenges(&Message::parse(out.response.unwrap()).unwrap());
        let req = register(
            "alice",
            "c1",
            2,
            &[c, &answer(&ch[0], "alice", "alice-pw", 1)],
        );
        assert_eq!(
            reg.handle_register(T0, &req, src(), Transport::Udp).status,
            200
        );
        drop(reg);
        let reg = open();
        let b = reg.reader().lookup(AOR, T0 + 1);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].cseq, b[0].expires_at), (2, T0 + 3600));
    }

    #[test]
    fn the_registrar_can_move_to_its_own_thread() {
        fn send<T: Send + 'static>() {}
        send::<Registrar<Box<dyn LocationStore>, Box<dyn UserStore>>>();
        send::<Registrar<store::SqliteLocationStore, store::SqliteUserStore>>();
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_289_690_940), "Sat, 13 Nov 2010 23:29:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
