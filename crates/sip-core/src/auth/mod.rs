//! HTTP Digest authentication for SIP: RFC 3261 §22, RFC 7616 and RFC 8760.
//!
//! Everything a registrar, a proxy or a user agent needs to challenge a request and to answer
//! a challenge, with no I/O and no clock (every `now` is passed in, in seconds):
//!
//! - the four header values, parsed from `&str` and written back with `Display`:
//!   [`Challenge`] (WWW-Authenticate / Proxy-Authenticate) and [`Credentials`]
//!   (Authorization / Proxy-Authorization);
//! - the digest computations for MD5, SHA-256 and SHA-512/256 and their `-sess` variants:
//!   [`ha1`], [`ha1_sess`], [`userhash`], [`response`];
//! - the server side: [`NonceIssuer`] mints stateless, authenticated, time-stamped nonces,
//!   [`NonceCounter`] refuses replayed nonce counts in bounded memory, and [`Verifier`]
//!   ties them together into a [`Verdict`];
//! - the client side: [`pick_best`] chooses among offered challenges and [`answer_challenge`]
//!   computes the credentials to send.
//!
//! Passwords never reach the server side of this module: a server stores HA1 =
//! H(username ":" realm ":" password) per (user, realm, algorithm) and hands it to
//! [`Verifier::verify`].

mod algorithm;
mod client;
mod header;
mod nonce;
mod parse;
mod server;
mod write;

pub use algorithm::*;
pub use client::*;
pub use header::*;
pub use nonce::*;
use parse::*;
pub use server::*;

/// Why a header value could not be parsed, or a challenge could not be answered.
///
/// Byte offsets count from the start of the string given to the parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The value is empty or does not start with a token.
    #[error("missing auth scheme at byte {at}")]
    MissingScheme {
        /// Where the scheme was expected.
        at: usize,
    },
    /// The grammar wanted something else here.
    #[error("expected {expected} at byte {at}")]
    Expected {
        /// What was wanted, e.g. `'='`.
        expected: &'static str,
        /// Where.
        at: usize,
    },
    /// A quoted string has no closing quote.
    #[error("unterminated quoted string at byte {at}")]
    UnterminatedQuote {
        /// Where the opening quote is.
        at: usize,
    },
    /// A CR or LF inside a quoted string that is not line folding.
    #[error("invalid character {ch:?} in quoted string at byte {at}")]
    BadQuotedChar {
        /// The character.
        ch: char,
        /// Where it is.
        at: usize,
    },
    /// A parameter the grammar requires is absent.
    #[error("missing {param} in Digest {what}")]
    Missing {
        /// The parameter, e.g. `nonce`.
        param: &'static str,
        /// `challenge` or `credentials`.
        what: &'static str,
    },
    /// A parameter appears twice; refused because two values make the meaning ambiguous.
    #[error("duplicate {param} in Digest {what}")]
    Duplicate {
        /// The parameter.
        param: &'static str,
        /// `challenge` or `credentials`.
        what: &'static str,
    },
    /// The `nc` parameter is not 8 hex digits.
    #[error("nc \"{value}\" is not 8 hex digits")]
    BadNc {
        /// The value received.
        value: String,
    },
    /// The challenge asks for an algorithm this module cannot compute (e.g. AKAv1-MD5).
    #[error("algorithm \"{name}\" is not supported")]
    UnsupportedAlgorithm {
        /// The algorithm's name as received.
        name: String,
    },
    /// The challenge offers qop values but not `auth`, the only one a client answers here.
    #[error("challenge offers qop \"{offered}\" but only qop=auth is supported")]
    UnsupportedQop {
        /// The offered values, comma separated.
        offered: String,
    },
    /// A `-sess` algorithm needs a cnonce, which only exists when the challenge offers a qop.
    #[error("{algorithm} needs a qop in the challenge, for a cnonce")]
    SessionWithoutQop {
        /// The algorithm.
        algorithm: Algorithm,
    },
    /// Only Digest challenges can be answered here.
    #[error("cannot answer a {scheme} challenge, only Digest")]
    NotDigest {
        /// The challenge's scheme.
        scheme: String,
    },
    /// The nonce key is too short to resist guessing.
    #[error("nonce key is {len} bytes; use at least {MIN_KEY_LEN} random bytes")]
    WeakKey {
        /// The length given.
        len: usize,
    },
}

#[cfg(test)]
mod tests;
