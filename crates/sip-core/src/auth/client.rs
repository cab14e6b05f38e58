//! The client side: choosing among offered challenges ([`pick_best`]) and computing the
//! credentials that answer one ([`answer_challenge`]).

use super::*;
use std::borrow::Cow;

/// Whether this module can answer a Digest challenge, and with which algorithm.
pub(super) fn answerable(d: &DigestChallenge<'_>) -> Option<Algorithm> {
    let alg = d.algorithm()?;
    let offers_auth = d.qop.contains(&Qop::Auth);
    if d.qop.is_empty() {
        // RFC 2069 mode has no cnonce, which -sess needs.
        (!alg.is_session()).then_some(alg)
    } else {
        offers_auth.then_some(alg)
    }
}

/// The challenge a client should answer among those of a 401/407: the strongest supported
/// Digest algorithm (SHA-512-256 > SHA-256 > MD5), the server's order breaking ties.
pub fn pick_best<'c, 'a>(challenges: &'c [Challenge<'a>]) -> Option<&'c Challenge<'a>> {
    let mut best: Option<(&'c Challenge<'a>, u8)> = None;
    for c in challenges {
        let Some(alg) = c.as_digest().and_then(answerable) else {
            continue;
        };
        if best.is_none_or(|(_, s)| alg.strength() > s) {
            best = Some((c, alg.strength()));
        }
    }
    best.map(|(c, _)| c)
}

/// The credentials answering `challenge` for a request with this `method` and request-URI.
///
/// Uses qop=auth when offered (and the RFC 2069 form when no qop is offered), hashes the
/// username when the challenge says `userhash=true`, and echoes the algorithm and opaque.
/// `cnonce` should be unpredictable (RFC 7616 §5.12); `nc` counts the requests made with this
/// nonce, from 1.
pub fn answer_challenge(
    challenge: &Challenge<'_>,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<Credentials<'static>, AuthError> {
    let d = match challenge {
        Challenge::Digest(d) => d,
        Challenge::Other(o) => {
            return Err(AuthError::NotDigest {
                scheme: o.scheme.to_string(),
            });
        }
    };
    let alg = d
        .algorithm()
        .ok_or_else(|| AuthError::UnsupportedAlgorithm {
            name: d
                .algorithm
                .as_ref()
                .map_or("", AlgorithmParam::as_str)
                .to_owned(),
        })?;
    let qop = if d.qop.is_empty() {
        if alg.is_session() {
            return Err(AuthError::SessionWithoutQop { algorithm: alg });
        }
        None
    } else if d.qop.contains(&Qop::Auth) {
        Some(QopParams {
            qop: Qop::Auth,
            nc,
            cnonce,
        })
    } else {
        let offered: Vec<&str> = d.qop.iter().map(Qop::as_str).collect();
        return Err(AuthError::UnsupportedQop {
            offered: offered.join(","),
        });
    };
    let h1 = ha1(alg, username, &d.realm, password);
    let resp = response(alg, &h1, &d.nonce, qop.as_ref(), method, uri, b"");
    let username = if d.userhash {
        userhash(alg, username, &d.realm)
    } else {
        username.to_owned()
    };
    Ok(Credentials::Digest(DigestCredentials {
        username: Cow::Owned(username),
        realm: own(d.realm.clone()),
        nonce: own(d.nonce.clone()),
        uri: Cow::Owned(uri.to_owned()),
        response: Cow::Owned(resp),
        algorithm: d.algorithm.clone().map(AlgorithmParam::into_owned),
        cnonce: qop.as_ref().map(|q| Cow::Owned(q.cnonce.to_owned())),
        opaque: d.opaque.clone().map(own),
        qop: qop.as_ref().map(|q| q.qop.clone().into_owned()),
        nc: qop.as_ref().map(|q| q.nc),
        userhash: d.userhash,
        other: Vec::new(),
    }))
}
