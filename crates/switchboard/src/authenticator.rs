//! Digest authentication (RFC 3261 §22, RFC 8760), the one implementation behind the
//! registrar's 401 and the proxy's 407: credentials for our realm, verification against
//! the user's HA1 (`sip_core::auth`: [`Verifier`], nonces that expire, nonce-count replay
//! checks), `stale` challenges, and the count of failures per source that leads to a ban.
//!
//! [`Authenticator::check`] reads the credentials for our realm from a request's
//! Proxy-Authorization (or Authorization) headers and answers who they prove, or why
//! not; [`Authenticator::challenges`] gives the header values of a fresh challenge, in
//! the configured algorithm order.
//!
//! `serve` has one of these, owned by the registrar and lent to the proxy, so that
//! failures of every method and of both challenge kinds count towards one ban. Each
//! failure and each ban is logged at warn level with the source and the user name, at
//! most one line per source every [`LOG_INTERVAL_SECS`] (with the count of lines left
//! out), so that a brute-force attempt shows without flooding the log.

use crate::myself::Myself;
use crate::registrar::{DigestAlgorithm, digest_uri_matches};
use sip_core::auth::{Algorithm, Credentials, NonceIssuer, Verdict, Verifier, ha1};
use sip_core::{HeaderName, Message};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use store::{StoreError, User, UserStore};

/// Nonces remembered for replay checks; beyond it the oldest are answered `stale`.
const NONCE_COUNTER_CAPACITY: usize = 100_000;
/// Sources tracked for failed authentication; beyond it new sources are not tracked
/// (failing open rather than letting an address sweep exhaust memory).
const MAX_TRACKED_SOURCES: usize = 100_000;
/// At most one failure line per source in this many seconds.
pub const LOG_INTERVAL_SECS: u64 = 10;

/// The result of [`Authenticator::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthCheck {
    /// The credentials prove this user name.
    User(String),
    /// No usable credentials, or wrong ones: challenge (with `stale=true` when only the
    /// nonce had expired).
    Challenge {
        /// Send `stale=true`.
        stale: bool,
    },
    /// Credentials that cannot be checked: refuse with this status and reason.
    Refuse(u16, String),
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Credentials that failed: unknown user, wrong password, replayed nonce count.
    pub failures: u64,
    /// Sources banned.
    pub bans: u64,
}

/// A digest verifier for one realm, with its table of failing sources.
pub struct Authenticator {
    realm: String,
    algorithms: Vec<DigestAlgorithm>,
    verifier: Verifier,
    bans: BanTable,
    stats: AuthStats,
    /// Keys the stand-in HA1 of unknown users.
    secret: u64,
    /// Whom a digest `uri` may name besides the Request-URI (RFC 2617 §3.2.2.5 wants
    /// the Request-URI; SIPp signs the server's address while it sends to the domain).
    myself: Option<Myself>,
    /// When each source's failures were last logged, and how many were not since.
    failure_log: HashMap<IpAddr, (u64, u32)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.realm)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for `realm` offering `algorithms` (configured names; unknown
    /// ones are skipped, config.rs refuses them anyway), with nonces keyed by
    /// `nonce_key` (at least 16 bytes) living `nonce_lifetime_secs`. It bans no one
    /// until [`Authenticator::with_bans`].
    pub fn new(
        realm: &str,
        algorithms: &[String],
        nonce_key: &[u8],
        nonce_lifetime_secs: u64,
    ) -> Result<Authenticator, sip_core::auth::AuthError> {
        let mut h = DefaultHasher::new();
        nonce_key.hash(&mut h);
        realm.hash(&mut h);
        let secret = h.finish();
        let issuer = NonceIssuer::new(nonce_key, nonce_lifetime_secs)?.with_seed(secret);
        Ok(Authenticator {
            realm: realm.to_owned(),
            algorithms: algorithms
                .iter()
                .filter_map(|a| DigestAlgorithm::from_name(a))
                .collect(),
            verifier: Verifier::new(issuer, NONCE_COUNTER_CAPACITY),
            bans: BanTable::new(0, 0, 0),
            stats: AuthStats::default(),
            secret,
            myself: None,
            failure_log: HashMap::new(),
        })
    }

    /// Bans a source (an IPv4 address, an IPv6 /64) for `ban_secs` once it has failed
    /// `max_failures` times within `window_secs` (0 failures: never).
    pub fn with_bans(mut self, max_failures: u32, window_secs: u64, ban_secs: u64) -> Self {
        self.bans = BanTable::new(max_failures, window_secs, ban_secs);
        self
    }

    /// Accepts a digest `uri` naming this server (its address, the domain) as well as
    /// one equal to the Request-URI.
    pub fn with_myself(mut self, myself: Myself) -> Self {
        self.myself = Some(myself);
        self
    }

    /// The counters.
    pub fn stats(&self) -> AuthStats {
        self.stats
    }

    /// Whether `ip` is banned at `now`: the I/O shell may drop all its traffic early.
    pub fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        self.bans.is_banned(ip, now)
    }

    /// Checks the credentials for our realm in `header` (Proxy-Authorization for a
    /// proxy) of `req` from `source` at `now` (Unix seconds), reading the user from
    /// `users`; a store failure is a 500. See [`Authenticator::check_from`].
    pub fn check(
        &mut self,
        now: u64,
        req: &Message,
        header: HeaderName,
        source: IpAddr,
        users: &dyn UserStore,
    ) -> AuthCheck {
        match self.check_from(now, req, header, Some(source), |name| users.get(name)) {
            Ok(check) => check,
            Err(e) => {
                tracing::error!(error = %e, "authentication: user store failed");
                AuthCheck::Refuse(500, "Server Internal Error (storage unavailable)".into())
            }
        }
    }

    /// Checks the credentials for our realm in `header` of `req`, sent from `source`
    /// (whose failures count towards a ban), at `now` (Unix seconds), with `lookup`
    /// finding a user by name. An unknown user is checked against a stand-in hash, so
    /// the work done and the answer given are those of a wrong password: names cannot
    /// be probed.
    pub fn check_from<B: Borrow<User>>(
        &mut self,
        now: u64,
        req: &Message,
        header: HeaderName,
        source: Option<IpAddr>,
        lookup: impl FnOnce(&str) -> Result<Option<B>, StoreError>,
    ) -> Result<AuthCheck, StoreError> {
        // Credentials for other realms (other proxies on the way) are not ours to check.
        let creds = req
            .get_all(header)
            .filter_map(|v| Credentials::parse(v).ok())
            .find_map(|c| match c {
                Credentials::Digest(d) if d.realm == self.realm => Some(d),
                _ => None,
            });
        let Some(creds) = creds else {
            return Ok(AuthCheck::Challenge { stale: false });
        };
        let user = lookup(&creds.username)?;
        let alg = creds.algorithm().unwrap_or(Algorithm::Md5);
        let stand_in;
        let (stored, known) = match user.as_ref().map(Borrow::borrow) {
            Some(u) if u.realm == self.realm && !creds.userhash => (u.ha1.get(alg), true),
            _ => {
                stand_in = ha1(
                    alg,
                    &creds.username,
                    &self.realm,
                    &format!("{:x}", self.secret),
                );
                (stand_in.as_str(), false)
            }
        };
        let method = req.method().map_or("", |m| m.as_str());
        let verdict = self
            .verifier
            .verify(&creds, stored, method, req.body(), now);
        Ok(match verdict {
            Verdict::Ok if known => {
                // RFC 2617 §3.2.2.5: the digest-uri must be the Request-URI. Clients
                // such as SIPp sign the URI with the port they sent to, so scheme, user
                // and host must match and the port may differ; SIPp's [authentication]
                // signs the server's address while the Request-URI names the domain,
                // so a uri that names us is good too. One naming somebody else is not.
                if digest_uri_matches(creds.uri.as_ref(), req.request_uri_str())
                    || self.names_us(creds.uri.as_ref())
                {
                    AuthCheck::User(creds.username.into_owned())
                } else {
                    AuthCheck::Refuse(
                        400,
                        "Bad Request (Authorization uri is not the Request-URI)".into(),
                    )
                }
            }
            Verdict::Stale => AuthCheck::Challenge { stale: true },
            Verdict::Malformed(why) => {
                AuthCheck::Refuse(400, format!("Bad Request (Authorization: {why})"))
            }
            Verdict::Ok | Verdict::BadResponse | Verdict::Replay => {
                self.stats.failures += 1;
                if let Some(ip) = source {
                    self.log_failure(ip, &creds.username, method, now);
                    if self.bans.record_failure(ip, now) {
                        self.stats.bans += 1;
                        tracing::warn!(
                            source = %ip,
                            user = %creds.username,
                            failures = self.bans.max_failures,
                            window_secs = self.bans.window_secs,
                            ban_secs = self.bans.ban_secs,
                            "banning source after repeated authentication failures"
                        );
                    }
                }
                AuthCheck::Challenge { stale: false }
            }
        })
    }

    /// Whether a digest `uri` names this server.
    fn names_us(&self, uri: &str) -> bool {
        let Some(myself) = &self.myself else {
            return false;
        };
        sip_core::Uri::parse(uri)
            .ok()
            .and_then(|u| u.as_sip().map(|s| myself.names_us(s)))
            .unwrap_or(false)
    }

    /// Logs a failed authentication at warn level, rate-limited per source.
    fn log_failure(&mut self, ip: IpAddr, user: &str, method: &str, now: u64) {
        let key = ban_key(ip);
        if !self.failure_log.contains_key(&key) && self.failure_log.len() >= MAX_TRACKED_SOURCES {
            self.failure_log
                .retain(|_, (at, _)| now.saturating_sub(*at) < LOG_INTERVAL_SECS);
            if self.failure_log.len() >= MAX_TRACKED_SOURCES {
                return;
            }
        }
        let entry = self.failure_log.entry(key).or_insert((0, 0));
        if entry.0 != 0 && now.saturating_sub(entry.0) < LOG_INTERVAL_SECS {
            entry.1 = entry.1.saturating_add(1);
            return;
        }
        let suppressed = std::mem::take(&mut entry.1);
        entry.0 = now;
        tracing::warn!(
            source = %ip,
            user,
            method,
            suppressed,
            "authentication failed"
        );
    }

    /// The values of the challenge headers (WWW- or Proxy-Authenticate) to send, one
    /// per configured algorithm, sharing one fresh nonce. They come in the configured
    /// order: clients that only read the first challenge (SIPp 3.6, older phones) need
    /// MD5 first or alone.
    pub fn challenges(&self, now: u64, stale: bool) -> Vec<String> {
        let [sha256, md5] = self.verifier.challenges(&self.realm, None, stale, now);
        self.algorithms
            .iter()
            .map(|a| match a {
                DigestAlgorithm::Sha256 => sha256.to_string(),
                DigestAlgorithm::Md5 => md5.to_string(),
            })
            .collect()
    }

    /// Forgets expired nonces and lifts ended bans.
    pub fn sweep(&mut self, now: u64) {
        self.verifier.sweep(now);
        self.bans.sweep(now);
        self.failure_log
            .retain(|_, (at, _)| now.saturating_sub(*at) < LOG_INTERVAL_SECS);
    }
}

/// Failed authentications per source, and the bans they lead to.
///
/// IPv6 sources are counted per /64, the block one subscriber usually gets: counting
/// single addresses would let one host rotate through 2^64 of them.
#[derive(Debug)]
struct BanTable {
    max_failures: u32,
    window_secs: u64,
    ban_secs: u64,
    sources: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    window_start: u64,
    count: u32,
    banned_until: Option<u64>,
}

fn ban_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(s))
        }
    }
}

impl BanTable {
    fn new(max_failures: u32, window_secs: u64, ban_secs: u64) -> BanTable {
        BanTable {
            max_failures,
            window_secs,
            ban_secs,
            sources: HashMap::new(),
        }
    }

    fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        self.sources
            .get(&ban_key(ip))
            .and_then(|f| f.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a failure; true when it starts a ban.
    fn record_failure(&mut self, ip: IpAddr, now: u64) -> bool {
        if self.max_failures == 0 {
            return false;
        }
        let key = ban_key(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_TRACKED_SOURCES {
            self.sweep(now);
            if self.sources.len() >= MAX_TRACKED_SOURCES {
                return false;
            }
        }
        let f = self.sources.entry(key).or_insert(Failures {
            window_start: now,
            count: 0,
            banned_until: None,
        });
        if f.banned_until.is_some_and(|until| now >= until)
            || now.saturating_sub(f.window_start) >= self.window_secs
        {
            // The ban is over or the window has passed: start counting afresh.
            *f = Failures {
                window_start: now,
                count: 0,
                banned_until: None,
            };
        }
        f.count = f.count.saturating_add(1);
        if f.count >= self.max_failures && f.banned_until.is_none() {
            f.banned_until = Some(now + self.ban_secs);
            return true;
        }
        false
    }

    fn sweep(&mut self, now: u64) {
        let window = self.window_secs;
        self.sources.retain(|_, f| match f.banned_until {
            Some(until) => now < until,
            None => now.saturating_sub(f.window_start) < window,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_sources_are_banned_per_64() {
        let mut bans = BanTable::new(2, 60, 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(!bans.record_failure(a, 0));
        assert!(bans.record_failure(b, 1));
        assert!(bans.is_banned(a, 50) && !bans.is_banned(c, 50));
        // Failures spread beyond the window do not add up.
        assert!(!bans.record_failure(c, 0));
        assert!(!bans.record_failure(c, 60));
        assert!(
            !BanTable::new(0, 60, 100).record_failure(a, 0),
            "0 disables bans"
        );
    }
}
