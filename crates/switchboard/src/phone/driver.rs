//! `switchboard phone` on the one driver loop: a `sip_ua` [`UserAgent`] wrapped as a
//! [`Machine`] ([`Phone`]) and run by `sip_net`'s [`Driver`], like the server's router.
//! The driver feeds it what the endpoint receives and the timers it asks for; Enter on
//! standard input, Ctrl-C or SIGTERM and the media session's events come in on the
//! driver's side channel ([`PhoneInput`]). What the user agent asks for is carried out:
//! messages sent without waiting on a connect (a failure comes back with its
//! [`SendError`], told to the person), [`MediaCommand`]s on a real [`MediaSession`] per
//! call (two during a transfer), events printed by the [`Printer`]. No decision is
//! taken here.

use crate::phone::exit;
use crate::phone::print::Printer;
use media::{AudioSink, MediaSession};
use sip_core::Transport;
use sip_core::transaction::TransactionKey;
use sip_net::driver::NO_TOKEN;
use sip_net::{Driver, Endpoint, HandshakeFailure, Incoming, Machine, Now, SendError, Transmit};
use sip_ua::{LocalAddrs, MediaCommand, Output, Settings, Task, TransferScript, UserAgent};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Inputs of the side channel not yet read beyond this wait (a key, a signal, a media
/// event: a handful a second at most).
const SIDE_QUEUE: usize = 256;

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

/// What reaches the phone besides the network and its timers.
#[derive(Debug)]
pub enum PhoneInput {
    /// Enter on standard input (answers the call ringing, or transfers the call up).
    Enter,
    /// Ctrl-C or SIGTERM.
    Interrupt,
    /// An event of the media session numbered `session` (see [`Phone`]'s `session`).
    Media {
        /// The session it came from.
        session: u64,
        /// What happened.
        event: media::MediaEvent,
    },
}

/// What the phone asks the loop to do beside it.
#[derive(Debug)]
pub enum PhoneEffect {
    /// Forward a started session's events as [`PhoneInput::Media`] with `session`.
    WatchMedia {
        /// The session's number.
        session: u64,
        /// Its events.
        events: mpsc::Receiver<media::MediaEvent>,
    },
    /// Stop an ended call's session and finalize its recording; the phone exits only
    /// once that is done.
    StopMedia(MediaSession),
}

/// The media session of a call, with the number its events carry.
struct CallMedia {
    media: MediaSession,
    /// The number of the session's events once started (0 before): events of an ended
    /// session (still on their way) carry a number no live session has, and are
    /// dropped.
    session: u64,
}

/// `switchboard phone`'s user agent as a [`Machine`]: the [`UserAgent`], the printer and
/// the media sessions it commands.
pub struct Phone {
    core: UserAgent,
    out: Printer,
    /// The media session bound ahead of the next call (its port is in the core).
    spare: Option<MediaSession>,
    /// The media session of each call up, by its RTP port (as the core names it).
    active: HashMap<u16, CallMedia>,
    /// The last session number given.
    session: u64,
    effects: VecDeque<PhoneEffect>,
    /// [`UserAgent::begin_exit`] was called.
    exit_begun: bool,
}

impl Phone {
    /// The phone around `core`, printing with `out`.
    pub fn new(core: UserAgent, out: Printer) -> Phone {
        Phone {
            core,
            out,
            spare: None,
            active: HashMap::new(),
            session: 0,
            effects: VecDeque::new(),
            exit_begun: false,
        }
    }

    /// Binds the media session of the next call, at once: the SDP of a call arriving
    /// in the same turn needs its port.
    fn bind_spare_media(&mut self) {
        let result = match MediaSession::bind_now(self.core.local_ip()) {
            Ok(m) => {
                let port = m.local_rtp_port();
                self.spare = Some(m);
                Ok(port)
            }
            Err(e) => Err(e.to_string()),
        };
        self.core.set_media_port(result);
    }

    /// Ends the session on `port`: its events no longer count, and the loop stops it.
    fn retire(&mut self, port: u16) {
        if let Some(old) = self.active.remove(&port) {
            self.effects.push_back(PhoneEffect::StopMedia(old.media));
        }
    }

    fn perform(&mut self, output: Output) {
        match output {
            Output::Event(e) => self.out.print(&e),
            Output::Warning(w) => self.out.warn(&w),
            Output::Media { port, command } => self.media(port, command),
        }
    }

    fn media(&mut self, port: u16, command: MediaCommand) {
        match command {
            MediaCommand::Bind { port } => {
                self.retire(port);
                match self.spare.take() {
                    Some(m) if m.local_rtp_port() == port => {
                        self.active.insert(
                            port,
                            CallMedia {
                                media: m,
                                session: 0,
                            },
                        );
                    }
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
                let Some(CallMedia { media, session }) = self.active.get_mut(&port) else {
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
                    self.session += 1;
                    *session = self.session;
                    self.effects.push_back(PhoneEffect::WatchMedia {
                        session: self.session,
                        events: media.events(),
                    });
                }
            }
            MediaCommand::Update(params) => {
                if let Some(m) = self.active.get_mut(&port) {
                    m.media.update(stream_params(params));
                }
            }
            MediaCommand::SendDtmf(digits) => {
                if let Some(m) = self.active.get_mut(&port) {
                    m.media.send_dtmf(&digits);
                }
            }
            MediaCommand::Stop => self.retire(port),
        }
    }
}

impl Machine for Phone {
    type Side = PhoneInput;
    type Effect = PhoneEffect;

    fn handle_incoming(&mut self, now: Now, incoming: Incoming) {
        // Bytes that did not parse are dropped: a phone answers nothing it cannot read.
        if let Incoming::Message { msg, flow, .. } = incoming {
            self.core.on_message(msg, flow, now.instant);
        }
    }

    fn handle_send_failed(&mut self, now: Now, token: u64, error: SendError) {
        tracing::debug!("send failed: {error}");
        let key = TransactionKey::from_token(token);
        self.core
            .on_transport_error(key, send_error_text(&error), now.instant);
    }

    fn handle_timeout(&mut self, now: Now) {
        self.core.on_timeout(now.instant);
    }

    fn handle_side(&mut self, now: Now, input: PhoneInput) {
        match input {
            PhoneInput::Enter => self.core.on_enter(now.instant),
            PhoneInput::Interrupt => self.core.interrupt(now.instant),
            PhoneInput::Media { session, event } => {
                if self.active.values().any(|m| m.session == session) {
                    self.core.on_media(ua_media_event(event));
                }
            }
        }
    }

    fn process(&mut self, now: Now) -> bool {
        let mut progressed = self.core.handle_events(now.instant);
        while let Some(output) = self.core.poll_output() {
            progressed = true;
            self.perform(output);
        }
        if self.core.needs_media_port() {
            // Not progress: a bind that fails is tried again next turn, not at once.
            self.bind_spare_media();
        }
        if !self.exit_begun && self.core.finished().is_some() {
            self.exit_begun = true;
            self.core.begin_exit(now.instant);
            progressed = true;
        }
        progressed
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.poll_transmit().map(|t| Transmit {
            flow: t.flow,
            bytes: t.bytes,
            token: t.key.map_or(NO_TOKEN, TransactionKey::to_token),
        })
    }

    fn poll_effect(&mut self) -> Option<PhoneEffect> {
        self.effects.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn is_done(&self) -> bool {
        self.core.exit_code().is_some()
    }
}

/// Sends [`PhoneInput::Interrupt`] on every Ctrl-C (SIGINT) and SIGTERM from now on.
fn watch_signals(side: mpsc::Sender<PhoneInput>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    tokio::spawn(async move {
        loop {
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let terminated = async {
                match terminate.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = interrupted => {}
                _ = terminated => {}
            }
            if side.send(PhoneInput::Interrupt).await.is_err() {
                return;
            }
        }
    });
}

/// Sends [`PhoneInput::Enter`] for every line on standard input, from a thread (reading
/// it blocks).
fn read_stdin(side: mpsc::Sender<PhoneInput>) {
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
            if side.blocking_send(PhoneInput::Enter).is_err() {
                break;
            }
        }
    });
}

/// Runs `task` as `switchboard phone` on `endpoint` (already listening, `incoming` its
/// channel) until it is done (and the registration removed); returns the exit code.
pub async fn run(
    endpoint: Endpoint,
    incoming: mpsc::Receiver<Incoming>,
    settings: Settings,
    task: Task,
    transfer: Option<TransferScript>,
    out: Printer,
) -> u8 {
    let local = LocalAddrs {
        udp: endpoint.local_addr(Transport::Udp),
        tcp: endpoint.local_addr(Transport::Tcp),
    };
    // Enter answers a ringing call, or transfers the call up to --transfer-to.
    let reads_stdin =
        matches!(&task, Task::Answer(a) if !a.auto && a.reject.is_none()) || transfer.is_some();
    let (side_tx, side_rx) = mpsc::channel(SIDE_QUEUE);
    watch_signals(side_tx.clone());
    if reads_stdin {
        read_stdin(side_tx.clone());
    }
    let mut core = UserAgent::new(local, settings, task, seed());
    if let Some(script) = transfer {
        core.set_transfer_script(script);
    }
    if let Some(flow) = core.connection_to_open() {
        // Its local address goes into Via and Contact, so it is opened before anything
        // is sent (and before the loop runs). When it fails, the first request fails
        // the same way and the core says why.
        match endpoint.connect(flow.transport, flow.remote).await {
            Ok(opened) => {
                if let Some(local) = opened.local {
                    core.set_connection_local(local);
                }
            }
            Err(e) => tracing::debug!("cannot connect to {}: {e}", flow.remote),
        }
    }
    let mut phone = Phone::new(core, out);
    phone.bind_spare_media();
    phone.core.start(Instant::now());

    let mut stopping: Vec<JoinHandle<()>> = Vec::new();
    let on_effect = |effect: PhoneEffect| -> Option<PhoneInput> {
        match effect {
            PhoneEffect::WatchMedia {
                session,
                mut events,
            } => {
                let side = side_tx.clone();
                tokio::spawn(async move {
                    while let Some(event) = events.recv().await {
                        if side
                            .send(PhoneInput::Media { session, event })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
            PhoneEffect::StopMedia(media) => {
                stopping.retain(|h| !h.is_finished());
                stopping.push(tokio::spawn(async move {
                    let stats = media.stop().await;
                    tracing::debug!(?stats, "media stopped");
                }));
            }
        }
        None
    };
    let mut driver = Driver::new(phone, endpoint, incoming, side_rx, on_effect);
    let code = match driver.run(std::future::pending::<()>()).await {
        Ok(_) => driver.machine.core.exit_code().unwrap_or(exit::FAILED),
        Err(e) => {
            driver.machine.out.warn(&e.to_string());
            exit::FAILED
        }
    };
    drop(driver);
    // Recordings are whole before the process exits.
    for stop in stopping {
        let _ = stop.await;
    }
    code
}
