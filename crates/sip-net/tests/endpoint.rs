//! The endpoint over real sockets on 127.0.0.1. Every wait is bounded by a timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sip_core::{ConnectionId, Message, Transport};
use sip_net::{
    BroadcastSink, Direction, Endpoint, EndpointConfig, Incoming, Limits, ListenSpec, Target,
    response_target, tls,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;

const WAIT: Duration = Duration::from_secs(5);

/// An OPTIONS request with the given top Via and a body of `body` bytes.
fn options(via: &str, call_id: &str, body: usize) -> String {
    format!(
        "OPTIONS sip:server@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:server@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
         Content-Length: {body}\r\n\r\n{}",
        "x".repeat(body)
    )
}

fn spec(s: &str) -> ListenSpec {
    s.parse().unwrap()
}

async fn bind(specs: &[&str]) -> (Endpoint, Receiver<Incoming>) {
    bind_with(EndpointConfig::new(specs.iter().map(|s| spec(s)))).await
}

async fn bind_with(config: EndpointConfig) -> (Endpoint, Receiver<Incoming>) {
    Endpoint::bind(config).await.unwrap()
}

async fn next(rx: &mut Receiver<Incoming>) -> (Message, sip_core::Flow) {
    match timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a message")
    {
        Some(Incoming::Message { msg, flow, .. }) => (msg, flow),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Waits until `cond` holds (counters are updated by other tasks).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads from a stream until `n` whole SIP messages (by Content-Length) have arrived.
async fn read_messages(s: &mut (impl AsyncReadExt + Unpin), n: usize) -> Vec<Message> {
    let mut framer = sip_core::StreamFramer::default();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        let k = timeout(WAIT, s.read(&mut buf))
            .await
            .expect("read timed out")
            .unwrap();
        assert!(k > 0, "connection closed after {} messages", out.len());
        framer.push(&buf[..k]);
        while let Some(f) = framer.next_frame().unwrap() {
            if let sip_core::Frame::Message(b) = f {
                out.push(Message::parse(b).unwrap());
            }
        }
    }
    out
}

fn ok_for(msg: &Message) -> Bytes {
    sip_core::response_to(msg, 200, Some("srv"))
        .into_bytes()
        .unwrap()
}

#[tokio::test]
async fn udp_request_delivered_and_response_sent_to_rport() {
    let (ep, mut rx) = bind(&["udp:127.0.0.1:0"]).await;
    let server = ep.local_addr(Transport::Udp).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client_addr = client.local_addr().unwrap();
    // The sent-by is a lie (a phone behind NAT): the response must follow rport.
    let req = options(
        "SIP/2.0/UDP 192.0.2.7:5099;rport;branch=z9hG4bKudp1",
        "udp1",
        0,
    );
    client.send_to(req.as_bytes(), server).await.unwrap();

    let (msg, flow) = next(&mut rx).await;
    assert_eq!(flow.transport, Transport::Udp);
    assert_eq!(flow.remote, client_addr);
    assert_eq!(flow.local, Some(server));
    assert_eq!(flow.connection, None);
    let via = msg.top_via().unwrap();
    assert_eq!(via.received(), Some("127.0.0.1"));
    assert_eq!(via.rport(), Some(Some(client_addr.port())));

    let target = response_target(&flow, &msg);
    assert_eq!(target.remote, client_addr);
    ep.send(target, ok_for(&msg)).await.unwrap();

    let mut buf = [0u8; 2048];
    let (n, from) = timeout(WAIT, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, server);
    let resp = Message::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.top_via().unwrap().received(), Some("127.0.0.1"));
    assert_eq!(ep.counters().messages_received(), 1);
}

#[tokio::test]
async fn udp_garbage_is_delivered_as_invalid() {
    let (ep, mut rx) = bind(&["udp:127.0.0.1:0"]).await;
    let server = ep.local_addr(Transport::Udp).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bad = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nContent-Length: 50\r\n\r\nshort";
    client.send_to(bad.as_bytes(), server).await.unwrap();
    match timeout(WAIT, rx.recv()).await.unwrap() {
        Some(Incoming::Invalid {
            bytes, error, flow, ..
        }) => {
            assert_eq!(&bytes[..], bad.as_bytes());
            assert_eq!(flow.remote, client.local_addr().unwrap());
            assert!(error.to_string().contains("Content-Length"), "{error}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(ep.counters().parse_errors(), 1);
}

#[tokio::test]
async fn tcp_many_messages_in_one_write_and_one_across_many_writes() {
    let (ep, mut rx) = bind(&["tcp:127.0.0.1:0"]).await;
    let server = ep.local_addr(Transport::Tcp).unwrap();
    let mut c = TcpStream::connect(server).await.unwrap();
    let via = "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKt";
    let three: String = (0..3)
        .map(|i| options(via, &format!("many{i}"), 4))
        .collect();
    c.write_all(three.as_bytes()).await.unwrap();
    let mut conn: Option<ConnectionId> = None;
    for i in 0..3 {
        let (msg, flow) = next(&mut rx).await;
        assert_eq!(msg.call_id().unwrap(), format!("many{i}"));
        assert_eq!(flow.transport, Transport::Tcp);
        assert_eq!(flow.remote, c.local_addr().unwrap());
        assert!(flow.connection.is_some());
        assert!(conn.is_none() || conn == flow.connection);
        conn = flow.connection;
    }
    let one = options(via, "split", 10);
    for chunk in one.as_bytes().chunks(9) {
        c.write_all(chunk).await.unwrap();
        c.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (msg, flow) = next(&mut rx).await;
    assert_eq!(msg.call_id().unwrap(), "split");
    assert_eq!(msg.body(), b"xxxxxxxxxx");
    assert_eq!(flow.connection, conn);

    // The response goes back over the same connection.
    let target = response_target(&flow, &msg);
    assert_eq!(target.connection, conn);
    ep.send(target, ok_for(&msg)).await.unwrap();
    let got = read_messages(&mut c, 1).await;
    assert_eq!(got[0].status(), Some(200));
    assert_eq!(got[0].call_id().unwrap(), "split");
}

#[tokio::test]
async fn crlf_ping_is_answered_with_crlf() {
    let (ep, _rx) = bind(&["tcp:127.0.0.1:0"]).await;
    let mut c = TcpStream::connect(ep.local_addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    c.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    timeout(WAIT, c.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    assert_eq!(ep.counters().pings_answered(), 1);
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let cert = tls::self_signed(&["localhost"]).unwrap();
    let mut config = EndpointConfig::new([spec("tls:127.0.0.1:0")]);
    config.tls_server = Some(cert.server_config.clone());
    let (ep, mut rx) = bind_with(config).await;
    let server = ep.local_addr(Transport::Tls).unwrap();

    let connector =
        tokio_rustls::TlsConnector::from(tls::client_config([cert.cert_der.clone()]).unwrap());
    let tcp = TcpStream::connect(server).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    c.write_all(options("SIP/2.0/TLS localhost;branch=z9hG4bKtls", "tls1", 0).as_bytes())
        .await
        .unwrap();

    let (msg, flow) = next(&mut rx).await;
    assert_eq!(flow.transport, Transport::Tls);
    assert_eq!(msg.call_id().unwrap(), "tls1");
    ep.send(response_target(&flow, &msg), ok_for(&msg))
        .await
        .unwrap();
    let got = read_messages(&mut c, 1).await;
    assert_eq!(got[0].status(), Some(200));
}

/// A TLS server with a self-signed certificate for `names`; returns its endpoint (kept
/// alive by the caller) and address.
async fn tls_server(names: &[&str]) -> (Endpoint, Receiver<Incoming>, SocketAddr) {
    let cert = tls::self_signed(names).unwrap();
    let mut config = EndpointConfig::new([spec("tls:127.0.0.1:0")]);
    config.tls_server = Some(cert.server_config.clone());
    let (ep, rx) = bind_with(config).await;
    let addr = ep.local_addr(Transport::Tls).unwrap();
    (ep, rx, addr)
}

/// A client endpoint (UDP only) trusting `roots`.
async fn tls_client(roots: Vec<rustls::pki_types::CertificateDer<'static>>) -> Endpoint {
    let mut config = EndpointConfig::new([spec("udp:127.0.0.1:0")]);
    config.tls_client = Some(tls::client_config(roots).unwrap());
    bind_with(config).await.0
}

#[tokio::test]
async fn a_refused_server_certificate_is_told_as_such() {
    // Signed by nobody we trust: not trusted (issue 12, defect 11).
    let (_server, _rx, addr) = tls_server(&["localhost", "127.0.0.1"]).await;
    // A certificate by another name (tls::self_signed's all share one subject, and a
    // subject known with the wrong key would be a bad signature, not an unknown issuer).
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "a stranger");
    let stranger = params.self_signed(&key).unwrap().der().clone();
    let client = tls_client(vec![stranger]).await;
    let err = client
        .send(Target::Addr(Transport::Tls, addr), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    match &err {
        sip_net::SendError::TlsHandshake { failure, .. } => assert_eq!(
            *failure,
            sip_net::HandshakeFailure::Certificate {
                problem: "not trusted",
                verdict: "UnknownIssuer".into()
            }
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .ends_with("certificate not trusted (UnknownIssuer)"),
        "{err}"
    );

    // Trusted, but made for another name than the address we connect to.
    let cert = tls::self_signed(&["localhost"]).unwrap();
    let mut config = EndpointConfig::new([spec("tls:127.0.0.1:0")]);
    config.tls_server = Some(cert.server_config.clone());
    let (server, _server_rx) = bind_with(config).await;
    let addr = server.local_addr(Transport::Tls).unwrap();
    let client = tls_client(vec![cert.cert_der]).await;
    let err = client.connect(Transport::Tls, addr).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("certificate not valid for this address (NotValidForName)"),
        "{err}"
    );
}

#[tokio::test]
async fn connect_opens_a_connection_and_tells_its_local_address() {
    let cert = tls::self_signed(&["127.0.0.1"]).unwrap();
    let mut config = EndpointConfig::new([spec("tls:127.0.0.1:0")]);
    config.tls_server = Some(cert.server_config.clone());
    let (server, mut server_rx) = bind_with(config).await;
    let server_addr = server.local_addr(Transport::Tls).unwrap();
    // The server's own certificate is what the client trusts.
    let client = tls_client(vec![cert.cert_der]).await;
    let flow = client.connect(Transport::Tls, server_addr).await.unwrap();
    let local = flow.local.expect("the connection's local address");
    assert_eq!(local.ip(), server_addr.ip());
    // A message sent afterwards goes over that same connection: the server sees it
    // come from that address.
    client
        .send(
            Target::Addr(Transport::Tls, server_addr),
            Bytes::from(options("SIP/2.0/TLS 127.0.0.1;branch=z9hG4bKc1", "c1", 0)),
        )
        .await
        .unwrap();
    let (_, seen) = next(&mut server_rx).await;
    assert_eq!(seen.remote, local);
}

#[tokio::test]
async fn missing_certificate_is_a_clear_bind_error() {
    let err = Endpoint::bind(EndpointConfig::new([spec("wss:127.0.0.1:0")]))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("needs a certificate: set EndpointConfig::tls_server"),
        "{err}"
    );
}

async fn ws_client<S>(
    stream: S,
    url: &str,
    subprotocol: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<S>, tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request()?;
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await?;
    if subprotocol.is_some() {
        assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "sip");
    }
    Ok(ws)
}

async fn ws_exchange<S>(
    ep: &Endpoint,
    rx: &mut Receiver<Incoming>,
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    transport: Transport,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = options("SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKws", "ws1", 0);
    ws.send(tungstenite::Message::text(req)).await.unwrap();
    let (msg, flow) = next(rx).await;
    assert_eq!(flow.transport, transport);
    // The invented sent-by of RFC 7118 §5.2 gets received= stamped.
    assert_eq!(msg.top_via().unwrap().received(), Some("127.0.0.1"));
    ep.send(response_target(&flow, &msg), ok_for(&msg))
        .await
        .unwrap();
    let reply = loop {
        match timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
            tungstenite::Message::Text(t) => break Bytes::from(t),
            tungstenite::Message::Binary(b) => break b,
            _ => continue,
        }
    };
    let resp = Message::parse(reply).unwrap();
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.call_id().unwrap(), "ws1");
}

#[tokio::test]
async fn websocket_with_sip_subprotocol() {
    let (ep, mut rx) = bind(&["ws:127.0.0.1:0"]).await;
    let server = ep.local_addr(Transport::Ws).unwrap();
    let tcp = TcpStream::connect(server).await.unwrap();
    let ws = timeout(
        WAIT,
        ws_client(tcp, &format!("ws://{server}/"), Some("sip")),
    )
    .await
    .unwrap()
    .unwrap();
    ws_exchange(&ep, &mut rx, ws, Transport::Ws).await;

    // Without the sip subprotocol the handshake is refused (RFC 7118 §4.1).
    let tcp = TcpStream::connect(server).await.unwrap();
    let refused = timeout(WAIT, ws_client(tcp, &format!("ws://{server}/"), None))
        .await
        .unwrap();
    assert!(refused.is_err());
    eventually("a counted handshake failure", || {
        ep.counters().handshake_failures() == 1
    })
    .await;
}

#[tokio::test]
async fn secure_websocket() {
    let cert = tls::self_signed(&["localhost"]).unwrap();
    let mut config = EndpointConfig::new([spec("wss:127.0.0.1:0")]);
    config.tls_server = Some(cert.server_config.clone());
    let (ep, mut rx) = bind_with(config).await;
    let server = ep.local_addr(Transport::Wss).unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(tls::client_config([cert.cert_der.clone()]).unwrap());
    let tcp = TcpStream::connect(server).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let ws = timeout(
        WAIT,
        ws_client(
            tls,
            &format!("wss://localhost:{}/", server.port()),
            Some("sip"),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    ws_exchange(&ep, &mut rx, ws, Transport::Wss).await;
}

#[tokio::test]
async fn two_sends_to_one_target_share_one_connection() {
    let (a, _arx) = bind(&["tcp:127.0.0.1:0"]).await;
    let (b, mut brx) = bind(&["tcp:127.0.0.1:0"]).await;
    let to = b.local_addr(Transport::Tcp).unwrap();
    let via = "SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKr";
    let f1 = a
        .send((Transport::Tcp, to), options(via, "reuse1", 0).into())
        .await
        .unwrap();
    let f2 = a
        .send((Transport::Tcp, to), options(via, "reuse2", 0).into())
        .await
        .unwrap();
    assert_eq!(f1.connection, f2.connection);
    let (_, in1) = next(&mut brx).await;
    let (_, in2) = next(&mut brx).await;
    assert_eq!(in1.connection, in2.connection);
    assert_eq!(a.counters().connections_opened(), 1);
    assert_eq!(b.counters().connections_accepted(), 1);
    assert_eq!(a.connection_count(), 1);
}

#[tokio::test]
async fn tls_client_connection_to_another_endpoint() {
    let cert = tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let mut bcfg = EndpointConfig::new([spec("tls:127.0.0.1:0")]);
    bcfg.tls_server = Some(cert.server_config.clone());
    let (b, mut brx) = bind_with(bcfg).await;
    let acfg = EndpointConfig {
        tls_client: Some(tls::client_config([cert.cert_der.clone()]).unwrap()),
        ..EndpointConfig::default()
    };
    let (a, mut arx) = bind_with(acfg).await;
    let to = b.local_addr(Transport::Tls).unwrap();
    let uri = format!("sips:server@127.0.0.1:{}", to.port());
    let req = options("SIP/2.0/TLS 127.0.0.1;branch=z9hG4bKsips", "sips1", 0);
    let flow = a.send(Target::Uri(uri), req.into()).await.unwrap();
    assert_eq!(flow.transport, Transport::Tls);
    let (msg, bflow) = next(&mut brx).await;
    b.send(response_target(&bflow, &msg), ok_for(&msg))
        .await
        .unwrap();
    // The response comes back over the connection A opened.
    let (resp, aflow) = next(&mut arx).await;
    assert_eq!(resp.status(), Some(200));
    assert_eq!(aflow.connection, flow.connection);
}

#[tokio::test]
async fn large_request_for_udp_goes_over_tcp() {
    let (a, _arx) = bind(&["udp:127.0.0.1:0"]).await;
    let (b, mut brx) = bind(&["tcp:127.0.0.1:0"]).await;
    let port = b.local_addr(Transport::Tcp).unwrap().port();
    let req = options("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKmtu", "mtu1", 2000);
    assert!(req.len() > sip_net::UDP_MTU_LIMIT);
    // No transport parameter and a numeric host: RFC 3263 says UDP.
    let flow = a
        .send(
            Target::Uri(format!("sip:server@127.0.0.1:{port}")),
            req.into(),
        )
        .await
        .unwrap();
    assert_eq!(flow.transport, Transport::Tcp);
    let (msg, bflow) = next(&mut brx).await;
    assert_eq!(bflow.transport, Transport::Tcp);
    assert_eq!(msg.body().len(), 2000);
    // RFC 3261 §18.1.1: the Via says the transport actually used.
    assert_eq!(msg.top_via().unwrap().transport, "TCP");

    // A small one stays on UDP.
    let (c, mut crx) = bind(&["udp:127.0.0.1:0"]).await;
    let port = c.local_addr(Transport::Udp).unwrap().port();
    let small = options("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKsmall", "small", 10);
    let flow = a
        .send(
            Target::Uri(format!("sip:server@127.0.0.1:{port}")),
            small.into(),
        )
        .await
        .unwrap();
    assert_eq!(flow.transport, Transport::Udp);
    let (_, cflow) = next(&mut crx).await;
    assert_eq!(cflow.transport, Transport::Udp);
}

#[tokio::test]
async fn oversize_messages_are_counted_and_dropped() {
    let limits = Limits {
        max_message: 1000,
        ..Limits::default()
    };
    let mut config = EndpointConfig::new([spec("udp:127.0.0.1:0"), spec("tcp:127.0.0.1:0")]);
    config.limits = limits;
    let (ep, mut rx) = bind_with(config).await;

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let big = options("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKbig", "big", 1500);
    client
        .send_to(big.as_bytes(), ep.local_addr(Transport::Udp).unwrap())
        .await
        .unwrap();
    eventually("the UDP oversize count", || ep.counters().oversize() == 1).await;

    let mut c = TcpStream::connect(ep.local_addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    c.write_all(big.as_bytes()).await.unwrap();
    // The stream cannot be trusted after that: it is closed.
    let mut buf = [0u8; 16];
    let n = timeout(WAIT, c.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    eventually("the TCP oversize count", || ep.counters().oversize() == 2).await;
    assert_eq!(ep.counters().framing_errors(), 1);

    // Sending one is refused too.
    let err = ep
        .send((Transport::Udp, client.local_addr().unwrap()), big.into())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("exceeds the limit of 1000"),
        "{err}"
    );
    assert_eq!(ep.counters().oversize(), 3);
    assert!(rx.try_recv().is_err(), "nothing oversize is delivered");
}

#[tokio::test]
async fn connection_limits_are_counted() {
    let mut config = EndpointConfig::new([spec("tcp:127.0.0.1:0")]);
    config.limits = Limits {
        max_connections_per_ip: 1,
        ..Limits::default()
    };
    let (ep, _rx) = bind_with(config).await;
    let server = ep.local_addr(Transport::Tcp).unwrap();
    let _first = TcpStream::connect(server).await.unwrap();
    eventually("the first connection", || ep.connection_count() == 1).await;
    let mut second = TcpStream::connect(server).await.unwrap();
    let mut buf = [0u8; 1];
    let n = timeout(WAIT, second.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the second connection from one IP is closed");
    assert_eq!(ep.counters().connections_per_ip_over_limit(), 1);
    assert_eq!(ep.connection_count(), 1);

    let mut config = EndpointConfig::new([spec("tcp:127.0.0.1:0")]);
    config.limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (ep, _rx) = bind_with(config).await;
    let server = ep.local_addr(Transport::Tcp).unwrap();
    let _first = TcpStream::connect(server).await.unwrap();
    eventually("the first connection", || ep.connection_count() == 1).await;
    let mut second = TcpStream::connect(server).await.unwrap();
    let n = timeout(WAIT, second.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(ep.counters().connections_over_limit(), 1);
}

#[tokio::test]
async fn idle_connections_close() {
    let mut config = EndpointConfig::new([spec("tcp:127.0.0.1:0")]);
    config.limits = Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let (ep, _rx) = bind_with(config).await;
    let mut c = TcpStream::connect(ep.local_addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let n = timeout(WAIT, c.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    eventually("the idle count", || ep.counters().idle_closed() == 1).await;
    eventually("the table to empty", || ep.connection_count() == 0).await;
}

#[tokio::test]
async fn trace_sink_sees_both_directions() {
    let sink = BroadcastSink::new(16);
    let mut events = sink.subscribe();
    let mut config = EndpointConfig::new([spec("udp:127.0.0.1:0")]);
    config.trace = Arc::new(sink);
    let (ep, mut rx) = bind_with(config).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let caddr: SocketAddr = client.local_addr().unwrap();
    let req = options(
        &format!("SIP/2.0/UDP {caddr};branch=z9hG4bKtr"),
        "trace1",
        0,
    );
    client
        .send_to(req.as_bytes(), ep.local_addr(Transport::Udp).unwrap())
        .await
        .unwrap();
    let (msg, flow) = next(&mut rx).await;
    ep.send(response_target(&flow, &msg), ok_for(&msg))
        .await
        .unwrap();
    let e1 = timeout(WAIT, events.recv()).await.unwrap().unwrap();
    let e2 = timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert_eq!(
        (e1.direction, e1.remote, e1.transport),
        (Direction::In, caddr, Transport::Udp)
    );
    assert_eq!(&e1.bytes[..], req.as_bytes());
    assert_eq!((e2.direction, e2.remote), (Direction::Out, caddr));
    assert!(e2.bytes.starts_with(b"SIP/2.0 200"));
}
