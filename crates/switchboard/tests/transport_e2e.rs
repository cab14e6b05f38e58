//! End-to-end tests of issue 3 (transports and transactions) against the real
//! `switchboard serve` binary, on 127.0.0.1 only:
//!
//! * SIPp over UDP and TCP: the exact 200 to OPTIONS (Allow, Accept, Supported, To tag,
//!   CSeq, Server), INVITE answered 405 with Allow and then ACKed, an unknown method
//!   answered 501 (`tests/sipp/t3_*.xml`).
//! * TLS: SIPp (Debian's has no TLS) through `stunnel` in client mode, which verifies the
//!   certificate configured in `[tls]` against its CA file; and a Rust rustls client.
//! * WebSocket: `ws` and `wss` with the `sip` subprotocol (RFC 7118); a handshake
//!   without the subprotocol is refused.
//! * UDP retransmissions: a retransmitted OPTIONS gets the same 200 again, byte for byte,
//!   from the transaction layer; a 405 to an INVITE that is not ACKed is retransmitted
//!   (timer G) until the ACK arrives, then no more.
//! * TCP framing: three requests in one write, one request dribbled over many writes, a
//!   CRLFCRLF keep-alive answered by CRLF.
//! * RFC 4475 torture messages over UDP: malformed requests get 400/501/505 with the fault
//!   in the reason phrase (or nothing when no response can be addressed), responses get
//!   nothing; some valid requests get the answers RFC 4475 gives a UAS (420, 416, 501).
//! * An oversize UDP datagram is dropped without an answer; the server stays up.
#![allow(clippy::unwrap_used)]

mod common;
use bytes::Bytes;
use common::{Server, ServerOptions, free_port, sipp};
use sip_core::{HeaderName, Message};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

fn torture(name: &str) -> Vec<u8> {
    let path = common::shared().join("torture").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(bytes: &[u8]) -> Message {
    Message::parse(Bytes::copy_from_slice(bytes)).unwrap_or_else(|e| {
        panic!(
            "unparseable message from serve ({e}):\n{}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// A request with the usual headers; `via` is the whole Via value.
fn request(method: &str, via: &str, call_id: &str, cseq: u32, extra: &str) -> String {
    format!(
        "{method} sip:127.0.0.1 SIP/2.0\r\n\
         Via: {via}\r\n\
         From: <sip:t3@example.test>;tag=from-{call_id}\r\n\
         To: <sip:ping@example.test>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Max-Forwards: 70\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

fn options(via: &str, call_id: &str, cseq: u32) -> String {
    request("OPTIONS", via, call_id, cseq, "")
}

/// Asserts `resp` is serve's 200 to our OPTIONS with `call_id` and `cseq`.
fn assert_options_200(resp: &Message, call_id: &str, cseq: u32) {
    let text = String::from_utf8_lossy(resp.as_bytes());
    assert_eq!(resp.status(), Some(200), "{text}");
    assert_eq!(resp.reason(), Some("OK"), "{text}");
    assert_eq!(resp.call_id().unwrap(), call_id, "{text}");
    assert_eq!(
        resp.get(HeaderName::CSeq),
        Some(&*format!("{cseq} OPTIONS"))
    );
    // Defect 12 of issue 12: the Allow of our OPTIONS names what we route too.
    let allow = resp.get(HeaderName::Allow).unwrap_or_default();
    for m in [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "MESSAGE",
        "SUBSCRIBE",
        "REGISTER",
        "OPTIONS",
    ] {
        assert!(allow.split(", ").any(|a| a == m), "Allow lacks {m}: {text}");
    }
    assert_eq!(resp.get(HeaderName::Accept), Some("application/sdp"));
    assert_eq!(resp.get(HeaderName::Supported), Some("path, outbound"));
    assert!(resp.to().unwrap().tag().is_some(), "no To tag: {text}");
    assert_eq!(
        resp.from().unwrap().tag(),
        Some(&*format!("from-{call_id}"))
    );
    assert!(resp.server().is_some(), "no Server header: {text}");
    assert_eq!(resp.content_length(), Some(0), "{text}");
}

/// A UDP client on an ephemeral loopback port.
struct Udp {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Udp {
    fn new(server_port: u16) -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Udp {
            sock,
            server: SocketAddr::from(([127, 0, 0, 1], server_port)),
        }
    }

    /// Our address as a Via sent-by: responses come back here (RFC 3261 §18.2.2).
    fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/UDP {};branch={branch}",
            self.sock.local_addr().unwrap()
        )
    }

    fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).unwrap();
    }

    /// The next datagram, or None when nothing arrives within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 65_536];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, self.server, "datagram from a stranger");
                buf.truncate(n);
                Some(buf)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv: {e}"),
        }
    }

    fn expect(&self, what: &str) -> Message {
        let bytes = self
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no answer to {what} within 5 s"));
        parse(&bytes)
    }

    fn expect_silence(&self, window: Duration, what: &str) {
        if let Some(bytes) = self.recv(window) {
            panic!(
                "{what}: expected no answer, got:\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// Reads SIP messages off a byte stream (TCP, TLS), framed by Content-Length.
struct Framer<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read> Framer<S> {
    fn new(stream: S) -> Self {
        Framer {
            stream,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed; unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "read failed ({e}); unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    fn message(&mut self) -> Message {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        let name = name.trim();
                        (name.eq_ignore_ascii_case("content-length")
                            || name.eq_ignore_ascii_case("l"))
                        .then(|| value.trim().parse().unwrap())
                    })
                    .unwrap_or_else(|| panic!("no Content-Length on a stream: {head}"));
                let total = end + 4 + len;
                if self.buf.len() >= total {
                    let msg: Vec<u8> = self.buf.drain(..total).collect();
                    return parse(&msg);
                }
            }
            self.fill();
        }
    }

    fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        self.buf.drain(..n).collect()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn extra_port(server: &Server, transport: &str) -> u16 {
    server
        .extra
        .iter()
        .find(|(t, _)| t == transport)
        .map(|(_, p)| *p)
        .unwrap()
}

/// A certificate for `localhost`, written where `[tls]` can load it.
struct TestCert {
    dir: tempfile::TempDir,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCert {
    fn new() -> TestCert {
        let dir = tempfile::tempdir().unwrap();
        let ss = sip_net::tls::self_signed(&["localhost"]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), &ss.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &ss.key_pem).unwrap();
        TestCert {
            dir,
            der: ss.cert_der,
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn toml(&self) -> String {
        format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            self.cert().display(),
            self.dir.path().join("key.pem").display()
        )
    }

    /// A TLS client trusting only this certificate, connected to `port` as `localhost`.
    fn connect(&self, port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let config = sip_net::tls::client_config([self.der.clone()]).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    }
}

fn tls_server(cert: &TestCert, transports: Vec<&'static str>) -> Server {
    Server::start(ServerOptions {
        extra_transports: transports,
        extra_toml: cert.toml(),
        ..Default::default()
    })
}

/// `stunnel` in client mode: plain TCP on `port`, TLS to serve, verifying the peer's
/// certificate against `ca` and the name `localhost`. Killed on drop.
struct Stunnel {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Stunnel {
    fn start(tls_port: u16, ca: &Path) -> Stunnel {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\nsyslog = no\ndebug = 7\n\
                 [sip-tls]\nclient = yes\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{tls_port}\nCAfile = {}\nverifyChain = yes\n\
                 checkHost = localhost\nsni = localhost\n",
                ca.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("stunnel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stunnel is installed (scripts/test installs stunnel4)");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // "Service [sip-tls] (FD=9) bound to 127.0.0.1:PORT": it accepts now.
                if line.contains("bound to 127.0.0.1") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        let stunnel = Stunnel {
            child,
            port,
            log,
            _dir: dir,
        };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            panic!("stunnel did not start:\n{}", stunnel.log());
        }
        stunnel
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIPp on an explicit free local port (never its default 5060, which the torture test
/// listens on).
fn run_sipp(name: &str, port: u16, transport: &str, calls: u32) -> (i32, String) {
    let local = free_port().to_string();
    let calls = calls.to_string();
    sipp(
        &scenario(name),
        port,
        &["-t", transport, "-m", &calls, "-p", &local],
        Duration::from_secs(15),
    )
}

// ---------------------------------------------------------------------------------------
// 1. SIPp over UDP and TCP
// ---------------------------------------------------------------------------------------

#[test]
fn sipp_exact_answers_over_udp_and_tcp() {
    let server = Server::start(ServerOptions::default());
    for transport in ["u1", "t1"] {
        for (name, calls) in [
            ("t3_options_200.xml", 5),
            ("t3_invite_405.xml", 3),
            ("t3_unknown_501.xml", 3),
        ] {
            let (code, out) = run_sipp(name, server.port, transport, calls);
            assert_eq!(
                code,
                0,
                "{name} over {transport}: {out}\nserver log:\n{}",
                server.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. TLS
// ---------------------------------------------------------------------------------------

#[test]
fn sipp_over_tls_through_stunnel() {
    let cert = TestCert::new();
    let server = tls_server(&cert, vec!["tls"]);
    let stunnel = Stunnel::start(extra_port(&server, "tls"), &cert.cert());
    for (name, calls) in [("t3_options_200.xml", 5), ("t3_invite_405.xml", 2)] {
        let (code, out) = run_sipp(name, stunnel.port, "t1", calls);
        assert_eq!(
            code,
            0,
            "{name} over TLS: {out}\nstunnel:\n{}\nserver log:\n{}",
            stunnel.log(),
            server.log()
        );
    }
}

#[test]
fn rust_tls_client_gets_200_with_the_configured_certificate() {
    let cert = TestCert::new();
    let server = tls_server(&cert, vec!["tls"]);
    let mut tls = cert.connect(extra_port(&server, "tls"));
    let req = options("SIP/2.0/TLS t3.invalid;branch=z9hG4bK-t3-tls-1", "tls-1", 1)
        + &options("SIP/2.0/TLS t3.invalid;branch=z9hG4bK-t3-tls-2", "tls-2", 2);
    tls.write_all(req.as_bytes()).unwrap();
    tls.flush().unwrap();
    let mut framer = Framer::new(tls);
    let first = framer.message();
    assert_options_200(&first, "tls-1", 1);
    assert_eq!(
        first.get(HeaderName::Via),
        Some("SIP/2.0/TLS t3.invalid;branch=z9hG4bK-t3-tls-1;received=127.0.0.1")
    );
    assert_options_200(&framer.message(), "tls-2", 2);
}

// ---------------------------------------------------------------------------------------
// 3. WebSocket
// ---------------------------------------------------------------------------------------

fn ws_request(url: &str, subprotocol: Option<&str>) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    req
}

/// Sends an OPTIONS over an open WebSocket and checks the 200 (one message per frame,
/// RFC 7118 §5).
fn ws_options<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>, transport: &str) {
    let call_id = format!("{}-1", transport.to_lowercase());
    let via = format!("SIP/2.0/{transport} t3.invalid;branch=z9hG4bK-t3-{call_id}");
    ws.send(tungstenite::Message::text(options(&via, &call_id, 1)))
        .unwrap();
    let frame = loop {
        match ws.read().unwrap() {
            tungstenite::Message::Text(t) => break t.as_bytes().to_vec(),
            tungstenite::Message::Binary(b) => break b.to_vec(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    };
    let resp = parse(&frame);
    assert_options_200(&resp, &call_id, 1);
    assert_eq!(
        resp.get(HeaderName::Via),
        Some(&*format!("{via};received=127.0.0.1"))
    );
}

#[test]
fn websocket_ws_and_wss_with_sip_subprotocol() {
    let cert = TestCert::new();
    let server = tls_server(&cert, vec!["ws", "wss"]);
    let ws_port = extra_port(&server, "ws");
    let wss_port = extra_port(&server, "wss");

    // ws
    let tcp = TcpStream::connect(("127.0.0.1", ws_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let url = format!("ws://127.0.0.1:{ws_port}/");
    let (mut ws, resp) = tungstenite::client(ws_request(&url, Some("sip")), tcp).unwrap();
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("sip")
    );
    ws_options(&mut ws, "WS");
    let _ = ws.close(None);

    // wss, trusting only the configured certificate
    let tls = cert.connect(wss_port);
    let url = format!("wss://localhost:{wss_port}/");
    let (mut wss, _) = tungstenite::client(ws_request(&url, Some("sip")), tls).unwrap();
    ws_options(&mut wss, "WSS");
    let _ = wss.close(None);

    // RFC 7118 §4.1: without the `sip` subprotocol the handshake is refused.
    let tcp = TcpStream::connect(("127.0.0.1", ws_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let url = format!("ws://127.0.0.1:{ws_port}/");
    assert!(
        tungstenite::client(ws_request(&url, None), tcp).is_err(),
        "a WebSocket without the sip subprotocol was accepted"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Retransmissions over UDP
// ---------------------------------------------------------------------------------------

#[test]
fn udp_retransmitted_options_gets_the_same_200() {
    let server = Server::start(ServerOptions::default());
    let udp = Udp::new(server.port);
    let req = options(&udp.via("z9hG4bK-t3-rtx-1"), "rtx-1", 1);
    udp.send(req.as_bytes());
    let first = udp.expect("OPTIONS");
    assert_options_200(&first, "rtx-1", 1);
    udp.expect_silence(Duration::from_millis(300), "OPTIONS answered once");

    // The same request again (as if our 200 had been lost): the server transaction
    // sends its last response again, unchanged (RFC 3261 §17.2.2), To tag included.
    udp.send(req.as_bytes());
    let second = udp.expect("retransmitted OPTIONS");
    assert_eq!(
        String::from_utf8_lossy(second.as_bytes()),
        String::from_utf8_lossy(first.as_bytes())
    );
    assert_eq!(second.to().unwrap().tag(), first.to().unwrap().tag());

    // A new transaction (new branch, next CSeq) is a new answer with a new To tag.
    let req2 = options(&udp.via("z9hG4bK-t3-rtx-2"), "rtx-1", 2);
    udp.send(req2.as_bytes());
    let third = udp.expect("new OPTIONS");
    assert_options_200(&third, "rtx-1", 2);
    assert_ne!(third.to().unwrap().tag(), first.to().unwrap().tag());
}

#[test]
fn udp_405_to_invite_is_retransmitted_until_the_ack() {
    let server = Server::start(ServerOptions::default());
    let udp = Udp::new(server.port);
    let via = udp.via("z9hG4bK-t3-inv-1");
    udp.send(request("INVITE", &via, "inv-1", 1, "").as_bytes());

    // The 405 and its retransmissions (timer G: T1 = 500 ms, then 1 s, 2 s, ...).
    let mut finals: Vec<(Instant, Message)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    while finals.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(bytes) = udp.recv(left) else { break };
        let msg = parse(&bytes);
        if msg.status().is_some_and(|s| s < 200) {
            continue;
        }
        finals.push((Instant::now(), msg));
    }
    assert_eq!(
        finals.len(),
        3,
        "expected the 405 and two retransmissions within 4 s\nserver log:\n{}",
        server.log()
    );
    let first = &finals[0].1;
    assert_eq!(first.status(), Some(405), "{:?}", first.as_bytes());
    assert_eq!(first.reason(), Some("Method Not Allowed"));
    assert_eq!(first.get(HeaderName::Allow), Some("REGISTER, OPTIONS"));
    assert_eq!(first.get(HeaderName::CSeq), Some("1 INVITE"));
    for (_, m) in &finals[1..] {
        assert_eq!(m.as_bytes(), first.as_bytes(), "a retransmission differs");
    }
    let gap1 = finals[1].0 - finals[0].0;
    let gap2 = finals[2].0 - finals[1].0;
    assert!(
        gap1 >= Duration::from_millis(400) && gap1 <= Duration::from_millis(1200),
        "first retransmission after {gap1:?}, expected ~500 ms (T1)"
    );
    assert!(
        gap2 >= Duration::from_millis(700) && gap2 <= Duration::from_millis(2000),
        "second retransmission after {gap2:?}, expected ~1 s (2*T1)"
    );

    // The ACK for the non-2xx final response (same branch, the 405's To tag) absorbs
    // it: the next retransmission was due ~2 s later and must not come.
    let to = first.get(HeaderName::To).unwrap();
    let ack = format!(
        "ACK sip:127.0.0.1 SIP/2.0\r\nVia: {via}\r\n\
         From: <sip:t3@example.test>;tag=from-inv-1\r\nTo: {to}\r\nCall-ID: inv-1\r\n\
         CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    udp.send(ack.as_bytes());
    udp.expect_silence(Duration::from_millis(2800), "405 after the ACK");
}

// ---------------------------------------------------------------------------------------
// 5. TCP stream framing
// ---------------------------------------------------------------------------------------

#[test]
fn tcp_many_messages_in_one_write_and_one_across_many() {
    let server = Server::start(ServerOptions::default());
    let tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut writer = tcp.try_clone().unwrap();
    let mut framer = Framer::new(tcp);

    // Three requests in one write: three answers, in order.
    let batch: String = (1..=3)
        .map(|i| {
            options(
                &format!("SIP/2.0/TCP t3.invalid;branch=z9hG4bK-t3-batch-{i}"),
                &format!("batch-{i}"),
                i,
            )
        })
        .collect();
    writer.write_all(batch.as_bytes()).unwrap();
    for i in 1..=3 {
        assert_options_200(&framer.message(), &format!("batch-{i}"), i);
    }

    // One request, five bytes per write with a pause between: reassembled.
    let slow = options("SIP/2.0/TCP t3.invalid;branch=z9hG4bK-t3-slow", "slow", 4);
    for chunk in slow.as_bytes().chunks(5) {
        writer.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_options_200(&framer.message(), "slow", 4);

    // RFC 5626 §3.5.1 keep-alive: CRLFCRLF is answered with CRLF, and the connection
    // still carries SIP afterwards.
    writer.write_all(b"\r\n\r\n").unwrap();
    assert_eq!(framer.exact(2), b"\r\n");
    let after = options("SIP/2.0/TCP t3.invalid;branch=z9hG4bK-t3-after", "after", 5);
    writer.write_all(after.as_bytes()).unwrap();
    assert_options_200(&framer.message(), "after", 5);
}

// ---------------------------------------------------------------------------------------
// 6. RFC 4475 torture messages over UDP
// ---------------------------------------------------------------------------------------

/// What serve must do with a torture message.
enum Expect {
    /// This status, with a reason phrase containing this text (the fault).
    Status(u16, &'static str),
    /// No response at all.
    Nothing,
}

/// Binds `port` on loopback, waiting a little if something (a SIPp elsewhere on the
/// machine, by default on 5060) holds it.
fn bind_fixed(port: u16) -> UdpSocket {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UdpSocket::bind(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("127.0.0.1:{port} busy ({e}); retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot bind 127.0.0.1:{port}: {e}"),
        }
    }
}

fn call_id_of(raw: &[u8]) -> Option<String> {
    String::from_utf8_lossy(raw).lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim().to_owned())
    })
}

#[test]
fn torture_messages_over_udp() {
    use Expect::{Nothing, Status};
    let server = Server::start(ServerOptions::default());
    let udp = Udp::new(server.port);

    // Where answers go: a message that does not parse is answered to its source
    // address; one that parses is answered per its top Via (RFC 3261 §18.2.2): the
    // source IP and the sent-by port, 5060 when none is given (5050 for quotbal).
    // So we also listen on those ports, and collect everything in one channel.
    let (tx, rx) = mpsc::channel::<(u16, Vec<u8>)>();
    for sock in [
        bind_fixed(5060),
        bind_fixed(5050),
        udp.sock.try_clone().unwrap(),
    ] {
        let tx = tx.clone();
        let port = sock.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                if tx.send((port, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let cases: &[(&str, Expect)] = &[
        ("invalid/badaspec.dat", Status(400, "bad To header")),
        ("invalid/baddate.dat", Status(400, "bad Date header")),
        // The archive copy lacks the empty line ending the headers (see README).
        (
            "invalid/baddn.dat",
            Status(400, "not ended by an empty line"),
        ),
        ("invalid/badinv01.dat", Status(400, "bad Via header")),
        ("invalid/badvers.dat", Status(505, "SIP/7.0")),
        ("invalid/bigcode.dat", Nothing), // a response
        ("invalid/clerr.dat", Status(400, "Content-Length says 9999")),
        ("invalid/escruri.dat", Status(400, "must not carry headers")),
        // No Call-ID, From or To: RFC 4475 §3.3.1 "ideally" 400; the Via addresses it.
        ("invalid/insuf.dat", Status(400, "missing To header")),
        ("invalid/ipv6-bad.dat", Status(400, "bad Request-URI")),
        (
            "invalid/ltgtruri.dat",
            Status(400, "must not be enclosed in <>"),
        ),
        ("invalid/lwsruri.dat", Status(400, "with single spaces")),
        ("invalid/lwsstart.dat", Status(400, "with single spaces")),
        (
            "invalid/mcl01.dat",
            Status(400, "more than one Content-Length"),
        ),
        (
            "invalid/mismatch01.dat",
            Status(400, "does not match request method"),
        ),
        (
            "invalid/mismatch02.dat",
            Status(501, "does not match request method"),
        ),
        ("invalid/multi01.dat", Status(400, "more than one")),
        ("invalid/ncl.dat", Status(400, "bad Content-Length header")),
        ("invalid/quotbal.dat", Status(400, "unterminated quoted")),
        ("invalid/regbadct.dat", Status(400, "bad Contact header")),
        ("invalid/scalar02.dat", Status(400, "bad CSeq header")),
        ("invalid/scalarlg.dat", Nothing), // a response
        // No SIP version on the request line and no Via: answered to its source.
        ("invalid/test.dat", Status(400, "request line")),
        ("invalid/trws.dat", Status(400, "with single spaces")),
        // Valid messages that a UAS must reject at the application level.
        ("valid/bext01.dat", Status(420, "Bad Extension")),
        ("valid/unkscm.dat", Status(416, "Unsupported URI Scheme")),
        ("valid/intmeth.dat", Status(501, "Not Implemented")),
        ("valid/esc02.dat", Status(501, "Not Implemented")),
        // Max-Forwards 0 for a user: a proxy must not forward it (RFC 4475 §3.3.11).
        ("valid/zeromf.dat", Status(483, "Too Many Hops")),
        // A branch that is only the magic cookie identifies no transaction (§3.2.1).
        ("valid/badbranch.dat", Status(400, "magic cookie")),
        ("valid/transports.dat", Status(200, "OK")),
        // Valid responses: never answered.
        ("valid/bcast.dat", Nothing),
        ("valid/unreason.dat", Nothing),
        ("valid/noreason.dat", Nothing),
    ];
    // Every message the corpus says must be refused or dropped is checked above, but
    // for these, whose expected answer is an endpoint's or a registrar's of
    // example.com: serve is neither for that domain, and refuses them as such.
    let not_ours = [
        "valid/invut.dat",    // 415 from the endpoint; we relay for nobody
        "valid/sdp01.dat",    // 406 from the endpoint; likewise
        "valid/regaut01.dat", // 401 from example.com's registrar; 403 here
        "valid/unksm2.dat",   // 400 from example.com's registrar; 403 here
        "valid/novelsc.dat",  // checked below: it shares unkscm's transaction
    ];
    let index = std::fs::read_to_string(common::shared().join("torture/INDEX.tsv")).unwrap();
    for row in index.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, expected) = (cols[0], cols[2]);
        if expected == "valid" || not_ours.contains(&file) {
            continue;
        }
        let checked = cases.iter().find(|(f, _)| *f == file);
        let Some((_, expect)) = checked else {
            panic!("{file} ({expected}) is not checked over UDP");
        };
        match (expect, expected.rsplit(':').next()) {
            (Nothing, Some("drop")) => {}
            (Status(code, _), Some(want)) if want == code.to_string() => {}
            _ => panic!("{file}: the corpus expects {expected}"),
        }
    }
    let our_port = udp.sock.local_addr().unwrap().port();
    let mut answers = std::collections::HashMap::new();
    for (file, expect) in cases {
        let raw = torture(file);
        udp.send(&raw);
        match expect {
            Nothing => {
                if let Ok((port, bytes)) = rx.recv_timeout(Duration::from_millis(300)) {
                    panic!(
                        "{file}: expected no answer, got on port {port}:\n{}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
            Status(code, fault) => {
                let (port, bytes) = rx
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|_| panic!("{file}: no answer within 5 s"));
                let resp = parse(&bytes);
                let text = String::from_utf8_lossy(&bytes);
                assert_eq!(resp.status(), Some(*code), "{file}: {text}");
                let reason = resp.reason().unwrap_or_default();
                assert!(reason.contains(fault), "{file}: reason {reason:?}");
                if matches!(*code, 400 | 505) {
                    // The fault is named after the standard phrase, in parentheses.
                    assert!(reason.ends_with(')'), "{file}: reason {reason:?}");
                }
                // (multi01's answer repeats its two Call-IDs, as received: compare
                // the first.)
                assert_eq!(
                    call_id_of(&bytes),
                    call_id_of(&raw),
                    "{file}: answer to another message: {text}"
                );
                assert!(
                    [our_port, 5060, 5050].contains(&port),
                    "{file}: answered on port {port}"
                );
                if *file == "valid/bext01.dat" {
                    assert_eq!(
                        resp.get(HeaderName::Unsupported),
                        Some("nothingSupportsThis, nothingSupportsThisEither")
                    );
                }
                if *file == "valid/transports.dat" {
                    assert_eq!(resp.vias().count(), 5, "{text}");
                }
                answers.insert(*file, bytes);
            }
        }
    }
    // Nothing more came (no duplicate answers, no retransmissions of final responses to
    // non-INVITE requests), and the server still answers.
    if let Ok((port, bytes)) = rx.recv_timeout(Duration::from_millis(300)) {
        panic!(
            "stray message on port {port}:\n{}",
            String::from_utf8_lossy(&bytes)
        );
    }
    udp.send(options(&udp.via("z9hG4bK-t3-alive"), "alive", 1).as_bytes());
    let (_, bytes) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_options_200(&parse(&bytes), "alive", 1);

    // novelsc.dat has the same top Via (branch z9hG4bKkdjuw39234, sent-by
    // host9.example.com) and method as unkscm.dat: by RFC 3261 §17.2.3 it matches
    // unkscm's server transaction, a retransmission, answered with unkscm's 416 again.
    let novelsc = torture("valid/novelsc.dat");
    udp.send(&novelsc);
    let (_, bytes) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&answers["valid/unkscm.dat"])
    );
    // To a server that has not seen unkscm, it is a request of its own: 416.
    let fresh = Server::start(ServerOptions::default());
    Udp::new(fresh.port).send(&novelsc);
    let (_, bytes) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let resp = parse(&bytes);
    assert_eq!(
        resp.status(),
        Some(416),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(call_id_of(&bytes), call_id_of(&novelsc));
}

// ---------------------------------------------------------------------------------------
// 7. Oversize datagrams
// ---------------------------------------------------------------------------------------

/// An OPTIONS padded with an extension header to `size` bytes in all.
fn padded_options(udp: &Udp, call_id: &str, size: usize) -> Vec<u8> {
    let base = options(&udp.via(&format!("z9hG4bK-t3-{call_id}")), call_id, 1);
    let pad_header = "X-Pad: \r\n";
    let pad = size - base.len() - pad_header.len();
    let msg = base.replacen(
        "Content-Length:",
        &format!("X-Pad: {}\r\nContent-Length:", "a".repeat(pad)),
        1,
    );
    assert_eq!(msg.len(), size);
    msg.into_bytes()
}

#[test]
fn oversize_udp_datagram_is_dropped() {
    let server = Server::start(ServerOptions {
        extra_toml: "[limits]\nmax_message_bytes = 4096\n".into(),
        ..Default::default()
    });
    let udp = Udp::new(server.port);
    for (call_id, size) in [("huge", 65_000), ("just-over", 4097)] {
        udp.send(&padded_options(&udp, call_id, size));
        udp.expect_silence(Duration::from_millis(700), &format!("{size}-byte OPTIONS"));
    }
    // Within the limit: answered, so the limit is what dropped the others.
    udp.send(&padded_options(&udp, "at-limit", 4096));
    assert_options_200(&udp.expect("4096-byte OPTIONS"), "at-limit", 1);
    assert!(
        server.log().contains("oversize datagram dropped"),
        "{}",
        server.log()
    );
}
