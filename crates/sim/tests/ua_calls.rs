//! Many calls at once between two `sip-ua` user agents on a SimNet that loses,
//! duplicates and reorders 10% of the datagrams each (issue 13): one agent places a few
//! hundred calls that overlap, the other answers them all; each asks for a 90 s session
//! timer and lasts 100 s, so every call is refreshed by re-INVITE twice before its BYE.
//! Every call ends on both sides, and once the timers have run out every transaction,
//! dialog and call table is empty.

#![allow(clippy::unwrap_used)]

use sim::{Datagram, NetConfig, Node, SimNet};
use sip_core::transaction::TimerConfig;
use sip_core::{Flow, Message, Transport};
use sip_ua::{AnswerTask, CallId, CallTask, LocalAddrs, Output, Settings, Task, UserAgent};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CALLS: usize = 300;
/// A call starts every 20 ms: all of them are up at once for most of the run.
const SPACING: Duration = Duration::from_millis(20);

fn udp(remote: SocketAddr) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote,
        local: None,
        connection: None,
    }
}

/// A user agent on the wire; the caller places a call at each of `to_place`.
struct UaNode {
    me: SocketAddr,
    ua: UserAgent,
    started: bool,
    start_at: Instant,
    to_place: VecDeque<Instant>,
    target: String,
    /// The events it reported: call, name and detail.
    events: Vec<(Option<CallId>, &'static str, Option<String>)>,
    /// Re-INVITEs received (copies included): the session refreshes.
    reinvites: usize,
}

impl UaNode {
    fn new(me: SocketAddr, start_at: Instant, user: &str, task: Task, seed: u8) -> UaNode {
        let settings = Settings {
            user: user.into(),
            password: None,
            server: None,
            domain: "example.test".into(),
            transport: Transport::Udp,
            expires: 3600,
            session_expires: Some(90),
            display_name: None,
            codecs: sip_ua::sdp_codecs(&["pcmu".into()]),
            timers: TimerConfig::default(),
        };
        let local = LocalAddrs {
            udp: Some(me),
            tcp: None,
        };
        let mut ua = UserAgent::new(local, settings, task, [seed; 32]);
        ua.set_max_calls(CALLS);
        UaNode {
            me,
            ua,
            started: false,
            start_at,
            to_place: VecDeque::new(),
            target: String::new(),
            events: Vec::new(),
            reinvites: 0,
        }
    }

    fn settle(&mut self, now: Instant) {
        loop {
            // No media on this network: any port will do for the SDP.
            if self.ua.needs_media_port() {
                self.ua.set_media_port(Ok(40_000));
            }
            let progressed = self.ua.handle_events(now);
            let mut outputs = false;
            while let Some(out) = self.ua.poll_output() {
                outputs = true;
                if let Output::Event(e) = out {
                    self.events.push((e.call, e.name, e.detail));
                }
            }
            if !progressed && !outputs {
                break;
            }
        }
    }

    fn count(&self, name: &str, detail: Option<&str>) -> usize {
        self.events
            .iter()
            .filter(|(_, n, d)| *n == name && detail.is_none_or(|x| d.as_deref() == Some(x)))
            .count()
    }

    /// The calls that reported `name`, each once.
    fn calls_with(&self, name: &str) -> HashSet<CallId> {
        self.events
            .iter()
            .filter(|(_, n, _)| *n == name)
            .filter_map(|(c, _, _)| *c)
            .collect()
    }
}

impl Node for UaNode {
    fn receive(&mut self, now: Instant, d: Datagram) {
        if let Ok(msg) = Message::parse(d.bytes) {
            let in_dialog = msg.to().ok().and_then(|t| t.tag()).is_some();
            if in_dialog && msg.method() == Some(&sip_core::Method::Invite) {
                self.reinvites += 1;
            }
            self.ua.on_message(msg, udp(d.from), now);
        }
        self.settle(now);
    }

    fn timeout(&mut self, now: Instant) {
        if !self.started {
            self.started = true;
            self.ua.set_media_port(Ok(40_000));
            self.ua.start(now);
        }
        self.ua.on_timeout(now);
        while self.to_place.front().is_some_and(|at| *at <= now) {
            self.to_place.pop_front();
            self.ua.set_media_port(Ok(40_000));
            let placed = self.ua.place_call(
                CallTask {
                    target: self.target.clone(),
                    play: None,
                    record: None,
                    dtmf: None,
                    dtmf_after: 0.0,
                    hold_after: None,
                    resume_after: None,
                    hold_with_update: false,
                    hangup_after: Some(100.0),
                    hold_inactive: false,
                    change_codec: None,
                    answer_timeout: 60.0,
                },
                now,
            );
            assert!(placed.is_some(), "the call could not start");
        }
        self.settle(now);
    }

    fn poll_transmit(&mut self) -> Option<Datagram> {
        let t = self.ua.poll_transmit()?;
        Some(Datagram {
            from: self.me,
            to: t.flow.remote,
            bytes: t.bytes,
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.started {
            return Some(self.start_at);
        }
        [self.ua.poll_timeout(), self.to_place.front().copied()]
            .into_iter()
            .flatten()
            .min()
    }
}

#[test]
fn hundreds_of_calls_at_once_between_two_user_agents_end_and_leave_nothing() {
    let mut net = SimNet::new(13, NetConfig::lossy(0.1));
    let start = net.now();
    let alice_addr: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    let bob_addr: SocketAddr = "10.0.0.2:5060".parse().unwrap();
    let mut alice = UaNode::new(alice_addr, start, "alice", Task::Listen { count: None }, 1);
    alice.target = format!("sip:bob@{bob_addr}");
    alice.to_place = (0..CALLS)
        .map(|i| start + SPACING * (i as u32 + 1))
        .collect();
    let bob = UaNode::new(
        bob_addr,
        start,
        "bob",
        Task::Answer(AnswerTask {
            auto: true,
            play: None,
            record: None,
            reject: None,
            hangup_after: None,
            calls: None,
        }),
        2,
    );
    let alice = net.add(alice_addr, alice);
    let bob = net.add(bob_addr, bob);

    // Midway every call is up at once, in both agents' tables.
    net.run_for(SPACING * CALLS as u32 + Duration::from_secs(20));
    assert_eq!(net.node(alice).ua.calls(), CALLS);
    assert_eq!(net.node(bob).ua.calls(), CALLS);
    assert_eq!(net.node(bob).ua.dialog_layer().len(), CALLS);

    // The calls end at 100 s; then every timer (64·T1 lingering) runs out.
    net.run_for(Duration::from_secs(200));
    let stats = net.stats();
    assert!(
        stats.lost > 0 && stats.duplicated > 0 && stats.reordered > 0,
        "{stats:?}"
    );
    let a = net.node(alice);
    assert_eq!(a.count("answered", None), CALLS, "{:?}", a.events);
    assert_eq!(a.count("ended", None), CALLS);
    // Each call its own: answered once and ended once, named by its id.
    assert_eq!(a.calls_with("answered").len(), CALLS);
    assert_eq!(a.calls_with("ended"), a.calls_with("answered"));
    let completed = a.count("ended", Some("bye (local)"));
    // Retransmission survives 10% faults nearly always.
    assert!(completed * 100 >= CALLS * 99, "{completed} of {CALLS}");
    assert_eq!(a.ua.calls(), 0);
    assert!(a.ua.is_idle(), "the caller still holds state");
    let b = net.node(bob);
    assert_eq!(b.count("incoming", None), CALLS);
    assert_eq!(b.count("ended", None), CALLS);
    assert_eq!(b.calls_with("ended").len(), CALLS);
    assert!(b.ua.is_idle(), "the callee still holds state");
    // Refreshed at 45 s and 90 s (RFC 4028: half the 90 s interval).
    assert!(
        b.reinvites >= 2 * CALLS * 9 / 10,
        "{} re-INVITEs",
        b.reinvites
    );
    eprintln!("{CALLS} calls, {completed} completed; network {stats:?}");
}
