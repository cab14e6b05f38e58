//! Issue 14's B2BUA with the real binary on loopback, `switchboard phone` on every end:
//! a call by extension through a `pbx = true` rule (hold and resume carried across), a
//! simultaneous ring group where one phone answers and the other two see the CANCEL, a
//! sequential group whose first member does not answer in time, forwarding on no
//! answer, a dial plan reload while a call is up, audio between the phones, baresip
//! calling an extension through the PBX, and SIPp on both ends (as the bench runs it).
//! The call records of the extension call and of the ring group call (one leg per
//! member, who answered, who was cancelled) match what happened.
#![allow(clippy::unwrap_used)]

mod common;
// The media crate's test signal and recording comparison (cross-correlation, duration).
#[path = "../../media/tests/common/mod.rs"]
mod media_common;

use common::baresip;
use common::{Server, ServerOptions, binary, free_port, sipp};
use media_common::{assert_recording_matches, write_test_wav};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

const PLAN: &str = r#"timezone = "UTC"

[[rule]]
name = "extensions, through the PBX"
pattern = "_2XX"
action = "extension"
pbx = true

[[rule]]
name = "sales"
exact = "600"
action = "ring_group"
group = "sales"

[[rule]]
name = "desk"
exact = "601"
action = "ring_group"
group = "desk"

[[rule]]
name = "names"
pattern = "_!"
action = "extension"

[ring_group.sales]
strategy = "simultaneous"
members = ["201", "202", "203"]
ring_seconds = 20

[ring_group.desk]
strategy = "sequential"
members = ["202", "203"]
ring_seconds = 2
"#;

/// A `switchboard phone` whose output goes to a file, killed when dropped.
struct Phone {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Phone {
    fn start(args: &[&str]) -> Phone {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        let err = dir.path().join("err.txt");
        let child = Command::new(binary())
            .arg("phone")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Phone {
            child,
            out,
            err,
            _dir: dir,
        }
    }

    fn printed(&self) -> String {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        format!("{out}{err}")
    }

    fn expect(&self, what: &str, log: impl Fn() -> String) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.printed().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the phone did not print {what:?}:\n{}\nserver log:\n{}",
            self.printed(),
            log()
        );
    }

    fn exit_code(&mut self, log: impl Fn() -> String) -> i32 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the phone did not exit:\n{}\nserver log:\n{}",
            self.printed(),
            log()
        );
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn account<'a>(server: &'a str, user: &'a str) -> [&'a str; 8] {
    [
        "--user",
        user,
        "--password",
        "pw",
        "--server",
        server,
        "--domain",
        "example.test",
    ]
}

/// A server with [`PLAN`], alice (201), carol (202), dave (203) and bob; `setup` runs
/// CLI commands (forwarding) before it starts.
fn server(setup: &[&[&str]]) -> (Server, PathBuf) {
    server_with(ServerOptions::default(), setup)
}

/// [`server`] with these options (more transports).
fn server_with(options: ServerOptions, setup: &[&[&str]]) -> (Server, PathBuf) {
    let mut server = Server::start_stopped(options);
    let path = server.dir.path().join("dialplan.toml");
    std::fs::write(&path, PLAN).unwrap();
    let config = server.config();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "[pbx]\ndial_plan = \"{}\"\nring_timeout_secs = 20\n",
        path.display()
    ));
    std::fs::write(&config, toml).unwrap();
    let ok = |out: Output| assert!(out.status.success(), "{out:?}");
    for (name, ext) in [
        ("alice", Some("201")),
        ("carol", Some("202")),
        ("dave", Some("203")),
        ("bob", None),
    ] {
        let mut args = vec!["user", "add", name, "--password", "pw"];
        if let Some(ext) = ext {
            args.extend(["--extension", ext]);
        }
        ok(server.cli(&args));
    }
    for args in setup {
        ok(server.cli(args));
    }
    server.spawn();
    (server, path)
}

/// The call records `switchboard cdr --json` prints, once there are `n` (the writer
/// stores them in batches).
fn cdr_rows(server: &Server, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = server.cli(&["cdr", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        if rows.len() >= n || Instant::now() > deadline {
            assert_eq!(rows.len(), n, "{rows:#?}");
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `user`'s phone, registered and waiting for calls (answering at once with `auto`,
/// else ringing until cancelled).
fn callee(srv: &str, user: &str, auto: bool) -> Phone {
    callee_with(srv, user, auto, &[])
}

/// [`callee`] with more `answer` options.
fn callee_with(srv: &str, user: &str, auto: bool, extra: &[&str]) -> Phone {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut args = [
        &account(srv, user)[..],
        &["--listen", &listen, "answer"],
        extra,
    ]
    .concat();
    if auto {
        args.push("--auto");
    }
    let phone = Phone::start(&args);
    phone.expect(&format!("registered: sip:{user}@example.test"), String::new);
    phone
}

/// bob calls `target` with these options.
fn bob_calls(srv: &str, target: &str, options: &[&str]) -> Phone {
    let args = [&account(srv, "bob")[..], &["call", target], options].concat();
    Phone::start(&args)
}

#[test]
fn extension_through_the_b2bua_with_hold_and_resume() {
    let (server, _) = server(&[]);
    let srv = format!("127.0.0.1:{}", server.port);
    let log = || server.log();
    let alice = callee(&srv, "alice", true);
    let mut bob = bob_calls(
        &srv,
        "sip:201@example.test",
        &[
            "--hold-after",
            "0.5",
            "--resume-after",
            "1.5",
            "--hangup-after",
            "2.5",
        ],
    );
    assert_eq!(bob.exit_code(log), 0, "bob:\n{}\n{}", bob.printed(), log());
    let printed = bob.printed();
    for what in [
        "answered",
        "held: local",
        "resumed: local",
        "ended: bye (local)",
    ] {
        assert!(printed.contains(what), "bob: {what}\n{printed}");
    }
    // alice saw bob's hold and resume: the re-INVITEs with sendonly and sendrecv,
    // carried across by the B2BUA, and its BYE.
    alice.expect("held: remote", log);
    alice.expect("resumed: remote", log);
    alice.expect("ended: bye (remote)", log);
    let log = server.log();
    assert!(
        log.contains("B2BUA: call from bob to 201"),
        "the call did not go through the B2BUA:\n{log}"
    );
    assert!(log.contains("B2BUA: call ended by caller"), "{log}");
    // One record, of the PBX: bob talked to alice for 2.5 s and hung up.
    let rows = cdr_rows(&server, 1);
    let r = &rows[0];
    assert_eq!(r["kind"], "pbx", "{r:#}");
    assert_eq!(
        (r["caller"].as_str(), r["dialled"].as_str()),
        (Some("bob"), Some("201")),
        "{r:#}"
    );
    assert_eq!(r["callee"], "alice", "{r:#}");
    assert_eq!(
        (r["disposition"].as_str(), r["hangup_by"].as_str()),
        (Some("answered"), Some("caller")),
        "{r:#}"
    );
    assert!(
        (2..=4).contains(&r["billable_secs"].as_u64().unwrap()),
        "{r:#}"
    );
    assert_eq!(r["legs"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r["legs"][0]["status"], 200, "{r:#}");
    assert_eq!(
        r["call_ids"].as_array().unwrap().len(),
        2,
        "A and B legs: {r:#}"
    );
}

/// bob calls over TLS, alice answers over WebSocket: each leg goes out on its phone's
/// connection, with the B2BUA's Via and Contact of that transport's listener, and the
/// hold, resume and BYE reach the other phone.
#[test]
fn tls_caller_to_a_websocket_callee_through_the_b2bua() {
    let dir = tempfile::tempdir().unwrap();
    let ss = sip_net::tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &ss.cert_pem).unwrap();
    std::fs::write(&key, &ss.key_pem).unwrap();
    let (server, _) = server_with(
        ServerOptions {
            extra_transports: vec!["tls", "ws"],
            extra_toml: format!(
                "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
            ..ServerOptions::default()
        },
        &[],
    );
    let port_of = |t: &str| server.extra.iter().find(|(x, _)| x == t).unwrap().1;
    let tls = format!("127.0.0.1:{}", port_of("tls"));
    let ws = format!("127.0.0.1:{}", port_of("ws"));
    let log = || server.log();
    let alice = Phone::start(
        &[
            &account(&ws, "alice")[..],
            &["--transport", "ws", "answer", "--auto"],
        ]
        .concat(),
    );
    alice.expect("registered: sip:alice@example.test", log);
    let cert = cert.to_str().unwrap();
    let args = [
        &account(&tls, "bob")[..],
        &[
            "--transport",
            "tls",
            "--ca",
            cert,
            "call",
            "sip:201@example.test",
            "--hold-after",
            "0.5",
            "--resume-after",
            "1.5",
            "--hangup-after",
            "2.5",
        ],
    ]
    .concat();
    let mut bob = Phone::start(&args);
    assert_eq!(bob.exit_code(log), 0, "bob:\n{}\n{}", bob.printed(), log());
    let printed = bob.printed();
    for what in [
        "answered",
        "held: local",
        "resumed: local",
        "ended: bye (local)",
    ] {
        assert!(printed.contains(what), "bob: {what}\n{printed}");
    }
    alice.expect("held: remote", log);
    alice.expect("resumed: remote", log);
    alice.expect("ended: bye (remote)", log);
    assert!(log().contains("B2BUA: call from bob to 201"), "{}", log());
}

/// The same with UPDATE (RFC 3311): the B2BUA relays it as an UPDATE.
#[test]
fn hold_and_resume_by_update_through_the_b2bua() {
    let (server, _) = server(&[]);
    let srv = format!("127.0.0.1:{}", server.port);
    let log = || server.log();
    let alice = callee(&srv, "alice", true);
    let mut bob = bob_calls(
        &srv,
        "sip:201@example.test",
        &[
            "--hold-with-update",
            "--hold-after",
            "0.5",
            "--resume-after",
            "1.5",
            "--hangup-after",
            "2.5",
        ],
    );
    assert_eq!(bob.exit_code(log), 0, "bob:\n{}\n{}", bob.printed(), log());
    let printed = bob.printed();
    for what in ["held: local", "resumed: local"] {
        assert!(printed.contains(what), "bob: {what}\n{printed}");
    }
    alice.expect("held: remote", log);
    alice.expect("resumed: remote", log);
    alice.expect("ended: bye (remote)", log);
}

#[test]
fn simultaneous_group_one_answers_two_see_cancel() {
    let (server, _) = server(&[]);
    let srv = format!("127.0.0.1:{}", server.port);
    let log = || server.log();
    let carol = callee(&srv, "carol", false);
    let dave = callee(&srv, "dave", false);
    // alice answers last to register, first to pick up.
    let alice = callee(&srv, "alice", true);
    let mut bob = bob_calls(&srv, "sip:600@example.test", &["--hangup-after", "1"]);
    assert_eq!(bob.exit_code(log), 0, "bob:\n{}\n{}", bob.printed(), log());
    alice.expect("answered", log);
    alice.expect("ended: bye (remote)", log);
    carol.expect("ended: cancelled (by the caller)", log);
    dave.expect("ended: cancelled (by the caller)", log);
    // The record: a leg per member, alice's answered, the others cancelled.
    let rows = cdr_rows(&server, 1);
    let r = &rows[0];
    assert_eq!(
        (r["kind"].as_str(), r["dialled"].as_str()),
        (Some("pbx"), Some("600")),
        "{r:#}"
    );
    assert_eq!(r["callee"], "alice", "the member who answered: {r:#}");
    assert_eq!(
        (r["disposition"].as_str(), r["hangup_by"].as_str()),
        (Some("answered"), Some("caller")),
        "{r:#}"
    );
    assert!(
        (1..=3).contains(&r["billable_secs"].as_u64().unwrap()),
        "{r:#}"
    );
    let mut legs: Vec<(String, i64)> = r["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["target"].as_str().unwrap().to_owned(),
                l["status"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    legs.sort();
    assert_eq!(
        legs,
        [
            ("alice".to_owned(), 200),
            ("carol".to_owned(), 487),
            ("dave".to_owned(), 487)
        ],
        "{r:#}"
    );
    assert_eq!(r["call_ids"].as_array().unwrap().len(), 4, "{r:#}");
}

#[test]
fn sequential_group_moves_on_when_the_first_does_not_answer() {
    let (server, _) = server(&[]);
    let srv = format!("127.0.0.1:{}", server.port);
    let log = || server.log();
    let carol = callee(&srv, "carol", false);
    let dave = callee(&srv, "dave", true);
    let started = Instant::now();
    let mut bob = bob_calls(&srv, "sip:601@example.test", &["--hangup-after", "1"]);
    // carol rings for the group's 2 s, then dave answers.
    carol.expect("ended: cancelled (by the caller)", log);
    dave.expect("answered", log);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(bob.exit_code(log), 0, "bob:\n{}\n{}", bob.printed(), log());
    dave.expect("ended: bye (remote)", log);
    // The record: carol's leg first, not answered in time, then dave's, answered.
    let rows = cdr_rows(&server, 1);
    let r = &rows[0];
    assert_eq!(
        (r["disposition"].as_str(), r["callee"].as_str()),
        (Some("answered"), Some("dave")),
        "{r:#}"
    );
    let legs: Vec<(&str, Option<i64>)> = r["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["target"].as_str().unwrap(), l["status"].as_i64()))
        .collect();
    assert_eq!(legs.len(), 2, "{r:#}");
    assert_eq!(legs[0].0, "carol", "{r:#}");
    assert!(legs[0].1.is_some_and(|s| s >= 400), "{r:#}");
    assert_eq!(legs[1], ("dave", Some(200)), "{r:#}");
    let ring = ms(&r["legs"][1]["start"]) - ms(&r["legs"][0]["start"]);
    assert!(
        (1_800..=4_000).contains(&ring),
        "dave rang {ring} ms after carol: {r:#}"
    );
}

fn ms(v: &serde_json::Value) -> i64 {
    let t: jiff::Timestamp = v.as_str().unwrap().parse().unwrap();
    t.as_millisecond()
}

#[test]
fn forward_on_no_answer() {
    let forward: &[&str] = &[
        "user",
        "forward",
        "alice",
        "--no-answer",
        "203",
        "--after",
        "2",
    ];
    let (server, _) = server(&[forward]);
    let srv = format!("127.0.0.1:{}", server.port);
    let log = || server.log();
    let alice = callee(&srv, "alice", false);
    let dave = callee(&srv, "dave", true);
    let mut bob = bob_calls(&srv, "sip:201@example.test", &["--hangup-after", "1"]);
    alice.expect("ended: cancelled (by the caller)", log);
    dave.expect("answered", log);
    assert_eq!(bob.exit_code(log), 0, "bob:\n{}\n{}", bob.printed(), log());
    dave.expect("ended: bye (remote)", log);
    // The record: for alice (whom bob called), answered on the forward to dave.
    let rows = cdr_rows(&server, 1);
    let r = &rows[0];
    assert_eq!(
        (r["dialled"].as_str(), r["callee"].as_str()),
        (Some("201"), Some("alice")),
        "{r:#}"
    );
    assert_eq!(r["disposition"], "answered", "{r:#}");
    let targets: Vec<&str> = r["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["alice", "dave"], "{r:#}");
    assert_eq!(r["legs"][1]["status"], 200, "{r:#}");
}

/// Replaces the plan file as editors do: a new file renamed over the old one.
fn write_plan(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[test]
fn plan_reload_while_a_call_is_up() {
    let (server, plan) = server(&[]);
    let srv = format!("127.0.0.1:{}", server.port);
    let log = || server.log();
    let alice = callee(&srv, "alice", true);
    let mut bob = bob_calls(&srv, "sip:201@example.test", &["--hangup-after", "3"]);
    alice.expect("answered", log);
    // A new plan without the B2BUA rule while the call is up.
    write_plan(&plan, &PLAN.replace("pbx = true\n", ""));
    let deadline = Instant::now() + WAIT;
    while !server.log().contains("reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(bob.exit_code(log), 0, "bob:\n{}\n{}", bob.printed(), log());
    assert!(
        bob.printed().contains("ended: bye (local)"),
        "{}",
        bob.printed()
    );
    alice.expect("ended: bye (remote)", log);
    assert!(server.log().contains("B2BUA: call ended by caller"));
}

/// The media goes straight between the phones: what bob plays, alice records, through a
/// call the B2BUA set up.
#[test]
fn audio_flows_between_the_phones() {
    let (server, _) = server(&[]);
    let srv = format!("127.0.0.1:{}", server.port);
    let log = || server.log();
    let dir = tempfile::tempdir().unwrap();
    let played = dir.path().join("hello.wav");
    let recorded = dir.path().join("got.wav");
    write_test_wav(&played, 8000, 3.0, 300.0);
    let rec = recorded.to_str().unwrap();
    let mut alice = callee_with(&srv, "alice", true, &["--calls", "1", "--record", rec]);
    let mut bob = bob_calls(
        &srv,
        "sip:201@example.test",
        &["--play", played.to_str().unwrap(), "--hangup-after", "4"],
    );
    assert_eq!(bob.exit_code(log), 0, "bob:\n{}\n{}", bob.printed(), log());
    assert_eq!(alice.exit_code(log), 0, "alice:\n{}", alice.printed());
    assert!(log().contains("B2BUA: call from bob to 201"), "{}", log());
    assert_recording_matches("alice's recording of bob", &played, &recorded);
}

/// baresip (carol, 202) dials 201: the B2BUA answers it and rings alice's phone.
#[test]
fn baresip_dials_an_extension_through_the_b2bua() {
    if std::process::Command::new("baresip")
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIPPED: baresip is not installed (scripts/test installs baresip-core)");
        return;
    }
    let (server, _) = server(&[]);
    let srv = format!("127.0.0.1:{}", server.port);
    let log = || server.log();
    let alice = callee(&srv, "alice", true);
    let dir = tempfile::tempdir().unwrap();
    let tone = dir.path().join("tone.wav");
    write_test_wav(&tone, 8000, 3.0, 300.0);
    let rtp = free_port() & !1;
    let config = format!(
        "rtp_ports\t\t{rtp}-{}\n\
         audio_source\t\taufile,{}\n\
         audio_player\t\taubridge,nowhere\n\
         audio_alert\t\taubridge,nowhere\n\
         module\t\t\tstdio.so\n\
         module\t\t\tg711.so\n\
         module\t\t\taufile.so\n\
         module\t\t\taubridge.so\n\
         module_app\t\taccount.so\n\
         module_app\t\tmenu.so\n",
        rtp + 3,
        tone.display(),
    );
    let account = format!(
        "<sip:carol@127.0.0.1>;auth_pass=pw;outbound=\"sip:{srv};transport=udp\";regint=600"
    );
    let mut carol = baresip::start(dir.path(), free_port(), &config, &account, &["-t", "30"]);
    carol.expect("200 OK", WAIT);
    carol.type_keys(&["/dial sip:201@example.test\n"]);
    carol.expect("Call established", WAIT);
    alice.expect("answered", log);
    std::thread::sleep(Duration::from_millis(1000));
    carol.type_keys(&["/hangup\n"]);
    alice.expect("ended: bye (remote)", log);
    assert!(
        log().contains("B2BUA: call from carol to 201"),
        "the call did not go through the B2BUA:\n{}",
        log()
    );
}

fn sipp_scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// SIPp on both ends, as the bench runs it: bob's SIPp registers and answers, alice's
/// SIPp dials 201 (alice authenticates with 407, re-INVITEs without SDP, hangs up); the
/// B2BUA carries it across through a `pbx = true` rule.
#[test]
fn sipp_calls_sipp_through_the_b2bua() {
    // alice's proxy call scenario: its Record-Route check becomes a Contact check (a
    // B2BUA records no route; the dialog goes to its Contact).
    let uac = std::fs::read_to_string(sipp_scenario("proxy_uac_call.xml"))
        .unwrap()
        .replace("@RR@", "Contact: &lt;sip:pbx@127\\.0\\.0\\.1:[0-9]+");
    sipp_call_through_the_b2bua("b2bua_uas_answer.xml", &uac);
}

/// A late offer: alice's INVITE has no SDP, bob's 200 offers, alice answers in her ACK
/// and bob's ACK carries that answer (each SIPp checks what it gets).
#[test]
fn late_offer_through_the_b2bua() {
    let uac = std::fs::read_to_string(sipp_scenario("b2bua_uac_late_offer.xml")).unwrap();
    sipp_call_through_the_b2bua("b2bua_uas_late_offer.xml", &uac);
}

/// alice's INFO (DTMF) and MESSAGE in the call reach bob's SIPp, and bob's answers (200,
/// 415) come back to her: relayed, not answered by the B2BUA.
#[test]
fn info_and_message_through_the_b2bua() {
    let uac = std::fs::read_to_string(sipp_scenario("b2bua_uac_info.xml")).unwrap();
    sipp_call_through_the_b2bua("b2bua_uas_info.xml", &uac);
}

/// bob's SIPp (registered) runs `uas`, alice's runs the scenario text `uac_text`, calling
/// 201 through a `pbx = true` rule.
fn sipp_call_through_the_b2bua(uas: &str, uac_text: &str) {
    let mut server = Server::start_stopped(ServerOptions {
        // SIPp answers only the first challenge, and only MD5.
        extra_toml: "[registrar]\ndigest_algorithms = [\"MD5\"]\n".into(),
        ..ServerOptions::default()
    });
    let path = server.dir.path().join("dialplan.toml");
    std::fs::write(
        &path,
        "[[rule]]\npattern = \"_!\"\naction = \"extension\"\npbx = true\n",
    )
    .unwrap();
    let config = server.config();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!("[pbx]\ndial_plan = \"{}\"\n", path.display()));
    std::fs::write(&config, toml).unwrap();
    for (name, ext) in [("alice", "200"), ("bob", "201")] {
        let pw = format!("{name}-pw");
        let out = server.cli(&["user", "add", name, "--password", &pw, "--extension", ext]);
        assert!(out.status.success(), "{out:?}");
    }
    server.spawn();
    let timeout = Duration::from_secs(15);
    let port = server.port;
    let bob = free_port();
    let contact = format!("sip:bob@127.0.0.1:{bob}");
    let bob_port = bob.to_string();
    let (code, out) = sipp(
        &sipp_scenario("proxy_register.xml"),
        port,
        &[
            "-m",
            "1",
            "-p",
            &bob_port,
            "-t",
            "u1",
            "-key",
            "user",
            "bob",
            "-au",
            "bob",
            "-ap",
            "bob-pw",
            "-key",
            "contact",
            &contact,
            "-key",
            "q",
            "1.0",
            "-auth_uri",
            "example.test",
        ],
        timeout,
    );
    assert_eq!(code, 0, "bob's REGISTER: {out}\n{}", server.log());
    let uas = sipp_scenario(uas);
    let callee =
        std::thread::spawn(move || sipp(&uas, port, &["-m", "1", "-p", &bob_port], timeout));
    std::thread::sleep(Duration::from_millis(400));
    let uac = server.dir.path().join("uac.xml");
    std::fs::write(&uac, uac_text).unwrap();
    let alice_port = free_port().to_string();
    let (code, out) = sipp(
        &uac,
        port,
        &[
            "-m",
            "1",
            "-p",
            &alice_port,
            "-key",
            "callee",
            "201",
            "-au",
            "alice",
            "-ap",
            "alice-pw",
            "-auth_uri",
            "201@example.test",
        ],
        timeout,
    );
    assert_eq!(code, 0, "alice's call: {out}\n{}", server.log());
    let (code, out) = callee.join().unwrap();
    assert_eq!(code, 0, "bob's SIPp: {out}\n{}", server.log());
    assert!(server.log().contains("B2BUA: call from alice to 201"));
}
