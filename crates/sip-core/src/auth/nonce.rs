//! The server's nonces: [`NonceIssuer`] mints stateless, authenticated, time-stamped nonces
//! and [`NonceCounter`] refuses replayed nonce counts in bounded memory.

use super::*;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The shortest nonce key [`NonceIssuer::new`] accepts.
pub const MIN_KEY_LEN: usize = 16;

/// How far in the future a nonce's issue time may be and still be valid: other nodes sharing
/// the key may have clocks slightly ahead of ours.
pub const MAX_CLOCK_SKEW_SECS: u64 = 30;

/// Bytes of HMAC-SHA256 kept in a nonce: 128 bits is beyond guessing, and keeps nonces short.
pub(super) const NONCE_MAC_LEN: usize = 16;
/// Issue time (8) + sequence number (8).
pub(super) const NONCE_DATA_LEN: usize = 16;
pub(super) const NONCE_HEX_LEN: usize = 2 * (NONCE_DATA_LEN + NONCE_MAC_LEN);

/// What [`NonceIssuer::check`] says of a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Issued with our key, within its lifetime.
    Valid,
    /// Issued with our key but too old: challenge again with `stale=true`.
    Stale,
    /// Not ours: forged, mangled, from another key, or from the future.
    Invalid,
}

/// Mints and checks stateless nonces.
///
/// A nonce is 64 lowercase hex digits: the issue time (u64 seconds), a sequence number (so
/// two nonces issued in the same second differ) and the first 128 bits of an HMAC-SHA256 of
/// both under the secret key. Any node holding the key can check a nonce without shared
/// state; only the replay counter ([`NonceCounter`]) is per node.
pub struct NonceIssuer {
    mac: Hmac<Sha256>,
    lifetime_secs: u64,
    seq: AtomicU64,
}

impl fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("NonceIssuer")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl NonceIssuer {
    /// An issuer with this secret key (at least [`MIN_KEY_LEN`] random bytes, shared by every
    /// node that must accept the nonces) and nonce lifetime in seconds.
    pub fn new(key: &[u8], lifetime_secs: u64) -> Result<NonceIssuer, AuthError> {
        if key.len() < MIN_KEY_LEN {
            return Err(AuthError::WeakKey { len: key.len() });
        }
        // HMAC takes keys of any length, so this cannot fail; map it anyway rather than panic.
        let mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|_| AuthError::WeakKey { len: key.len() })?;
        Ok(NonceIssuer {
            mac,
            lifetime_secs,
            seq: AtomicU64::new(0),
        })
    }

    /// How long a nonce stays valid, in seconds.
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    /// Starts the sequence number at `seed`, e.g. a random value per node, so that nodes
    /// sharing a key do not mint the same nonce in the same second.
    pub fn with_seed(self, seed: u64) -> NonceIssuer {
        self.seq.store(seed, Ordering::Relaxed);
        self
    }

    pub(super) fn tag(&self, data: &[u8; NONCE_DATA_LEN]) -> [u8; NONCE_MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; NONCE_MAC_LEN];
        tag.copy_from_slice(&full[..NONCE_MAC_LEN]);
        tag
    }

    /// A fresh nonce issued at `now_secs`.
    pub fn issue(&self, now_secs: u64) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut data = [0u8; NONCE_DATA_LEN];
        data[..8].copy_from_slice(&now_secs.to_be_bytes());
        data[8..].copy_from_slice(&seq.to_be_bytes());
        let tag = self.tag(&data);
        let mut s = to_hex(&data);
        s.push_str(&to_hex(&tag));
        s
    }

    /// The issue time of a nonce minted with our key, `None` if it is not one.
    pub fn issued_at(&self, nonce: &str) -> Option<u64> {
        self.identify(nonce).map(|(t, _)| t)
    }

    /// The issue time and [`NonceId`] of a nonce minted with our key, `None` if it is not
    /// one.
    pub fn identify(&self, nonce: &str) -> Option<(u64, NonceId)> {
        let bytes = nonce.as_bytes();
        if bytes.len() != NONCE_HEX_LEN {
            return None;
        }
        let mut raw = [0u8; NONCE_DATA_LEN + NONCE_MAC_LEN];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0])?;
            let lo = hex_val(pair[1])?;
            raw[i] = (hi << 4) | lo;
        }
        let mut data = [0u8; NONCE_DATA_LEN];
        data.copy_from_slice(&raw[..NONCE_DATA_LEN]);
        let tag = self.tag(&data);
        if !bool::from(tag.ct_eq(&raw[NONCE_DATA_LEN..])) {
            return None;
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&data[..8]);
        Some((u64::from_be_bytes(t), u128::from_be_bytes(data)))
    }

    /// Whether a nonce is ours and still fresh at `now_secs`.
    pub fn check(&self, nonce: &str, now_secs: u64) -> NonceStatus {
        match self.issued_at(nonce) {
            None => NonceStatus::Invalid,
            Some(t) => self.status_of(t, now_secs),
        }
    }

    pub(super) fn status_of(&self, issued: u64, now_secs: u64) -> NonceStatus {
        if issued > now_secs.saturating_add(MAX_CLOCK_SKEW_SECS) {
            NonceStatus::Invalid
        } else if now_secs.saturating_sub(issued) >= self.lifetime_secs {
            NonceStatus::Stale
        } else {
            NonceStatus::Valid
        }
    }
}

/// Lowercase hex digit value: nonces are minted lowercase, and accepting one spelling only
/// keeps each nonce a single string for the replay counter.
pub(super) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// What [`NonceCounter::check`] says of a nonce count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcCheck {
    /// Greater than any count seen with this nonce: accepted and remembered.
    Fresh,
    /// Not greater than a count already seen (or zero): a replay.
    Replay,
    /// The counter has forgotten nonces this old to stay within its capacity, so it cannot
    /// tell a replay: treat the nonce as stale and challenge again.
    Forgotten,
}

/// Remembers, per recently used nonce, the highest nonce count (`nc`) accepted, and refuses
/// counts that do not grow (RFC 7616 §3.4: replay protection).
///
/// Nonces are known by their [`NonceId`] (what [`NonceIssuer::identify`] reads from one
/// of ours), so that remembering one allocates nothing. Memory is bounded: at most
/// `capacity` nonces are kept, the first remembered go first, and [`NonceCounter::sweep`]
/// drops expired ones. A nonce that was forgotten cannot be checked any more, so every
/// nonce at least as old as the newest one forgotten is answered [`NcCheck::Forgotten`]
/// rather than accepted again.
#[derive(Debug, Clone)]
pub struct NonceCounter {
    capacity: usize,
    lifetime_secs: u64,
    /// nonce -> highest nc
    seen: HashMap<NonceId, u32>,
    /// (issue time, nonce) in the order they were remembered, for eviction: nonces are
    /// used soon after they are issued, so this is about the order of issue times.
    order: VecDeque<(u64, NonceId)>,
    /// Nonces issued at or before this time may have been forgotten.
    forgotten_through: Option<u64>,
}

/// What tells one nonce of ours from every other: the issue time and sequence number
/// it carries (the part its MAC covers).
pub type NonceId = u128;

impl NonceCounter {
    /// A counter keeping at most `capacity` nonces (at least 1), each for `lifetime_secs`
    /// after its issue time.
    pub fn new(capacity: usize, lifetime_secs: u64) -> NonceCounter {
        NonceCounter {
            capacity: capacity.max(1),
            lifetime_secs,
            seen: HashMap::new(),
            order: VecDeque::new(),
            forgotten_through: None,
        }
    }

    /// Checks `nc` for the nonce `id` (issued at `issued_at`), remembering it when fresh.
    /// Call it only for requests whose response was verified, so strangers cannot burn a
    /// client's counts or fill the table.
    pub fn check(&mut self, id: NonceId, issued_at: u64, nc: u32) -> NcCheck {
        if let Some(highest) = self.seen.get_mut(&id) {
            if nc > *highest {
                *highest = nc;
                return NcCheck::Fresh;
            }
            return NcCheck::Replay;
        }
        if self.forgotten_through.is_some_and(|t| issued_at <= t) {
            return NcCheck::Forgotten;
        }
        if nc == 0 {
            // Counts start at 1 (RFC 7616 §3.4): 0 is not greater than "none sent yet".
            return NcCheck::Replay;
        }
        self.seen.insert(id, nc);
        self.order.push_back((issued_at, id));
        while self.seen.len() > self.capacity {
            let Some((t, n)) = self.order.pop_front() else {
                break;
            };
            self.seen.remove(&n);
            self.forget_through(t);
        }
        NcCheck::Fresh
    }

    pub(super) fn forget_through(&mut self, t: u64) {
        self.forgotten_through = Some(self.forgotten_through.map_or(t, |f| f.max(t)));
    }

    /// Drops the nonces whose lifetime is over at `now_secs`.
    pub fn sweep(&mut self, now_secs: u64) {
        while let Some(&(t, n)) = self.order.front() {
            if now_secs.saturating_sub(t) < self.lifetime_secs {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&n);
            self.forget_through(t);
        }
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The most nonces remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
