//! Call transfer between three `sip-ua` user agents on a SimNet (issue 14): alice calls
//! bob, and bob transfers her to carol, blind (REFER, RFC 3515, with Referred-By, RFC
//! 3892) or attended (a consult call to carol first, then REFER with Replaces, RFC
//! 3891). Alice ends up in a call with carol, bob's calls end, the NOTIFYs tell bob how
//! it went, and once the timers have run out nothing is left in any table. A refused
//! transfer leaves the first call up, and a refused consult call resumes it.

#![allow(clippy::unwrap_used)]

use sim::{Datagram, NetConfig, Node, SimNet};
use sip_core::name::HeaderName;
use sip_core::transaction::TimerConfig;
use sip_core::{Flow, Message, Method, Transport};
use sip_ua::{
    AnswerTask, CallId, CallTask, LocalAddrs, Output, Settings, Task, TransferScript, UserAgent,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn udp(remote: SocketAddr) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote,
        local: None,
        connection: None,
    }
}

/// A user agent on the wire, with what it reported and the requests it received.
struct UaNode {
    me: SocketAddr,
    ua: UserAgent,
    started: bool,
    start_at: Instant,
    events: Vec<(Option<CallId>, &'static str, Option<String>)>,
    requests: Vec<Message>,
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
            session_expires: None,
            display_name: None,
            codecs: sip_ua::sdp_codecs(&["pcmu".into()]),
            timers: TimerConfig::default(),
        };
        let local = LocalAddrs {
            udp: Some(me),
            tcp: None,
        };
        UaNode {
            me,
            ua: UserAgent::new(local, settings, task, [seed; 32]),
            started: false,
            start_at,
            events: Vec::new(),
            requests: Vec::new(),
        }
    }

    fn settle(&mut self, now: Instant) {
        loop {
            // No media on this network: a port for each call's SDP will do.
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

    fn has(&self, name: &str) -> bool {
        self.events.iter().any(|(_, n, _)| *n == name)
    }

    fn detail(&self, name: &str) -> Option<String> {
        self.events
            .iter()
            .find(|(_, n, _)| *n == name)
            .and_then(|(_, _, d)| d.clone())
    }

    /// The calls that reported `name`, in order.
    fn calls_with(&self, name: &str) -> Vec<CallId> {
        self.events
            .iter()
            .filter(|(_, n, _)| *n == name)
            .filter_map(|(c, _, _)| *c)
            .collect()
    }

    /// Why call `cid` ended.
    fn ended(&self, cid: CallId) -> Option<String> {
        self.events
            .iter()
            .find(|(c, n, _)| *c == Some(cid) && *n == "ended")
            .and_then(|(_, _, d)| d.clone())
    }

    fn first_request(&self, method: Method) -> Option<&Message> {
        self.requests.iter().find(|m| m.method() == Some(&method))
    }
}

impl Node for UaNode {
    fn receive(&mut self, now: Instant, d: Datagram) {
        if let Ok(msg) = Message::parse(d.bytes) {
            if msg.is_request() {
                self.requests.push(msg.clone());
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
        self.ua.poll_timeout()
    }
}

const ALICE: &str = "10.0.0.1:5060";
const BOB: &str = "10.0.0.2:5060";
const CAROL: &str = "10.0.0.3:5060";

fn answer(reject: Option<u16>, hangup_after: Option<f64>) -> Task {
    Task::Answer(AnswerTask {
        auto: true,
        play: None,
        record: None,
        reject,
        hangup_after,
        calls: Some(1),
    })
}

/// Alice calls bob (hanging up 20 s after an answer), bob answers with `script`, carol
/// answers as `carol` says. Runs until every timer has run out.
fn run(
    seed: u64,
    net_config: NetConfig,
    script: TransferScript,
    carol: Task,
) -> (SimNet, [sim::NodeId<UaNode>; 3]) {
    let mut net = SimNet::new(seed, net_config);
    let start = net.now();
    let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
        ALICE.parse().unwrap(),
        BOB.parse().unwrap(),
        CAROL.parse().unwrap(),
    );
    let call = CallTask {
        target: format!("sip:bob@{b}"),
        play: None,
        record: None,
        dtmf: None,
        dtmf_after: 0.0,
        hold_after: None,
        resume_after: None,
        hold_with_update: false,
        hangup_after: Some(20.0),
        hold_inactive: false,
        change_codec: None,
        answer_timeout: 30.0,
    };
    let alice = UaNode::new(a, start, "alice", Task::Call(call), 1);
    let mut bob = UaNode::new(b, start, "bob", answer(None, None), 2);
    bob.ua.set_transfer_script(script);
    let carol = UaNode::new(c, start, "carol", carol, 3);
    let ids = [net.add(a, alice), net.add(b, bob), net.add(c, carol)];
    net.run_for(Duration::from_secs(150));
    (net, ids)
}

fn assert_idle(net: &mut SimNet, ids: &[sim::NodeId<UaNode>; 3]) {
    for (id, who) in ids.iter().zip(["alice", "bob", "carol"]) {
        let n = net.node(*id);
        assert_eq!(n.ua.calls(), 0, "{who}: {:?}", n.events);
        assert!(n.ua.is_idle(), "{who} still holds state: {:?}", n.events);
    }
}

#[test]
fn blind_transfer_puts_alice_through_to_carol_and_ends_bobs_call() {
    let script = TransferScript {
        to: Some(format!("sip:carol@{CAROL}")),
        after: Some(2.0),
        ..TransferScript::default()
    };
    let (mut net, ids) = run(14, NetConfig::lan(), script, answer(None, None));
    let [alice, bob, carol] = ids;

    let b = net.node(bob);
    assert_eq!(
        b.detail("transferring").as_deref(),
        Some(format!("sip:carol@{CAROL} (blind)").as_str())
    );
    assert_eq!(
        b.detail("transfer accepted").as_deref(),
        Some("SIP/2.0 202 Accepted")
    );
    assert_eq!(
        b.detail("transfer progress").as_deref(),
        Some("SIP/2.0 100 Trying")
    );
    assert_eq!(b.detail("transferred").as_deref(), Some("SIP/2.0 200 OK"));
    let bob_call = b.calls_with("answered")[0];
    assert_eq!(b.ended(bob_call).as_deref(), Some("transferred"));
    assert_eq!(b.ua.finished(), Some(sip_ua::exit::OK));
    // The REFER: Refer-To the target, Referred-By bob.
    let refer = net
        .node(alice)
        .first_request(Method::Refer)
        .unwrap()
        .clone();
    assert_eq!(
        refer.get(HeaderName::ReferTo),
        Some(format!("<sip:carol@{CAROL}>").as_str())
    );
    assert_eq!(
        refer.get(HeaderName::ReferredBy),
        Some("<sip:bob@example.test>")
    );

    let a = net.node(alice);
    assert!(a.has("transfer requested"), "{:?}", a.events);
    let answered = a.calls_with("answered");
    assert_eq!(answered.len(), 2, "{:?}", a.events);
    assert_eq!(a.ended(answered[0]).as_deref(), Some("transferred"));
    assert_eq!(
        a.detail("transferred").as_deref(),
        Some(format!("to sip:carol@{CAROL}").as_str())
    );
    // The call to carol lasts until alice's script hangs it up.
    assert_eq!(a.ended(answered[1]).as_deref(), Some("bye (local)"));
    assert_eq!(a.ua.finished(), Some(sip_ua::exit::OK));

    let c = net.node(carol);
    let invite = c.first_request(Method::Invite).unwrap();
    assert_eq!(
        invite.get(HeaderName::ReferredBy),
        Some("<sip:bob@example.test>")
    );
    assert!(invite.from().unwrap().uri_text.contains("alice"));
    assert_eq!(c.calls_with("answered").len(), 1);
    assert_eq!(c.detail("ended").as_deref(), Some("bye (remote)"));

    assert_idle(&mut net, &ids);
}

#[test]
fn attended_transfer_replaces_the_consult_call_at_carol() {
    let script = TransferScript {
        consult: Some(format!("sip:carol@{CAROL}")),
        consult_after: 1.0,
        after: Some(2.0),
        ..TransferScript::default()
    };
    let (mut net, ids) = run(15, NetConfig::lan(), script, answer(None, None));
    let [alice, bob, carol] = ids;

    let b = net.node(bob);
    assert_eq!(
        b.detail("consulting").as_deref(),
        Some(format!("sip:carol@{CAROL}").as_str())
    );
    assert_eq!(b.detail("held").as_deref(), Some("local"));
    assert_eq!(
        b.detail("transferring").as_deref(),
        Some(format!("sip:carol@{CAROL} (attended)").as_str())
    );
    assert_eq!(b.detail("transferred").as_deref(), Some("SIP/2.0 200 OK"));
    let bob_calls = b.calls_with("answered");
    assert_eq!(bob_calls.len(), 2, "{:?}", b.events);
    assert_eq!(b.ended(bob_calls[0]).as_deref(), Some("transferred"));
    // Carol hung the consult call up once alice's call replaced it.
    assert_eq!(b.ended(bob_calls[1]).as_deref(), Some("bye (remote)"));
    assert_eq!(b.ua.finished(), Some(sip_ua::exit::OK));

    let c = net.node(carol);
    let invites: Vec<Message> = c
        .requests
        .iter()
        .filter(|m| m.method() == Some(&Method::Invite) && m.to().unwrap().tag().is_none())
        .cloned()
        .collect();
    assert_eq!(invites.len(), 2, "the consult call and alice's");
    let consult_call_id = invites[0].call_id().unwrap().to_owned();
    let bob_tag = invites[0].from().unwrap().tag().unwrap().to_owned();
    let replaces = invites[1].get_by_name("Replaces").unwrap().to_owned();
    assert!(
        replaces.starts_with(&format!("{consult_call_id};to-tag=")),
        "{replaces}"
    );
    assert!(
        replaces.ends_with(&format!(";from-tag={bob_tag}")),
        "{replaces}"
    );
    assert!(invites[1].from().unwrap().uri_text.contains("alice"));
    assert_eq!(
        invites[1].get(HeaderName::ReferredBy),
        Some("<sip:bob@example.test>")
    );
    let carol_calls = c.calls_with("answered");
    assert_eq!(carol_calls.len(), 2, "{:?}", c.events);
    assert!(c.has("replacing"));
    assert_eq!(c.ended(carol_calls[0]).as_deref(), Some("replaced"));
    assert_eq!(c.ended(carol_calls[1]).as_deref(), Some("bye (remote)"));

    let a = net.node(alice);
    let answered = a.calls_with("answered");
    assert_eq!(answered.len(), 2, "{:?}", a.events);
    assert_eq!(a.ended(answered[1]).as_deref(), Some("bye (local)"));

    assert_idle(&mut net, &ids);
}

#[test]
fn a_refused_transfer_is_reported_and_the_first_call_stays_up() {
    let script = TransferScript {
        to: Some(format!("sip:carol@{CAROL}")),
        after: Some(2.0),
        ..TransferScript::default()
    };
    let (mut net, ids) = run(16, NetConfig::lan(), script, answer(Some(486), None));
    let [alice, bob, _] = ids;

    let b = net.node(bob);
    assert_eq!(
        b.detail("transfer failed").as_deref(),
        Some("SIP/2.0 486 Busy Here")
    );
    assert!(!b.has("transferred"));
    let bob_call = b.calls_with("answered")[0];
    // Alice's script hung up at 20 s: the call was up until then.
    assert_eq!(b.ended(bob_call).as_deref(), Some("bye (remote)"));

    let a = net.node(alice);
    assert_eq!(
        a.detail("transfer failed").as_deref(),
        Some("SIP/2.0 486 Busy Here")
    );
    assert_eq!(a.calls_with("answered").len(), 1);
    assert_eq!(a.ua.finished(), Some(sip_ua::exit::OK));

    assert_idle(&mut net, &ids);
}

#[test]
fn transfers_complete_on_a_lossy_network() {
    for seed in 0..10 {
        let script = TransferScript {
            to: Some(format!("sip:carol@{CAROL}")),
            after: Some(2.0),
            ..TransferScript::default()
        };
        let (mut net, ids) = run(seed, NetConfig::lossy(0.1), script, answer(None, None));
        let [alice, _, carol] = ids;
        let a = net.node(alice);
        assert_eq!(
            a.calls_with("answered").len(),
            2,
            "seed {seed}: {:?}",
            a.events
        );
        assert_eq!(net.node(carol).calls_with("answered").len(), 1);
        assert_idle(&mut net, &ids);
    }
}

#[test]
fn a_consult_call_refused_resumes_the_held_call() {
    let script = TransferScript {
        consult: Some(format!("sip:carol@{CAROL}")),
        consult_after: 1.0,
        after: Some(2.0),
        ..TransferScript::default()
    };
    let (mut net, ids) = run(17, NetConfig::lan(), script, answer(Some(486), None));
    let [alice, bob, _] = ids;

    let b = net.node(bob);
    let names: Vec<&str> = b.events.iter().map(|(_, n, _)| *n).collect();
    let at = |name: &str| names.iter().position(|n| *n == name);
    assert!(
        at("held") < at("ended") && at("ended") < at("resumed"),
        "{names:?}"
    );
    assert!(!b.has("transferring"), "{:?}", b.events);
    let bob_call = b.calls_with("answered")[0];
    assert_eq!(b.ended(bob_call).as_deref(), Some("bye (remote)"));
    assert_eq!(b.ua.finished(), Some(sip_ua::exit::OK));

    let a = net.node(alice);
    assert!(a.has("held") && a.has("resumed"), "{:?}", a.events);
    assert_eq!(a.calls_with("answered").len(), 1);

    assert_idle(&mut net, &ids);
}

#[test]
fn the_caller_transfers_and_the_callee_answering_is_the_transferee() {
    let mut net = SimNet::new(18, NetConfig::lan());
    let start = net.now();
    let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
        ALICE.parse().unwrap(),
        BOB.parse().unwrap(),
        CAROL.parse().unwrap(),
    );
    let call = CallTask {
        target: format!("sip:bob@{b}"),
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
        answer_timeout: 30.0,
    };
    let mut alice = UaNode::new(a, start, "alice", Task::Call(call), 1);
    alice.ua.set_transfer_script(TransferScript {
        to: Some(format!("sip:carol@{c}")),
        after: Some(1.0),
        ..TransferScript::default()
    });
    // Bob answers one call and is sent to carol, who hangs up after 5 s.
    let bob = UaNode::new(b, start, "bob", answer(None, None), 2);
    let carol = UaNode::new(c, start, "carol", answer(None, Some(5.0)), 3);
    let ids = [net.add(a, alice), net.add(b, bob), net.add(c, carol)];
    net.run_for(Duration::from_secs(120));
    let [alice, bob, carol] = ids;

    let a = net.node(alice);
    assert_eq!(a.detail("transferred").as_deref(), Some("SIP/2.0 200 OK"));
    assert_eq!(a.ua.finished(), Some(sip_ua::exit::OK));
    let b = net.node(bob);
    let answered = b.calls_with("answered");
    assert_eq!(answered.len(), 2, "{:?}", b.events);
    assert_eq!(b.ended(answered[0]).as_deref(), Some("transferred"));
    assert_eq!(b.ended(answered[1]).as_deref(), Some("bye (remote)"));
    // Its task (one call) is over once both calls are.
    assert_eq!(b.ua.finished(), Some(sip_ua::exit::OK));
    let c = net.node(carol);
    assert!(
        c.first_request(Method::Invite)
            .unwrap()
            .from()
            .unwrap()
            .uri_text
            .contains("bob")
    );
    assert_idle(&mut net, &ids);
}
