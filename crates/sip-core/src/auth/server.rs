//! The server side: [`Verifier`] checks credentials against a stored HA1 and the nonce
//! state and gives a [`Verdict`].

use super::*;
use std::borrow::Cow;

/// The outcome of [`Verifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated.
    Ok,
    /// The response was right but the nonce is expired (or no longer tracked): challenge
    /// again with `stale=true`, and the client retries without asking its user.
    Stale,
    /// Wrong password, wrong HA1, or a nonce we never issued: challenge again with
    /// `stale=false`.
    BadResponse,
    /// A nonce count already used with this nonce: the request is a replay.
    Replay,
    /// The credentials cannot be checked (unsupported algorithm, qop without nc, ...).
    Malformed(String),
}

/// A server-side Digest verifier: a [`NonceIssuer`], a [`NonceCounter`] and the policy.
///
/// It never sees passwords: the caller looks up the stored HA1 for (username, realm,
/// algorithm) from the credentials and passes it in.
#[derive(Debug)]
pub struct Verifier {
    issuer: NonceIssuer,
    counter: NonceCounter,
    allow_missing_qop: bool,
}

impl Verifier {
    /// A verifier remembering nonce counts for at most `counter_capacity` nonces, each for the
    /// issuer's lifetime.
    pub fn new(issuer: NonceIssuer, counter_capacity: usize) -> Verifier {
        let counter = NonceCounter::new(counter_capacity, issuer.lifetime_secs());
        Verifier {
            issuer,
            counter,
            allow_missing_qop: false,
        }
    }

    /// Accept RFC 2069-style credentials without qop (and so without replay protection within
    /// the nonce lifetime). Off by default, since our challenges always offer qop=auth.
    pub fn allow_missing_qop(mut self, allow: bool) -> Verifier {
        self.allow_missing_qop = allow;
        self
    }

    /// The nonce issuer.
    pub fn issuer(&self) -> &NonceIssuer {
        &self.issuer
    }

    /// The replay counter.
    pub fn counter(&self) -> &NonceCounter {
        &self.counter
    }

    /// The challenges to send in a 401/407: one per [`Algorithm::OFFERED`], in that order
    /// (SHA-256 then MD5), with a fresh nonce (RFC 8760).
    pub fn challenges(
        &self,
        realm: &str,
        opaque: Option<&str>,
        stale: bool,
        now_secs: u64,
    ) -> [Challenge<'static>; 2] {
        let nonce = self.issuer.issue(now_secs);
        Challenge::digest_pair(
            realm.to_owned(),
            nonce,
            opaque.map(|o| Cow::Owned(o.to_owned())),
            stale,
        )
    }

    /// Checks Digest credentials for a request with this `method` and `body` (hashed only
    /// for qop=auth-int), given the stored HA1 = H(username:realm:password) for the
    /// credentials' user, realm and base algorithm.
    ///
    /// Whether `uri` matches the Request-URI and `realm` is one this server serves is for the
    /// caller, which knows both.
    pub fn verify(
        &mut self,
        creds: &DigestCredentials<'_>,
        stored_ha1: &str,
        method: &str,
        body: &[u8],
        now_secs: u64,
    ) -> Verdict {
        let Some(alg) = creds.algorithm() else {
            return Verdict::Malformed(format!(
                "algorithm \"{}\" is not supported",
                creds.algorithm.as_ref().map_or("", AlgorithmParam::as_str)
            ));
        };
        let qop = match (&creds.qop, creds.nc, creds.cnonce.as_deref()) {
            (None, _, _) if alg.is_session() => {
                return Verdict::Malformed(format!("{alg} without qop has no cnonce"));
            }
            (None, _, _) if !self.allow_missing_qop => {
                return Verdict::Malformed("missing qop".into());
            }
            (None, _, _) => None,
            (Some(Qop::Other(q)), _, _) => {
                return Verdict::Malformed(format!("qop \"{q}\" is not supported"));
            }
            (Some(_), None, _) => return Verdict::Malformed("qop without nc".into()),
            (Some(_), _, None) => return Verdict::Malformed("qop without cnonce".into()),
            (Some(q), Some(nc), Some(cnonce)) => Some(QopParams {
                qop: q.clone(),
                nc,
                cnonce,
            }),
        };
        let expected = response(
            alg,
            stored_ha1,
            &creds.nonce,
            qop.as_ref(),
            method,
            &creds.uri,
            body,
        );
        if !response_matches(&expected, &creds.response) {
            return Verdict::BadResponse;
        }
        // The digest is right for the nonce the client used, so it knows the password; a
        // nonce we cannot vouch for (issued before a restart under another key, by another
        // node, or expired) is then `stale` (RFC 7616 §3.3), never a failure that could
        // lock out a phone that simply reused its last nonce.
        let Some((issued, id)) = self.issuer.identify(&creds.nonce) else {
            return Verdict::Stale;
        };
        match self.issuer.status_of(issued, now_secs) {
            NonceStatus::Valid => {}
            NonceStatus::Stale | NonceStatus::Invalid => return Verdict::Stale,
        }
        // Counts are checked only now, after the response proved the sender knows the
        // password: otherwise anyone could burn a client's counts.
        match qop {
            None => Verdict::Ok,
            Some(q) => match self.counter.check(id, issued, q.nc) {
                NcCheck::Fresh => Verdict::Ok,
                NcCheck::Replay => Verdict::Replay,
                NcCheck::Forgotten => Verdict::Stale,
            },
        }
    }

    /// Forgets the nonce counts of expired nonces.
    pub fn sweep(&mut self, now_secs: u64) {
        self.counter.sweep(now_secs);
    }
}
