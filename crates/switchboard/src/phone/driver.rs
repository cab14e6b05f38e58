//! The tokio task that runs a `sip_ua` [`Core`]: it feeds it what the endpoint
//! receives, the timers it asks for, the media session's events, Enter on standard input
//! and Ctrl-C or SIGTERM, and performs what it asks: messages onto the network,
//! [`MediaCommand`]s on a real [`MediaSession`], events printed by the [`Printer`]. No
//! decision is taken here.

use crate::phone::exit;
use crate::phone::print::Printer;
use media::{AudioSink, MediaSession};
use sip_core::Transport;
use sip_net::{Endpoint, HandshakeFailure, Incoming, SendError, Target};
use sip_ua::{Core, LocalAddrs, MediaCommand, Output, Settings, Task};
use std::time::Instant;
use tokio::sync::mpsc;

/// Why a send failed, for the person running the phone: what went wrong and, for a
/// certificate refused, what to do about it.
fn send_error_text(e: &SendError) -> String {
    match e {
        SendError::TlsHandshake {
            failure: failure @ HandshakeFailure::Certificate { problem, .. },
            ..
        } => {
            let hint = match *problem {
                "not trusted" => ": pass --ca FILE with the server's certificate (or its CA)",
                "not valid for this address" => {
                    ": reach the server by a name or address its certificate names"
                }
                _ => "",
            };
            format!("TLS: {failure}{hint}")
        }
        SendError::TlsHandshake { failure, .. } => format!("TLS: {failure}"),
        SendError::AllTargetsFailed { last, .. } => send_error_text(last),
        other => other.to_string(),
    }
}

/// Fresh randomness for the user agent's identifiers, from the OS. Without it (no
/// getrandom, which Linux always has) the clock and the process id: they still differ
/// from one run to the next, which is what tags need most.
fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        seed[..16].copy_from_slice(&t.to_le_bytes());
        seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    seed
}

/// The media crate's stream for what the user agent agreed.
fn stream_params(p: sip_ua::StreamParams) -> media::StreamParams {
    media::StreamParams {
        remote: p.remote,
        codec: match p.codec {
            sip_ua::Codec::Pcmu => media::Codec::Pcmu,
            sip_ua::Codec::Pcma => media::Codec::Pcma,
            sip_ua::Codec::Opus => media::Codec::Opus,
        },
        payload_type: p.payload_type,
        telephone_event_pt: p.telephone_event_pt,
        direction: p.direction,
        ptime_ms: p.ptime_ms,
    }
}

/// The user agent's view of what the media session reported.
fn ua_media_event(e: media::MediaEvent) -> sip_ua::MediaEvent {
    match e {
        media::MediaEvent::Dtmf(d) => sip_ua::MediaEvent::Dtmf(d),
        media::MediaEvent::RemoteAddressLatched(a) => sip_ua::MediaEvent::RemoteAddressLatched(a),
        media::MediaEvent::SourceFinished => sip_ua::MediaEvent::SourceFinished,
        media::MediaEvent::RtpTimeout => sip_ua::MediaEvent::RtpTimeout,
    }
}

/// `switchboard phone`'s user agent: a [`Core`] on an [`Endpoint`].
pub struct Ua {
    core: Core,
    endpoint: Endpoint,
    out: Printer,
    /// Whether Enter on standard input answers calls.
    reads_stdin: bool,
    /// The media session bound ahead of the next call (its port is in the core).
    spare: Option<MediaSession>,
    /// The media session of the call in progress.
    active: Option<MediaSession>,
    media_rx: Option<mpsc::Receiver<media::MediaEvent>>,
    /// Sessions of ended calls, stopped (recordings finalized) by the loop.
    stopping: Vec<MediaSession>,
}

impl Ua {
    /// A user agent on `endpoint` (already listening) that will do `task`.
    pub fn new(endpoint: Endpoint, s: Settings, task: Task, out: Printer) -> Ua {
        let local = LocalAddrs {
            udp: endpoint.local_addr(Transport::Udp),
            tcp: endpoint.local_addr(Transport::Tcp),
        };
        let reads_stdin = matches!(&task, Task::Answer(a) if !a.auto && a.reject.is_none());
        Ua {
            core: Core::new(local, s, task, seed()),
            endpoint,
            out,
            reads_stdin,
            spare: None,
            active: None,
            media_rx: None,
            stopping: Vec::new(),
        }
    }

    /// Runs until the task is done (and the registration removed); returns the exit code.
    pub async fn run(mut self, mut incoming: mpsc::Receiver<Incoming>) -> u8 {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut stdin_rx = None;
        if self.reads_stdin {
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    if tx.send(std::mem::take(&mut line)).is_err() {
                        break;
                    }
                }
            });
            stdin_rx = Some(rx);
        }
        self.bind_spare_media().await;
        if let Some(flow) = self.core.connection_to_open() {
            // Its local address goes into Via and Contact. When it fails, the first
            // request fails the same way and the core says why.
            match self.endpoint.connect(flow.transport, flow.remote).await {
                Ok(opened) => {
                    if let Some(local) = opened.local {
                        self.core.set_connection_local(local);
                    }
                }
                Err(e) => tracing::debug!("cannot connect to {}: {e}", flow.remote),
            }
        }
        self.core.start(Instant::now());
        loop {
            self.drain().await;
            if self.core.needs_media_port() {
                self.bind_spare_media().await;
            }
            for media in std::mem::take(&mut self.stopping) {
                let stats = media.stop().await;
                tracing::debug!(?stats, "media stopped");
            }
            if self.core.finished().is_some() {
                self.core.begin_exit(Instant::now());
                self.drain().await;
                if let Some(code) = self.core.exit_code() {
                    return code;
                }
            }
            let next = self.core.poll_timeout();
            let sleep = async move {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let media_rx = &mut self.media_rx;
            let media_event = async move {
                match media_rx {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let stdin_line = async {
                match stdin_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let term = async {
                match terminate.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = incoming.recv() => match m {
                    Some(Incoming::Message { msg, flow, .. }) => {
                        self.core.on_message(msg, flow, Instant::now());
                    }
                    Some(_) => {}
                    None => {
                        self.out.warn("the transport layer stopped");
                        return exit::FAILED;
                    }
                },
                () = sleep => self.core.on_timeout(Instant::now()),
                ev = media_event => match ev {
                    Some(ev) => self.core.on_media(ua_media_event(ev)),
                    None => self.media_rx = None,
                },
                line = stdin_line => match line {
                    Some(_) => self.core.on_enter(Instant::now()),
                    None => stdin_rx = None,
                },
                _ = tokio::signal::ctrl_c() => self.core.interrupt(Instant::now()),
                _ = term => self.core.interrupt(Instant::now()),
            }
        }
    }

    async fn bind_spare_media(&mut self) {
        let result = match MediaSession::bind(self.core.local_ip()).await {
            Ok(m) => {
                let port = m.local_rtp_port();
                self.spare = Some(m);
                Ok(port)
            }
            Err(e) => Err(e.to_string()),
        };
        self.core.set_media_port(result);
    }

    /// Sends what the core queued, hands it what the transaction layer reported, and
    /// performs its outputs, until nothing is left.
    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.core.poll_transmit() {
                progressed = true;
                if let Err(e) = self.endpoint.send(Target::Flow(t.flow), t.bytes).await {
                    tracing::debug!("send to {} failed: {e}", t.flow.remote);
                    if let Some(key) = t.key {
                        self.core
                            .on_transport_error(key, send_error_text(&e), Instant::now());
                    }
                }
            }
            progressed |= self.core.handle_events(Instant::now());
            while let Some(output) = self.core.poll_output() {
                progressed = true;
                self.perform(output);
            }
            if !progressed {
                break;
            }
        }
    }

    fn perform(&mut self, output: Output) {
        match output {
            Output::Event(e) => self.out.print(&e),
            Output::Warning(w) => self.out.warn(&w),
            Output::Media(command) => self.media(command),
        }
    }

    fn media(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::Bind { port } => {
                if let Some(old) = self.active.take() {
                    self.stopping.push(old);
                }
                match self.spare.take() {
                    Some(m) if m.local_rtp_port() == port => self.active = Some(m),
                    other => {
                        self.spare = other;
                        tracing::warn!("no media session bound on port {port}");
                    }
                }
            }
            MediaCommand::Start {
                params,
                source,
                record,
            } => {
                let sink = match record {
                    Some(path) => match AudioSink::wav(&path) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            self.out
                                .warn(&format!("cannot record to {}: {e}", path.display()));
                            None
                        }
                    },
                    None => None,
                };
                let Some(media) = self.active.as_mut() else {
                    self.core.on_media_start_failed();
                    return;
                };
                let source = match source {
                    sip_ua::AudioSource::Wav(path) => media::AudioSource::Wav(path),
                    sip_ua::AudioSource::Silence => media::AudioSource::Silence,
                };
                if let Err(e) = media.start(stream_params(params), Some(source), sink) {
                    self.out.warn(&format!("media did not start: {e}"));
                    self.core.on_media_start_failed();
                } else {
                    self.media_rx = Some(media.events());
                }
            }
            MediaCommand::Update(params) => {
                if let Some(media) = self.active.as_mut() {
                    media.update(stream_params(params));
                }
            }
            MediaCommand::SendDtmf(digits) => {
                if let Some(media) = self.active.as_mut() {
                    media.send_dtmf(&digits);
                }
            }
            MediaCommand::Stop => {
                if let Some(media) = self.active.take() {
                    self.stopping.push(media);
                }
                self.media_rx = None;
            }
        }
    }
}
