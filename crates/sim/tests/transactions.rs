//! The transaction layer (RFC 3261 §17) between two nodes on a SimNet that loses,
//! duplicates and reorders datagrams: every client transaction ends with the final
//! response or a timeout, never both and never neither (INVITEs are refused with 486,
//! whose ACK the transaction layer makes reliable itself); the server answers each request
//! once however often it arrives; and when the timers have run out both tables are
//! empty.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use sim::{Datagram, NetConfig, Node, SimNet};
use sip_core::transaction::{Event, TimerConfig, TransactionKey, TransactionLayer};
use sip_core::{Flow, Message, Transport, response_to};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A transaction layer on the wire, with a TU that answers requests (as a server) or
/// records outcomes (as a client).
struct LayerNode {
    me: SocketAddr,
    layer: TransactionLayer,
    /// Server side: requests answered, by Call-ID (retransmissions must not show here).
    answered: HashMap<String, u32>,
    /// Client side: how each transaction ended.
    outcomes: HashMap<TransactionKey, Vec<String>>,
}

impl LayerNode {
    fn new(me: SocketAddr) -> LayerNode {
        LayerNode {
            me,
            layer: TransactionLayer::new(TimerConfig::default()),
            answered: HashMap::new(),
            outcomes: HashMap::new(),
        }
    }

    fn events(&mut self, now: Instant) {
        while let Some(event) = self.layer.poll_event() {
            match event {
                Event::Request { key, request, .. } => {
                    let call_id = request.call_id().unwrap().to_owned();
                    *self.answered.entry(call_id).or_default() += 1;
                    // INVITEs get a non-2xx, whose reliability is the transaction
                    // layer's own (the ACK included); a 2xx's is the UA's (sip-ua).
                    let code = if request.method().unwrap().as_str() == "INVITE" {
                        486
                    } else {
                        202
                    };
                    let ok = response_to(&request, code, Some("srv")).build().unwrap();
                    self.layer.send_response(now, key, ok).unwrap();
                }
                Event::Response { key, response } => {
                    let code = response.status().unwrap();
                    if code >= 200 {
                        self.outcomes.entry(key).or_default().push(code.to_string());
                    }
                }
                Event::Timeout { key, timer } => {
                    self.outcomes
                        .entry(key)
                        .or_default()
                        .push(format!("timeout {timer:?}"));
                }
                _ => {}
            }
        }
    }
}

const CLIENT: &str = "127.0.0.1:5061";
const SERVER: &str = "127.0.0.1:5060";

fn flow(remote: SocketAddr) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote,
        local: None,
        connection: None,
    }
}

impl Node for LayerNode {
    fn receive(&mut self, now: Instant, d: Datagram) {
        if let Ok(msg) = Message::parse(d.bytes) {
            let _ = self.layer.handle_message(now, msg, flow(d.from));
        }
        self.events(now);
    }
    fn timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.events(now);
    }
    fn poll_transmit(&mut self) -> Option<Datagram> {
        let t = self.layer.poll_transmit()?;
        Some(Datagram {
            from: self.me,
            to: t.flow.remote,
            bytes: t.bytes,
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.layer.poll_timeout()
    }
}

fn request(method: &str, n: u32) -> Message {
    let text = format!(
        "{method} sip:bob@{SERVER} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CLIENT};branch=z9hG4bK-sim-{method}-{n}\r\n\
         Max-Forwards: 70\r\nTo: <sip:bob@{SERVER}>\r\n\
         From: <sip:alice@{CLIENT}>;tag=a{n}\r\nCall-ID: {method}-{n}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:alice@{CLIENT}>\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).unwrap()
}

fn run(seed: u64, fault: f64) -> (SimNet, sim::NodeId<LayerNode>, sim::NodeId<LayerNode>) {
    let mut net = SimNet::new(seed, NetConfig::lossy(fault));
    let client = net.add(
        CLIENT.parse().unwrap(),
        LayerNode::new(CLIENT.parse().unwrap()),
    );
    let server = net.add(
        SERVER.parse().unwrap(),
        LayerNode::new(SERVER.parse().unwrap()),
    );
    let now = net.now();
    for n in 0..200 {
        let method = if n % 2 == 0 { "OPTIONS" } else { "INVITE" };
        let to = flow(SERVER.parse().unwrap());
        net.node(client)
            .layer
            .send_request(now, request(method, n), to)
            .unwrap();
    }
    net.poke();
    // Past every timer: F and B at 64·T1, then J/K/D/I/L linger.
    net.run_for(Duration::from_secs(120));
    (net, client, server)
}

#[test]
fn every_transaction_ends_once_and_the_tables_empty() {
    for seed in [1, 2, 3] {
        let (mut net, client, server) = run(seed, 0.1);
        let stats = net.stats();
        assert!(
            stats.lost > 0 && stats.duplicated > 0 && stats.reordered > 0,
            "{stats:?}"
        );
        let c = net.node(client);
        assert_eq!(
            c.outcomes.len(),
            200,
            "seed {seed}: every transaction reported"
        );
        for (key, ends) in &c.outcomes {
            assert_eq!(ends.len(), 1, "seed {seed}: {key:?} ended {ends:?}");
        }
        let finals = c
            .outcomes
            .values()
            .filter(|e| !e[0].starts_with("timeout"))
            .count();
        // With 10% loss each way and 7+ retransmissions, nearly all complete.
        assert!(finals >= 195, "seed {seed}: only {finals} of 200 completed");
        assert!(c.layer.is_empty(), "seed {seed}: client table not empty");
        let s = net.node(server);
        assert!(s.layer.is_empty(), "seed {seed}: server table not empty");
        for (call_id, times) in &s.answered {
            assert_eq!(
                *times, 1,
                "seed {seed}: {call_id} reached the TU {times} times"
            );
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let (a, _, _) = run(42, 0.1);
    let (b, _, _) = run(42, 0.1);
    assert_eq!(a.stats(), b.stats());
    assert_eq!(a.elapsed(), b.elapsed());
}

#[test]
fn datagrams_over_the_mtu_are_lost() {
    let mut config = NetConfig::lan();
    config.mtu = 200;
    let mut net = SimNet::new(1, config);
    let client = net.add(
        CLIENT.parse().unwrap(),
        LayerNode::new(CLIENT.parse().unwrap()),
    );
    net.add(
        SERVER.parse().unwrap(),
        LayerNode::new(SERVER.parse().unwrap()),
    );
    let now = net.now();
    net.node(client)
        .layer
        .send_request(now, request("OPTIONS", 1), flow(SERVER.parse().unwrap()))
        .unwrap();
    net.run_for(Duration::from_secs(40));
    let outcome = net.node(client).outcomes.values().next().cloned();
    assert_eq!(outcome, Some(vec!["timeout F".to_string()]));
    assert!(net.stats().too_big > 0 && net.stats().delivered == 0);
}
