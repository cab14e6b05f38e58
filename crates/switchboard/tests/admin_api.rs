//! The admin API (issue 17) against the real `switchboard serve` on loopback, through a
//! plain HTTP/1.1 client: credentials (401 and never data without them, a login's
//! cookie, API tokens, the limit on failed logins), users changed through the API as
//! SIP sees them (a REGISTER with the new user's password), registrations listed and
//! removed, `/metrics` read by Prometheus's own `promtool check metrics`, the OpenAPI
//! document, the systemd unit checked by `systemd-analyze verify`, SIP answering while
//! hundreds of HTTP clients hang, a busy admin port, and SIGTERM freeing the ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use bytes::Bytes;
use common::{Server, ServerOptions, free_port};
use serde_json::{Value, json};
use sip_core::auth::{Challenge, answer_challenge};
use sip_core::{HeaderName, Message};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.test";

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The `error.field` of an error answer.
    fn field(&self) -> Value {
        self.json()["error"]["field"].clone()
    }
}

/// One request on a fresh connection (`Connection: close`).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A server with the admin API on a free port, user alice, and administrator root.
fn start(extra_toml: &str) -> (Server, SocketAddr) {
    let port = free_port();
    let mut server = Server::start_stopped(ServerOptions {
        users: vec![("alice".into(), "alice-pw".into())],
        extra_toml: format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{extra_toml}"),
        ..ServerOptions::default()
    });
    let out = server.cli(&["admin", "add", "root", "--password", "root-pw"]);
    assert!(out.status.success(), "admin add: {out:?}");
    server.spawn();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        server
            .log()
            .contains(&format!("admin API on http://{addr}")),
        "{}",
        server.log()
    );
    (server, addr)
}

/// A new API token for root, from the CLI.
fn token(server: &Server) -> String {
    let out = server.cli(&["admin", "token", "root"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Logs in as root; the cookie to send back.
fn login(addr: SocketAddr) -> String {
    let r = http(
        addr,
        "POST",
        "/api/login",
        &[],
        Some(r#"{"name": "root", "password": "root-pw"}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().unwrap().to_owned()
}

/// Registers `user` over UDP with digest authentication; the final status.
fn register(server_port: u16, user: &str, password: &str, expires: u32) -> (u16, UdpSocket) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let me = sock.local_addr().unwrap();
    let request = |cseq: u32, auth: Option<String>| {
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKadm{cseq}{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=a{cseq}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: admin-api-{user}-{}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}>\r\n\
             Expires: {expires}\r\n{}Content-Length: 0\r\n\r\n",
            me.port(),
            me.port(),
            auth.map(|a| format!("Authorization: {a}\r\n"))
                .unwrap_or_default()
        )
    };
    let transact = |text: String| -> Message {
        sock.send_to(text.as_bytes(), ("127.0.0.1", server_port))
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = sock.recv_from(&mut buf).expect("an answer to REGISTER");
        Message::parse(Bytes::copy_from_slice(&buf[..n])).unwrap()
    };
    let challenge = transact(request(1, None));
    assert_eq!(challenge.status(), Some(401));
    let header = challenge
        .get(HeaderName::WwwAuthenticate)
        .unwrap()
        .to_owned();
    let ch = Challenge::parse(&header).unwrap().into_owned();
    let creds = answer_challenge(
        &ch,
        user,
        password,
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        "c0ffee",
        1,
    )
    .unwrap();
    let status = transact(request(2, Some(creds.to_string())))
        .status()
        .unwrap();
    (status, sock)
}

/// Whether an OPTIONS over UDP is answered within `within`.
fn options_answered(sock: &UdpSocket, server_port: u16, n: u32, within: Duration) -> bool {
    let me = sock.local_addr().unwrap();
    let text = format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKopt{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ping@{DOMAIN}>;tag=o{n}\r\nTo: <sip:{DOMAIN}>\r\n\
         Call-ID: admin-api-ping-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(text.as_bytes(), ("127.0.0.1", server_port))
        .unwrap();
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = vec![0u8; 65536];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if buf[..n].starts_with(b"SIP/2.0 200"))
}

#[test]
fn without_credentials_every_path_but_the_login_is_401_and_never_data() {
    let (server, addr) = start("");
    let t = token(&server);
    for (method, path, body) in [
        ("GET", "/api/registrations", None),
        ("GET", "/api/users", None),
        ("GET", "/api/users/alice", None),
        ("DELETE", "/api/users/alice", None),
        ("PATCH", "/api/users/alice", Some(r#"{"password": "x"}"#)),
        (
            "POST",
            "/api/users",
            Some(r#"{"name": "eve", "password": "x"}"#),
        ),
        ("GET", "/api/openapi.json", None),
        ("GET", "/metrics", None),
        ("GET", "/", None),
        ("GET", "/no/such/path", None),
        ("POST", "/api/logout", None),
    ] {
        for auth in [
            None,
            Some("Bearer sbt_0000000000000000000000000000000000000000000000000000000000000000"),
            Some("Basic cm9vdDpyb290LXB3"),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            let r = http(addr, method, path, &headers, body);
            // Unknown tokens count as failed attempts: after five, the address is
            // answered 429 instead.
            let code = match r.status {
                401 => "unauthenticated",
                429 if auth.is_some_and(|a| a.starts_with("Bearer")) => "too_many_attempts",
                _ => panic!("{method} {path} with {auth:?}: {r:?}"),
            };
            assert_eq!(r.json()["error"]["code"], code, "{r:?}");
            assert!(
                !r.body.contains("alice") && !r.body.contains("switchboard_"),
                "{r:?}"
            );
        }
        // A cookie that is no session is refused alike.
        let r = http(
            addr,
            method,
            path,
            &[("Cookie", "switchboard_session=feedface")],
            body,
        );
        assert_eq!(r.status, 401, "{method} {path}: {r:?}");
    }
    // Nothing was changed on the way.
    let r = http(
        addr,
        "GET",
        "/api/users",
        &[("Authorization", &bearer(&t))],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let users = r.json();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice"]);
}

#[test]
fn login_gives_a_cookie_that_works_until_logout() {
    let (_server, addr) = start("");
    let r = http(
        addr,
        "POST",
        "/api/login",
        &[],
        Some(r#"{"name": "root", "password": "wrong"}"#),
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("set-cookie").is_none());
    let r = http(
        addr,
        "POST",
        "/api/login",
        &[],
        Some(r#"{"name": "nobody", "password": "root-pw"}"#),
    );
    assert_eq!(r.status, 401, "{r:?}");
    let r = http(addr, "POST", "/api/login", &[], Some(r#"{"name": "root"}"#));
    assert_eq!((r.status, r.field()), (400, json!("password")), "{r:?}");
    let r = http(
        addr,
        "POST",
        "/api/login",
        &[("Content-Type", "text/plain")],
        Some(r#"{"name": "root", "password": "root-pw"}"#),
    );
    assert_eq!(r.status, 415, "{r:?}");

    let cookie = login(addr);
    let r = http(addr, "GET", "/api/session", &[("Cookie", &cookie)], None);
    assert_eq!(
        (r.status, r.json()["name"].clone()),
        (200, json!("root")),
        "{r:?}"
    );
    let r = http(addr, "GET", "/api/users", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 200, "{r:?}");
    let r = http(addr, "POST", "/api/logout", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = http(addr, "GET", "/api/users", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn failed_logins_lock_the_address_out() {
    let (server, addr) = start("");
    for _ in 0..5 {
        let r = http(
            addr,
            "POST",
            "/api/login",
            &[],
            Some(r#"{"name": "root", "password": "guess"}"#),
        );
        assert_eq!(r.status, 401, "{r:?}");
    }
    // Now even the right password is not looked at.
    let r = http(
        addr,
        "POST",
        "/api/login",
        &[],
        Some(r#"{"name": "root", "password": "root-pw"}"#),
    );
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "too_many_attempts");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Unknown tokens from the address are refused alike, a valid one still works.
    let r = http(
        addr,
        "GET",
        "/api/users",
        &[("Authorization", "Bearer sbt_nope")],
        None,
    );
    assert_eq!(r.status, 429, "{r:?}");
    let t = token(&server);
    let r = http(
        addr,
        "GET",
        "/api/users",
        &[("Authorization", &bearer(&t))],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        server.log().contains("admin API: login failed"),
        "{}",
        server.log()
    );
}

#[test]
fn users_changed_through_the_api_are_what_sip_sees() {
    let (server, addr) = start("");
    let t = token(&server);
    let auth = bearer(&t);
    let h = [("Authorization", auth.as_str())];

    let r = http(
        addr,
        "POST",
        "/api/users",
        &h,
        Some(r#"{"name": "carol", "password": "carol-pw", "extension": "301"}"#),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["extension"], "301");
    assert_eq!(r.json()["realm"], DOMAIN);
    // Bad input names its field, and changes nothing.
    for (body, status, field) in [
        (
            r#"{"name": "dave", "password": "pw", "extension": "30x"}"#,
            400,
            json!("extension"),
        ),
        (
            r#"{"name": "dave", "password": "pw", "extension": "301"}"#,
            409,
            json!("extension"),
        ),
        (r#"{"name": "carol", "password": "pw"}"#, 409, json!("name")),
        (r#"{"name": "da ve", "password": "pw"}"#, 400, json!("name")),
        (r#"{"name": "dave"}"#, 400, json!("password")),
        (
            r#"{"name": "dave", "password": ""}"#,
            400,
            json!("password"),
        ),
        (
            r#"{"name": "dave", "password": "pw", "colour": "red"}"#,
            400,
            json!("colour"),
        ),
        (r#"{"name": 7, "password": "pw"}"#, 400, json!("name")),
        (r#"not json"#, 400, Value::Null),
    ] {
        let r = http(addr, "POST", "/api/users", &h, Some(body));
        assert_eq!((r.status, r.field()), (status, field), "{body}: {r:?}");
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = http(addr, "GET", "/api/users/dave", &h, None);
    assert_eq!(r.status, 404, "{r:?}");

    // carol registers with the password given through the API.
    let (status, _carol) = register(server.port, "carol", "carol-pw", 600);
    assert_eq!(status, 200);
    // A new password: the old one no longer works, the new one does.
    let r = http(
        addr,
        "PATCH",
        "/api/users/carol",
        &h,
        Some(r#"{"password": "new-pw", "extension": null}"#),
    );
    assert_eq!(
        (r.status, r.json()["extension"].clone()),
        (200, Value::Null),
        "{r:?}"
    );
    // At once: the API tells the registrar.
    let (status, _) = register(server.port, "carol", "carol-pw", 600);
    assert_eq!(status, 401);
    let (status, _) = register(server.port, "carol", "new-pw", 600);
    assert_eq!(status, 200);
    let r = http(
        addr,
        "PATCH",
        "/api/users/carol",
        &h,
        Some(r#"{"extension": "1x"}"#),
    );
    assert_eq!((r.status, r.field()), (400, json!("extension")), "{r:?}");
    let r = http(
        addr,
        "PATCH",
        "/api/users/nobody",
        &h,
        Some(r#"{"password": "x"}"#),
    );
    assert_eq!(r.status, 404, "{r:?}");
    // The CLI sees the same users.
    let out = server.cli(&["user", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // Registrations: listed, one removed, gone for the CLI too.
    let r = http(addr, "GET", "/api/registrations", &h, None);
    assert_eq!(r.status, 200, "{r:?}");
    let regs = r.json();
    let carol: Vec<&Value> = regs
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["aor"] == format!("sip:carol@{DOMAIN}"))
        .collect();
    assert_eq!(carol.len(), 2, "{regs}");
    let id = carol[0]["id"].as_str().unwrap().to_owned();
    let contact = carol[0]["contact"].as_str().unwrap().to_owned();
    let r = http(
        addr,
        "DELETE",
        &format!("/api/registrations/{id}"),
        &h,
        None,
    );
    assert_eq!(
        (r.status, r.json()["contact"].clone()),
        (200, json!(contact)),
        "{r:?}"
    );
    let r = http(addr, "GET", "/api/registrations", &h, None);
    assert!(!r.body.contains(&id), "{r:?}");
    let out = server.cli(&["location", "--json"]);
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!stored.to_string().contains(&contact), "{stored}");
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");
    let r = http(
        addr,
        "DELETE",
        &format!("/api/registrations/{id}"),
        &h,
        None,
    );
    assert_eq!((r.status, r.field()), (404, json!("id")), "{r:?}");

    // Removed: carol can no longer register.
    let r = http(addr, "DELETE", "/api/users/carol", &h, None);
    assert_eq!(r.status, 204, "{r:?}");
    let (status, _) = register(server.port, "carol", "new-pw", 600);
    assert_eq!(status, 401);
    let r = http(addr, "DELETE", "/api/users/carol", &h, None);
    assert_eq!(r.status, 404, "{r:?}");
}

#[test]
fn metrics_are_valid_prometheus_text() {
    let (server, addr) = start("");
    let (status, _alice) = register(server.port, "alice", "alice-pw", 600);
    assert_eq!(status, 200);
    let t = token(&server);
    let r = http(
        addr,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(&t))],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    for line in [
        "switchboard_registrations 1",
        "switchboard_sip_requests_received_total{method=\"REGISTER\"} 2",
        "switchboard_sip_responses_sent_total{code=\"401\"} 1",
        "switchboard_sip_responses_sent_total{code=\"200\"} 1",
        "switchboard_auth_failures_total 0",
        "switchboard_auth_bans_total 0",
        "switchboard_sip_transactions ",
        "switchboard_calls_in_progress 0",
        "switchboard_pbx_calls_in_progress 0",
        "switchboard_pbx_calls_total 0",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(r.body.contains(line), "{line} in:\n{}", r.body);
    }
    if Command::new("promtool").arg("--version").output().is_err() {
        println!("SKIPPED: promtool (Debian's prometheus) is not installed");
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(r.body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {out:?}\n{}",
        r.body
    );
}

#[test]
fn the_openapi_document_describes_every_path() {
    let (server, addr) = start("");
    let t = token(&server);
    let r = http(
        addr,
        "GET",
        "/api/openapi.json",
        &[("Authorization", &bearer(&t))],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/api/login",
        "/api/logout",
        "/api/registrations",
        "/api/registrations/{id}",
        "/api/users",
        "/api/users/{name}",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} in {doc}");
    }
    assert!(doc["paths"]["/api/users/{name}"]["patch"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: systemd-analyze (Debian's systemd) is not installed");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dist/switchboard.service"
    ))
    .unwrap();
    for option in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
        "KillSignal=SIGTERM",
        "SystemCallFilter=",
    ] {
        assert!(unit.contains(option), "{option}");
    }
    // verify insists that ExecStart's program exists: the one just built stands in.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/switchboard", common::binary()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sip_keeps_answering_while_hundreds_of_http_clients_hang() {
    let (server, addr) = start("");
    let t = token(&server);
    // Each sends half a request and then nothing, holding its connection.
    let mut stuck = Vec::new();
    for i in 0..400 {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /api/users HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        stuck.push(s);
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    for n in 1..=50 {
        assert!(
            options_answered(&sock, server.port, n, Duration::from_millis(500)),
            "OPTIONS {n} unanswered with {} HTTP clients hanging",
            stuck.len()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (status, _alice) = register(server.port, "alice", "alice-pw", 600);
    assert_eq!(status, 200);
    // The API itself still answers a client that behaves.
    let r = http(
        addr,
        "GET",
        "/api/registrations",
        &[("Authorization", &bearer(&t))],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("sip:alice@example.test"), "{r:?}");
    drop(stuck);
}

#[test]
fn a_busy_admin_port_is_said_and_sip_goes_on() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let server = Server::start(ServerOptions {
        extra_toml: format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..ServerOptions::default()
    });
    let log = server.log();
    assert!(
        log.contains(&format!(
            "admin API not started: cannot listen on 127.0.0.1:{port}"
        )),
        "{log}"
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(options_answered(
        &sock,
        server.port,
        1,
        Duration::from_secs(2)
    ));
}

#[test]
fn sigterm_frees_the_admin_and_sip_ports_at_once() {
    let (mut server, addr) = start("");
    let t = token(&server);
    let r = http(
        addr,
        "GET",
        "/api/session",
        &[("Authorization", &bearer(&t))],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    // A connection held open across the stop does not keep the port.
    let _held = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let status = server.stop().unwrap();
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    TcpListener::bind(addr).expect("the admin port is free");
    UdpSocket::bind(("127.0.0.1", server.port)).expect("the SIP port is free");
    TcpListener::bind(("127.0.0.1", server.port)).expect("the SIP TCP port is free");
}

#[test]
fn the_admin_command_adds_lists_and_removes_administrators() {
    let server = Server::start_stopped(ServerOptions::default());
    let run = |args: &[&str]| {
        let out = server.cli(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["admin", "add", "ops", "--password", "pw"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, _, err) = run(&["admin", "add", "ops", "--password", "pw"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("administrator \"ops\" already exists"),
        "{err}"
    );
    let (_, token, err) = run(&["admin", "token", "ops"]);
    assert!(
        token.trim().starts_with("sbt_") && token.trim().len() == 68,
        "{token}"
    );
    assert!(err.contains("shown only this once"), "{err}");
    let (_, out, _) = run(&["admin", "list", "--json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "ops");
    assert_eq!(list[0]["tokens"], 1);
    let (code, out, _) = run(&["admin", "token", "ops", "--revoke"]);
    assert_eq!((code, out.trim()), (Some(0), "revoked 1 token(s) of ops"));
    let (code, _, err) = run(&["admin", "token", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no administrator \"nobody\""), "{err}");
    let (code, _, _) = run(&["admin", "remove", "ops"]);
    assert_eq!(code, Some(0));
    let (_, out, _) = run(&["admin", "list"]);
    assert!(out.contains("no administrators"), "{out}");
    // The users of the same file are untouched.
    let (code, _, _) = run(&["user", "list"]);
    assert_eq!(code, Some(0));
}

/// One request over TLS with `openssl s_client`, trusting `ca`; the raw answer.
fn https_raw(addr: SocketAddr, ca: &std::path::Path, request: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_api_is_served_over_https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("admin.pem"), dir.path().join("admin.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        other => {
            println!("SKIPPED: openssl cannot make a certificate: {other:?}");
            return;
        }
    }
    let port = free_port();
    let mut server = Server::start_stopped(ServerOptions {
        extra_toml: format!(
            "[admin]\nlisten = \"127.0.0.1:{port}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..ServerOptions::default()
    });
    assert!(
        server
            .cli(&["admin", "add", "root", "--password", "root-pw"])
            .status
            .success()
    );
    server.spawn();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        server
            .log()
            .contains(&format!("admin API on https://{addr}")),
        "{}",
        server.log()
    );
    let body = r#"{"name": "root", "password": "root-pw"}"#;
    let answer = https_raw(
        addr,
        &cert,
        &format!(
            "POST /api/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain HTTP on the HTTPS port gets nothing.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /api/session HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(!String::from_utf8_lossy(&raw).contains("HTTP/1.1 200"));
}

#[test]
fn under_systemd_log_lines_carry_journal_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("sb.toml"),
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:{port}\"]\n[storage]\ndatabase = \"sb.db\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(common::binary())
        .args(["serve", "--config", "sb.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", "8:12345")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("switchboard serve is ready") {
        std::thread::sleep(Duration::from_millis(50));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let _ = child.kill();
    let _ = child.wait();
    let warning = text
        .lines()
        .find(|l| l.contains("no administrator yet"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(warning.starts_with("<4>"), "{warning}");
    let ready = text
        .lines()
        .find(|l| l.contains("switchboard serve is ready"))
        .unwrap();
    // No time of its own (the journal adds it), no colours.
    assert!(
        ready.starts_with("<6> INFO") || ready.starts_with("<6>INFO"),
        "{ready}"
    );
    assert!(!text.contains('\u{1b}'), "{text}");
}
