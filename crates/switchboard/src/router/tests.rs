//! The router on a fake clock: a REGISTER, an INVITE and a failed send go in as bytes,
//! what it asks to send is collected, storage batches are reported by hand. No sockets,
//! no writer thread.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::config::RegistrarConfig;
use crate::myself::Myself;
use crate::proxy::{Interface, ProxySettings};
use crate::registrar::RegistrarSettings;
use sip_core::Transport;
use std::net::SocketAddr;
use store::{MemoryLocationStore, MemoryUserStore};

const UNIX: u64 = 1_800_000_000;
const CALLER: &str = "192.0.2.1:5060";
const BOB: &str = "192.0.2.20:5060";

fn flow(addr: &str) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
        local: None,
        connection: None,
    }
}

struct Harness {
    now: Now,
    router: Router,
    sent: Vec<Transmit>,
}

impl Harness {
    fn new() -> Harness {
        Self::with_users(&["bob".to_owned()])
    }

    /// A router whose users are `names` (password "pw"), committing in the background.
    fn with_users(names: &[String]) -> Harness {
        let listeners: [(Transport, SocketAddr); 1] =
            [(Transport::Udp, "10.0.0.1:5060".parse().unwrap())];
        let myself = Myself::new("example.test", &[], &listeners, &[]);
        let settings = RegistrarSettings {
            domain: "example.test".into(),
            rules: RegistrarConfig {
                require_auth: false,
                ..RegistrarConfig::default()
            },
            ..RegistrarSettings::default()
        };
        let location: Box<dyn LocationStore> = Box::new(MemoryLocationStore::default());
        let mut users = MemoryUserStore::default();
        for name in names {
            users
                .add(&store::User::new(name, "example.test", "pw", UNIX).unwrap())
                .unwrap();
        }
        let users: Box<dyn UserStore> = Box::new(users);
        let mut registrar = Registrar::new(settings, location, users, &[3u8; 32], UNIX)
            .unwrap()
            .with_myself(myself.clone());
        // As `serve` does: the store's backend goes to the writer thread (here: the
        // test, which reports each batch stored).
        assert!(registrar.detach_location_backend().is_some());
        let proxy = Proxy::new(
            ProxySettings {
                myself,
                server_name: "Switchboard/test".into(),
                require_auth: false,
                trusted: vec![],
                forward_foreign: false,
                max_recursions: 2,
            },
            vec![Interface::new(
                Transport::Udp,
                listeners[0].1,
                "example.test",
            )],
            IdGenerator::new(&[9u8; 16]).unwrap(),
        );
        let now = Now {
            instant: Instant::now(),
            unix_secs: UNIX,
        };
        let router = Router::new(
            now,
            TimerConfig::default(),
            registrar,
            proxy,
            "Switchboard/test".into(),
            IdGenerator::new(&[5u8; 16]).unwrap(),
            Commits::Background,
        );
        Harness {
            now,
            router,
            sent: Vec::new(),
        }
    }

    /// Bytes received from `from`, then a turn's processing.
    fn recv(&mut self, from: &str, text: &str) {
        let msg = Message::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap();
        self.router.handle_message(self.now, msg, flow(from));
        self.pump();
    }

    /// As the driver does: sends first, then processing, until a pass does nothing.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(t) = self.router.poll_transmit() {
                busy = true;
                self.sent.push(t);
            }
            if !self.router.process(self.now) && !busy {
                return;
            }
        }
    }

    /// The clock moves on by `by`; the router is woken if a deadline passed.
    fn advance(&mut self, by: Duration) {
        self.now = self.now.advanced(by);
        if self
            .router
            .poll_timeout()
            .is_some_and(|t| t <= self.now.instant)
        {
            self.router.handle_timeout(self.now);
        }
        self.pump();
    }

    /// What was sent since the last call, as parsed messages with their destination.
    fn take(&mut self) -> Vec<(SocketAddr, u64, Message)> {
        self.sent
            .drain(..)
            .map(|t| (t.flow.remote, t.token, Message::parse(t.bytes).unwrap()))
            .collect()
    }

    /// Registers bob at `BOB`, reporting the batch stored.
    fn register_bob(&mut self) {
        self.recv(BOB, &register());
        self.advance(COMMIT_DELAY);
        let batch = self.router.poll_batch().unwrap();
        self.router.handle_committed(
            self.now,
            store::Committed {
                id: batch.id,
                result: Ok(()),
            },
        );
        self.pump();
        let sent = self.take();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].2.status(), Some(200));
    }
}

fn register() -> String {
    format!(
        "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {BOB};branch=z9hG4bKr1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@example.test>;tag=r1\r\n\
         To: <sip:bob@example.test>\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:bob@{BOB}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

fn invite() -> String {
    format!(
        "INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKc1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:dave@elsewhere.test>;tag=f1\r\n\
         To: <sip:bob@example.test>\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:dave@{CALLER}>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_register_is_answered_only_once_its_batch_is_reported_stored() {
    let mut h = Harness::new();
    h.recv(BOB, &register());
    let early = h.take();
    assert!(early.is_empty(), "no 200 before the commit: {early:?}");
    // The group commit waits `COMMIT_DELAY` for company, and says so.
    assert_eq!(h.router.poll_timeout(), Some(h.now.instant + COMMIT_DELAY));
    assert!(h.router.poll_batch().is_none());
    h.advance(COMMIT_DELAY);
    let batch = h.router.poll_batch().expect("a batch for the writer");
    assert_eq!(batch.changes.len(), 1);
    // While it is out, nothing is answered, however long it takes.
    h.advance(Duration::from_millis(50));
    assert!(h.take().is_empty());
    assert!(!h.router.is_settled());
    h.router.handle_committed(
        h.now,
        store::Committed {
            id: batch.id,
            result: Ok(()),
        },
    );
    h.pump();
    let sent = h.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, BOB.parse::<SocketAddr>().unwrap());
    assert_eq!(sent[0].2.status(), Some(200));
    assert!(h.router.is_settled());
}

#[test]
fn a_failed_batch_answers_its_register_500() {
    let mut h = Harness::new();
    h.recv(BOB, &register());
    h.advance(COMMIT_DELAY);
    let batch = h.router.poll_batch().unwrap();
    h.router.handle_committed(
        h.now,
        store::Committed {
            id: batch.id,
            result: Err(store::StoreError::WriterGone),
        },
    );
    h.pump();
    let sent = h.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.status(), Some(500));
}

#[test]
fn stopping_commits_what_is_staged_at_once() {
    let mut h = Harness::new();
    h.recv(BOB, &register());
    assert!(!h.router.is_settled());
    h.router.begin_stop(h.now);
    h.pump();
    let batch = h
        .router
        .poll_batch()
        .expect("out without waiting for the delay");
    h.router.handle_committed(
        h.now,
        store::Committed {
            id: batch.id,
            result: Ok(()),
        },
    );
    h.pump();
    assert_eq!(h.take()[0].2.status(), Some(200));
    assert!(h.router.is_settled());
}

#[test]
fn an_invite_to_a_registered_user_is_forwarded_to_the_contact() {
    let mut h = Harness::new();
    h.register_bob();
    h.recv(CALLER, &invite());
    let sent = h.take();
    let forwarded: Vec<_> = sent.iter().filter(|(_, _, m)| m.is_request()).collect();
    assert_eq!(forwarded.len(), 1, "{sent:?}");
    let (to, token, req) = forwarded[0];
    assert_eq!(*to, BOB.parse::<SocketAddr>().unwrap());
    assert_eq!(req.method(), Some(&Method::Invite));
    assert_ne!(*token, NO_TOKEN, "a failure must find its transaction");
}

#[test]
fn a_failed_send_to_the_only_contact_ends_the_call_with_a_final_response() {
    let mut h = Harness::new();
    h.register_bob();
    h.recv(CALLER, &invite());
    let sent = h.take();
    let (_, token, _) = sent.iter().find(|(_, _, m)| m.is_request()).unwrap();
    h.router.handle_send_failed(h.now, *token);
    h.pump();
    let finals: Vec<u16> = h
        .take()
        .iter()
        .filter(|(to, _, _)| *to == CALLER.parse::<SocketAddr>().unwrap())
        .filter_map(|(_, _, m)| m.status())
        .filter(|s| *s >= 200)
        .collect();
    // The branch counts as 503, which a proxy passes on as 500 (RFC 3261 §16.7 step 6).
    assert_eq!(finals, vec![500]);
}

#[test]
fn an_unparseable_request_is_answered_400_without_a_transaction() {
    let mut h = Harness::new();
    let bytes = Bytes::from_static(
        b"OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\n\
          a header line without a colon\r\n\r\n",
    );
    let error = Message::parse(bytes.clone()).unwrap_err();
    h.router.handle_invalid(&bytes, &error, flow(CALLER));
    h.pump();
    let sent = h.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.status(), Some(400));
    assert_eq!(sent[0].1, NO_TOKEN);
    assert_eq!(h.router.transactions(), 0);
}

use super::sim_node::{RouterNode, RouterSpec};

/// A phone that sends one REGISTER at `start_at` in a client transaction (so it is
/// retransmitted over the lossy network) and keeps the final status.
struct RegisteringPhone {
    addr: SocketAddr,
    user: String,
    start_at: Option<Instant>,
    txl: TransactionLayer,
    out: VecDeque<sim::Datagram>,
    status: Option<u16>,
}

impl RegisteringPhone {
    fn pump(&mut self) {
        while let Some(t) = self.txl.poll_transmit() {
            self.out.push_back(sim::Datagram {
                from: self.addr,
                to: t.flow.remote,
                bytes: t.bytes,
            });
        }
        while let Some(event) = self.txl.poll_event() {
            if let sip_core::transaction::Event::Response { response, .. } = event
                && let Some(code) = response.status()
                && code >= 200
            {
                self.status = Some(code);
            }
        }
    }
}

impl sim::Node for RegisteringPhone {
    fn receive(&mut self, at: Instant, d: sim::Datagram) {
        if let Ok(msg) = Message::parse(d.bytes) {
            let _ = self.txl.handle_message(at, msg, flow_from(d.from));
        }
        self.pump();
    }

    fn timeout(&mut self, at: Instant) {
        if self.start_at.is_some_and(|t| t <= at) {
            self.start_at = None;
            let (user, addr) = (&self.user, self.addr);
            let text = format!(
                "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK{user}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{user}@example.test>;tag={user}\r\n\
                 To: <sip:{user}@example.test>\r\nCall-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\n\
                 Contact: <sip:{user}@{addr}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
            );
            let msg = Message::parse(Bytes::from(text)).unwrap();
            self.txl
                .send_request(at, msg, flow_from(router_addr()))
                .unwrap();
        }
        self.txl.handle_timeout(at);
        self.pump();
    }

    fn poll_transmit(&mut self) -> Option<sim::Datagram> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.start_at, self.txl.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn router_addr() -> SocketAddr {
    "10.0.0.1:5060".parse().unwrap()
}

fn flow_from(remote: SocketAddr) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote,
        local: None,
        connection: None,
    }
}

#[test]
fn registers_over_a_lossy_network_are_all_stored_and_answered_200() {
    const PHONES: usize = 50;
    let mut net = sim::SimNet::new(13, sim::NetConfig::lossy(0.1));
    let start = net.now();
    let names: Vec<String> = (0..PHONES).map(|i| format!("u{i}")).collect();
    let router = net.add(
        router_addr(),
        RouterNode::new(&RouterSpec::new(router_addr(), &names), start),
    );
    let phones: Vec<_> = (0..PHONES)
        .map(|i| {
            let addr: SocketAddr = format!("192.0.2.{}:5060", 100 + i).parse().unwrap();
            net.add(
                addr,
                RegisteringPhone {
                    addr,
                    user: format!("u{i}"),
                    // Close together, so that batches gather several REGISTERs.
                    start_at: Some(start + Duration::from_micros(300 * i as u64)),
                    txl: TransactionLayer::new(TimerConfig::default()),
                    out: VecDeque::new(),
                    status: None,
                },
            )
        })
        .collect();
    // Past every retransmission and the 64·T1 lingering of the transactions.
    net.run_for(Duration::from_secs(60));
    let stats = net.stats();
    assert!(stats.lost > 0 && stats.duplicated > 0, "{stats:?}");
    for (i, p) in phones.iter().enumerate() {
        assert_eq!(net.node(*p).status, Some(200), "phone {i}");
    }
    let r = net.node(router);
    assert_eq!(r.router.bindings(), PHONES);
    assert_eq!(r.router.transactions(), 0, "transactions left");
    assert!(r.router.is_settled());
}
