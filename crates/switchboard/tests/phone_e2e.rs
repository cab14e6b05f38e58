//! `switchboard phone` end to end (issue 6): real phone processes on loopback calling
//! each other directly, against SIPp (as UAS answering the phone, as UAC calling it),
//! and registered to the real `switchboard serve`.
//!
//! What is checked: the events each phone prints and its exit code (answered and
//! ended normally, busy, no answer), hold and resume by re-INVITE and by UPDATE as
//! seen by both sides, CANCEL, MESSAGE, REGISTER with digest auth and its removal on
//! exit. The calls through `serve` (phone registered → phone registered) need the
//! proxy (issue 5) and are ignored until it lands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
// The media crate's test signal and recording comparison (cross-correlation, duration).
#[path = "../../media/tests/common/mod.rs"]
mod media_common;
use common::{Server, ServerOptions, binary, black_hole, free_port};
use media_common::{assert_recording_matches, write_test_wav};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `switchboard phone`, killed when dropped.
struct Phone {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything it printed on standard output so far.
    out: Vec<String>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Phone {
    fn start(args: &[&str]) -> Phone {
        let mut child = Command::new(binary())
            .arg("phone")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Phone {
            child,
            lines,
            out: Vec::new(),
            err,
        }
    }

    fn dump(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.out.join("\n"),
            self.err.lock().unwrap()
        )
    }

    /// Waits for a line starting with `prefix`.
    fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        if let Some(l) = self.out.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.out.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!("no line starting with {prefix:?}; {}", self.dump()),
            }
        }
    }

    /// Waits for the process to exit; returns its exit code, with all it printed.
    fn wait(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.out.push(line);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                while let Ok(line) = self.lines.try_recv() {
                    self.out.push(line);
                }
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("phone did not exit; {}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
    }

    fn printed(&self, line: &str) -> bool {
        self.out.iter().any(|l| l == line)
    }

    /// Asserts that it printed each of `lines` (whole lines).
    fn assert_printed(&self, lines: &[&str]) {
        for line in lines {
            assert!(self.printed(line), "no line {line:?}; {}", self.dump());
        }
    }

    /// Waits for the process to exit (within [`WAIT`]) and asserts its exit code.
    fn exits_with(&mut self, code: i32) {
        let got = self.wait(WAIT);
        assert_eq!(got, code, "exit code; {}", self.dump());
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn answerer_at(port: u16, extra: &[&str]) -> Phone {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--user", "bob", "--listen", &listen, "answer"];
    args.extend_from_slice(extra);
    let mut bob = Phone::start(&args);
    bob.expect("waiting for calls", WAIT);
    bob
}

/// bob answering on a free port; returns him with the URI to call him at.
fn answerer(extra: &[&str]) -> (Phone, String) {
    let port = free_port();
    (
        answerer_at(port, extra),
        format!("sip:bob@127.0.0.1:{port}"),
    )
}

#[test]
fn direct_call_with_hold_resume_dtmf_and_hangup() {
    let (mut bob, target) = answerer(&["--auto", "--calls", "1"]);
    let mut alice = Phone::start(&[
        "--user",
        "alice",
        "call",
        &target,
        "--dtmf",
        "12#",
        "--dtmf-after",
        "0.2",
        "--hold-after",
        "0.6",
        "--resume-after",
        "1.2",
        "--hangup-after",
        "1.8",
    ]);
    alice.exits_with(0);
    bob.exits_with(0);
    alice.assert_printed(&[
        "ringing: 180",
        "answered: PCMU",
        "dtmf sent: 1",
        "dtmf sent: 2",
        "dtmf sent: #",
        "held: local",
        "resumed: local",
        "ended: bye (local)",
    ]);
    assert!(
        bob.out
            .iter()
            .any(|l| l.starts_with("incoming: ") && l.contains("sip:alice@"))
    );
    bob.assert_printed(&[
        "answered: PCMU",
        "held: remote",
        "resumed: remote",
        "ended: bye (remote)",
    ]);
}

/// A plays a WAV to B, which records it; A sends DTMF after its file, B reports the
/// digits one by one and as one line at the end of the call.
#[test]
fn audio_and_dtmf_reach_the_far_end() {
    let dir = tempfile::tempdir().unwrap();
    let played = dir.path().join("hello.wav");
    let recorded = dir.path().join("got.wav");
    write_test_wav(&played, 8000, 3.0, 300.0);
    let rec = recorded.to_str().unwrap();
    let (mut bob, target) = answerer(&["--auto", "--calls", "1", "--record", rec]);
    let mut alice = Phone::start(&[
        "call",
        &target,
        "--play",
        played.to_str().unwrap(),
        "--dtmf",
        "12#",
        "--dtmf-after",
        "3.5",
        "--hangup-after",
        "5",
    ]);
    alice.exits_with(0);
    bob.exits_with(0);
    alice.assert_printed(&["playback finished"]);
    for d in ["1", "2", "#"] {
        alice.assert_printed(&[&format!("dtmf sent: {d}")]);
        bob.assert_printed(&[&format!("dtmf received: {d}")]);
    }
    bob.assert_printed(&["dtmf: 12#"]);
    assert_recording_matches("B's recording of A", &played, &recorded);
}

/// `answer` keeps answering: two calls in a row, each recorded to its own file, and a
/// third caller while the second call is up is told busy.
#[test]
fn answers_calls_one_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let played = dir.path().join("hello.wav");
    write_test_wav(&played, 8000, 1.0, 300.0);
    let pattern = dir.path().join("call-{n}.wav");
    let (mut bob, target) = answerer(&[
        "--auto",
        "--calls",
        "2",
        "--record",
        pattern.to_str().unwrap(),
    ]);
    let play = played.to_str().unwrap();
    let mut first = Phone::start(&["call", &target, "--play", play, "--hangup-after", "1.5"]);
    first.exits_with(0);
    let mut second = Phone::start(&["call", &target, "--play", play, "--hangup-after", "2"]);
    second.expect("answered: ", WAIT);
    let mut third = Phone::start(&["call", &target]);
    third.exits_with(3);
    second.exits_with(0);
    bob.exits_with(0);
    let ended = bob.out.iter().filter(|l| l.starts_with("ended: ")).count();
    assert_eq!(ended, 2, "{}", bob.dump());
    for n in [1, 2] {
        let recording = dir.path().join(format!("call-{n}.wav"));
        assert_recording_matches(&format!("call {n}"), &played, &recording);
    }
}

#[test]
fn direct_call_over_tcp_with_update_hold_and_json_events() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut bob = Phone::start(&[
        "--user",
        "bob",
        "--transport",
        "tcp",
        "--listen",
        &listen,
        "--json",
        "answer",
        "--auto",
        "--calls",
        "1",
        "--hangup-after",
        "2",
    ]);
    bob.expect("{\"event\":\"waiting for calls\"", WAIT);
    let target = format!("sip:bob@127.0.0.1:{port};transport=tcp");
    let mut alice = Phone::start(&[
        "--transport",
        "tcp",
        "--json",
        "call",
        &target,
        "--hold-with-update",
        "--hold-after",
        "0.5",
        "--resume-after",
        "1",
    ]);
    alice.exits_with(0);
    bob.exits_with(0);
    let events: Vec<serde_json::Value> = alice
        .out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"answered"), "{names:?}");
    assert!(
        names.contains(&"held") && names.contains(&"resumed"),
        "{names:?}"
    );
    let ended = events.iter().find(|e| e["event"] == "ended").unwrap();
    assert_eq!(ended["detail"], "bye (remote)");
    assert_eq!(ended["code"], 0);
    let bob_events: Vec<serde_json::Value> = bob
        .out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        bob_events
            .iter()
            .any(|e| e["event"] == "held" && e["by"] == "remote")
    );
}

/// A mid-call codec change (a re-offer with PCMA only) and a hold with a=inactive,
/// both seen from both ends; then `--codec` choosing what a callee accepts.
#[test]
fn codec_change_and_inactive_hold() {
    let (mut bob, target) = answerer(&["--auto", "--calls", "1"]);
    let mut alice = Phone::start(&[
        "call",
        &target,
        "--change-codec",
        "pcma",
        "--change-codec-after",
        "0.4",
        "--hold-inactive",
        "--hold-after",
        "0.9",
        "--resume-after",
        "1.4",
        "--hangup-after",
        "1.9",
    ]);
    alice.exits_with(0);
    bob.exits_with(0);
    for phone in [&alice, &bob] {
        phone.assert_printed(&["answered: PCMU", "codec changed: PCMA"]);
    }
    alice.assert_printed(&["held: local", "resumed: local"]);
    bob.assert_printed(&["held: remote", "resumed: remote"]);

    // A callee that takes only PCMA answers a PCMU-first offer with PCMA.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut bob = Phone::start(&[
        "--listen", &listen, "--codec", "pcma", "answer", "--auto", "--calls", "1",
    ]);
    bob.expect("waiting for calls", WAIT);
    let target = format!("sip:bob@127.0.0.1:{port}");
    let mut alice = Phone::start(&["call", &target, "--hangup-after", "0.5"]);
    alice.exits_with(0);
    alice.assert_printed(&["answered: PCMA"]);
    bob.exits_with(0);
}

#[test]
fn busy_and_unanswered_calls_have_their_exit_codes() {
    let (mut busy, target) = answerer(&["--reject", "486", "--calls", "1"]);
    let mut alice = Phone::start(&["call", &target]);
    alice.exits_with(3);
    assert!(alice.out.iter().any(|l| l.starts_with("ended: busy (486")));
    busy.wait(WAIT);

    // Nobody presses Enter: the caller gives up and CANCELs; the callee sees it.
    let (mut ringing, target) = answerer(&["--calls", "1"]);
    let mut alice = Phone::start(&["call", &target, "--answer-timeout", "1"]);
    alice.exits_with(4);
    alice.assert_printed(&["ringing: 180", "ended: no answer (timeout)"]);
    ringing.exits_with(0);
    ringing.assert_printed(&["ended: cancelled (by the caller)"]);

    // Nobody there at all.
    let target = format!("sip:nobody@127.0.0.1:{}", free_port());
    let mut alice = Phone::start(&["call", &target, "--answer-timeout", "1"]);
    alice.exits_with(4);
    alice.assert_printed(&["ended: no answer (timeout)"]);
}

#[test]
fn sigterm_hangs_up_the_call_in_progress() {
    let (mut bob, target) = answerer(&["--auto", "--calls", "1"]);
    let mut alice = Phone::start(&["call", &target]);
    alice.expect("answered: ", WAIT);
    alice.sigterm();
    alice.exits_with(0);
    alice.assert_printed(&["ended: bye (local)"]);
    bob.exits_with(0);
    bob.assert_printed(&["ended: bye (remote)"]);
}

#[test]
fn direct_message_and_listen() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut bob = Phone::start(&[
        "--user", "bob", "--listen", &listen, "listen", "--count", "1",
    ]);
    bob.expect("waiting for messages", WAIT);
    let target = format!("sip:bob@127.0.0.1:{port}");
    let mut alice = Phone::start(&["--user", "alice", "message", &target, "hello, bob"]);
    alice.exits_with(0);
    alice.assert_printed(&["message sent: 200 OK"]);
    bob.exits_with(0);
    let line = bob.expect("message: ", WAIT);
    assert!(
        line.contains("sip:alice@") && line.ends_with(": hello, bob"),
        "{line}"
    );
}

fn sipp_process(args: &[&str]) -> Child {
    Command::new("sipp")
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-m",
            "1",
            "-timeout",
            "20s",
            "-timeout_error",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp is installed")
}

fn wait_child(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sipp did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for SIPp (within [`WAIT`]) and asserts that its scenario passed.
fn sipp_passes(sipp: &mut Child, what: &str) {
    assert_eq!(wait_child(sipp, WAIT), 0, "{what}");
}

/// SIPp running scenario `name` once as UAC against the phone on `port`; it must pass.
fn sipp_uac_passes(name: &str, port: u16) {
    let scenario = scenario(name);
    let (code, out) = common::sipp(
        std::path::Path::new(&scenario),
        port,
        &["-m", "1"],
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn phone_calls_sipp_uas() {
    let port = free_port();
    let port_text = port.to_string();
    let mut sipp = sipp_process(&["-sn", "uas", "-p", &port_text]);
    std::thread::sleep(Duration::from_millis(500));
    let target = format!("sip:service@127.0.0.1:{port}");
    let mut alice = Phone::start(&["call", &target, "--hangup-after", "1"]);
    alice.exits_with(0);
    alice.assert_printed(&["ringing: 180", "answered: PCMU", "ended: bye (local)"]);
    sipp_passes(&mut sipp, "SIPp saw a failed call");
}

#[test]
fn sipp_uac_calls_phone() {
    let port = free_port();
    let mut bob = answerer_at(port, &["--auto", "--calls", "1"]);
    let remote = format!("127.0.0.1:{port}");
    let sipp_port = free_port().to_string();
    let mut sipp = sipp_process(&["-sn", "uac", "-s", "bob", "-p", &sipp_port, &remote]);
    sipp_passes(&mut sipp, "SIPp saw a failed call");
    bob.exits_with(0);
    assert!(
        bob.out
            .iter()
            .any(|l| l.starts_with("incoming: ") && l.contains("sipp"))
    );
    bob.assert_printed(&["answered: PCMU", "ended: bye (remote)"]);
}

/// A phone with an account on `serve` at `srv` (domain `example.test`), doing `args`.
fn registered(srv: &str, user: &str, password: &str, args: &[&str]) -> Phone {
    let account = [
        "--user",
        user,
        "--password",
        password,
        "--server",
        srv,
        "--domain",
        "example.test",
    ];
    Phone::start(&[&account[..], args].concat())
}

fn server_with(users: &[(&str, &str)]) -> Server {
    Server::start(ServerOptions {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        ..Default::default()
    })
}

fn location_json(server: &Server) -> serde_json::Value {
    let out = server.cli(&["location", "--json"]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn registers_to_serve_receives_a_message_and_unregisters_on_exit() {
    let server = server_with(&[("bob", "b0b-pw")]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let srv = format!("127.0.0.1:{}", server.port);
    let mut bob = registered(&srv, "bob", "b0b-pw", &["--listen", &listen, "listen"]);
    let line = bob.expect("registered: ", WAIT);
    assert!(
        line.starts_with("registered: sip:bob@example.test for "),
        "{line}"
    );
    let bindings = location_json(&server).to_string();
    assert!(
        bindings.contains(&format!("127.0.0.1:{port}")),
        "{bindings}"
    );

    // A MESSAGE straight to bob's contact (serve cannot route it yet).
    let target = format!("sip:bob@127.0.0.1:{port}");
    let mut alice = Phone::start(&["--user", "alice", "message", &target, "ping"]);
    alice.exits_with(0);
    bob.expect("message: from sip:alice@", WAIT);

    bob.sigterm();
    bob.exits_with(0);
    bob.assert_printed(&["unregistered"]);
    let bindings = location_json(&server).to_string();
    assert!(
        !bindings.contains(&format!("127.0.0.1:{port}")),
        "{bindings}"
    );
}

#[test]
fn registration_is_refreshed_before_it_expires() {
    let server = Server::start(ServerOptions {
        users: vec![("bob".into(), "b0b-pw".into())],
        extra_toml: "[registrar]\nmin_expires = 2\n".into(),
        ..Default::default()
    });
    let srv = format!("127.0.0.1:{}", server.port);
    let mut bob = registered(&srv, "bob", "b0b-pw", &["--expires", "4", "listen"]);
    bob.expect("registered: sip:bob@example.test for 4 s", WAIT);
    // At half the granted time, with a fresh digest (serve challenges every REGISTER).
    bob.expect(
        "registration refreshed: sip:bob@example.test for 4 s",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(3));
    // Still there after the first 4 s ran out.
    let bindings = location_json(&server).to_string();
    assert!(bindings.contains("sip:bob@"), "{bindings}");
    bob.sigterm();
    bob.exits_with(0);
}

#[test]
fn wrong_password_fails_registration_with_exit_1() {
    let server = server_with(&[("bob", "b0b-pw")]);
    let srv = format!("127.0.0.1:{}", server.port);
    let mut bob = registered(&srv, "bob", "wrong", &["listen"]);
    bob.exits_with(1);
    // Said so a user understands it, with the status after (issue 12, defect 10).
    bob.assert_printed(&["registration refused: wrong user name or password (401 Unauthorized)"]);
}

#[test]
fn record_help_shows_its_placeholder() {
    // clap reads `{n}` in help text as a line break (issue 12, defect 10).
    let out = Command::new(binary())
        .args(["phone", "answer", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("`{n}` in the name is replaced by the call number"),
        "{help}"
    );
}

#[test]
fn registers_over_tcp() {
    let server = server_with(&[("alice", "pw1")]);
    let srv = format!("127.0.0.1:{}", server.port);
    let mut alice = registered(
        &srv,
        "alice",
        "pw1",
        &["--transport", "tcp", "--expires", "10", "listen"],
    );
    // 10 s is under serve's min_expires (60): 423, and the phone asks for 60.
    alice.expect("registered: sip:alice@example.test for 60 s", WAIT);
    let bindings = location_json(&server).to_string();
    assert!(bindings.contains("transport=tcp"), "{bindings}");
    alice.sigterm();
    alice.exits_with(0);
}

#[test]
fn registers_over_websocket() {
    let server = Server::start(ServerOptions {
        users: vec![("alice".into(), "pw1".into())],
        extra_transports: vec!["ws"],
        ..Default::default()
    });
    let ws = server.extra.iter().find(|(t, _)| t == "ws").unwrap().1;
    let srv = format!("127.0.0.1:{ws}");
    let mut alice = registered(&srv, "alice", "pw1", &["--transport", "ws", "listen"]);
    alice.expect("registered: sip:alice@example.test", WAIT);
    alice.sigterm();
    alice.exits_with(0);
    alice.assert_printed(&["unregistered"]);
}

#[test]
fn registers_over_tls_trusting_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // The phone checks the certificate against the address it connects to.
    let ss = sip_net::tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &ss.cert_pem).unwrap();
    std::fs::write(&key, &ss.key_pem).unwrap();
    let server = Server::start(ServerOptions {
        users: vec![("alice".into(), "pw1".into())],
        extra_transports: vec!["tls"],
        extra_toml: format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    });
    let tls = server.extra.iter().find(|(t, _)| t == "tls").unwrap().1;
    let srv = format!("127.0.0.1:{tls}");
    // Without trust it refuses to start.
    let mut untrusting = registered(&srv, "alice", "pw1", &["--transport", "tls", "listen"]);
    untrusting.exits_with(2);
    let ca = cert.to_str().unwrap();
    let mut alice = registered(
        &srv,
        "alice",
        "pw1",
        &["--transport", "tls", "--ca", ca, "listen"],
    );
    alice.expect("registered: sip:alice@example.test", WAIT);
    let bindings = location_json(&server).to_string();
    assert!(bindings.contains("transport=tls"), "{bindings}");
    alice.sigterm();
    alice.exits_with(0);
}

/// `serve` with users and a TLS listener presenting a self-signed certificate for
/// `names`; returns it, the certificate's PEM file (in `dir`) and the TLS port.
fn tls_server_with(
    users: &[(&str, &str)],
    names: &[&str],
    dir: &std::path::Path,
) -> (Server, String, u16) {
    let ss = sip_net::tls::self_signed(names).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &ss.cert_pem).unwrap();
    std::fs::write(&key, &ss.key_pem).unwrap();
    let server = Server::start(ServerOptions {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        extra_transports: vec!["tls"],
        extra_toml: format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    });
    let tls = server.extra.iter().find(|(t, _)| t == "tls").unwrap().1;
    (server, cert.to_str().unwrap().to_owned(), tls)
}

#[test]
fn a_refused_server_certificate_is_reported_as_such() {
    // Issue 12, defect 11: not "no response from the server".
    let dir = tempfile::tempdir().unwrap();
    let (_server, _cert, tls) =
        tls_server_with(&[("alice", "pw1")], &["localhost", "127.0.0.1"], dir.path());
    let srv = format!("127.0.0.1:{tls}");
    // Trusting some other certificate.
    let other = sip_net::tls::self_signed(&["127.0.0.1"]).unwrap();
    let other_pem = dir.path().join("other.pem");
    std::fs::write(&other_pem, &other.cert_pem).unwrap();
    let args = [
        "--transport",
        "tls",
        "--ca",
        other_pem.to_str().unwrap(),
        "listen",
    ];
    let mut alice = registered(&srv, "alice", "pw1", &args);
    alice.exits_with(1);
    let line = alice.expect("registration failed: ", WAIT);
    assert!(
        line.starts_with("registration failed: TLS: certificate not trusted (")
            && line.ends_with("): pass --ca FILE with the server's certificate (or its CA)"),
        "{line}"
    );

    // Trusted, but not made for the address the phone connects to.
    let dir = tempfile::tempdir().unwrap();
    let (_server, cert, tls) = tls_server_with(&[("alice", "pw1")], &["localhost"], dir.path());
    let srv = format!("127.0.0.1:{tls}");
    let args = ["--transport", "tls", "--ca", &cert, "listen"];
    let mut alice = registered(&srv, "alice", "pw1", &args);
    alice.exits_with(1);
    alice.assert_printed(&[
        "registration failed: TLS: certificate not valid for this address (NotValidForName): \
         reach the server by a name or address its certificate names",
    ]);
}

#[test]
fn two_phones_registered_over_tls_call_each_other_through_serve() {
    // Issue 12, defect 11: the phone listens on UDP and TCP only, so its TLS Contact
    // must lead back over its registration connection, or the ACK, the re-INVITEs and
    // the BYE that serve forwards to it never arrive.
    let dir = tempfile::tempdir().unwrap();
    let (server, cert, tls) = tls_server_with(
        &[("alice", "a-pw"), ("bob", "b-pw")],
        &["localhost", "127.0.0.1"],
        dir.path(),
    );
    let srv = format!("127.0.0.1:{tls}");
    let tls_args = ["--transport", "tls", "--ca", &cert];
    let mut bob = registered(
        &srv,
        "bob",
        "b-pw",
        &[&tls_args[..], &["answer", "--auto", "--calls", "1"]].concat(),
    );
    bob.expect("registered: ", WAIT);
    let bindings = location_json(&server).to_string();
    assert!(bindings.contains("transport=tls"), "{bindings}");
    let mut alice = registered(
        &srv,
        "alice",
        "a-pw",
        &[
            &tls_args[..],
            &[
                "call",
                "sip:bob@example.test",
                "--hold-after",
                "0.5",
                "--resume-after",
                "1",
                "--hangup-after",
                "1.5",
            ],
        ]
        .concat(),
    );
    alice.exits_with(0);
    bob.exits_with(0);
    alice.assert_printed(&[
        "answered: PCMU",
        "held: local",
        "resumed: local",
        "ended: bye (local)",
    ]);
    bob.assert_printed(&["held: remote", "resumed: remote", "ended: bye (remote)"]);
    assert!(
        !bob.err.lock().unwrap().contains("no ACK"),
        "{}",
        bob.dump()
    );
}

/// The phone's loop never waits on a connect: while the TCP connect for its INVITE
/// hangs (a listener whose accept queue is full drops the SYNs, for `connect_timeout`,
/// 5 s), an OPTIONS sent to it over UDP is answered at once.
#[test]
fn the_phone_answers_while_its_connect_hangs() {
    let (_hole, _fillers, hole) = black_hole();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let target = format!("sip:bob@{hole};transport=tcp");
    let mut alice = Phone::start(&[
        "--listen",
        &listen,
        "--transport",
        "tcp",
        "call",
        &target,
        "--answer-timeout",
        "20",
    ]);
    alice.expect("listening", WAIT);
    // The call is placed right after: its connect now hangs.
    std::thread::sleep(Duration::from_millis(300));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:alice@{listen} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-ping-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=p1\r\n\
         To: <sip:alice@{listen}>\r\nCall-ID: ping-1@test\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let sent = Instant::now();
    sock.send_to(options.as_bytes(), &listen).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let mut buf = vec![0u8; 65_536];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no answer to OPTIONS ({e}); {}", alice.dump()));
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "OPTIONS answered after {took:?}: the loop waited on the connect"
    );
    // The call is still under way, not failed yet.
    alice.expect("calling", WAIT);
    assert!(
        !alice.out.iter().any(|l| l.starts_with("ended")),
        "{}",
        alice.dump()
    );
}

#[test]
fn options_both_ways() {
    // The phone asks serve...
    let server = server_with(&[]);
    let srv = format!("127.0.0.1:{}", server.port);
    let mut ping = Phone::start(&["options", &srv]);
    ping.exits_with(0);
    let line = ping.expect("options: 200 OK (Allow: ", WAIT);
    assert!(line.contains("REGISTER"), "{line}");
    // ...and answers SIPp.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut bob = Phone::start(&["--listen", &listen, "listen"]);
    bob.expect("waiting for messages", WAIT);
    sipp_uac_passes("options.xml", port);
}

#[test]
fn delayed_offer_answered_in_the_ack() {
    let port = free_port();
    let mut bob = answerer_at(port, &["--auto", "--calls", "1"]);
    sipp_uac_passes("phone_uac_delayed_offer.xml", port);
    bob.exits_with(0);
    // Answered before the codec is known: the answer to its offer comes in the ACK.
    bob.assert_printed(&["answered", "ended: bye (remote)"]);
}

#[test]
fn required_extension_it_lacks_gets_420() {
    let port = free_port();
    let mut bob = answerer_at(port, &["--auto"]);
    sipp_uac_passes("phone_uac_require_100rel.xml", port);
    bob.sigterm();
    bob.exits_with(0);
    assert!(
        !bob.out.iter().any(|l| l.starts_with("incoming")),
        "{}",
        bob.dump()
    );
}

#[test]
fn stray_prack_gets_481_and_unknown_method_501() {
    let port = free_port();
    let mut bob = answerer_at(port, &["--auto", "--calls", "1"]);
    sipp_uac_passes("phone_uac_prack_unknown.xml", port);
    bob.exits_with(0);
    bob.assert_printed(&["answered: PCMU", "ended: bye (remote)"]);
}

#[test]
fn ipv6_offer_is_answered_over_ipv6() {
    let port = free_port();
    let listen = format!("[::1]:{port}");
    let mut bob = Phone::start(&["--user", "bob", "--listen", &listen, "answer", "--auto"]);
    bob.expect("waiting for calls", WAIT);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sipp")
        .current_dir(dir.path())
        .arg("-sf")
        .arg(scenario("phone_uac_ipv6_offer.xml"))
        .arg(&listen)
        .args(["-i", "::1", "-m", "1", "-nostdin", "-trace_err"])
        .args(["-timeout", "10s", "-timeout_error"])
        .stdin(Stdio::null())
        .output()
        .expect("sipp is installed");
    let errors: String = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("errors.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert_eq!(out.status.code(), Some(0), "{errors}; {}", bob.dump());
    bob.expect("ended: bye (remote)", WAIT);
    bob.assert_printed(&["answered: PCMU"]);
    bob.sigterm();
    bob.exits_with(0);
}

// ----- through serve: two phones registered to it, the proxy between them -----

/// The issue 6 acceptance test: A and B registered to serve, A calls B through it,
/// plays a WAV that B records, sends DTMF, holds and resumes (re-INVITEs with
/// a=sendonly, then a=sendrecv, through the proxy), and hangs up.
#[test]
fn two_registered_phones_call_each_other_through_serve() {
    let server = server_with(&[("alice", "a-pw"), ("bob", "b-pw")]);
    let srv = format!("127.0.0.1:{}", server.port);
    let dir = tempfile::tempdir().unwrap();
    let played = dir.path().join("hello.wav");
    let recorded = dir.path().join("got.wav");
    write_test_wav(&played, 8000, 3.0, 300.0);
    let mut bob = registered(
        &srv,
        "bob",
        "b-pw",
        &[
            "answer",
            "--auto",
            "--calls",
            "1",
            "--record",
            recorded.to_str().unwrap(),
        ],
    );
    bob.expect("registered: ", WAIT);
    let mut alice = registered(
        &srv,
        "alice",
        "a-pw",
        &[
            "call",
            "sip:bob@example.test",
            "--play",
            played.to_str().unwrap(),
            "--dtmf",
            "159#",
            "--dtmf-after",
            "3.3",
            "--hold-after",
            "4.2",
            "--resume-after",
            "4.8",
            "--hangup-after",
            "5.5",
        ],
    );
    alice.exits_with(0);
    bob.exits_with(0);
    alice.assert_printed(&["held: local", "resumed: local"]);
    bob.assert_printed(&["held: remote", "resumed: remote", "dtmf: 159#"]);
    assert!(
        bob.out
            .iter()
            .any(|l| l.starts_with("incoming: ") && l.contains("sip:alice@example.test"))
    );
    assert_recording_matches("B's recording of A through serve", &played, &recorded);
}

#[test]
fn message_through_serve() {
    let server = server_with(&[("alice", "a-pw"), ("bob", "b-pw")]);
    let srv = format!("127.0.0.1:{}", server.port);
    let mut bob = registered(&srv, "bob", "b-pw", &["listen", "--count", "1"]);
    bob.expect("registered: ", WAIT);
    let mut alice = registered(
        &srv,
        "alice",
        "a-pw",
        &["message", "sip:bob@example.test", "through the proxy"],
    );
    alice.exits_with(0);
    bob.exits_with(0);
    bob.assert_printed(&["message: from sip:alice@example.test: through the proxy"]);
}

// ----- SIPp as a UAS with a scenario: PRACK, session timers, glare -----

fn scenario(name: &str) -> String {
    format!("{}/tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// SIPp playing `name` as UAS on a free port; returns it with the URI to call.
fn sipp_uas(name: &str) -> (Child, String) {
    let port = free_port();
    let port_text = port.to_string();
    let sipp = sipp_process(&["-sf", &scenario(name), "-p", &port_text]);
    std::thread::sleep(Duration::from_millis(500));
    (sipp, format!("sip:service@127.0.0.1:{port}"))
}

/// alice calling SIPp playing `name` as UAS, with `args` after the target.
fn call_sipp_uas(name: &str, args: &[&str]) -> (Child, Phone) {
    let (sipp, target) = sipp_uas(name);
    let alice = Phone::start(&[&["call", &target][..], args].concat());
    (sipp, alice)
}

fn alice_calls(scenario_name: &str, password: &str) -> (i32, i32, Phone) {
    let (mut sipp, target) = sipp_uas(scenario_name);
    let mut alice = Phone::start(&[
        "--user",
        "alice",
        "--password",
        password,
        "call",
        &target,
        "--hangup-after",
        "0.5",
        "--answer-timeout",
        "3",
    ]);
    let code = alice.wait(WAIT);
    (code, wait_child(&mut sipp, WAIT), alice)
}

#[test]
fn invite_challenges_401_and_407_are_answered() {
    // 401: SIPp checks the digest against alice's password.
    let (code, sipp, alice) = alice_calls("phone_uas_401.xml", "s3cret");
    assert_eq!((code, sipp), (0, 0), "{}", alice.dump());
    alice.assert_printed(&["answered: PCMU"]);
    // The wrong password is refused: the call fails.
    let (_, sipp, alice) = alice_calls("phone_uas_401.xml", "wrong");
    assert_ne!(sipp, 0, "SIPp took a wrong digest; {}", alice.dump());
    // 407: the credentials go in Proxy-Authorization.
    let (code, sipp, alice) = alice_calls("phone_uas_407.xml", "s3cret");
    assert_eq!((code, sipp), (0, 0), "{}", alice.dump());
}

#[test]
fn reliable_provisional_is_pracked() {
    let (mut sipp, mut alice) = call_sipp_uas("phone_uas_100rel.xml", &["--hangup-after", "1"]);
    alice.exits_with(0);
    alice.assert_printed(&["ringing: 180", "answered: PCMU"]);
    sipp_passes(&mut sipp, "SIPp did not get the PRACK it wanted");
}

#[test]
fn session_timer_is_refreshed_by_the_phone() {
    let (mut sipp, mut alice) =
        call_sipp_uas("phone_uas_session_refresh.xml", &["--hangup-after", "3"]);
    alice.exits_with(0);
    alice.assert_printed(&["ended: bye (local)"]);
    sipp_passes(&mut sipp, "SIPp did not get the refresh");
}

#[test]
fn session_timer_ends_a_call_whose_far_end_vanished() {
    let (mut sipp, target) = sipp_uas("phone_uas_vanishes.xml");
    let started = Instant::now();
    let mut alice = Phone::start(&["call", &target]);
    alice.exits_with(1);
    alice.assert_printed(&["ended: session expired"]);
    // 3 s interval, refreshed by the far end: we give up at 3 - min(32, 3/3) = 2 s.
    assert!(started.elapsed() < Duration::from_secs(10));
    sipp_passes(&mut sipp, "SIPp did not get the BYE");
}

#[test]
fn early_media_in_a_183() {
    let (mut sipp, mut alice) =
        call_sipp_uas("phone_uas_early_media.xml", &["--hangup-after", "0.5"]);
    alice.exits_with(0);
    alice.assert_printed(&["progress: 183", "early media", "answered: PCMA"]);
    sipp_passes(&mut sipp, "SIPp's scenario failed");
}

#[test]
fn unusable_answer_is_acked_and_hung_up() {
    let (mut sipp, mut alice) = call_sipp_uas("phone_uas_bad_answer.xml", &[]);
    alice.exits_with(1);
    alice.assert_printed(&["ended: failed (no usable SDP answer)"]);
    sipp_passes(&mut sipp, "SIPp did not get ACK and BYE");
}

#[test]
fn glare_491_is_retried_after_the_random_wait() {
    let (mut sipp, mut alice) = call_sipp_uas(
        "phone_uas_glare.xml",
        &["--hold-after", "0.3", "--hangup-after", "6"],
    );
    let glare_at = {
        alice.expect("glare: ", WAIT);
        Instant::now()
    };
    alice.expect("held: local", WAIT);
    let waited = glare_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(4500),
        "retried after {waited:?}"
    );
    alice.exits_with(0);
    sipp_passes(&mut sipp, "SIPp's scenario failed");
}

#[test]
fn a_2xx_from_a_second_fork_is_acked_and_hung_up() {
    // SIPp checks the To tags of both ACKs and both BYEs.
    let (mut sipp, mut alice) = call_sipp_uas("phone_uas_forked_2xx.xml", &["--hangup-after", "2"]);
    alice.exits_with(0);
    sipp_passes(&mut sipp, "SIPp's scenario failed");
    let printed = alice.dump();
    assert_eq!(printed.matches("answered").count(), 1, "{printed}");
    assert!(printed.contains("ended: bye (local)"), "{printed}");
}
