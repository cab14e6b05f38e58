//! Digest authentication of requests other than REGISTER: the proxy's 407 challenge
//! (RFC 3261 §22.3), on the same machinery as the registrar's 401 (`sip_core::auth`:
//! [`Verifier`], nonces that expire, replay checks) and the same user store.
//!
//! [`Authenticator::check`] reads the credentials for our realm from a request's
//! Proxy-Authorization (or Authorization) headers and answers who they prove, or why
//! not; [`Authenticator::challenges`] gives the header values of a fresh challenge, in
//! the configured algorithm order.

use crate::registrar::{DigestAlgorithm, digest_uri_matches};
use sip_core::auth::{Algorithm, Credentials, NonceIssuer, Verdict, Verifier, ha1};
use sip_core::{HeaderName, Message};
use std::hash::{DefaultHasher, Hash, Hasher};
use store::UserStore;

/// Nonces remembered for replay checks.
const NONCE_COUNTER_CAPACITY: usize = 100_000;

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

/// A digest verifier for one realm.
pub struct Authenticator {
    realm: String,
    algorithms: Vec<DigestAlgorithm>,
    verifier: Verifier,
    /// Keys the stand-in HA1 of unknown users.
    secret: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for `realm` offering `algorithms` (configured names; unknown
    /// ones are skipped, config.rs refuses them anyway), with nonces keyed by
    /// `nonce_key` (at least 16 bytes) living `nonce_lifetime_secs`.
    pub fn new(
        realm: &str,
        algorithms: &[String],
        nonce_key: &[u8],
        nonce_lifetime_secs: u64,
    ) -> Result<Authenticator, sip_core::auth::AuthError> {
        let mut h = DefaultHasher::new();
        nonce_key.hash(&mut h);
        "proxy".hash(&mut h);
        let secret = h.finish();
        let issuer = NonceIssuer::new(nonce_key, nonce_lifetime_secs)?.with_seed(secret);
        Ok(Authenticator {
            realm: realm.to_owned(),
            algorithms: algorithms
                .iter()
                .filter_map(|a| DigestAlgorithm::from_name(a))
                .collect(),
            verifier: Verifier::new(issuer, NONCE_COUNTER_CAPACITY),
            secret,
        })
    }

    /// Checks the credentials for our realm in `header` (Proxy-Authorization for a
    /// proxy) of `req` at `now` (Unix seconds). An unknown user is checked against a
    /// stand-in hash, so it looks like a wrong password: names cannot be probed.
    pub fn check(
        &mut self,
        now: u64,
        req: &Message,
        header: HeaderName,
        users: &dyn UserStore,
    ) -> AuthCheck {
        let creds = req
            .get_all(header)
            .filter_map(|v| Credentials::parse(v).ok())
            .find_map(|c| match c {
                Credentials::Digest(d) if d.realm == self.realm => Some(d),
                _ => None,
            });
        let Some(creds) = creds else {
            return AuthCheck::Challenge { stale: false };
        };
        let user = match users.get(&creds.username) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "authentication: user store failed");
                return AuthCheck::Refuse(
                    500,
                    "Server Internal Error (storage unavailable)".into(),
                );
            }
        };
        let alg = creds.algorithm().unwrap_or(Algorithm::Md5);
        let stand_in;
        let (stored, known) = match &user {
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
        match self
            .verifier
            .verify(&creds, stored, method, req.body(), now)
        {
            Verdict::Ok if known => {
                if digest_uri_matches(creds.uri.as_ref(), req.request_uri_str()) {
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
                AuthCheck::Challenge { stale: false }
            }
        }
    }

    /// The values of the challenge headers (WWW- or Proxy-Authenticate) to send, one
    /// per configured algorithm, sharing one fresh nonce.
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

    /// Forgets expired nonces.
    pub fn sweep(&mut self, now: u64) {
        self.verifier.sweep(now);
    }
}
