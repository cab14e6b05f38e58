//! The tokio driver of a [`MediaStream`]: one task per started session owns the RTP and
//! RTCP sockets and the sink, ticks the stream's clocks, carries out what it outputs, and
//! answers the application's commands (update, DTMF, stats, stop).

use crate::MediaError;
use crate::audio::{AudioSink, AudioSource, SourceReader};
use crate::stream::{MediaEvent, MediaStats, MediaStream, Output, StreamConfig, StreamParams};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};

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
/// Default silence before [`MediaEvent::RtpTimeout`].
const DEFAULT_RTP_TIMEOUT: Duration = Duration::from_secs(30);

impl MediaSession {
    /// Binds an even RTP port on `local_ip` and RTCP on the next one.
    pub async fn bind(local_ip: IpAddr) -> std::io::Result<MediaSession> {
        Self::bind_now(local_ip)
    }

    /// [`MediaSession::bind`] without a future, for a caller that must have the port
    /// before it goes on (a phone's loop that puts it in the SDP of a call arriving next).
    /// Binding a UDP socket never waits; this must run inside a tokio runtime.
    pub fn bind_now(local_ip: IpAddr) -> std::io::Result<MediaSession> {
        let bind = |port| {
            let socket = std::net::UdpSocket::bind(SocketAddr::new(local_ip, port))?;
            socket.set_nonblocking(true)?;
            UdpSocket::from_std(socket)
        };
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            // The kernel picks a free port; keep it if it is even and the next one is free.
            let rtp = bind(0)?;
            let port = rtp.local_addr()?.port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            match bind(port + 1) {
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
        let source = source.as_ref().map(SourceReader::open).transpose()?;
        let config = StreamConfig {
            jitter_depth: self.jitter_depth,
            rtp_timeout: self.rtp_timeout,
            ..StreamConfig::random()
        };
        let stream = MediaStream::new(params, source, config, Instant::now())?;
        let Some((rtp, rtcp)) = self.sockets.take() else {
            return Err(MediaError::AlreadyStarted);
        };
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            stream,
            rtp,
            rtcp,
            sink,
            events: self.events_tx.clone(),
            rtcp_interval: self.rtcp_interval,
        };
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

/// The session task's state.
struct Driver {
    stream: MediaStream,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    sink: Option<AudioSink>,
    events: mpsc::Sender<MediaEvent>,
    rtcp_interval: Duration,
}

impl Driver {
    fn pacing(&self) -> Interval {
        // Burst: after a stall the late packets go out at once, so no audio is lost and
        // the RTP clock stays on real time; the far jitter buffer absorbs the burst.
        let ptime = self.stream.params().ptime();
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
                _ = send_tick.tick() => self.stream.handle_send_tick(),
                _ = playout_tick.tick() => self.stream.handle_playout_tick(Instant::now()),
                _ = rtcp_tick.tick() => {
                    self.stream.handle_rtcp_tick(Instant::now(), SystemTime::now(), false);
                }
                received = self.rtp.recv_from(&mut rtp_buf) => match received {
                    Ok((len, from)) => self.stream.handle_rtp(
                        Instant::now(),
                        SystemTime::now(),
                        from,
                        &rtp_buf[..len],
                    ),
                    // ICMP port unreachable from an earlier send shows up here on some
                    // systems: not fatal.
                    Err(e) => tracing::debug!("RTP receive: {e}"),
                },
                received = self.rtcp.recv_from(&mut rtcp_buf) => match received {
                    Ok((len, from)) => self.stream.handle_rtcp(
                        Instant::now(),
                        SystemTime::now(),
                        from,
                        &rtcp_buf[..len],
                    ),
                    Err(e) => tracing::debug!("RTCP receive: {e}"),
                },
                command = commands.recv() => match command {
                    Some(Command::Update(params)) => {
                        let ptime_changed = params.ptime() != self.stream.params().ptime();
                        self.stream.update(Instant::now(), params);
                        if ptime_changed {
                            send_tick = self.pacing();
                            playout_tick = self.pacing();
                        }
                    }
                    Some(Command::Dtmf(digits)) => self.stream.queue_dtmf(&digits),
                    Some(Command::Stats(reply)) => {
                        let _ = reply.send(self.stats());
                    }
                    Some(Command::Stop) | None => break,
                },
            }
            self.carry_out().await;
        }
        // Play out what is still buffered (the tail of the far side's audio), say BYE.
        self.stream.finish(Instant::now(), SystemTime::now());
        self.carry_out().await;
        let stats = self.stats();
        if let Some(sink) = self.sink.take()
            && let Err(e) = sink.finalize()
        {
            tracing::warn!("recording not finalized: {e}");
        }
        stats
    }

    /// Does what the stream asks.
    async fn carry_out(&mut self) {
        while let Some(output) = self.stream.poll_output() {
            match output {
                Output::Rtp(to, bytes) => {
                    if let Err(e) = self.rtp.send_to(&bytes, to).await {
                        tracing::debug!("RTP send to {to}: {e}");
                    }
                }
                Output::Rtcp(to, bytes) => {
                    if let Err(e) = self.rtcp.send_to(&bytes, to).await {
                        tracing::debug!("RTCP send to {to}: {e}");
                    }
                }
                Output::Audio(pcm) => {
                    if let Some(sink) = &mut self.sink
                        && let Err(e) = sink.write(&pcm)
                    {
                        tracing::warn!("recording stopped: {e}");
                        self.sink = None;
                    }
                }
                Output::Event(event) => {
                    if self.events.try_send(event).is_err() {
                        tracing::debug!("media event dropped: nobody reads the events");
                    }
                }
            }
        }
    }

    fn stats(&self) -> MediaStats {
        let mut stats = self.stream.stats();
        stats.samples_recorded = self.sink.as_ref().map_or(0, AudioSink::samples);
        stats
    }
}
