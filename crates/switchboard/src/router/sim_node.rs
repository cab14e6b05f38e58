//! The router as `serve` runs it, as a node on SimNet: one node for every test that
//! puts the server on the simulated network (the router's own, the proxy's, the
//! 10,000-call property test). Before the router sits what sip-net's endpoint does (the
//! Via stamp), beside it a writer thread that reports each storage batch stored
//! `WRITE_TIME` later.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::config::RegistrarConfig;
use crate::myself::Myself;
use crate::proxy::{Interface, ProxySettings};
use crate::registrar::RegistrarSettings;
use sip_core::Transport;
use std::net::{IpAddr, SocketAddr};
use store::{Binding, Change, MemoryLocationStore, MemoryUserStore};

/// The wall clock at the start of every simulated run (Unix seconds).
pub(crate) const UNIX: u64 = 1_800_000_000;
/// The domain every simulated server serves.
pub(crate) const DOMAIN: &str = "example.test";
/// How long the simulated writer thread takes to store a batch.
pub(crate) const WRITE_TIME: Duration = Duration::from_millis(2);

/// What the simulated server is made of.
pub(crate) struct RouterSpec {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// Its users, each with the password "pw".
    pub users: Vec<String>,
    /// Bindings in the location service from the start (as a registrar had made them).
    pub bindings: Vec<Binding>,
    /// Whether the proxy challenges callers (407).
    pub proxy_auth: bool,
    /// The transaction layer's timers.
    pub timers: TimerConfig,
    /// A dial plan, and with it a B2BUA for the calls it gives the PBX.
    pub pbx: Option<pbx::Plan>,
}

impl RouterSpec {
    /// A server at `addr` with `users`, nobody bound, no proxy authentication.
    pub fn new(addr: SocketAddr, users: &[String]) -> RouterSpec {
        RouterSpec {
            addr,
            users: users.to_vec(),
            bindings: Vec::new(),
            proxy_auth: false,
            timers: TimerConfig::default(),
            pbx: None,
        }
    }

    /// The router, committing in the background (the node plays the writer thread).
    pub fn build(&self, unix: u64, instant: Instant) -> Router {
        let listeners = [(Transport::Udp, self.addr)];
        let host: [IpAddr; 1] = [self.addr.ip()];
        let myself = Myself::new(DOMAIN, &[], &listeners, &host);
        let settings = RegistrarSettings {
            domain: DOMAIN.into(),
            rules: RegistrarConfig {
                require_auth: false,
                ..RegistrarConfig::default()
            },
            ..RegistrarSettings::default()
        };
        let mut location = MemoryLocationStore::default();
        let changes: Vec<Change> = self.bindings.iter().cloned().map(Change::Upsert).collect();
        location.apply(&changes).unwrap();
        let location: Box<dyn LocationStore> = Box::new(location);
        let mut users = MemoryUserStore::default();
        for name in &self.users {
            users
                .add(&store::User::new(name, DOMAIN, "pw", unix).unwrap())
                .unwrap();
        }
        let users: Box<dyn UserStore> = Box::new(users);
        let mut registrar = Registrar::new(settings, location, users, &[3u8; 32], unix)
            .unwrap()
            .with_myself(myself.clone());
        // As `serve` does: the store's backend goes to the writer thread (here: the
        // node, which reports each batch stored).
        assert!(registrar.detach_location_backend().is_some());
        let proxy = Proxy::new(
            ProxySettings {
                myself,
                server_name: "Switchboard/sim".into(),
                require_auth: self.proxy_auth,
                trusted: vec![],
                forward_foreign: false,
                max_recursions: 2,
            },
            vec![Interface::new(Transport::Udp, self.addr, DOMAIN)],
            IdGenerator::new(&[9u8; 16]).unwrap(),
        );
        let router = Router::new(
            Now {
                instant,
                unix_secs: unix,
            },
            self.timers,
            registrar,
            proxy,
            "Switchboard/sim".into(),
            IdGenerator::new(&[5u8; 16]).unwrap(),
            Commits::Background,
        );
        match &self.pbx {
            None => router,
            Some(plan) => {
                let mut router = router;
                router
                    .proxy
                    .set_dial_plan(crate::dial_plan::DialPlan::new(plan.clone()));
                let settings = crate::b2bua::B2buaSettings {
                    ring_timeout: Duration::from_secs(30),
                    relay: sip_ua::relay::RelaySettings {
                        local: sip_ua::LocalAddrs {
                            udp: Some(self.addr),
                            tcp: None,
                        },
                        contact_user: "pbx".into(),
                        user_agent: "Switchboard/sim".into(),
                        session_expires: Some(1800),
                        timers: self.timers,
                    },
                };
                router.with_b2bua(crate::b2bua::B2bua::new(settings, [11u8; 32]))
            }
        }
    }
}

/// The router as `serve` runs it, on a simulated network.
pub(crate) struct RouterNode {
    addr: SocketAddr,
    start: Instant,
    /// The router (public to tests, to read its tables).
    pub router: Router,
    /// The batch out at the writer, and when it is reported stored.
    writing: Option<(Instant, u64)>,
    out: VecDeque<sim::Datagram>,
}

impl RouterNode {
    /// The server `spec` describes, its clock starting at `start` (Unix [`UNIX`]).
    pub fn new(spec: &RouterSpec, start: Instant) -> RouterNode {
        RouterNode {
            addr: spec.addr,
            start,
            router: spec.build(UNIX, start),
            writing: None,
            out: VecDeque::new(),
        }
    }

    fn now(&self, at: Instant) -> Now {
        Now {
            instant: at,
            unix_secs: UNIX + at.duration_since(self.start).as_secs(),
        }
    }

    /// One turn's outputs, as the driver handles them.
    fn turn(&mut self, now: Now) {
        loop {
            let mut busy = false;
            while let Some(t) = self.router.poll_transmit() {
                busy = true;
                self.out.push_back(sim::Datagram {
                    from: self.addr,
                    to: t.flow.remote,
                    bytes: t.bytes,
                });
            }
            if let Some(batch) = self.router.poll_batch() {
                busy = true;
                assert!(self.writing.is_none(), "one batch out at a time");
                self.writing = Some((now.instant + WRITE_TIME, batch.id));
            }
            if !self.router.process(now) && !busy {
                return;
            }
        }
    }
}

/// A UDP flow from `remote`.
pub(crate) fn udp_from(remote: SocketAddr) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote,
        local: None,
        connection: None,
    }
}

impl sim::Node for RouterNode {
    fn receive(&mut self, at: Instant, d: sim::Datagram) {
        let now = self.now(at);
        match Message::parse(d.bytes) {
            Ok(msg) => {
                let msg = if msg.is_request() {
                    match sip_core::stamp_via(&msg, d.from) {
                        Ok(stamped) => stamped.unwrap_or(msg),
                        Err(_) => return,
                    }
                } else {
                    msg
                };
                self.router.handle_message(now, msg, udp_from(d.from));
            }
            Err(e) => self
                .router
                .handle_invalid(&Bytes::new(), &e, udp_from(d.from)),
        }
        self.turn(now);
    }

    fn timeout(&mut self, at: Instant) {
        let now = self.now(at);
        if let Some((due, id)) = self.writing
            && due <= at
        {
            self.writing = None;
            self.router
                .handle_committed(now, store::Committed { id, result: Ok(()) });
        }
        if self.router.poll_timeout().is_some_and(|t| t <= at) {
            self.router.handle_timeout(now);
        }
        self.turn(now);
    }

    fn poll_transmit(&mut self) -> Option<sim::Datagram> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let router = self.router.poll_timeout();
        match (router, self.writing) {
            (Some(r), Some((w, _))) => Some(r.min(w)),
            (r, w) => r.or(w.map(|(w, _)| w)),
        }
    }
}
