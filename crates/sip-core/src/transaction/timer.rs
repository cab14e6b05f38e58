//! Timer values (RFC 3261 §17 and Table 4, RFC 6026 timers L and M) and the per-transaction
//! timer table.
//!
//! Every timer a transaction can arm is a [`Timer`] variant. A transaction never has more
//! than four of them running at once, and timers that cannot run together share a [`Slot`],
//! so the table a transaction carries is four `Option<Instant>`s rather than one per timer.

use crate::transport::Transport;
use std::time::{Duration, Instant};

/// The timer values a [`TransactionLayer`](super::TransactionLayer) uses.
///
/// The defaults are RFC 3261's (Table 4) and RFC 6026's. Changing T1 changes every
/// timer derived from it (B, F, H, J, L, M are 64·T1), as the RFC intends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1, the round-trip estimate: first retransmit interval (default 500 ms).
    pub t1: Duration,
    /// T2, the cap on non-INVITE request and INVITE response retransmit intervals
    /// (default 4 s).
    pub t2: Duration,
    /// T4, how long a message may stay in the network (default 5 s): timers I and K.
    pub t4: Duration,
    /// Timer D, how long an INVITE client stays Completed over an unreliable transport to
    /// re-ACK retransmitted final responses (default 32 s, the RFC's minimum).
    pub timer_d: Duration,
    /// Timer C, how long an INVITE client waits for a final response once the request
    /// is out, reset by every provisional (RFC 3261 §16.6 step 11; default 3 min).
    /// `None` disables it; then an unanswered INVITE in Proceeding lives until the TU
    /// cancels it, so keep it unless the TU has its own guard.
    pub timer_c: Option<Duration>,
    /// How long an INVITE server waits for the TU's provisional response before sending
    /// 100 Trying itself (RFC 3261 §17.2.1: 200 ms). `None` never sends one.
    pub trying_delay: Option<Duration>,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            timer_c: Some(Duration::from_secs(180)),
            trying_delay: Some(Duration::from_millis(200)),
        }
    }
}

impl TimerConfig {
    /// 64·T1: timers B, F, H, L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// The duration of a "linger" timer (D, I, J, K) for a transport: zero over reliable
    /// transports, where no retransmission can arrive late (RFC 3261 §17.1.1.2 and friends).
    pub fn linger(&self, timer: Timer, transport: Transport) -> Duration {
        if transport.is_reliable() {
            return Duration::ZERO;
        }
        match timer {
            Timer::D => self.timer_d,
            Timer::I | Timer::K => self.t4,
            Timer::J => self.t1x64(),
            _ => Duration::ZERO,
        }
    }
}

/// A transaction timer, named as in RFC 3261 §17 (A–K), RFC 6026 (L, M), plus the
/// INVITE server's 100 Trying timer, which the RFC describes but does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// INVITE client request retransmit (unreliable transports).
    A,
    /// INVITE client transaction timeout in Calling.
    B,
    /// INVITE client (proxy) wait for a final response, reset on provisionals.
    C,
    /// INVITE client wait in Completed for response retransmissions.
    D,
    /// Non-INVITE client request retransmit (unreliable transports).
    E,
    /// Non-INVITE client transaction timeout.
    F,
    /// INVITE server final (non-2xx) response retransmit (unreliable transports).
    G,
    /// INVITE server wait for the ACK.
    H,
    /// INVITE server wait in Confirmed for ACK retransmissions.
    I,
    /// Non-INVITE server wait in Completed for request retransmissions.
    J,
    /// Non-INVITE client wait in Completed for response retransmissions.
    K,
    /// INVITE server wait in Accepted (RFC 6026) for INVITE retransmissions.
    L,
    /// INVITE client wait in Accepted (RFC 6026) for 2xx retransmissions.
    M,
    /// INVITE server: send 100 Trying if the TU has not sent a provisional by now.
    Trying,
}

/// Where a timer lives in a transaction's table. Timers sharing a slot never run at the
/// same time in one transaction, which the state machines guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A, E, G.
    Retransmit = 0,
    /// B, F, H.
    Timeout = 1,
    /// D, I, J, K, L, M: how long a finished transaction lingers.
    Linger = 2,
    /// C (client) or Trying (server).
    Guard = 3,
}

impl Timer {
    pub(crate) fn slot(self) -> Slot {
        match self {
            Timer::A | Timer::E | Timer::G => Slot::Retransmit,
            Timer::B | Timer::F | Timer::H => Slot::Timeout,
            Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M => Slot::Linger,
            Timer::C | Timer::Trying => Slot::Guard,
        }
    }
}

/// A transaction's armed timers, indexed by [`Slot`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimerTable([Option<Instant>; 4]);

impl TimerTable {
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer.slot() as usize]
    }
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.slot() as usize] = Some(at);
    }
    pub(crate) fn clear(&mut self, timer: Timer) {
        self.0[timer.slot() as usize] = None;
    }
    pub(crate) fn clear_all(&mut self) {
        self.0 = [None; 4];
    }
}
