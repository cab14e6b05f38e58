//! RFC 3550 reception statistics for one source: extended highest sequence number and
//! restarts (A.1), cumulative and interval loss (A.3), interarrival jitter (A.8).
//!
//! Sans-IO: arrival times are given in RTP timestamp units by the caller.

/// A jump of less than this many sequence numbers ahead is in order (A.1 `MAX_DROPOUT`).
const MAX_DROPOUT: u16 = 3000;
/// A number this far behind is a late or duplicate packet (A.1 `MAX_MISORDER`).
const MAX_MISORDER: u16 = 100;
const SEQ_MOD: u64 = 1 << 16;

/// Reception statistics of one synchronization source.
#[derive(Debug, Clone)]
pub struct ReceptionStats {
    ssrc: u32,
    clock_rate: u32,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    /// A.1 `bad_seq`: after a big jump, the number that would confirm a restart.
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    last_transit: Option<u32>,
    /// A.8 jitter, in timestamp units, as a float (the integer form is `jitter >> 4`).
    jitter: f64,
}

impl ReceptionStats {
    /// Starts statistics for `ssrc` at its first packet, sequence number `seq`.
    pub fn new(ssrc: u32, clock_rate: u32, seq: u16) -> ReceptionStats {
        ReceptionStats {
            ssrc,
            clock_rate: clock_rate.max(1),
            max_seq: seq,
            cycles: 0,
            base_seq: u64::from(seq),
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            last_transit: None,
            jitter: 0.0,
        }
    }

    /// The source these are about.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// One packet with sequence number `seq` and timestamp `rtp_ts`, arrived at `arrival`
    /// (any epoch, in RTP timestamp units). Returns false for a packet A.1 discards (a big
    /// jump not yet confirmed).
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival: u32) -> bool {
        self.count(seq, Some((rtp_ts, arrival)))
    }

    /// A packet whose timestamp does not follow its sending time (RFC 4733 events repeat
    /// the event's start timestamp for its whole duration): counted for loss, left out of
    /// the jitter, which it would inflate.
    pub fn on_untimed_packet(&mut self, seq: u16) -> bool {
        self.count(seq, None)
    }

    fn count(&mut self, seq: u16, timing: Option<(u32, u32)>) -> bool {
        let delta = seq.wrapping_sub(self.max_seq);
        if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += SEQ_MOD;
            }
            self.max_seq = seq;
        } else if delta <= u16::MAX - MAX_MISORDER {
            // A big jump: two in a row that agree mean the sender restarted.
            if self.bad_seq == Some(seq) {
                *self = ReceptionStats::new(self.ssrc, self.clock_rate, seq);
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return false;
            }
        }
        // Otherwise a duplicate or reordered packet: counted, no change to max_seq.
        self.bad_seq = None;
        self.received += 1;

        // A.8: transit time differences, smoothed with gain 1/16.
        if let Some((rtp_ts, arrival)) = timing {
            let transit = arrival.wrapping_sub(rtp_ts);
            if let Some(last) = self.last_transit {
                let d = f64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
                self.jitter += (d - self.jitter) / 16.0;
            }
            self.last_transit = Some(transit);
        }
        true
    }

    /// Extended highest sequence number received (cycles in the high 16 bits).
    pub fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// Packets expected: from the first to the highest sequence number.
    pub fn expected(&self) -> u64 {
        (self.extended_max() + 1).saturating_sub(self.base_seq)
    }

    /// Packets received, duplicates included (as RFC 3550 counts them).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost: expected minus received; negative with duplicates.
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Fraction lost since the last call, out of 256 (A.3), for a report block.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior.min(expected);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        }
    }

    /// Interarrival jitter in timestamp units, as carried in report blocks.
    pub fn jitter(&self) -> u32 {
        self.jitter as u32
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_loss_across_a_wrap() {
        let mut s = ReceptionStats::new(7, 8000, 65530);
        for seq in (65530..=65535u16).chain(0..10) {
            if seq == 3 || seq == 65533 {
                continue;
            }
            let i = u32::from(seq.wrapping_sub(65530));
            assert!(s.on_packet(seq, i * 160, i * 160));
        }
        assert_eq!(s.extended_max(), (1 << 16) + 9);
        assert_eq!(s.expected(), 16);
        assert_eq!(s.received(), 14);
        assert_eq!(s.cumulative_lost(), 2);
        assert_eq!(s.take_fraction_lost(), (2 * 256 / 16) as u8);
        // Nothing new: no loss in the next interval.
        assert_eq!(s.take_fraction_lost(), 0);
    }

    #[test]
    fn duplicates_make_loss_negative_and_reordering_is_not_loss() {
        let mut s = ReceptionStats::new(1, 8000, 100);
        for seq in [100, 102, 101, 101, 103] {
            s.on_packet(seq, 0, 0);
        }
        assert_eq!(s.extended_max(), 103);
        assert_eq!(s.cumulative_lost(), -1);
    }

    #[test]
    fn jitter_follows_a_8() {
        let mut s = ReceptionStats::new(1, 8000, 0);
        // Packets every 160 units; arrivals alternate 0 and 80 units late.
        for i in 0..200u32 {
            let late = if i % 2 == 0 { 0 } else { 80 };
            s.on_packet(i as u16, i * 160, 10_000 + i * 160 + late);
        }
        // |D| is always 80: the estimate converges to 80 units = 10 ms.
        assert!((s.jitter() as i64 - 80).abs() <= 1, "{}", s.jitter());
        assert!((s.jitter_ms() - 10.0).abs() < 0.2);
        // Perfectly regular arrivals: zero.
        let mut s = ReceptionStats::new(1, 8000, 0);
        for i in 0..50u32 {
            s.on_packet(i as u16, i * 160, 5 + i * 160);
        }
        assert_eq!(s.jitter(), 0);
    }

    #[test]
    fn untimed_packets_count_for_loss_but_not_jitter() {
        let mut s = ReceptionStats::new(1, 8000, 0);
        for i in 0..10u32 {
            s.on_packet(i as u16, i * 160, 5 + i * 160);
        }
        // An event held at one timestamp for 5 packets, 20 ms apart.
        for i in 10..15u32 {
            s.on_untimed_packet(i as u16);
        }
        s.on_packet(15, 15 * 160, 5 + 15 * 160);
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.cumulative_lost(), 0);
        assert_eq!(s.expected(), 16);
    }

    #[test]
    fn a_confirmed_big_jump_restarts_the_count() {
        let mut s = ReceptionStats::new(1, 8000, 10);
        s.on_packet(10, 0, 0);
        s.on_packet(11, 0, 0);
        assert!(!s.on_packet(20000, 0, 0));
        assert!(s.on_packet(20001, 0, 0));
        assert_eq!(s.expected(), 1);
        assert_eq!(s.cumulative_lost(), 0);
    }
}
