//! RFC 4733 telephone-events for DTMF: the 4-byte payload, a sender state machine that
//! turns queued digits into event packets tick by tick, and a receiver that reports each
//! digit once although its packets (and the three end packets) repeat, whichever RTP
//! stream (SSRC) carries them.
//!
//! Sans-IO: the sender is driven by the RTP timestamp of each packetization tick, so tests
//! run it with explicit times.

use std::collections::VecDeque;

/// The event code of a DTMF character (RFC 4733 §3.2): 0-9, * = 10, # = 11, A-D = 12-15.
pub fn event_code(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// The DTMF character of an event code, for codes 0-15.
pub fn event_digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some((b'0' + code) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + code - 12) as char),
        _ => None,
    }
}

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code (0-15 for DTMF).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in -dBm0, 0-63.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

/// A telephone-event payload shorter than its 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("telephone-event payload of {0} bytes, need 4")]
pub struct ShortPayload(pub usize);

impl TelephoneEvent {
    /// The 4 payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d0,
            d1,
        ]
    }

    /// Parses a payload (extra bytes, e.g. redundancy, are ignored).
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, ShortPayload> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(ShortPayload(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// An event packet for the session to send with the telephone-event payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// RTP timestamp: the start of the event, the same for all its packets.
    pub timestamp: u32,
    /// RTP marker: set on the first packet of an event.
    pub marker: bool,
    /// The payload.
    pub event: TelephoneEvent,
}

/// What the sender wants at one packetization tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfTick {
    /// No digit under way: send audio as usual.
    Idle,
    /// Between two digits: send nothing (the audio source stays paused).
    Pause,
    /// Send these event packets instead of audio.
    Send(Vec<EventPacket>),
}

/// How many times the end packet is sent (RFC 4733 §2.5.1.4 recommends three).
const END_REPEATS: usize = 3;

#[derive(Debug, Clone, Copy)]
enum SenderState {
    Idle,
    Tone {
        event: u8,
        start: u32,
        elapsed: u32,
        first: bool,
    },
    Gap {
        remaining: u32,
    },
}

/// Turns queued digits into RFC 4733 event packets, one call per packetization tick.
#[derive(Debug)]
pub struct DtmfSender {
    queue: VecDeque<u8>,
    state: SenderState,
    tone: u32,
    gap: u32,
    volume: u8,
}

impl DtmfSender {
    /// A sender whose digits last `tone` and are followed by `gap`, both in RTP timestamp
    /// units (e.g. 800 and 400 for 100 ms and 50 ms at 8 kHz).
    pub fn new(tone: u32, gap: u32) -> DtmfSender {
        DtmfSender {
            queue: VecDeque::new(),
            state: SenderState::Idle,
            tone: tone.clamp(1, u32::from(u16::MAX)),
            gap,
            volume: 10,
        }
    }

    /// Queues the DTMF characters of `digits`, ignoring any other character; returns how
    /// many were queued.
    pub fn queue(&mut self, digits: &str) -> usize {
        let before = self.queue.len();
        self.queue.extend(digits.chars().filter_map(event_code));
        self.queue.len() - before
    }

    /// Whether a digit is being sent or waits.
    pub fn is_busy(&self) -> bool {
        !self.queue.is_empty() || !matches!(self.state, SenderState::Idle)
    }

    /// One packetization tick whose audio would carry RTP timestamp `now` and last
    /// `samples` timestamp units.
    pub fn on_tick(&mut self, now: u32, samples: u32) -> DtmfTick {
        if let SenderState::Gap { remaining } = self.state {
            if remaining > samples {
                self.state = SenderState::Gap {
                    remaining: remaining - samples,
                };
                return DtmfTick::Pause;
            }
            // The gap ends within this tick: start the next digit or resume audio.
            self.state = SenderState::Idle;
        }
        if let SenderState::Idle = self.state {
            let Some(event) = self.queue.pop_front() else {
                return DtmfTick::Idle;
            };
            self.state = SenderState::Tone {
                event,
                start: now,
                elapsed: 0,
                first: true,
            };
        }
        let SenderState::Tone {
            event,
            start,
            elapsed,
            first,
        } = self.state
        else {
            return DtmfTick::Idle;
        };
        let elapsed = (elapsed + samples).min(self.tone);
        let end = elapsed >= self.tone;
        let packet = EventPacket {
            timestamp: start,
            marker: first,
            event: TelephoneEvent {
                event,
                end,
                volume: self.volume,
                duration: u16::try_from(elapsed).unwrap_or(u16::MAX),
            },
        };
        if end {
            self.state = if self.gap > 0 {
                SenderState::Gap {
                    remaining: self.gap,
                }
            } else {
                SenderState::Idle
            };
            let mut packets = vec![packet; END_REPEATS];
            for p in packets.iter_mut().skip(1) {
                p.marker = false;
            }
            DtmfTick::Send(packets)
        } else {
            self.state = SenderState::Tone {
                event,
                start,
                elapsed,
                first: false,
            };
            DtmfTick::Send(vec![packet])
        }
    }
}

/// How many sources a [`DtmfReceiver`] remembers the last event of. A call has one or
/// two (the audio stream, and events in a stream of their own); a few more cover a far
/// end that switches streams.
const REMEMBERED_SOURCES: usize = 4;

/// Reports each received digit once: all packets of one event share its RTP timestamp,
/// within the stream (SSRC) that carries it. Events are told apart by source and
/// timestamp, so two streams (a far end that sends its events beside its audio, with
/// another SSRC) never make one digit two.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    /// The timestamp of the last DTMF event of each source, most recent source last.
    last_events: VecDeque<(u32, u32)>,
}

impl DtmfReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> DtmfReceiver {
        DtmfReceiver::default()
    }

    /// One telephone-event packet of source `ssrc` with RTP timestamp `timestamp`: the
    /// digit when this is the first packet seen of a new DTMF event, else `None`.
    pub fn on_packet(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<char>, ShortPayload> {
        let event = TelephoneEvent::parse(payload)?;
        let known = self.last_events.iter().position(|(s, _)| *s == ssrc);
        if known.is_some_and(|i| self.last_events[i].1 == timestamp) {
            return Ok(None);
        }
        let Some(digit) = event_digit(event.event) else {
            // Not DTMF (flash, tones): not reported, and not remembered either.
            return Ok(None);
        };
        if let Some(i) = known {
            self.last_events.remove(i);
        }
        self.last_events.push_back((ssrc, timestamp));
        if self.last_events.len() > REMEMBERED_SOURCES {
            self.last_events.pop_front();
        }
        Ok(Some(digit))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn payload_bytes_match_rfc_4733() {
        // Digit 5, end bit, volume 10, duration 800 (100 ms at 8 kHz).
        let e = TelephoneEvent {
            event: 5,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(e.to_bytes(), [0x05, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&[0x05, 0x8A, 0x03, 0x20]).unwrap(), e);
        // '#', not ended, volume 63 (R bit set on the wire is ignored), duration 160.
        let e = TelephoneEvent::parse(&[0x0B, 0x7F, 0x00, 0xA0]).unwrap();
        assert_eq!((e.event, e.end, e.volume, e.duration), (11, false, 63, 160));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(ShortPayload(3)));
    }

    #[test]
    fn digit_codes() {
        let all = "0123456789*#ABCD";
        for (code, c) in all.chars().enumerate() {
            assert_eq!(event_code(c), Some(code as u8));
            assert_eq!(event_digit(code as u8), Some(c));
        }
        assert_eq!(event_code('a'), Some(12));
        assert_eq!(event_code('x'), None);
        assert_eq!(event_digit(16), None);
    }

    #[test]
    fn sender_emits_growing_durations_then_three_ends_then_a_gap() {
        // 100 ms tone, 50 ms gap, 20 ms packets at 8 kHz.
        let mut s = DtmfSender::new(800, 400);
        assert_eq!(s.queue("1x#"), 2);
        let mut ts = 1000u32;
        let mut ticks = Vec::new();
        for _ in 0..20 {
            ticks.push(s.on_tick(ts, 160));
            ts += 160;
        }
        let send = |t: &DtmfTick| match t {
            DtmfTick::Send(p) => p.clone(),
            other => panic!("expected packets, got {other:?}"),
        };
        // Digit 1: five ticks, durations 160..800, the last sent three times with E.
        for (i, tick) in ticks[..5].iter().enumerate() {
            let p = send(tick);
            assert_eq!(p[0].timestamp, 1000);
            assert_eq!(p[0].marker, i == 0);
            assert_eq!(p[0].event.event, 1);
            assert_eq!(p[0].event.duration, 160 * (i as u16 + 1));
            if i < 4 {
                assert_eq!(p.len(), 1);
                assert!(!p[0].event.end);
            } else {
                assert_eq!(p.len(), 3);
                assert!(p.iter().all(|p| p.event.end && p.event.duration == 800));
                assert!(p.iter().all(|p| !p.marker));
            }
        }
        // A gap of 400 units is two whole ticks; the third tick starts '#'.
        assert_eq!(&ticks[5..7], &[DtmfTick::Pause, DtmfTick::Pause][..]);
        let p = send(&ticks[7]);
        assert_eq!(
            (p[0].event.event, p[0].marker, p[0].timestamp),
            (11, true, 1000 + 7 * 160)
        );
        assert!(matches!(ticks[11], DtmfTick::Send(ref p) if p.len() == 3));
        assert_eq!(&ticks[12..14], &[DtmfTick::Pause, DtmfTick::Pause][..]);
        assert_eq!(ticks[14], DtmfTick::Idle);
        assert!(!s.is_busy());
    }

    #[test]
    fn receiver_reports_each_event_once() {
        let mut r = DtmfReceiver::new();
        let start = TelephoneEvent {
            event: 1,
            end: false,
            volume: 10,
            duration: 160,
        };
        let end = TelephoneEvent {
            end: true,
            duration: 800,
            ..start
        };
        assert_eq!(r.on_packet(7, 500, &start.to_bytes()), Ok(Some('1')));
        assert_eq!(r.on_packet(7, 500, &start.to_bytes()), Ok(None));
        for _ in 0..3 {
            assert_eq!(r.on_packet(7, 500, &end.to_bytes()), Ok(None));
        }
        // The same digit again is a new event (new timestamp); a lost start is no matter.
        assert_eq!(r.on_packet(7, 2000, &end.to_bytes()), Ok(Some('1')));
        let flash = TelephoneEvent { event: 16, ..start };
        assert_eq!(r.on_packet(7, 3000, &flash.to_bytes()), Ok(None));
        assert_eq!(r.on_packet(7, 4000, &[0]), Err(ShortPayload(1)));
    }

    #[test]
    fn receiver_tells_events_apart_by_source() {
        let mut r = DtmfReceiver::new();
        let digit = |event, end| {
            TelephoneEvent {
                event,
                end,
                volume: 10,
                duration: 160,
            }
            .to_bytes()
        };
        // Two streams interleaved, each retransmitting its end packet three times: each
        // event once, although the streams alternate packet by packet.
        assert_eq!(r.on_packet(0xA, 500, &digit(1, false)), Ok(Some('1')));
        assert_eq!(r.on_packet(0xE, 13280, &digit(1, false)), Ok(Some('1')));
        for _ in 0..3 {
            assert_eq!(r.on_packet(0xA, 500, &digit(1, true)), Ok(None));
            assert_eq!(r.on_packet(0xE, 13280, &digit(1, true)), Ok(None));
        }
        // The same timestamp in another stream is another event.
        assert_eq!(r.on_packet(0xF, 500, &digit(5, false)), Ok(Some('5')));
        assert_eq!(r.on_packet(0xE, 92640, &digit(11, false)), Ok(Some('#')));
        assert_eq!(r.on_packet(0xE, 92640, &digit(11, true)), Ok(None));
        // Old sources are forgotten, a few at most are remembered.
        for ssrc in 0..10 {
            assert_eq!(r.on_packet(ssrc, 1, &digit(2, false)), Ok(Some('2')));
        }
        assert_eq!(r.last_events.len(), REMEMBERED_SOURCES);
        assert_eq!(r.on_packet(9, 1, &digit(2, true)), Ok(None));
    }
}
