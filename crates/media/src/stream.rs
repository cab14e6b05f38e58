//! One audio stream's RTP and RTCP, sans-IO: what to send at each packetization tick, what
//! to do with each datagram received, what to play at each playout tick, which RTCP
//! report to send. It never reads a clock or touches a socket: every input that needs
//! time takes `now` (and the wall clock for RTCP's NTP fields), and everything to do comes
//! out of [`MediaStream::poll_output`]. [`crate::MediaSession`] drives it with tokio; the
//! tests here drive two of them against each other on a fake clock.

use crate::MediaError;
use crate::audio::SourceReader;
use crate::codec::{Codec, Decoder, Encoder, PCM_RATE};
use crate::dtmf::{DtmfReceiver, DtmfSender, DtmfTick, EventPacket};
use crate::jitter::{JitterBuffer, Playout};
use crate::rtcp::{self, ReceptionReport, Report, SenderInfo};
use crate::stats::ReceptionStats;
use rtp_types::{RtpPacket, RtpPacketBuilder};
use sip_core::sdp::Direction;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// Packets the jitter buffer holds at most (2 s at 20 ms) before dropping the oldest.
const JITTER_CAPACITY: usize = 100;
/// Packets in sequence a new source must send before it replaces the current one.
const SOURCE_PROBATION: u32 = 3;

/// What SDP negotiation decided for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamParams {
    /// The remote RTP address from the SDP. Symmetric RTP: once RTP arrives, the session
    /// sends to the address it actually came from. An unspecified address (`c=0.0.0.0`,
    /// the RFC 2543 way to hold) means nothing is sent.
    pub remote: SocketAddr,
    /// The codec to send (and to decode what arrives with `payload_type`).
    pub codec: Codec,
    /// Its payload type in this session, used both to send and to recognise received
    /// audio (offer/answer keeps them equal; static 0 and 8 always are).
    pub payload_type: u8,
    /// The RFC 4733 telephone-event payload type, when both sides support it.
    pub telephone_event_pt: Option<u8>,
    /// Our direction: `SendOnly` or `Inactive` stop sending (hold), `RecvOnly` or
    /// `Inactive` stop recording.
    pub direction: Direction,
    /// Packetization time in milliseconds (20 is usual); 0 counts as 20.
    pub ptime_ms: u32,
}

impl StreamParams {
    /// Send and receive `codec` with its usual payload type, telephone-event on 101, 20 ms.
    pub fn new(remote: SocketAddr, codec: Codec) -> StreamParams {
        StreamParams {
            remote,
            codec,
            payload_type: codec.payload_type(),
            telephone_event_pt: Some(crate::codec::TELEPHONE_EVENT_PT),
            direction: Direction::SendRecv,
            ptime_ms: 20,
        }
    }

    /// The packetization time in force (0 counts as 20 ms, at most 200 ms).
    pub fn ptime(&self) -> Duration {
        Duration::from_millis(u64::from(self.ptime_ms()))
    }

    fn ptime_ms(&self) -> u32 {
        if self.ptime_ms == 0 {
            20
        } else {
            self.ptime_ms.min(200)
        }
    }

    fn sends(&self) -> bool {
        matches!(self.direction, Direction::SendRecv | Direction::SendOnly)
            && !self.remote.ip().is_unspecified()
    }

    fn receives(&self) -> bool {
        matches!(self.direction, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The far side sent this DTMF digit (RFC 4733), reported once per key press.
    Dtmf(char),
    /// RTP arrived from this address, and the session now sends there (symmetric RTP).
    RemoteAddressLatched(SocketAddr),
    /// The WAV source is over; silence is sent from now on.
    SourceFinished,
    /// No RTP arrived for the RTP timeout while we expected some.
    RtpTimeout,
}

/// What the far side's RTCP said about our stream.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RemoteReport {
    /// Fraction of our packets lost in its last interval, 0.0-1.0.
    pub fraction_lost: f64,
    /// Our packets it counts as lost.
    pub cumulative_lost: i32,
    /// Interarrival jitter it measured on our stream, ms.
    pub jitter_ms: f64,
    /// Round-trip time, when its report echoed one of our SRs.
    pub rtt_ms: Option<f64>,
}

/// Counters of a session.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaStats {
    /// RTP packets sent (audio and telephone-event).
    pub packets_sent: u64,
    /// RTP payload octets sent.
    pub octets_sent: u64,
    /// RTP packets received and accepted.
    pub packets_received: u64,
    /// Cumulative packets lost (RFC 3550: expected minus received).
    pub packets_lost: i64,
    /// Interarrival jitter of the received stream (RFC 3550 A.8), ms.
    pub jitter_ms: f64,
    /// Frames concealed by the jitter buffer.
    pub frames_concealed: u64,
    /// Packets that arrived too late to be played.
    pub packets_late: u64,
    /// Datagrams on the RTP port not played: not RTP, payload types we did not agree on
    /// (comfort noise), or anything while not receiving.
    pub packets_ignored: u64,
    /// Digits received, in order.
    pub dtmf_received: String,
    /// Digits sent, in order.
    pub dtmf_sent: String,
    /// RTCP compound packets sent.
    pub rtcp_sent: u64,
    /// RTCP compound packets received and understood.
    pub rtcp_received: u64,
    /// The far side's last report about our stream.
    pub remote_report: Option<RemoteReport>,
    /// Samples written to the sink (8 kHz); from a [`MediaStream`], samples handed out
    /// as [`Output::Audio`].
    pub samples_recorded: u64,
}

/// Settings of a stream that SDP does not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Our SSRC.
    pub ssrc: u32,
    /// The sequence number of our first packet.
    pub first_sequence: u16,
    /// The RTP timestamp of our first packet.
    pub first_timestamp: u32,
    /// Jitter buffer depth in packets.
    pub jitter_depth: usize,
    /// Silence (while receiving) before [`MediaEvent::RtpTimeout`].
    pub rtp_timeout: Duration,
}

impl StreamConfig {
    /// Random SSRC, first sequence number and timestamp (RFC 3550 §5.1); a 3-packet jitter
    /// buffer; a 30 s RTP timeout.
    pub fn random() -> StreamConfig {
        StreamConfig {
            ssrc: random_u32(),
            first_sequence: random_u32() as u16,
            first_timestamp: random_u32(),
            jitter_depth: 3,
            rtp_timeout: Duration::from_secs(30),
        }
    }
}

fn random_u32() -> u32 {
    // The OS generator only fails on broken systems; fall back to the clock there.
    getrandom::u32().unwrap_or_else(|_| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0x5EED)
    })
}

/// Something for the caller to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this RTP datagram to this address.
    Rtp(SocketAddr, Vec<u8>),
    /// Send this RTCP datagram to this address.
    Rtcp(SocketAddr, Vec<u8>),
    /// Received audio, decoded (8 kHz mono), in order: record or play it.
    Audio(Vec<i16>),
    /// Tell the application.
    Event(MediaEvent),
}

fn rtcp_address(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
}

fn dtmf_sender_for(params: &StreamParams) -> DtmfSender {
    let rate = params.codec.clock_rate();
    DtmfSender::new(rate / 10, rate / 20)
}

/// The state of one audio stream. See the module doc.
#[derive(Debug)]
pub struct MediaStream {
    params: StreamParams,
    config: StreamConfig,
    outputs: VecDeque<Output>,
    send_to: SocketAddr,
    rtcp_to: SocketAddr,
    latched: bool,
    encoder: Encoder,
    decoder: Decoder,
    /// The payload type and decoder in use before a codec change, for the packets of the
    /// old codec still on their way.
    previous_decoder: Option<(u8, Decoder)>,
    source: Option<SourceReader>,

    cname: String,
    seq: u16,
    timestamp_base: u32,
    /// Packetization ticks since the last clock change: the RTP clock advances with them,
    /// sending or not.
    clock: u32,
    marker_due: bool,
    dtmf_sender: DtmfSender,
    dtmf_receiver: DtmfReceiver,

    /// Received audio frames: payload type and payload.
    jitter: JitterBuffer<(u8, Vec<u8>)>,
    /// Samples the playout owes (may run negative after a long frame).
    playout_credit: i64,
    /// Length of the last frame played: the length of a concealed one.
    last_frame_len: usize,
    reception: Option<ReceptionStats>,
    /// A source on probation to replace the current one: SSRC, next sequence number,
    /// packets seen in sequence.
    candidate: Option<(u32, u16, u32)>,
    /// Where the current source's last packet came from: the only address whose
    /// telephone-events in another stream are heard.
    source_address: Option<SocketAddr>,
    started: Instant,
    last_rtp: Instant,
    timeout_reported: bool,
    /// The last SR from the far side: its NTP middle bits and when it arrived.
    last_sr: Option<(u32, Instant)>,
    sent_since_report: bool,
    sent_before_last_report: bool,
    stats: MediaStats,
}

impl MediaStream {
    /// A stream starting at `now`, sending `source` (none: no audio, DTMF only).
    pub fn new(
        params: StreamParams,
        source: Option<SourceReader>,
        config: StreamConfig,
        now: Instant,
    ) -> Result<MediaStream, MediaError> {
        let encoder = Encoder::new(params.codec)?;
        let decoder = Decoder::new(params.codec)?;
        Ok(MediaStream {
            send_to: params.remote,
            rtcp_to: rtcp_address(params.remote),
            latched: false,
            dtmf_sender: dtmf_sender_for(&params),
            last_frame_len: (PCM_RATE / 1000 * params.ptime_ms()) as usize,
            params,
            config,
            outputs: VecDeque::new(),
            encoder,
            decoder,
            previous_decoder: None,
            source,
            cname: format!("{:08x}@switchboard", config.ssrc),
            seq: config.first_sequence,
            timestamp_base: config.first_timestamp,
            clock: 0,
            marker_due: true,
            dtmf_receiver: DtmfReceiver::new(),
            jitter: JitterBuffer::new(config.jitter_depth, JITTER_CAPACITY),
            playout_credit: 0,
            reception: None,
            candidate: None,
            source_address: None,
            started: now,
            last_rtp: now,
            timeout_reported: false,
            last_sr: None,
            sent_since_report: false,
            sent_before_last_report: false,
            stats: MediaStats::default(),
        })
    }

    /// The stream parameters in force.
    pub fn params(&self) -> &StreamParams {
        &self.params
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.config.ssrc
    }

    /// The next thing to do, until `None`. Call after every `handle_*` and command.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn emit(&mut self, event: MediaEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn samples_per_packet(&self) -> u32 {
        self.params.codec.samples_per_packet(self.params.ptime_ms())
    }

    fn pcm_frame_len(&self) -> usize {
        (PCM_RATE / 1000 * self.params.ptime_ms()) as usize
    }

    fn rtp_now(&self) -> u32 {
        self.timestamp_base
            .wrapping_add(self.clock.wrapping_mul(self.samples_per_packet()))
    }

    fn send_rtp(&mut self, payload_type: u8, timestamp: u32, marker: bool, payload: &[u8]) {
        let packet = RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(self.config.ssrc)
            .sequence_number(self.seq)
            .timestamp(timestamp)
            .marker_bit(marker)
            .payload(payload);
        match packet.write_vec() {
            Ok(bytes) => {
                self.seq = self.seq.wrapping_add(1);
                self.stats.packets_sent += 1;
                self.stats.octets_sent += payload.len() as u64;
                self.sent_since_report = true;
                self.outputs.push_back(Output::Rtp(self.send_to, bytes));
            }
            Err(e) => tracing::warn!("cannot build RTP packet: {e}"),
        }
    }

    /// One packetization tick (every ptime): sends a frame of the source, or the DTMF
    /// events under way, or nothing (held, between digits, no source); silence once a
    /// file is over.
    pub fn handle_send_tick(&mut self) {
        let now = self.rtp_now();
        self.clock = self.clock.wrapping_add(1);
        if !self.params.sends() {
            self.marker_due = true;
            return;
        }
        if let Some(pt) = self.params.telephone_event_pt {
            match self.dtmf_sender.on_tick(now, self.samples_per_packet()) {
                DtmfTick::Idle => {}
                DtmfTick::Pause => {
                    self.marker_due = true;
                    return;
                }
                DtmfTick::Send(packets) => {
                    for EventPacket {
                        timestamp,
                        marker,
                        event,
                    } in packets
                    {
                        self.send_rtp(pt, timestamp, marker, &event.to_bytes());
                    }
                    self.marker_due = true;
                    return;
                }
            }
        }
        let frame_len = self.pcm_frame_len();
        let Some(source) = self.source.as_mut() else {
            return;
        };
        let frame = match source.next_frame(frame_len) {
            Some(frame) => frame,
            None => {
                // The file is over: silence from now on, in the same talkspurt. A peer
                // whose jitter buffer holds the last packets until more arrive (baresip)
                // plays them out, and digits sent later are not left hanging there.
                *source = SourceReader::Silence;
                self.emit(MediaEvent::SourceFinished);
                vec![0; frame_len]
            }
        };
        let payload = self.encoder.encode(&frame);
        if payload.is_empty() {
            return;
        }
        let marker = std::mem::take(&mut self.marker_due);
        let pt = self.params.payload_type;
        self.send_rtp(pt, now, marker, &payload);
    }

    /// One playout tick (every ptime): one ptime of received audio, in as many packets as
    /// that takes (the far side may packetize at another ptime), comes out as
    /// [`Output::Audio`]; also reports an RTP timeout.
    pub fn handle_playout_tick(&mut self, now: Instant) {
        self.playout_credit += self.pcm_frame_len() as i64;
        while self.playout_credit > 0 {
            let playout = self.jitter.pop();
            if matches!(playout, Playout::Waiting) {
                // Dry or buffering: time spent waiting is not owed later.
                self.playout_credit = 0;
                break;
            }
            let played = self.play(playout);
            self.playout_credit -= played.max(1) as i64;
        }
        if self.params.receives()
            && !self.timeout_reported
            && now.saturating_duration_since(self.last_rtp) >= self.config.rtp_timeout
        {
            self.timeout_reported = true;
            self.emit(MediaEvent::RtpTimeout);
        }
    }

    /// Decodes (or conceals) one frame as [`Output::Audio`]; returns its length in samples.
    fn play(&mut self, playout: Playout<(u8, Vec<u8>)>) -> usize {
        let frame = match playout {
            Playout::Frame((pt, payload)) => match &mut self.previous_decoder {
                Some((old, decoder)) if pt != self.params.payload_type && pt == *old => {
                    decoder.decode(&payload)
                }
                _ => self.decoder.decode(&payload),
            },
            // Concealment by silence: keeps the timing, invents nothing.
            Playout::Lost => vec![0; self.last_frame_len],
            Playout::Waiting => Vec::new(),
        };
        let len = frame.len();
        if len > 0 {
            self.last_frame_len = len;
            self.stats.samples_recorded += len as u64;
            self.outputs.push_back(Output::Audio(frame));
        }
        len
    }

    /// A datagram that arrived on the RTP port at `now` from `from`. RTCP multiplexed on
    /// the RTP port (RFC 5761) is recognised and handled as such.
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        if rtcp::is_rtcp(datagram) {
            self.handle_rtcp(now, wallclock, from, datagram);
            return;
        }
        let Ok(packet) = RtpPacket::parse(datagram) else {
            self.stats.packets_ignored += 1;
            return;
        };
        let pt = packet.payload_type();
        let ssrc = packet.ssrc();
        let is_audio = pt == self.params.payload_type
            || self
                .previous_decoder
                .as_ref()
                .is_some_and(|(old, _)| *old == pt);
        let is_event = Some(pt) == self.params.telephone_event_pt;
        let from_current_source = self.reception.as_ref().is_some_and(|r| r.ssrc() == ssrc);
        if !self.params.receives() || !(is_audio || is_event || from_current_source) {
            // Not receiving (held), or a stranger's packet of a payload we did not agree on.
            self.stats.packets_ignored += 1;
            return;
        }
        if is_event && !from_current_source && self.reception.is_some() {
            self.handle_side_event(from, &packet);
            return;
        }
        let seq = packet.sequence_number();
        if !from_current_source && self.reception.is_some() && !self.confirm_new_source(ssrc, seq) {
            // A stray packet, or the first of a new stream still on probation.
            self.stats.packets_ignored += 1;
            return;
        }
        if !from_current_source {
            // A new source (first packet, or the far end switched streams): start afresh,
            // and follow it if it comes from elsewhere.
            if self.reception.is_some() {
                self.jitter = JitterBuffer::new(self.config.jitter_depth, JITTER_CAPACITY);
                self.latched = false;
            }
            let clock_rate = self.params.codec.clock_rate();
            self.reception = Some(ReceptionStats::new(ssrc, clock_rate, seq));
        }
        self.source_address = Some(from);
        if !self.latched {
            self.latched = true;
            if from != self.send_to {
                self.send_to = from;
                self.rtcp_to = rtcp_address(from);
            }
            self.emit(MediaEvent::RemoteAddressLatched(from));
        }
        self.last_rtp = now;
        self.timeout_reported = false;

        let clock_rate = self.params.codec.clock_rate();
        let arrival = (now.saturating_duration_since(self.started).as_secs_f64()
            * f64::from(clock_rate)) as u64 as u32;
        let accepted = self.reception.as_mut().is_some_and(|r| {
            if is_audio {
                r.on_packet(seq, packet.timestamp(), arrival)
            } else {
                r.on_untimed_packet(seq)
            }
        });
        if !accepted {
            return;
        }
        self.stats.packets_received += 1;
        if is_audio {
            self.jitter.push(seq, (pt, packet.payload().to_vec()));
            return;
        }
        // Not audio: its sequence number takes no playout time and is no loss.
        self.jitter.skip(seq);
        if !is_event {
            // Comfort noise (PT 13) or another payload we do not play.
            self.stats.packets_ignored += 1;
            return;
        }
        self.receive_event(from, &packet);
    }

    /// A telephone-event packet of another SSRC than the current source's. Some far ends
    /// send their events in a stream of their own beside their audio (SIPp plays them
    /// from a capture, with the capture's SSRC): its digits count, but it does not
    /// replace the audio source, which is still running (each switch would start the
    /// jitter buffer afresh). Only the address the current source comes from is heard,
    /// so a stray or forged packet from elsewhere makes no digit.
    fn handle_side_event(&mut self, from: SocketAddr, packet: &RtpPacket<'_>) {
        if self.source_address != Some(from) {
            self.stats.packets_ignored += 1;
            return;
        }
        self.stats.packets_received += 1;
        self.receive_event(from, packet);
    }

    /// Reports the digit of a telephone-event packet once per event (its end packets
    /// repeat, and the stream it comes in may not be the audio's).
    fn receive_event(&mut self, from: SocketAddr, packet: &RtpPacket<'_>) {
        match self
            .dtmf_receiver
            .on_packet(packet.ssrc(), packet.timestamp(), packet.payload())
        {
            Ok(Some(digit)) => {
                self.stats.dtmf_received.push(digit);
                self.emit(MediaEvent::Dtmf(digit));
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("telephone-event from {from}: {e}"),
        }
    }

    /// Probation for a source that is not the current one (RFC 3550 A.1 asks the same of
    /// new sources): it takes over after [`SOURCE_PROBATION`] packets in sequence, so one
    /// stray or forged packet cannot reset the stream.
    fn confirm_new_source(&mut self, ssrc: u32, seq: u16) -> bool {
        let count = match self.candidate {
            Some((candidate, next, count)) if candidate == ssrc && next == seq => count + 1,
            _ => 1,
        };
        if count >= SOURCE_PROBATION {
            self.candidate = None;
            true
        } else {
            self.candidate = Some((ssrc, seq.wrapping_add(1), count));
            false
        }
    }

    /// A datagram that arrived on the RTCP port at `now` (`wallclock` for the round trip).
    pub fn handle_rtcp(
        &mut self,
        now: Instant,
        wallclock: SystemTime,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        let reports = match rtcp::parse_reports(datagram) {
            Ok(reports) => reports,
            Err(e) => {
                tracing::debug!("RTCP from {from}: {e}");
                return;
            }
        };
        self.stats.rtcp_received += 1;
        if self.latched && from.port() != self.send_to.port() {
            // Symmetric RTCP: answer where reports come from (unless they came muxed on
            // the RTP port, where our RTCP would be unexpected without rtcp-mux in SDP).
            self.rtcp_to = from;
        }
        let arrival_ntp = rtcp::ntp_timestamp(wallclock);
        for report in reports {
            let blocks = match report {
                Report::Sender { info, blocks, .. } => {
                    self.last_sr = Some((rtcp::ntp_middle(info.ntp_timestamp), now));
                    blocks
                }
                Report::Receiver { blocks, .. } => blocks,
                Report::Bye => continue,
            };
            for block in blocks.iter().filter(|b| b.ssrc == self.config.ssrc) {
                self.stats.remote_report = Some(RemoteReport {
                    fraction_lost: f64::from(block.fraction_lost) / 256.0,
                    cumulative_lost: block.cumulative_lost,
                    jitter_ms: f64::from(block.jitter) * 1000.0
                        / f64::from(self.params.codec.clock_rate()),
                    rtt_ms: block
                        .round_trip(arrival_ntp)
                        .map(|d| d.as_secs_f64() * 1000.0),
                });
            }
        }
    }

    /// Time for an RTCP report (every few seconds); with `goodbye`, the last one, with a
    /// BYE.
    pub fn handle_rtcp_tick(&mut self, now: Instant, wallclock: SystemTime, goodbye: bool) {
        // RFC 3550 §6.4: an SR when we sent data since the last report or the one before.
        let sender = (self.sent_since_report || self.sent_before_last_report).then(|| SenderInfo {
            ntp_timestamp: rtcp::ntp_timestamp(wallclock),
            rtp_timestamp: self.rtp_now(),
            packet_count: self.stats.packets_sent as u32,
            octet_count: self.stats.octets_sent as u32,
        });
        self.sent_before_last_report = std::mem::take(&mut self.sent_since_report);
        let mut blocks = Vec::new();
        if let Some(reception) = &mut self.reception {
            let (last_sr, delay_since_last_sr) = match self.last_sr {
                Some((middle, at)) => (
                    middle,
                    rtcp::to_ntp_short(now.saturating_duration_since(at)),
                ),
                None => (0, 0),
            };
            blocks.push(ReceptionReport {
                ssrc: reception.ssrc(),
                fraction_lost: reception.take_fraction_lost(),
                cumulative_lost: reception
                    .cumulative_lost()
                    .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
                    as i32,
                extended_highest_seq: reception.extended_max() as u32,
                jitter: reception.jitter(),
                last_sr,
                delay_since_last_sr,
            });
        }
        if self.rtcp_to.ip().is_unspecified() {
            return;
        }
        let built = if goodbye {
            rtcp::build_goodbye(self.config.ssrc, sender, &blocks, &self.cname)
        } else {
            rtcp::build_report(self.config.ssrc, sender, &blocks, &self.cname)
        };
        match built {
            Ok(bytes) => {
                self.stats.rtcp_sent += 1;
                self.outputs.push_back(Output::Rtcp(self.rtcp_to, bytes));
            }
            Err(e) => tracing::warn!("cannot build RTCP: {e}"),
        }
    }

    /// Queues RFC 4733 events for the DTMF characters of `digits` (others are ignored).
    pub fn queue_dtmf(&mut self, digits: &str) {
        if self.params.telephone_event_pt.is_none() {
            tracing::warn!("DTMF {digits:?} not sent: the peer has no telephone-event");
            return;
        }
        self.dtmf_sender.queue(digits);
        self.stats.dtmf_sent.extend(
            digits
                .chars()
                .filter(|c| crate::dtmf::event_code(*c).is_some()),
        );
    }

    /// New parameters from a re-INVITE: direction (hold, resume), remote, codec, ptime.
    pub fn update(&mut self, now: Instant, mut params: StreamParams) {
        if params.remote != self.params.remote {
            self.send_to = params.remote;
            self.rtcp_to = rtcp_address(params.remote);
            self.latched = false;
        }
        if params.codec != self.params.codec {
            match (Encoder::new(params.codec), Decoder::new(params.codec)) {
                (Ok(encoder), Ok(decoder)) => {
                    self.encoder = encoder;
                    let old = std::mem::replace(&mut self.decoder, decoder);
                    self.previous_decoder = Some((self.params.payload_type, old));
                }
                (Err(e), _) | (_, Err(e)) => {
                    // Keep the codec in use; the rest of the change still applies.
                    tracing::warn!("codec change to {} refused: {e}", params.codec);
                    params.codec = self.params.codec;
                    params.payload_type = self.params.payload_type;
                }
            }
        }
        if params.sends() && !self.params.sends() {
            self.marker_due = true;
        }
        if params.receives() && !self.params.receives() {
            // Resumed: the silence while held was not a timeout.
            self.last_rtp = now;
            self.timeout_reported = false;
        }
        if params.codec != self.params.codec || params.ptime_ms() != self.params.ptime_ms() {
            // Keep the RTP clock continuous across the change.
            self.timestamp_base = self.rtp_now();
            self.clock = 0;
            if !self.dtmf_sender.is_busy() {
                self.dtmf_sender = dtmf_sender_for(&params);
            }
        }
        self.params = params;
    }

    /// The counters so far.
    pub fn stats(&self) -> MediaStats {
        let mut stats = self.stats.clone();
        if let Some(reception) = &self.reception {
            stats.packets_lost = reception.cumulative_lost();
            stats.jitter_ms = reception.jitter_ms();
        }
        let jitter = self.jitter.stats();
        stats.frames_concealed = jitter.lost;
        stats.packets_late = jitter.late;
        stats
    }

    /// The end: what is still buffered comes out as audio (holes concealed), then a last
    /// RTCP report with a BYE.
    pub fn finish(&mut self, now: Instant, wallclock: SystemTime) {
        for playout in self.jitter.drain() {
            let _ = self.play(playout);
        }
        self.handle_rtcp_tick(now, wallclock, true);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::g711;

    const PTIME: Duration = Duration::from_millis(20);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn config(ssrc: u32) -> StreamConfig {
        StreamConfig {
            ssrc,
            first_sequence: 65530,
            first_timestamp: 1000,
            jitter_depth: 3,
            rtp_timeout: Duration::from_secs(30),
        }
    }

    fn ramp(frames: usize) -> Vec<i16> {
        (0..frames * 160)
            .map(|i| ((i % 400) as i16 - 200) * 50)
            .collect()
    }

    fn stream(port_of_peer: u16, ssrc: u32, source: Option<Vec<i16>>, now: Instant) -> MediaStream {
        let source = source.map(|samples| SourceReader::Samples {
            samples,
            position: 0,
        });
        MediaStream::new(
            StreamParams::new(addr(port_of_peer), Codec::Pcmu),
            source,
            config(ssrc),
            now,
        )
        .unwrap()
    }

    fn drain(s: &mut MediaStream) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    /// (sequence, timestamp, marker, payload type, payload) of the RTP outputs.
    fn rtp_sent(outputs: &[Output]) -> Vec<(u16, u32, bool, u8, Vec<u8>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Rtp(_, bytes) => {
                    let p = RtpPacket::parse(bytes).unwrap();
                    Some((
                        p.sequence_number(),
                        p.timestamp(),
                        p.marker_bit(),
                        p.payload_type(),
                        p.payload().to_vec(),
                    ))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sends_a_frame_per_tick_then_reports_the_end_of_the_source() {
        let now = Instant::now();
        let source = ramp(3);
        let mut a = stream(4000, 7, Some(source.clone()), now);
        let mut out = Vec::new();
        for _ in 0..5 {
            a.handle_send_tick();
            out.extend(drain(&mut a));
        }
        let sent = rtp_sent(&out);
        // The file, then silence (µ-law 0xFF) in the same talkspurt.
        assert_eq!(sent.len(), 5);
        for (_, _, marker, pt, payload) in &sent[3..] {
            assert!(!marker);
            assert_eq!(*pt, 0);
            assert_eq!(payload, &vec![g711::linear_to_ulaw(0); 160]);
        }
        for (i, (seq, ts, marker, pt, payload)) in sent.iter().take(3).enumerate() {
            assert_eq!(*seq, 65530u16.wrapping_add(i as u16));
            assert_eq!(*ts, 1000 + 160 * i as u32);
            assert_eq!(*marker, i == 0, "marker only on the first packet");
            assert_eq!(*pt, 0);
            let expected: Vec<u8> = source[i * 160..(i + 1) * 160]
                .iter()
                .map(|&s| g711::linear_to_ulaw(s))
                .collect();
            assert_eq!(payload, &expected);
        }
        assert!(
            out.iter()
                .all(|o| !matches!(o, Output::Rtp(to, _) if *to != addr(4000)))
        );
        let finished = out
            .iter()
            .filter(|o| **o == Output::Event(MediaEvent::SourceFinished))
            .count();
        assert_eq!(finished, 1);
        assert_eq!(a.stats().packets_sent, 5);
        assert_eq!(a.stats().octets_sent, 800);
    }

    #[test]
    fn hold_keeps_the_rtp_clock_running_and_resume_starts_a_talkspurt() {
        let now = Instant::now();
        let mut a = stream(4000, 7, Some(ramp(10)), now);
        a.handle_send_tick();
        let inactive = StreamParams {
            direction: Direction::Inactive,
            ..a.params().clone()
        };
        a.update(now, inactive);
        a.handle_send_tick();
        a.handle_send_tick();
        a.update(now, StreamParams::new(addr(4000), Codec::Pcmu));
        a.handle_send_tick();
        let sent = rtp_sent(&drain(&mut a));
        assert_eq!(sent.len(), 2, "nothing sent while inactive");
        // Consecutive sequence numbers, a timestamp that counted the held time, a marker.
        assert_eq!(
            (sent[1].0, sent[1].1, sent[1].2),
            (65531, 1000 + 3 * 160, true)
        );
        // The file resumed where it stopped: the second frame.
        assert_eq!(sent[1].4[0], g711::linear_to_ulaw(ramp(2)[160]));
        // c=0.0.0.0 holds too.
        a.update(
            now,
            StreamParams::new(SocketAddr::from(([0, 0, 0, 0], 4000)), Codec::Pcmu),
        );
        a.handle_send_tick();
        assert!(rtp_sent(&drain(&mut a)).is_empty());
    }

    /// Two streams on a fake clock: A's outputs are delivered to B after `latency`.
    struct Pair {
        a: MediaStream,
        b: MediaStream,
        now: Instant,
        wall: SystemTime,
        b_audio: Vec<i16>,
        b_events: Vec<MediaEvent>,
    }

    impl Pair {
        fn new(source: Vec<i16>) -> Pair {
            let now = Instant::now();
            Pair {
                a: stream(5002, 0xA, Some(source), now),
                b: stream(5000, 0xB, None, now),
                now,
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
                b_audio: Vec::new(),
                b_events: Vec::new(),
            }
        }

        /// One ptime: A ticks and its packets reach B; B plays out.
        fn step(&mut self) {
            self.a.handle_send_tick();
            for output in drain(&mut self.a) {
                if let Output::Rtp(to, bytes) = output {
                    assert_eq!(to, addr(5002));
                    self.b.handle_rtp(self.now, self.wall, addr(5000), &bytes);
                }
            }
            self.b.handle_playout_tick(self.now);
            self.collect_b();
            self.now += PTIME;
            self.wall += PTIME;
        }

        fn collect_b(&mut self) {
            for output in drain(&mut self.b) {
                match output {
                    Output::Audio(pcm) => self.b_audio.extend(pcm),
                    Output::Event(e) => self.b_events.push(e),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn a_pair_carries_audio_through_the_jitter_buffer_and_dtmf_once_per_digit() {
        let source = ramp(20);
        let mut pair = Pair::new(source.clone());
        for _ in 0..5 {
            pair.step();
        }
        pair.a.queue_dtmf("7#");
        for _ in 0..40 {
            pair.step();
        }
        pair.b.finish(pair.now, pair.wall);
        pair.collect_b();

        // Everything A played arrived, decoded, in order, whatever the digits; then the
        // silence A sends once its file is over.
        let expected: Vec<i16> = source
            .iter()
            .map(|&s| g711::ulaw_to_linear(g711::linear_to_ulaw(s)))
            .collect();
        let (played, after) = pair.b_audio.split_at(expected.len());
        assert_eq!(played, expected);
        assert!(!after.is_empty() && after.iter().all(|&s| s == 0));
        assert_eq!(
            pair.b_events,
            vec![
                MediaEvent::RemoteAddressLatched(addr(5000)),
                MediaEvent::Dtmf('7'),
                MediaEvent::Dtmf('#'),
            ]
        );
        let b = pair.b.stats();
        assert_eq!(b.dtmf_received, "7#");
        assert_eq!(
            (b.packets_lost, b.frames_concealed, b.packets_ignored),
            (0, 0, 0)
        );
        assert_eq!(b.packets_received, pair.a.stats().packets_sent);
        assert!(b.packets_received > 20 + 2 * 7);
        assert_eq!(b.jitter_ms, 0.0, "a perfect network has no jitter");
        assert_eq!(pair.a.stats().dtmf_sent, "7#");
    }

    #[test]
    fn a_stray_packet_from_another_source_changes_nothing() {
        let mut pair = Pair::new(ramp(10));
        for _ in 0..3 {
            pair.step();
        }
        // A forged packet: another SSRC, same payload type, from elsewhere.
        let forged = RtpPacketBuilder::new()
            .payload_type(0)
            .ssrc(0xBAD)
            .sequence_number(1)
            .timestamp(1)
            .payload(&[0u8; 160][..])
            .write_vec()
            .unwrap();
        pair.b.handle_rtp(pair.now, pair.wall, addr(6666), &forged);
        for _ in 0..10 {
            pair.step();
        }
        pair.b.finish(pair.now, pair.wall);
        pair.collect_b();
        // The 10 frames of the file, then silence: a frame every tick, nothing lost.
        assert_eq!(pair.b_audio.len(), 13 * 160);
        assert_eq!(pair.b.stats().packets_ignored, 1);
        // B still sends to A, not to the forger.
        pair.b.handle_rtcp_tick(pair.now, pair.wall, false);
        assert!(matches!(pair.b.poll_output(), Some(Output::Rtcp(to, _)) if to == addr(5001)));
    }

    /// An RTP packet as a far end sends it.
    fn rtp_packet(
        pt: u8,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(pt)
            .ssrc(ssrc)
            .sequence_number(seq)
            .timestamp(timestamp)
            .marker_bit(marker)
            .payload(payload)
            .write_vec()
            .unwrap()
    }

    /// One digit as the captures Debian ships with SIPp carry it (`dtmf_2833_1.pcap`),
    /// tick by tick: eight packets 20 ms apart with one timestamp and growing durations,
    /// the last one (E bit) sent three times at once with the same sequence number.
    fn sipp_digit(event: u8, first_seq: u16, timestamp: u32) -> Vec<Vec<Vec<u8>>> {
        (0..8u16)
            .map(|i| {
                let end = i == 7;
                let payload = crate::dtmf::TelephoneEvent {
                    event,
                    end,
                    volume: 10,
                    duration: 320 * i,
                }
                .to_bytes();
                let packet =
                    rtp_packet(101, 0x0E05_384E, first_seq + i, timestamp, i == 0, &payload);
                vec![packet; if end { 3 } else { 1 }]
            })
            .collect()
    }

    /// SIPp echoes our audio (`-rtp_echo`: our own SSRC back) and plays RFC 4733 events
    /// from a capture beside it, in a second RTP stream of another SSRC, from the same
    /// address. Each digit is reported once, and the audio stream plays on undisturbed:
    /// the events are not a new source that replaces it.
    #[test]
    fn events_in_a_second_stream_beside_the_audio_are_each_reported_once() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut b = stream(5000, 0xB, None, now);
        let peer = addr(5000);
        // Audio alone for 5 ticks, digit 1, 5 ticks of audio alone, digit #, the rest.
        let mut ticks: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 5];
        ticks.extend(sipp_digit(1, 7984, 13280));
        ticks.extend(vec![Vec::new(); 5]);
        ticks.extend(sipp_digit(11, 8436, 92640));
        ticks.extend(vec![Vec::new(); 5]);
        let (mut audio, mut digits, mut t) = (Vec::new(), Vec::new(), now);
        for (i, events) in (0u16..).zip(&ticks) {
            let frame = rtp_packet(
                0,
                0xA,
                100 + i,
                5000 + 160 * u32::from(i),
                i == 0,
                &[0x55; 160],
            );
            b.handle_rtp(t, wall, peer, &frame);
            for event in events {
                b.handle_rtp(t, wall, peer, event);
            }
            b.handle_playout_tick(t);
            for output in drain(&mut b) {
                match output {
                    Output::Audio(pcm) => audio.extend(pcm),
                    Output::Event(MediaEvent::Dtmf(d)) => digits.push(d),
                    _ => {}
                }
            }
            t += PTIME;
        }
        assert_eq!(digits, vec!['1', '#']);
        assert_eq!(b.stats().dtmf_received, "1#");
        // Events of yet another stream, but from elsewhere: a stray or a forger, not heard.
        let ignored = b.stats().packets_ignored;
        for packets in sipp_digit(5, 1, 777) {
            for packet in packets {
                b.handle_rtp(t, wall, addr(6666), &packet);
            }
        }
        assert_eq!(drain(&mut b), vec![]);
        assert_eq!(b.stats().dtmf_received, "1#");
        assert_eq!(b.stats().packets_ignored, ignored + 10);
        b.finish(t, wall);
        for output in drain(&mut b) {
            if let Output::Audio(pcm) = output {
                audio.extend(pcm);
            }
        }
        // Every audio frame played, none concealed: the jitter buffer was never reset.
        assert_eq!(audio.len(), ticks.len() * 160);
        assert_eq!(b.stats().frames_concealed, 0);
        assert_eq!(b.stats().packets_lost, 0);
    }

    #[test]
    fn rtp_timeout_fires_once_on_the_fake_clock() {
        let start = Instant::now();
        let mut b = stream(4000, 0xB, None, start);
        b.handle_playout_tick(start + Duration::from_secs(29));
        assert_eq!(b.poll_output(), None);
        b.handle_playout_tick(start + Duration::from_secs(30));
        assert_eq!(b.poll_output(), Some(Output::Event(MediaEvent::RtpTimeout)));
        b.handle_playout_tick(start + Duration::from_secs(31));
        assert_eq!(b.poll_output(), None);
    }

    #[test]
    fn reports_give_the_sender_its_loss_and_round_trip() {
        let mut pair = Pair::new(ramp(50));
        for _ in 0..10 {
            pair.step();
        }
        // A's SR reaches B at once.
        pair.a.handle_rtcp_tick(pair.now, pair.wall, false);
        let Some(Output::Rtcp(to, sr)) = pair.a.poll_output() else {
            panic!("no SR");
        };
        assert_eq!(to, addr(5003));
        assert_eq!(sr[1], 200, "A sent media: an SR");
        pair.b.handle_rtcp(pair.now, pair.wall, addr(5001), &sr);
        // B answers with an RR 1 s later; it reaches A 50 ms after that.
        pair.now += Duration::from_secs(1);
        pair.wall += Duration::from_secs(1);
        pair.b.handle_rtcp_tick(pair.now, pair.wall, false);
        let Some(Output::Rtcp(_, rr)) = pair.b.poll_output() else {
            panic!("no RR");
        };
        assert_eq!(rr[1], 201, "B sent nothing: an RR");
        let arrival = pair.wall + Duration::from_millis(50);
        pair.a.handle_rtcp(pair.now, arrival, addr(5001), &rr);
        let report = pair.a.stats().remote_report.unwrap();
        assert_eq!(report.cumulative_lost, 0);
        let rtt = report.rtt_ms.unwrap();
        assert!((rtt - 50.0).abs() < 1.0, "{rtt}");
        // The last report carries a BYE.
        pair.a.finish(pair.now, pair.wall);
        let Some(Output::Rtcp(_, last)) = pair.a.poll_output() else {
            panic!("no BYE");
        };
        assert!(rtcp::parse_reports(&last).unwrap().contains(&Report::Bye));
    }

    #[test]
    fn hostile_datagrams_never_panic() {
        let mut pair = Pair::new(ramp(5));
        pair.step();
        pair.a.handle_rtcp_tick(pair.now, pair.wall, false);
        let Some(Output::Rtcp(_, sr)) = pair.a.poll_output() else {
            panic!("no SR");
        };
        let rtp = RtpPacketBuilder::new()
            .payload_type(101)
            .ssrc(0xA)
            .sequence_number(65531)
            .timestamp(1160)
            .payload(&[1u8, 0x80, 0, 160][..])
            .write_vec()
            .unwrap();
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for len in 0..80 {
            for fill in [0x00, 0x80, 0x81, 0xFF] {
                inputs.push(vec![fill; len]);
            }
        }
        // Every single-byte corruption and every truncation of a valid RTP (event) packet
        // and a valid SR.
        for valid in [&rtp, &sr] {
            for i in 0..valid.len() {
                for bit in 0..8 {
                    let mut v = valid.clone();
                    v[i] ^= 1 << bit;
                    inputs.push(v);
                }
                inputs.push(valid[..i].to_vec());
            }
        }
        for input in &inputs {
            pair.b.handle_rtp(pair.now, pair.wall, addr(5000), input);
            pair.b.handle_rtcp(pair.now, pair.wall, addr(5001), input);
            pair.b.handle_playout_tick(pair.now);
        }
        // Still working.
        for _ in 0..5 {
            pair.step();
        }
        assert!(pair.b.stats().packets_received > 0);
    }
}
