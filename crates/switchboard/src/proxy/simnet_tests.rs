//! The proxy as the network sees it: the router as `serve` runs it
//! (`router::sim_node::RouterNode`) on SimNet with a virtual clock, and phones played by
//! the test (`Peer`) sending bytes and keeping what reaches them. Forking, CANCEL,
//! Timer C, retransmission to a silent phone and a lossy network, with the timers
//! running as they do on the wire.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::tests::{answer, invite};
use crate::router::sim_node::{DOMAIN, RouterNode, RouterSpec, UNIX};
use bytes::Bytes;
use sim::{Datagram, NetConfig, Node, NodeId, SimNet};
use sip_core::transaction::TimerConfig;
use sip_core::{HeaderName, Message, Transport};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use store::Binding;

const PROXY: &str = "10.0.0.1:5060";
const CALLER: &str = "192.0.2.1:5060";
const BOB_A: &str = "192.0.2.20:5060";
const BOB_B: &str = "192.0.2.21:5060";

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

/// A phone played by the test: what it is given to send goes out at the next
/// [`World::send`]; what reaches it is kept with the time it arrived. With `auto`, it
/// answers every INVITE it receives with that status at once.
struct Peer {
    me: SocketAddr,
    inbox: Vec<(Instant, Message)>,
    outbox: VecDeque<Datagram>,
    auto: Option<u16>,
}

impl Node for Peer {
    fn receive(&mut self, now: Instant, d: Datagram) {
        let msg = Message::parse(d.bytes).unwrap();
        if let Some(code) = self.auto
            && msg.method() == Some(&sip_core::Method::Invite)
        {
            self.outbox.push_back(Datagram {
                from: self.me,
                to: d.from,
                bytes: Bytes::from(answer(&msg, code, "auto")),
            });
        }
        self.inbox.push((now, msg));
    }
    fn timeout(&mut self, _: Instant) {}
    fn poll_transmit(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// `user`'s binding to `contact` with priority `q`.
fn binding(user: &str, contact: &str, q: Option<u16>) -> Binding {
    Binding {
        aor: format!("sip:{user}@{DOMAIN}"),
        contact: format!("sip:{user}@{contact}"),
        expires_at: UNIX + 600,
        q,
        call_id: format!("reg-{contact}"),
        cseq: 1,
        transport: Transport::Udp,
        source: addr(contact),
        path: vec![],
        instance_id: None,
        reg_id: None,
        user_agent: None,
        registered_at: UNIX - 10,
    }
}

/// The proxy, the caller and bob's phones on one simulated network.
struct World {
    net: SimNet,
    proxy: NodeId<RouterNode>,
    caller: NodeId<Peer>,
    bob: Vec<NodeId<Peer>>,
}

impl World {
    /// bob bound at each of `contacts` with its q; Timer C at 10 s; a quiet LAN.
    fn new(contacts: &[(&str, Option<u16>)]) -> World {
        Self::with_timer_c(contacts, Duration::from_secs(10))
    }

    /// As [`World::new`], with Timer C at `timer_c`.
    fn with_timer_c(contacts: &[(&str, Option<u16>)], timer_c: Duration) -> World {
        let mut net = SimNet::new(5, NetConfig::lan());
        let start = net.now();
        let mut spec = RouterSpec::new(addr(PROXY), &["bob".to_owned()]);
        spec.timers = TimerConfig {
            timer_c: Some(timer_c),
            ..TimerConfig::default()
        };
        spec.bindings = contacts
            .iter()
            .map(|(c, q)| binding("bob", c, *q))
            .collect();
        let proxy = net.add(addr(PROXY), RouterNode::new(&spec, start));
        let peer = |me: SocketAddr| Peer {
            me,
            inbox: Vec::new(),
            outbox: VecDeque::new(),
            auto: None,
        };
        let caller = net.add(addr(CALLER), peer(addr(CALLER)));
        let bob = contacts
            .iter()
            .map(|(c, _)| net.add(addr(c), peer(addr(c))))
            .collect();
        World {
            net,
            proxy,
            caller,
            bob,
        }
    }

    /// `from` sends `text` to the proxy now.
    fn send(&mut self, from: NodeId<Peer>, text: &str) {
        let peer = self.net.node(from);
        let me = peer.me;
        peer.outbox.push_back(Datagram {
            from: me,
            to: addr(PROXY),
            bytes: Bytes::copy_from_slice(text.as_bytes()),
        });
        self.net.poke();
    }

    /// Lets `d` of virtual time pass.
    fn run(&mut self, d: Duration) {
        self.net.run_for(d);
    }

    /// What reached `peer` since the last call, without the 100 Trying a proxy may add.
    fn take(&mut self, peer: NodeId<Peer>) -> Vec<Message> {
        self.net
            .node(peer)
            .inbox
            .drain(..)
            .map(|(_, m)| m)
            .filter(|m| m.status() != Some(100))
            .collect()
    }

    fn contexts(&mut self) -> usize {
        self.net.node(self.proxy).router.proxy_contexts()
    }

    fn transactions(&mut self) -> usize {
        self.net.node(self.proxy).router.transactions()
    }
}

/// "INVITE", "180", ... for each message.
fn names(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| match m.status() {
            Some(c) => c.to_string(),
            None => m.method().unwrap().as_str().to_owned(),
        })
        .collect()
}

const HOP: Duration = Duration::from_millis(20);

#[test]
fn parallel_fork_relays_ringing_and_cancels_the_loser() {
    let mut w = World::new(&[(BOB_A, None), (BOB_B, None)]);
    let (caller, a, b) = (w.caller, w.bob[0], w.bob[1]);
    w.send(caller, &invite("sip:bob@example.test", ""));
    w.run(HOP);
    let to_a = w.take(a);
    let to_b = w.take(b);
    assert_eq!(names(&to_a), ["INVITE"]);
    assert_eq!(names(&to_b), ["INVITE"]);
    let (fa, fb) = (to_a[0].clone(), to_b[0].clone());
    assert_eq!(fa.request_uri_str(), Some("sip:bob@192.0.2.20:5060"));
    assert_eq!(fa.max_forwards().unwrap(), Some(69));
    assert!(
        fa.get(HeaderName::RecordRoute)
            .unwrap()
            .starts_with("<sip:10.0.0.1:5060;transport=udp;lr;sbd=")
    );
    let branch = |m: &Message| m.top_via().unwrap().branch().unwrap().to_owned();
    assert!(branch(&fa).ends_with(".0") && branch(&fb).ends_with(".1"));

    w.send(a, &answer(&fa, 180, "ta"));
    w.send(b, &answer(&fb, 180, "tb"));
    w.run(HOP);
    let ringing = w.take(caller);
    assert_eq!(names(&ringing), ["180", "180"]);
    assert_eq!(ringing[0].vias().count(), 1, "our Via is removed");

    w.send(a, &answer(&fa, 200, "ta"));
    w.run(HOP);
    assert_eq!(names(&w.take(caller)), ["200"]);
    let cancel = w.take(b);
    assert_eq!(names(&cancel), ["CANCEL"]);
    assert_eq!(branch(&cancel[0]), branch(&fb));

    w.send(b, &answer(&cancel[0], 200, "tb"));
    w.send(b, &answer(&fb, 487, "tb"));
    w.run(HOP);
    assert_eq!(names(&w.take(b)), ["ACK"], "the 487 is acknowledged");
    assert!(w.take(caller).is_empty(), "the 487 stops at the proxy");
    assert_eq!(w.contexts(), 0);
    // Past the lingering of every transaction (64·T1), nothing is left.
    w.run(Duration::from_secs(40));
    assert_eq!(w.transactions(), 0);
}

#[test]
fn serial_fork_by_q_and_best_response() {
    let mut w = World::new(&[(BOB_A, Some(1000)), (BOB_B, Some(500))]);
    let (caller, a, b) = (w.caller, w.bob[0], w.bob[1]);
    w.send(caller, &invite("sip:bob@example.test", ""));
    w.run(HOP);
    let first = w.take(a);
    assert_eq!(names(&first), ["INVITE"]);
    assert!(w.take(b).is_empty(), "the lower q waits its turn");
    w.send(a, &answer(&first[0], 486, "ta"));
    w.run(HOP);
    assert_eq!(names(&w.take(a)), ["ACK"]);
    let second = w.take(b);
    assert_eq!(names(&second), ["INVITE"]);
    assert!(w.take(caller).is_empty());
    w.send(b, &answer(&second[0], 503, "tb"));
    w.run(HOP);
    assert_eq!(names(&w.take(b)), ["ACK"]);
    // 486 (4xx) beats 503 (5xx).
    assert_eq!(names(&w.take(caller)), ["486"]);
}

#[test]
fn a_6xx_ends_the_search() {
    let mut w = World::new(&[(BOB_A, Some(1000)), (BOB_B, Some(500))]);
    let (caller, a, b) = (w.caller, w.bob[0], w.bob[1]);
    w.send(caller, &invite("sip:bob@example.test", ""));
    w.run(HOP);
    let first = w.take(a);
    w.send(a, &answer(&first[0], 603, "ta"));
    w.run(HOP);
    assert_eq!(names(&w.take(a)), ["ACK"]);
    assert_eq!(names(&w.take(caller)), ["603"]);
    assert!(w.take(b).is_empty(), "no branch after a 6xx");
}

#[test]
fn timer_c_cancels_and_answers_408() {
    let mut w = World::new(&[(BOB_A, None)]);
    let (caller, a) = (w.caller, w.bob[0]);
    w.send(caller, &invite("sip:bob@example.test", ""));
    w.run(HOP);
    let fwd = w.take(a);
    w.send(a, &answer(&fwd[0], 180, "ta"));
    w.run(HOP);
    assert_eq!(names(&w.take(caller)), ["180"]);
    // Ringing for Timer C (10 s here) without a final response.
    w.run(Duration::from_millis(9_900));
    assert!(w.take(a).is_empty(), "nothing before Timer C");
    w.run(Duration::from_millis(200));
    let cancel = w.take(a);
    assert_eq!(names(&cancel), ["CANCEL"]);
    w.send(a, &answer(&cancel[0], 200, "ta"));
    w.send(a, &answer(&fwd[0], 487, "ta"));
    w.run(HOP);
    assert_eq!(names(&w.take(a)), ["ACK"]);
    assert_eq!(names(&w.take(caller)), ["408"]);
}

#[test]
fn caller_cancel_gets_200_then_487_and_the_branch_is_cancelled() {
    let mut w = World::new(&[(BOB_A, None)]);
    let (caller, a) = (w.caller, w.bob[0]);
    w.send(caller, &invite("sip:bob@example.test", ""));
    w.run(HOP);
    let fwd = w.take(a);
    w.send(a, &answer(&fwd[0], 180, "ta"));
    w.run(HOP);
    w.take(caller);
    let cancel = invite("sip:bob@example.test", "")
        .replace("INVITE sip", "CANCEL sip")
        .replace("1 INVITE", "1 CANCEL");
    w.send(caller, &cancel);
    w.run(HOP);
    assert_eq!(names(&w.take(caller)), ["200", "487"]);
    assert_eq!(names(&w.take(a)), ["CANCEL"]);
}

#[test]
fn an_invite_to_a_silent_phone_is_retransmitted_on_timer_a_until_timer_b_then_408() {
    // Timer C beyond Timer B, so that Timer B ends the branch.
    let mut w = World::with_timer_c(&[(BOB_A, None)], Duration::from_secs(180));
    let (caller, a) = (w.caller, w.bob[0]);
    let start = w.net.now();
    w.send(caller, &invite("sip:bob@example.test", ""));
    w.run(Duration::from_secs(40));
    let arrivals: Vec<Duration> = w
        .net
        .node(a)
        .inbox
        .iter()
        .map(|(t, m)| {
            assert_eq!(m.method(), Some(&sip_core::Method::Invite));
            t.duration_since(start)
        })
        .collect();
    // RFC 3261 §17.1.1.2: at 0, then T1, 2·T1, 4·T1... doubling (no cap for INVITE)
    // until Timer B (64·T1 = 32 s): 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
    let sent_at: Vec<u64> = arrivals
        .iter()
        .map(|d| (d.as_millis() / 100) as u64)
        .collect();
    assert_eq!(sent_at, [0, 5, 15, 35, 75, 155, 315], "{arrivals:?}");
    // Timer B (32 s): the branch times out, the caller gets 408.
    let to_caller: Vec<(Duration, Option<u16>)> = w
        .net
        .node(caller)
        .inbox
        .iter()
        .map(|(t, m)| (t.duration_since(start), m.status()))
        .filter(|(_, s)| *s != Some(100))
        .collect();
    assert!(
        to_caller.iter().all(|(_, s)| *s == Some(408)),
        "{to_caller:?}"
    );
    let at = to_caller[0].0;
    assert!(
        at >= Duration::from_secs(32) && at < Duration::from_millis(32_100),
        "408 at {at:?}"
    );
    // The caller here never ACKs: the 408 is sent again on Timer G (T1, then doubling).
    assert!(to_caller.len() > 1, "{to_caller:?}");
    assert_eq!(to_caller[1].0 - at, Duration::from_millis(500));
    assert_eq!(w.contexts(), 0);
}

#[test]
fn over_a_lossy_network_a_busy_phone_is_found_and_the_caller_told() {
    let mut w = World::new(&[(BOB_A, None)]);
    let (caller, a) = (w.caller, w.bob[0]);
    w.net.node(a).auto = Some(486);
    // The INVITE reaches the proxy; from then on a third of the datagrams are lost.
    w.send(caller, &invite("sip:bob@example.test", ""));
    w.run(Duration::from_millis(5));
    w.net.set_config(NetConfig {
        loss: 0.3,
        ..NetConfig::lan()
    });
    w.run(Duration::from_secs(40));
    assert!(w.net.stats().lost > 0, "{:?}", w.net.stats());
    let to_caller = w.take(caller);
    assert!(
        to_caller.iter().any(|m| m.status() == Some(486)),
        "the 486 came through: {:?}",
        names(&to_caller)
    );
    assert!(
        to_caller.iter().all(|m| m.status() == Some(486)),
        "{:?}",
        names(&to_caller)
    );
    assert_eq!(w.contexts(), 0);
    assert_eq!(w.transactions(), 0, "every transaction ended");
}
