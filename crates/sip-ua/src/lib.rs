//! A SIP user agent, sans-IO, on `sip-core`: what a softphone, a trunk that registers to
//! a carrier or a back-to-back call leg needs of RFC 3261 and its extensions, without a
//! socket, a clock or a random source of its own.
//!
//! [`UserAgent`] owns a transaction layer, a dialog layer
//! ([`sip_core::dialog::DialogLayer`]), the registration client (refreshed at half the
//! granted time, 423 Min-Expires, 401/407 answered, retried after a failure), calls as
//! UAC or UAS (offer/answer, hold, PRACK, UPDATE, re-INVITE glare), MESSAGE and
//! OPTIONS. A call's dialog state lives in the dialog layer, not in the call: the CSeq
//! numbers, route set and target, the ACK to every 2xx, forked 2xx (the extra ones
//! ACKed and hung up), RFC 4028 session timers, and our 2xx retransmitted until its ACK
//! (RFC 3261 §13.3.1.4, on the [`TimerConfig`] the transaction layer uses too, a BYE
//! when none comes). The call keeps what is the user agent's: media, offer/answer, the
//! script of timers, what to print.
//!
//! # Many calls
//!
//! One `UserAgent` holds any number of calls, keyed by [`CallId`] (and by SIP Call-ID
//! and dialog inside), so that a B2BUA can run both legs of thousands of calls on one
//! instance: [`UserAgent::set_max_calls`] says how many may be up at once,
//! [`UserAgent::place_call`] places one, [`UserAgent::answer_ringing_call`] and
//! [`UserAgent::hang_up`] act on one. The default, 1, is the phone's: an INVITE while a
//! call is up gets 486 Busy Here. An event about a call names it
//! ([`PhoneEvent::call`]), and a media command names the call's session by its RTP
//! port ([`Output::Media`]; a B2BUA relays media its own way). We chose one type rather
//! than a second one beside it, so that registration, challenges and the transaction
//! layer stay shared by every call.
//!
//! # Transfer
//!
//! A call can be transferred (RFC 3515 REFER and its implicit subscription, RFC 3892
//! Referred-By, RFC 3891 Replaces), both ways: see [`UserAgent::transfer`],
//! [`UserAgent::set_transfer_script`] and the `transfer` module's docs.
//!
//! It is fed what
//! arrives ([`UserAgent::on_message`]), the time ([`UserAgent::on_timeout`]), media events and
//! the user's keys, each with an explicit `now`; it answers with what to transmit
//! ([`UserAgent::poll_transmit`]), what to show or do with media ([`UserAgent::poll_output`]) and,
//! in the end, an exit code ([`exit`]). Randomness (tags, branches, Call-IDs, cnonces,
//! the glare wait) comes from a seed the caller draws from the OS.
//!
//! The driver that runs it on sockets, RTP sessions and a terminal is the caller's:
//! `switchboard phone` has one on tokio and `sip-net`.
//!
//! ```
//! use sip_ua::{UserAgent, LocalAddrs, Output, Settings, Task, sdp_codecs};
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
//! let mut ua = UserAgent::new(local, settings, task, seed);
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
use sip_core::auth::{Challenge, answer_challenge, pick_best};
use sip_core::dialog::{
    DialogEvent, DialogId, DialogLayer, DialogTransmit, LocalEnd, Refresher, ResponseOutcome,
    SessionTimer, TerminationReason, glare_retry_after,
};
use sip_core::ids::IdGenerator;
use sip_core::name::HeaderName;
use sip_core::sdp::{AudioStream, Direction, OfferAnswer, SessionDescription, answer_direction};
use sip_core::transaction::{Event, TimerConfig, TransactionKey, TransactionLayer, Transmit};
use sip_core::{Flow, Message, MessageBuilder, Method, Transport, response_to};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod answer;
mod call;
mod client;
mod dispatch;
pub mod media;
mod message;
mod registration;
pub mod relay;
#[cfg(test)]
mod tests;
mod transfer;

pub use media::{AudioSource, Codec, MediaEvent, StreamParams};
#[cfg(test)]
use registration::registration_refusal;
pub use transfer::TransferScript;

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
    /// The call it happened to, for an event about a call (the phone has one at a
    /// time and prints none).
    pub call: Option<CallId>,
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

/// The methods a relay leg serves (a B2BUA's, see [`relay`]).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, UPDATE, PRACK, INFO";

/// The methods the [`UserAgent`] serves: a relay leg's, and REFER with its NOTIFYs
/// (its calls can be transferred).
const UA_ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, UPDATE, PRACK, INFO, REFER, NOTIFY";

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
    /// Answer at once; otherwise ring until [`UserAgent::on_enter`].
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
    Invite(CallId),
    Bye(CallId),
    /// A REFER sent in the call's dialog (we transfer it).
    Refer(CallId),
    /// A re-INVITE or UPDATE carrying our offer with this direction.
    Modify {
        call: CallId,
        method: Method,
        direction: Direction,
        refresh: bool,
    },
    Other,
}

/// A call of this user agent, as UAC or UAS: the handle the user agent's calls are
/// keyed by (a B2BUA keeps one per leg). Never reused within one [`UserAgent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(u64);

impl CallId {
    /// Its number (1 for a user agent's first call, then 2...), for output.
    pub fn number(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call {}", self.0)
    }
}

/// One call: what it is for (media, the script's timers, offer/answer, what to print).
/// Its dialog's state (CSeq, route set, target, the 2xx until its ACK, the session
/// timer) is in the user agent's [`DialogLayer`], under `dialog`.
struct Call {
    id: CallId,
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
    /// The call's dialog in the dialog layer: UAC, the early dialog of the first
    /// provisional with a tag, then the one the first 2xx confirmed; UAS, ours.
    dialog: Option<DialogId>,
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
    digits: String,
    play: Option<PathBuf>,
    record: Option<PathBuf>,
    answered_at: Option<Instant>,
    cancelled: Option<(&'static str, u8)>,
    rseq_acked: Option<u32>,
    ringing_printed: bool,
    /// UAC: what to do once answered ([`UserAgent::place_call`]'s task).
    script: Option<CallTask>,
    /// The last final or provisional status of our INVITE (for a transfer's NOTIFY).
    last_status: Option<(u16, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallTimer {
    Dtmf,
    Hold,
    Resume,
    Hangup,
    AnswerTimeout,
    EndFallback,
    GlareRetry(Direction),
    ChangeCodec,
    /// A step of a transfer (see `transfer.rs`).
    Transfer(transfer::TransferStep),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    RegisterRefresh,
    ExitDeadline,
    Call(CallId, CallTimer),
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

/// What the media session of a call must do. Each call has its own session, named in
/// [`Output::Media`] by its RTP port.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaCommand {
    /// The new call takes the session bound ahead on `port` (see [`UserAgent::set_media_port`]).
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
    /// Something for the media session of the call whose RTP port is `port` (a phone
    /// has two calls during a transfer, each with its session).
    Media {
        /// The session's RTP port (see [`UserAgent::set_media_port`]).
        port: u16,
        /// What to do.
        command: MediaCommand,
    },
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
            call: None,
        }));
    }

    /// An event about call `call`.
    fn call_event(
        &mut self,
        call: CallId,
        name: &'static str,
        detail: Option<&str>,
        fields: &[(&'static str, Value)],
    ) {
        self.0.push_back(Output::Event(PhoneEvent {
            name,
            detail: detail.map(str::to_owned),
            fields: fields.to_vec(),
            call: Some(call),
        }));
    }

    fn warn(&mut self, text: &str) {
        self.0.push_back(Output::Warning(text.to_owned()));
    }

    fn media(&mut self, port: u16, command: MediaCommand) {
        self.0.push_back(Output::Media { port, command });
    }
}

/// The sans-IO user agent. See the [module docs](self).
pub struct UserAgent {
    local: LocalAddrs,
    txl: TransactionLayer,
    s: Settings,
    task: Task,
    out: Outputs,
    pending: HashMap<TransactionKey, Pending>,
    timers: Vec<(Instant, Timer)>,
    /// Every call, by id; ordered, so that "the ringing call" is the oldest.
    calls: BTreeMap<CallId, Call>,
    /// The call of each SIP Call-ID.
    by_call_id: HashMap<String, CallId>,
    /// How many calls may be up at once: 1 for the phone (a second INVITE is busy).
    max_calls: usize,
    /// Every dialog of every call, with the 2xx retransmission, ACKs, forks and session
    /// timers.
    dialogs: DialogLayer,
    next_call: u64,
    registered: bool,
    register_out: Option<Outgoing>,
    task_started: bool,
    finished: Option<u8>,
    exit_ready: bool,
    calls_done: u32,
    messages_seen: u32,
    /// The RTP port of a media session the driver bound ahead of the next call (the
    /// handlers are synchronous and the SDP needs it), or why it could not.
    media_port: Result<u16, String>,
    /// Ctrl-C or SIGTERM: stop once the call in progress has ended.
    interrupted: bool,
    /// The task is over and the exit under way (see [`UserAgent::begin_exit`]).
    exiting: bool,
    /// Our end of the connection to the server (or the far end), for transports we
    /// cannot accept connections on (TLS, WS, WSS: we listen on UDP and TCP only). Via
    /// and Contact name it, so that what is sent to us comes back over this connection
    /// (see [`UserAgent::connection_to_open`]).
    connection_local: Option<SocketAddr>,
    /// Registrations failed in a row while the task runs (see
    /// [`UserAgent::retry_registration_later`]).
    register_failures: u32,
    /// Why sending failed, by transaction, until the transaction layer reports it.
    send_errors: HashMap<TransactionKey, String>,
    /// Tags, branches, Call-IDs and cnonces: sip-core's one source of identifiers,
    /// keyed from the caller's seed (issue 12, defect 8).
    ids: IdGenerator,
    /// Session ids, the first CSeq of a dialog and the glare wait, from the caller's
    /// seed.
    rng: ChaCha20Rng,
    /// Transfers under way, both ways, and the person's transfer script.
    transfers: transfer::Transfers,
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

/// Whether requests for us over `transport` can only come back over a connection we
/// opened: we listen on UDP and TCP, so a TLS or WebSocket peer cannot connect to us.
fn needs_own_connection(transport: Transport) -> bool {
    !matches!(transport, Transport::Udp | Transport::Tcp)
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

impl UserAgent {
    /// A user agent listening on `local` that will do `task`. `seed` must be fresh
    /// random bytes (the OS's): tags and branches must be unique across runs and
    /// unpredictable (RFC 3261 §19.3), and cnonces unpredictable.
    pub fn new(local: LocalAddrs, s: Settings, task: Task, seed: [u8; 32]) -> UserAgent {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        #[allow(clippy::expect_used)]
        let ids = IdGenerator::new(&key).expect("a 32-byte key is long enough");
        rng.fill_bytes(&mut key);
        #[allow(clippy::expect_used)]
        let dialog_ids = IdGenerator::new(&key).expect("a 32-byte key is long enough");
        UserAgent {
            local,
            txl: TransactionLayer::new(s.timers),
            dialogs: DialogLayer::new(s.timers, dialog_ids),
            s,
            task,
            out: Outputs::default(),
            pending: HashMap::new(),
            timers: Vec::new(),
            calls: BTreeMap::new(),
            by_call_id: HashMap::new(),
            max_calls: 1,
            next_call: 1,
            registered: false,
            register_out: None,
            task_started: false,
            finished: None,
            exit_ready: false,
            calls_done: 0,
            messages_seen: 0,
            media_port: Err("no media session".into()),
            interrupted: false,
            exiting: false,
            connection_local: None,
            send_errors: HashMap::new(),
            register_failures: 0,
            ids,
            rng,
            transfers: transfer::Transfers::default(),
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

    /// Sending what [`UserAgent::poll_transmit`] gave for transaction `key` failed, for
    /// `reason` (told to the user: "TLS: certificate not trusted (UnknownIssuer)...").
    pub fn on_transport_error(&mut self, key: TransactionKey, reason: String, now: Instant) {
        self.send_errors.insert(key, reason);
        let _ = self.txl.handle_transport_error(now, key);
    }

    /// The connection the driver must open before [`UserAgent::start`], when the phone talks
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

    /// The driver opened [`UserAgent::connection_to_open`]: `local` is our end of it.
    pub fn set_connection_local(&mut self, local: SocketAddr) {
        self.connection_local = Some(local);
    }

    /// Handles what the transaction and dialog layers reported; `true` if there was
    /// anything (then poll again: it may have queued messages to send).
    pub fn handle_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        loop {
            let mut progressed = false;
            while let Some(event) = self.txl.poll_event() {
                progressed = true;
                self.on_event(event, now);
            }
            progressed |= self.pump_dialogs(now);
            progressed |= self.pump_transfers(now);
            if !progressed {
                return any;
            }
            any = true;
        }
    }

    /// When [`UserAgent::on_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.txl.poll_timeout(),
            self.dialogs.poll_timeout(),
            self.timers.iter().map(|(t, _)| *t).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed: runs the transaction and dialog timers and ours that are due.
    pub fn on_timeout(&mut self, now: Instant) {
        self.txl.handle_timeout(now);
        self.dialogs.handle_timeout(now);
        self.pump_dialogs(now);
        self.fire_timers(now);
    }

    /// Whether nothing is left in the user agent's tables: no transaction, no call, no
    /// dialog, no request awaiting an answer. A test on a simulated network checks it
    /// after every call has ended and the timers have run out.
    pub fn is_idle(&self) -> bool {
        self.txl.is_empty()
            && self.calls.is_empty()
            && self.dialogs.is_empty()
            && self.pending.is_empty()
            && self.transfers.is_idle()
    }

    /// How many calls may be up at once (default 1, the phone's: an INVITE while a call
    /// is up is answered 486 Busy Here). A B2BUA or a test of many calls raises it.
    pub fn set_max_calls(&mut self, max: usize) {
        self.max_calls = max.max(1);
    }

    /// How many calls are up (ringing, answered or ending).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The dialog layer, for a look at the dialogs (tests, diagnostics).
    pub fn dialog_layer(&self) -> &DialogLayer {
        &self.dialogs
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
        // The phone's one media session: every call (there is one) tries again.
        for c in self.calls.values_mut() {
            c.media_started = false;
        }
    }

    /// The user pressed Enter: answers the call ringing, if any; else transfers the call
    /// up when a transfer target was given ([`UserAgent::set_transfer_script`]).
    pub fn on_enter(&mut self, now: Instant) {
        let ringing = self
            .calls
            .values()
            .find(|c| c.role == Role::Uas && c.state == CallState::Setup)
            .map(|c| c.id);
        match ringing {
            Some(cid) => self.answer_ringing_call(cid, now),
            None => self.transfer_on_enter(now),
        }
    }

    // ----- plumbing -----

    fn random_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    fn media(&mut self, port: u16, command: MediaCommand) {
        self.out.media(port, command);
    }

    /// The media session bound ahead, for a new call: its port (told to the driver).
    fn take_media(&mut self) -> Result<u16, String> {
        let port = std::mem::replace(&mut self.media_port, Err("no media session".into()))?;
        self.media(port, MediaCommand::Bind { port });
        Ok(port)
    }

    fn arm(&mut self, at: Instant, timer: Timer) {
        self.timers.retain(|(_, t)| *t != timer);
        self.timers.push((at, timer));
    }

    fn disarm(&mut self, timer: Timer) {
        self.timers.retain(|(_, t)| *t != timer);
    }

    fn arm_call(&mut self, cid: CallId, at: Instant, timer: CallTimer) {
        if self.calls.contains_key(&cid) {
            self.arm(at, Timer::Call(cid, timer));
        }
    }

    fn call(&self, cid: CallId) -> Option<&Call> {
        self.calls.get(&cid)
    }

    fn call_mut(&mut self, cid: CallId) -> Option<&mut Call> {
        self.calls.get_mut(&cid)
    }

    /// The call a message belongs to, by its Call-ID.
    fn call_of(&self, msg: &Message) -> Option<CallId> {
        self.by_call_id.get(msg.call_id().ok()?).copied()
    }

    /// The call whose dialog is `id`.
    fn call_of_dialog(&self, id: &DialogId) -> Option<CallId> {
        let cid = *self.by_call_id.get(&id.call_id)?;
        (self.call(cid)?.dialog.as_ref() == Some(id)).then_some(cid)
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
                Timer::Call(cid, t) => {
                    if self.calls.contains_key(&cid) {
                        self.on_call_timer(cid, t, now);
                    }
                }
            }
        }
    }

    fn branch(&mut self) -> String {
        self.ids.branch()
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

    /// Our end of a dialog whose requests go, unless its next hop has a numeric
    /// address, to `fallback` (the server, or where the far end's INVITE came from).
    fn local_end(&self, fallback: Flow) -> LocalEnd {
        let transport = fallback.transport;
        LocalEnd {
            contact: self.contact_uri(transport),
            via: format!(
                "SIP/2.0/{} {}",
                transport.via_token(),
                self.local_addr(transport)
            ),
            fallback,
            transport: self.s.transport,
        }
    }
}
