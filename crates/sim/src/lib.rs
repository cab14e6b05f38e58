//! SimNet: a virtual clock and a seeded, misbehaving network for sans-IO machines.
//!
//! Every protocol machine in Switchboard (the transaction layer, the proxy, the user
//! agent) takes bytes and a `now` and hands back bytes to send and the instant it wants
//! to be woken. A [`Node`] wraps one such machine behind that shape; [`SimNet`] connects
//! nodes by address and moves their datagrams with the delays and faults of a real
//! network: latency with jitter, loss, duplication, reordering and an MTU beyond which
//! a datagram is lost. The clock is virtual: [`SimNet::step`] jumps straight to the next
//! delivery or timer, so a minute of SIP timers runs in microseconds, and the same seed
//! gives the same run, message for message.
//!
//! ```
//! use bytes::Bytes;
//! use sim::{Datagram, NetConfig, Node, SimNet};
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//!
//! /// Answers every datagram with "pong".
//! struct Echo { me: SocketAddr, out: Vec<Datagram>, heard: usize }
//! impl Node for Echo {
//!     fn receive(&mut self, _now: Instant, d: Datagram) {
//!         self.heard += 1;
//!         self.out.push(Datagram { from: self.me, to: d.from, bytes: Bytes::from_static(b"pong") });
//!     }
//!     fn timeout(&mut self, _now: Instant) {}
//!     fn poll_transmit(&mut self) -> Option<Datagram> { self.out.pop() }
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//! }
//!
//! let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
//! let mut net = SimNet::new(7, NetConfig::lan());
//! let pinger = net.add(a, Echo { me: a, out: Vec::new(), heard: 0 });
//! let ponger = net.add(b, Echo { me: b, out: Vec::new(), heard: 0 });
//! net.node(pinger).out.push(Datagram { from: a, to: b, bytes: Bytes::from_static(b"ping") });
//! net.run_for(Duration::from_millis(3)); // ping and pong bounce until then
//! assert!(net.node(ponger).heard > 0 && net.node(pinger).heard > 0);
//! ```

#![forbid(unsafe_code)]

use bytes::Bytes;
use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A datagram on the simulated wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's address (the node's own).
    pub from: SocketAddr,
    /// Where it goes.
    pub to: SocketAddr,
    /// The payload.
    pub bytes: Bytes,
}

/// A sans-IO machine on the simulated network. The network calls `receive` and
/// `timeout`, then drains `poll_transmit` until it returns `None`, then asks
/// `poll_timeout` when to wake it next. Whatever a test does to a node directly (start
/// a call, send a request) is picked up at the next drain: call [`SimNet::poke`].
pub trait Node {
    /// A datagram addressed to this node arrived at `now`.
    fn receive(&mut self, now: Instant, datagram: Datagram);
    /// `now` is at or past what [`Node::poll_timeout`] asked for.
    fn timeout(&mut self, now: Instant);
    /// The next datagram to put on the wire, if any.
    fn poll_transmit(&mut self) -> Option<Datagram>;
    /// When the node wants [`Node::timeout`], if ever.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// How the network misbehaves. Probabilities are per datagram, in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetConfig {
    /// The least one-way delay.
    pub latency: Duration,
    /// Up to this much more, uniformly.
    pub jitter: Duration,
    /// Lost on the way.
    pub loss: f64,
    /// Delivered twice (the copy with a delay of its own).
    pub duplicate: f64,
    /// Held back by up to `reorder_delay` more, so later datagrams overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back at most.
    pub reorder_delay: Duration,
    /// Datagrams larger than this are lost (a fragment dropped on the way).
    pub mtu: usize,
}

impl NetConfig {
    /// A quiet local network: 1 ms, no faults, 1500-byte MTU.
    pub fn lan() -> NetConfig {
        NetConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            mtu: 1500,
        }
    }

    /// A bad one: 10-60 ms, and `fault` of loss, duplication and reordering each.
    pub fn lossy(fault: f64) -> NetConfig {
        NetConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(50),
            loss: fault,
            duplicate: fault,
            reorder: fault,
            reorder_delay: Duration::from_millis(200),
            mtu: 1500,
        }
    }
}

/// What the network did, for assertions and for the reader of a failing test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams the nodes sent.
    pub sent: u64,
    /// Delivered to a node (duplicates counted).
    pub delivered: u64,
    /// Lost at random.
    pub lost: u64,
    /// Lost for being larger than the MTU.
    pub too_big: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Held back to be overtaken.
    pub reordered: u64,
    /// Addressed to nobody on the network.
    pub undeliverable: u64,
}

/// A typed handle to a node added to a [`SimNet`].
#[derive(Debug)]
pub struct NodeId<N> {
    index: usize,
    kind: PhantomData<fn() -> N>,
}

impl<N> Clone for NodeId<N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<N> Copy for NodeId<N> {}

/// A node stored type-erased, so one network holds proxies and phones alike.
trait AnyNode: Node {
    fn as_any(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}
impl<N: Node + 'static> AnyNode for N {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// SplitMix64: small, fast and good enough to draw faults from; seeded, so a failing
/// run can be replayed exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
    /// Uniform in `[0, max]`.
    pub fn duration(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(self.next_u64() % (nanos + 1))
    }
}

/// The simulated network: nodes by address, datagrams in flight, the virtual clock.
pub struct SimNet {
    now: Instant,
    start: Instant,
    rng: Rng,
    config: NetConfig,
    /// `None` once removed.
    nodes: Vec<Option<Box<dyn AnyNode>>>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Each node's wake-up as last asked, and a heap of them (entries that no longer
    /// match `deadlines` are stale and skipped): finding the next timer costs a log, not
    /// a scan of every node, so a network of thousands of phones runs fast.
    deadlines: Vec<Option<Instant>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Nodes handed out by `node()`: their transmits and timers are looked at again
    /// before the next step.
    dirty: Vec<usize>,
    /// Deliveries by (instant, sequence): the sequence keeps equal instants in order.
    in_flight: BinaryHeap<Reverse<(Instant, u64)>>,
    datagrams: HashMap<u64, Datagram>,
    next_seq: u64,
    stats: NetStats,
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNet")
            .field("elapsed", &self.elapsed())
            .field("nodes", &self.nodes.len())
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl SimNet {
    /// An empty network whose faults are drawn from `seed`.
    pub fn new(seed: u64, config: NetConfig) -> SimNet {
        let start = Instant::now();
        SimNet {
            now: start,
            start,
            rng: Rng::new(seed),
            config,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            deadlines: Vec::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            in_flight: BinaryHeap::new(),
            datagrams: HashMap::new(),
            next_seq: 0,
            stats: NetStats::default(),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the network was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Changes the faults from now on (datagrams in flight keep their fate).
    pub fn set_config(&mut self, config: NetConfig) {
        self.config = config;
    }

    /// The network's random source, for nodes that need randomness of their own (tags,
    /// branches): one seed for the whole run.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Connects `node` at `addr` (one address per node; a second node at the same
    /// address replaces the first as the receiver).
    pub fn add<N: Node + 'static>(&mut self, addr: SocketAddr, node: N) -> NodeId<N> {
        let index = self.nodes.len();
        self.nodes.push(Some(Box::new(node)));
        self.deadlines.push(None);
        self.by_addr.insert(addr, index);
        self.dirty.push(index);
        NodeId {
            index,
            kind: PhantomData,
        }
    }

    /// Takes a node off the network (datagrams to its address are then undeliverable)
    /// and gives it back, for a last look.
    pub fn remove<N: Node + 'static>(&mut self, id: NodeId<N>) -> Option<N> {
        let node = self.nodes.get_mut(id.index)?.take()?;
        self.deadlines[id.index] = None;
        self.by_addr.retain(|_, i| *i != id.index);
        let any: Box<dyn Any> = node.into_any();
        any.downcast::<N>().ok().map(|b| *b)
    }

    /// The node behind `id`, to command or inspect it. What it wants to send or when it
    /// wants waking is looked at again before the next step.
    ///
    /// # Panics
    /// If the node was removed.
    pub fn node<N: Node + 'static>(&mut self, id: NodeId<N>) -> &mut N {
        self.dirty.push(id.index);
        let Some(Some(node)) = self.nodes.get_mut(id.index) else {
            panic!("node {} was removed", id.index);
        };
        match node.as_any().downcast_mut::<N>() {
            Some(n) => n,
            // A NodeId<N> is only made by `add::<N>` for that index.
            None => unreachable!("node {} is not of the handle's type", id.index),
        }
    }

    /// Drains every node's transmits onto the wire and looks at their timers again.
    pub fn poke(&mut self) {
        for index in 0..self.nodes.len() {
            self.drain(index);
        }
        self.dirty.clear();
    }

    fn settle_dirty(&mut self) {
        while let Some(index) = self.dirty.pop() {
            self.drain(index);
        }
    }

    /// Runs the next thing due (a delivery or a node's timer), and moves the clock to
    /// it. `false` when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.settle_dirty();
        let next_delivery = self.in_flight.peek().map(|Reverse((t, _))| *t);
        let next_timer = self.next_timer();
        match (next_delivery, next_timer) {
            (None, None) => false,
            (Some(d), timer) if timer.is_none_or(|(t, _)| d <= t) => {
                let Some(Reverse((at, seq))) = self.in_flight.pop() else {
                    return false;
                };
                self.now = self.now.max(at);
                if let Some(d) = self.datagrams.remove(&seq) {
                    self.deliver(d);
                }
                true
            }
            (_, Some((t, index))) => {
                self.timers.pop();
                self.deadlines[index] = None;
                self.now = self.now.max(t);
                if let Some(Some(node)) = self.nodes.get_mut(index) {
                    node.timeout(self.now);
                }
                self.drain(index);
                true
            }
            (Some(_), None) => unreachable!("covered by the delivery arm"),
        }
    }

    /// The earliest live timer (stale heap entries dropped on the way).
    fn next_timer(&mut self) -> Option<(Instant, usize)> {
        while let Some(&Reverse((t, index))) = self.timers.peek() {
            if self.deadlines.get(index).copied().flatten() == Some(t) {
                return Some((t, index));
            }
            self.timers.pop();
        }
        None
    }

    /// Runs everything due up to `deadline`, then sets the clock to it.
    pub fn run_until(&mut self, deadline: Instant) {
        loop {
            self.settle_dirty();
            match self.next_event() {
                Some(t) if t <= deadline => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(deadline);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline);
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time has
    /// passed; whether `done` held.
    pub fn run_while_not(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut SimNet) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            self.settle_dirty();
            match self.next_event() {
                Some(t) if t <= deadline => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
        }
    }

    fn next_event(&mut self) -> Option<Instant> {
        let delivery = self.in_flight.peek().map(|Reverse((t, _))| *t);
        let timer = self.next_timer().map(|(t, _)| t);
        match (delivery, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn deliver(&mut self, d: Datagram) {
        let Some(&index) = self.by_addr.get(&d.to) else {
            self.stats.undeliverable += 1;
            return;
        };
        let Some(Some(node)) = self.nodes.get_mut(index) else {
            self.stats.undeliverable += 1;
            return;
        };
        self.stats.delivered += 1;
        node.receive(self.now, d);
        self.drain(index);
    }

    /// Puts what node `index` wants to send on the wire and files its next wake-up.
    fn drain(&mut self, index: usize) {
        loop {
            let Some(Some(node)) = self.nodes.get_mut(index) else {
                return;
            };
            match node.poll_transmit() {
                Some(d) => self.transmit(d),
                None => break,
            }
        }
        let wake = self
            .nodes
            .get(index)
            .and_then(|n| n.as_ref())
            .and_then(|n| n.poll_timeout());
        if wake != self.deadlines[index] {
            self.deadlines[index] = wake;
            if let Some(t) = wake {
                self.timers.push(Reverse((t, index)));
            }
        }
    }

    /// Puts a datagram on the wire, deciding its fate.
    fn transmit(&mut self, d: Datagram) {
        self.stats.sent += 1;
        if d.bytes.len() > self.config.mtu {
            self.stats.too_big += 1;
            return;
        }
        if self.rng.chance(self.config.loss) {
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            let delay = self.delay();
            self.schedule(delay, d.clone());
        }
        let delay = self.delay();
        self.schedule(delay, d);
    }

    fn delay(&mut self) -> Duration {
        let mut delay = self.config.latency + self.rng.duration(self.config.jitter);
        if self.rng.chance(self.config.reorder) {
            self.stats.reordered += 1;
            delay += self.rng.duration(self.config.reorder_delay);
        }
        delay
    }

    fn schedule(&mut self, delay: Duration, d: Datagram) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.datagrams.insert(seq, d);
        self.in_flight.push(Reverse((self.now + delay, seq)));
    }
}
