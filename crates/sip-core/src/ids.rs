//! Tags, branches and other identifiers RFC 3261 §19.3 wants globally unique and
//! random ("cryptographically random ... at least 32 bits of randomness"), from one
//! source: [`IdGenerator`], an HMAC-SHA256 of a counter under a random key.
//!
//! Sans-IO: the 128-bit (or longer) key comes from the caller (the OS random source in
//! `serve` and `phone`). Two processes, or two runs of one, get different keys and so
//! different identifiers; one generator never repeats (the counter), and without the
//! key nobody can predict the next value from the ones seen. [`IdGenerator::derive`]
//! gives the identifier of a request statelessly: the same input, the same value
//! (RFC 3261 §8.2.7: a stateless UAS answers a retransmission with the same To tag).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The shortest key [`IdGenerator::new`] accepts: 128 bits.
pub const MIN_KEY_LEN: usize = 16;

/// Hex digits in an identifier: 96 bits of the MAC.
const ID_HEX_LEN: usize = 24;

/// A source of unique, unpredictable identifiers (see the module documentation).
#[derive(Clone)]
pub struct IdGenerator {
    mac: Hmac<Sha256>,
    counter: u64,
}

impl std::fmt::Debug for IdGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("IdGenerator")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// A key shorter than [`MIN_KEY_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an identifier key needs at least {MIN_KEY_LEN} bytes")]
pub struct ShortKey;

impl IdGenerator {
    /// A generator keyed by `key` (at least [`MIN_KEY_LEN`] random bytes).
    pub fn new(key: &[u8]) -> Result<IdGenerator, ShortKey> {
        if key.len() < MIN_KEY_LEN {
            return Err(ShortKey);
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| ShortKey)?;
        Ok(IdGenerator { mac, counter: 0 })
    }

    /// The next identifier: 24 lowercase hex digits (96 bits), never the same twice.
    pub fn next_id(&mut self) -> String {
        self.counter = self.counter.wrapping_add(1);
        let mut mac = self.mac.clone();
        mac.update(b"n");
        mac.update(&self.counter.to_be_bytes());
        hex_prefix(&mac.finalize().into_bytes())
    }

    /// A tag (To or From).
    pub fn tag(&mut self) -> String {
        self.next_id()
    }

    /// A branch for a new client transaction, with the RFC 3261 magic cookie.
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.next_id())
    }

    /// The identifier of `parts` (the fields that identify a request): the same parts,
    /// the same value, for this key only. For answers that keep no state.
    pub fn derive(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"d");
        for p in parts {
            // Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        hex_prefix(&mac.finalize().into_bytes())
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(ID_HEX_LEN);
    for b in bytes.iter().take(ID_HEX_LEN / 2) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_never_repeat_and_depend_on_the_key() {
        let mut a = IdGenerator::new(&[1u8; 16]).unwrap();
        let mut b = IdGenerator::new(&[2u8; 16]).unwrap();
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let id = a.tag();
            assert_eq!(id.len(), 24);
            assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
            assert!(seen.insert(id), "a tag repeated");
        }
        // Another key (another process, another run): other values from the start.
        let mut a2 = IdGenerator::new(&[1u8; 16]).unwrap();
        let first_a = a2.tag();
        assert_ne!(first_a, b.tag());
        assert!(b.branch().starts_with("z9hG4bK"));
        for _ in 0..1000 {
            assert!(!seen.contains(&b.tag()));
        }
        assert_eq!(IdGenerator::new(&[0u8; 15]).unwrap_err(), ShortKey);
    }

    #[test]
    fn derived_ids_are_stable_per_key_and_input() {
        let a = IdGenerator::new(&[1u8; 16]).unwrap();
        let b = IdGenerator::new(&[2u8; 16]).unwrap();
        let x = a.derive(&[b"call-1", b"1"]);
        assert_eq!(x, a.derive(&[b"call-1", b"1"]));
        assert_ne!(x, a.derive(&[b"call-1", b"2"]));
        assert_ne!(x, a.derive(&[b"call-", b"11"]));
        assert_ne!(x, b.derive(&[b"call-1", b"1"]));
    }
}
