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

mod outbound;
mod reply;
mod steps;
#[cfg(test)]
mod tests;

use outbound::*;
pub use reply::http_date;
use reply::*;

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

    /// Users were changed elsewhere (the admin API): the next request sees the change.
    pub fn users_changed(&mut self, now: u64) {
        if let Err(e) = self.users.recheck(now) {
            tracing::warn!("reading the changed users failed: {e}");
        }
    }

    /// Stages changes decided elsewhere (an administrator removing a registration):
    /// they are stored with the next batch, as a REGISTER's are.
    pub fn stage_changes(&mut self, changes: Vec<store::Change>) {
        self.location.stage(changes);
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
}
