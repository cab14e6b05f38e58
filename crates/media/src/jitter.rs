//! A jitter buffer: RTP payloads (any frame type `T`) go in as they arrive (any order, duplicates, gaps) and come
//! out in sequence order, one per playout tick.
//!
//! Fixed depth: playout starts (and restarts after running dry) once `depth` packets are
//! buffered, which is the delay it adds. A packet missing at the head is waited for while
//! fewer than `depth` packets are buffered behind it, then declared lost (the caller
//! conceals it). Running dry is not loss: playout pauses until the far side sends again, so
//! a held call or a paused sender adds nothing. A jump of more than [`MAX_GAP`] packets is a
//! resync, not hundreds of losses. Sequence numbers are extended to 64 bits, so wrapping at
//! 65535 is seamless.
//!
//! Sans-IO: `pop` is one playout tick; the caller owns the clock.

use std::collections::BTreeMap;

/// A gap larger than this (in packets) at the head is a new stream, not loss.
pub const MAX_GAP: u64 = 50;

/// What one playout tick gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout<T = Vec<u8>> {
    /// The next payload in order.
    Frame(T),
    /// The next packet was lost: conceal one frame.
    Lost,
    /// Nothing to play now (buffering, or the far side sends nothing).
    Waiting,
}

#[derive(Debug)]
enum Slot<T> {
    Audio(T),
    /// A sequence number used by a non-audio packet (telephone-event, comfort noise): it
    /// takes no playout time and is not a loss.
    Skip,
}

/// Counters of what the buffer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames played in order.
    pub played: u64,
    /// Frames declared lost and concealed.
    pub lost: u64,
    /// Packets that arrived after their turn.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets dropped because the buffer was full.
    pub overflowed: u64,
}

/// The reordering buffer.
#[derive(Debug)]
pub struct JitterBuffer<T = Vec<u8>> {
    depth: usize,
    capacity: usize,
    slots: BTreeMap<u64, Slot<T>>,
    /// The extended sequence number to play next, once playout began.
    next: Option<u64>,
    /// The highest extended sequence number seen, to extend the next one.
    highest: Option<u64>,
    playing: bool,
    stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    /// A buffer that starts playing with `depth` packets buffered and holds at most
    /// `capacity` (the oldest are dropped beyond that).
    pub fn new(depth: usize, capacity: usize) -> JitterBuffer<T> {
        let depth = depth.max(1);
        JitterBuffer {
            depth,
            capacity: capacity.max(depth + 1),
            slots: BTreeMap::new(),
            next: None,
            highest: None,
            playing: false,
            stats: JitterStats::default(),
        }
    }

    /// An audio payload with RTP sequence number `seq`.
    pub fn push(&mut self, seq: u16, payload: T) {
        self.insert(seq, Slot::Audio(payload));
    }

    /// A sequence number taken by a packet that is not audio.
    pub fn skip(&mut self, seq: u16) {
        self.insert(seq, Slot::Skip);
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Everything still held, in order, holes as `Lost` (the stream is over: no packet
    /// will come to fill them).
    pub fn drain(&mut self) -> Vec<Playout<T>> {
        let mut out = Vec::new();
        while let Some((seq, slot)) = self.slots.pop_first() {
            if let Some(next) = self
                .next
                .filter(|&next| seq > next && seq <= next + MAX_GAP)
            {
                for _ in next..seq {
                    self.stats.lost += 1;
                    out.push(Playout::Lost);
                }
            }
            self.next = Some(seq + 1);
            if let Slot::Audio(payload) = slot {
                self.stats.played += 1;
                out.push(Playout::Frame(payload));
            }
        }
        self.playing = false;
        out
    }

    fn extend(&self, seq: u16) -> u64 {
        match self.highest {
            // Start high so that earlier (reordered) numbers never go below zero.
            None => (1 << 32) + u64::from(seq),
            Some(highest) => {
                let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
                highest.saturating_add_signed(delta)
            }
        }
    }

    fn insert(&mut self, seq: u16, slot: Slot<T>) {
        let ext = self.extend(seq);
        if self.next.is_some_and(|next| ext < next) {
            self.stats.late += 1;
            return;
        }
        if self.slots.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.slots.insert(ext, slot);
        while self.slots.len() > self.capacity {
            if let Some((oldest, _)) = self.slots.pop_first() {
                self.stats.overflowed += 1;
                self.next = Some(oldest + 1);
            }
        }
    }

    /// One playout tick.
    pub fn pop(&mut self) -> Playout<T> {
        if !self.playing {
            if self.slots.len() < self.depth {
                return Playout::Waiting;
            }
            self.playing = true;
        }
        loop {
            let Some((&first, _)) = self.slots.first_key_value() else {
                // Ran dry: the far side paused. Buffer up again before playing.
                self.playing = false;
                return Playout::Waiting;
            };
            let next = match self.next {
                Some(next) if first <= next + MAX_GAP => next,
                // First packet ever, or a jump too large to be loss: resync.
                _ => first,
            };
            if first > next {
                if self.slots.len() < self.depth {
                    // The missing packet may still come: wait for it.
                    return Playout::Waiting;
                }
                self.next = Some(next + 1);
                self.stats.lost += 1;
                return Playout::Lost;
            }
            self.next = Some(first + 1);
            match self.slots.pop_first() {
                Some((_, Slot::Audio(payload))) => {
                    self.stats.played += 1;
                    return Playout::Frame(payload);
                }
                Some((_, Slot::Skip)) | None => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame(n: u8) -> Playout {
        Playout::Frame(vec![n])
    }

    #[test]
    fn waits_for_depth_then_plays_in_order_despite_reordering() {
        let mut jb: JitterBuffer = JitterBuffer::new(3, 50);
        jb.push(11, vec![11]);
        assert_eq!(jb.pop(), Playout::Waiting);
        jb.push(10, vec![10]);
        assert_eq!(jb.pop(), Playout::Waiting);
        jb.push(13, vec![13]);
        jb.push(12, vec![12]);
        assert_eq!(jb.pop(), frame(10));
        assert_eq!(jb.pop(), frame(11));
        assert_eq!(jb.pop(), frame(12));
        assert_eq!(jb.pop(), frame(13));
        // Dry: wait, and buffer up again before resuming.
        assert_eq!(jb.pop(), Playout::Waiting);
        jb.push(14, vec![14]);
        assert_eq!(jb.pop(), Playout::Waiting);
        jb.push(15, vec![15]);
        jb.push(16, vec![16]);
        assert_eq!(jb.pop(), frame(14));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let mut jb: JitterBuffer = JitterBuffer::new(1, 50);
        jb.push(1, vec![1]);
        jb.push(1, vec![1]);
        assert_eq!(jb.pop(), frame(1));
        jb.push(1, vec![1]);
        jb.push(2, vec![2]);
        assert_eq!(jb.pop(), frame(2));
        assert_eq!(jb.pop(), Playout::Waiting);
        let stats = jb.stats();
        assert_eq!((stats.duplicates, stats.late, stats.played), (1, 1, 2));
    }

    #[test]
    fn a_missing_packet_is_waited_for_then_concealed() {
        let mut jb: JitterBuffer = JitterBuffer::new(3, 50);
        for seq in [1, 2, 3] {
            jb.push(seq, vec![seq as u8]);
        }
        jb.push(5, vec![5]);
        assert_eq!(jb.pop(), frame(1));
        assert_eq!(jb.pop(), frame(2));
        assert_eq!(jb.pop(), frame(3));
        // 4 is missing and only one packet is behind it: wait.
        assert_eq!(jb.pop(), Playout::Waiting);
        jb.push(6, vec![6]);
        jb.push(7, vec![7]);
        // Three behind it now: 4 is lost.
        assert_eq!(jb.pop(), Playout::Lost);
        assert_eq!(jb.pop(), frame(5));
        // A late 4 is dropped.
        jb.push(4, vec![4]);
        assert_eq!(jb.pop(), frame(6));
        assert_eq!(jb.stats().lost, 1);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn skipped_numbers_are_neither_played_nor_lost() {
        let mut jb: JitterBuffer = JitterBuffer::new(2, 50);
        jb.push(1, vec![1]);
        jb.skip(2);
        jb.skip(3);
        jb.push(4, vec![4]);
        assert_eq!(jb.pop(), frame(1));
        assert_eq!(jb.pop(), frame(4));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb: JitterBuffer = JitterBuffer::new(2, 50);
        jb.push(65534, vec![1]);
        jb.push(0, vec![3]);
        jb.push(65535, vec![2]);
        jb.push(1, vec![4]);
        for n in 1..=4 {
            assert_eq!(jb.pop(), frame(n));
        }
    }

    #[test]
    fn a_big_jump_resyncs_instead_of_concealing() {
        let mut jb: JitterBuffer = JitterBuffer::new(1, 50);
        jb.push(100, vec![1]);
        assert_eq!(jb.pop(), frame(1));
        jb.push(5000, vec![2]);
        assert_eq!(jb.pop(), frame(2));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn drain_gives_the_rest_with_holes_concealed() {
        let mut jb: JitterBuffer = JitterBuffer::new(3, 50);
        jb.push(1, vec![1]);
        jb.push(2, vec![2]);
        jb.push(3, vec![3]);
        assert_eq!(jb.pop(), frame(1));
        jb.push(5, vec![5]);
        assert_eq!(
            jb.drain(),
            vec![frame(2), frame(3), Playout::Lost, frame(5)]
        );
        assert!(jb.is_empty());
    }

    #[test]
    fn overflow_drops_the_oldest() {
        let mut jb: JitterBuffer = JitterBuffer::new(2, 4);
        for seq in 0..6u16 {
            jb.push(seq, vec![seq as u8]);
        }
        assert_eq!(jb.len(), 4);
        assert_eq!(jb.pop(), frame(2));
        assert_eq!(jb.stats().overflowed, 2);
    }
}
