//! The property test of issue 13: thousands of calls between simulated user agents
//! (`sip-ua`, as `switchboard phone` runs it) through the simulated proxy, on a SimNet
//! that loses, duplicates and reorders 10% of the datagrams each. Every call either
//! completes (answered, then its BYE answered) or ends with a final response, and once
//! the timers have run out every transaction, dialog and response context is gone.
//!
//! The server is the router as `serve` runs it (`router::sim_node::RouterNode`).
//! Callers authenticate (407, digest) as real phones do; callees are bound in the
//! location service as a registrar would have bound them. The number of calls is
//! `SIMNET_CALLS` (10,000 by default), started 4 ms apart so that a few hundred are up at
//! any moment. The proxy keeps call records: each call leaves exactly one, and those
//! answered and hung up by the caller bill the 2 s the caller talked.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::router::sim_node::{DOMAIN, RouterNode, RouterSpec, UNIX};
use sim::{Datagram, NetConfig, Node, NodeId, SimNet};
use sip_core::transaction::TimerConfig;
use sip_ua::{AnswerTask, CallTask, LocalAddrs, Output, Settings, Task};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

fn proxy_addr() -> SocketAddr {
    "10.0.0.1:5060".parse().unwrap()
}

fn udp(remote: SocketAddr) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote,
        local: None,
        connection: None,
    }
}

/// A `sip-ua` user agent on the simulated network, started at `start_at`.
struct PhoneNode {
    me: SocketAddr,
    start_at: Instant,
    started: bool,
    ua: sip_ua::UserAgent,
    /// The events it reported, by name and detail.
    events: Vec<(String, Option<String>)>,
}

impl PhoneNode {
    fn new(me: SocketAddr, start_at: Instant, user: &str, task: Task, seed: u64) -> PhoneNode {
        let settings = Settings {
            user: user.into(),
            password: Some("pw".into()),
            // No registrar here: requests go to the proxy named in the URI.
            server: None,
            domain: DOMAIN.into(),
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
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        PhoneNode {
            me,
            start_at,
            started: false,
            ua: sip_ua::UserAgent::new(local, settings, task, key),
            events: Vec::new(),
        }
    }

    fn settle(&mut self, now: Instant) {
        while self.ua.handle_events(now) {}
        if self.ua.needs_media_port() {
            // No media on this network: a port to write into the SDP.
            self.ua.set_media_port(Ok(40_000));
        }
        while let Some(out) = self.ua.poll_output() {
            if let Output::Event(e) = out {
                self.events.push((e.name.to_owned(), e.detail));
            }
        }
    }

    fn saw(&self, name: &str, detail: Option<&str>) -> bool {
        self.events
            .iter()
            .any(|(n, d)| n == name && detail.is_none_or(|x| d.as_deref() == Some(x)))
    }
}

impl Node for PhoneNode {
    fn receive(&mut self, now: Instant, d: Datagram) {
        if !self.started {
            return;
        }
        if let Ok(msg) = Message::parse(d.bytes) {
            self.ua.on_message(msg, udp(d.from), now);
        }
        self.settle(now);
    }

    fn timeout(&mut self, now: Instant) {
        if !self.started {
            self.started = true;
            self.ua.set_media_port(Ok(40_000));
            self.ua.start(now);
        } else {
            self.ua.on_timeout(now);
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
        if self.started {
            self.ua.poll_timeout()
        } else {
            Some(self.start_at)
        }
    }
}

fn addr(net: u8, i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, net, (i / 250) as u8, (i % 250 + 1) as u8);
    SocketAddr::new(IpAddr::V4(ip), 5060)
}

fn binding(user: &str, contact: SocketAddr) -> Binding {
    Binding {
        aor: format!("sip:{user}@{DOMAIN}"),
        contact: format!("sip:{user}@{contact}"),
        expires_at: UNIX + 86_400,
        q: None,
        call_id: format!("reg-{user}"),
        cseq: 1,
        transport: Transport::Udp,
        source: contact,
        path: vec![],
        instance_id: None,
        reg_id: None,
        user_agent: None,
        registered_at: UNIX,
    }
}

#[test]
fn calls_through_a_lossy_network_complete_or_fail_and_leave_nothing_behind() {
    let calls: usize = std::env::var("SIMNET_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut net = SimNet::new(2026, NetConfig::lossy(0.1));
    let start = net.now();

    // A handful of user names (hashing passwords is the slow part); each call has its
    // own caller and callee addresses.
    let names = 50;
    let mut spec = RouterSpec::new(proxy_addr(), &[]);
    spec.proxy_auth = true;
    spec.timers = TimerConfig {
        timer_c: Some(Duration::from_secs(180)),
        ..TimerConfig::default()
    };
    for i in 0..names {
        for role in ["caller", "callee"] {
            spec.users.push(format!("{role}{i}"));
        }
    }
    let mut pairs: Vec<(NodeId<PhoneNode>, NodeId<PhoneNode>)> = Vec::with_capacity(calls);
    for i in 0..calls {
        let at = start + Duration::from_millis(4 * i as u64);
        // Each callee takes one call on a contact of its own: bound as `calleeN-i`.
        let callee_user = format!("callee{}", i % names);
        let contact_user = format!("{callee_user}-{i}");
        spec.bindings.push(binding(&contact_user, addr(2, i)));
        let callee = net.add(
            addr(2, i),
            PhoneNode::new(
                addr(2, i),
                at,
                &callee_user,
                Task::Answer(AnswerTask {
                    auto: true,
                    play: None,
                    record: None,
                    reject: None,
                    hangup_after: None,
                    calls: Some(1),
                }),
                i as u64 * 2 + 1,
            ),
        );
        let caller = net.add(
            addr(1, i),
            PhoneNode::new(
                addr(1, i),
                at + Duration::from_millis(1),
                &format!("caller{}", i % names),
                Task::Call(CallTask {
                    target: format!("sip:{contact_user}@{}", proxy_addr()),
                    play: None,
                    record: None,
                    dtmf: None,
                    dtmf_after: 0.0,
                    hold_after: None,
                    resume_after: None,
                    hold_with_update: false,
                    hangup_after: Some(2.0),
                    hold_inactive: false,
                    change_codec: None,
                    answer_timeout: 60.0,
                }),
                i as u64 * 2 + 2,
            ),
        );
        pairs.push((caller, callee));
    }
    let records: std::sync::Arc<std::sync::Mutex<Vec<cdr::CallRecord>>> = Default::default();
    let mut node = RouterNode::new(&spec, start);
    node.router.proxy_mut().set_call_records(CallTracker::new(
        CallTrackerSettings {
            max_calls: calls,
            // Calls whose BYE never came are closed within the run, and counted.
            max_call: Duration::from_secs(100),
        },
        WallClock::new(start, UNIX * 1000),
        Box::new(records.clone()),
    ));
    let proxy = net.add(proxy_addr(), node);

    // Every call has long ended, and every timer (Timer C, 64·T1 lingering, the 2xx
    // retransmissions) has run out.
    let last_start = Duration::from_millis(4 * calls as u64);
    net.run_for(last_start + Duration::from_secs(240));

    let stats = net.stats();
    assert!(
        stats.lost > 0 && stats.duplicated > 0 && stats.reordered > 0,
        "{stats:?}"
    );
    let (mut completed, mut failed) = (0, 0);
    for (i, (caller, callee)) in pairs.iter().enumerate() {
        let c = net.node(*caller);
        let ended = c.saw("ended", None);
        let finished = c.ua.finished();
        let answered = c.saw("answered", None);
        if answered && c.saw("ended", Some("bye (local)")) {
            completed += 1;
        } else {
            assert!(
                ended && !answered && finished.is_some(),
                "call {i} neither completed nor failed with a final response: {:?}",
                c.events
            );
            failed += 1;
        }
        assert!(c.ua.is_idle(), "call {i}: the caller still holds state");
        let callee_idle = net.node(*callee).ua.is_idle();
        assert!(callee_idle, "call {i}: the callee still holds state");
    }
    let p = net.node(proxy);
    assert_eq!(p.router.transactions(), 0, "proxy transactions left");
    assert_eq!(p.router.proxy_contexts(), 0, "proxy contexts left");
    // One record per call, none left open.
    let records = records.lock().unwrap();
    assert_eq!(records.len(), calls, "one record per call");
    let mut ids: Vec<&str> = records.iter().map(|r| r.call_ids[0].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), calls, "no call recorded twice");
    let call_stats = p.router.call_stats().unwrap();
    assert_eq!(call_stats.in_progress, 0, "calls still followed");
    let by_caller = records
        .iter()
        .filter(|r| {
            r.disposition == cdr::Disposition::Answered && r.hangup_by == cdr::HangupBy::Caller
        })
        .inspect(|r| {
            let talked = r.end_ms - r.answer_ms.unwrap_or(r.end_ms);
            // 2 s after the caller saw the 200, which the proxy relayed earlier: a
            // hop before, or retransmissions (up to 64·T1) before when it was lost.
            assert!(
                (1_900..=40_000).contains(&talked),
                "talked {talked} ms: {r:?}"
            );
        })
        .count();
    assert!(
        by_caller * 100 >= calls * 99,
        "only {by_caller} of {calls} recorded as answered and hung up by the caller"
    );
    eprintln!(
        "{calls} calls: {completed} completed, {failed} failed with a final response; network {stats:?}, {:?} virtual",
        net.elapsed()
    );
    // 10% faults each way are survived by retransmission nearly always.
    assert!(
        completed * 100 >= calls * 99,
        "only {completed} of {calls} completed"
    );
}

/// Issue 14: the same through the B2BUA. A dial plan rule with `pbx = true` gives every
/// call to the B2BUA, which answers the caller as a UAS and places its own INVITE to
/// the callee, relaying the SDP; the caller hangs up after 2 s and the B2BUA carries
/// the BYE across. Every call completes or fails with a final response, and once the
/// timers have run out the B2BUA holds no call, leg, transaction or dialog, and the
/// router's transaction layer nothing either. `SIMNET_B2BUA_CALLS` calls (10,000 by
/// default).
#[test]
fn b2bua_calls_through_a_lossy_network_complete_or_fail_and_leave_nothing_behind() {
    let calls: usize = std::env::var("SIMNET_B2BUA_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut net = SimNet::new(2027, NetConfig::lossy(0.1));
    let start = net.now();
    let names = 50;
    let mut spec = RouterSpec::new(proxy_addr(), &[]);
    spec.proxy_auth = true;
    spec.timers = TimerConfig {
        timer_c: Some(Duration::from_secs(180)),
        ..TimerConfig::default()
    };
    spec.pbx = Some(
        pbx::Plan::parse(
            "[[rule]]\nname = \"pbx\"\nprefix = \"b\"\naction = \"extension\"\npbx = true\n",
            "plan.toml",
        )
        .unwrap(),
    );
    for i in 0..names {
        spec.users.push(format!("caller{i}"));
    }
    let mut pairs: Vec<(NodeId<PhoneNode>, NodeId<PhoneNode>)> = Vec::with_capacity(calls);
    for i in 0..calls {
        let at = start + Duration::from_millis(4 * i as u64);
        // Each callee is a user of its own (the B2BUA rings users), bound once.
        let callee_user = format!("bcallee{i}");
        spec.users.push(callee_user.clone());
        spec.bindings.push(binding(&callee_user, addr(2, i)));
        let callee = net.add(
            addr(2, i),
            PhoneNode::new(
                addr(2, i),
                at,
                &callee_user,
                Task::Answer(AnswerTask {
                    auto: true,
                    play: None,
                    record: None,
                    reject: None,
                    hangup_after: None,
                    calls: Some(1),
                }),
                i as u64 * 2 + 1,
            ),
        );
        let caller = net.add(
            addr(1, i),
            PhoneNode::new(
                addr(1, i),
                at + Duration::from_millis(1),
                &format!("caller{}", i % names),
                Task::Call(CallTask {
                    target: format!("sip:{callee_user}@{}", proxy_addr()),
                    play: None,
                    record: None,
                    dtmf: None,
                    dtmf_after: 0.0,
                    hold_after: None,
                    resume_after: None,
                    hold_with_update: false,
                    hangup_after: Some(2.0),
                    hold_inactive: false,
                    change_codec: None,
                    answer_timeout: 60.0,
                }),
                i as u64 * 2 + 2,
            ),
        );
        pairs.push((caller, callee));
    }
    let proxy = net.add(proxy_addr(), RouterNode::new(&spec, start));

    let last_start = Duration::from_millis(4 * calls as u64);
    net.run_for(last_start + Duration::from_secs(240));

    let stats = net.stats();
    let (mut completed, mut failed) = (0, 0);
    for (i, (caller, callee)) in pairs.iter().enumerate() {
        let c = net.node(*caller);
        let answered = c.saw("answered", None);
        if answered && c.saw("ended", Some("bye (local)")) {
            completed += 1;
        } else {
            assert!(
                c.saw("ended", None) && !answered && c.ua.finished().is_some(),
                "call {i} neither completed nor failed with a final response: {:?}",
                c.events
            );
            failed += 1;
        }
        assert!(c.ua.is_idle(), "call {i}: the caller still holds state");
        let b = net.node(*callee);
        if answered {
            assert!(
                b.saw("answered", None) && b.saw("ended", None),
                "call {i}: the callee did not take part: {:?}",
                b.events
            );
        }
        assert!(b.ua.is_idle(), "call {i}: the callee still holds state");
    }
    let p = net.node(proxy);
    assert_eq!(p.router.transactions(), 0, "router transactions left");
    assert_eq!(p.router.proxy_contexts(), 0, "proxy contexts left");
    let b2bua = p.router.b2bua().unwrap();
    assert_eq!(b2bua.calls(), 0, "B2BUA calls left");
    assert!(b2bua.is_idle(), "the B2BUA still holds state");
    eprintln!(
        "{calls} B2BUA calls: {completed} completed, {failed} failed with a final response; network {stats:?}, {:?} virtual",
        net.elapsed()
    );
    assert!(
        completed * 100 >= calls * 99,
        "only {completed} of {calls} completed"
    );
}

/// Issue 14: simultaneous ring groups through the B2BUA on the same lossy network. Each
/// call rings a group of three phones: one answers at once, the other two ring until
/// the B2BUA cancels them. Every call completes, both losers see their call cancelled,
/// and nothing is left anywhere once the timers have run out. `SIMNET_GROUP_CALLS`
/// calls (1,000 by default).
#[test]
fn b2bua_ring_groups_through_a_lossy_network_cancel_the_losers_and_leave_nothing() {
    let calls: usize = std::env::var("SIMNET_GROUP_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut net = SimNet::new(2028, NetConfig::lossy(0.1));
    let start = net.now();
    let mut spec = RouterSpec::new(proxy_addr(), &["caller".to_owned()]);
    spec.proxy_auth = true;
    let mut plan = String::new();
    let mut groups = String::new();
    for i in 0..calls {
        plan.push_str(&format!(
            "[[rule]]\nexact = \"grp{i}\"\naction = \"ring_group\"\ngroup = \"g{i}\"\n"
        ));
        groups.push_str(&format!(
            "[ring_group.g{i}]\nstrategy = \"simultaneous\"\nmembers = [\"m{i}a\", \"m{i}b\", \"m{i}c\"]\nring_seconds = 20\n"
        ));
    }
    plan.push_str(&groups);
    spec.pbx = Some(pbx::Plan::parse(&plan, "plan.toml").unwrap());
    let mut phones: Vec<(NodeId<PhoneNode>, [NodeId<PhoneNode>; 3])> = Vec::new();
    for i in 0..calls {
        let at = start + Duration::from_millis(20 * i as u64);
        let mut members = Vec::new();
        for (j, m) in ["a", "b", "c"].iter().enumerate() {
            let user = format!("m{i}{m}");
            let me = addr(2 + j as u8, i);
            spec.users.push(user.clone());
            spec.bindings.push(binding(&user, me));
            members.push(net.add(
                me,
                PhoneNode::new(
                    me,
                    at,
                    &user,
                    Task::Answer(AnswerTask {
                        // Only the first member picks up.
                        auto: j == 0,
                        play: None,
                        record: None,
                        reject: None,
                        hangup_after: None,
                        calls: Some(1),
                    }),
                    (i * 4 + j) as u64 + 1,
                ),
            ));
        }
        let caller = net.add(
            addr(1, i),
            PhoneNode::new(
                addr(1, i),
                at + Duration::from_millis(1),
                "caller",
                Task::Call(CallTask {
                    target: format!("sip:grp{i}@{}", proxy_addr()),
                    play: None,
                    record: None,
                    dtmf: None,
                    dtmf_after: 0.0,
                    hold_after: None,
                    resume_after: None,
                    hold_with_update: false,
                    hangup_after: Some(2.0),
                    hold_inactive: false,
                    change_codec: None,
                    answer_timeout: 60.0,
                }),
                (i * 4 + 3) as u64 + 1,
            ),
        );
        phones.push((caller, [members[0], members[1], members[2]]));
    }
    let proxy = net.add(proxy_addr(), RouterNode::new(&spec, start));
    net.run_for(Duration::from_millis(20 * calls as u64) + Duration::from_secs(240));

    let mut completed = 0;
    for (i, (caller, members)) in phones.iter().enumerate() {
        let c = net.node(*caller);
        if c.saw("answered", None) && c.saw("ended", Some("bye (local)")) {
            completed += 1;
        }
        assert!(c.ua.is_idle(), "call {i}: the caller still holds state");
        for (j, m) in members.iter().enumerate() {
            let p = net.node(*m);
            assert!(p.ua.is_idle(), "call {i}: member {j} still holds state");
            if j > 0 && p.saw("incoming", None) {
                assert!(
                    p.saw("ended", Some("cancelled (by the caller)")),
                    "call {i}: member {j} was not cancelled: {:?}",
                    p.events
                );
            }
        }
    }
    let p = net.node(proxy);
    assert_eq!(p.router.transactions(), 0, "router transactions left");
    let b2bua = p.router.b2bua().unwrap();
    assert!(b2bua.is_idle(), "the B2BUA still holds state");
    eprintln!("{calls} ring group calls: {completed} completed");
    assert!(
        completed * 100 >= calls * 99,
        "only {completed} of {calls} completed"
    );
}
