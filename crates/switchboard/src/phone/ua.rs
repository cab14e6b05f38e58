//! The user agent behind `switchboard phone`: one tokio task that owns the transaction
//! layer, the registration, at most one call (its dialog, offer/answer state and media
//! session) and the pending client requests, and drives them from received messages,
//! timers and media events, one at a time, with no locks.
//!
//! The protocol rules live in `sip-core` (transactions, [`Dialog`], SDP offer/answer,
//! digest auth, session timers); this file decides what the phone does with them: what
//! to send when, what to print, and with which exit code to stop.
//!
//! Every handler is synchronous and queues what it sends in the transaction layer
//! (`send_request`, `send_response`, `send_stateless`); the loop then drains the layer
//! onto the network, as `serve` does.

use super::exit;
use super::print::Printer;
use bytes::Bytes;
use media::{AudioSink, AudioSource, Codec, MediaEvent, MediaSession, StreamParams};
use serde_json::json;
use sip_core::auth::{Challenge, pick_best, respond};
use sip_core::dialog::{Dialog, Refresher, SessionTimer, SessionTimerAction, glare_retry_after};
use sip_core::name::HeaderName;
use sip_core::sdp::{AudioStream, Direction, OfferAnswer, SessionDescription, answer_direction};
use sip_core::transaction::{Event, TransactionKey, TransactionLayer};
use sip_core::{Flow, Message, MessageBuilder, Method, Transport, response_to};
use sip_net::{Endpoint, Incoming, Target};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The codecs the phone offers and accepts, in order of preference:
/// (payload type, encoding, clock rate).
pub const CODECS: &[(u8, &str, u32)] = &[
    (0, "PCMU", 8000),
    (8, "PCMA", 8000),
    (101, "telephone-event", 8000),
];

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, UPDATE, PRACK, INFO";
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

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
    /// Seconds to wait for an answer before cancelling.
    pub answer_timeout: f64,
}

/// `phone answer`.
#[derive(Debug, Clone)]
pub struct AnswerTask {
    /// Answer at once instead of waiting for Enter on standard input.
    pub auto: bool,
    /// The WAV to play to callers.
    pub play: Option<PathBuf>,
    /// Where to record callers (with `{n}` replaced by the call number, if present).
    pub record: Option<PathBuf>,
    /// Refuse calls with this status instead of answering.
    pub reject: Option<u16>,
    /// Hang up this many seconds after answering.
    pub hangup_after: Option<f64>,
    /// Stop after this many calls.
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
    media: Option<MediaSession>,
    media_started: bool,
    local_sdp: SessionDescription,
    oa: OfferAnswer,
    remote: Option<AudioStream>,
    /// The direction we want (SendOnly while we hold the call).
    wanted: Direction,
    held_by_us: bool,
    held_by_them: bool,
    ack: Option<(Bytes, Flow, String)>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    RegisterRefresh,
    ExitDeadline,
    Call(u64, CallTimer),
}

/// The user agent. See the [module docs](self).
pub struct Ua {
    endpoint: Endpoint,
    txl: TransactionLayer,
    s: Settings,
    task: Task,
    out: Printer,
    pending: HashMap<TransactionKey, Pending>,
    timers: Vec<(Instant, Timer)>,
    call: Option<Call>,
    next_generation: u64,
    media_rx: Option<mpsc::Receiver<MediaEvent>>,
    stopping: Vec<MediaSession>,
    registered: bool,
    register_out: Option<Outgoing>,
    task_started: bool,
    finished: Option<u8>,
    exit_ready: bool,
    calls_done: u32,
    messages_seen: u32,
    stdin_rx: Option<mpsc::UnboundedReceiver<String>>,
    counter: u64,
    /// A media session bound ahead of the next call, so that the handlers, which are
    /// synchronous, have an RTP port at hand.
    spare_media: Option<MediaSession>,
    spare_error: Option<String>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness: fall back on the clock; identifiers only need to be unique.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    let _ = getrandom::fill(&mut buf);
    u32::from_le_bytes(buf)
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

impl Ua {
    /// A user agent on `endpoint` (already listening) that will do `task`.
    pub fn new(endpoint: Endpoint, s: Settings, task: Task, out: Printer) -> Ua {
        Ua {
            endpoint,
            txl: TransactionLayer::default(),
            s,
            task,
            out,
            pending: HashMap::new(),
            timers: Vec::new(),
            call: None,
            next_generation: 1,
            media_rx: None,
            stopping: Vec::new(),
            registered: false,
            register_out: None,
            task_started: false,
            finished: None,
            exit_ready: false,
            calls_done: 0,
            messages_seen: 0,
            stdin_rx: None,
            counter: 0,
            spare_media: None,
            spare_error: None,
        }
    }

    /// Runs until the task is done (and the registration removed); returns the exit code.
    pub async fn run(mut self, mut incoming: mpsc::Receiver<Incoming>) -> u8 {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        if let Task::Answer(a) = &self.task
            && !a.auto
            && a.reject.is_none()
        {
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    if tx.send(std::mem::take(&mut line)).is_err() {
                        break;
                    }
                }
            });
            self.stdin_rx = Some(rx);
        }
        self.bind_spare_media().await;
        self.start(Instant::now());
        loop {
            self.drain().await;
            if self.spare_media.is_none() {
                self.bind_spare_media().await;
            }
            for media in std::mem::take(&mut self.stopping) {
                let stats = media.stop().await;
                tracing::debug!(?stats, "media stopped");
            }
            if let Some(code) = self.finished {
                if !self.exit_ready {
                    self.begin_exit(Instant::now());
                    self.drain().await;
                }
                if self.exit_ready {
                    return code;
                }
            }
            let next = [
                self.txl.poll_timeout(),
                self.timers.iter().map(|(t, _)| *t).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async move {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
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
            let stdin_rx = &mut self.stdin_rx;
            let stdin_line = async move {
                match stdin_rx {
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
                    Some(m) => self.on_incoming(m),
                    None => {
                        self.out.warn("the transport layer stopped");
                        return exit::FAILED;
                    }
                },
                () = sleep => {
                    let now = Instant::now();
                    self.txl.handle_timeout(now);
                    self.fire_timers(now);
                }
                ev = media_event => match ev {
                    Some(ev) => self.on_media(ev),
                    None => self.media_rx = None,
                },
                line = stdin_line => match line {
                    Some(_) => self.answer_ringing_call(Instant::now()),
                    None => self.stdin_rx = None,
                },
                _ = tokio::signal::ctrl_c() => self.interrupt(),
                _ = term => self.interrupt(),
            }
        }
    }

    // ----- plumbing -----

    async fn bind_spare_media(&mut self) {
        match MediaSession::bind(self.local_ip()).await {
            Ok(m) => {
                self.spare_media = Some(m);
                self.spare_error = None;
            }
            Err(e) => self.spare_error = Some(e.to_string()),
        }
    }

    fn take_media(&mut self) -> Result<MediaSession, String> {
        self.spare_media.take().ok_or_else(|| {
            self.spare_error
                .clone()
                .unwrap_or_else(|| "no media session".into())
        })
    }

    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.txl.poll_transmit() {
                progressed = true;
                if let Err(e) = self.endpoint.send(Target::Flow(t.flow), t.bytes).await {
                    tracing::debug!("send to {} failed: {e}", t.flow.remote);
                    if let Some(key) = t.key {
                        let _ = self.txl.handle_transport_error(Instant::now(), key);
                    }
                }
            }
            while let Some(event) = self.txl.poll_event() {
                progressed = true;
                self.on_event(event, Instant::now());
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_incoming(&mut self, incoming: Incoming) {
        let now = Instant::now();
        let Incoming::Message { msg, flow, .. } = incoming else {
            return;
        };
        if msg.is_request() {
            let target = sip_net::response_target(&flow, &msg);
            if let Err(e) = msg.validate() {
                // Answered statelessly, as serve does: it may lack what a transaction
                // is keyed by.
                tracing::debug!("invalid request from {}: {e}", flow.remote);
                if let crate::service::Answer::Respond(bytes) =
                    crate::service::answer_invalid(msg.as_bytes(), &e)
                {
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
                Timer::ExitDeadline => self.exit_ready = true,
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
        format!("z9hG4bK{}{:x}", random_hex(6), self.counter)
    }

    /// Our address on `transport`, for Via and Contact.
    fn local_addr(&self, transport: Transport) -> SocketAddr {
        let listener = match transport {
            Transport::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        self.endpoint
            .local_addr(listener)
            .or_else(|| self.endpoint.local_addr(Transport::Udp))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    fn local_ip(&self) -> IpAddr {
        self.local_addr(Transport::Udp).ip()
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
        let targets = sip_net::dns::numeric_target(uri)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("{uri}: without --server, call an address with a numeric host")
            })?;
        let t = targets.first().ok_or_else(|| format!("{uri}: no target"))?;
        // A URI without transport= goes over the transport the phone was given.
        let has_transport = uri.contains("transport=");
        Ok(Flow {
            transport: if has_transport {
                t.transport
            } else {
                self.s.transport
            },
            remote: t.addr,
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
    fn authenticate(&self, o: &mut Outgoing, response: &Message) -> bool {
        let Some(password) = &self.s.password else {
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
        let cnonce = random_hex(12);
        match respond(
            challenge,
            &self.s.user,
            password,
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

    fn start(&mut self, now: Instant) {
        if self.s.server.is_some() {
            self.register(now, self.s.expires);
        } else {
            self.start_task(now);
        }
    }

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
                call_id: format!("{}@{}", random_hex(10), self.local_ip()),
                from_tag: random_hex(6),
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
        if unregister {
            if (200..300).contains(&status) {
                self.out.event("unregistered", None, &[]);
            }
            self.registered = false;
            self.exit_ready = true;
            return;
        }
        if !(200..300).contains(&status) {
            let reason = format!("{status} {}", response.reason().unwrap_or(""));
            self.out.event(
                "registration failed",
                Some(reason.trim()),
                &[("status", json!(status))],
            );
            self.registered = false;
            if !self.task_started {
                self.finish(exit::FAILED);
            }
            return;
        }
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
        if !self.registered {
            self.out.event(
                "registered",
                Some(&format!("{} for {granted} s", self.aor())),
                &[("aor", json!(self.aor())), ("expires", json!(granted))],
            );
        }
        self.registered = true;
        // Refresh at half the granted time (at least a second from now).
        let refresh = Duration::from_secs(u64::from(granted.max(2) / 2));
        self.arm(now + refresh, Timer::RegisterRefresh);
        if !self.task_started {
            self.start_task(now);
        }
    }

    fn finish(&mut self, code: u8) {
        if self.finished.is_none() {
            self.finished = Some(code);
        }
    }

    /// Removes the registration (waiting at most 2 s for the answer) before exiting.
    fn begin_exit(&mut self, now: Instant) {
        if self.registered && self.s.server.is_some() {
            self.registered = false;
            self.disarm(Timer::RegisterRefresh);
            self.register(now, 0);
            self.arm(now + Duration::from_secs(2), Timer::ExitDeadline);
        } else if !self.timers.iter().any(|(_, t)| *t == Timer::ExitDeadline) {
            // A moment for what is queued on connections to be written (the 200 to a
            // BYE, say) before the endpoint shuts down.
            let linger = if self.call.is_none() {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(2)
            };
            self.arm(now + linger, Timer::ExitDeadline);
        }
    }

    /// Ctrl-C or SIGTERM: hang up what is up, then exit through [`Ua::begin_exit`].
    fn interrupt(&mut self) {
        let now = Instant::now();
        if self.call.is_some() {
            self.hang_up(now);
            let code = self.finished.unwrap_or(exit::FAILED);
            self.finish(code);
        } else {
            self.finish(self.finished.unwrap_or(exit::OK));
        }
        self.arm(now + Duration::from_secs(3), Timer::ExitDeadline);
    }

    fn start_task(&mut self, now: Instant) {
        self.task_started = true;
        match self.task.clone() {
            Task::Call(c) => self.place_call(c, now),
            Task::Message { target, text } => self.send_message(&target, &text, now),
            Task::Answer(_) => self.out.event("waiting for calls", None, &[]),
            Task::Listen { .. } => self.out.event("waiting for messages", None, &[]),
        }
    }

    // ----- MESSAGE -----

    fn send_message(&mut self, target: &str, text: &str, now: Instant) {
        let flow = match self.flow_for(target) {
            Ok(f) => f,
            Err(e) => {
                self.out.event("message failed", Some(&e), &[]);
                self.finish(exit::FAILED);
                return;
            }
        };
        let o = Outgoing {
            method: Method::Message,
            uri: target.to_owned(),
            to: format!("<{target}>"),
            call_id: format!("{}@{}", random_hex(10), self.local_ip()),
            from_tag: random_hex(6),
            cseq: 1,
            headers: Vec::new(),
            body: Some(("text/plain;charset=UTF-8", Bytes::from(text.to_owned()))),
            auth: None,
            answered: Vec::new(),
            flow,
        };
        match self.send_outgoing(&o, now) {
            Ok((key, _)) => {
                self.pending.insert(key, Pending::Message(o));
            }
            Err(e) => {
                self.out.event("message failed", Some(&e), &[]);
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
        let reason = format!("{status} {}", response.reason().unwrap_or(""));
        if (200..300).contains(&status) {
            self.out.event(
                "message sent",
                Some(reason.trim()),
                &[("status", json!(status))],
            );
            self.finish(exit::OK);
        } else {
            self.out.event(
                "message failed",
                Some(reason.trim()),
                &[("status", json!(status))],
            );
            self.finish(exit_for_status(status).max(exit::REJECTED.min(exit_for_status(status))));
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
            .unwrap_or_else(|| random_hex(6));
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
            Event::Timeout { key, .. } | Event::TransportError { key } => {
                if let Some(p) = self.pending.remove(&key) {
                    self.on_request_failed(key, p, now);
                }
            }
            Event::Terminated { key } => {
                self.pending.remove(&key);
            }
            _ => {}
        }
    }

    fn on_request(&mut self, key: TransactionKey, request: Message, flow: Flow, now: Instant) {
        let Some(method) = request.method().cloned() else {
            return;
        };
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
            _ => {
                self.respond(
                    key,
                    &request,
                    405,
                    &[("Allow", ALLOW.to_owned())],
                    None,
                    now,
                );
            }
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
                    self.end_call("bye (local)", exit::OK);
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

    fn on_request_failed(&mut self, _key: TransactionKey, pending: Pending, now: Instant) {
        match pending {
            Pending::Register(_) => {
                self.out.event(
                    "registration failed",
                    Some("no response from the server"),
                    &[],
                );
                self.registered = false;
                if !self.task_started {
                    self.finish(exit::FAILED);
                } else {
                    self.arm(now + Duration::from_secs(30), Timer::RegisterRefresh);
                }
            }
            Pending::Unregister(_) => self.exit_ready = true,
            Pending::Message(_) => {
                self.out.event("message failed", Some("no response"), &[]);
                self.finish(exit::FAILED);
            }
            Pending::Invite => {
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.state != CallState::Answered)
                {
                    let (reason, code) = self
                        .call
                        .as_ref()
                        .and_then(|c| c.cancelled)
                        .unwrap_or(("no answer (timeout)", exit::NO_ANSWER));
                    self.end_call(reason, code);
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

// ----- calls -----

impl Ua {
    fn new_call(
        &mut self,
        role: Role,
        call_id: String,
        local_tag: String,
        flow: Flow,
        media: MediaSession,
    ) -> Call {
        let generation = self.next_generation;
        self.next_generation += 1;
        let sid = u64::from(random_u32());
        let local_sdp = SessionDescription::new_audio_offer(
            &self.s.user,
            sid,
            self.local_ip(),
            media.local_rtp_port(),
            CODECS,
        );
        Call {
            generation,
            role,
            state: CallState::Setup,
            call_id,
            local_tag,
            invite: None,
            invite_out: None,
            invite_key: None,
            request: None,
            dialog: None,
            flow,
            media: Some(media),
            media_started: false,
            local_sdp,
            oa: OfferAnswer::default(),
            remote: None,
            wanted: Direction::SendRecv,
            held_by_us: false,
            held_by_them: false,
            ack: None,
            ok_retx: None,
            digits: String::new(),
            play: None,
            record: None,
            answered_at: None,
            cancelled: None,
            rseq_acked: None,
            session_timer: None,
            ringing_printed: false,
        }
    }

    fn place_call(&mut self, task: CallTask, now: Instant) {
        let flow = match self.flow_for(&task.target) {
            Ok(f) => f,
            Err(e) => {
                self.out.event("ended", Some(&format!("failed ({e})")), &[]);
                self.finish(exit::FAILED);
                return;
            }
        };
        let media = match self.take_media() {
            Ok(m) => m,
            Err(e) => {
                self.out
                    .event("ended", Some(&format!("failed (no RTP port: {e})")), &[]);
                self.finish(exit::FAILED);
                return;
            }
        };
        let call_id = format!("{}@{}", random_hex(10), self.local_ip());
        let local_tag = random_hex(6);
        let mut call = self.new_call(Role::Uac, call_id.clone(), local_tag.clone(), flow, media);
        call.play = task.play.clone();
        call.record = task.record.clone();
        let _ = call.oa.send_offer();
        let sdp = Bytes::from(call.local_sdp.to_bytes());
        let mut headers = vec![
            ("Contact", format!("<{}>", self.contact_uri(flow.transport))),
            ("Allow", ALLOW.to_owned()),
            ("Supported", "timer, 100rel".to_owned()),
        ];
        if let Some(se) = self.s.session_expires {
            headers.push(("Session-Expires", format!("{se};refresher=uac")));
            headers.push(("Min-SE", "90".to_owned()));
        }
        let o = Outgoing {
            method: Method::Invite,
            uri: task.target.clone(),
            to: format!("<{}>", task.target),
            call_id,
            from_tag: local_tag,
            cseq: 1,
            headers,
            body: Some(("application/sdp", sdp)),
            auth: None,
            answered: Vec::new(),
            flow,
        };
        self.call = Some(call);
        self.out.event(
            "calling",
            Some(&task.target),
            &[("target", json!(task.target))],
        );
        self.send_invite(o, now);
        self.arm_call(now + secs(task.answer_timeout), CallTimer::AnswerTimeout);
    }

    fn send_invite(&mut self, o: Outgoing, now: Instant) {
        match self.send_outgoing(&o, now) {
            Ok((key, msg)) => {
                self.pending.insert(key, Pending::Invite);
                if let Some(c) = self.call.as_mut() {
                    c.invite = Some(msg);
                    c.invite_key = Some(key);
                    c.invite_out = Some(o);
                }
            }
            Err(e) => self.end_call(&format!("failed ({e})"), exit::FAILED),
        }
    }

    fn on_invite_response(&mut self, key: TransactionKey, response: &Message, now: Instant) {
        let status = response.status().unwrap_or(0);
        let contact = self.contact_uri(
            self.call
                .as_ref()
                .map_or(self.s.transport, |c| c.flow.transport),
        );
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.invite_key != Some(key) {
            return;
        }
        let Some(invite) = call.invite.clone() else {
            return;
        };
        let invite_seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        match status {
            100 => self.out.event("trying", None, &[]),
            101..=199 => {
                let to_tag = response.to().ok().and_then(|t| t.tag()).map(str::to_owned);
                if to_tag.is_some()
                    && call.dialog.is_none()
                    && let Ok(d) = Dialog::from_uac(&invite, response, &contact)
                {
                    call.dialog = Some(d);
                }
                if !call.ringing_printed || status == 183 {
                    call.ringing_printed = true;
                    let name = if status == 180 { "ringing" } else { "progress" };
                    self.out.event(
                        name,
                        Some(&status.to_string()),
                        &[("status", json!(status))],
                    );
                }
                if has_sdp(response) && call.oa == OfferAnswer::LocalOffer {
                    let _ = call.oa.receive_answer();
                    self.out.event("early media", None, &[]);
                    self.apply_remote_sdp(response.body(), now);
                }
                self.maybe_prack(response, invite_seq, now);
            }
            200..=299 => self.on_invite_2xx(response, &invite, invite_seq, &contact, now),
            _ => {
                let cancelled = call.cancelled;
                if matches!(status, 401 | 407) {
                    let mut o = call.invite_out.clone();
                    if let Some(o) = o.as_mut()
                        && self.authenticate(o, response)
                    {
                        let o = o.clone();
                        self.send_invite(o, now);
                        return;
                    }
                }
                let reason = response.reason().unwrap_or("").to_owned();
                let (what, code) = match cancelled {
                    Some((what, code)) if status == 487 => (what.to_owned(), code),
                    _ => {
                        let kind = match exit_for_status(status) {
                            exit::BUSY => "busy",
                            exit::NO_ANSWER => "no answer",
                            _ => "rejected",
                        };
                        (
                            format!("{kind} ({status} {reason})"),
                            exit_for_status(status),
                        )
                    }
                };
                self.end_call(&what, code);
            }
        }
    }

    fn maybe_prack(&mut self, response: &Message, invite_seq: u32, now: Instant) {
        let Some(rseq) = response.rseq().ok().flatten() else {
            return;
        };
        if !tokens_contain(response, HeaderName::Require, "100rel") {
            return;
        }
        let transport = self
            .call
            .as_ref()
            .map_or(self.s.transport, |c| c.flow.transport);
        let via = self.via(transport);
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.rseq_acked.is_some_and(|r| r >= rseq) {
            return;
        }
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        call.rseq_acked = Some(rseq);
        let Ok(prack) = dialog.prack(rseq, invite_seq, &via).build() else {
            return;
        };
        let flow = call.flow;
        let flow = self
            .call
            .as_ref()
            .and_then(|c| c.dialog.as_ref())
            .map_or(flow, |d| self.dialog_flow(d, flow));
        if let Ok(key) = self.txl.send_request(now, prack, flow) {
            self.pending.insert(key, Pending::Other);
        }
    }

    fn on_invite_2xx(
        &mut self,
        response: &Message,
        invite: &Message,
        invite_seq: u32,
        contact: &str,
        now: Instant,
    ) {
        let to_tag = response
            .to()
            .ok()
            .and_then(|t| t.tag())
            .unwrap_or("")
            .to_owned();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if let Some((bytes, flow, tag)) = &call.ack {
            // A retransmitted 2xx: the ACK was lost. A 2xx from another fork: ACK it too
            // (and hang that one up: one call is enough).
            self.txl.send_stateless(*flow, bytes.clone());
            if *tag != to_tag {
                tracing::debug!("2xx from a second fork ({to_tag}); ACKed and ignored");
            }
            return;
        }
        match call.dialog.as_mut() {
            Some(d) if d.id.remote_tag == to_tag => d.receive_response(response, true),
            _ => match Dialog::from_uac(invite, response, contact) {
                Ok(d) => call.dialog = Some(d),
                Err(e) => {
                    self.out.warn(&format!("unusable 2xx: {e}"));
                    return;
                }
            },
        }
        let fallback = call.flow;
        let transport = fallback.transport;
        let via = self.via(transport);
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(dialog) = call.dialog.clone() else {
            return;
        };
        let flow = self.dialog_flow(&dialog, fallback);
        match dialog.ack(invite_seq, &via).into_bytes() {
            Ok(bytes) => {
                self.txl.send_stateless(flow, bytes.clone());
                if let Some(c) = self.call.as_mut() {
                    c.ack = Some((bytes, flow, to_tag));
                    c.flow = flow;
                }
            }
            Err(e) => self.out.warn(&format!("cannot build the ACK: {e}")),
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.oa == OfferAnswer::LocalOffer {
            if has_sdp(response) {
                let _ = call.oa.receive_answer();
                self.apply_remote_sdp(response.body(), now);
            } else {
                self.out.warn("the 2xx has no SDP answer");
            }
        }
        if let Some(c) = self.call.as_mut() {
            c.session_timer = SessionTimer::from_response(response, true, now);
        }
        self.call_answered(now);
    }

    /// Takes the far end's SDP (an answer, or an offer we answered): starts media the
    /// first time, updates it after. Returns the stream.
    fn apply_remote_sdp(&mut self, body: &[u8], _now: Instant) -> Option<AudioStream> {
        let sdp = match SessionDescription::parse(body) {
            Ok(s) => s,
            Err(e) => {
                self.out
                    .warn(&format!("the far end's SDP does not parse: {e}"));
                return None;
            }
        };
        let Some(stream) = sdp.audio_stream(CODECS) else {
            self.out.warn("no common codec in the far end's SDP");
            return None;
        };
        let call = self.call.as_mut()?;
        let direction = answer_direction(stream.direction, call.wanted);
        let codec = codec_of(&stream.codec.encoding)?;
        let params = StreamParams {
            remote: SocketAddr::new(stream.address, stream.port),
            codec,
            payload_type: stream.codec.payload_type,
            telephone_event_pt: stream.telephone_event,
            direction,
            ptime_ms: stream.ptime.unwrap_or(20),
        };
        call.remote = Some(stream.clone());
        let media = call.media.as_mut()?;
        if call.media_started {
            media.update(params);
        } else {
            let source = call
                .play
                .clone()
                .map(AudioSource::Wav)
                .unwrap_or(AudioSource::Silence);
            let sink = match &call.record {
                Some(path) => match AudioSink::wav(path.clone()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.out
                            .warn(&format!("cannot record to {}: {e}", path.display()));
                        None
                    }
                },
                None => None,
            };
            let call = self.call.as_mut()?;
            let media = call.media.as_mut()?;
            if let Err(e) = media.start(params, Some(source), sink) {
                self.out.warn(&format!("media did not start: {e}"));
            } else {
                call.media_started = true;
                self.media_rx = Some(media.events());
            }
        }
        Some(stream)
    }

    fn call_answered(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.state == CallState::Answered {
            return;
        }
        call.state = CallState::Answered;
        call.answered_at = Some(now);
        if let Some(d) = call.dialog.as_mut() {
            d.state = sip_core::dialog::DialogState::Confirmed;
        }
        let codec = call
            .remote
            .as_ref()
            .map(|s| s.codec.encoding.clone())
            .unwrap_or_default();
        self.out
            .event("answered", Some(&codec), &[("codec", json!(codec))]);
        self.disarm_call(CallTimer::AnswerTimeout);
        let task = self.task.clone();
        match task {
            Task::Call(t) => {
                if t.dtmf.is_some() {
                    self.arm_call(now + secs(t.dtmf_after), CallTimer::Dtmf);
                }
                if let Some(h) = t.hold_after {
                    self.arm_call(now + secs(h), CallTimer::Hold);
                }
                if let Some(r) = t.resume_after {
                    self.arm_call(now + secs(r), CallTimer::Resume);
                }
                if let Some(h) = t.hangup_after {
                    self.arm_call(now + secs(h), CallTimer::Hangup);
                }
            }
            Task::Answer(a) => {
                if let Some(h) = a.hangup_after {
                    self.arm_call(now + secs(h), CallTimer::Hangup);
                }
            }
            _ => {}
        }
        self.arm_session_timer();
    }

    fn arm_session_timer(&mut self) {
        if let Some(deadline) = self
            .call
            .as_ref()
            .and_then(|c| c.session_timer.as_ref())
            .map(SessionTimer::deadline)
        {
            self.arm_call(deadline, CallTimer::Session);
        }
    }

    fn disarm_call(&mut self, timer: CallTimer) {
        if let Some(generation) = self.call.as_ref().map(|c| c.generation) {
            self.disarm(Timer::Call(generation, timer));
        }
    }

    fn on_call_timer(&mut self, timer: CallTimer, now: Instant) {
        match timer {
            CallTimer::Dtmf => {
                let digits = match &self.task {
                    Task::Call(t) => t.dtmf.clone().unwrap_or_default(),
                    _ => String::new(),
                };
                if let Some(media) = self.call.as_mut().and_then(|c| c.media.as_mut()) {
                    media.send_dtmf(&digits);
                    for d in digits.chars() {
                        self.out.event(
                            "dtmf sent",
                            Some(&d.to_string()),
                            &[("digit", json!(d.to_string()))],
                        );
                    }
                }
            }
            CallTimer::Hold => self.modify(Direction::SendOnly, now),
            CallTimer::Resume => self.modify(Direction::SendRecv, now),
            CallTimer::GlareRetry(d) => self.modify(d, now),
            CallTimer::Hangup => self.hang_up(now),
            CallTimer::AnswerTimeout => {
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.state == CallState::Setup)
                {
                    if let Some(c) = self.call.as_mut() {
                        c.cancelled = Some(("no answer (timeout)", exit::NO_ANSWER));
                    }
                    self.cancel_call(now);
                }
            }
            CallTimer::Retransmit => self.retransmit_ok(now),
            CallTimer::EndFallback => self.end_call("bye (local, no response)", exit::OK),
            CallTimer::Session => self.on_session_timer(now),
        }
    }

    fn cancel_call(&mut self, now: Instant) {
        let Some(key) = self.call.as_ref().and_then(|c| c.invite_key) else {
            return;
        };
        match self.txl.cancel(now, key) {
            Ok(k) => {
                self.pending.insert(k, Pending::Other);
                if let Some(c) = self.call.as_mut() {
                    c.state = CallState::Ending;
                }
                self.arm_call(now + Duration::from_secs(32), CallTimer::EndFallback);
            }
            Err(_) => {
                // Nothing heard yet: a CANCEL could overtake the INVITE (§9.1). Try again
                // shortly; the INVITE times out by itself otherwise.
                self.arm_call(now + Duration::from_millis(200), CallTimer::AnswerTimeout);
            }
        }
    }

    /// Ends the call from our side: BYE when answered, CANCEL while it rings.
    fn hang_up(&mut self, now: Instant) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        match (call.state, call.role) {
            (CallState::Answered, _) => self.send_bye(now),
            (CallState::Setup, Role::Uac) => {
                if let Some(c) = self.call.as_mut() {
                    c.cancelled = Some(("cancelled", exit::OK));
                }
                self.cancel_call(now);
            }
            (CallState::Setup, Role::Uas) => {
                if let (Some(key), Some(req)) = (call.invite_key, call.request.clone()) {
                    self.respond(key, &req, 480, &[], None, now);
                }
                self.end_call("declined", exit::OK);
            }
            (CallState::Ending, _) => {}
        }
    }

    fn send_bye(&mut self, now: Instant) {
        let transport = self
            .call
            .as_ref()
            .map_or(self.s.transport, |c| c.flow.transport);
        let via = self.via(transport);
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.state = CallState::Ending;
        call.ok_retx = None;
        let fallback = call.flow;
        let Some(dialog) = call.dialog.as_mut() else {
            self.end_call("bye (local)", exit::OK);
            return;
        };
        let bye = dialog.request(&Method::Bye, &via).build();
        let dialog = dialog.clone();
        let flow = self.dialog_flow(&dialog, fallback);
        match bye {
            Ok(bye) => match self.txl.send_request(now, bye, flow) {
                Ok(key) => {
                    self.pending.insert(key, Pending::Bye);
                    self.arm_call(now + Duration::from_secs(33), CallTimer::EndFallback);
                }
                Err(e) => self.end_call(&format!("bye (local, not sent: {e})"), exit::OK),
            },
            Err(e) => self.end_call(&format!("bye (local, not built: {e})"), exit::OK),
        }
    }

    /// Hold (`SendOnly`) or resume (`SendRecv`) with a re-INVITE or UPDATE carrying a
    /// new offer.
    fn modify(&mut self, direction: Direction, now: Instant) {
        let use_update = matches!(&self.task, Task::Call(t) if t.hold_with_update);
        self.send_offer(direction, use_update, false, now);
    }

    fn send_offer(&mut self, direction: Direction, use_update: bool, refresh: bool, now: Instant) {
        let transport = self
            .call
            .as_ref()
            .map_or(self.s.transport, |c| c.flow.transport);
        let via = self.via(transport);
        let session_expires = self
            .call
            .as_ref()
            .and_then(|c| c.session_timer)
            .map(|t| t.interval);
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.state != CallState::Answered {
            return;
        }
        if call.oa != OfferAnswer::Stable {
            // An offer is already outstanding either way: try again shortly.
            self.arm_call(
                now + Duration::from_millis(500),
                CallTimer::GlareRetry(direction),
            );
            return;
        }
        let _ = call.oa.send_offer();
        call.wanted = direction;
        if !refresh {
            call.local_sdp.origin.session_version += 1;
        }
        for m in &mut call.local_sdp.media {
            m.set_direction(direction);
        }
        let sdp = Bytes::from(call.local_sdp.to_bytes());
        let fallback = call.flow;
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        let method = if use_update {
            Method::Update
        } else {
            Method::Invite
        };
        let mut b = dialog.request(&method, &via);
        if let Some(se) = session_expires {
            b.push("Session-Expires", format_args!("{se};refresher=uac"));
            b.push("Supported", "timer");
        }
        let msg = b.body("application/sdp", sdp).build();
        let dialog = dialog.clone();
        let flow = self.dialog_flow(&dialog, fallback);
        match msg {
            Ok(msg) => match self.txl.send_request(now, msg, flow) {
                Ok(key) => {
                    self.pending.insert(
                        key,
                        Pending::Modify {
                            method,
                            direction,
                            refresh,
                        },
                    );
                }
                Err(e) => self
                    .out
                    .warn(&format!("cannot send the session change: {e}")),
            },
            Err(e) => self
                .out
                .warn(&format!("cannot build the session change: {e}")),
        }
    }

    fn on_modify_response(
        &mut self,
        key: TransactionKey,
        method: &Method,
        direction: Direction,
        refresh: bool,
        response: &Message,
        now: Instant,
    ) {
        let status = response.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        let transport = self
            .call
            .as_ref()
            .map_or(self.s.transport, |c| c.flow.transport);
        let via = self.via(transport);
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if *method == Method::Invite {
            if (200..300).contains(&status) {
                // Every 2xx to a re-INVITE is ACKed, retransmissions included.
                let seq = response.cseq().map(|c| c.seq).unwrap_or(0);
                if let Some(d) = call.dialog.as_mut() {
                    d.receive_response(response, false);
                    if let Ok(ack) = d.ack(seq, &via).into_bytes() {
                        let flow = call.flow;
                        self.txl.send_stateless(flow, ack);
                    }
                }
            }
            let Some(call) = self.call.as_mut() else {
                return;
            };
            if call.oa != OfferAnswer::LocalOffer {
                // A retransmitted 2xx: ACKed above, nothing else to do.
                return;
            }
        } else {
            self.pending.remove(&key);
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if (200..300).contains(&status) {
            let _ = call.oa.receive_answer();
            if let Some(t) = call.session_timer.as_mut() {
                t.refreshed(now);
            }
            if has_sdp(response) {
                self.apply_remote_sdp(response.body(), now);
            }
            self.arm_session_timer();
            if !refresh {
                self.report_hold_change(direction == Direction::SendOnly, true);
            }
        } else if status == 491 {
            call.oa.offer_rejected();
            let wait = glare_retry_after(call.role == Role::Uac, random_u32());
            self.out.event("glare", Some("491, retrying"), &[]);
            self.arm_call(now + wait, CallTimer::GlareRetry(direction));
        } else if matches!(status, 408 | 481) {
            call.oa.offer_rejected();
            self.end_call(
                &format!("failed ({status} to a session change)"),
                exit::FAILED,
            );
        } else {
            call.oa.offer_rejected();
            self.out
                .warn(&format!("the far end refused the session change: {status}"));
        }
    }

    /// Prints `held` or `resumed` when the hold state changes. `by_us`: we asked.
    fn report_hold_change(&mut self, held: bool, by_us: bool) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let flag = if by_us {
            &mut call.held_by_us
        } else {
            &mut call.held_by_them
        };
        if *flag == held {
            return;
        }
        *flag = held;
        let by = if by_us { "local" } else { "remote" };
        let event = if held { "held" } else { "resumed" };
        self.out.event(event, Some(by), &[("by", json!(by))]);
    }

    fn on_session_timer(&mut self, now: Instant) {
        let Some(action) = self
            .call
            .as_ref()
            .and_then(|c| c.session_timer.as_ref())
            .and_then(|t| t.poll(now))
        else {
            self.arm_session_timer();
            return;
        };
        match action {
            SessionTimerAction::Refresh => {
                let wanted = self.call.as_ref().map_or(Direction::SendRecv, |c| c.wanted);
                self.send_offer(wanted, false, true, now);
                // Check again at the expiry: a refresh that never succeeds ends the call.
                if let Some(t) = self.call.as_mut().and_then(|c| c.session_timer.as_mut()) {
                    t.refresher = Refresher::Us;
                    t.refreshed(now);
                }
                self.arm_session_timer();
            }
            SessionTimerAction::Expire => {
                self.out
                    .warn("session timer expired: the far end did not refresh");
                self.send_bye(now);
                if let Some(c) = self.call.as_mut() {
                    c.cancelled = Some(("session expired", exit::FAILED));
                }
            }
        }
    }

    /// Stops the call: media stopped (recording finalized), digits and the end printed,
    /// the task told.
    fn end_call(&mut self, reason: &str, code: u8) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        let (reason, code) = match call.cancelled {
            Some((r, c))
                if call.state == CallState::Ending
                    && reason.starts_with("bye")
                    && r == "session expired" =>
            {
                (r.to_owned(), c)
            }
            _ => (reason.to_owned(), code),
        };
        if let Some(media) = call.media.take() {
            self.stopping.push(media);
        }
        self.media_rx = None;
        self.timers
            .retain(|(_, t)| !matches!(t, Timer::Call(g, _) if *g == call.generation));
        if !call.digits.is_empty() {
            self.out.event(
                "dtmf",
                Some(&call.digits),
                &[("digits", json!(call.digits))],
            );
        }
        self.out
            .event("ended", Some(&reason), &[("code", json!(code))]);
        match &self.task {
            Task::Call(_) => self.finish(code),
            Task::Answer(a) => {
                self.calls_done += 1;
                if a.calls.is_some_and(|n| self.calls_done >= n) {
                    self.finish(code);
                }
            }
            _ => {}
        }
    }

    fn on_media(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Dtmf(d) => {
                if let Some(c) = self.call.as_mut() {
                    c.digits.push(d);
                }
                self.out.event(
                    "dtmf received",
                    Some(&d.to_string()),
                    &[("digit", json!(d.to_string()))],
                );
            }
            MediaEvent::SourceFinished => self.out.event("playback finished", None, &[]),
            MediaEvent::RtpTimeout => self.out.warn("no RTP from the far end"),
            MediaEvent::RemoteAddressLatched(a) => {
                tracing::debug!("media latched to {a}");
            }
        }
    }

    // ----- the UAS side -----

    fn on_invite(&mut self, key: TransactionKey, request: Message, flow: Flow, now: Instant) {
        let answer = match &self.task {
            Task::Answer(a) => a.clone(),
            _ => {
                self.respond(key, &request, 486, &[], None, now);
                return;
            }
        };
        if self.call.is_some() {
            self.respond(key, &request, 486, &[], None, now);
            return;
        }
        let from = request
            .get(HeaderName::From)
            .map(|f| f.split(";tag=").next().unwrap_or(f).trim().to_owned())
            .unwrap_or_default();
        let call_id = request.call_id().unwrap_or("").to_owned();
        let local_tag = random_hex(6);
        let contact = self.contact_uri(flow.transport);
        let dialog = match Dialog::from_uas(&request, &local_tag, &contact, random_u32() >> 2) {
            Ok(d) => d,
            Err(e) => {
                let reason = e.to_string();
                self.respond(key, &request, 400, &[], None, now);
                tracing::debug!("refused INVITE: {reason}");
                return;
            }
        };
        let media = match self.take_media() {
            Ok(m) => m,
            Err(e) => {
                self.out.warn(&format!("no RTP port: {e}"));
                self.respond(key, &request, 500, &[], None, now);
                return;
            }
        };
        let mut call = self.new_call(Role::Uas, call_id, local_tag, flow, media);
        call.dialog = Some(dialog);
        call.invite_key = Some(key);
        call.request = Some(request.clone());
        call.play = answer.play.clone();
        call.record = answer.record.as_ref().map(|p| {
            let n = (self.calls_done + 1).to_string();
            PathBuf::from(p.to_string_lossy().replace("{n}", &n))
        });
        self.call = Some(call);
        self.out
            .event("incoming", Some(&from), &[("from", json!(from))]);
        if let Some(code) = answer.reject {
            self.respond(key, &request, code, &[], None, now);
            self.end_call(&format!("rejected ({code})"), exit::OK);
            return;
        }
        if has_sdp(&request) {
            if let Some(c) = self.call.as_mut() {
                let _ = c.oa.receive_offer();
            }
            let acceptable = SessionDescription::parse(request.body())
                .ok()
                .and_then(|s| s.audio_stream(CODECS))
                .is_some();
            if !acceptable {
                self.respond(key, &request, 488, &[], None, now);
                self.end_call("rejected (488 no common codec)", exit::REJECTED);
                return;
            }
        }
        let headers = [("Contact", format!("<{contact}>"))];
        self.respond(key, &request, 180, &headers, None, now);
        if answer.auto {
            self.answer_ringing_call(now);
        } else {
            self.out
                .event("ringing", Some("press Enter to answer"), &[]);
        }
    }

    fn answer_ringing_call(&mut self, now: Instant) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        if call.role != Role::Uas || call.state != CallState::Setup {
            return;
        }
        let (Some(key), Some(request)) = (call.invite_key, call.request.clone()) else {
            return;
        };
        let contact = self.contact_uri(call.flow.transport);
        let mut headers = vec![
            ("Contact", format!("<{contact}>")),
            ("Allow", ALLOW.to_owned()),
        ];
        // RFC 4028: a UAC that asked for a session timer gets one; it refreshes unless
        // it said otherwise.
        if let Ok(Some(se)) = request.session_expires() {
            let refresher = se.refresher().unwrap_or("uac").to_ascii_lowercase();
            headers.push((
                "Session-Expires",
                format!("{};refresher={refresher}", se.delta),
            ));
            if tokens_contain(&request, HeaderName::Supported, "timer") {
                headers.push(("Require", "timer".to_owned()));
            }
        }
        let sdp = if has_sdp(&request) {
            let Ok(offer) = SessionDescription::parse(request.body()) else {
                return;
            };
            let ip = self.local_ip();
            let Some(call) = self.call.as_mut() else {
                return;
            };
            let port = call.media.as_ref().map_or(0, MediaSession::local_rtp_port);
            let Some(answer) = SessionDescription::answer(
                &offer,
                &self.s.user,
                call.local_sdp.origin.session_id,
                ip,
                port,
                CODECS,
                Direction::SendRecv,
            ) else {
                return;
            };
            call.local_sdp = answer.clone();
            let _ = call.oa.send_answer();
            self.apply_remote_sdp(request.body(), now);
            answer.to_bytes()
        } else {
            // A delayed offer: we offer in the 2xx; the answer comes in the ACK.
            let Some(call) = self.call.as_mut() else {
                return;
            };
            let _ = call.oa.send_offer();
            call.local_sdp.to_bytes()
        };
        let mut b = response_to(
            &request,
            200,
            self.call.as_ref().map(|c| c.local_tag.as_str()),
        );
        for (n, v) in &headers {
            b.push(n, v);
        }
        let Ok(ok) = b.body("application/sdp", Bytes::from(sdp)).build() else {
            return;
        };
        let bytes = ok.as_bytes().clone();
        let flow = sip_net::response_target(
            &self.call.as_ref().map_or(self.fallback_flow(), |c| c.flow),
            &request,
        );
        if let Err(e) = self.txl.send_response(now, key, ok.clone()) {
            tracing::debug!("2xx not sent: {e}");
        }
        if let Some(c) = self.call.as_mut() {
            c.session_timer = SessionTimer::from_response(&ok, false, now);
            c.ok_retx = Some(OkRetransmit {
                bytes,
                flow,
                cseq: request.cseq().map(|c| c.seq).unwrap_or(0),
                interval: T1,
                next: now + T1,
                until: now + T1 * 64,
            });
        }
        self.arm_call(now + T1, CallTimer::Retransmit);
        self.call_answered(now);
    }

    fn fallback_flow(&self) -> Flow {
        Flow {
            transport: self.s.transport,
            remote: SocketAddr::from(([127, 0, 0, 1], 5060)),
            local: None,
            connection: None,
        }
    }

    fn retransmit_ok(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(r) = call.ok_retx.as_mut() else {
            return;
        };
        if now >= r.until {
            call.ok_retx = None;
            self.out.warn("no ACK for our 2xx: hanging up");
            self.send_bye(now);
            return;
        }
        if now >= r.next {
            self.txl.send_stateless(r.flow, r.bytes.clone());
            r.interval = (r.interval * 2).min(T2);
            r.next = now + r.interval;
        }
        let next = r.next;
        self.arm_call(next, CallTimer::Retransmit);
    }

    fn on_ack(&mut self, ack: &Message, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if !call.dialog.as_ref().is_some_and(|d| d.matches(ack)) {
            return;
        }
        let seq = ack.cseq().map(|c| c.seq).unwrap_or(0);
        if call.ok_retx.as_ref().is_some_and(|r| r.cseq == seq) {
            call.ok_retx = None;
            self.disarm_call(CallTimer::Retransmit);
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.oa == OfferAnswer::LocalOffer && has_sdp(ack) {
            let _ = call.oa.receive_answer();
            self.apply_remote_sdp(ack.body(), now);
        }
    }

    fn on_cancel(&mut self, key: TransactionKey, cancel: &Message, now: Instant) {
        let cancelled = self.txl.find_cancelled(cancel);
        let ours = self.call.as_ref().is_some_and(|c| {
            c.role == Role::Uas
                && c.state == CallState::Setup
                && c.invite_key == cancelled
                && cancelled.is_some()
        });
        if !ours {
            self.respond(key, cancel, 481, &[], None, now);
            return;
        }
        self.respond(key, cancel, 200, &[], None, now);
        if let Some((ikey, req)) = self
            .call
            .as_ref()
            .and_then(|c| c.invite_key.zip(c.request.clone()))
        {
            self.respond(ikey, &req, 487, &[], None, now);
        }
        self.end_call("cancelled (by the caller)", exit::OK);
    }

    fn on_in_dialog_request(
        &mut self,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        let matched = self
            .call
            .as_ref()
            .is_some_and(|c| c.dialog.as_ref().is_some_and(|d| d.matches(request)));
        if !matched {
            self.respond(key, request, 481, &[], None, now);
            return;
        }
        let refusal = self
            .call
            .as_mut()
            .and_then(|c| c.dialog.as_mut())
            .and_then(|d| d.receive_request(request).err());
        if let Some(r) = refusal {
            let b = sip_core::builder::response_to_with_reason(request, r.status, r.reason, None);
            if let Ok(msg) = b.build() {
                let _ = self.txl.send_response(now, key, msg);
            }
            return;
        }
        match method {
            Method::Bye => {
                self.respond(key, request, 200, &[], None, now);
                self.end_call("bye (remote)", exit::OK);
            }
            Method::Invite | Method::Update => self.on_remote_offer(key, method, request, now),
            Method::Info => {
                let body = String::from_utf8_lossy(request.body()).into_owned();
                self.respond(key, request, 200, &[], None, now);
                if let Some(d) = body
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Signal="))
                    .and_then(|s| s.trim().chars().next())
                {
                    self.on_media(MediaEvent::Dtmf(d));
                }
            }
            Method::Prack => self.respond(key, request, 200, &[], None, now),
            Method::Message => self.on_incoming_message(key, request, now),
            _ => self.respond(key, request, 405, &[("Allow", ALLOW.to_owned())], None, now),
        }
    }

    /// A re-INVITE or UPDATE from the far end: answer its offer (491 while ours is
    /// outstanding), update media, report hold and resume.
    fn on_remote_offer(
        &mut self,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        let ip = self.local_ip();
        let user = self.s.user.clone();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.oa != OfferAnswer::Stable {
            self.respond(key, request, 491, &[], None, now);
            return;
        }
        let contact = call
            .dialog
            .as_ref()
            .map(|d| d.local_contact.clone())
            .unwrap_or_default();
        let mut headers = vec![("Contact", format!("<{contact}>"))];
        if let Ok(Some(se)) = request.session_expires() {
            let refresher = se.refresher().unwrap_or("uac").to_ascii_lowercase();
            headers.push((
                "Session-Expires",
                format!("{};refresher={refresher}", se.delta),
            ));
            let refresher = if refresher == "uas" {
                Refresher::Us
            } else {
                Refresher::Them
            };
            call.session_timer = Some(SessionTimer::new(se.delta, refresher, now));
        } else if let Some(t) = call.session_timer.as_mut() {
            t.refreshed(now);
        }
        let body = if has_sdp(request) {
            let Ok(offer) = SessionDescription::parse(request.body()) else {
                self.respond(key, request, 400, &[], None, now);
                return;
            };
            let port = call.media.as_ref().map_or(0, MediaSession::local_rtp_port);
            let version = call.local_sdp.origin.session_version;
            let Some(mut answer) = SessionDescription::answer(
                &offer,
                &user,
                call.local_sdp.origin.session_id,
                ip,
                port,
                CODECS,
                call.wanted,
            ) else {
                self.respond(key, request, 488, &[], None, now);
                return;
            };
            answer.origin.session_version = version + 1;
            call.local_sdp = answer.clone();
            let remote_held = offer
                .audio_stream(CODECS)
                .is_some_and(|s| !s.direction.receives() || s.port == 0);
            self.apply_remote_sdp(request.body(), now);
            self.report_hold_change(remote_held, false);
            Some(answer.to_bytes())
        } else {
            // An offerless re-INVITE: offer what we have; the answer comes in the ACK.
            if *method == Method::Invite {
                let _ = call.oa.send_offer();
            }
            Some(call.local_sdp.to_bytes())
        };
        let tag = self.call.as_ref().map(|c| c.local_tag.clone());
        let mut b = response_to(request, 200, tag.as_deref());
        for (n, v) in &headers {
            b.push(n, v);
        }
        if let Some(body) = body {
            b = b.body("application/sdp", Bytes::from(body));
        }
        let Ok(ok) = b.build() else {
            return;
        };
        if *method == Method::Invite {
            let flow = sip_net::response_target(
                &self.call.as_ref().map_or(self.fallback_flow(), |c| c.flow),
                request,
            );
            if let Some(c) = self.call.as_mut() {
                c.ok_retx = Some(OkRetransmit {
                    bytes: ok.as_bytes().clone(),
                    flow,
                    cseq: request.cseq().map(|c| c.seq).unwrap_or(0),
                    interval: T1,
                    next: now + T1,
                    until: now + T1 * 64,
                });
            }
            self.arm_call(now + T1, CallTimer::Retransmit);
        }
        let _ = self.txl.send_response(now, key, ok);
        self.arm_session_timer();
    }
}
