//! The tokio driver: one task per started session owns the RTP and RTCP sockets, paces
//! sending, feeds the jitter buffer and the sink, and answers commands (update, DTMF, stop).

use crate::MediaError;
use crate::audio::{AudioSink, AudioSource, SourceReader};
use crate::codec::{Codec, Decoder, Encoder, PCM_RATE};
use crate::dtmf::{DtmfReceiver, DtmfSender, DtmfTick, EventPacket};
use crate::jitter::{JitterBuffer, Playout};
use crate::rtcp::{self, ReceptionReport, Report, SenderInfo};
use crate::stats::ReceptionStats;
use rtp_types::{RtpPacket, RtpPacketBuilder};
use sip_core::sdp::Direction;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};

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

    fn ptime(&self) -> Duration {
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
    /// The WAV source is over; no more audio is sent.
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
    /// Samples written to the sink (8 kHz).
    pub samples_recorded: u64,
}

enum Command {
    Update(StreamParams),
    Dtmf(String),
    Stats(oneshot::Sender<MediaStats>),
    Stop,
}

/// One audio stream over RTP/RTCP: bound first (to put the port in SDP), started once the
/// offer/answer is done, updated by re-INVITEs, stopped at BYE. Dropping it without `stop`
/// also ends the task (it sees its command channel close) and finalizes the recording.
#[derive(Debug)]
pub struct MediaSession {
    sockets: Option<(UdpSocket, UdpSocket)>,
    local_rtp_port: u16,
    events_tx: mpsc::Sender<MediaEvent>,
    events_rx: Option<mpsc::Receiver<MediaEvent>>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    task: Option<JoinHandle<MediaStats>>,
    rtp_timeout: Duration,
    rtcp_interval: Duration,
    jitter_depth: usize,
}

/// How many bind attempts to find an even port whose successor is free.
const BIND_ATTEMPTS: usize = 64;
/// Events not yet read beyond this are dropped (the task never blocks on the application).
const EVENT_QUEUE: usize = 256;
/// RTCP report interval (RFC 3550 §6.2 minimum; two-party calls need no scaling).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Packets the jitter buffer holds at most (2 s at 20 ms) before dropping the oldest.
const JITTER_CAPACITY: usize = 100;
/// Packets in sequence a new source must send before it replaces the current one.
const SOURCE_PROBATION: u32 = 3;
/// Default silence before [`MediaEvent::RtpTimeout`].
const DEFAULT_RTP_TIMEOUT: Duration = Duration::from_secs(30);

impl MediaSession {
    /// Binds an even RTP port on `local_ip` and RTCP on the next one.
    pub async fn bind(local_ip: IpAddr) -> std::io::Result<MediaSession> {
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            // The kernel picks a free port; keep it if it is even and the next one is free.
            let rtp = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
            let port = rtp.local_addr()?.port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            match UdpSocket::bind(SocketAddr::new(local_ip, port + 1)).await {
                Ok(rtcp) => {
                    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
                    return Ok(MediaSession {
                        sockets: Some((rtp, rtcp)),
                        local_rtp_port: port,
                        events_tx,
                        events_rx: Some(events_rx),
                        commands: None,
                        task: None,
                        rtp_timeout: DEFAULT_RTP_TIMEOUT,
                        rtcp_interval: RTCP_INTERVAL,
                        jitter_depth: 3,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "no even RTP port with a free RTCP port",
            )
        }))
    }

    /// The RTP port to put in SDP (RTCP is the next one).
    pub fn local_rtp_port(&self) -> u16 {
        self.local_rtp_port
    }

    /// How long without RTP (while receiving) before [`MediaEvent::RtpTimeout`]; 30 s by
    /// default. Takes effect at `start`.
    pub fn set_rtp_timeout(&mut self, timeout: Duration) {
        self.rtp_timeout = timeout;
    }

    /// The RTCP report interval, 5 s by default (RFC 3550 §6.2's minimum; a two-party
    /// call needs no scaling). Takes effect at `start`.
    pub fn set_rtcp_interval(&mut self, interval: Duration) {
        self.rtcp_interval = interval.max(Duration::from_millis(100));
    }

    /// Jitter buffer depth in packets (3 by default: 60 ms at 20 ms ptime). Takes effect
    /// at `start`.
    pub fn set_jitter_depth(&mut self, packets: usize) {
        self.jitter_depth = packets.max(1);
    }

    /// Starts sending `source` (none: send no audio, DTMF only) and recording into `sink`.
    /// A WAV source is read whole here (blocking; voice prompts are small), so a missing or
    /// malformed file is reported now, and the session is left unstarted.
    pub fn start(
        &mut self,
        params: StreamParams,
        source: Option<AudioSource>,
        sink: Option<AudioSink>,
    ) -> Result<(), MediaError> {
        if self.sockets.is_none() {
            return Err(MediaError::AlreadyStarted);
        }
        let encoder = Encoder::new(params.codec)?;
        let decoder = Decoder::new(params.codec)?;
        let source = source.as_ref().map(SourceReader::open).transpose()?;
        let Some((rtp, rtcp)) = self.sockets.take() else {
            return Err(MediaError::AlreadyStarted);
        };
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let driver = Driver::new(
            params,
            DriverParts {
                rtp,
                rtcp,
                encoder,
                decoder,
                source,
                sink,
                events: self.events_tx.clone(),
                rtp_timeout: self.rtp_timeout,
                rtcp_interval: self.rtcp_interval,
                jitter_depth: self.jitter_depth,
            },
        );
        self.commands = Some(commands_tx);
        self.task = Some(tokio::spawn(driver.run(commands_rx)));
        Ok(())
    }

    /// A re-INVITE changed the stream: direction (hold, resume), remote address, codec.
    pub fn update(&mut self, params: StreamParams) {
        self.command(Command::Update(params));
    }

    /// Queues RFC 4733 events for `digits` (0-9, *, #, A-D; others ignored): 100 ms each
    /// with 50 ms between. Needs a telephone-event payload type in the stream parameters.
    pub fn send_dtmf(&mut self, digits: &str) {
        self.command(Command::Dtmf(digits.to_owned()));
    }

    /// The receiver of events. The first call takes it; later calls get a closed one.
    pub fn events(&mut self) -> mpsc::Receiver<MediaEvent> {
        self.events_rx.take().unwrap_or_else(|| mpsc::channel(1).1)
    }

    /// The counters so far (defaults before `start`).
    pub async fn stats(&self) -> MediaStats {
        let (tx, rx) = oneshot::channel();
        match &self.commands {
            Some(commands) if commands.send(Command::Stats(tx)).is_ok() => {
                rx.await.unwrap_or_default()
            }
            _ => MediaStats::default(),
        }
    }

    /// Stops sending and receiving, finalizes the WAV sink, and returns the counters.
    pub async fn stop(mut self) -> MediaStats {
        self.command(Command::Stop);
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => MediaStats::default(),
        }
    }

    fn command(&self, command: Command) {
        if let Some(commands) = &self.commands {
            // The task only ends on Stop, which consumes the session: a send error cannot
            // happen before that, and nothing is lost if it did.
            let _ = commands.send(command);
        }
    }
}

struct DriverParts {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    encoder: Encoder,
    decoder: Decoder,
    source: Option<SourceReader>,
    sink: Option<AudioSink>,
    events: mpsc::Sender<MediaEvent>,
    rtp_timeout: Duration,
    rtcp_interval: Duration,
    jitter_depth: usize,
}

/// The session task's state.
struct Driver {
    params: StreamParams,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    send_to: SocketAddr,
    rtcp_to: SocketAddr,
    latched: bool,
    encoder: Encoder,
    decoder: Decoder,
    /// The payload type and decoder in use before a codec change, for the packets of the
    /// old codec still on their way.
    previous_decoder: Option<(u8, Decoder)>,
    source: Option<SourceReader>,
    source_finished: bool,
    sink: Option<AudioSink>,
    events: mpsc::Sender<MediaEvent>,

    ssrc: u32,
    cname: String,
    seq: u16,
    timestamp_base: u32,
    /// Packetization ticks since start: the RTP clock advances with them, sending or not.
    clock: u32,
    marker_due: bool,
    dtmf_sender: DtmfSender,
    dtmf_receiver: DtmfReceiver,

    /// Received audio frames: payload type and payload.
    jitter: JitterBuffer<(u8, Vec<u8>)>,
    jitter_depth: usize,
    /// Samples the playout owes the sink (may run negative when a frame was long).
    playout_credit: i64,
    /// Length of the last frame played: the length of a concealed one.
    last_frame_len: usize,
    reception: Option<ReceptionStats>,
    /// A source on probation to replace the current one: SSRC, next sequence number,
    /// packets seen in sequence.
    candidate: Option<(u32, u16, u32)>,
    started: Instant,
    last_rtp: Instant,
    rtp_timeout: Duration,
    rtcp_interval: Duration,
    timeout_reported: bool,
    /// The last SR from the far side: its NTP middle bits and when it arrived.
    last_sr: Option<(u32, Instant)>,
    sent_since_report: bool,
    sent_before_last_report: bool,
    stats: MediaStats,
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

fn rtcp_address(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
}

impl Driver {
    fn new(params: StreamParams, parts: DriverParts) -> Driver {
        let now = Instant::now();
        let ssrc = random_u32();
        let jitter = JitterBuffer::new(parts.jitter_depth, JITTER_CAPACITY);
        let params_ptime = params.ptime_ms();
        Driver {
            send_to: params.remote,
            rtcp_to: rtcp_address(params.remote),
            latched: false,
            dtmf_sender: dtmf_sender_for(&params),
            params,
            rtp: parts.rtp,
            rtcp: parts.rtcp,
            encoder: parts.encoder,
            decoder: parts.decoder,
            previous_decoder: None,
            source: parts.source,
            source_finished: false,
            sink: parts.sink,
            events: parts.events,
            ssrc,
            cname: format!("{ssrc:08x}@switchboard"),
            seq: random_u32() as u16,
            timestamp_base: random_u32(),
            clock: 0,
            marker_due: true,
            dtmf_receiver: DtmfReceiver::new(),
            jitter,
            jitter_depth: parts.jitter_depth,
            playout_credit: 0,
            last_frame_len: (PCM_RATE / 1000 * params_ptime) as usize,
            reception: None,
            candidate: None,
            started: now,
            last_rtp: now,
            rtp_timeout: parts.rtp_timeout,
            rtcp_interval: parts.rtcp_interval,
            timeout_reported: false,
            last_sr: None,
            sent_since_report: false,
            sent_before_last_report: false,
            stats: MediaStats::default(),
        }
    }

    fn emit(&self, event: MediaEvent) {
        if self.events.try_send(event).is_err() {
            tracing::debug!("media event dropped: nobody reads the events");
        }
    }

    fn pacing(&self) -> Interval {
        // Burst: after a stall the late packets go out at once, so no audio is lost and
        // the RTP clock stays on real time; the far jitter buffer absorbs the burst.
        let ptime = self.params.ptime();
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + ptime, ptime);
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        interval
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) -> MediaStats {
        let mut send_tick = self.pacing();
        let mut playout_tick = self.pacing();
        // The first report after half an interval (RFC 3550 §6.2 allows a shorter first one).
        let mut rtcp_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.rtcp_interval / 2,
            self.rtcp_interval,
        );
        rtcp_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut rtp_buf = vec![0u8; 2048];
        let mut rtcp_buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                _ = send_tick.tick() => self.on_send_tick().await,
                _ = playout_tick.tick() => self.on_playout_tick(),
                _ = rtcp_tick.tick() => self.send_rtcp(false).await,
                received = self.rtp.recv_from(&mut rtp_buf) => match received {
                    // rtcp-mux peers (RFC 5761) send RTCP to the RTP port.
                    Ok((len, from)) if rtcp::is_rtcp(&rtp_buf[..len]) => {
                        self.on_rtcp(&rtp_buf[..len], from);
                    }
                    Ok((len, from)) => self.on_rtp(&rtp_buf[..len], from),
                    // ICMP port unreachable from an earlier send shows up here on some
                    // systems: not fatal.
                    Err(e) => tracing::debug!("RTP receive: {e}"),
                },
                received = self.rtcp.recv_from(&mut rtcp_buf) => match received {
                    Ok((len, from)) => self.on_rtcp(&rtcp_buf[..len], from),
                    Err(e) => tracing::debug!("RTCP receive: {e}"),
                },
                command = commands.recv() => match command {
                    Some(Command::Update(params)) => {
                        let ptime_changed = params.ptime_ms() != self.params.ptime_ms();
                        self.update(params);
                        if ptime_changed {
                            send_tick = self.pacing();
                            playout_tick = self.pacing();
                        }
                    }
                    Some(Command::Dtmf(digits)) => self.queue_dtmf(&digits),
                    Some(Command::Stats(reply)) => {
                        let _ = reply.send(self.snapshot());
                    }
                    Some(Command::Stop) | None => break,
                },
            }
        }
        self.finish().await
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

    async fn send_rtp(&mut self, payload_type: u8, timestamp: u32, marker: bool, payload: &[u8]) {
        let packet = RtpPacketBuilder::new()
            .payload_type(payload_type)
            .ssrc(self.ssrc)
            .sequence_number(self.seq)
            .timestamp(timestamp)
            .marker_bit(marker)
            .payload(payload);
        let bytes = match packet.write_vec() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!("cannot build RTP packet: {e}");
                return;
            }
        };
        self.seq = self.seq.wrapping_add(1);
        match self.rtp.send_to(&bytes, self.send_to).await {
            Ok(_) => {
                self.stats.packets_sent += 1;
                self.stats.octets_sent += payload.len() as u64;
                self.sent_since_report = true;
            }
            Err(e) => tracing::debug!("RTP send to {}: {e}", self.send_to),
        }
    }

    async fn on_send_tick(&mut self) {
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
                        self.send_rtp(pt, timestamp, marker, &event.to_bytes())
                            .await;
                    }
                    self.marker_due = true;
                    return;
                }
            }
        }
        if self.source_finished {
            return;
        }
        let frame_len = self.pcm_frame_len();
        let Some(frame) = self.source.as_mut().and_then(|s| s.next_frame(frame_len)) else {
            if self.source.is_some() {
                self.source_finished = true;
                self.emit(MediaEvent::SourceFinished);
            }
            return;
        };
        let payload = self.encoder.encode(&frame);
        if payload.is_empty() {
            return;
        }
        let marker = std::mem::take(&mut self.marker_due);
        let pt = self.params.payload_type;
        self.send_rtp(pt, now, marker, &payload).await;
    }

    fn on_playout_tick(&mut self) {
        // Play one ptime of audio per tick, in as many packets as that takes: the far side
        // may packetize at another ptime than ours.
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
        self.check_timeout();
    }

    /// Decodes (or conceals) one frame into the sink; returns its length in samples.
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
        if !frame.is_empty() {
            self.last_frame_len = frame.len();
        }
        if !frame.is_empty()
            && let Some(sink) = &mut self.sink
        {
            if let Err(e) = sink.write(&frame) {
                tracing::warn!("recording stopped: {e}");
                self.sink = None;
            } else {
                self.stats.samples_recorded = sink.samples();
            }
        }
        frame.len()
    }

    fn check_timeout(&mut self) {
        if self.params.receives()
            && !self.timeout_reported
            && self.last_rtp.elapsed() >= self.rtp_timeout
        {
            self.timeout_reported = true;
            self.emit(MediaEvent::RtpTimeout);
        }
    }

    fn on_rtp(&mut self, datagram: &[u8], from: SocketAddr) {
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
                self.jitter = JitterBuffer::new(self.jitter_depth, JITTER_CAPACITY);
                self.dtmf_receiver = DtmfReceiver::new();
                self.latched = false;
            }
            let clock_rate = self.params.codec.clock_rate();
            self.reception = Some(ReceptionStats::new(ssrc, clock_rate, seq));
        }
        if !self.latched {
            self.latched = true;
            if from != self.send_to {
                self.send_to = from;
                self.rtcp_to = rtcp_address(from);
            }
            self.emit(MediaEvent::RemoteAddressLatched(from));
        }
        self.last_rtp = Instant::now();
        self.timeout_reported = false;

        let clock_rate = self.params.codec.clock_rate();
        let arrival = (self.started.elapsed().as_secs_f64() * f64::from(clock_rate)) as u64 as u32;
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
        match self
            .dtmf_receiver
            .on_packet(packet.timestamp(), packet.payload())
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

    fn on_rtcp(&mut self, datagram: &[u8], from: SocketAddr) {
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
        let arrival_ntp = rtcp::ntp_timestamp(SystemTime::now());
        for report in reports {
            let blocks = match report {
                Report::Sender { info, blocks, .. } => {
                    self.last_sr = Some((rtcp::ntp_middle(info.ntp_timestamp), Instant::now()));
                    blocks
                }
                Report::Receiver { blocks, .. } => blocks,
                Report::Bye => continue,
            };
            for block in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
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

    async fn send_rtcp(&mut self, goodbye: bool) {
        // RFC 3550 §6.4: an SR when we sent data since the last report or the one before.
        let sender = (self.sent_since_report || self.sent_before_last_report).then(|| SenderInfo {
            ntp_timestamp: rtcp::ntp_timestamp(SystemTime::now()),
            rtp_timestamp: self.rtp_now(),
            packet_count: self.stats.packets_sent as u32,
            octet_count: self.stats.octets_sent as u32,
        });
        self.sent_before_last_report = std::mem::take(&mut self.sent_since_report);
        let mut blocks = Vec::new();
        if let Some(reception) = &mut self.reception {
            let (last_sr, delay_since_last_sr) = match self.last_sr {
                Some((middle, at)) => (middle, rtcp::to_ntp_short(at.elapsed())),
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
            rtcp::build_goodbye(self.ssrc, sender, &blocks, &self.cname)
        } else {
            rtcp::build_report(self.ssrc, sender, &blocks, &self.cname)
        };
        match built {
            Ok(bytes) => match self.rtcp.send_to(&bytes, self.rtcp_to).await {
                Ok(_) => self.stats.rtcp_sent += 1,
                Err(e) => tracing::debug!("RTCP send to {}: {e}", self.rtcp_to),
            },
            Err(e) => tracing::warn!("cannot build RTCP: {e}"),
        }
    }

    fn queue_dtmf(&mut self, digits: &str) {
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

    fn update(&mut self, mut params: StreamParams) {
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
            self.last_rtp = Instant::now();
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

    fn snapshot(&self) -> MediaStats {
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

    async fn finish(mut self) -> MediaStats {
        // Play out what is still buffered: the tail of the far side's audio.
        for playout in self.jitter.drain() {
            let _ = self.play(playout);
        }
        self.send_rtcp(true).await;
        let stats = self.snapshot();
        if let Some(sink) = self.sink.take()
            && let Err(e) = sink.finalize()
        {
            tracing::warn!("recording not finalized: {e}");
        }
        stats
    }
}

fn dtmf_sender_for(params: &StreamParams) -> DtmfSender {
    let rate = params.codec.clock_rate();
    DtmfSender::new(rate / 10, rate / 20)
}
