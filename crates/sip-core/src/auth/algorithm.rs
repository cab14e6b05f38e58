//! Digest algorithms and computations: MD5, SHA-256, SHA-512/256 and their `-sess`
//! variants (RFC 7616 §3.2, RFC 8760), qop values, HA1, userhash and the `response` value.

use super::*;
use std::borrow::Cow;
use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use subtle::ConstantTimeEq;

/// A digest algorithm of RFC 7616 §3.2 / RFC 8760 §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the RFC 3261 default (and the meaning of an absent `algorithm`).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256` (SHA-512/256 of FIPS 180-4).
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
}

impl Algorithm {
    /// All algorithms, strongest first.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Sha512_256,
        Algorithm::Sha512_256Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Md5,
        Algorithm::Md5Sess,
    ];

    /// The name used in the `algorithm` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Parses an `algorithm` value, case-insensitively; `None` for unknown names.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    /// The algorithms [`Verifier::challenges`] offers, in its order: SHA-256 then MD5
    /// (RFC 8760). A server configures which of these it sends, and in what order.
    pub const OFFERED: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

    /// Reads a configured name of an offered algorithm (`SHA-256` or `MD5`, any case);
    /// `None` for a name that is unknown or not in [`Algorithm::OFFERED`].
    pub fn offered_from_name(name: &str) -> Option<Algorithm> {
        Algorithm::from_name(name).filter(|a| Algorithm::OFFERED.contains(a))
    }

    /// Whether this is a `-sess` variant, whose HA1 also covers the nonce and cnonce.
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// The variant without `-sess`: the one whose HA1 a server stores.
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => Algorithm::Sha512_256,
        }
    }

    /// Preference when a client picks among challenges: higher is stronger.
    pub(super) fn strength(self) -> u8 {
        match self.base() {
            Algorithm::Sha512_256 => 3,
            Algorithm::Sha256 => 2,
            _ => 1,
        }
    }

    /// H(parts joined by ':') in lowercase hex.
    pub(super) fn hash_hex(self, parts: &[&[u8]]) -> String {
        match self.base() {
            Algorithm::Sha256 => hash_parts::<Sha256>(parts),
            Algorithm::Sha512_256 => hash_parts::<Sha512_256>(parts),
            _ => hash_parts::<Md5>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_name(s).ok_or_else(|| AuthError::UnsupportedAlgorithm { name: s.into() })
    }
}

pub(super) fn hash_parts<D: Digest>(parts: &[&[u8]]) -> String {
    let mut h = D::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    to_hex(&h.finalize())
}

pub(super) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// The value of an `algorithm` parameter: one this module computes, or another kept as sent
/// (e.g. `AKAv1-MD5`), so that a challenge we cannot answer still parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlgorithmParam<'a> {
    /// A supported algorithm.
    Known(Algorithm),
    /// Any other name.
    Other(Cow<'a, str>),
}

impl<'a> AlgorithmParam<'a> {
    pub(super) fn parse(value: Cow<'a, str>) -> Self {
        match Algorithm::from_name(&value) {
            Some(a) => AlgorithmParam::Known(a),
            None => AlgorithmParam::Other(value),
        }
    }

    /// The name as written in a header.
    pub fn as_str(&self) -> &str {
        match self {
            AlgorithmParam::Known(a) => a.as_str(),
            AlgorithmParam::Other(s) => s,
        }
    }

    /// Copies borrowed text so the value outlives the input.
    pub fn into_owned(self) -> AlgorithmParam<'static> {
        match self {
            AlgorithmParam::Known(a) => AlgorithmParam::Known(a),
            AlgorithmParam::Other(s) => AlgorithmParam::Other(own(s)),
        }
    }
}

/// The algorithm an optional `algorithm` parameter means: absent is MD5 (RFC 3261 §22.4),
/// unknown is `None`.
pub(super) fn effective_algorithm(p: Option<&AlgorithmParam<'_>>) -> Option<Algorithm> {
    match p {
        None => Some(Algorithm::Md5),
        Some(AlgorithmParam::Known(a)) => Some(*a),
        Some(AlgorithmParam::Other(_)) => None,
    }
}

/// A quality-of-protection value (RFC 3261 §25.1 `qop-value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qop<'a> {
    /// `auth`: authentication only.
    Auth,
    /// `auth-int`: authentication with integrity protection of the body.
    AuthInt,
    /// An extension token, kept as sent.
    Other(Cow<'a, str>),
}

impl<'a> Qop<'a> {
    pub(super) fn parse(value: Cow<'a, str>) -> Self {
        if value.eq_ignore_ascii_case("auth") {
            Qop::Auth
        } else if value.eq_ignore_ascii_case("auth-int") {
            Qop::AuthInt
        } else {
            Qop::Other(value)
        }
    }

    /// The value as written in a header.
    pub fn as_str(&self) -> &str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
            Qop::Other(s) => s,
        }
    }

    /// Copies borrowed text so the value outlives the input.
    pub fn into_owned(self) -> Qop<'static> {
        match self {
            Qop::Auth => Qop::Auth,
            Qop::AuthInt => Qop::AuthInt,
            Qop::Other(s) => Qop::Other(own(s)),
        }
    }
}

/// The values a response covers when a qop is in use (RFC 7616 §3.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QopParams<'q> {
    /// The qop chosen by the client.
    pub qop: Qop<'q>,
    /// The nonce count, written as 8 lowercase hex digits in the hash.
    pub nc: u32,
    /// The client nonce.
    pub cnonce: &'q str,
}

/// HA1 = H(username ":" realm ":" password), in lowercase hex: what a server stores per
/// (user, realm, algorithm). For a `-sess` algorithm this is the stored part too; the
/// per-session value is [`ha1_sess`].
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// The session HA1 of a `-sess` algorithm: H(HA1 ":" nonce ":" cnonce), RFC 7616 §3.4.2,
/// with HA1 in hex as RFC 7616 (and every deployed implementation) reads it.
pub fn ha1_sess(alg: Algorithm, ha1_hex: &str, nonce: &str, cnonce: &str) -> String {
    alg.hash_hex(&[ha1_hex.as_bytes(), nonce.as_bytes(), cnonce.as_bytes()])
}

/// The hashed username of RFC 7616 §3.4.4: H(username ":" realm), sent when a challenge says
/// `userhash=true` so the username does not travel in clear.
pub fn userhash(alg: Algorithm, username: &str, realm: &str) -> String {
    alg.hash_hex(&[username.as_bytes(), realm.as_bytes()])
}

/// The `response` value, in lowercase hex (RFC 7616 §3.4.1, RFC 3261 §22.4).
///
/// `ha1_hex` is the stored H(username:realm:password); for a `-sess` algorithm this function
/// derives the session HA1 itself from `nonce` and `qop.cnonce` (with no qop there is no cnonce,
/// and it uses an empty one, which no peer accepts: refuse that combination before).
/// `qop` is `None` for the RFC 2069 form, H(HA1:nonce:HA2). `body` is hashed only for
/// `auth-int`.
pub fn response(
    alg: Algorithm,
    ha1_hex: &str,
    nonce: &str,
    qop: Option<&QopParams<'_>>,
    method: &str,
    digest_uri: &str,
    body: &[u8],
) -> String {
    let cnonce = qop.map_or("", |q| q.cnonce);
    let session;
    let ha1 = if alg.is_session() {
        session = ha1_sess(alg, ha1_hex, nonce, cnonce);
        session.as_str()
    } else {
        ha1_hex
    };
    let ha2 = match qop {
        Some(QopParams {
            qop: Qop::AuthInt, ..
        }) => {
            let body_hash = alg.hash_hex(&[body]);
            alg.hash_hex(&[
                method.as_bytes(),
                digest_uri.as_bytes(),
                body_hash.as_bytes(),
            ])
        }
        _ => alg.hash_hex(&[method.as_bytes(), digest_uri.as_bytes()]),
    };
    match qop {
        None => alg.hash_hex(&[ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
        Some(q) => {
            let nc = format!("{:08x}", q.nc);
            alg.hash_hex(&[
                ha1.as_bytes(),
                nonce.as_bytes(),
                nc.as_bytes(),
                q.cnonce.as_bytes(),
                q.qop.as_str().as_bytes(),
                ha2.as_bytes(),
            ])
        }
    }
}

/// Compares a received response with the expected one in constant time, so that timing does
/// not reveal how many leading characters matched. Hex case is ignored (RFC 3261 says LHEX,
/// some clients send uppercase).
pub(super) fn response_matches(expected_hex: &str, received: &str) -> bool {
    let received = received.to_ascii_lowercase();
    expected_hex.as_bytes().ct_eq(received.as_bytes()).into()
}
