//! Call transfer end to end (issue 14): three `switchboard phone`s registered to the
//! real `switchboard serve` (default configuration, the proxy between them). Alice
//! calls bob; bob transfers her to carol, blind (`--transfer-to`: REFER, RFC 3515, with
//! Referred-By, RFC 3892) or attended (`--consult`: alice held, bob calls carol, then
//! REFER with Replaces, RFC 3891). Alice and carol end up talking: each plays a WAV
//! file and records the other, and each recording must hold the other's file
//! (correlation above 0.9, duration within 5%); bob's calls end, and every phone exits 0.
//!
//! And with Debian's baresip (`baresip-core`, installed by `scripts/test`; skipped when
//! missing) on its defaults: as the transferee (it follows REFER by itself) and as the
//! transfer target, its audio checked both ways too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
// The media crate's test signal and recording comparison (cross-correlation, duration).
#[path = "../../media/tests/common/mod.rs"]
mod media_common;
// The interop matrix's audio check (block by block, for a jitter buffer not ours) and
// helpers for baresip.
#[path = "common/interop.rs"]
mod interop;
use common::baresip::{self, Proc};
use common::{Server, ServerOptions, binary};
use media_common::{assert_recording_matches, write_test_wav};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn server() -> Server {
    Server::start(ServerOptions {
        users: ["alice", "bob", "carol"]
            .iter()
            .map(|u| (u.to_string(), format!("{u}-pw")))
            .collect(),
        ..Default::default()
    })
}

/// `switchboard phone` as `user` (password `USER-pw`) registered to `server`, doing
/// `args`.
fn phone(server: &Server, user: &str, args: &[&str]) -> Proc {
    let srv = format!("127.0.0.1:{}", server.port);
    let password = format!("{user}-pw");
    let mut cmd = Command::new(binary());
    cmd.arg("phone")
        .args([
            "--user",
            user,
            "--password",
            &password,
            "--server",
            &srv,
            "--domain",
            "example.test",
        ])
        .args(args)
        .env("RUST_LOG", "warn");
    Proc::spawn(cmd)
}

/// The WAV files of one test: what alice and carol play, and where they record.
struct Audio {
    _dir: tempfile::TempDir,
    alice_plays: PathBuf,
    carol_plays: PathBuf,
    bob_plays: PathBuf,
    alice_records: PathBuf,
    carol_records: PathBuf,
}

impl Audio {
    fn new() -> Audio {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let audio = Audio {
            alice_plays: p("alice-plays.wav"),
            carol_plays: p("carol-plays.wav"),
            bob_plays: p("bob-plays.wav"),
            alice_records: p("alice-records.wav"),
            carol_records: p("carol-records-{n}.wav"),
            _dir: dir,
        };
        write_test_wav(&audio.alice_plays, 8000, 3.0, 300.0);
        write_test_wav(&audio.carol_plays, 8000, 3.0, 500.0);
        write_test_wav(&audio.bob_plays, 8000, 3.0, 700.0);
        audio
    }

    /// Carol's recording of her call number `n`.
    fn carol_recording(&self, n: u32) -> PathBuf {
        PathBuf::from(
            self.carol_records
                .to_string_lossy()
                .replace("{n}", &n.to_string()),
        )
    }

    /// Alice's recording of her second call (the one the transfer placed).
    fn alice_second_recording(&self) -> PathBuf {
        self.alice_records.with_file_name("alice-records-2.wav")
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Carol answering one call (and one that replaces it), playing and recording.
fn carol(server: &Server, audio: &Audio) -> Proc {
    let mut carol = phone(
        server,
        "carol",
        &[
            "answer",
            "--auto",
            "--calls",
            "1",
            "--play",
            path(&audio.carol_plays),
            "--record",
            path(&audio.carol_records),
        ],
    );
    carol.expect("registered: ", WAIT);
    carol
}

/// Alice calling bob, playing and recording, hanging up 6 s after an answer.
fn alice(server: &Server, audio: &Audio) -> Proc {
    let mut alice = phone(
        server,
        "alice",
        &[
            "call",
            "bob",
            "--play",
            path(&audio.alice_plays),
            "--record",
            path(&audio.alice_records),
            "--hangup-after",
            "6",
        ],
    );
    alice.expect("registered: ", WAIT);
    alice
}

fn assert_alice_and_carol_talked(audio: &Audio, carols_call: u32) {
    // Recordings are finalized before a phone exits.
    assert_recording_matches(
        "alice's recording of carol",
        &audio.carol_plays,
        &audio.alice_second_recording(),
    );
    assert_recording_matches(
        "carol's recording of alice",
        &audio.alice_plays,
        &audio.carol_recording(carols_call),
    );
}

fn assert_lines(who: &str, p: &mut Proc, lines: &[&str]) {
    let printed = p.printed();
    for line in lines {
        assert!(
            printed.lines().any(|l| l == *line),
            "{who}: no line {line:?} in:\n{printed}"
        );
    }
}

#[test]
fn blind_transfer_puts_alice_through_to_carol() {
    let server = server();
    let audio = Audio::new();
    let mut carol = carol(&server, &audio);
    let mut bob = phone(
        &server,
        "bob",
        &[
            "answer",
            "--auto",
            "--calls",
            "1",
            "--play",
            path(&audio.bob_plays),
            "--transfer-to",
            "carol",
            "--transfer-after",
            "1",
        ],
    );
    bob.expect("registered: ", WAIT);
    let mut alice = alice(&server, &audio);

    assert_eq!(bob.wait(WAIT), 0, "bob:\n{}", bob.printed());
    assert_eq!(alice.wait(WAIT), 0, "alice:\n{}", alice.printed());
    assert_eq!(carol.wait(WAIT), 0, "carol:\n{}", carol.printed());
    eprintln!(
        "--- alice:\n{}\n--- bob:\n{}\n--- carol:\n{}",
        alice.printed(),
        bob.printed(),
        carol.printed()
    );
    assert_lines(
        "bob",
        &mut bob,
        &[
            "transferring: sip:carol@example.test (blind)",
            "transfer accepted: SIP/2.0 202 Accepted",
            "transfer progress: SIP/2.0 100 Trying",
            "transferred: SIP/2.0 200 OK",
            "ended: transferred",
        ],
    );
    assert_lines(
        "alice",
        &mut alice,
        &[
            "transfer requested: to sip:carol@example.test by <sip:bob@example.test>",
            "calling: sip:carol@example.test",
            "transferred: to sip:carol@example.test",
            "ended: transferred",
            "ended: bye (local)",
        ],
    );
    assert_eq!(
        alice
            .printed()
            .lines()
            .filter(|l| l.starts_with("answered: "))
            .count(),
        2
    );
    assert_lines(
        "carol",
        &mut carol,
        &["answered: PCMU", "ended: bye (remote)"],
    );
    assert_alice_and_carol_talked(&audio, 1);
}

#[test]
fn attended_transfer_joins_alice_and_carol() {
    let server = server();
    let audio = Audio::new();
    let mut carol = carol(&server, &audio);
    let mut bob = phone(
        &server,
        "bob",
        &[
            "answer",
            "--auto",
            "--calls",
            "1",
            "--play",
            path(&audio.bob_plays),
            "--consult",
            "carol",
            "--consult-after",
            "1",
            "--transfer-after",
            "1",
        ],
    );
    bob.expect("registered: ", WAIT);
    let mut alice = alice(&server, &audio);

    assert_eq!(bob.wait(WAIT), 0, "bob:\n{}", bob.printed());
    assert_eq!(alice.wait(WAIT), 0, "alice:\n{}", alice.printed());
    assert_eq!(carol.wait(WAIT), 0, "carol:\n{}", carol.printed());
    eprintln!(
        "--- alice:\n{}\n--- bob:\n{}\n--- carol:\n{}",
        alice.printed(),
        bob.printed(),
        carol.printed()
    );
    assert_lines(
        "bob",
        &mut bob,
        &[
            "consulting: sip:carol@example.test",
            "held: local",
            "transferring: sip:carol@example.test (attended)",
            "transferred: SIP/2.0 200 OK",
            "ended: transferred",
            "ended: bye (remote)",
        ],
    );
    assert_lines(
        "alice",
        &mut alice,
        &[
            "held: remote",
            "transferred: to sip:carol@example.test",
            "ended: transferred",
            "ended: bye (local)",
        ],
    );
    assert_lines(
        "carol",
        &mut carol,
        &[
            "replacing: call 1",
            "ended: replaced",
            "ended: bye (remote)",
        ],
    );
    assert_alice_and_carol_talked(&audio, 2);
}

/// baresip registered to `server` as `user`, answering calls at once, playing `plays`
/// (it hangs a call up when the file ends) and dumping what it hears into `dir`.
fn baresip_as(dir: &Path, server: &Server, user: &str, plays: &Path) -> Proc {
    let rtp = interop::free_port_range(4);
    let config = format!(
        "rtp_ports\t\t{rtp}-{}\n\
         audio_source\t\taufile,{source}\n\
         audio_player\t\taubridge,nowhere\n\
         audio_alert\t\taubridge,nowhere\n\
         snd_path\t\t{dir}\n\
         module\t\t\tstdio.so\n\
         module\t\t\tg711.so\n\
         module\t\t\taufile.so\n\
         module\t\t\taubridge.so\n\
         module\t\t\tsndfile.so\n\
         module_app\t\taccount.so\n\
         module_app\t\tmenu.so\n",
        rtp + 3,
        source = plays.display(),
        dir = dir.display(),
    );
    let account = format!(
        "<sip:{user}@example.test>;auth_pass={user}-pw;\
         outbound=\"sip:127.0.0.1:{};transport=udp\";regint=600;answermode=auto",
        server.port
    );
    let mut proc = baresip::start(dir, interop::free_port(), &config, &account, &["-t", "60"]);
    proc.expect("200 OK", WAIT);
    proc
}

/// The newest of baresip's dumps of what it heard (one per call), once written.
fn newest_decoded_dump(dir: &Path) -> PathBuf {
    let dump = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("baresip's sndfile dump of the received audio");
    interop::wait_for_file(&dump, WAIT);
    dump
}

#[test]
fn baresip_is_transferred_to_carol() {
    if !interop::installed("baresip") {
        eprintln!("SKIPPED: baresip is not installed (scripts/test installs baresip-core)");
        return;
    }
    let server = server();
    let audio = Audio::new();
    let baresip_dir = tempfile::tempdir().unwrap();
    // baresip's file outlasts the first call; the second plays it whole, then baresip
    // hangs up, which ends carol's call.
    let baresip_plays = baresip_dir.path().join("baresip-plays.wav");
    write_test_wav(&baresip_plays, 8000, 4.0, 300.0);
    let mut carol = carol(&server, &audio);
    let mut bob = phone(
        &server,
        "bob",
        &[
            "answer",
            "--auto",
            "--calls",
            "1",
            "--play",
            path(&audio.bob_plays),
            "--transfer-to",
            "carol",
            "--transfer-after",
            "1",
        ],
    );
    bob.expect("registered: ", WAIT);
    let mut alice = baresip_as(baresip_dir.path(), &server, "alice", &baresip_plays);
    alice.type_keys(&["/dial sip:bob@example.test\n"]);

    assert_eq!(bob.wait(WAIT), 0, "bob:\n{}", bob.printed());
    assert_eq!(carol.wait(WAIT), 0, "carol:\n{}", carol.printed());
    eprintln!(
        "--- bob:\n{}\n--- carol:\n{}",
        bob.printed(),
        carol.printed()
    );
    assert_lines(
        "bob",
        &mut bob,
        &[
            "transferring: sip:carol@example.test (blind)",
            "transferred: SIP/2.0 200 OK",
            "ended: transferred",
        ],
    );
    assert_lines("carol", &mut carol, &["answered: PCMU"]);
    interop::assert_holds(
        "carol's recording of baresip",
        &baresip_plays,
        &audio.carol_recording(1),
    );
    let dump = newest_decoded_dump(baresip_dir.path());
    interop::assert_holds("baresip's recording of carol", &audio.carol_plays, &dump);
    alice.type_keys(&["/quit\n"]);
    eprintln!("--- baresip:\n{}", alice.printed());
}

#[test]
fn alice_is_transferred_to_baresip() {
    if !interop::installed("baresip") {
        eprintln!("SKIPPED: baresip is not installed (scripts/test installs baresip-core)");
        return;
    }
    let server = server();
    let audio = Audio::new();
    let baresip_dir = tempfile::tempdir().unwrap();
    // Longer than alice's file: baresip hangs up when it ends, once alice's is over.
    let baresip_plays = baresip_dir.path().join("baresip-plays.wav");
    write_test_wav(&baresip_plays, 8000, 4.0, 500.0);
    let mut carol = baresip_as(baresip_dir.path(), &server, "carol", &baresip_plays);
    let mut bob = phone(
        &server,
        "bob",
        &[
            "answer",
            "--auto",
            "--calls",
            "1",
            "--play",
            path(&audio.bob_plays),
            "--transfer-to",
            "carol",
            "--transfer-after",
            "1",
        ],
    );
    bob.expect("registered: ", WAIT);
    let mut alice = phone(
        &server,
        "alice",
        &[
            "call",
            "bob",
            "--play",
            path(&audio.alice_plays),
            "--record",
            path(&audio.alice_records),
            "--hangup-after",
            "15",
        ],
    );

    assert_eq!(bob.wait(WAIT), 0, "bob:\n{}", bob.printed());
    assert_eq!(alice.wait(WAIT), 0, "alice:\n{}", alice.printed());
    eprintln!(
        "--- alice:\n{}\n--- bob:\n{}",
        alice.printed(),
        bob.printed()
    );
    assert_lines(
        "bob",
        &mut bob,
        &["transferred: SIP/2.0 200 OK", "ended: transferred"],
    );
    assert_lines(
        "alice",
        &mut alice,
        &[
            "transfer requested: to sip:carol@example.test by <sip:bob@example.test>",
            "transferred: to sip:carol@example.test",
            "ended: transferred",
            "ended: bye (remote)",
        ],
    );
    interop::assert_holds(
        "alice's recording of baresip",
        &baresip_plays,
        &audio.alice_second_recording(),
    );
    let dump = newest_decoded_dump(baresip_dir.path());
    interop::assert_holds("baresip's recording of alice", &audio.alice_plays, &dump);
    carol.type_keys(&["/quit\n"]);
    eprintln!("--- baresip:\n{}", carol.printed());
}

#[test]
fn transfer_options_are_checked_before_anything_is_sent() {
    let run = |args: &[&str]| {
        Command::new(binary())
            .arg("phone")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["call", "sip:bob@127.0.0.1:9", "--transfer-after", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--transfer-after needs --transfer-to or --consult"),
        "{err}"
    );
    let out = run(&["answer", "--transfer-to", "carol", "--consult", "dave"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["answer", "--consult-after", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--consult"), "{err}");
}

/// With `--json`, each event about a call carries its number: a transfer's two calls
/// are told apart.
#[test]
fn json_events_name_their_call() {
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(binary());
    cmd.args([
        "phone", "--json", "--user", "bob", "--listen", &listen, "answer", "--auto", "--calls", "1",
    ]);
    let mut bob = Proc::spawn(cmd);
    bob.expect("waiting for calls", WAIT);
    let mut cmd = Command::new(binary());
    let target = format!("sip:bob@{listen}");
    cmd.args(["phone", "--json", "call", &target, "--hangup-after", "0.5"]);
    let mut alice = Proc::spawn(cmd);
    assert_eq!(alice.wait(WAIT), 0, "{}", alice.printed());
    assert_eq!(bob.wait(WAIT), 0, "{}", bob.printed());
    for (who, p) in [("alice", &mut alice), ("bob", &mut bob)] {
        let printed = p.printed();
        let answered: serde_json::Value = printed
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|v: &serde_json::Value| v["event"] == "answered")
            .unwrap_or_else(|| panic!("{who}: no answered event in:\n{printed}"));
        assert_eq!(answered["call"], 1, "{who}: {answered}");
    }
}
