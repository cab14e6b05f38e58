//! A SIP user agent, sans-IO, on `sip-core`: what a softphone, a trunk that registers to
//! a carrier or a back-to-back call leg needs of RFC 3261 and its extensions, without a
//! socket, a clock or a random source of its own.
//!
//! [`Core`] owns a transaction layer, the registration client (refreshed at half the
//! granted time, 423 Min-Expires, 401/407 answered, retried after a failure), at most
//! one call as UAC or UAS (forked 2xx, offer/answer, hold, PRACK, UPDATE, session
//! timers, re-INVITE glare, the 2xx retransmitted until its ACK by RFC 3261 §13.3.1.4
//! on the transaction layer's [`TimerConfig`]), MESSAGE and OPTIONS. It is fed what
//! arrives ([`Core::on_message`]), the time ([`Core::on_timeout`]), media events and
//! the user's keys, each with an explicit `now`; it answers with what to transmit
//! ([`Core::poll_transmit`]), what to show or do with media ([`Core::poll_output`]) and,
//! in the end, an exit code ([`exit`]). Randomness (tags, branches, Call-IDs, cnonces,
//! the glare wait) comes from a seed the caller draws from the OS.
//!
//! The driver that runs it on sockets, RTP sessions and a terminal is the caller's:
//! `switchboard phone` has one on tokio and `sip-net`.
//!
//! ```
//! use sip_ua::{Core, LocalAddrs, Output, Settings, Task, sdp_codecs};
//! use sip_core::transaction::TimerConfig;
//! use sip_core::{Message, Method, Transport};
//! use std::time::Instant;
//!
//! let settings = Settings {
//!     user: "alice".into(),
//!     password: None,
//!     server: None, // no registrar: requests go to the address in the URI
//!     domain: "example.test".into(),
//!     transport: Transport::Udp,
//!     expires: 3600,
//!     session_expires: None,
//!     display_name: None,
//!     codecs: sdp_codecs(&["pcmu".into()]),
//!     timers: TimerConfig::default(),
//! };
//! let local = LocalAddrs { udp: Some("127.0.0.1:5070".parse().unwrap()), tcp: None };
//! let task = Task::Options { target: "sip:127.0.0.1:5060".into() };
//! let seed = [7u8; 32]; // from the OS in a real program
//! let mut ua = Core::new(local, settings, task, seed);
//! ua.start(Instant::now());
//! // An OPTIONS to 127.0.0.1:5060 is ready to go; a driver would write it to the network
//! // and feed back what arrives with `on_message`, then `handle_events`.
//! let out = ua.poll_transmit().expect("an OPTIONS to send");
//! assert_eq!(out.flow.remote, "127.0.0.1:5060".parse().unwrap());
//! let options = Message::parse(out.bytes).unwrap();
//! assert_eq!(options.method(), Some(&Method::Options));
//! assert!(matches!(ua.poll_output(), None | Some(Output::Event(_))));
//! ```

use bytes::Bytes;
use rand::rngs::ChaCha20Rng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sip_core::auth::{Challenge, pick_best, respond};
use sip_core::dialog::{Dialog, Refresher, SessionTimer, SessionTimerAction, glare_retry_after};
use sip_core::name::HeaderName;
use sip_core::sdp::{AudioStream, Direction, OfferAnswer, SessionDescription, answer_direction};
use sip_core::transaction::{Event, TimerConfig, TransactionKey, TransactionLayer, Transmit};
use sip_core::{Flow, Message, MessageBuilder, Method, Transport, response_to};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod answer;
mod call;
pub mod media;
#[cfg(test)]
mod tests;

pub use media::{AudioSource, Codec, MediaEvent, StreamParams};

/// How the task ended, as a process exit code (`switchboard phone` exits with it).
pub mod exit {
    /// The call was answered and ended normally; the message was delivered.
    pub const OK: u8 = 0;
    /// Failure: no response, a network error, registration refused, bad SDP.
    pub const FAILED: u8 = 1;
    /// The far end was busy (486, 600).
    pub const BUSY: u8 = 3;
    /// Nobody answered (408, 480, the answer timeout).
    pub const NO_ANSWER: u8 = 4;
    /// Refused otherwise (403, 404, 488, 603...).
    pub const REJECTED: u8 = 5;
}

/// Something that happened, for one line of output: `name` (`ringing`, `answered`,
/// `held`, `dtmf received`...), a `detail` for the text form and `fields` for JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneEvent {
    /// What happened.
    pub name: &'static str,
    /// The text after the name.
    pub detail: Option<String>,
    /// JSON-only extras.
    pub fields: Vec<(&'static str, Value)>,
}

/// A codec as SDP names it: (payload type, encoding, clock rate).
pub type SdpCodec = (u8, &'static str, u32);

/// The voice codecs the phone knows, by their `--codec` names.
pub const VOICE_CODECS: &[(&str, SdpCodec)] =
    &[("pcmu", (0, "PCMU", 8000)), ("pcma", (8, "PCMA", 8000))];

/// RFC 4733 DTMF, offered and accepted beside every voice codec.
pub const TELEPHONE_EVENT: SdpCodec = (101, "telephone-event", 8000);

/// The SDP codec list for voice codec names in order of preference (unknown names
/// skipped), with telephone-event last.
pub fn sdp_codecs(names: &[String]) -> Vec<SdpCodec> {
    let mut list: Vec<SdpCodec> = names
        .iter()
        .filter_map(|n| {
            VOICE_CODECS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(n))
                .map(|(_, c)| *c)
        })
        .collect();
    list.push(TELEPHONE_EVENT);
    list
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, UPDATE, PRACK, INFO";

/// The first wait before a failed registration is tried again.
const REGISTER_RETRY_BASE: Duration = Duration::from_secs(30);
/// The longest wait between two tries of a failing registration.
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(1800);

/// Who the phone is and where it talks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The user name (the AOR's user part and the digest username).
    pub user: String,
    /// The digest password; without one, challenges are failures.
    pub password: Option<String>,
    /// The registrar and outbound proxy; `None` runs without registering, calling URIs
    /// directly.
    pub server: Option<SocketAddr>,
    /// The AOR's domain.
    pub domain: String,
    /// How to reach the server (and the default for direct calls).
    pub transport: Transport,
    /// The registration lifetime asked for.
    pub expires: u32,
    /// The Session-Expires to ask for in calls we place (RFC 4028); `None` asks none.
    pub session_expires: Option<u32>,
    /// The display name in From.
    pub display_name: Option<String>,
    /// The codecs offered and accepted, in order of preference (see [`sdp_codecs`]).
    pub codecs: Vec<SdpCodec>,
    /// The transaction timers (T1, T2...); the retransmission of our 2xx to an INVITE
    /// until its ACK (RFC 3261 §13.3.1.4) follows T1 and T2 too.
    pub timers: TimerConfig,
}

/// What the phone was asked to do.
#[derive(Debug, Clone)]
pub enum Task {
    /// Place one call.
    Call(CallTask),
    /// Answer calls.
    Answer(AnswerTask),
    /// Send one MESSAGE.
    Message {
        /// The recipient.
        target: String,
        /// The text.
        text: String,
    },
    /// Send one OPTIONS and report the answer.
    Options {
        /// Whom to ask.
        target: String,
    },
    /// Print incoming MESSAGEs.
    Listen {
        /// Stop after this many.
        count: Option<u32>,
    },
}

/// `phone call`.
#[derive(Debug, Clone)]
pub struct CallTask {
    /// Whom to call.
    pub target: String,
    /// The WAV to play to the far end.
    pub play: Option<PathBuf>,
    /// Where to record the far end.
    pub record: Option<PathBuf>,
    /// DTMF digits to send once answered.
    pub dtmf: Option<String>,
    /// Seconds after the answer when the digits go.
    pub dtmf_after: f64,
    /// Seconds after the answer to put the call on hold.
    pub hold_after: Option<f64>,
    /// Seconds after the answer to resume it.
    pub resume_after: Option<f64>,
    /// Hold and resume with UPDATE instead of re-INVITE.
    pub hold_with_update: bool,
    /// Seconds after the answer to hang up.
    pub hangup_after: Option<f64>,
    /// Hold with a=inactive instead of a=sendonly.
    pub hold_inactive: bool,
    /// Re-offer with only this voice codec, `.1` seconds after the answer.
    pub change_codec: Option<(f64, SdpCodec)>,
    /// Seconds to wait for an answer before cancelling.
    pub answer_timeout: f64,
}

/// `phone answer`: waiting for calls.
#[derive(Debug, Clone)]
pub struct AnswerTask {
    /// Answer at once; otherwise ring until [`Core::on_enter`].
    pub auto: bool,
    /// A WAV file to play to callers.
    pub play: Option<PathBuf>,
    /// Record callers to this WAV file; `{n}` in the name is replaced by the call
    /// number.
    pub record: Option<PathBuf>,
    /// Refuse every call with this status.
    pub reject: Option<u16>,
    /// Hang up this many seconds after answering.
    pub hangup_after: Option<f64>,
    /// Finish after this many calls (with the last call's exit code).
    pub calls: Option<u32>,
}

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uac,
    Uas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// UAC: INVITE sent; UAS: INVITE received, not answered.
    Setup,
    /// A 2xx was sent or received.
    Answered,
    /// We sent BYE or CANCEL and wait for the end.
    Ending,
}

/// A request outside any dialog that may need to be sent again with credentials.
#[derive(Debug, Clone)]
struct Outgoing {
    method: Method,
    uri: String,
    to: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, Bytes)>,
    /// Authorization or Proxy-Authorization, and its value.
    auth: Option<(&'static str, String)>,
    /// Realms already answered (with the header used): a fresh challenge for one of
    /// them means the password is wrong.
    answered: Vec<String>,
    /// Where it goes.
    flow: Flow,
}

/// What a client transaction is for.
#[derive(Debug, Clone)]
enum Pending {
    Register(Outgoing),
    Unregister(Outgoing),
    Message(Outgoing),
    Invite,
    Bye,
    /// A re-INVITE or UPDATE carrying our offer with this direction.
    Modify {
        method: Method,
        direction: Direction,
        refresh: bool,
    },
    Other,
}

/// Our 2xx to an INVITE, retransmitted until the ACK (RFC 3261 §13.3.1.4).
#[derive(Debug, Clone)]
struct OkRetransmit {
    bytes: Bytes,
    flow: Flow,
    cseq: u32,
    interval: Duration,
    next: Instant,
    until: Instant,
}

struct Call {
    generation: u64,
    role: Role,
    state: CallState,
    call_id: String,
    local_tag: String,
    /// UAC: the INVITE as last sent (with credentials after a challenge).
    invite: Option<Message>,
    invite_out: Option<Outgoing>,
    /// UAC: the INVITE client transaction; UAS: the INVITE server transaction.
    invite_key: Option<TransactionKey>,
    /// UAS: the INVITE received.
    request: Option<Message>,
    dialog: Option<Dialog>,
    flow: Flow,
    /// The RTP port of the media session this call uses (bound by the driver before).
    media_port: u16,
    media_started: bool,
    local_sdp: SessionDescription,
    oa: OfferAnswer,
    remote: Option<AudioStream>,
    /// The direction we want (SendOnly while we hold the call).
    wanted: Direction,
    held_by_us: bool,
    held_by_them: bool,
    ack: Option<(Bytes, Flow, String)>,
    /// UAC: the ACKs of 2xx from other forks of our INVITE, by To tag: those dialogs
    /// were hung up at once (RFC 3261 §13.2.2.4); a retransmitted 2xx gets its ACK again.
    fork_acks: Vec<(String, Bytes, Flow)>,
    ok_retx: Option<OkRetransmit>,
    digits: String,
    play: Option<PathBuf>,
    record: Option<PathBuf>,
    answered_at: Option<Instant>,
    cancelled: Option<(&'static str, u8)>,
    rseq_acked: Option<u32>,
    session_timer: Option<SessionTimer>,
    ringing_printed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallTimer {
    Dtmf,
    Hold,
    Resume,
    Hangup,
    AnswerTimeout,
    Retransmit,
    EndFallback,
    GlareRetry(Direction),
    Session,
    ChangeCodec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    RegisterRefresh,
    ExitDeadline,
    Call(u64, CallTimer),
}

/// Our listening addresses, for Via, Contact and SDP: the endpoint's, fixed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddrs {
    /// The UDP listener.
    pub udp: Option<SocketAddr>,
    /// The TCP listener (also used for TLS and WebSocket requests).
    pub tcp: Option<SocketAddr>,
}

impl LocalAddrs {
    /// Our address on `transport`, for Via and Contact.
    pub fn for_transport(&self, transport: Transport) -> SocketAddr {
        let listener = match transport {
            Transport::Udp => self.udp,
            _ => self.tcp,
        };
        listener
            .or(self.udp)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    /// Our IP address (for SDP and media).
    pub fn ip(&self) -> IpAddr {
        self.for_transport(Transport::Udp).ip()
    }
}

/// What the media session of the call must do. One call at a time, so one session.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaCommand {
    /// The new call takes the session bound ahead on `port` (see [`Core::set_media_port`]).
    Bind {
        /// Its RTP port.
        port: u16,
    },
    /// Start sending and receiving.
    Start {
        /// The stream agreed.
        params: StreamParams,
        /// What to send.
        source: AudioSource,
        /// Where to record what is received.
        record: Option<PathBuf>,
    },
    /// The stream changed (hold, resume, codec, address).
    Update(StreamParams),
    /// Send these DTMF digits (RFC 4733).
    SendDtmf(String),
    /// The call is over: stop (and finalize the recording).
    Stop,
}

/// What the core asks its driver to do or show, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A line for standard output.
    Event(PhoneEvent),
    /// A problem worth telling (standard error).
    Warning(String),
    /// Something for the media session.
    Media(MediaCommand),
}

/// The queue of [`Output`]s, with the printer's vocabulary.
#[derive(Debug, Default)]
struct Outputs(VecDeque<Output>);

impl Outputs {
    fn event(
        &mut self,
        name: &'static str,
        detail: Option<&str>,
        fields: &[(&'static str, Value)],
    ) {
        self.0.push_back(Output::Event(PhoneEvent {
            name,
            detail: detail.map(str::to_owned),
            fields: fields.to_vec(),
        }));
    }

    fn warn(&mut self, text: &str) {
        self.0.push_back(Output::Warning(text.to_owned()));
    }

    fn media(&mut self, command: MediaCommand) {
        self.0.push_back(Output::Media(command));
    }
}

/// The sans-IO user agent. See the [module docs](self).
pub struct Core {
    local: LocalAddrs,
    txl: TransactionLayer,
    s: Settings,
    task: Task,
    out: Outputs,
    pending: HashMap<TransactionKey, Pending>,
    timers: Vec<(Instant, Timer)>,
    call: Option<Call>,
    next_generation: u64,
    registered: bool,
    register_out: Option<Outgoing>,
    task_started: bool,
    finished: Option<u8>,
    exit_ready: bool,
    calls_done: u32,
    messages_seen: u32,
    counter: u64,
    /// The RTP port of a media session the driver bound ahead of the next call (the
    /// handlers are synchronous and the SDP needs it), or why it could not.
    media_port: Result<u16, String>,
    /// Ctrl-C or SIGTERM: stop once the call in progress has ended.
    interrupted: bool,
    /// The task is over and the exit under way (see [`Core::begin_exit`]).
    exiting: bool,
    /// Our end of the connection to the server (or the far end), for transports we
    /// cannot accept connections on (TLS, WS, WSS: we listen on UDP and TCP only). Via
    /// and Contact name it, so that what is sent to us comes back over this connection
    /// (see [`Core::connection_to_open`]).
    connection_local: Option<SocketAddr>,
    /// Registrations failed in a row while the task runs (see
    /// [`Core::retry_registration_later`]).
    register_failures: u32,
    /// Why sending failed, by transaction, until the transaction layer reports it.
    send_errors: HashMap<TransactionKey, String>,
    /// Tags, branches, Call-IDs, cnonces, session ids and the glare wait, from the
    /// caller's seed.
    rng: ChaCha20Rng,
}

/// The host and port of a SIP URI with a numeric host, with the transport it names
/// (`transport=`, else TLS for `sips:`, else UDP) and its default port; `None` for a
/// host name, which needs DNS (RFC 3263): that is the driver's, not ours.
fn numeric_target(uri: &str) -> Result<Option<(Transport, SocketAddr)>, String> {
    let parsed = sip_core::Uri::parse(uri.trim()).map_err(|e| format!("{uri}: {}", e.0))?;
    let sip = parsed
        .as_sip()
        .ok_or_else(|| format!("{uri}: not a sip: or sips: URI"))?;
    let transport = match sip.transport() {
        Some(t) => Transport::from_token(t).ok_or_else(|| {
            format!("{uri}: unsupported transport \"{t}\"; use udp, tcp, tls, ws or wss")
        })?,
        None if sip.secure => Transport::Tls,
        None => Transport::Udp,
    };
    let Some(ip) = sip.host.ip() else {
        return Ok(None);
    };
    let port = sip.port.unwrap_or_else(|| transport.default_port());
    Ok(Some((transport, SocketAddr::new(ip, port))))
}

/// The events printed for the answer to a MESSAGE or an OPTIONS: (success, failure).
fn simple_event_names(method: &Method) -> (&'static str, &'static str) {
    match method {
        Method::Options => ("options", "options failed"),
        _ => ("message sent", "message failed"),
    }
}

/// Whether requests for us over `transport` can only come back over a connection we
/// opened: we listen on UDP and TCP, so a TLS or WebSocket peer cannot connect to us.
fn needs_own_connection(transport: Transport) -> bool {
    !matches!(transport, Transport::Udp | Transport::Tcp)
}

/// What a registrar's refusal means to the person who ran the phone, with the status
/// line after it: `wrong user name or password (401 Unauthorized)`.
fn registration_refusal(status: u16, reason: &str, had_password: bool) -> String {
    let status_line = format!("{status} {reason}");
    let status_line = status_line.trim();
    let meaning = match status {
        // Our credentials were sent and challenged again: the authenticate step gave up.
        401 | 407 if had_password => "wrong user name or password",
        401 | 407 => "the server asks for a password: pass --password",
        403 => "the server does not allow this user to register here",
        404 => "no such user or domain on this server: check --user and --domain",
        _ => return status_line.to_owned(),
    };
    format!("{meaning} ({status_line})")
}

/// The exit code a final status means for a call we placed.
fn exit_for_status(status: u16) -> u8 {
    match status {
        200..=299 => exit::OK,
        486 | 600 => exit::BUSY,
        408 | 480 | 487 => exit::NO_ANSWER,
        _ => exit::REJECTED,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn codec_of(encoding: &str) -> Option<Codec> {
    if encoding.eq_ignore_ascii_case("PCMU") {
        Some(Codec::Pcmu)
    } else if encoding.eq_ignore_ascii_case("PCMA") {
        Some(Codec::Pcma)
    } else if encoding.eq_ignore_ascii_case("opus") {
        Some(Codec::Opus)
    } else {
        None
    }
}

fn has_sdp(msg: &Message) -> bool {
    !msg.body().is_empty()
        && msg
            .content_type()
            .ok()
            .flatten()
            .is_some_and(|ct| ct.is("application", "sdp"))
}

fn tokens_contain(msg: &Message, name: HeaderName, token: &str) -> bool {
    msg.tokens(name)
        .filter_map(Result::ok)
        .any(|t| t.eq_ignore_ascii_case(token))
}

impl Core {
    /// A user agent listening on `local` that will do `task`. `seed` must be fresh
    /// random bytes (the OS's): tags and branches must be unique across runs and
    /// unpredictable (RFC 3261 §19.3), and cnonces unpredictable.
    pub fn new(local: LocalAddrs, s: Settings, task: Task, seed: [u8; 32]) -> Core {
        Core {
            local,
            txl: TransactionLayer::new(s.timers),
            s,
            task,
            out: Outputs::default(),
            pending: HashMap::new(),
            timers: Vec::new(),
            call: None,
            next_generation: 1,
            registered: false,
            register_out: None,
            task_started: false,
            finished: None,
            exit_ready: false,
            calls_done: 0,
            messages_seen: 0,
            counter: 0,
            media_port: Err("no media session".into()),
            interrupted: false,
            exiting: false,
            connection_local: None,
            send_errors: HashMap::new(),
            register_failures: 0,
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    // ----- the driver's interface -----

    /// Starts: registers (with a server) or does the task at once.
    pub fn start(&mut self, now: Instant) {
        if self.s.server.is_some() {
            self.register(now, self.s.expires);
        } else {
            self.start_task(now);
        }
    }

    /// The RTP port of a media session bound for the next call, or why none could be.
    pub fn set_media_port(&mut self, port: Result<u16, String>) {
        self.media_port = port;
    }

    /// Whether the next call has no media session bound ahead (the last was taken).
    pub fn needs_media_port(&self) -> bool {
        self.media_port.is_err()
    }

    /// A message received on `flow`.
    pub fn on_message(&mut self, msg: Message, flow: Flow, now: Instant) {
        if msg.is_request() {
            let target = sip_core::response_target(&flow, &msg);
            if let Err(e) = msg.validate() {
                // Answered statelessly, as serve does: it may lack what a transaction
                // is keyed by.
                tracing::debug!("invalid request from {}: {e}", flow.remote);
                if let Some(bytes) = sip_core::builder::error_response_to_raw(
                    msg.as_bytes(),
                    e.status_code(),
                    &e.reason_phrase(),
                ) {
                    self.txl.send_stateless(target, bytes);
                }
                return;
            }
            if let Err(e) = self.txl.handle_message(now, msg, target) {
                tracing::debug!("request not taken: {e}");
            }
        } else if let Err(e) = self.txl.handle_message(now, msg, flow) {
            tracing::debug!("response dropped: {e}");
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txl.poll_transmit()
    }

    /// Sending what [`Core::poll_transmit`] gave for transaction `key` failed, for
    /// `reason` (told to the user: "TLS: certificate not trusted (UnknownIssuer)...").
    pub fn on_transport_error(&mut self, key: TransactionKey, reason: String, now: Instant) {
        self.send_errors.insert(key, reason);
        let _ = self.txl.handle_transport_error(now, key);
    }

    /// The connection the driver must open before [`Core::start`], when the phone talks
    /// over a transport it cannot be reached on by a new connection (TLS, WS, WSS):
    /// the server's flow, or the far end's when there is no server.
    pub fn connection_to_open(&self) -> Option<Flow> {
        let flow = match (&self.s.server, &self.task) {
            (Some(_), _) => self.flow_for("").ok()?,
            (None, Task::Call(c)) => self.direct_flow(&c.target).ok()?,
            (None, Task::Message { target, .. } | Task::Options { target }) => {
                self.direct_flow(target).ok()?
            }
            (None, _) => return None,
        };
        needs_own_connection(flow.transport).then_some(flow)
    }

    /// The driver opened [`Core::connection_to_open`]: `local` is our end of it.
    pub fn set_connection_local(&mut self, local: SocketAddr) {
        self.connection_local = Some(local);
    }

    /// Handles what the transaction layer reported; `true` if there was anything.
    pub fn handle_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(event) = self.txl.poll_event() {
            any = true;
            self.on_event(event, now);
        }
        any
    }

    /// When [`Core::on_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.txl.poll_timeout(),
            self.timers.iter().map(|(t, _)| *t).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed: runs the transaction timers and ours that are due.
    pub fn on_timeout(&mut self, now: Instant) {
        self.txl.handle_timeout(now);
        self.fire_timers(now);
    }

    /// Whether nothing is left in the user agent's tables: no transaction, no call (its
    /// dialog), no request awaiting an answer. A test on a simulated network checks it
    /// after every call has ended and the timers have run out.
    pub fn is_idle(&self) -> bool {
        self.txl.is_empty() && self.call.is_none() && self.pending.is_empty()
    }

    /// The next thing to print or do with media.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.0.pop_front()
    }

    /// The exit code once the task is over, before the exit is under way.
    pub fn finished(&self) -> Option<u8> {
        self.finished
    }

    /// The exit code once the task is over and the exit done (registration removed):
    /// time to stop.
    pub fn exit_code(&self) -> Option<u8> {
        self.finished.filter(|_| self.exit_ready)
    }

    /// [`MediaCommand::Start`] failed (the driver said why): the next SDP from the far
    /// end tries again.
    pub fn on_media_start_failed(&mut self) {
        if let Some(c) = self.call.as_mut() {
            c.media_started = false;
        }
    }

    /// The user pressed Enter: answers the call ringing, if any.
    pub fn on_enter(&mut self, now: Instant) {
        self.answer_ringing_call(now);
    }

    // ----- plumbing -----

    /// `bytes` random bytes in hex.
    fn random_hex(&mut self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.rng.fill_bytes(&mut buf);
        buf.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn random_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    fn media(&mut self, command: MediaCommand) {
        self.out.media(command);
    }

    /// The media session bound ahead, for a new call: its port (told to the driver).
    fn take_media(&mut self) -> Result<u16, String> {
        let port = std::mem::replace(&mut self.media_port, Err("no media session".into()))?;
        self.media(MediaCommand::Bind { port });
        Ok(port)
    }

    fn arm(&mut self, at: Instant, timer: Timer) {
        self.timers.retain(|(_, t)| *t != timer);
        self.timers.push((at, timer));
    }

    fn disarm(&mut self, timer: Timer) {
        self.timers.retain(|(_, t)| *t != timer);
    }

    fn arm_call(&mut self, at: Instant, timer: CallTimer) {
        if let Some(generation) = self.call.as_ref().map(|c| c.generation) {
            self.arm(at, Timer::Call(generation, timer));
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.timers.retain(|(at, t)| {
            if *at <= now {
                due.push(*t);
                false
            } else {
                true
            }
        });
        for timer in due {
            match timer {
                Timer::RegisterRefresh => self.register(now, self.s.expires),
                Timer::ExitDeadline => {
                    self.exit_ready = true;
                    // Out of time with the task unfinished (a hang-up never answered).
                    self.finish(exit::FAILED);
                }
                Timer::Call(generation, t) => {
                    if self
                        .call
                        .as_ref()
                        .is_some_and(|c| c.generation == generation)
                    {
                        self.on_call_timer(t, now);
                    }
                }
            }
        }
    }

    fn branch(&mut self) -> String {
        self.counter += 1;
        format!("z9hG4bK{}{:x}", self.random_hex(6), self.counter)
    }

    /// Our address on `transport`, for Via and Contact.
    fn local_addr(&self, transport: Transport) -> SocketAddr {
        match self.connection_local {
            Some(local) if needs_own_connection(transport) => local,
            _ => self.local.for_transport(transport),
        }
    }

    /// Our IP address: in SDP, and where the media session must be bound.
    pub fn local_ip(&self) -> IpAddr {
        self.local.ip()
    }

    fn via(&mut self, transport: Transport) -> String {
        let branch = self.branch();
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport.via_token(),
            self.local_addr(transport)
        )
    }

    fn contact_uri(&self, transport: Transport) -> String {
        let addr = self.local_addr(transport);
        match transport {
            Transport::Udp => format!("sip:{}@{addr}", self.s.user),
            t => format!(
                "sip:{}@{addr};transport={}",
                self.s.user,
                t.name().to_ascii_lowercase()
            ),
        }
    }

    fn aor(&self) -> String {
        format!("sip:{}@{}", self.s.user, self.s.domain)
    }

    fn our_from(&self, tag: &str) -> String {
        match &self.s.display_name {
            Some(d) => format!("\"{d}\" <{}>;tag={tag}", self.aor()),
            None => format!("<{}>;tag={tag}", self.aor()),
        }
    }

    /// The flow for a request outside a dialog to `uri`: the server when there is one,
    /// else the URI's own host and port (numeric hosts only).
    fn flow_for(&self, uri: &str) -> Result<Flow, String> {
        if let Some(server) = self.s.server {
            return Ok(Flow {
                transport: self.s.transport,
                remote: server,
                local: None,
                connection: None,
            });
        }
        self.direct_flow(uri)
    }

    fn direct_flow(&self, uri: &str) -> Result<Flow, String> {
        let (transport, addr) = numeric_target(uri)?.ok_or_else(|| {
            format!("{uri}: without --server, call an address with a numeric host")
        })?;
        // A URI without transport= goes over the transport the phone was given.
        let has_transport = uri.contains("transport=");
        Ok(Flow {
            transport: if has_transport {
                transport
            } else {
                self.s.transport
            },
            remote: addr,
            local: None,
            connection: None,
        })
    }

    /// The flow for requests in `dialog`: its next hop directly when numeric, else the
    /// server.
    fn dialog_flow(&self, dialog: &Dialog, fallback: Flow) -> Flow {
        match self.direct_flow(&dialog.next_hop()) {
            Ok(f) => f,
            Err(_) => fallback,
        }
    }

    fn build_outgoing(&mut self, o: &Outgoing) -> Result<Message, String> {
        let via = self.via(o.flow.transport);
        let mut b = MessageBuilder::request(&o.method, &o.uri);
        b.push("Via", via);
        b.push("Max-Forwards", 70);
        b.push("From", self.our_from(&o.from_tag));
        b.push("To", &o.to);
        b.push("Call-ID", &o.call_id);
        b.push("CSeq", format_args!("{} {}", o.cseq, o.method));
        for (name, value) in &o.headers {
            b.push(name, value);
        }
        if let Some((name, value)) = &o.auth {
            b.push(name, value);
        }
        b.push(
            "User-Agent",
            concat!("switchboard-phone/", env!("CARGO_PKG_VERSION")),
        );
        if let Some((ct, body)) = &o.body {
            b = b.body(ct, body.clone());
        }
        b.build()
            .map_err(|e| format!("cannot build {}: {e}", o.method))
    }

    fn send_outgoing(
        &mut self,
        o: &Outgoing,
        now: Instant,
    ) -> Result<(TransactionKey, Message), String> {
        let msg = self.build_outgoing(o)?;
        let key = self
            .txl
            .send_request(now, msg.clone(), o.flow)
            .map_err(|e| e.to_string())?;
        Ok((key, msg))
    }

    /// Answers a 401/407 by computing credentials for `o`; `false` when it cannot (no
    /// password, nothing answerable, or the same challenge again: a wrong password).
    fn authenticate(&mut self, o: &mut Outgoing, response: &Message) -> bool {
        let Some(password) = self.s.password.clone() else {
            return false;
        };
        let (challenge_header, auth_header) = if response.status() == Some(407) {
            (HeaderName::ProxyAuthenticate, "Proxy-Authorization")
        } else {
            (HeaderName::WwwAuthenticate, "Authorization")
        };
        let mut challenges: Vec<Challenge<'_>> = Vec::new();
        for value in response.get_all(challenge_header) {
            if let Ok(list) = Challenge::parse_list(value) {
                challenges.extend(list);
            }
        }
        let Some(challenge) = pick_best(&challenges) else {
            return false;
        };
        let Some(d) = challenge.as_digest() else {
            return false;
        };
        // A second challenge for a realm we already answered, not marked stale, means
        // the server refused our credentials: answering again would loop forever.
        let realm_key = format!("{auth_header} {}", d.realm);
        if o.answered.contains(&realm_key) && !d.stale {
            return false;
        }
        let cnonce = self.random_hex(12);
        match respond(
            challenge,
            &self.s.user,
            &password,
            o.method.as_str(),
            &o.uri,
            &cnonce,
            1,
        ) {
            Ok(creds) => {
                if !o.answered.contains(&realm_key) {
                    o.answered.push(realm_key);
                }
                o.auth = Some((auth_header, creds.to_string()));
                o.cseq += 1;
                true
            }
            Err(e) => {
                tracing::debug!("cannot answer the challenge: {e}");
                false
            }
        }
    }

    // ----- start, registration, exit -----

    fn register(&mut self, now: Instant, expires: u32) {
        let Some(server) = self.s.server else {
            return;
        };
        let transport = self.s.transport;
        let mut o = match self.register_out.clone() {
            Some(mut o) => {
                o.cseq += 1;
                o.auth = None;
                o
            }
            None => Outgoing {
                method: Method::Register,
                uri: format!("sip:{}", self.s.domain),
                to: format!("<{}>", self.aor()),
                call_id: format!("{}@{}", self.random_hex(10), self.local_ip()),
                from_tag: self.random_hex(6),
                cseq: 1,
                headers: Vec::new(),
                body: None,
                auth: None,
                answered: Vec::new(),
                flow: Flow {
                    transport,
                    remote: server,
                    local: None,
                    connection: None,
                },
            },
        };
        o.answered.clear();
        o.headers = vec![
            ("Contact", format!("<{}>", self.contact_uri(transport))),
            ("Expires", expires.to_string()),
            ("Allow", ALLOW.to_owned()),
        ];
        self.register_out = Some(o.clone());
        match self.send_outgoing(&o, now) {
            Ok((key, _)) => {
                let pending = if expires == 0 {
                    Pending::Unregister(o)
                } else {
                    Pending::Register(o)
                };
                self.pending.insert(key, pending);
            }
            Err(e) => {
                self.out.event("registration failed", Some(&e), &[]);
                self.finish(exit::FAILED);
            }
        }
    }

    fn on_register_response(
        &mut self,
        mut o: Outgoing,
        response: &Message,
        now: Instant,
        unregister: bool,
    ) {
        let status = response.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        if matches!(status, 401 | 407) && self.authenticate(&mut o, response) {
            self.register_out = Some(o.clone());
            if let Ok((key, _)) = self.send_outgoing(&o, now) {
                let p = if unregister {
                    Pending::Unregister(o)
                } else {
                    Pending::Register(o)
                };
                self.pending.insert(key, p);
                return;
            }
        }
        // 423 Interval Too Brief: ask again for what the registrar accepts (once: the
        // new interval is larger, so this cannot loop).
        if status == 423
            && !unregister
            && let Ok(Some(min)) = response.min_expires()
            && min > self.s.expires
        {
            self.s.expires = min;
            self.register(now, min);
            return;
        }
        if unregister {
            if (200..300).contains(&status) {
                self.out.event("unregistered", None, &[]);
            }
            self.registered = false;
            self.exit_ready = true;
            return;
        }
        if !(200..300).contains(&status) {
            let detail = registration_refusal(
                status,
                response.reason().unwrap_or(""),
                self.s.password.is_some(),
            );
            self.out.event(
                "registration refused",
                Some(&detail),
                &[("status", json!(status))],
            );
            self.registered = false;
            if !self.task_started {
                self.finish(exit::FAILED);
            } else {
                self.retry_registration_later(now);
            }
            return;
        }
        self.register_failures = 0;
        let ours = self.contact_uri(self.s.transport);
        let granted = response
            .contacts()
            .filter_map(Result::ok)
            .find_map(|c| match c {
                sip_core::headers::Contact::Addr(na) if na.uri_text == ours => {
                    na.expires().ok().flatten()
                }
                _ => None,
            })
            .or_else(|| response.expires().ok().flatten())
            .unwrap_or(self.s.expires);
        let event = if self.registered {
            "registration refreshed"
        } else {
            "registered"
        };
        self.out.event(
            event,
            Some(&format!("{} for {granted} s", self.aor())),
            &[("aor", json!(self.aor())), ("expires", json!(granted))],
        );
        self.registered = true;
        // Refresh at half the granted time (at least a second from now).
        let refresh = Duration::from_secs(u64::from(granted.max(2) / 2));
        self.arm(now + refresh, Timer::RegisterRefresh);
        if !self.task_started {
            self.start_task(now);
        }
    }

    /// A registration that failed while the task runs is tried again after a wait
    /// that doubles with each failure in a row, from 30 s up to 30 min, and is drawn
    /// between half of that and all of it (RFC 5626 §4.5's back-off): a registrar
    /// that restarts is not met by every phone at once.
    fn retry_registration_later(&mut self, now: Instant) {
        self.register_failures = self.register_failures.saturating_add(1);
        let doublings = self.register_failures.saturating_sub(1).min(6);
        let bound = (REGISTER_RETRY_BASE * 2u32.pow(doublings)).min(REGISTER_RETRY_MAX);
        let fraction = 0.5 + f64::from(self.random_u32()) / f64::from(u32::MAX) / 2.0;
        self.arm(now + bound.mul_f64(fraction), Timer::RegisterRefresh);
    }

    fn finish(&mut self, code: u8) {
        if self.finished.is_none() {
            self.finished = Some(code);
        }
    }

    /// Removes the registration (waiting at most 2 s for the answer) before exiting.
    pub fn begin_exit(&mut self, now: Instant) {
        if self.exiting {
            return;
        }
        self.exiting = true;
        let wait = if self.registered && self.s.server.is_some() {
            self.registered = false;
            self.disarm(Timer::RegisterRefresh);
            self.register(now, 0);
            Duration::from_secs(2)
        } else if self.call.is_none() {
            // A moment for what is queued on connections to be written (the 200 to a
            // BYE, say) before the endpoint shuts down.
            Duration::from_millis(300)
        } else {
            Duration::from_secs(2)
        };
        let at = self
            .timers
            .iter()
            .filter(|(_, t)| *t == Timer::ExitDeadline)
            .map(|(at, _)| *at)
            .chain([now + wait])
            .min()
            .unwrap_or(now + wait);
        self.arm(at, Timer::ExitDeadline);
    }

    /// Ctrl-C or SIGTERM: hang up what is up, then exit through [`Core::begin_exit`].
    pub fn interrupt(&mut self, now: Instant) {
        self.interrupted = true;
        if self.call.is_some() {
            // The call's end finishes the task (see `end_call`); a far end that does
            // not answer our BYE gets 3 s.
            self.hang_up(now);
            self.arm(now + Duration::from_secs(3), Timer::ExitDeadline);
        } else {
            self.finish(exit::OK);
        }
    }

    fn start_task(&mut self, now: Instant) {
        self.task_started = true;
        match self.task.clone() {
            Task::Call(c) => self.place_call(c, now),
            Task::Message { target, text } => {
                self.send_simple(Method::Message, &target, Some(text), now)
            }
            Task::Options { target } => self.send_simple(Method::Options, &target, None, now),
            Task::Answer(_) => self.out.event("waiting for calls", None, &[]),
            Task::Listen { .. } => self.out.event("waiting for messages", None, &[]),
        }
    }

    // ----- MESSAGE -----

    /// Sends a MESSAGE with `text`, or an OPTIONS, outside any dialog.
    fn send_simple(&mut self, method: Method, target: &str, text: Option<String>, now: Instant) {
        let (_, failed) = simple_event_names(&method);
        let flow = match self.flow_for(target) {
            Ok(f) => f,
            Err(e) => {
                self.out.event(failed, Some(&e), &[]);
                self.finish(exit::FAILED);
                return;
            }
        };
        let o = Outgoing {
            method,
            uri: target.to_owned(),
            to: format!("<{target}>"),
            call_id: format!("{}@{}", self.random_hex(10), self.local_ip()),
            from_tag: self.random_hex(6),
            cseq: 1,
            headers: Vec::new(),
            body: text.map(|t| ("text/plain;charset=UTF-8", Bytes::from(t))),
            auth: None,
            answered: Vec::new(),
            flow,
        };
        match self.send_outgoing(&o, now) {
            Ok((key, _)) => {
                self.pending.insert(key, Pending::Message(o));
            }
            Err(e) => {
                self.out.event(failed, Some(&e), &[]);
                self.finish(exit::FAILED);
            }
        }
    }

    fn on_message_response(&mut self, mut o: Outgoing, response: &Message, now: Instant) {
        let status = response.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        if matches!(status, 401 | 407)
            && self.authenticate(&mut o, response)
            && let Ok((key, _)) = self.send_outgoing(&o, now)
        {
            self.pending.insert(key, Pending::Message(o));
            return;
        }
        let (sent, failed) = simple_event_names(&o.method);
        let reason = format!("{status} {}", response.reason().unwrap_or(""));
        let allow = response.get(HeaderName::Allow).unwrap_or("").to_owned();
        let detail = if o.method == Method::Options && !allow.is_empty() {
            format!("{} (Allow: {allow})", reason.trim())
        } else {
            reason.trim().to_owned()
        };
        let fields = [("status", json!(status)), ("allow", json!(allow))];
        if (200..300).contains(&status) {
            self.out.event(sent, Some(&detail), &fields);
            self.finish(exit::OK);
        } else {
            self.out.event(failed, Some(&detail), &fields);
            self.finish(exit_for_status(status));
        }
    }

    fn on_incoming_message(&mut self, key: TransactionKey, request: &Message, now: Instant) {
        let from = request
            .from()
            .map(|f| f.uri_text.to_owned())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(request.body()).into_owned();
        self.respond(key, request, 200, &[], None, now);
        self.out.event(
            "message",
            Some(&format!("from {from}: {text}")),
            &[("from", json!(from)), ("text", json!(text))],
        );
        self.messages_seen += 1;
        if let Task::Listen { count: Some(n) } = self.task
            && self.messages_seen >= n
        {
            self.finish(exit::OK);
        }
    }

    // ----- responses to requests we received -----

    fn respond(
        &mut self,
        key: TransactionKey,
        request: &Message,
        code: u16,
        headers: &[(&str, String)],
        body: Option<(&str, Bytes)>,
        now: Instant,
    ) {
        let tag = self
            .call
            .as_ref()
            .filter(|c| c.call_id == request.call_id().unwrap_or(""))
            .map(|c| c.local_tag.clone())
            .unwrap_or_else(|| self.random_hex(6));
        let mut b = response_to(request, code, Some(&tag));
        for (name, value) in headers {
            b.push(name, value);
        }
        if let Some((ct, body)) = body {
            b = b.body(ct, body);
        }
        match b.build() {
            Ok(msg) => {
                if let Err(e) = self.txl.send_response(now, key, msg) {
                    tracing::debug!("response not sent: {e}");
                }
            }
            Err(e) => tracing::warn!("built a response that does not parse: {e}"),
        }
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Request { key, request, flow } => self.on_request(key, request, flow, now),
            Event::Response { key, response } => self.on_response(key, response, now),
            Event::Ack { request, .. } => self.on_ack(&request, now),
            Event::Timeout { key, .. } => {
                if let Some(p) = self.pending.remove(&key) {
                    self.on_request_failed(p, None, now);
                }
            }
            Event::TransportError { key } => {
                let reason = self
                    .send_errors
                    .remove(&key)
                    .unwrap_or_else(|| "cannot reach it".to_owned());
                if let Some(p) = self.pending.remove(&key) {
                    self.on_request_failed(p, Some(reason), now);
                }
            }
            Event::Terminated { key } => {
                self.pending.remove(&key);
                self.send_errors.remove(&key);
            }
            _ => {}
        }
    }

    fn on_request(&mut self, key: TransactionKey, request: Message, flow: Flow, now: Instant) {
        let Some(method) = request.method().cloned() else {
            return;
        };
        // RFC 3261 §8.2.2.3: an extension we are required to support and do not is a
        // 420. We send no reliable provisionals, so 100rel is among them as UAS.
        if !matches!(method, Method::Ack | Method::Cancel) {
            let unsupported: Vec<&str> = request
                .tokens(HeaderName::Require)
                .filter_map(Result::ok)
                .filter(|t| !t.eq_ignore_ascii_case("timer"))
                .collect();
            if !unsupported.is_empty() {
                let list = unsupported.join(", ");
                self.respond(key, &request, 420, &[("Unsupported", list)], None, now);
                return;
            }
        }
        let in_dialog = request.to().ok().and_then(|t| t.tag()).is_some();
        if in_dialog && !matches!(method, Method::Message | Method::Options) {
            self.on_in_dialog_request(key, &method, &request, now);
            return;
        }
        match method {
            Method::Invite => self.on_invite(key, request, flow, now),
            Method::Cancel => self.on_cancel(key, &request, now),
            Method::Message => self.on_incoming_message(key, &request, now),
            Method::Options => {
                let headers = [
                    ("Allow", ALLOW.to_owned()),
                    ("Accept", "application/sdp, text/plain".to_owned()),
                    ("Supported", "timer".to_owned()),
                ];
                self.respond(key, &request, 200, &headers, None, now);
            }
            Method::Ack => {}
            Method::Bye | Method::Update | Method::Prack | Method::Info => {
                self.respond(key, &request, 481, &[], None, now);
            }
            other => self.refuse_method(key, &other, &request, now),
        }
    }

    /// A method we do not serve: 405 with what we allow when it is one we know of
    /// (REGISTER, SUBSCRIBE...), 501 when we have never heard of it (RFC 3261 §8.2.1).
    fn refuse_method(
        &mut self,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        if matches!(method, Method::Extension(_)) {
            self.respond(key, request, 501, &[], None, now);
        } else {
            self.respond(key, request, 405, &[("Allow", ALLOW.to_owned())], None, now);
        }
    }

    fn on_response(&mut self, key: TransactionKey, response: Message, now: Instant) {
        let Some(pending) = self.pending.get(&key).cloned() else {
            return;
        };
        let fin = response.status().is_some_and(|s| s >= 200);
        match pending {
            Pending::Register(o) => {
                if fin {
                    self.pending.remove(&key);
                }
                self.on_register_response(o, &response, now, false);
            }
            Pending::Unregister(o) => {
                if fin {
                    self.pending.remove(&key);
                }
                self.on_register_response(o, &response, now, true);
            }
            Pending::Message(o) => {
                if fin {
                    self.pending.remove(&key);
                }
                self.on_message_response(o, &response, now);
            }
            Pending::Invite => self.on_invite_response(key, &response, now),
            Pending::Bye => {
                if fin {
                    self.pending.remove(&key);
                    // Why we hung up, when it was not the script's choice.
                    let (reason, code) = self
                        .call
                        .as_ref()
                        .and_then(|c| c.cancelled)
                        .unwrap_or(("bye (local)", exit::OK));
                    self.end_call(reason, code);
                }
            }
            Pending::Modify {
                method,
                direction,
                refresh,
            } => self.on_modify_response(key, &method, direction, refresh, &response, now),
            Pending::Other => {}
        }
    }

    /// A client transaction got no final response: it timed out, or the transport
    /// could not send it (`unreachable` says why).
    fn on_request_failed(&mut self, pending: Pending, unreachable: Option<String>, now: Instant) {
        let no_response = unreachable.as_deref().unwrap_or("no response");
        match pending {
            Pending::Register(_) => {
                let why = unreachable
                    .as_deref()
                    .unwrap_or("no response from the server");
                self.out.event("registration failed", Some(why), &[]);
                self.registered = false;
                if !self.task_started {
                    self.finish(exit::FAILED);
                } else {
                    self.retry_registration_later(now);
                }
            }
            Pending::Unregister(_) => self.exit_ready = true,
            Pending::Message(_) => {
                self.out.event("message failed", Some(no_response), &[]);
                self.finish(exit::FAILED);
            }
            Pending::Invite => {
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.state != CallState::Answered)
                {
                    let fallback = match &unreachable {
                        Some(why) => (format!("failed ({why})"), exit::FAILED),
                        None => ("no answer (timeout)".to_owned(), exit::NO_ANSWER),
                    };
                    let (reason, code) = self
                        .call
                        .as_ref()
                        .and_then(|c| c.cancelled)
                        .map_or(fallback, |(r, c)| (r.to_owned(), c));
                    self.end_call(&reason, code);
                }
            }
            Pending::Bye => self.end_call("bye (local, no response)", exit::OK),
            Pending::Modify { .. } => {
                if let Some(c) = self.call.as_mut() {
                    c.oa.offer_rejected();
                }
                self.out.warn("the far end did not answer a session change");
            }
            Pending::Other => {}
        }
    }
}
