//! Unit tests of the sans-IO [`UserAgent`]: built SIP messages and a fake clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn final_statuses_map_to_exit_codes() {
    assert_eq!(exit_for_status(200), exit::OK);
    assert_eq!(exit_for_status(486), exit::BUSY);
    assert_eq!(exit_for_status(600), exit::BUSY);
    assert_eq!(exit_for_status(480), exit::NO_ANSWER);
    assert_eq!(exit_for_status(408), exit::NO_ANSWER);
    assert_eq!(exit_for_status(404), exit::REJECTED);
    assert_eq!(exit_for_status(603), exit::REJECTED);
}

#[test]
fn registration_refusals_say_what_to_do() {
    assert_eq!(
        registration_refusal(401, "Unauthorized", true),
        "wrong user name or password (401 Unauthorized)"
    );
    assert_eq!(
        registration_refusal(407, "Proxy Authentication Required", false),
        "the server asks for a password: pass --password (407 Proxy Authentication Required)"
    );
    assert_eq!(
        registration_refusal(500, "Server Internal Error", true),
        "500 Server Internal Error"
    );
}

#[test]
fn codecs_by_sdp_name() {
    assert_eq!(codec_of("pcmu"), Some(Codec::Pcmu));
    assert_eq!(codec_of("PCMA"), Some(Codec::Pcma));
    assert_eq!(codec_of("G729"), None);
}

// ----- the harness -----

const US: &str = "127.0.0.1:5070";
const PEER: &str = "127.0.0.1:5080";
const SERVER: &str = "127.0.0.1:5060";
const RTP_PORT: u16 = 40000;
/// The user agent's randomness, fixed: the tests compare no identifier with another run's.
const SEED: [u8; 32] = [7; 32];

fn settings(server: bool) -> Settings {
    Settings {
        user: "alice".into(),
        password: Some("secret".into()),
        server: server.then(|| SERVER.parse().unwrap()),
        domain: "example.test".into(),
        transport: Transport::Udp,
        expires: 600,
        session_expires: None,
        display_name: None,
        codecs: sdp_codecs(&["pcmu".into()]),
        timers: TimerConfig::default(),
    }
}

fn call_task() -> CallTask {
    CallTask {
        target: format!("sip:bob@{PEER}"),
        play: None,
        record: None,
        dtmf: None,
        dtmf_after: 0.0,
        hold_after: None,
        resume_after: None,
        hold_with_update: false,
        hangup_after: None,
        hold_inactive: false,
        change_codec: None,
        answer_timeout: 60.0,
    }
}

fn answer_task() -> AnswerTask {
    AnswerTask {
        auto: true,
        play: None,
        record: None,
        reject: None,
        hangup_after: None,
        calls: Some(1),
    }
}

fn peer_flow(addr: &str) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
        local: None,
        connection: None,
    }
}

fn sdp(port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )
}

/// A core on a fake clock, with what it sent and output so far.
struct Phone {
    core: UserAgent,
    now: Instant,
    sent: Vec<Message>,
    outputs: Vec<Output>,
}

impl Phone {
    fn new(server: bool, task: Task) -> Phone {
        Phone::with_settings(settings(server), task)
    }

    fn with_settings(s: Settings, task: Task) -> Phone {
        let local = LocalAddrs {
            udp: Some(US.parse().unwrap()),
            tcp: None,
        };
        let mut core = UserAgent::new(local, s, task, SEED);
        core.set_media_port(Ok(RTP_PORT));
        let now = Instant::now();
        core.start(now);
        let mut p = Phone {
            core,
            now,
            sent: Vec::new(),
            outputs: Vec::new(),
        };
        p.drain();
        p
    }

    /// Collects what the core sends and outputs, as the driver does.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.core.poll_transmit() {
                progressed = true;
                self.sent.push(Message::parse(t.bytes).unwrap());
            }
            progressed |= self.core.handle_events(self.now);
            while let Some(o) = self.core.poll_output() {
                progressed = true;
                if let Output::Media {
                    command: MediaCommand::Bind { port },
                    ..
                } = o
                {
                    // The next call's session, bound ahead (each call has its own).
                    self.core.set_media_port(Ok(port + 2));
                }
                self.outputs.push(o);
            }
            if !progressed {
                break;
            }
        }
        if self.core.finished().is_some() {
            self.core.begin_exit(self.now);
            self.drain_once();
        }
    }

    fn drain_once(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            self.sent.push(Message::parse(t.bytes).unwrap());
        }
        self.core.handle_events(self.now);
        while let Some(o) = self.core.poll_output() {
            self.outputs.push(o);
        }
    }

    /// Moves the clock on by `by`, firing every timer due on the way.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.core.poll_timeout().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.core.on_timeout(self.now);
            self.drain();
        }
        self.now = until;
    }

    fn receive(&mut self, msg: Message) {
        self.receive_from(msg, PEER);
    }

    fn receive_from(&mut self, msg: Message, from: &str) {
        self.core.on_message(msg, peer_flow(from), self.now);
        self.drain();
    }

    /// What was sent since the last look.
    fn take_sent(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.sent)
    }

    /// The last request with `method` sent since the last look (which it ends).
    fn sent_request(&mut self, method: Method) -> Message {
        let sent = self.take_sent();
        sent.into_iter()
            .rev()
            .find(|m| m.method() == Some(&method))
            .unwrap_or_else(|| panic!("no {method} sent"))
    }

    fn sent_response(&mut self, code: u16) -> Message {
        let sent = self.take_sent();
        sent.into_iter()
            .rev()
            .find(|m| m.status() == Some(code))
            .unwrap_or_else(|| panic!("no {code} sent"))
    }

    fn events(&mut self) -> Vec<PhoneEvent> {
        std::mem::take(&mut self.outputs)
            .into_iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    fn event_names(&mut self) -> Vec<&'static str> {
        self.events().into_iter().map(|e| e.name).collect()
    }
}

fn reply(request: &Message, code: u16, tag: Option<&str>) -> MessageBuilder {
    let mut b = response_to(request, code, tag);
    if request.method() == Some(&Method::Invite) && code < 300 && code > 100 {
        b.push("Contact", format!("<sip:bob@{PEER}>"));
    }
    b
}

fn reply_sdp(request: &Message, code: u16, tag: &str, direction: &str) -> Message {
    reply(request, code, Some(tag))
        .body("application/sdp", sdp(41000, direction))
        .build()
        .unwrap()
}

fn body_text(m: &Message) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

/// A caller whose INVITE was answered by bob (tag `b1`): returns the phone and the INVITE.
fn answered_caller(task: CallTask) -> (Phone, Message) {
    let mut p = Phone::new(false, Task::Call(task));
    let invite = p.sent_request(Method::Invite);
    p.receive(reply(&invite, 180, Some("b1")).build().unwrap());
    p.receive(reply_sdp(&invite, 200, "b1", "sendrecv"));
    let _ = p.sent_request(Method::Ack);
    (p, invite)
}

/// A request from bob: in our dialog when `to_tag` (ours) is given, else a new one;
/// `seq` is its CSeq.
fn bob_request(method: Method, to_tag: Option<&str>, seq: u32, call_id: &str) -> MessageBuilder {
    let mut b = MessageBuilder::request(&method, &format!("sip:alice@{US}"));
    b.push(
        "Via",
        format!("SIP/2.0/UDP {PEER};branch=z9hG4bK{}{seq}", method.as_str()),
    );
    b.push("Max-Forwards", 70);
    b.push("From", "<sip:bob@example.test>;tag=b1");
    match to_tag {
        Some(t) => b.push("To", format!("<sip:alice@example.test>;tag={t}")),
        None => b.push("To", "<sip:alice@example.test>"),
    }
    b.push("Call-ID", call_id);
    b.push("CSeq", format!("{seq} {method}"));
    b.push("Contact", format!("<sip:bob@{PEER}>"));
    b
}

// ----- calls we place -----

#[test]
fn caller_invite_ringing_answer_ack_then_bye() {
    let mut task = call_task();
    task.hangup_after = Some(5.0);
    let mut p = Phone::new(false, Task::Call(task));
    let invite = p.sent_request(Method::Invite);
    assert!(body_text(&invite).contains(&format!("m=audio {RTP_PORT} ")));
    assert!(p.take_outputs().contains(&Output::Media {
        port: RTP_PORT,
        command: MediaCommand::Bind { port: RTP_PORT }
    }));

    p.receive(reply(&invite, 180, Some("b1")).build().unwrap());
    assert_eq!(p.event_names(), ["ringing"]);

    p.receive(reply_sdp(&invite, 200, "b1", "sendrecv"));
    let ack = p.sent_request(Method::Ack);
    assert_eq!(ack.to().unwrap().tag(), Some("b1"));
    let outputs = p.take_outputs();
    let start = outputs.iter().find_map(|o| match o {
        Output::Media {
            command: MediaCommand::Start { params, source, .. },
            ..
        } => Some((params, source)),
        _ => None,
    });
    let (params, source) = start.expect("media started");
    assert_eq!(params.remote, "127.0.0.1:41000".parse().unwrap());
    assert_eq!(params.codec, Codec::Pcmu);
    assert_eq!(params.direction, Direction::SendRecv);
    assert_eq!(*source, AudioSource::Silence);
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Event(e) if e.name == "answered" && e.detail.as_deref() == Some("PCMU"))));

    // Nothing until --hangup-after.
    p.advance(Duration::from_millis(4900));
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Bye))
    );
    p.advance(Duration::from_millis(100));
    let bye = p.sent_request(Method::Bye);
    assert_eq!(bye.to().unwrap().tag(), Some("b1"));
    assert_eq!(p.core.finished(), None);

    p.receive(reply(&bye, 200, Some("b1")).build().unwrap());
    let outputs = p.take_outputs();
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Media {
            command: MediaCommand::Stop,
            ..
        }
    )));
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Event(e) if e.name == "ended" && e.detail.as_deref() == Some("bye (local)"))));
    assert_eq!(p.core.finished(), Some(exit::OK));
    // No registration to remove: out after a moment for the last writes.
    assert_eq!(p.core.exit_code(), None);
    p.advance(Duration::from_millis(300));
    assert_eq!(p.core.exit_code(), Some(exit::OK));
}

#[test]
fn answer_timeout_cancels_a_ringing_call() {
    let mut task = call_task();
    task.answer_timeout = 10.0;
    let mut p = Phone::new(false, Task::Call(task));
    let invite = p.sent_request(Method::Invite);
    p.receive(reply(&invite, 180, Some("b1")).build().unwrap());
    p.advance(Duration::from_millis(9990));
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Cancel))
    );
    p.advance(Duration::from_millis(10));
    let cancel = p.sent_request(Method::Cancel);
    assert_eq!(cancel.cseq().unwrap().seq, invite.cseq().unwrap().seq);

    p.receive(reply(&cancel, 200, None).build().unwrap());
    p.receive(reply(&invite, 487, Some("b1")).build().unwrap());
    let ended = p.events().into_iter().find(|e| e.name == "ended").unwrap();
    assert_eq!(ended.detail.as_deref(), Some("no answer (timeout)"));
    assert_eq!(p.core.finished(), Some(exit::NO_ANSWER));
}

#[test]
fn hold_by_reinvite_is_sendonly_and_resume_sendrecv() {
    let mut task = call_task();
    task.hold_after = Some(1.0);
    task.resume_after = Some(2.0);
    let (mut p, _) = answered_caller(task);
    p.take_outputs();

    p.advance(Duration::from_secs(1));
    let hold = p.sent_request(Method::Invite);
    assert!(
        body_text(&hold).contains("a=sendonly"),
        "{}",
        body_text(&hold)
    );
    assert_eq!(hold.to().unwrap().tag(), Some("b1"));
    p.receive(reply_sdp(&hold, 200, "b1", "recvonly"));
    let ack = p.sent_request(Method::Ack);
    assert_eq!(ack.cseq().unwrap().seq, hold.cseq().unwrap().seq);
    let outputs = p.take_outputs();
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Media { command: MediaCommand::Update(params), .. } if params.direction == Direction::SendOnly)));
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Event(e) if e.name == "held" && e.detail.as_deref() == Some("local"))));

    p.advance(Duration::from_secs(1));
    let resume = p.sent_request(Method::Invite);
    assert!(body_text(&resume).contains("a=sendrecv"));
    p.receive(reply_sdp(&resume, 200, "b1", "sendrecv"));
    let _ = p.sent_request(Method::Ack);
    let outputs = p.take_outputs();
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Media { command: MediaCommand::Update(params), .. } if params.direction == Direction::SendRecv)));
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Event(e) if e.name == "resumed")));
}

#[test]
fn glare_491_retries_after_the_section_14_1_wait() {
    let mut task = call_task();
    task.hold_after = Some(1.0);
    let (mut p, _) = answered_caller(task);
    p.advance(Duration::from_secs(1));
    let hold = p.sent_request(Method::Invite);
    p.receive(reply(&hold, 491, Some("b1")).build().unwrap());
    assert!(p.event_names().contains(&"glare"));
    // We own the Call-ID: 2.1 to 4 s (RFC 3261 §14.1).
    p.advance(Duration::from_millis(2090));
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Invite)),
        "retried too early"
    );
    p.advance(Duration::from_millis(1910));
    let retry = p.sent_request(Method::Invite);
    assert!(body_text(&retry).contains("a=sendonly"));
    assert!(retry.cseq().unwrap().seq > hold.cseq().unwrap().seq);
}

// ----- authentication and registration -----

fn challenge(request: &Message, code: u16, nonce: &str) -> Message {
    let header = if code == 407 {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    let mut b = response_to(request, code, Some("srv"));
    b.push(
        header,
        format!("Digest realm=\"example.test\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5"),
    );
    b.build().unwrap()
}

#[test]
fn a_401_is_answered_once_and_a_second_challenge_stops() {
    let mut p = Phone::new(true, Task::Listen { count: None });
    let first = p.sent_request(Method::Register);
    assert!(first.get(HeaderName::Authorization).is_none());
    p.receive_from(challenge(&first, 401, "n1"), SERVER);
    let second = p.sent_request(Method::Register);
    let auth = second.get(HeaderName::Authorization).unwrap();
    assert!(auth.contains("username=\"alice\"") && auth.contains("nonce=\"n1\""));
    assert!(second.cseq().unwrap().seq > first.cseq().unwrap().seq);

    // The same realm again, not stale: the password is wrong; no third try.
    p.receive_from(challenge(&second, 401, "n2"), SERVER);
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Register))
    );
    let refused = p
        .events()
        .into_iter()
        .find(|e| e.name == "registration refused")
        .unwrap();
    assert_eq!(
        refused.detail.as_deref(),
        Some("wrong user name or password (401 Unauthorized)")
    );
    assert_eq!(p.core.finished(), Some(exit::FAILED));
}

#[test]
fn an_invite_challenged_with_407_is_sent_again_with_credentials() {
    let mut p = Phone::new(false, Task::Call(call_task()));
    let invite = p.sent_request(Method::Invite);
    p.receive(challenge(&invite, 407, "n1"));
    let again = p.sent_request(Method::Invite);
    assert!(again.get(HeaderName::ProxyAuthorization).is_some());
    assert_eq!(again.call_id().unwrap(), invite.call_id().unwrap());
    p.receive(challenge(&again, 407, "n2"));
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Invite))
    );
    assert_eq!(p.core.finished(), Some(exit::REJECTED));
}

#[test]
fn registration_is_refreshed_at_half_the_granted_expiry() {
    let mut p = Phone::new(true, Task::Listen { count: None });
    let register = p.sent_request(Method::Register);
    let mut ok = response_to(&register, 200, Some("srv"));
    ok.push("Contact", format!("<sip:alice@{US}>;expires=300"));
    p.receive_from(ok.build().unwrap(), SERVER);
    let events = p.events();
    assert_eq!(events[0].name, "registered");
    assert_eq!(
        events[0].detail.as_deref(),
        Some("sip:alice@example.test for 300 s")
    );
    assert_eq!(events[1].name, "waiting for messages");

    p.advance(Duration::from_secs(149));
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Register))
    );
    p.advance(Duration::from_secs(1));
    let refresh = p.sent_request(Method::Register);
    assert_eq!(refresh.call_id().unwrap(), register.call_id().unwrap());
    assert!(refresh.cseq().unwrap().seq > register.cseq().unwrap().seq);
    assert_eq!(refresh.get(HeaderName::Expires), Some("600"));
    let ok = response_to(&refresh, 200, Some("srv")).build().unwrap();
    p.receive_from(ok, SERVER);
    assert_eq!(p.event_names(), ["registration refreshed"]);
}

// ----- calls we receive -----

/// Bob's INVITE answered automatically: returns the phone, the INVITE and our tag.
fn answered_callee(session_expires: Option<u32>) -> (Phone, Message, String) {
    let mut p = Phone::new(false, Task::Answer(answer_task()));
    assert_eq!(p.event_names(), ["waiting for calls"]);
    let mut b = bob_request(Method::Invite, None, 1, "call-1@bob");
    if let Some(se) = session_expires {
        b.push("Session-Expires", format!("{se};refresher=uac"));
        b.push("Supported", "timer");
    }
    let invite = b
        .body("application/sdp", sdp(41000, "sendrecv"))
        .build()
        .unwrap();
    p.receive(invite.clone());
    let sent = p.take_sent();
    assert!(sent.iter().any(|m| m.status() == Some(180)));
    let ok = sent.iter().find(|m| m.status() == Some(200)).unwrap();
    let tag = ok.to().unwrap().tag().unwrap().to_owned();
    assert!(body_text(ok).contains(&format!("m=audio {RTP_PORT} ")));
    assert!(body_text(ok).contains("a=sendrecv"));
    (p, invite, tag)
}

#[test]
fn callee_answers_is_acked_and_hung_up_by_bye() {
    let (mut p, _, tag) = answered_callee(None);
    let names = p.event_names();
    assert_eq!(names, ["incoming", "answered"]);
    // Our 2xx goes again until the ACK.
    p.advance(Duration::from_millis(500));
    assert!(p.take_sent().iter().any(|m| m.status() == Some(200)));
    let ack = bob_request(Method::Ack, Some(&tag), 1, "call-1@bob")
        .build()
        .unwrap();
    p.receive(ack);
    p.advance(Duration::from_secs(5));
    assert!(p.take_sent().iter().all(|m| m.status() != Some(200)));

    let bye = bob_request(Method::Bye, Some(&tag), 2, "call-1@bob")
        .build()
        .unwrap();
    p.receive(bye);
    let ok = p.sent_response(200);
    assert_eq!(ok.cseq().unwrap().method, Method::Bye);
    let outputs = p.take_outputs();
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Media {
            command: MediaCommand::Stop,
            ..
        }
    )));
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Event(e) if e.name == "ended" && e.detail.as_deref() == Some("bye (remote)"))));
    assert_eq!(p.core.finished(), Some(exit::OK));
}

#[test]
fn session_timer_expiry_ends_the_call_with_a_bye() {
    let (mut p, _, tag) = answered_callee(Some(90));
    let ack = bob_request(Method::Ack, Some(&tag), 1, "call-1@bob")
        .build()
        .unwrap();
    p.receive(ack);
    p.take_sent();
    // Bob refreshes; he never does. We give up before the session expires (RFC 4028
    // §10: at most 32 s or a third of it early).
    p.advance(Duration::from_secs(59));
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Bye))
    );
    p.advance(Duration::from_secs(1));
    let bye = p.sent_request(Method::Bye);
    assert_eq!(bye.from().unwrap().tag(), Some(tag.as_str()));
    p.receive(reply(&bye, 200, Some(&tag)).build().unwrap());
    let ended = p.events().into_iter().find(|e| e.name == "ended").unwrap();
    assert_eq!(ended.detail.as_deref(), Some("session expired"));
    assert_eq!(p.core.finished(), Some(exit::FAILED));
}

#[test]
fn a_2xx_from_a_second_fork_is_acked_then_hung_up() {
    let (mut p, invite) = answered_caller(call_task());
    p.take_outputs();
    // Another phone of bob's answers the forked INVITE too.
    let mut other = response_to(&invite, 200, Some("b2"));
    other.push("Contact", "<sip:bob@127.0.0.1:5090>");
    let other = other
        .body("application/sdp", sdp(42000, "sendrecv"))
        .build()
        .unwrap();
    p.receive(other.clone());
    let sent = p.take_sent();
    let ack = sent
        .iter()
        .find(|m| m.method() == Some(&Method::Ack))
        .unwrap();
    assert_eq!(ack.to().unwrap().tag(), Some("b2"));
    assert_eq!(ack.request_uri_str().unwrap(), "sip:bob@127.0.0.1:5090");
    let bye = sent
        .iter()
        .find(|m| m.method() == Some(&Method::Bye))
        .unwrap();
    assert_eq!(bye.to().unwrap().tag(), Some("b2"));
    assert_eq!(bye.call_id().unwrap(), invite.call_id().unwrap());
    assert!(bye.cseq().unwrap().seq > invite.cseq().unwrap().seq);
    // The call with the first fork goes on, untouched.
    assert!(p.take_outputs().is_empty());
    assert_eq!(p.core.finished(), None);

    // That 2xx again: ACKed again, no second BYE.
    p.receive(other);
    let sent = p.take_sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].method(), Some(&Method::Ack));
    assert_eq!(sent[0].to().unwrap().tag(), Some("b2"));
    let bye_ok = response_to(bye, 200, None).build().unwrap();
    p.receive(bye_ok);
    assert!(p.take_outputs().is_empty());
    assert_eq!(p.core.finished(), None);

    // The first fork's 2xx again: its own ACK.
    p.receive(reply_sdp(&invite, 200, "b1", "sendrecv"));
    let sent = p.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to().unwrap().tag(), Some("b1"));
}

#[test]
fn a_reliable_183_with_sdp_is_pracked_and_starts_early_media() {
    let mut p = Phone::new(false, Task::Call(call_task()));
    let invite = p.sent_request(Method::Invite);
    assert_eq!(p.event_names(), ["calling"]);
    assert!(
        invite
            .get(HeaderName::Supported)
            .unwrap()
            .contains("100rel")
    );
    let mut b = reply(&invite, 183, Some("b1"));
    b.push("Require", "100rel");
    b.push("RSeq", "7");
    let progress = b
        .body("application/sdp", sdp(41000, "sendrecv"))
        .build()
        .unwrap();
    p.receive(progress.clone());
    let prack = p.sent_request(Method::Prack);
    assert_eq!(prack.get(HeaderName::RAck), Some("7 1 INVITE"));
    assert_eq!(prack.to().unwrap().tag(), Some("b1"));
    let outputs = p.take_outputs();
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Media {
            command: MediaCommand::Start { .. },
            ..
        }
    )));
    let names: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.name),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["progress", "early media"]);
    // The same 183 again (our PRACK was lost?): not PRACKed twice.
    p.receive(progress);
    assert!(
        p.take_sent()
            .iter()
            .all(|m| m.method() != Some(&Method::Prack))
    );
}

#[test]
fn a_reinvite_to_sendonly_is_answered_recvonly_and_reported_held_by_them() {
    let (mut p, _, tag) = answered_callee(None);
    p.receive(
        bob_request(Method::Ack, Some(&tag), 1, "call-1@bob")
            .build()
            .unwrap(),
    );
    p.take_outputs();
    let hold = bob_request(Method::Invite, Some(&tag), 2, "call-1@bob")
        .body("application/sdp", sdp(41000, "sendonly"))
        .build()
        .unwrap();
    p.receive(hold);
    let ok = p.sent_response(200);
    assert!(body_text(&ok).contains("a=recvonly"), "{}", body_text(&ok));
    let outputs = p.take_outputs();
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Media { command: MediaCommand::Update(params), .. } if params.direction == Direction::RecvOnly)));
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Event(e) if e.name == "held" && e.detail.as_deref() == Some("remote"))));
}

#[test]
fn a_busy_callee_is_exit_3_and_an_incoming_call_can_be_refused() {
    let mut p = Phone::new(false, Task::Call(call_task()));
    let invite = p.sent_request(Method::Invite);
    p.receive(reply(&invite, 486, Some("b1")).build().unwrap());
    let ended = p.events().into_iter().find(|e| e.name == "ended").unwrap();
    assert_eq!(ended.detail.as_deref(), Some("busy (486 Busy Here)"));
    assert_eq!(p.core.finished(), Some(exit::BUSY));

    let mut task = answer_task();
    task.reject = Some(603);
    let mut p = Phone::new(false, Task::Answer(task));
    let invite = bob_request(Method::Invite, None, 1, "call-2@bob")
        .body("application/sdp", sdp(41000, "sendrecv"))
        .build()
        .unwrap();
    p.receive(invite);
    let refusal = p.sent_response(603);
    assert!(refusal.to().unwrap().tag().is_some());
    let names = p.event_names();
    assert_eq!(names, ["waiting for calls", "incoming", "ended"]);
}

#[test]
fn the_task_done_the_registration_is_removed_before_the_exit() {
    let mut p = Phone::new(
        true,
        Task::Message {
            target: "sip:bob@example.test".into(),
            text: "hi".into(),
        },
    );
    let register = p.sent_request(Method::Register);
    p.receive_from(
        response_to(&register, 200, Some("srv")).build().unwrap(),
        SERVER,
    );
    let message = p.sent_request(Method::Message);
    assert_eq!(body_text(&message), "hi");
    p.receive_from(
        response_to(&message, 202, Some("x")).build().unwrap(),
        SERVER,
    );
    assert_eq!(p.core.finished(), Some(exit::OK));
    let unregister = p.sent_request(Method::Register);
    assert_eq!(unregister.get(HeaderName::Expires), Some("0"));
    assert_eq!(p.core.exit_code(), None);
    p.receive_from(
        response_to(&unregister, 200, Some("srv")).build().unwrap(),
        SERVER,
    );
    assert_eq!(
        p.event_names(),
        ["registered", "message sent", "unregistered"]
    );
    assert_eq!(p.core.exit_code(), Some(exit::OK));
}

// ----- what the phone refuses (issue 12, defect 13) -----

#[test]
fn a_prack_matching_no_reliable_provisional_gets_481() {
    let (mut p, _, tag) = answered_callee(None);
    p.receive(
        bob_request(Method::Ack, Some(&tag), 1, "call-1@bob")
            .build()
            .unwrap(),
    );
    p.take_sent();
    // RFC 3262 §3: we sent no reliable provisional, so no RAck can match one...
    let mut prack = bob_request(Method::Prack, Some(&tag), 2, "call-1@bob");
    prack.push("RAck", "1 1 INVITE");
    p.receive(prack.build().unwrap());
    let refusal = p.sent_response(481);
    assert_eq!(refusal.cseq().unwrap().method, Method::Prack);
    // ...and one without RAck matches nothing either.
    p.receive(
        bob_request(Method::Prack, Some(&tag), 3, "call-1@bob")
            .build()
            .unwrap(),
    );
    p.sent_response(481);
    // The call goes on.
    assert_eq!(p.core.finished(), None);
}

#[test]
fn an_unknown_method_gets_501_and_a_known_one_we_do_not_serve_405_with_allow() {
    let mut p = Phone::new(false, Task::Answer(answer_task()));
    let frob = Method::Extension("FROBNICATE".into());
    p.receive(
        bob_request(frob.clone(), None, 1, "x-1@bob")
            .build()
            .unwrap(),
    );
    let refusal = p.sent_response(501);
    assert_eq!(refusal.cseq().unwrap().method, frob);

    p.receive(
        bob_request(Method::Subscribe, None, 1, "x-2@bob")
            .build()
            .unwrap(),
    );
    let refusal = p.sent_response(405);
    assert_eq!(refusal.get(HeaderName::Allow), Some(UA_ALLOW));

    // The same inside a call.
    let (mut p, _, tag) = answered_callee(None);
    p.receive(
        bob_request(frob, Some(&tag), 2, "call-1@bob")
            .build()
            .unwrap(),
    );
    p.sent_response(501);
    p.receive(
        bob_request(Method::Subscribe, Some(&tag), 3, "call-1@bob")
            .build()
            .unwrap(),
    );
    let refusal = p.sent_response(405);
    assert_eq!(refusal.get(HeaderName::Allow), Some(UA_ALLOW));
}

#[test]
fn an_ipv6_offer_is_answered_in_ipv6() {
    let local = LocalAddrs {
        udp: Some("[::1]:5070".parse().unwrap()),
        tcp: None,
    };
    let mut core = UserAgent::new(local, settings(false), Task::Answer(answer_task()), SEED);
    core.set_media_port(Ok(RTP_PORT));
    let now = Instant::now();
    core.start(now);
    let mut p = Phone {
        core,
        now,
        sent: Vec::new(),
        outputs: Vec::new(),
    };
    p.drain();
    // As SIPp's `[local_ip]` writes it: in brackets.
    let offer = "v=0\r\no=sipp 1 1 IN IP6 [::1]\r\ns=-\r\nc=IN IP6 [::1]\r\nt=0 0\r\n\
                 m=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let invite = bob_request(Method::Invite, None, 1, "call-6@bob")
        .body("application/sdp", offer)
        .build()
        .unwrap();
    p.receive_from(invite, "[::1]:5080");
    let ok = p.sent_response(200);
    assert!(
        body_text(&ok).contains("c=IN IP6 ::1\r\n"),
        "{}",
        body_text(&ok)
    );
    let started = p.take_outputs().into_iter().find_map(|o| match o {
        Output::Media {
            command: MediaCommand::Start { params, .. },
            ..
        } => Some(params),
        _ => None,
    });
    assert_eq!(
        started.expect("media started").remote,
        "[::1]:41000".parse().unwrap()
    );
}

// ----- TLS (issue 12, defect 11) -----

#[test]
fn over_tls_the_contact_is_our_end_of_the_registration_connection() {
    let mut s = settings(true);
    s.transport = Transport::Tls;
    let local = LocalAddrs {
        udp: Some(US.parse().unwrap()),
        tcp: Some(US.parse().unwrap()),
    };
    let mut core = UserAgent::new(local, s, Task::Listen { count: None }, SEED);
    // We listen on UDP and TCP only: the server's TLS flow must be opened first...
    let flow = core
        .connection_to_open()
        .expect("a connection to open first");
    assert_eq!(flow.transport, Transport::Tls);
    assert_eq!(flow.remote, SERVER.parse().unwrap());
    // ...and its local end is where we can be reached.
    core.set_connection_local("127.0.0.1:40123".parse().unwrap());
    let now = Instant::now();
    core.start(now);
    let register = Message::parse(core.poll_transmit().unwrap().bytes).unwrap();
    assert_eq!(
        register.get(HeaderName::Contact),
        Some("<sip:alice@127.0.0.1:40123;transport=tls>")
    );
    assert!(
        register
            .get(HeaderName::Via)
            .unwrap()
            .starts_with("SIP/2.0/TLS 127.0.0.1:40123;")
    );

    // Over UDP or TCP the listeners are reachable: nothing to open.
    let core = UserAgent::new(local, settings(true), Task::Listen { count: None }, SEED);
    assert_eq!(core.connection_to_open(), None);
}

#[test]
fn a_send_failure_is_reported_with_its_reason() {
    let mut s = settings(true);
    s.transport = Transport::Tls;
    let local = LocalAddrs {
        udp: Some(US.parse().unwrap()),
        tcp: Some(US.parse().unwrap()),
    };
    let mut core = UserAgent::new(local, s, Task::Listen { count: None }, SEED);
    let now = Instant::now();
    core.start(now);
    let t = core.poll_transmit().unwrap();
    let why = "TLS: certificate not trusted (UnknownIssuer): pass --ca FILE";
    core.on_transport_error(t.key.unwrap(), why.to_owned(), now);
    core.handle_events(now);
    let failed = std::iter::from_fn(|| core.poll_output())
        .find_map(|o| match o {
            Output::Event(e) if e.name == "registration failed" => e.detail,
            _ => None,
        })
        .unwrap();
    assert_eq!(failed, why);
    assert_eq!(core.finished(), Some(exit::FAILED));
}

// ----- issue 13: timers from the transaction layer, back-off -----

#[test]
fn our_2xx_is_retransmitted_on_the_configured_t1_and_t2() {
    let mut s = settings(false);
    s.timers.t1 = Duration::from_millis(100);
    s.timers.t2 = Duration::from_millis(400);
    let mut p = Phone::with_settings(s, Task::Answer(answer_task()));
    let invite = bob_request(Method::Invite, None, 1, "call-1@bob")
        .body("application/sdp", sdp(41000, "sendrecv"))
        .build()
        .unwrap();
    p.receive(invite);
    p.sent_response(200);
    // T1, then doubling: +100, +200, +400, then T2 (400) each time.
    let mut at = Vec::new();
    for step in 1..=10 {
        p.advance(Duration::from_millis(50));
        if p.take_sent().iter().any(|m| m.status() == Some(200)) {
            at.push(step * 50);
        }
    }
    assert_eq!(at, [100, 300], "{at:?}");
    p.advance(Duration::from_millis(200));
    assert!(p.take_sent().iter().any(|m| m.status() == Some(200)));
    // Given up after 64·T1 (6.4 s), with a BYE.
    p.advance(Duration::from_millis(6000));
    assert!(
        p.take_sent()
            .iter()
            .any(|m| m.method() == Some(&Method::Bye))
    );
}

#[test]
fn a_failing_registration_is_retried_with_a_growing_wait() {
    let mut p = Phone::new(true, Task::Listen { count: None });
    let register = p.sent_request(Method::Register);
    let mut ok = response_to(&register, 200, Some("srv"));
    ok.push("Contact", format!("<sip:alice@{US}>;expires=60"));
    p.receive_from(ok.build().unwrap(), SERVER);
    p.advance(Duration::from_secs(30));
    let mut refresh = p.sent_request(Method::Register);
    // The registrar is in trouble: each try is refused; the waits grow.
    let mut waits = Vec::new();
    for _ in 0..3 {
        p.receive_from(
            response_to(&refresh, 503, Some("srv")).build().unwrap(),
            SERVER,
        );
        assert!(p.event_names().contains(&"registration refused"));
        let mut waited = 0;
        refresh = loop {
            p.advance(Duration::from_secs(1));
            waited += 1;
            let sent = p.take_sent();
            if let Some(r) = sent
                .into_iter()
                .find(|m| m.method() == Some(&Method::Register))
            {
                break r;
            }
            assert!(waited <= 1800, "never tried again");
        };
        waits.push(waited);
    }
    // Between half and all of 30 s, 60 s, 120 s.
    assert!((15..=30).contains(&waits[0]), "{waits:?}");
    assert!((30..=60).contains(&waits[1]), "{waits:?}");
    assert!((60..=120).contains(&waits[2]), "{waits:?}");
    // It works again: registered, and the next failure starts from 30 s again.
    let mut ok = response_to(&refresh, 200, Some("srv"));
    ok.push("Contact", format!("<sip:alice@{US}>;expires=60"));
    p.receive_from(ok.build().unwrap(), SERVER);
    assert!(p.event_names().contains(&"registered"));
    assert_eq!(p.core.finished(), None, "the phone goes on");
}

#[test]
fn identifiers_come_from_the_seed_and_never_repeat() {
    let register = |seed: [u8; 32]| {
        let local = LocalAddrs {
            udp: Some(US.parse().unwrap()),
            tcp: None,
        };
        let mut ua = UserAgent::new(local, settings(true), Task::Listen { count: None }, seed);
        ua.start(Instant::now());
        Message::parse(ua.poll_transmit().unwrap().bytes).unwrap()
    };
    let (a, b) = (register([1; 32]), register([2; 32]));
    assert_ne!(a.from().unwrap().tag(), b.from().unwrap().tag());
    assert_ne!(a.call_id(), b.call_id());
    assert_ne!(a.top_via().unwrap().branch(), b.top_via().unwrap().branch());
    assert!(
        a.top_via()
            .unwrap()
            .branch()
            .unwrap()
            .starts_with("z9hG4bK")
    );
}

#[test]
fn an_unusable_answer_is_acked_before_its_bye() {
    let mut p = Phone::new(false, Task::Call(call_task()));
    let invite = p.sent_request(Method::Invite);
    let g729 = "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                m=audio 41000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    let ok = reply(&invite, 200, Some("b1"))
        .body("application/sdp", g729)
        .build()
        .unwrap();
    p.receive(ok);
    let methods: Vec<Method> = p
        .take_sent()
        .iter()
        .filter_map(|m| m.method().cloned())
        .collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
}

#[test]
fn a_second_call_is_busy_for_the_phone_and_taken_with_room_for_two() {
    // Their CSeq numbers differ so that their branches do.
    let invite = |call_id: &str| {
        let seq = if call_id.starts_with("call-1") { 1 } else { 2 };
        bob_request(Method::Invite, None, seq, call_id)
            .body("application/sdp", sdp(41000, "sendrecv"))
            .build()
            .unwrap()
    };
    let mut p = Phone::new(false, Task::Answer(answer_task()));
    p.receive(invite("call-1@bob"));
    p.receive(invite("call-2@bob"));
    let busy = p.sent_response(486);
    assert_eq!(busy.call_id().unwrap(), "call-2@bob");
    assert_eq!(p.core.calls(), 1);

    let mut p = Phone::new(false, Task::Answer(answer_task()));
    p.core.set_max_calls(2);
    p.receive(invite("call-1@bob"));
    p.receive(invite("call-2@bob"));
    let oks: Vec<Message> = p
        .take_sent()
        .into_iter()
        .filter(|m| m.status() == Some(200))
        .collect();
    assert_eq!(oks.len(), 2);
    assert_ne!(oks[0].to().unwrap().tag(), oks[1].to().unwrap().tag());
    assert_eq!(p.core.calls(), 2);
    assert_eq!(p.core.dialog_layer().len(), 2);
    // Each answered call is its own, named in its events.
    let answered: Vec<Option<CallId>> = p
        .events()
        .into_iter()
        .filter(|e| e.name == "answered")
        .map(|e| e.call)
        .collect();
    assert_eq!(answered.len(), 2);
    assert_ne!(answered[0], answered[1]);
}

// ----- transfer (REFER, NOTIFY, Replaces): in their own file -----

#[path = "transfer_tests.rs"]
mod transfer_tests;
