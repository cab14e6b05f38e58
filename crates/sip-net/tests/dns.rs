//! RFC 3263 against a real DNS server on loopback: an in-process `hickory-server`
//! serving an in-memory zone with NAPTR, SRV and A records on a port chosen by the OS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, NAPTR, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use sip_core::{Message, Transport};
use sip_net::{Endpoint, EndpointConfig, Incoming, SipResolver, Target};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn naptr(order: u16, service: &str, replacement: &str) -> RData {
    RData::NAPTR(NAPTR::new(
        order,
        10,
        b"s".to_vec().into_boxed_slice(),
        service.as_bytes().to_vec().into_boxed_slice(),
        Vec::new().into_boxed_slice(),
        name(replacement),
    ))
}

fn srv(priority: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(priority, 0, port, name(target)))
}

/// Serves `example.test.`:
/// - NAPTR: an ENUM record to skip, SIP+D2T (order 10), SIP+D2U (order 20), SIPS+D2T (30)
/// - `_sip._tcp`: a.example.test:`tcp1` (priority 10), b.example.test:`tcp2` (priority 20)
/// - `_sip._udp`: c.example.test:5999; `_sips._tcp`: b.example.test:`tls`
/// - a, b, c: 127.0.0.1
async fn dns_server(tcp1: u16, tcp2: u16, tls: u16) -> (Server<Catalog>, SocketAddr) {
    let origin = name("example.test.");
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let records = [
        (
            "example.test.",
            RData::SOA(SOA::new(
                name("ns.example.test."),
                name("admin.example.test."),
                1,
                3600,
                600,
                86400,
                60,
            )),
        ),
        (
            "example.test.",
            naptr(1, "E2U+sip", "ignored.example.test."),
        ),
        (
            "example.test.",
            naptr(10, "SIP+D2T", "_sip._tcp.example.test."),
        ),
        (
            "example.test.",
            naptr(20, "SIP+D2U", "_sip._udp.example.test."),
        ),
        (
            "example.test.",
            naptr(30, "SIPS+D2T", "_sips._tcp.example.test."),
        ),
        ("_sip._tcp.example.test.", srv(20, tcp2, "b.example.test.")),
        ("_sip._tcp.example.test.", srv(10, tcp1, "a.example.test.")),
        ("_sip._udp.example.test.", srv(10, 5999, "c.example.test.")),
        ("_sips._tcp.example.test.", srv(10, tls, "b.example.test.")),
        ("a.example.test.", RData::A(A(Ipv4Addr::LOCALHOST))),
        ("b.example.test.", RData::A(A(Ipv4Addr::LOCALHOST))),
        ("c.example.test.", RData::A(A(Ipv4Addr::LOCALHOST))),
    ];
    for (owner, data) in records {
        assert!(zone.upsert_mut(Record::from_rdata(name(owner), 60, data), 1));
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    let mut server = Server::new(catalog);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    server.register_socket(socket);
    (server, addr)
}

/// A port on which nothing listens: connecting is refused at once.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

fn summary(targets: &[sip_net::ResolvedTarget]) -> Vec<(Transport, u16, String)> {
    targets
        .iter()
        .map(|t| (t.transport, t.addr.port(), t.host.clone()))
        .collect()
}

#[tokio::test]
async fn naptr_then_srv_then_a_in_order() {
    let (_server, dns) = dns_server(7001, 7002, 7003).await;
    let resolver = SipResolver::with_nameservers(&[dns], Duration::from_secs(2)).unwrap();

    let got = timeout(WAIT, resolver.locate("sip:alice@example.test"))
        .await
        .unwrap()
        .unwrap();
    assert!(got.iter().all(|t| t.addr.ip() == Ipv4Addr::LOCALHOST));
    assert_eq!(
        summary(&got),
        vec![
            (Transport::Tcp, 7001, "a.example.test".into()),
            (Transport::Tcp, 7002, "b.example.test".into()),
            (Transport::Udp, 5999, "c.example.test".into()),
            (Transport::Tls, 7003, "b.example.test".into()),
        ]
    );

    // sips: only the SIPS NAPTR counts.
    let got = timeout(WAIT, resolver.locate("sips:alice@example.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        summary(&got),
        vec![(Transport::Tls, 7003, "b.example.test".into())]
    );

    // transport= skips NAPTR and goes to SRV.
    let got = timeout(WAIT, resolver.locate("sip:example.test;transport=udp"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        summary(&got),
        vec![(Transport::Udp, 5999, "c.example.test".into())]
    );

    // An explicit port skips NAPTR and SRV: A records, UDP.
    let got = timeout(WAIT, resolver.locate("sip:a.example.test:7777"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        summary(&got),
        vec![(Transport::Udp, 7777, "a.example.test".into())]
    );

    // A name with nothing behind it.
    let err = timeout(WAIT, resolver.locate("sip:nothing.example.test"))
        .await
        .unwrap()
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("no SIP server found for \"nothing.example.test\""),
        "{err}"
    );
}

#[tokio::test]
async fn failover_to_the_second_srv_target_when_the_first_refuses() {
    let (b, mut brx) = Endpoint::bind(EndpointConfig::new(["tcp:127.0.0.1:0".parse().unwrap()]))
        .await
        .unwrap();
    let live = b.local_addr(Transport::Tcp).unwrap().port();
    let dead = closed_port().await;
    let (_server, dns) = dns_server(dead, live, 7003).await;

    let config = EndpointConfig {
        resolver: Some(SipResolver::with_nameservers(&[dns], Duration::from_secs(2)).unwrap()),
        ..EndpointConfig::default()
    };
    let (a, _arx) = Endpoint::bind(config).await.unwrap();

    let req = "OPTIONS sip:alice@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKdns\r\n\
               From: <sip:x@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: dns1\r\n\
               CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let flow = timeout(
        WAIT,
        a.send(Target::Uri("sip:alice@example.test".into()), req.into()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((flow.transport, flow.remote.port()), (Transport::Tcp, live));
    assert_eq!(a.counters().connections_opened(), 1);

    let got = timeout(WAIT, brx.recv()).await.unwrap();
    let Some(Incoming::Message { msg, .. }) = got else {
        panic!("expected a message, got {got:?}")
    };
    assert_eq!(Message::call_id(&msg).unwrap(), "dns1");
}
